//! Real Redis servers (`redis-server`) on loopback: a primary, replicas of it, and a canary
//! that writes through an address and remembers which writes were acknowledged. Each server
//! runs from its own generated config file, so a password never shows on a command line.

use crate::{free_port, CanaryLog, TestDir};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

const START: Duration = Duration::from_secs(10);
const LINK: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(10);
const DROP_STOP: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const CANARY_TIMEOUT: Duration = Duration::from_secs(2);
const SCAN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// How a server is set up.
#[derive(Clone, Default)]
pub struct RedisOptions {
    /// `requirepass` and `masterauth`, written into the server's config file (mode 0600).
    pub password: Option<String>,
}

/// A real `redis-server` on a free loopback port, in its own directory. Dropping it stops it
/// (SIGTERM, then SIGKILL after 5 s).
pub struct RedisServer {
    name: String,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A primary in `dir/<name>`; waits (10 s at most) until it answers PING.
    pub async fn start(dir: &TestDir, name: &str, opts: &RedisOptions) -> Result<RedisServer> {
        RedisServer::launch(dir, name, opts, None).await
    }

    /// A replica of `primary` in `dir/<name>`; waits (20 s at most) until its link is up.
    pub async fn replica_of(
        dir: &TestDir,
        name: &str,
        primary: &RedisServer,
        opts: &RedisOptions,
    ) -> Result<RedisServer> {
        let s = RedisServer::launch(dir, name, opts, Some(primary.port)).await?;
        s.wait_link_up(LINK).await?;
        Ok(s)
    }

    async fn launch(
        dir: &TestDir,
        name: &str,
        opts: &RedisOptions,
        primary: Option<u16>,
    ) -> Result<RedisServer> {
        let path = dir.subdir(name)?;
        let port = free_port()?;
        // shutdown-timeout and repl-diskless-sync-delay only keep tests quick.
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsave \"\"\nappendonly no\ndaemonize no\n\
             logfile {}\nprotected-mode no\nreplica-read-only yes\nshutdown-timeout 1\n\
             repl-diskless-sync-delay 0\n",
            quote(&path.display().to_string()),
            quote(&path.join("redis.log").display().to_string()),
        );
        if let Some(pw) = &opts.password {
            conf += &format!("requirepass {}\nmasterauth {}\n", quote(pw), quote(pw));
        }
        if let Some(p) = primary {
            conf += &format!("replicaof 127.0.0.1 {p}\n");
        }
        let conf_path = path.join("redis.conf");
        write_private(&conf_path, &conf)?;
        let mut s = RedisServer {
            name: name.into(),
            port,
            dir: path,
            conf: conf_path,
            password: opts.password.clone(),
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// Runs `redis-server <conf>` and waits until it answers PING.
    async fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.out"))?;
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                self.child = None;
                bail!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let ping = async {
                let mut c = connect(self.addr(), self.password(), Duration::from_secs(1)).await?;
                redis::cmd("PING").query_async::<String>(&mut c).await?;
                anyhow::Ok(())
            };
            match ping.await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!(
                        "{} did not answer PING within {START:?}: {e:#}\n{}",
                        self.name,
                        self.log_tail()
                    )
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The last lines of the server's output and log, for error messages.
    fn log_tail(&self) -> String {
        ["redis.out", "redis.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .flat_map(|t| {
                let lines: Vec<String> = t.lines().map(String::from).collect();
                lines[lines.len().saturating_sub(10)..].to_vec()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's pid; `None` while stopped or killed.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// An authenticated connection with connect and response timeouts of 5 s.
    pub async fn client(&self) -> Result<MultiplexedConnection> {
        connect(self.addr(), self.password(), CLIENT_TIMEOUT).await
    }

    /// SIGKILL, and reaps the process: the node is lost at once.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Sends `sig` (e.g. SIGSTOP or SIGCONT) to the server.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        Ok(kill(Pid::from_raw(pid), sig)?)
    }

    /// Stops the server if it runs, then starts it again on the same port, directory and
    /// config file as at first (a primary as a primary, a replica as a replica of its original
    /// primary; runtime changes such as REPLICAOF are not kept); waits until it answers PING.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Graceful stop: SIGTERM, then SIGKILL after 10 s. Does nothing when not running.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(child) = self.child.take() {
            tokio::task::spawn_blocking(move || terminate(child, STOP)).await??;
        }
        Ok(())
    }

