//! Test harness: temp dirs (kept on request), free loopback ports, real PostgreSQL servers
//! started as the `postgres` user and a real S3-compatible server (moto), all stopped
//! gracefully, and reproducible directory trees. Used by integration tests, the demo and
//! benchmarks only; nothing here is a fake.

pub mod notify;
pub mod redis;
pub mod tree;

use anyhow::{bail, Context, Result};
use lifeboat_postgres::{ConnInfo, InitOptions, LocalServer, StopMode};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

/// A temp dir that the PostgreSQL OS user can write to. Kept (and printed) when
/// `LIFEBOAT_KEEP_TMP` is set.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(prefix: &str) -> Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("lifeboat-{prefix}-"))
            .tempdir()?;
        let path = dir.path().to_path_buf();
        give_to_postgres(&path)?;
        Ok(TestDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory owned by the PostgreSQL OS user.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)?;
        give_to_postgres(&p)?;
        Ok(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("LIFEBOAT_KEEP_TMP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept {}", d.keep().display());
            }
        }
    }
}

/// Makes `path` writable by the PostgreSQL OS user (`postgres` when running as root).
pub fn give_to_postgres(path: &Path) -> Result<()> {
    let any = LocalServer {
        bin_dir: PathBuf::new(),
        data_dir: PathBuf::new(),
        os_user: None,
        port: 0,
    };
    Ok(any.prepare_dir(path)?)
}

/// A small real file system (tmpfs of `size`, e.g. `"24m"`) mounted at a directory, to fill up
/// on purpose; unmounted when dropped. Needs root, as the tests and CI run.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, size: &str) -> Result<SmallDisk> {
        std::fs::create_dir_all(path)?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a {size} tmpfs at {}: {} (the tests run as root)",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// A silent network for one loopback port: an nftables table that drops every TCP packet to
/// or from `port`, so connections are neither refused nor reset, exactly as when a region's
/// network goes quiet. The table is deleted when dropped. Needs root and `nft`, as CI has.
pub struct SilentPort {
    table: String,
}

impl SilentPort {
    /// Why a silent network cannot be made here, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("dropping packets with nftables needs root".into());
        }
        match std::process::Command::new("nft").arg("--version").output() {
            Ok(o) if o.status.success() => None,
            _ => Some("nft is not installed (Debian package nftables)".into()),
        }
    }

    pub fn start(port: u16) -> Result<SilentPort> {
        let table = format!("lifeboat_test_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n"
        );
        nft(&["-f", "-"], Some(&rules)).with_context(|| format!("silencing port {port}"))?;
        Ok(SilentPort { table })
    }
}

impl Drop for SilentPort {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table], None);
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A real PostgreSQL server on loopback. Dropping it stops it (fast mode).
pub struct PgCluster {
    pub name: String,
    pub server: LocalServer,
    pub password: Option<String>,
}

impl PgCluster {
    /// `initdb` + start a new primary in `dir/<name>`.
    pub async fn primary(dir: &TestDir, name: &str, opts: InitOptions) -> Result<PgCluster> {
        let c = PgCluster::unstarted(dir, name, opts.superuser_password.clone())?;
        c.server
            .initdb(&opts, START)
            .await
            .with_context(|| format!("initdb {name}"))?;
        c.server
            .start(START)
            .await
            .with_context(|| format!("starting {name}"))?;
        Ok(c)
    }

    /// A standby of `primary`, cloned with `pg_basebackup` and started; waits until it streams.
    pub async fn standby_of(dir: &TestDir, name: &str, primary: &PgCluster) -> Result<PgCluster> {
        let c = PgCluster::unstarted(dir, name, primary.password.clone())?;
        c.server
            .clone_from(&primary.conninfo(), name, START)
            .await
            .with_context(|| format!("cloning {name}"))?;
        c.server
            .start(START)
            .await
            .with_context(|| format!("starting {name}"))?;
        c.wait_streaming(START).await?;
        Ok(c)
    }

