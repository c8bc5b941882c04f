//! Providers: how each step is carried out against one kind of system. A step in
//! `lifeboat-core` says *what* (fence this node, move the traffic to that one under epoch N);
//! a provider says *how* for its kind, behind one of the small interfaces here.
//!
//! Every call is bounded by the [`Timeouts`] it gets: each connection, request, tool run and
//! wait inside it has its budget, so a call that cannot reach its node ends by itself (a
//! rejoin, which stops, rewinds, starts and waits, may take several rejoin budgets). Dropping
//! the call cancels it. Every call answers [`Answer`]: ok, failed (and whether it reached its
//! node) or unknown.
//!
//! A new datastore is one file here implementing [`Datastore`] and one arm in
//! [`datastore`]; a new traffic switch (DNS, HAProxy) one file implementing
//! [`TrafficSwitch`]; a new notification channel one file implementing [`Notifier`] and one
//! arm in [`notifier`].

pub mod email;
pub mod endpoint;
pub mod fault;
pub mod pagerduty;
pub mod postgres;
pub mod redis;
pub mod slack;
pub mod webhook;

use crate::service::Node;
use async_trait::async_trait;
use lifeboat_config::ServiceKind;
use lifeboat_core::plan::FenceMode;
use lifeboat_core::Facts;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a provider call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok(String),
    /// It failed; it may have changed its node.
    Failed(String),
    /// It cannot tell whether it took effect (a timeout after the request was sent).
    Unknown(String),
    /// It failed before reaching its node: nothing changed.
    Unreached(String),
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        matches!(self, Answer::Ok(_))
    }
    pub fn detail(&self) -> &str {
        match self {
            Answer::Ok(d) | Answer::Failed(d) | Answer::Unknown(d) | Answer::Unreached(d) => d,
        }
    }
}

/// Time budgets of a service's steps (from its `probe` and `failover` settings).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub probe: Duration,
    pub promote: Duration,
    pub fence: Duration,
    /// How long a background fence keeps retrying.
    pub fence_retry_for: Duration,
    pub catch_up: Duration,
    pub rejoin: Duration,
}

/// `$self.node($name)`, or return its `Answer` (an unknown node).
macro_rules! node_or_return {
    ($self:ident, $name:expr) => {
        match $self.node($name) {
            Ok(n) => n,
            Err(a) => return a,
        }
    };
}
pub(crate) use node_or_return;

/// One engine's way to observe and change the servers of a service. Nodes are named as in
/// the config; the provider holds how to reach each.
#[async_trait]
pub trait Datastore: Send + Sync {
    /// Facts of `node` in engine-neutral terms, or why it could not be observed (a wrong
    /// password, a server of another engine, no answer).
    async fn probe(&self, node: &str, timeout: Duration) -> Result<Facts, String>;
    /// Make `node` refuse writes and end its client sessions, as `mode` says.
    async fn fence(&self, node: &str, mode: FenceMode, t: Timeouts) -> Answer;
    /// Undo a fence: the node takes writes again.
    async fn unfence(&self, node: &str, t: Timeouts) -> Answer;
    /// Make the replica `node` a primary.
    async fn promote(&self, node: &str, t: Timeouts) -> Answer;
    /// Wait until `node` has applied everything the fenced `from` wrote.
    async fn catch_up(&self, node: &str, from: &str, t: Timeouts) -> Answer;
    /// Make writes on the primary `node` wait for the first connected of `names` (none: no wait).
    async fn set_sync(&self, node: &str, names: &[String], t: Timeouts) -> Answer;
    /// A real write on `node`, tagged with `epoch`.
    async fn write_check(&self, node: &str, epoch: u64, t: Timeouts) -> Answer;
    /// Make the former primary `node` a replica of `source`.
    async fn rejoin(&self, node: &str, source: &str, t: Timeouts) -> Answer;
    /// Lifeboat can make `node` a replica again by itself (a rejoin, also at the end of a
    /// switchover).
    fn can_rejoin(&self, node: &str) -> bool;
    /// A position (from [`Facts::position`]) as this engine writes it.
    fn format_position(&self, position: u64) -> String;
}

/// Where clients of a service are sent. Moves are under a fencing token (`epoch`).
#[async_trait]
pub trait TrafficSwitch: Send + Sync {
    /// Stop sending clients to `node` and cut its connections.
    async fn block(&self, node: &str) -> Answer;
    /// Send clients to `node` at `addr` under `epoch`.
    async fn route(&self, node: &str, addr: SocketAddr, epoch: u64) -> Answer;
}