    /// The first element of ROLE: `master` or `slave`.
    /// The server's role. A fence ends every client connection (`CLIENT KILL TYPE normal`),
    /// so a connection cut under the question is asked again, at most three times.
    pub async fn role(&self) -> Result<String> {
        let mut tries = 0;
        loop {
            let asked = async {
                let reply: Vec<redis::Value> = redis::cmd("ROLE")
                    .query_async(&mut self.client().await?)
                    .await?;
                anyhow::Ok(reply)
            };
            match asked.await {
                Ok(reply) => {
                    let first = reply.into_iter().next().context("empty ROLE reply")?;
                    return Ok(redis::from_redis_value(first)?);
                }
                Err(e)
                    if tries < 2
                        && e.downcast_ref::<redis::RedisError>()
                            .is_some_and(|r| r.is_io_error() || r.is_connection_dropped()) =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The `key:value` lines of `INFO replication`.
    pub async fn info_replication(&self) -> Result<BTreeMap<String, String>> {
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.client().await?)
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// Waits until this replica reports `master_link_status:up`.
    pub async fn wait_link_up(&self, timeout: Duration) -> Result<()> {
        self.wait_for("master_link_status", "up", timeout, || async {
            Ok(self
                .info_replication()
                .await?
                .remove("master_link_status")
                .unwrap_or_else(|| "absent".into()))
        })
        .await
    }

    /// Waits until ROLE reports `role` (`master` or `slave`).
    pub async fn wait_role(&self, role: &str, timeout: Duration) -> Result<()> {
        self.wait_for("role", role, timeout, || self.role()).await
    }

    async fn wait_for<F, Fut>(
        &self,
        what: &str,
        want: &str,
        timeout: Duration,
        mut observe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<String>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match observe().await {
                Ok(v) if v == want => return Ok(()),
                Ok(v) => v,
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: {what} is not {want} after {timeout:?} (last: {seen})",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Drop cannot await, and the runtime may be gone.
        if let Some(child) = self.child.take() {
            let _ = terminate(child, DROP_STOP);
        }
    }
}

/// SIGTERM (and SIGCONT, as a frozen server cannot act on it), then SIGKILL after `grace`.
fn terminate(mut child: Child, grace: Duration) -> std::io::Result<()> {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let _ = kill(pid, Signal::SIGCONT);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    child.kill()?;
    child.wait().map(drop)
}

/// A redis.conf argument: double-quoted, `\` and `"` escaped, anything else unprintable as `\xHH`.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                q.push('\\');
                q.push(b as char);
            }
            0x20..=0x7e => q.push(b as char),
            _ => q += &format!("\\x{b:02x}"),
        }
    }
    q.push('"');
    q
}

/// Writes a new file readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?
        .write_all(text.as_bytes())?;
    Ok(())
}

