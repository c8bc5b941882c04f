//! PostgreSQL: probed with one query per interval; fenced with `default_transaction_read_only`
//! (and a stop under local control); promoted with `pg_promote()`; synchronous replication
//! through `synchronous_standby_names`; rejoined with `pg_rewind` or a fresh clone.

use super::{node_or_return, ping_line, poll, Answer, Datastore, PingLine, Timeouts};
use crate::service::Node;
use async_trait::async_trait;
use lifeboat_core::plan::FenceMode;
use lifeboat_core::{Facts, Role, SyncSetting};
use lifeboat_postgres::{self as pg, ConnInfo, LocalServer, PgObservation};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::warn;

struct PgNode {
    conn: ConnInfo,
    addr: std::net::SocketAddr,
    control: Option<LocalServer>,
}

pub struct Postgres {
    nodes: BTreeMap<String, PgNode>,
    /// Nodes that have answered a probe as PostgreSQL: their probes get the whole timeout.
    /// The probe of a node that never has keeps a part of it to tell whether the server at
    /// its address speaks PostgreSQL at all.
    answered: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// What a probe of a node that never answered keeps of its timeout to tell the engine.
const ENGINE_CHECK: Duration = Duration::from_millis(200);

impl Postgres {
    pub fn new(nodes: &[Node]) -> Postgres {
        Postgres {
            nodes: nodes
                .iter()
                .map(|n| {
                    let conn = ConnInfo::of_node(&n.config, n.password.clone());
                    let control = n.control.clone();
                    let addr = n.addr;
                    (
                        n.name.clone(),
                        PgNode {
                            conn,
                            addr,
                            control,
                        },
                    )
                })
                .collect(),
            answered: Default::default(),
        }
    }

    fn node(&self, name: &str) -> Result<&PgNode, Answer> {
        self.nodes
            .get(name)
            .ok_or_else(|| Answer::Failed(format!("node {name} is not in the config")))
    }
}

#[async_trait]
impl Datastore for Postgres {
    async fn probe(&self, node: &str, timeout: Duration) -> Result<Facts, String> {
        let n = self.node(node).map_err(|a| a.detail().to_owned())?;
        let known = self
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node);
        let check = if known {
            Duration::ZERO
        } else {
            ENGINE_CHECK.min(timeout / 4)
        };
        match pg::probe(&n.conn, timeout - check).await {
            Ok(o) => {
                if !known {
                    let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
                    answered.insert(node.to_owned());
                }
                Ok(facts_of(&o))
            }
            Err(e) if known => Err(e.to_string()),
            Err(e) => Err(match not_postgres(n.addr, check / 2).await {
                Some(why) => format!(
                    "{node} at {} does not answer as PostgreSQL ({why}); is it a server of another engine? check the service's kind and the node's port",
                    n.addr
                ),
                None => e.to_string(),
            }),
        }
    }

    /// Read-only through SQL; for a lost or returning primary under local control, the
    /// server is also stopped: after the SQL fence (so the read-only setting is on disk if
    /// someone starts it again), or after a second if the SQL fence hangs (a stop by signal
    /// does not need the network). A switchover's old primary keeps running, read-only, so
    /// the target can catch up with its last WAL.
    async fn fence(&self, node: &str, mode: FenceMode, t: Timeouts) -> Answer {
        let n = node_or_return!(self, node);
        let timeout = t.fence;
        let stop = async {
            match (&n.control, mode) {
                (Some(ctl), FenceMode::Stop) => Some(ctl.stop(pg::StopMode::Fast, timeout).await),
                _ => None,
            }
        };
        let sql = pg::fence_read_only(&n.conn, timeout);
        tokio::pin!(sql);
        let early = tokio::select! {
            r = &mut sql => Some(r),
            () = tokio::time::sleep(timeout.min(Duration::from_secs(1))) => None,
        };
        let (sql, stop) = match early {
            Some(r) => (r, stop.await),
            None => tokio::join!(sql, stop),
        };
        match (sql, stop) {
            (_, Some(Ok(()))) => Answer::Ok(format!("{node} stopped")),
            (Ok(k), _) => Answer::Ok(format!("{node} read-only, {k} client session(s) ended")),
            (Err(e), None) => Answer::Failed(format!("read-only fence failed: {e}")),
            (Err(e), Some(Err(s))) => {
                Answer::Failed(format!("read-only fence failed: {e}; stop failed: {s}"))
            }
        }
    }

