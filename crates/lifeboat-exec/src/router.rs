//! The client endpoint: a TCP proxy that forwards every client connection to the one current
//! primary. While there is no primary (during a failover) new connections wait, bounded by
//! the hold timeout; when the route moves away from a node, every connection to it is cut.
//! Both sides of every connection carry TCP keepalive and a user timeout, so a peer that
//! goes silent (dropped packets, no reset) is detected and its connection closed rather than
//! held half-open forever.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the endpoint sends clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No writable primary: hold new connections, cut none (there are none).
    Blocked,
    To {
        node: String,
        addr: SocketAddr,
        epoch: u64,
    },
}

#[derive(Clone)]
pub struct Router {
    route: Arc<watch::Sender<Route>>,
    pub stats: Arc<RouterStats>,
    silence: Duration,
}

#[derive(Default)]
pub struct RouterStats {
    pub active: AtomicU64,
    pub accepted: AtomicU64,
    pub cut: AtomicU64,
    pub held_timeouts: AtomicU64,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    pub fn new() -> Router {
        Router {
            route: Arc::new(watch::Sender::new(Route::Blocked)),
            stats: Arc::default(),
            silence: Duration::from_secs(10),
        }
    }

    /// A connection whose peer leaves sent data unacknowledged, or keepalive probes
    /// unanswered, for `silence` is closed (default 10 s).
    pub fn with_upstream_timeout(mut self, silence: Duration) -> Router {
        self.silence = silence;
        self
    }

    pub fn current(&self) -> Route {
        self.route.borrow().clone()
    }

    /// Sends new connections to `node`; cuts connections to any other node.
    pub fn route_to(&self, node: &str, addr: SocketAddr, epoch: u64) {
        self.route.send_replace(Route::To {
            node: node.into(),
            addr,
            epoch,
        });
    }

    /// Stops routing to `node` (if it is the current target) and cuts its connections.
    pub fn block(&self, node: &str) {
        self.route.send_if_modified(|r| match r {
            Route::To { node: n, .. } if n == node => {
                *r = Route::Blocked;
                true
            }
            _ => false,
        });
    }

    /// Accepts clients on `listener` until `cancel`; connection tasks are tracked by `tasks`.
    pub async fn serve(
        self,
        listener: TcpListener,
        hold: Duration,
        connect_timeout: Duration,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => return,
            };
            match accepted {
                Ok((client, peer)) => {
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let router = self.clone();
                    let cancel = cancel.clone();
                    tasks.spawn(async move {
                        router.stats.active.fetch_add(1, Ordering::Relaxed);
                        let r = router.handle(client, hold, connect_timeout, cancel).await;
                        router.stats.active.fetch_sub(1, Ordering::Relaxed);
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "endpoint connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(
        &self,
        mut client: TcpStream,
        hold: Duration,
        connect_timeout: Duration,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let _ = client.set_nodelay(true);
        let _ = detect_silence(&client, self.silence);
        let mut rx = self.route.subscribe();
        // The client has not been read from yet, so until the upstream connection is made it
        // can still go wherever the route points: a route that moves while we connect (to a
        // silent primary, say) sends it to the new primary instead.
        let (node, epoch, mut upstream) = loop {
            // Wait (bounded) for a primary.
            let target = tokio::time::timeout(hold, async {
                loop {
                    if let Route::To { node, addr, epoch } = rx.borrow_and_update().clone() {
                        return Some((node, addr, epoch));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            })
            .await;
            let Ok(Some((node, addr, epoch))) = target else {
                self.stats.held_timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = client.shutdown().await;
                return Err(std::io::Error::other("no primary within the hold timeout"));
            };
            let moved = async {
                while rx.changed().await.is_ok() {
                    let same = matches!(&*rx.borrow(), Route::To { node: n, epoch: e, .. } if *n == node && *e == epoch);
                    if !same {
                        return;
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                r = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)) => match r {
                    Ok(Ok(s)) => break (node, epoch, s),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(std::io::Error::other(format!(
                            "connecting to {node} timed out"
                        )))
                    }
                },
                () = moved => continue,
            }
        };
        let _ = upstream.set_nodelay(true);
        if let Err(e) = detect_silence(&upstream, self.silence) {
            tracing::warn!(%node, error = %e, "cannot set TCP keepalive on the connection to the primary");
        }
        // A route that moved while we connected must not get this client.
        if !matches!(&*rx.borrow_and_update(), Route::To { node: n, epoch: e, .. } if *n == node && *e == epoch)
        {
            return Err(std::io::Error::other(format!(
                "route moved away from {node}"
            )));
        }
        let moved = async {
            loop {
                if rx.changed().await.is_err() {
                    return;
                }
                let still =
                    matches!(&*rx.borrow_and_update(), Route::To { node: n, .. } if *n == node);
                if !still {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r.map(|_| ()),
            () = moved => {
                self.stats.cut.fetch_add(1, Ordering::Relaxed);
                Err(std::io::Error::other(format!("cut: endpoint no longer routes to {node}")))
            }
            () = cancel.cancelled() => Ok(()),
        }
    }
}

/// TCP keepalive from `silence / 2` of idleness, and `TCP_USER_TIMEOUT = silence`: the
/// kernel closes the connection once data or keepalive probes stay unacknowledged that long,
/// and the proxy's copy then ends with an error instead of waiting forever.
fn detect_silence(s: &TcpStream, silence: Duration) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(s);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time((silence / 2).max(Duration::from_secs(1)))
        .with_interval((silence / 10).max(Duration::from_secs(1)))
        .with_retries(10);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(silence))
}
