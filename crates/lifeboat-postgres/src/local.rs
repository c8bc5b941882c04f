//! A PostgreSQL server on this machine, controlled through its own tools. When Lifeboat runs
//! as root, every tool runs as the server's OS user (default `postgres`), because PostgreSQL
//! refuses to run as root.

use crate::error::PgError;
use crate::sql::ConnInfo;
use crate::tool::{is_current_user, PgTool};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalServer {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Run the tools as this user; `None` means `postgres` when running as root, else oneself.
    pub os_user: Option<String>,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// How `initdb` prepares a new cluster.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Password of the `postgres` superuser; TCP logins then need it (scram-sha-256).
    /// Without it, loopback logins are trusted.
    pub superuser_password: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
}

impl LocalServer {
    /// `$LIFEBOAT_PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin`, else `pg_ctl` on PATH.
    pub fn find_bin_dir() -> Result<PathBuf, PgError> {
        if let Some(d) = std::env::var_os("LIFEBOAT_PG_BIN_DIR") {
            let d = PathBuf::from(d);
            return if d.join("pg_ctl").exists() {
                Ok(d)
            } else {
                Err(PgError::NoBinaries)
            };
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("pg_ctl").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Ok(bin);
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join("pg_ctl").exists())
            .ok_or(PgError::NoBinaries)
    }

    fn user(&self) -> Option<String> {
        match &self.os_user {
            Some(u) => Some(u.clone()),
            None if nix::unistd::geteuid().is_root() => Some("postgres".into()),
            None => None,
        }
    }

    /// One of the PostgreSQL tools, run as the server's OS user.
    fn tool(&self, name: &str) -> PgTool {
        PgTool::new(&self.bin_dir, name, self.user().as_deref())
    }

    async fn run(
        &self,
        name: &str,
        mut tool: PgTool,
        timeout: Duration,
    ) -> Result<String, PgError> {
        tool.label(name).output(timeout).await
    }

    pub fn log_file(&self) -> PathBuf {
        let mut p = self.data_dir.clone().into_os_string();
        p.push(".log");
        PathBuf::from(p)
    }

