//! `[notify.NAME]`: who hears about incidents, risks, stale backups and failed drills, and
//! `[incidents]`: when a condition becomes a risk and a recovered incident resolves itself
//! (capability 10). A notifier names its provider with `kind`; each kind carries its own keys.

use crate::report::Report;
use crate::types::Config;
use crate::units::Dur;
use lifeboat_core::notice::Severity;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NotifyConfig {
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// PagerDuty Events API v2: incidents trigger, are acknowledged and resolved under one
    /// dedup key.
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyConfig),
    /// A JSON POST signed with HMAC-SHA256 (Standard Webhooks).
    Webhook(WebhookConfig),
    /// Email over SMTP.
    Email(EmailConfig),
}

/// Keys every notifier has. (Repeated in each kind: `deny_unknown_fields` does not combine
/// with `flatten`.)
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub min_severity: Severity,
    /// Services whose notices it gets; empty: all.
    pub services: Vec<String>,
    pub max_per_minute: u32,
    pub timeout: Duration,
    pub give_up_after: Duration,
}

macro_rules! route_keys {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// info, warning (default) or critical.
            pub min_severity: Option<Severity>,
            #[serde(default)]
            pub services: Vec<String>,
            /// A storm is sent at most this fast (the rest waits, in order).
            pub max_per_minute: Option<u32>,
            /// One delivery attempt is given up after this (default 10s).
            pub timeout: Option<Dur>,
            /// A delivery that keeps failing is given up (and shown) after this (default 24h).
            pub give_up_after: Option<Dur>,
        }
    };
}

route_keys! {
    pub struct SlackConfig {
        /// The webhook URL is a secret: from a file or the environment.
        pub url_file: Option<PathBuf>,
        pub url_env: Option<String>,
    }
}

route_keys! {
    pub struct PagerDutyConfig {
        pub routing_key_file: Option<PathBuf>,
        pub routing_key_env: Option<String>,
        /// Default: https://events.pagerduty.com/v2/enqueue
        pub url: Option<String>,
    }
}

route_keys! {
    pub struct WebhookConfig {
        pub url: String,
        /// The signing secret (Standard Webhooks: `whsec_` + base64, or any string).
        pub secret_file: Option<PathBuf>,
        pub secret_env: Option<String>,
    }
}

route_keys! {
    pub struct EmailConfig {
        /// SMTP server host.
        pub server: String,
        pub port: Option<u16>,
        /// Require STARTTLS (default true); false sends in the clear (a local relay).
        pub starttls: Option<bool>,
        pub from: String,
        pub to: Vec<String>,
        pub username: Option<String>,
        pub password_file: Option<PathBuf>,
        pub password_env: Option<String>,
    }
}

impl NotifyConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyConfig::Slack(_) => "slack",
            NotifyConfig::PagerDuty(_) => "pagerduty",
            NotifyConfig::Webhook(_) => "webhook",
            NotifyConfig::Email(_) => "email",
        }
    }

    pub fn route(&self) -> Route {
        macro_rules! route {
            ($c:expr, $rate:expr) => {
                Route {
                    min_severity: $c.min_severity.unwrap_or(Severity::Warning),
                    services: $c.services.clone(),
                    max_per_minute: $c.max_per_minute.unwrap_or($rate),
                    timeout: $c.timeout.map_or(Duration::from_secs(10), Dur::get),
                    give_up_after: $c
                        .give_up_after
                        .map_or(Duration::from_secs(24 * 3600), Dur::get),
                }
            };
        }
        // Slack takes about one message a second per webhook; PagerDuty throttles at 120 a
        // minute per routing key.
        match self {
            NotifyConfig::Slack(c) => route!(c, 60),
            NotifyConfig::PagerDuty(c) => route!(c, 120),
            NotifyConfig::Webhook(c) => route!(c, 6000),
            NotifyConfig::Email(c) => route!(c, 30),
        }
    }
}

/// `[incidents]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IncidentsConfig {
    /// A condition without an incident (RPO exposure above the tier's RPO, a standby that
    /// cannot be promoted, an automatic failover refused) is raised once it lasts this long.
    #[serde(default = "default_risk_after")]
    pub risk_after: Dur,
    /// An incident Lifeboat recovered is resolved once its service has been healthy this long.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Dur,
    /// The heading of the public status page.
    #[serde(default = "default_title")]
    pub status_page_title: String,
}

