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
//! [`TrafficSwitch`].

pub mod endpoint;
pub mod fault;
pub mod postgres;
pub mod redis;

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
