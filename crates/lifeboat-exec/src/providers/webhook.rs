//! A generic webhook: every notice as a JSON POST signed the Standard Webhooks way, so a
//! receiver can check that Lifeboat sent it and that it is not a replay:
//!
//! * `webhook-id`: `msg_<notice id>`, the same on every retry (deduplicate on it);
//! * `webhook-timestamp`: Unix seconds when this attempt was sent (refuse one far from now);
//! * `webhook-signature`: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed
//!   by the secret (a `whsec_` secret is base64 after the prefix; any other secret is used as
//!   its bytes).
//!
//! The body is `{"type": KIND, "timestamp": RFC 3339, "data": NOTICE}`.

use super::{http_client, notify_secret, post_json, Answer, Notifier};
use async_trait::async_trait;
use base64::Engine;
use hmac::{KeyInit, Mac};
use lifeboat_config::WebhookConfig;
use lifeboat_core::notice::Notice;
use lifeboat_store::Stored;
use serde_json::json;
use std::time::Duration;

pub struct Webhook {
    url: String,
    key: Vec<u8>,
    http: reqwest::Client,
}

/// The key bytes of a signing secret.
pub fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

impl Webhook {
    pub fn new(name: &str, c: &WebhookConfig) -> Result<Webhook, String> {
        let secret = notify_secret(
            name,
            "the signing secret",
            c.secret_file.as_deref(),
            c.secret_env.as_deref(),
        )?;
        Ok(Webhook {
            url: c.url.clone(),
            key: signing_key(&secret),
            http: http_client()?,
        })
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn wants(&self, _: &Notice) -> bool {
        true
    }
    async fn send(&self, notices: &[Stored], budget: Duration) -> Answer {
        let mut said = String::new();
        for s in notices {
            let n = &s.notice;
            let body = json!({
                "type": n.kind.as_str(),
                "timestamp": crate::notify::rfc3339(n.at),
                "data": n,
            });
            let id = format!("msg_{}", s.id);
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sig = signature(&self.key, &id, ts, &body.to_string());
            let request = self
                .http
                .post(&self.url)
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig);
            match post_json(request, &body, budget).await {
                Answer::Ok(d) => said = d,
                other => return other,
            }
        }
        Answer::Ok(said)
    }
}
