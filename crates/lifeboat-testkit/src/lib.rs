//! Test harness: temp dirs (kept on request), free loopback ports and real PostgreSQL servers
//! started as the `postgres` user and stopped gracefully. Used by integration tests and
//! benchmarks only; nothing here is a fake.

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