/// A connection to `addr`, authenticated when `password` is given; `timeout` bounds both the
/// connection (with AUTH) and every response.
async fn connect(
    addr: SocketAddr,
    password: Option<&str>,
    timeout: Duration,
) -> Result<MultiplexedConnection> {
    let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(pw) = password {
        settings = settings.set_password(pw);
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
        .with_context(|| format!("connecting to redis at {addr}"))
}

/// A primary `cache-1` (region us-east) and two replicas `cache-2` and `cache-3` (region
/// eu-west), all linked and up.
pub struct RedisSet {
    pub primary: RedisServer,
    pub replicas: Vec<RedisServer>,
    /// Last: dropped after the servers.
    pub dir: TestDir,
}

impl RedisSet {
    pub async fn start(prefix: &str, opts: &RedisOptions) -> Result<RedisSet> {
        let dir = TestDir::new(prefix)?;
        let primary = RedisServer::start(&dir, "cache-1", opts).await?;
        let mut replicas = Vec::new();
        for name in ["cache-2", "cache-3"] {
            replicas.push(RedisServer::replica_of(&dir, name, &primary, opts).await?);
        }
        Ok(RedisSet {
            primary,
            replicas,
            dir,
        })
    }
}

/// A client that writes `SET canary:<seq> <seq>` every `interval` through an address (usually
/// Lifeboat's endpoint), then `WAIT n timeout` when asked, reconnecting after every failed
/// attempt, and remembers which writes were acknowledged and when, as [`crate::Canary`] does.
pub struct RedisCanary {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<CanaryLog>,
}

impl RedisCanary {
    /// Starts at 1 + the highest seq already stored under `canary:*` at `addr`. An attempt is
    /// acknowledged when SET answers OK and, with `wait = Some((n, timeout))`, `WAIT n timeout`
    /// answers at least `n`. Connecting and SET are bounded by 2 s, WAIT by its timeout + 2 s.
    pub async fn start(
        addr: SocketAddr,
        password: Option<String>,
        interval: Duration,
        wait: Option<(u32, Duration)>,
    ) -> Result<RedisCanary> {
        let next = redis_canary_seqs(addr, password.as_deref())
            .await?
            .last()
            .map_or(1, |s| s + 1);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut log = CanaryLog::default();
            let mut conn = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for seq in next.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                match canary_write(&mut conn, addr, password.as_deref(), seq, wait).await {
                    Ok(()) => log.acked.push((seq, SystemTime::now())),
                    Err(e) => {
                        log.failed.push(SystemTime::now());
                        log.last_error = Some(format!("{e:#}"));
                        conn = None;
                    }
                }
            }
            log
        });
        Ok(RedisCanary { stop, task })
    }

    pub async fn stop(self) -> Result<CanaryLog> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

/// One canary attempt on `conn`, connecting first if there is no connection.
async fn canary_write(
    conn: &mut Option<MultiplexedConnection>,
    addr: SocketAddr,
    password: Option<&str>,
    seq: i64,
    wait: Option<(u32, Duration)>,
) -> Result<()> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(connect(addr, password, CANARY_TIMEOUT).await?),
    };
    let set: redis::Value = redis::cmd("SET")
        .arg(format!("canary:{seq}"))
        .arg(seq)
        .query_async(c)
        .await?;
    if set != redis::Value::Okay {
        bail!("SET canary:{seq} answered {set:?}");
    }
    if let Some((n, timeout)) = wait {
        let mut w = c.clone();
        w.set_response_timeout(timeout + CANARY_TIMEOUT);
        let got: u32 = redis::cmd("WAIT")
            .arg(n)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut w)
            .await?;
        if got < n {
            bail!("WAIT {n}: only {got} replicas acknowledged canary:{seq}");
        }
    }
    Ok(())
}

/// Every seq stored under `canary:*` on the server at `addr` (SCAN, 60 s at most).
pub async fn redis_canary_seqs(addr: SocketAddr, password: Option<&str>) -> Result<BTreeSet<i64>> {
    let mut c = connect(addr, password, CLIENT_TIMEOUT).await?;
    let deadline = tokio::time::Instant::now() + SCAN;
    let mut seqs = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("canary:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await?;
        seqs.extend(
            keys.iter()
                .filter_map(|k| k.strip_prefix("canary:")?.parse::<i64>().ok()),
        );
        if next == 0 {
            return Ok(seqs);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("SCAN of {addr} did not finish within {SCAN:?}");
        }
        cursor = next;
    }
}
