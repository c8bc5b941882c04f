//! Keeping passwords off command lines: a libpq connection string split into what may be
//! shown (the tool's argv, which every user sees in `ps`) and the password, which goes in
//! the tool's environment as `PGPASSWORD`.

/// Splits `conninfo` (libpq `key=value` pairs, or a `postgres://` URI) into the string
/// without its password and the password. A string without a password comes back as it was.
pub fn split_password(conninfo: &str) -> (String, Option<String>) {
    let t = conninfo.trim_start();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        return split_uri(t);
    }
    let mut public: Vec<String> = Vec::new();
    let mut password = None;
    let mut rest = conninfo;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else {
            // Not key=value: leave the rest as it was; libpq will report it.
            public.push(rest.to_owned());
            break;
        };
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let (value, raw_len) = value(after);
        let raw = &after[..raw_len];
        if key == "password" {
            password = Some(value);
        } else {
            public.push(format!("{key}={raw}"));
        }
        rest = &after[raw_len..];
    }
    (public.join(" "), password)
}

/// One value: single-quoted with `\'` and `\\` escapes, or up to the next white space.
/// Returns the unescaped value and how many bytes of `s` it took.
fn value(s: &str) -> (String, usize) {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        out.push(e);
                    }
                }
                '\'' => return (out, i + 1),
                c => out.push(c),
            }
        }
        return (out, s.len());
    }
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            return (out, i);
        }
        chars.next();
        if c == '\\' {
            if let Some((_, e)) = chars.next() {
                out.push(e);
            }
        } else {
            out.push(c);
        }
    }
    (out, s.len())
}

/// `postgres://user:secret@host/db` -> `postgres://user@host/db` and the (percent-decoded)
/// password; a `password=` query parameter likewise.
fn split_uri(uri: &str) -> (String, Option<String>) {
    let scheme_end = uri.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = uri.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut password = None;
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, pass)) => {
                    password = Some(percent_decode(pass));
                    format!("{user}{host}")
                }
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| match kv.strip_prefix("password=") {
                    Some(p) => {
                        password = Some(percent_decode(p));
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    (format!("{scheme}{authority}{tail}"), password)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::split_password;

    fn split(s: &str) -> (String, Option<String>) {
        split_password(s)
    }

    #[test]
    fn key_value_strings_lose_their_password_and_keep_everything_else() {
        assert_eq!(
            split("host=10.0.1.10 port=5432 user=postgres password=s3cret dbname=orders"),
            (
                "host=10.0.1.10 port=5432 user=postgres dbname=orders".into(),
                Some("s3cret".into())
            )
        );
        assert_eq!(
            split("host='a b' password = 'it\\'s \\\\ here' application_name='x'"),
            (
                "host='a b' application_name='x'".into(),
                Some("it's \\ here".into())
            )
        );
        assert_eq!(
            split("host=h user=u"),
            ("host=h user=u".into(), None),
            "nothing to take"
        );
    }

    #[test]
    fn uris_lose_the_password_of_their_user_info_and_query() {
        assert_eq!(
            split("postgresql://backup:p%40ss@db:5432/orders?sslmode=require"),
            (
                "postgresql://backup@db:5432/orders?sslmode=require".into(),
                Some("p@ss".into())
            )
        );
        assert_eq!(
            split("postgres://db/orders?password=x&application_name=y"),
            (
                "postgres://db/orders?application_name=y".into(),
                Some("x".into())
            )
        );
        assert_eq!(
            split("postgres://u@db/orders"),
            ("postgres://u@db/orders".into(), None)
        );
    }
}
