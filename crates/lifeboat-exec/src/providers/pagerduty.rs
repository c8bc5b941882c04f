//! PagerDuty Events API v2: a notice that opens a subject triggers an alert whose `dedup_key`
//! is the subject's key (`incident/12`), an incident identified acknowledges it, and a notice
//! that resolves the subject resolves it. Everything else is not a pager's business.

use super::{http_client, notify_secret, post_json, Answer, Notifier};
use crate::notify::headline;
use async_trait::async_trait;
use lifeboat_config::PagerDutyConfig;
use lifeboat_core::notice::{Notice, NoticeKind, Phase, Severity, StatusState};
use lifeboat_store::Stored;
use serde_json::json;
use std::time::Duration;

pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct PagerDuty {
    routing_key: String,
    url: String,
    source: String,
    http: reqwest::Client,
}

impl PagerDuty {
    pub fn new(name: &str, c: &PagerDutyConfig) -> Result<PagerDuty, String> {
        Ok(PagerDuty {
            routing_key: notify_secret(
                name,
                "the routing key",
                c.routing_key_file.as_deref(),
                c.routing_key_env.as_deref(),
            )?,
            url: c.url.clone().unwrap_or_else(|| EVENTS_URL.into()),
            source: lifeboat_backup::repo::host(),
            http: http_client()?,
        })
    }

    fn action(n: &Notice) -> Option<&'static str> {
        match (n.phase(), n.state) {
            (Phase::Open, _) => Some("trigger"),
            (Phase::Update, Some(StatusState::Identified)) => Some("acknowledge"),
            (Phase::Update, Some(StatusState::Resolved)) | (Phase::Resolve, _) => Some("resolve"),
            _ => None,
        }
    }

    /// The event for one notice (`None`: not for a pager).
    pub(crate) fn event(&self, s: &Stored) -> Option<Vec<serde_json::Value>> {
        let n = &s.notice;
        let action = PagerDuty::action(n)?;
        let dedup_key = match n.kind {
            // A test opens and closes an alert of its own.
            NoticeKind::Test => format!("lifeboat/test/{}", s.id),
            _ => format!("lifeboat/{}", n.key),
        };
        let mut events = vec![if action == "trigger" {
            let severity = match n.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            let summary: String = headline(n).chars().take(1024).collect();
            json!({
                "routing_key": self.routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary,
                    "source": self.source,
                    "severity": severity,
                    "timestamp": crate::notify::rfc3339(n.at),
                    "component": n.service,
                    "class": n.kind.as_str(),
                    "custom_details": {"text": n.text, "details": n.details, "state": n.state},
                },
                "client": "Lifeboat",
            })
        } else {
            json!({"routing_key": self.routing_key, "event_action": action, "dedup_key": dedup_key})
        }];
        if n.kind == NoticeKind::Test {
            events.push(json!({"routing_key": self.routing_key, "event_action": "resolve", "dedup_key": dedup_key}));
        }
        Some(events)
    }
}

#[async_trait]
impl Notifier for PagerDuty {
    fn wants(&self, n: &Notice) -> bool {
        PagerDuty::action(n).is_some()
    }
    async fn send(&self, notices: &[Stored], budget: Duration) -> Answer {
        let mut said = String::new();
        for s in notices {
            for e in self.event(s).unwrap_or_default() {
                match post_json(self.http.post(&self.url), &e, budget).await {
                    Answer::Ok(d) => said = d,
                    other => return other,
                }
            }
        }
        Answer::Ok(said)
    }
}
