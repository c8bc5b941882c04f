//! PostgreSQL's own programs (`initdb`, `pg_ctl`, `pg_basebackup`, `pg_receivewal`,
//! `pg_rewind`), run one way: bounded in time and killed when their handle is dropped, with
//! `LC_ALL=C` (their messages are read), and a connection string's password in their
//! environment (`PGPASSWORD`), never in their argv, which every user of the machine can read
//! in `/proc/<pid>/cmdline`.

use crate::conninfo::split_password;
use crate::error::PgError;
use crate::local::LocalServer;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// One run of a PostgreSQL program, being set up.
pub struct PgTool {
    label: String,
    cmd: Command,
}

impl PgTool {
    /// `name` from the PostgreSQL binaries [`LocalServer::find_bin_dir`] finds, run as the
    /// current user.
    pub fn find(name: &str) -> Result<PgTool, PgError> {
        Ok(PgTool::new(&LocalServer::find_bin_dir()?, name, None))
    }

    /// `bin_dir/name`, run as `os_user` (through `setpriv`) when that is not the current user.
    pub fn new(bin_dir: &Path, name: &str, os_user: Option<&str>) -> PgTool {
        let program = bin_dir.join(name);
        let mut cmd = match os_user {
            Some(u) if !is_current_user(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--init-groups".into(),
                ])
                .arg(&program);
                c
            }
            _ => Command::new(&program),
        };
        cmd.stdin(Stdio::null())
            .kill_on_drop(true)
            .env("LC_ALL", "C");
        PgTool {
            label: name.to_owned(),
            cmd,
        }
    }

    /// What errors call it (`pg_ctl start`); the program's name unless set.
    pub fn label(&mut self, label: &str) -> &mut Self {
        label.clone_into(&mut self.label);
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Gives the program the libpq connection string `conninfo` without its password, as
    /// `flag conninfo`, or as one argument `flag=conninfo` when `flag` ends with `=`. The
    /// password goes in the environment as `PGPASSWORD`; without one the program finds its
    /// own (`PGPASSWORD`, `~/.pgpass`). Every connection attempt is bounded by
    /// `connect_timeout` (`PGCONNECT_TIMEOUT`, at least 2 s; a `connect_timeout` in the
    /// string wins).
    pub fn conninfo(&mut self, flag: &str, conninfo: &str, connect_timeout: Duration) -> &mut Self {
        let (public, password) = split_password(conninfo);
        if let Some(p) = password {
            self.cmd.env("PGPASSWORD", p);
        }
        self.cmd.env(
            "PGCONNECT_TIMEOUT",
            connect_timeout.as_secs().max(2).to_string(),
        );
        if flag.ends_with('=') {
            self.cmd.arg(format!("{flag}{public}"));
        } else {
            self.cmd.arg(flag).arg(public);
        }
        self
    }

    /// Runs it to its end, for at most `timeout` (then it is killed). Its standard output
    /// when it succeeds; else an error with its standard error.
    pub async fn output(&mut self, timeout: Duration) -> Result<String, PgError> {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = match tokio::time::timeout(timeout, self.cmd.output()).await {
            Err(_) => {
                return Err(PgError::Command {
                    program: self.label.clone(),
                    status: format!("no result within {timeout:?}"),
                    stderr: String::new(),
                })
            }
            Ok(r) => r.map_err(|source| PgError::Io {
                what: format!("running {}", self.label),
                source,
            })?,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if stderr.is_empty() {
                stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            Err(PgError::Command {
                program: self.label.clone(),
                status: out.status.to_string(),
                stderr,
            })
        }
    }

    /// Starts it, with standard output and error as given. It is killed when the returned
    /// handle is dropped; [`RunningTool::wait`] bounds how long it may run.
    pub fn spawn(&mut self, stdout: Stdio, stderr: Stdio) -> Result<RunningTool, PgError> {
        let child = self
            .cmd
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| PgError::Io {
                what: format!("starting {}", self.label),
                source,
            })?;
        Ok(RunningTool {
            label: self.label.clone(),
            child,
        })
    }
}

/// A started PostgreSQL program; killed when dropped.
pub struct RunningTool {
    label: String,
    child: Child,
}

impl RunningTool {
    /// The child, to take its piped output from.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// It has ended (it is reaped then).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits until it ends, for at most `timeout`; then it is killed and this fails.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, PgError> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(r) => r.map_err(|source| PgError::Io {
                what: format!("waiting for {}", self.label),
                source,
            }),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(PgError::Command {
                    program: self.label.clone(),
                    status: format!("no result within {timeout:?}, killed"),
                    stderr: String::new(),
                })
            }
        }
    }

    /// Asks it to end (SIGTERM), waits up to `grace`, then kills it.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub(crate) fn is_current_user(name: &str) -> bool {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .is_some_and(|u| u.uid == nix::unistd::geteuid())
}

#[cfg(test)]
mod tests {
    use super::PgTool;
    use std::ffi::OsStr;
    use std::path::Path;
    use std::time::Duration;

    fn argv_and_env(t: &PgTool) -> (Vec<String>, Vec<(String, String)>) {
        let std = t.cmd.as_std();
        let argv = std
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let env = std
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        (argv, env)
    }

    #[test]
    fn the_password_goes_in_the_environment_and_the_rest_on_the_command_line() {
        let conninfo = "host='db' port=5432 user='u' password='s3cret x' dbname='d'";
        let mut t = PgTool::new(Path::new("/usr/bin"), "pg_basebackup", None);
        t.conninfo("-d", conninfo, Duration::from_secs(7)).arg("-D");
        let (argv, env) = argv_and_env(&t);
        assert_eq!(
            argv,
            ["-d", "host='db' port=5432 user='u' dbname='d'", "-D"]
        );
        assert!(env.contains(&("PGPASSWORD".into(), "s3cret x".into())));
        assert!(env.contains(&("PGCONNECT_TIMEOUT".into(), "7".into())));
        assert!(env.contains(&("LC_ALL".into(), "C".into())));
        assert_eq!(
            t.cmd.as_std().get_program(),
            OsStr::new("/usr/bin/pg_basebackup")
        );

        let mut t = PgTool::new(Path::new("/usr/bin"), "pg_rewind", None);
        t.conninfo("--source-server=", conninfo, Duration::ZERO);
        let (argv, env) = argv_and_env(&t);
        assert_eq!(
            argv,
            ["--source-server=host='db' port=5432 user='u' dbname='d'"]
        );
        assert!(
            env.contains(&("PGCONNECT_TIMEOUT".into(), "2".into())),
            "libpq's least"
        );

        let mut t = PgTool::new(Path::new("/usr/bin"), "pg_receivewal", None);
        t.conninfo("-d", "host=db user=u", Duration::from_secs(30));
        let (_, env) = argv_and_env(&t);
        assert!(
            !env.iter().any(|(k, _)| k == "PGPASSWORD"),
            "without a password the tool finds its own"
        );
    }

    #[tokio::test]
    async fn a_tool_past_its_time_is_killed() {
        let mut t = PgTool::new(Path::new("/bin"), "sleep", None);
        let mut running = t
            .arg("infinity")
            .spawn(std::process::Stdio::null(), std::process::Stdio::null())
            .unwrap();
        let pid = running.id().unwrap();
        let err = running.wait(Duration::from_millis(100)).await.unwrap_err();
        assert!(err.to_string().contains("no result within"), "{err}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );

        let err = PgTool::new(Path::new("/bin"), "false", None)
            .label("false --flag")
            .output(Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("false --flag failed"), "{err}");
    }
}
