//! Slack incoming webhooks: one message per notice (a digest when a storm is throttled), with
//! `text` as the fallback and blocks for the detail. Slack's own rate is about one message a
//! second per webhook.

use super::{http_client, notify_secret, post_json, Answer, Notifier};
use crate::notify::headline;
use crate::text::escape_markup as slack_escape;
use async_trait::async_trait;
use lifeboat_config::SlackConfig;
use lifeboat_core::notice::Notice;
use lifeboat_store::Stored;
use serde_json::json;
use std::time::Duration;

pub struct Slack {
    url: String,
    http: reqwest::Client,
}

impl Slack {
    pub fn new(name: &str, c: &SlackConfig) -> Result<Slack, String> {
        let url = notify_secret(
            name,
            "the webhook URL",
            c.url_file.as_deref(),
            c.url_env.as_deref(),
        )?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "notify.{name}: the webhook URL (from its file or variable) is not an http(s) URL"
            ));
        }
        Ok(Slack {
            url,
            http: http_client()?,
        })
    }
}

/// A section's text is limited to 3,000 characters.
fn clip(s: &str) -> String {
    if s.chars().count() <= 2900 {
        s.to_owned()
    } else {
        s.chars().take(2900).collect::<String>() + " …"
    }
}

pub(crate) fn message(notices: &[Stored]) -> serde_json::Value {
    if let [one] = notices {
        let n = &one.notice;
        let text = headline(n);
        let mut blocks = vec![json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", slack_escape(&text), slack_escape(&n.text)))}
        })];
        let mut context = vec![format!("service *{}*", slack_escape(&n.service))];
        if let Some(s) = n.state {
            context.push(format!("state *{s}*"));
        }
        context.push(format!("`{}`", slack_escape(&n.key)));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]
        }));
        json!({"text": text, "blocks": blocks})
    } else {
        let lines: Vec<String> = notices
            .iter()
            .map(|s| {
                let n = &s.notice;
                let first = n.text.lines().next().unwrap_or("");
                let first: String = first.chars().take(200).collect();
                if first.is_empty() || n.title.contains(&first) {
                    format!("• {}", slack_escape(&headline(n)))
                } else {
                    format!(
                        "• {} — {}",
                        slack_escape(&headline(n)),
                        slack_escape(&first)
                    )
                }
            })
            .collect();
        let text = format!(
            "Lifeboat: {} notices (sent together: a storm)",
            notices.len()
        );
        json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", text, lines.join("\n")))}}]
        })
    }
}

#[async_trait]
impl Notifier for Slack {
    fn wants(&self, n: &Notice) -> bool {
        crate::notify::for_people(n)
    }
    fn batch(&self) -> usize {
        20
    }
    async fn send(&self, notices: &[Stored], budget: Duration) -> Answer {
        post_json(self.http.post(&self.url), &message(notices), budget).await
    }
}
