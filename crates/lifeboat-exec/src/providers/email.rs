//! Email over SMTP (lettre): STARTTLS required unless `starttls = false` (a relay on the same
//! host), a login when a username is given. Each message has a stable `Message-ID` built from
//! the notice id, so a mail system can drop a copy sent again after a crash.

use super::{notify_secret, Answer, Notifier};
use crate::notify::headline;
use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use lifeboat_config::EmailConfig;
use lifeboat_core::notice::Notice;
use lifeboat_store::Stored;
use std::time::Duration;

pub struct Email {
    server: String,
    port: u16,
    starttls: bool,
    from: Mailbox,
    to: Vec<Mailbox>,
    credentials: Option<Credentials>,
    host: String,
}

impl Email {
    pub fn new(name: &str, c: &EmailConfig) -> Result<Email, String> {
        let mailbox = |key: &str, a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("notify.{name}.{key}: {a:?} is not an email address: {e}"))
        };
        let credentials = match &c.username {
            Some(u) => Some(Credentials::new(
                u.clone(),
                notify_secret(
                    name,
                    "the SMTP password",
                    c.password_file.as_deref(),
                    c.password_env.as_deref(),
                )?,
            )),
            None => None,
        };
        let starttls = c.starttls.unwrap_or(true);
        Ok(Email {
            server: c.server.clone(),
            port: c.port.unwrap_or(if starttls { 587 } else { 25 }),
            starttls,
            from: mailbox("from", &c.from)?,
            to: c
                .to
                .iter()
                .map(|a| mailbox("to", a))
                .collect::<Result<_, _>>()?,
            credentials,
            host: lifeboat_backup::repo::host(),
        })
    }

    fn transport(&self, budget: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let b = if self.starttls {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.server)
                .map_err(|e| format!("SMTP server {}: {e}", self.server))?
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.server)
        };
        let b = b.port(self.port).timeout(Some(budget));
        let b = match &self.credentials {
            Some(c) => b.credentials(c.clone()),
            None => b,
        };
        Ok(b.build())
    }

    fn message(&self, notices: &[Stored]) -> Result<Message, String> {
        let (subject, body) = match notices {
            [one] => {
                let n = &one.notice;
                let mut body = format!("{}\n\n{}\n\n", headline(n), n.text);
                body.push_str(&format!("service: {}\nsubject: {}\n", n.service, n.key));
                if let Some(s) = n.state {
                    body.push_str(&format!("state: {s}\n"));
                }
                for (k, v) in &n.details {
                    body.push_str(&format!("{k}: {v}\n"));
                }
                (format!("[lifeboat] {}", headline(n)), body)
            }
            many => (
                format!("[lifeboat] {} notices (a storm, sent together)", many.len()),
                many.iter()
                    .map(|s| format!("- {}\n  {}\n", headline(&s.notice), s.notice.text))
                    .collect(),
            ),
        };
        let first = notices.first().map_or(0, |s| s.id);
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!(
                "<lifeboat-notice-{first}-{}@{}>",
                notices.len(),
                self.host
            )))
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            m = m.to(t.clone());
        }
        m.body(body)
            .map_err(|e| format!("building the message: {e}"))
    }
}

#[async_trait]
impl Notifier for Email {
    fn wants(&self, n: &Notice) -> bool {
        crate::notify::for_people(n)
    }
    fn batch(&self) -> usize {
        50
    }
    async fn send(&self, notices: &[Stored], budget: Duration) -> Answer {
        let (transport, message) = match (self.transport(budget), self.message(notices)) {
            (Ok(t), Ok(m)) => (t, m),
            (Err(e), _) | (_, Err(e)) => return Answer::Failed(e),
        };
        match tokio::time::timeout(budget, transport.send(message)).await {
            Err(_) => Answer::Unknown(format!("the SMTP server did not finish within {budget:?}")),
            Ok(Ok(r)) => Answer::Ok(format!("SMTP {}", r.code())),
            Ok(Err(e)) if e.is_permanent() => Answer::Failed(format!("SMTP refused: {e}")),
            Ok(Err(e)) if e.is_transient() => Answer::Unknown(format!("SMTP: {e}")),
            Ok(Err(e)) if e.to_string().contains("STARTTLS") || e.is_tls() => Answer::Failed(format!(
                "SMTP server {}:{}: {e}; it must offer STARTTLS, or set starttls = false for a relay on this host",
                self.server, self.port
            )),
            Ok(Err(e)) => Answer::Unreached(format!("SMTP server {}:{}: {e}", self.server, self.port)),
        }
    }
}
