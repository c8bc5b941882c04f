//! Redis 7: probed with `INFO replication` and `min-replicas-to-write`; fenced by making the
//! primary refuse every write (`min-replicas-to-write` set past any replica count) and
//! ending its client connections; promoted with `REPLICAOF NO ONE`, the other replicas
//! re-pointed; synchronous mode is `min-replicas-to-write 1` (with clients confirming
//! writes by `WAIT`); rejoined with `REPLICAOF`.
//!
//! Positions are replication offsets, which carry on across a promotion, so they compare
//! across the nodes of a service.

use super::{node_or_return, ping_line, poll, Answer, Datastore, PingLine, Timeouts};
use crate::service::Node;
use async_trait::async_trait;
use lifeboat_core::plan::FenceMode;
use lifeboat_core::{Facts, Role, SyncSetting};
use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `min-replicas-to-write` of a fenced primary: no set of replicas can satisfy it.
const FENCED: u32 = 1_000_000;

/// How long a promotion waits for another node to say it is a replica to re-point.
const REPOINT: Duration = Duration::from_millis(200);

struct RedisNode {
    host: String,
    port: u16,
    addr: SocketAddr,
    user: Option<String>,
    password: Option<String>,
}

pub struct Redis {
    nodes: BTreeMap<String, RedisNode>,
}

/// What `INFO replication` and the settings Lifeboat manages say of one server.
#[derive(Debug, Default)]
struct Info {
    fields: BTreeMap<String, String>,
    min_replicas_to_write: u32,
}

impl Info {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
    fn num(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
    fn is_master(&self) -> bool {
        self.get("role") == Some("master")
    }
    /// Bytes into the replication stream: written (primary) or processed (replica).
    fn offset(&self) -> u64 {
        let key = if self.is_master() {
            "master_repl_offset"
        } else {
            "slave_repl_offset"
        };
        self.num(key).unwrap_or(0)
    }
    /// The replicas a primary lists: `slaveN:ip=…,port=…,state=online,offset=…,lag=…`.
    fn replicas(&self) -> Vec<BTreeMap<&str, &str>> {
        self.fields
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix("slave")
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
            .map(|(_, v)| v.split(',').filter_map(|kv| kv.split_once('=')).collect())
            .collect()
    }
}

impl Redis {
    pub fn new(nodes: &[Node]) -> Redis {
        Redis {
            nodes: nodes
                .iter()
                .map(|n| {
                    let r = RedisNode {
                        host: n.config.host.clone(),
                        port: n.config.port,
                        addr: n.addr,
                        user: n.config.user.clone(),
                        password: n.password.clone(),
                    };
                    (n.name.clone(), r)
                })
                .collect(),
        }
    }

    fn node(&self, name: &str) -> Result<&RedisNode, Answer> {
        self.nodes
            .get(name)
            .ok_or_else(|| Answer::Failed(format!("node {name} is not in the config")))
    }