    /// Creates a new cluster with data checksums, listening on 127.0.0.1 only, ready to be a
    /// replication source. The parent directory must be writable by the server's OS user.
    pub async fn initdb(&self, opts: &InitOptions, timeout: Duration) -> Result<(), PgError> {
        let mut cmd = self.tool("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--data-checksums",
            "--no-sync",
        ]);
        let pwfile = self.data_dir.with_extension("pw");
        if let Some(pw) = &opts.superuser_password {
            write_owned(&pwfile, pw, self.user().as_deref())?;
            cmd.arg(format!("--pwfile={}", pwfile.display()))
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        } else {
            cmd.args(["--auth=trust"]);
        }
        let r = self.run("initdb", cmd, timeout).await;
        let _ = std::fs::remove_file(&pwfile);
        r?;
        let mut conf = String::from(
            "\n# lifeboat\nlisten_addresses = '127.0.0.1'\nwal_level = replica\nhot_standby = on\n\
             wal_log_hints = on\nmax_wal_senders = 10\nwal_keep_size = '512MB'\nhot_standby_feedback = on\n\
             wal_receiver_status_interval = 1s\nwal_sender_timeout = 5s\nwal_receiver_timeout = 5s\n",
        );
        for s in &opts.settings {
            conf.push_str(s);
            conf.push('\n');
        }
        append(&self.data_dir.join("postgresql.conf"), &conf)
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self, timeout: Duration) -> Result<(), PgError> {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", &secs(timeout)])
            .arg("-o")
            .arg(format!("-p {} -k ''", self.port));
        self.run("pg_ctl start", cmd, timeout + Duration::from_secs(1))
            .await
            .map(|_| ())
    }

    /// Stops the server; a server that is not running counts as stopped.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        if !self.is_running().await {
            return Ok(());
        }
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            mode.as_str(),
            "-w",
            "-t",
            &secs(timeout),
        ]);
        match self
            .run("pg_ctl stop", cmd, timeout + Duration::from_secs(1))
            .await
        {
            Err(_) if !self.is_running().await => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The postmaster is alive. A killed postmaster that nobody has reaped yet (a zombie)
    /// counts as stopped, which `pg_ctl status` gets wrong.
    pub async fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(alive)
    }

    /// The postmaster's PID from `postmaster.pid`, when the file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The postmaster and its children, read from /proc (empty when not running).
    pub fn process_tree(&self) -> Vec<i32> {
        let Some(pm) = self.postmaster_pid().filter(|p| alive(*p)) else {
            return Vec::new();
        };
        let mut pids = vec![pm];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(pm) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops the server (fast mode) without an async runtime, for cleanup in `Drop`.
    pub fn stop_blocking(&self) {
        if self.process_tree().is_empty() {
            return;
        }
        let data = self.data_dir.display().to_string();
        let args = ["stop", "-D", data.as_str(), "-m", "fast", "-w", "-t", "30"];
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut cmd = match self.user() {
            Some(u) if !is_current_user(&u) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--init-groups".into(),
                ])
                .arg(&pg_ctl);
                c
            }
            _ => std::process::Command::new(&pg_ctl),
        };
        let _ = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Makes `dir` usable by the server's OS user (owner, mode 0755), so that data
    /// directories and logs can be created in it.
    pub fn prepare_dir(&self, dir: &Path) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| PgError::Io {
            what: format!("preparing {}", dir.display()),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        if let (Some(u), true) = (self.user(), nix::unistd::geteuid().is_root()) {
            let u = nix::unistd::User::from_name(&u)
                .ok()
                .flatten()
                .ok_or_else(|| PgError::Io {
                    what: format!("preparing {}", dir.display()),
                    source: std::io::Error::other(format!(
                        "the OS user {u} does not exist; install PostgreSQL or set control.os-user"
                    )),
                })?;
            std::os::unix::fs::chown(dir, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .map_err(io)?;
        }
        Ok(())
    }

    /// Makes this data directory a fresh copy of `primary` with `pg_basebackup`, configured as
    /// its standby under `application_name`. An existing directory is moved aside, not deleted.
    pub async fn clone_from(
        &self,
        primary: &ConnInfo,
        application_name: &str,
        timeout: Duration,
    ) -> Result<(), PgError> {
        if self.data_dir.exists() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let aside = PathBuf::from(format!("{}.replaced-{stamp}", self.data_dir.display()));
            std::fs::rename(&self.data_dir, &aside).map_err(|source| PgError::Io {
                what: format!(
                    "moving {} aside to {}",
                    self.data_dir.display(),
                    aside.display()
                ),
                source,
            })?;
            tracing::info!(old = %aside.display(), "previous data directory kept");
        }
        // The password goes in its environment, never on its command line.
        let mut cmd = self.tool("pg_basebackup");
        cmd.conninfo("-d", &primary.to_libpq(Some(application_name)), timeout)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-X", "stream", "-c", "fast", "--no-sync"]);
        self.run("pg_basebackup", cmd, timeout).await?;
        self.configure_standby(primary, application_name)
    }

    /// Rewinds this stopped data directory onto `source`'s timeline, then makes it its standby.
    pub async fn rewind_from(
        &self,
        source: &ConnInfo,
        application_name: &str,
        timeout: Duration,
    ) -> Result<(), PgError> {
        // A freshly promoted source writes its new timeline to pg_control only at a
        // checkpoint; without one pg_rewind sees no divergence and does nothing.
        const WHAT: &str = "checkpoint before pg_rewind";
        let c = crate::sql::connect(source, timeout).await?;
        crate::sql::within(
            WHAT,
            &source.to_string(),
            timeout,
            c.batch_execute("CHECKPOINT"),
        )
        .await?;
        drop(c);
        // The password goes in its environment, never on its command line.
        let mut cmd = self.tool("pg_rewind");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .conninfo("--source-server=", &source.to_libpq(None), timeout)
            .arg("--no-sync");
        self.run("pg_rewind", cmd, timeout).await?;
        self.configure_standby(source, application_name)
    }

    /// Writes `standby.signal` and `primary_conninfo` so the server starts as a standby of
    /// `primary`. A read-only fence is dropped: a standby is read-only anyway.
    pub fn configure_standby(
        &self,
        primary: &ConnInfo,
        application_name: &str,
    ) -> Result<(), PgError> {
        let auto = self.data_dir.join("postgresql.auto.conf");
        let old = std::fs::read_to_string(&auto).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                key != "primary_conninfo" && key != "default_transaction_read_only"
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let conninfo = primary.to_libpq(Some(application_name)).replace('\'', "''");
        text.push_str(&format!("primary_conninfo = '{conninfo}'\n"));
        let user = self.user();
        write_owned(&auto, &text, user.as_deref())?;
        write_owned(&self.data_dir.join("standby.signal"), "", user.as_deref())
    }
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')').and_then(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
        })
        .unwrap_or(false)
}

fn secs(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}

fn append(path: &Path, text: &str) -> Result<(), PgError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| PgError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
}

/// Writes a file with mode 0600 owned by `user`, replacing it atomically.
fn write_owned(path: &Path, text: &str, user: Option<&str>) -> Result<(), PgError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| PgError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let tmp = path.with_extension("lifeboat-tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    if let Some(u) = user.and_then(|u| nix::unistd::User::from_name(u).ok().flatten()) {
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&tmp, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .map_err(io)?;
        }
    }
    std::fs::rename(&tmp, path).map_err(io)
}
