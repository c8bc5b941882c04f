//! Reading a config file: strict parsing, then whole-file validation with line numbers.

use crate::report::{Finding, Report};
use crate::types::Config;
use std::path::{Path, PathBuf};

/// A config that parsed and validated, with the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Finding>,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the path given to --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not have the expected shape.
    #[error("{path} is not a valid Lifeboat config:\n{report}")]
    Syntax { path: PathBuf, report: Report },
    /// The file parsed but its settings are wrong.
    #[error("{path} has {} error(s):\n{report}", report.errors.len())]
    Invalid { path: PathBuf, report: Report },
}

impl ConfigError {
    /// All findings (errors first, then warnings) for printing one per line.
    pub fn report(&self) -> Option<&Report> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { report, .. } | ConfigError::Invalid { report, .. } => {
                Some(report)
            }
        }
    }
}

/// Reads, parses and validates `path`. Relative paths inside the file (state dir, secret
/// files, data dirs) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (config, report) = parse(&text, base).map_err(|report| ConfigError::Syntax {
        path: path.into(),
        report,
    })?;
    if !report.is_ok() {
        return Err(ConfigError::Invalid {
            path: path.into(),
            report,
        });
    }
    Ok(Loaded {
        config,
        warnings: report.warnings,
        path: path.into(),
    })
}

/// Parses `text` and validates it. `Err` holds shape errors (unknown keys, wrong types,
/// missing keys) together with the semantic errors of everything else in the file; `Ok`
/// holds the config and a report that may still contain errors.
pub fn parse(text: &str, base_dir: &Path) -> Result<(Config, Report), Report> {
    let doc = toml_edit::ImDocument::parse(text.to_owned()).ok();
    let locate = |r: &mut Report| r.locate(|p| doc.as_ref().and_then(|d| line_of_path(d, text, p)));
    if let Some(mut report) = doc.as_ref().and_then(single_service_shape) {
        locate(&mut report);
        return Err(report);
    }
    let (parsed, mut report) = deserialize_collecting(text);
    let Some(mut config) = parsed else {
        locate(&mut report);
        return Err(report);
    };
    resolve_paths(&mut config, base_dir);
    let shape_errors = !report.errors.is_empty();
    let mut semantic = Report::default();
    crate::validate::validate(&config, &mut semantic);
    // With shape errors the config was parsed without the offending lines: keep only the
    // findings about keys that were not already reported.
    let reported: Vec<String> = report.errors.iter().map(|f| f.path.clone()).collect();
    semantic.errors.retain(|f| {
        !reported
            .iter()
            .any(|r| f.path == *r || f.path.starts_with(&format!("{r}.")))
    });
    report.errors.extend(semantic.errors);
    report.warnings.extend(semantic.warnings);
    locate(&mut report);
    if shape_errors {
        Err(report)
    } else {
        Ok((config, report))
    }
}

/// The keys of the old single-service shape, which `[services.NAME]` replaced.
const SINGLE_SERVICE_KEYS: [&str; 5] = ["service", "endpoint", "probe", "failover", "regions"];

/// A file in the old single-service shape gets one error that says how to rewrite it.
fn single_service_shape(doc: &toml_edit::ImDocument<String>) -> Option<Report> {
    let found: Vec<&str> = SINGLE_SERVICE_KEYS
        .into_iter()
        .filter(|k| doc.contains_key(k))
        .collect();
    let first = *found.first()?;
    let name = doc
        .get("service")
        .and_then(|s| s.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("NAME");
    let mut report = Report::default();
    report.errors.push(Finding {
        path: first.to_owned(),
        line: None,
        message: format!(
            "[{}] at the top level is the single-service shape, which [services.{name}] replaced; rewrite it as: \
             [service] name = \"{name}\", tier = T -> [services.{name}] kind = \"postgres\", tier = T; \
             [endpoint] -> [services.{name}.endpoint]; [probe] -> [services.{name}.probe]; \
             [failover] -> [services.{name}.failover]; [regions.R] and [[regions.R.nodes]] -> \
             [services.{name}.regions.R] and [[services.{name}.regions.R.nodes]] \
             (see examples/two-region.toml)",
            found.join("], [")
        ),
    });
    Some(report)
}

/// Serde stops at the first error. To report every error at once, the offending line is
/// blanked out and parsing retried (bounded). A key that is then missing because its line
/// was blanked is not reported twice. Returns the config parsed from the remaining lines,
/// if they parse.
fn deserialize_collecting(text: &str) -> (Option<Config>, Report) {
    let mut text = text.to_owned();
    let mut report = Report::default();
    for _ in 0..50 {
        let de = toml::Deserializer::new(&text);
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(c) => return (Some(c), report),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.span().map(|s| line_at(&text, s.start));
                let mut message = clean_message(inner.message());
                let path = error_path(&path, &message);
                if path.ends_with(".password") && message.starts_with("unknown field") {
                    message = "secrets are never written in the config: use password-file or password-env".into();
                }
                let already = report.errors.iter().any(|f| f.path == path);
                if !already {
                    report.errors.push(Finding {
                        path,
                        line,
                        message,
                    });
                }
                match line {
                    Some(l) if !already && blank_line(&mut text, l) => continue,
                    _ => return (None, report),
                }
            }
        }
    }
    (None, report)
}