    /// The configured node a primary lists as its replica at `ip`:`port`.
    fn named(&self, ip: &str, port: &str) -> Option<&str> {
        let port: u16 = port.parse().ok()?;
        let by_addr = self
            .nodes
            .iter()
            .find(|(_, n)| n.addr.port() == port && n.addr.ip().to_string() == ip);
        let by_port = || {
            let mut same = self.nodes.iter().filter(|(_, n)| n.port == port);
            match (same.next(), same.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        };
        by_addr.or_else(by_port).map(|(name, _)| name.as_str())
    }

    async fn connect(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, Answer> {
        let n = self.node(name)?;
        connect(n.addr, n.user.as_deref(), n.password.as_deref(), timeout)
            .await
            .map_err(|e| Answer::Unreached(describe(name, n.addr, &e)))
    }

    async fn info(&self, name: &str, timeout: Duration) -> Result<Info, Answer> {
        let mut c = self.connect(name, timeout).await?;
        let n = self.node(name)?;
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .map_err(|e| Answer::Failed(describe(name, n.addr, &e)))?;
        let setting: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("min-replicas-to-write")
            .query_async(&mut c)
            .await
            .map_err(|e| Answer::Failed(describe(name, n.addr, &e)))?;
        let fields: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        if !fields.contains_key("role") {
            return Err(Answer::Failed(format!(
                "{name} at {}: INFO replication has no role; is it a Redis server?",
                n.addr
            )));
        }
        Ok(Info {
            fields,
            min_replicas_to_write: setting.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    /// Runs one command on `name`; `Unreached` when the connection fails.
    async fn run(&self, name: &str, cmd: &redis::Cmd, timeout: Duration) -> Answer {
        let mut c = match self.connect(name, timeout).await {
            Ok(c) => c,
            Err(a) => return a,
        };
        let addr = self.nodes[name].addr;
        match cmd.query_async::<redis::Value>(&mut c).await {
            Ok(_) => Answer::Ok(String::new()),
            Err(e) if e.is_timeout() => Answer::Unknown(describe(name, addr, &e)),
            Err(e) => Answer::Failed(describe(name, addr, &e)),
        }
    }

    async fn set_min_replicas(&self, name: &str, n: u32, timeout: Duration) -> Answer {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("min-replicas-to-write").arg(n);
        self.run(name, &cmd, timeout).await
    }

    /// `REPLICAOF` `source`, with the credentials the source asks for.
    async fn replicate(&self, name: &str, source: &str, timeout: Duration) -> Answer {
        let src = match self.node(source) {
            Ok(s) => s,
            Err(a) => return a,
        };
        if let Some(pw) = &src.password {
            let mut auth = redis::cmd("CONFIG");
            auth.arg("SET").arg("masterauth").arg(pw);
            if let Some(u) = &src.user {
                auth.arg("masteruser").arg(u);
            }
            let a = self.run(name, &auth, timeout).await;
            if !a.is_ok() {
                return a;
            }
        }
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg(&src.host).arg(src.port);
        self.run(name, &cmd, timeout).await
    }
}

/// A Redis error in words that name the node and what to do.
/// A connection to the Redis server at `addr`, authenticated when a password is given;
/// connecting and every reply bounded by `timeout`.
pub(crate) async fn connect(
    addr: SocketAddr,
    user: Option<&str>,
    password: Option<&str>,
    timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(u) = user {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let info = redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
        .into_connection_info()?
        .set_redis_settings(settings);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn describe(name: &str, addr: SocketAddr, e: &redis::RedisError) -> String {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if auth {
        return format!(
            "{name} at {addr}: authentication failed ({e}); check the node's password-file or password-env (and user for an ACL user)"
        );
    }
    let proto = matches!(
        e.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    );
    if proto {
        return format!(
            "{name} at {addr} does not answer as Redis ({e}); is it a server of another engine? check the service's kind and the node's port"
        );
    }
    format!("{name} at {addr}: {e}")
}

/// Whether the server at `addr` speaks RESP: `Some(why not)` when it closes the connection
/// on a `PING` or answers it otherwise; `None` when it is Redis or cannot be told.
async fn not_redis(addr: SocketAddr, timeout: Duration) -> Option<String> {
    match ping_line(addr, timeout).await? {
        PingLine::Resp(_) => None,
        PingLine::Closed => Some("it closed the connection on a Redis PING".into()),
        PingLine::Other(r) => Some(format!("it answered a Redis PING with {r:?}")),
    }
}

#[async_trait]
impl Datastore for Redis {
    async fn probe(&self, node: &str, timeout: Duration) -> Result<Facts, String> {
        let info = match self.info(node, timeout).await {
            Ok(i) => i,
            Err(a) => {
                let addr = self.nodes.get(node).map(|n| n.addr);
                let why = match addr {
                    Some(addr) if !a.detail().contains("authentication failed") => {
                        not_redis(addr, timeout).await.map(|why| (addr, why))
                    }
                    _ => None,
                };
                return Err(match why {
                    Some((addr, why)) => format!(
                        "{node} at {addr} does not answer as Redis ({why}); is it a server of another engine? check the service's kind and the node's port"
                    ),
                    None => a.detail().to_owned(),
                });
            }
        };
        let mut f = Facts {
            position: info.offset(),
            ..Facts::default()
        };
        if info.is_master() {
            f.role = Role::Primary;
            for r in info.replicas() {
                let Some(name) =
                    self.named(r.get("ip").unwrap_or(&""), r.get("port").unwrap_or(&""))
                else {
                    continue;
                };
                if r.get("state") == Some(&"online") {
                    f.connected_replicas.push(name.to_owned());
                    if let Some(lag) = r.get("lag").and_then(|l| l.parse::<u64>().ok()) {
                        f.replica_lag_ms.insert(name.to_owned(), lag * 1000);
                    }
                }
            }
            f.connected_replicas.sort();
            // `WAIT` may have been answered by any linked replica.
            if info.min_replicas_to_write >= 1 {
                f.sync_replicas = f.connected_replicas.clone();
            }
            f.sync = SyncSetting::AtLeast(info.min_replicas_to_write);
            f.read_only = info.min_replicas_to_write >= FENCED;
        } else {
            f.role = Role::Replica;
            f.applied = Some(f.position);
            f.streaming = info.get("master_link_status") == Some("up");
        }
        Ok(f)
    }

    /// A Redis server cannot be stopped from here: either mode makes it refuse writes.
    async fn fence(&self, node: &str, _mode: FenceMode, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let a = self.set_min_replicas(node, FENCED, t.fence).await;
        if !a.is_ok() {
            return a;
        }
        let mut kill = redis::cmd("CLIENT");
        kill.arg("KILL").arg("TYPE").arg("normal");
        let ended = self.run(node, &kill, t.fence).await;
        Answer::Ok(format!(
            "{node} refuses writes (min-replicas-to-write {FENCED}){}",
            if ended.is_ok() {
                ", its client connections ended"
            } else {
                ""
            }
        ))
    }

    async fn unfence(&self, node: &str, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        match self.set_min_replicas(node, 0, t.fence).await {
            Answer::Ok(_) => Answer::Ok(format!("{node} takes writes again")),
            a => a,
        }
    }

    async fn promote(&self, node: &str, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg("NO").arg("ONE");
        match self.run(node, &cmd, t.promote).await {
            Answer::Ok(_) => {}
            Answer::Unreached(d) => return Answer::Unreached(d),
            Answer::Failed(d) => return Answer::Failed(d),
            Answer::Unknown(d) => return Answer::Unknown(d),
        }
        // A fence may have come along from the old primary's settings.
        let _ = self.set_min_replicas(node, 0, t.fence).await;
        // The other replicas follow the new primary. All at once, and a node that does not
        // answer within REPOINT (a lost old primary) is left alone: it must not delay the
        // promotion's end, and the old primary is rejoined on purpose, not here.
        let repoint = |other: String| async move {
            let quick = REPOINT.min(t.probe);
            match self.info(&other, quick).await {
                Ok(i) if !i.is_master() => {
                    Some(match self.replicate(&other, node, t.fence).await {
                        Answer::Ok(_) => other,
                        a => format!("{other} (not re-pointed: {})", a.detail()),
                    })
                }
                _ => None,
            }
        };
        let others = self.nodes.keys().filter(|o| *o != node).cloned();
        let repointed: Vec<String> = futures::future::join_all(others.map(repoint))
            .await
            .into_iter()
            .flatten()
            .collect();
        Answer::Ok(if repointed.is_empty() {
            format!("{node} promoted")
        } else {
            format!(
                "{node} promoted; replicas now following it: {}",
                repointed.join(", ")
            )
        })
    }

    async fn catch_up(&self, node: &str, from: &str, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let goal = match self.info(from, t.probe).await {
            Ok(i) => i.offset(),
            Err(a) => {
                return Answer::Failed(format!(
                    "cannot read the replication offset of {from}: {}",
                    a.detail()
                ))
            }
        };
        let reached = poll(t.catch_up, Duration::from_millis(10), || async move {
            let seen = self.info(node, t.probe).await.ok().map(|i| i.offset());
            seen.filter(|o| *o >= goal).ok_or(seen)
        })
        .await;
        match reached {
            Ok(o) => Answer::Ok(format!("{node} processed up to offset {o} (of {goal})")),
            Err(seen) => Answer::Failed(format!(
                "{node} did not reach offset {goal} within {:?} (at {})",
                t.catch_up,
                seen.map_or("unknown".into(), |o| o.to_string())
            )),
        }
    }

    async fn set_sync(&self, node: &str, names: &[String], t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let n = u32::from(!names.is_empty());
        match self.set_min_replicas(node, n, t.fence).await {
            Answer::Ok(_) => Answer::Ok(format!("min-replicas-to-write {n} on {node}")),
            a => a,
        }
    }

    async fn write_check(&self, node: &str, epoch: u64, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let mut cmd = redis::cmd("SET");
        cmd.arg("lifeboat:heartbeat").arg(epoch);
        let cmd = &cmd;
        let ok = poll(t.promote, Duration::from_millis(20), || async move {
            match self.run(node, cmd, t.probe).await {
                Answer::Ok(_) => Ok(()),
                a => Err(a.detail().to_owned()),
            }
        })
        .await;
        match ok {
            Ok(()) => Answer::Ok(format!("heartbeat written on {node} (epoch {epoch})")),
            Err(last) => {
                Answer::Unknown(format!("no write succeeded within {:?}: {last}", t.promote))
            }
        }
    }

    async fn rejoin(&self, node: &str, source: &str, t: Timeouts) -> Answer {
        node_or_return!(self, node);
        let a = self.replicate(node, source, t.fence).await;
        if !a.is_ok() {
            return a;
        }
        // Fenced as a primary; as a replica the setting would only matter once promoted.
        let _ = self.set_min_replicas(node, 0, t.fence).await;
        let linked = poll(t.rejoin, Duration::from_millis(50), || async move {
            match self.info(node, t.probe).await {
                Ok(i) if !i.is_master() && i.get("master_link_status") == Some("up") => Ok(()),
                _ => Err(()),
            }
        })
        .await;
        match linked {
            Ok(()) => Answer::Ok(format!("{node} is a replica of {source}, linked")),
            Err(()) => Answer::Unknown(format!(
                "{node} was told to follow {source} but is not linked within {:?}",
                t.rejoin
            )),
        }
    }

    fn can_rejoin(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    fn format_position(&self, position: u64) -> String {
        format!("offset {position}")
    }
}
