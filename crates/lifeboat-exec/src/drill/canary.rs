//! The drill's canary: one write at a time through the service's endpoint (the path its
//! clients take), every write uniquely numbered and its outcome recorded, then everything
//! read back from the primary at the end (Jepsen's set-full check).
//!
//! PostgreSQL: a row `(run, seq)` in `lifeboat_drill_canary`. Redis: `seq` added to the set
//! `lifeboat:drill:RUN`, acknowledged only once `WAIT 1` confirms a replica has it when the
//! service replicates synchronously.

use crate::executor::now;
use lifeboat_core::drill::Write;
use lifeboat_postgres::ConnInfo;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How each write may take at most (connecting included).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the canary reaches the service.
#[derive(Clone)]
pub enum Target {
    Postgres(ConnInfo),
    Redis {
        addr: SocketAddr,
        user: Option<String>,
        password: Option<String>,
        /// Acknowledge only writes a replica confirmed (`WAIT 1`).
        wait_replica: bool,
    },
}

enum Conn {
    Postgres(tokio_postgres::Client),
    Redis(redis::aio::MultiplexedConnection),
}

impl Target {
    async fn connect(&self) -> Result<Conn, String> {
        match self {
            Target::Postgres(ci) => lifeboat_postgres::connect(ci, WRITE_TIMEOUT)
                .await
                .map(Conn::Postgres)
                .map_err(|e| e.to_string()),
            Target::Redis {
                addr,
                user,
                password,
                ..
            } => crate::providers::redis::connect(
                *addr,
                user.as_deref(),
                password.as_deref(),
                WRITE_TIMEOUT,
            )
            .await
            .map(Conn::Redis)
            .map_err(|e| e.to_string()),
        }
    }

    /// Creates what the canary writes into, once, before the drill.
    pub async fn prepare(&self) -> Result<(), String> {
        let conn = tokio::time::timeout(WRITE_TIMEOUT * 5, self.connect())
            .await
            .map_err(|_| "no connection within 5 s".to_string())??;
        if let Conn::Postgres(c) = conn {
            tokio::time::timeout(
                WRITE_TIMEOUT * 5,
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS lifeboat_drill_canary (run bigint NOT NULL, seq bigint NOT NULL, PRIMARY KEY (run, seq))",
                ),
            )
            .await
            .map_err(|_| "creating the canary table took longer than 5 s".to_string())?
            .map_err(|e| format!("creating the canary table: {e}"))?;
        }
        Ok(())
    }

    async fn write(&self, conn: &mut Conn, run: i64, seq: u64) -> Result<(), String> {
        match (conn, self) {
            (Conn::Postgres(c), _) => c
                .execute(
                    "INSERT INTO lifeboat_drill_canary (run, seq) VALUES ($1, $2)",
                    &[&run, &(seq as i64)],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (Conn::Redis(c), Target::Redis { wait_replica, .. }) => {
                let key = format!("lifeboat:drill:{run}");
                let _: i64 = redis::cmd("SADD")
                    .arg(&key)
                    .arg(seq)
                    .query_async(c)
                    .await
                    .map_err(|e| e.to_string())?;
                if *wait_replica {
                    let n: i64 = redis::cmd("WAIT")
                        .arg(1)
                        .arg(WRITE_TIMEOUT.as_millis() as u64 / 2)
                        .query_async(c)
                        .await
                        .map_err(|e| e.to_string())?;
                    if n < 1 {
                        return Err("WAIT: no replica confirmed the write".into());
                    }
                }
                Ok(())
            }
            (Conn::Redis(_), Target::Postgres(_)) => Err("wrong connection".into()),
        }
    }

    /// Every sequence number of `run` on the server the endpoint reaches now.
    pub async fn read_back(&self, run: i64, timeout: Duration) -> Result<BTreeSet<u64>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match tokio::time::timeout_at(deadline, self.try_read(run)).await {
                Ok(Ok(set)) => return Ok(set),
                Ok(Err(e)) => e,
                Err(_) => "no answer".into(),
            };
            if tokio::time::Instant::now() + Duration::from_millis(200) >= deadline {
                return Err(format!(
                    "the canary's writes could not be read back within {timeout:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn try_read(&self, run: i64) -> Result<BTreeSet<u64>, String> {
        match tokio::time::timeout(WRITE_TIMEOUT * 5, self.connect())
            .await
            .map_err(|_| "no connection within 5 s".to_string())??
        {
            Conn::Postgres(c) => {
                let rows = c
                    .query(
                        "SELECT seq FROM lifeboat_drill_canary WHERE run = $1",
                        &[&run],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
            }
            Conn::Redis(mut c) => {
                let members: Vec<u64> = redis::cmd("SMEMBERS")
                    .arg(format!("lifeboat:drill:{run}"))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(members.into_iter().collect())
            }
        }
    }

    /// Removes what `run` wrote (best effort: a drill's verdict does not depend on it).
    pub async fn clean(&self, run: i64) {
        let clean = async {
            match self.connect().await? {
                Conn::Postgres(c) => c
                    .execute("DELETE FROM lifeboat_drill_canary WHERE run = $1", &[&run])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Conn::Redis(mut c) => redis::cmd("DEL")
                    .arg(format!("lifeboat:drill:{run}"))
                    .query_async::<i64>(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT * 5, clean).await;
    }
}

/// A running canary. Its history is shared with the drill, which watches it while it runs.
pub struct Canary {
    writes: Arc<Mutex<Vec<Write>>>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    pub fn start(target: Target, run: i64, interval: Duration) -> Canary {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let last_error = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let (w, le, s) = (writes.clone(), last_error.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.is_cancelled() {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let sent_ms = now().0;
                let attempt = async {
                    if conn.is_none() {
                        conn = Some(target.connect().await?);
                    }
                    let c = conn.as_mut().ok_or("no connection")?;
                    target.write(c, run, seq).await
                };
                let result = tokio::time::timeout(WRITE_TIMEOUT, attempt)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {WRITE_TIMEOUT:?}")));
                let acked_ms = match result {
                    Ok(()) => Some(now().0),
                    Err(e) => {
                        conn = None;
                        *le.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        None
                    }
                };
                w.lock().unwrap_or_else(|e| e.into_inner()).push(Write {
                    seq,
                    sent_ms,
                    acked_ms,
                });
            }
        });
        Canary {
            writes,
            last_error,
            stop,
            task,
        }
    }

    /// The newest acknowledgement, and how many writes were acknowledged.
    pub fn acks(&self) -> (Option<u64>, usize) {
        let w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let acked = w.iter().filter(|w| w.acked_ms.is_some()).count();
        (w.iter().rev().find_map(|w| w.acked_ms), acked)
    }

    /// Whether a write sent at or after `t` was acknowledged.
    pub fn acked_since(&self, t: u64) -> bool {
        let w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .rev()
            .any(|w| w.sent_ms >= t && w.acked_ms.is_some())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops writing (the write in flight ends within its timeout) and returns the history.
    pub async fn stop(self) -> Vec<Write> {
        self.stop.cancel();
        let _ = tokio::time::timeout(WRITE_TIMEOUT * 2, self.task).await;
        let w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        w.clone()
    }
}