/// The datastore provider of a service's kind.
pub fn datastore(kind: ServiceKind, nodes: &[Node]) -> Arc<dyn Datastore> {
    match kind {
        ServiceKind::Postgres => Arc::new(postgres::Postgres::new(nodes)),
        ServiceKind::Redis => Arc::new(redis::Redis::new(nodes)),
    }
}

/// What a server answered to the line `PING\r\n`, which tells engines apart: Redis answers
/// with a RESP reply (`+PONG`, or `-NOAUTH …` when it wants a password); PostgreSQL reads it
/// as a startup packet of absurd length and closes the connection without a word.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PingLine {
    Closed,
    Resp(String),
    Other(String),
}

/// Sends `PING\r\n` to `addr`; `None` when it cannot connect or gets no answer in `timeout`.
pub(crate) async fn ping_line(addr: SocketAddr, timeout: Duration) -> Option<PingLine> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        Some(match s.read(&mut buf).await {
            Ok(0) | Err(_) => PingLine::Closed,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
                if matches!(buf[0], b'+' | b'-') {
                    PingLine::Resp(text)
                } else {
                    PingLine::Other(text)
                }
            }
        })
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// Polls `check` every `every` until it answers `Ok`, or `timeout` has passed: then its
/// last `Err`.
pub(crate) async fn poll<T, E, F, Fut>(timeout: Duration, every: Duration, check: F) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = check().await;
        if last.is_ok() || tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(every).await;
    }
}

/// A channel people hear from. Sends are bounded by the budget they get and answer
/// [`Answer`]: `Ok` delivered; `Failed` refused by the receiver (a 4xx: sending it again
/// would not help, so it is recorded and not retried); `Unknown` or `Unreached` (a 5xx, a
/// timeout, no connection): tried again later.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Whether this kind of channel is told about `n` at all (a pager only hears what opens,
    /// acknowledges or resolves an alert).
    fn wants(&self, n: &lifeboat_core::notice::Notice) -> bool;
    /// How many notices one message may carry when a storm is throttled (1: one each).
    fn batch(&self) -> usize {
        1
    }
    /// Sends one notice, or a throttled storm's digest of several, in order.
    async fn send(&self, notices: &[lifeboat_store::Stored], budget: Duration) -> Answer;
}

/// The notifier a `[notify.NAME]` section names, with its secret read now (so a missing one
/// stops the daemon before it starts).
pub fn notifier(
    name: &str,
    cfg: &lifeboat_config::NotifyConfig,
) -> Result<Arc<dyn Notifier>, String> {
    use lifeboat_config::NotifyConfig as N;
    Ok(match cfg {
        N::Slack(c) => Arc::new(slack::Slack::new(name, c)?),
        N::PagerDuty(c) => Arc::new(pagerduty::PagerDuty::new(name, c)?),
        N::Webhook(c) => Arc::new(webhook::Webhook::new(name, c)?),
        N::Email(c) => Arc::new(email::Email::new(name, c)?),
    })
}

/// The secret a notifier's config points at, or why it cannot be read.
fn notify_secret(
    name: &str,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<String, String> {
    match lifeboat_config::read_secret(file, env) {
        Ok(Some(s)) if !s.is_empty() => Ok(s),
        Ok(_) => Err(format!("notify.{name}: {what} is empty")),
        Err(e) => Err(format!("notify.{name}: {what}: {e}")),
    }
}

/// One HTTP client for the notifiers: rustls, no proxy from the environment, no redirects
/// (a redirect to another host would carry the body there).
fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// POSTs a JSON body. 2xx: `Ok`; 429 and 5xx: `Unknown` (try again); any other 4xx:
/// `Failed` with the receiver's words; no connection: `Unreached`; a timeout after sending:
/// `Unknown`. Errors never carry the URL (a Slack URL is a secret).
async fn post_json(
    request: reqwest::RequestBuilder,
    body: &serde_json::Value,
    budget: Duration,
) -> Answer {
    let body = body.to_string();
    let sent = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(budget)
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return Answer::Unreached(format!("cannot connect: {}", e.without_url()))
        }
        Err(e) if e.is_timeout() => return Answer::Unknown(format!("no answer within {budget:?}")),
        Err(e) => return Answer::Unknown(e.without_url().to_string()),
    };
    let status = r.status();
    let text = tokio::time::timeout(budget, r.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text: String = text.chars().take(300).collect();
    let said = format!("HTTP {}: {}", status.as_u16(), text.trim());
    if status.is_success() {
        Answer::Ok(said)
    } else if status.as_u16() == 429 || status.is_server_error() {
        Answer::Unknown(said)
    } else {
        Answer::Failed(said)
    }
}