fn default_risk_after() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_resolve_after() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_title() -> String {
    "Service status".into()
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            risk_after: default_risk_after(),
            resolve_after: default_resolve_after(),
            status_page_title: default_title(),
        }
    }
}

fn secret_pair(r: &mut Report, path: &str, what: &str, file: bool, env: bool, key: &str) {
    match (file, env) {
        (false, false) => r.error(
            format!("{path}.{key}-file"),
            format!("{what} is a secret: set {key}-file (a file only Lifeboat reads) or {key}-env (an environment variable)"),
        ),
        (true, true) => r.error(
            format!("{path}.{key}-env"),
            format!("set {key}-file or {key}-env, not both"),
        ),
        _ => {}
    }
}

fn http_url(r: &mut Report, path: String, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
        r.error(path, "must be an http:// or https:// URL");
    }
}

pub(crate) fn validate(c: &Config, r: &mut Report) {
    for (name, n) in &c.notify {
        let path = format!("notify.{name}");
        if !crate::backup::is_safe_name(name) {
            r.error(
                path.clone(),
                "a notifier's name may hold letters, digits, '-' and '_' only",
            );
        }
        let (services, rate) = match n {
            NotifyConfig::Slack(s) => {
                secret_pair(
                    r,
                    &path,
                    "the Slack webhook URL",
                    s.url_file.is_some(),
                    s.url_env.is_some(),
                    "url",
                );
                (&s.services, s.max_per_minute)
            }
            NotifyConfig::PagerDuty(p) => {
                secret_pair(
                    r,
                    &path,
                    "the PagerDuty routing key",
                    p.routing_key_file.is_some(),
                    p.routing_key_env.is_some(),
                    "routing-key",
                );
                if let Some(u) = &p.url {
                    http_url(r, format!("{path}.url"), u);
                }
                (&p.services, p.max_per_minute)
            }
            NotifyConfig::Webhook(w) => {
                http_url(r, format!("{path}.url"), &w.url);
                secret_pair(
                    r,
                    &path,
                    "the signing secret",
                    w.secret_file.is_some(),
                    w.secret_env.is_some(),
                    "secret",
                );
                (&w.services, w.max_per_minute)
            }
            NotifyConfig::Email(e) => {
                if e.to.is_empty() {
                    r.error(format!("{path}.to"), "name at least one recipient");
                }
                for (i, a) in e.to.iter().chain([&e.from]).enumerate() {
                    let key = if i < e.to.len() {
                        format!("{path}.to[{i}]")
                    } else {
                        format!("{path}.from")
                    };
                    if a.parse::<lettre_free::Mailbox>().is_err() {
                        r.error(key, format!("{a:?} is not an email address"));
                    }
                }
                if e.username.is_some() {
                    secret_pair(
                        r,
                        &path,
                        "the SMTP password",
                        e.password_file.is_some(),
                        e.password_env.is_some(),
                        "password",
                    );
                } else if e.password_file.is_some() || e.password_env.is_some() {
                    r.error(
                        format!("{path}.username"),
                        "a password is set without a username",
                    );
                }
                (&e.services, e.max_per_minute)
            }
        };
        for (i, s) in services.iter().enumerate() {
            if !c.services.contains_key(s) {
                r.error(
                    format!("{path}.services[{i}]"),
                    format!(
                        "no service {s:?} (services: {})",
                        c.services.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        if rate == Some(0) {
            r.error(
                format!("{path}.max-per-minute"),
                "must be at least 1 (0 would never send)",
            );
        }
    }
}

/// Just enough of an address check for config validation: `local@domain`, optionally as
/// `Name <local@domain>`. The SMTP client checks addresses fully when it sends.
mod lettre_free {
    pub struct Mailbox;
    impl std::str::FromStr for Mailbox {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let addr = match (s.find('<'), s.rfind('>')) {
                (Some(a), Some(b)) if a < b && b == s.len() - 1 => &s[a + 1..b],
                (None, None) => s,
                _ => return Err(()),
            };
            match addr.split_once('@') {
                Some((l, d))
                    if !l.is_empty()
                        && d.contains('.') | (d == "localhost")
                        && !d.starts_with('.')
                        && !addr.contains(char::is_whitespace) =>
                {
                    Ok(Mailbox)
                }
                _ => Err(()),
            }
        }
    }
}