    async fn unfence(&self, node: &str, t: Timeouts) -> Answer {
        let n = node_or_return!(self, node);
        if let Some(ctl) = &n.control {
            if !ctl.is_running().await {
                if let Err(e) = ctl.start(t.rejoin).await {
                    return Answer::Failed(format!("restart failed: {e}"));
                }
            }
        }
        match pg::unfence_read_only(&n.conn, t.fence).await {
            Ok(()) => Answer::Ok(format!("{node} writable again")),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    async fn promote(&self, node: &str, t: Timeouts) -> Answer {
        let n = node_or_return!(self, node);
        match pg::promote(&n.conn, t.promote).await {
            Ok(()) => {
                // A read-only fence may have come along in a base backup.
                let _ = pg::unfence_read_only(&n.conn, t.fence).await;
                Answer::Ok(format!("{node} promoted"))
            }
            Err(e) if e.is_retryable() => Answer::Unknown(e.to_string()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    async fn catch_up(&self, node: &str, from: &str, t: Timeouts) -> Answer {
        let (target, source) = (node_or_return!(self, node), node_or_return!(self, from));
        let goal = match pg::probe(&source.conn, t.probe).await {
            Ok(o) => o.current_lsn,
            Err(e) => {
                return Answer::Failed(format!("cannot read the last WAL position of {from}: {e}"))
            }
        };
        let reached = poll(t.catch_up, Duration::from_millis(20), || async move {
            let replayed = pg::probe(&target.conn, t.probe)
                .await
                .ok()
                .and_then(|o| o.replay_lsn);
            replayed.filter(|r| *r >= goal).ok_or(replayed)
        })
        .await;
        match reached {
            Ok(_) => Answer::Ok(format!("{node} replayed up to {}", pg::format_lsn(goal))),
            Err(seen) => Answer::Failed(format!(
                "{node} did not reach {} within {:?} (replayed {})",
                pg::format_lsn(goal),
                t.catch_up,
                seen.map(pg::format_lsn).unwrap_or_else(|| "unknown".into())
            )),
        }
    }

    async fn set_sync(&self, node: &str, names: &[String], t: Timeouts) -> Answer {
        let n = node_or_return!(self, node);
        let value = sync_names_value(names);
        match pg::set_synchronous_standby_names(&n.conn, &value, t.fence).await {
            Ok(()) => Answer::Ok(format!("synchronous_standby_names = '{value}'")),
            // Only the connection before the change reports a connect error.
            Err(e @ pg::PgError::Connect { .. }) => Answer::Unreached(e.to_string()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    async fn write_check(&self, node: &str, epoch: u64, t: Timeouts) -> Answer {
        let n = node_or_return!(self, node);
        let ok = poll(t.promote, Duration::from_millis(20), || async move {
            pg::write_heartbeat(&n.conn, epoch, t.probe).await
        })
        .await;
        match ok {
            Ok(()) => Answer::Ok(format!("heartbeat committed on {node} (epoch {epoch})")),
            Err(last) => {
                Answer::Unknown(format!("no write succeeded within {:?}: {last}", t.promote))
            }
        }
    }

    async fn rejoin(&self, node: &str, source: &str, t: Timeouts) -> Answer {
        let (n, src) = (node_or_return!(self, node), node_or_return!(self, source));
        let Some(ctl) = &n.control else {
            return Answer::Failed(format!("{node} has no [control] section"));
        };
        let limit = t.rejoin;
        if let Err(e) = ctl.stop(pg::StopMode::Fast, limit).await {
            return Answer::Failed(format!("stopping {node}: {e}"));
        }
        let how = match ctl.rewind_from(&src.conn, node, limit).await {
            Ok(()) => "rewound".to_owned(),
            Err(rewind) => {
                warn!(node, error = %rewind, "pg_rewind failed; cloning afresh");
                if let Err(e) = ctl.clone_from(&src.conn, node, limit).await {
                    return Answer::Failed(format!(
                        "pg_rewind failed ({rewind}) and so did a fresh clone: {e}"
                    ));
                }
                format!("re-cloned (pg_rewind: {rewind})")
            }
        };
        if let Err(e) = ctl.start(limit).await {
            return Answer::Failed(format!("{how}, but starting {node} failed: {e}"));
        }
        let streaming = poll(limit, Duration::from_millis(100), || async move {
            match pg::probe(&n.conn, t.probe).await {
                Ok(o) if o.in_recovery && o.wal_receiver_streaming => Ok(()),
                _ => Err(()),
            }
        })
        .await;
        match streaming {
            Ok(()) => Answer::Ok(format!("{node} {how}, streaming from {source}")),
            Err(()) => Answer::Unknown(format!(
                "{node} {how} and started, but not streaming within {limit:?}"
            )),
        }
    }

    fn can_rejoin(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.control.is_some())
    }

    fn format_position(&self, position: u64) -> String {
        pg::format_lsn(position)
    }
}

/// Whether the server at `addr` speaks the PostgreSQL protocol: `Some(why not)` when it
/// answers a line-protocol `PING`, which PostgreSQL never does; `None` when it is
/// PostgreSQL or cannot be told.
async fn not_postgres(addr: std::net::SocketAddr, timeout: Duration) -> Option<String> {
    match ping_line(addr, timeout).await? {
        PingLine::Closed => None,
        PingLine::Resp(r) => Some(format!("it answered a Redis PING with {r:?}")),
        PingLine::Other(r) => Some(format!("it answered {r:?}")),
    }
}

/// An observation in the decision engine's terms.
fn facts_of(o: &PgObservation) -> Facts {
    let sync = |s: &str| s == "sync" || s == "quorum";
    Facts {
        role: if o.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        },
        position: o.current_lsn,
        applied: o.replay_lsn,
        streaming: o.wal_receiver_streaming,
        sync_replicas: o
            .replicas
            .iter()
            .filter(|r| sync(&r.sync_state))
            .map(|r| r.application_name.clone())
            .collect(),
        connected_replicas: o
            .replicas
            .iter()
            .filter(|r| r.state == "streaming")
            .map(|r| r.application_name.clone())
            .collect(),
        sync: parse_sync_names(&o.synchronous_standby_names),
        replica_lag_ms: o
            .replicas
            .iter()
            .filter_map(|r| {
                let s = r.replay_lag_s.or(r.flush_lag_s).unwrap_or(0.0);
                (r.state == "streaming").then(|| (r.application_name.clone(), (s * 1000.0) as u64))
            })
            .collect(),
        read_only: o.default_read_only,
    }
}

/// `FIRST 1 ("a", "b")` for a priority list of standbys; empty for none. A list that starts
/// with the synchronous WAL archive waits for it and the first standby after it:
/// `FIRST 2 ("lifeboat_wal", "a", "b")`.
pub fn sync_names_value(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let archive_first = names[0] == lifeboat_core::SYNC_ARCHIVE;
    let wait_for = if archive_first && names.len() > 1 {
        2
    } else {
        1
    };
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("FIRST {wait_for} ({})", quoted.join(", "))
}

/// The setting as names when it is one Lifeboat writes ([`sync_names_value`]); any other
/// setting reads as one name that is the whole setting, so Lifeboat replaces it.
fn parse_sync_names(value: &str) -> SyncSetting {
    let names: Option<Vec<String>> = ["FIRST 1 (", "FIRST 2 ("]
        .iter()
        .find_map(|p| value.strip_prefix(p))
        .and_then(|v| v.strip_suffix(')'))
        .map(|list| {
            list.split(", ")
                .map(|n| n.trim_matches('"').to_owned())
                .collect()
        });
    SyncSetting::Names(match names {
        Some(n) if sync_names_value(&n) == value => n,
        _ if value.is_empty() => Vec::new(),
        _ => vec![value.to_owned()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synchronous_setting_reads_back_as_the_names_it_was_written_with() {
        let names = vec!["eu-west-1".to_string(), "eu-west-2".to_string()];
        assert_eq!(
            parse_sync_names(&sync_names_value(&names)),
            SyncSetting::Names(names)
        );
        assert_eq!(parse_sync_names(""), SyncSetting::Names(vec![]));
        assert_eq!(
            parse_sync_names("ANY 1 (a, b)"),
            SyncSetting::Names(vec!["ANY 1 (a, b)".into()])
        );
        // With the synchronous archive first, commits wait for it and one standby.
        let names = vec!["lifeboat_wal".to_string(), "eu-west-2".to_string()];
        let value = sync_names_value(&names);
        assert_eq!(value, r#"FIRST 2 ("lifeboat_wal", "eu-west-2")"#);
        assert_eq!(parse_sync_names(&value), SyncSetting::Names(names));
        assert_eq!(
            sync_names_value(&["lifeboat_wal".to_string()]),
            r#"FIRST 1 ("lifeboat_wal")"#
        );
        // Waiting for only one of them is not what Lifeboat wants: it is replaced.
        let one = r#"FIRST 1 ("lifeboat_wal", "eu-west-2")"#;
        assert_eq!(parse_sync_names(one), SyncSetting::Names(vec![one.into()]));
    }
}