fn clean_message(m: &str) -> String {
    m.trim().trim_end_matches('.').replace('\n', " ")
}

/// The key path an error is about: without serde's `?` placeholders, and naming the key of
/// an unknown or missing field (`regions.x.foo`).
fn error_path(path: &str, message: &str) -> String {
    let mut segs: Vec<&str> = path
        .split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect();
    let named = message.starts_with("unknown field") || message.starts_with("missing field");
    if let Some(key) = message.split('`').nth(1).filter(|_| named) {
        if segs.last() != Some(&key) {
            segs.push(key);
        }
    }
    segs.join(".")
}

fn blank_line(text: &mut String, line: usize) -> bool {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line && !l.trim_start().starts_with('[') {
            out.push_str(if l.ends_with('\n') { "#\n" } else { "#" });
            changed = true;
        } else {
            out.push_str(l);
        }
    }
    *text = out;
    changed
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Finds the line of a key path such as `regions.eu-west.nodes[0].port`, or of the closest
/// parent that exists in the file.
fn line_of_path(doc: &toml_edit::ImDocument<String>, text: &str, path: &str) -> Option<usize> {
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut at: Option<usize> = None;
    for seg in path.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let Some((k, item)) = table.get_key_value(key) else {
            break;
        };
        at = k.span().map(|s| s.start).or(at);
        let next: Option<&dyn toml_edit::TableLike> = match (item, index) {
            (toml_edit::Item::ArrayOfTables(a), Some(i)) => {
                let t = a.get(i);
                at = t.and_then(|t| t.span()).map(|s| s.start).or(at);
                t.map(|t| t as &dyn toml_edit::TableLike)
            }
            (item, _) => item.as_table_like(),
        };
        match next {
            Some(t) => table = t,
            None => break,
        }
    }
    at.map(|o| line_at(text, o))
}

fn resolve_paths(c: &mut Config, base: &Path) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    abs(&mut c.controller.state_dir);
    if let Some(p) = c.controller.api_token_file.as_mut() {
        abs(p)
    }
    if let Some(b) = c.backup.as_mut() {
        b.resolve_paths(base);
    }
    for d in c.drills.values_mut() {
        if let Some(p) = d.scratch_dir.as_mut() {
            abs(p)
        }
    }
    for n in c.notify.values_mut() {
        let files = match n {
            crate::NotifyConfig::Slack(s) => [s.url_file.as_mut()],
            crate::NotifyConfig::PagerDuty(p) => [p.routing_key_file.as_mut()],
            crate::NotifyConfig::Webhook(w) => [w.secret_file.as_mut()],
            crate::NotifyConfig::Email(e) => [e.password_file.as_mut()],
        };
        for p in files.into_iter().flatten() {
            abs(p)
        }
    }
    for r in c.services.values_mut().flat_map(|s| s.regions.values_mut()) {
        for n in &mut r.nodes {
            if let Some(p) = n.password_file.as_mut() {
                abs(p)
            }
            if let Some(ctl) = n.control.as_mut() {
                abs(&mut ctl.data_dir);
            }
        }
    }
}