    /// Starts a restored data directory at `dir/<name>`, runs `sql` (one row, one text
    /// column), and stops the server again.
    pub async fn query_restored(dir: &TestDir, name: &str, sql: &str) -> Result<String> {
        let c = PgCluster::unstarted(dir, name, None)?;
        c.server
            .start(START)
            .await
            .with_context(|| format!("starting {name}"))?;
        let client = c.client().await?;
        // pg_ctl start -w returns once the server takes read-only connections, which is while
        // it still replays: read only after the replay ended (it promotes then).
        let deadline = tokio::time::Instant::now() + START;
        while client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get::<_, bool>(0)
        {
            if tokio::time::Instant::now() > deadline {
                c.stop().await?;
                bail!("{name} did not finish its recovery within {START:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let row = client.query_one(sql, &[]).await;
        c.stop().await?;
        Ok(row?.get(0))
    }

    fn unstarted(dir: &TestDir, name: &str, password: Option<String>) -> Result<PgCluster> {
        let server = LocalServer {
            bin_dir: LocalServer::find_bin_dir()?,
            data_dir: dir.path().join(name),
            os_user: None,
            port: free_port()?,
        };
        Ok(PgCluster {
            name: name.into(),
            server,
            password,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn conninfo(&self) -> ConnInfo {
        ConnInfo {
            host: "127.0.0.1".into(),
            port: self.server.port,
            user: "postgres".into(),
            password: self.password.clone(),
            dbname: "postgres".into(),
        }
    }

    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        Ok(lifeboat_postgres::connect(&self.conninfo(), Duration::from_secs(5)).await?)
    }

    /// Sends SIGKILL to the postmaster and every process it started, in one sweep: the
    /// node is lost at once, as in the shared failover benchmark.
    pub fn kill(&self) -> Result<()> {
        let pids = self.process_tree();
        if pids.is_empty() {
            bail!("{} is not running", self.name);
        }
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Ok(())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the whole server.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        for pid in self.process_tree() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
        }
        Ok(())
    }

    pub fn process_tree(&self) -> Vec<i32> {
        self.server.process_tree()
    }

    /// Waits until this standby's WAL receiver streams.
    pub async fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(o) = lifeboat_postgres::probe(&self.conninfo(), Duration::from_secs(2)).await
            {
                if o.in_recovery && o.wal_receiver_streaming {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} did not stream within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&self) -> Result<()> {
        Ok(self.server.stop(StopMode::Fast, START).await?)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Drop cannot await, and the runtime may be gone.
        self.server.stop_blocking();
    }
}

/// Two regions on loopback, as `lifeboat demo` and the integration tests use them: a primary
/// `us-east-1` (region us-east), a streaming standby `eu-west-1` (region eu-west), and a
/// `lifeboat.toml` describing them with free endpoint and API ports and a token file.
pub struct TwoRegions {
    pub primary: PgCluster,
    pub standby: PgCluster,
    pub endpoint_port: u16,
    pub api_port: u16,
    pub token: String,
    pub config_path: PathBuf,
    /// The primary's own small file system, when asked for (unmounted after the servers stop).
    pub primary_disk: Option<SmallDisk>,
    /// Last: dropped after the servers.
    pub dir: TestDir,
}

impl TwoRegions {
    /// `failover` is inserted in the `[services.orders.failover]` section, e.g.
    /// `replication = "sync"`.
    pub async fn start(prefix: &str, failover: &str) -> Result<TwoRegions> {
        TwoRegions::start_with(prefix, failover, None).await
    }

    /// As [`TwoRegions::start`], with the primary's data directory on a file system of its
    /// own of `primary_disk` (e.g. `"96m"`), to fill up.
    pub async fn start_with(
        prefix: &str,
        failover: &str,
        primary_disk: Option<&str>,
    ) -> Result<TwoRegions> {
        let dir = TestDir::new(prefix)?;
        let primary_disk = match primary_disk {
            Some(size) => {
                let d = SmallDisk::mount(&dir.path().join("us-east-1"), size)?;
                give_to_postgres(d.path())?;
                Some(d)
            }
            None => None,
        };
        let primary = PgCluster::primary(&dir, "us-east-1", InitOptions::default()).await?;
        let standby = PgCluster::standby_of(&dir, "eu-west-1", &primary).await?;
        let (endpoint_port, api_port) = (free_port()?, free_port()?);
        let token = format!("token-{}-{}", std::process::id(), api_port);
        std::fs::write(dir.path().join("api-token"), &token)?;
        let node = |c: &PgCluster| {
            format!(
                "name = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\ncontrol = {{ data-dir = \"{}\" }}\n",
                c.name,
                c.port(),
                c.server.data_dir.display()
            )
        };
        let text = format!(
            r#"# written by lifeboat-testkit
[controller]
api-listen = "127.0.0.1:{api_port}"
state-dir = "state"
api-token-file = "api-token"

[tiers.gold]
rto = "5s"
rpo = "1s"

[services.orders]
kind = "postgres"
tier = "gold"

[services.orders.endpoint]
listen = "127.0.0.1:{endpoint_port}"

[services.orders.failover]
{failover}

[services.orders.regions.us-east]
role = "primary"
priority = 100

[[services.orders.regions.us-east.nodes]]
{}
[services.orders.regions.eu-west]
role = "standby"
priority = 50

[[services.orders.regions.eu-west.nodes]]
{}"#,
            node(&primary),
            node(&standby)
        );
        let config_path = dir.path().join("lifeboat.toml");
        std::fs::write(&config_path, text)?;
        Ok(TwoRegions {
            primary,
            standby,
            endpoint_port,
            api_port,
            token,
            config_path,
            primary_disk,
            dir,
        })
    }

    /// A client connection through the Lifeboat endpoint.
    pub fn endpoint_conninfo(&self) -> ConnInfo {
        ConnInfo {
            port: self.endpoint_port,
            ..self.primary.conninfo()
        }
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// A client that writes one row every `interval` through a connection string, reconnecting
/// after errors, and remembers which writes were acknowledged and when: the same method as
/// the shared benchmark's `canary.py`, for tests and the demo.
pub struct Canary {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<CanaryLog>,
}

#[derive(Clone, Debug, Default)]
pub struct CanaryLog {
    /// (seq, acknowledged at) in order.
    pub acked: Vec<(i64, std::time::SystemTime)>,
    /// When each failed attempt failed.
    pub failed: Vec<std::time::SystemTime>,
    pub last_error: Option<String>,
}

impl CanaryLog {
    /// The end of the outage that a fault at `t` caused: the first acknowledgement after the
    /// first failure after `t` (as `canary.py verify --fault-ts` counts it). An ack between
    /// the fault and the first failure does not end the outage.
    pub fn recovered_after(&self, t: std::time::SystemTime) -> Option<std::time::SystemTime> {
        let from = self.failed.iter().copied().find(|f| *f >= t).unwrap_or(t);
        self.acked.iter().map(|a| a.1).find(|a| *a >= from)
    }

    /// Acknowledged seqs that `present` (the seqs found on the new primary) lacks.
    pub fn lost(&self, present: &std::collections::BTreeSet<i64>) -> Vec<i64> {
        self.acked
            .iter()
            .map(|a| a.0)
            .filter(|s| !present.contains(s))
            .collect()
    }
}

impl Canary {
    /// Creates the `canary` table through `conn`, then starts writing.
    pub async fn start(conn: ConnInfo, interval: Duration) -> Result<Canary> {
        let c = lifeboat_postgres::connect(&conn, Duration::from_secs(5)).await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS canary(seq bigint PRIMARY KEY, acked_at timestamptz)",
        )
        .await?;
        let next: i64 = c
            .query_one("SELECT coalesce(max(seq), 0) + 1 FROM canary", &[])
            .await?
            .get(0);
        drop(c);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut log = CanaryLog::default();
            let mut seq = next;
            let mut client: Option<tokio_postgres::Client> = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return log,
                }
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = lifeboat_postgres::connect(&conn, Duration::from_secs(2))
                        .await
                        .ok();
                }
                let Some(c) = &client else {
                    log.failed.push(std::time::SystemTime::now());
                    continue;
                };
                let r = c
                    .execute("INSERT INTO canary VALUES ($1, now())", &[&seq])
                    .await;
                seq += 1;
                match r {
                    Ok(_) => log.acked.push((seq - 1, std::time::SystemTime::now())),
                    Err(e) => {
                        log.failed.push(std::time::SystemTime::now());
                        log.last_error = Some(e.to_string());
                        client = None;
                    }
                }
            }
        });
        Ok(Canary { stop, task })
    }

    pub async fn stop(self) -> Result<CanaryLog> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

/// Every seq in the `canary` table of `conn`.
pub async fn canary_seqs(conn: &ConnInfo) -> Result<std::collections::BTreeSet<i64>> {
    let c = lifeboat_postgres::connect(conn, Duration::from_secs(5)).await?;
    Ok(c.query("SELECT seq FROM canary", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A real S3-compatible server (moto's, from PyPI) on a free loopback port, storing in memory.
/// Dropping it stops it with SIGTERM, then waits for it.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
}

impl S3Server {
    pub async fn start() -> Result<S3Server> {
        let port = free_port()?;
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context(
                "starting moto's S3 server (python3 -m moto.server); run scripts/install-deps.sh",
            )?;
        let server = S3Server { child, port };
        let deadline = std::time::Instant::now() + START;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if std::time::Instant::now() > deadline {
                bail!("moto's S3 server did not listen on port {port} within {START:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto does not check signatures, so a plain PUT does).
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).await?;
        if !resp.starts_with("HTTP/1.1 200") {
            bail!(
                "creating bucket {name}: {}",
                resp.lines().next().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The environment a lifeboat process needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
