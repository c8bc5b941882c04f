//! The `lifeboat` binary against real PostgreSQL servers on loopback: the daemon is started
//! as a child process, driven through its CLI and API, and stopped with SIGTERM.

mod backup;
mod bad_input;
mod drills;
mod failover;
mod groups;
mod monitoring;
mod notify;
mod operations;
mod pg_files;
mod quiet;
mod redis_service;
mod sync_archive;

use anyhow::{bail, Context, Result};
use lifeboat_testkit::TwoRegions;
use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// A running `lifeboat run`. Dropping it sends SIGTERM and waits for the exit.
pub struct Daemon {
    child: Option<Child>,
    pub api: String,
    pub config: std::path::PathBuf,
    service: String,
    log: std::path::PathBuf,
}

impl Daemon {
    /// Starts the daemon on `regions`' config and waits until the endpoint routes to the
    /// expected primary.
    pub async fn start(regions: &TwoRegions, primary: &str) -> Result<Daemon> {
        Daemon::spawn(regions)?.routing_to(primary).await
    }

    /// Waits until the endpoint of the daemon's service routes to `primary`.
    pub async fn routing_to(self, primary: &str) -> Result<Daemon> {
        let d = self;
        d.wait_until(
            "the endpoint routes to the primary",
            Duration::from_secs(30),
            |s| s["endpoint"]["routes_to"] == primary,
        )
        .await?;
        Ok(d)
    }

    pub fn spawn(regions: &TwoRegions) -> Result<Daemon> {
        Daemon::spawn_config(&regions.config_path, regions.api(), "orders")
    }

    /// `lifeboat run -c config`, its API at `api`; [`Daemon::status`] is that of `service`.
    pub fn spawn_config(config: &std::path::Path, api: String, service: &str) -> Result<Daemon> {
        let dir = config.parent().context("the config's directory")?;
        let log = dir.join(format!(
            "lifeboat-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(config)
            .env("LIFEBOAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Daemon {
            child: Some(child),
            api,
            config: config.to_owned(),
            service: service.to_owned(),
            log,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status of the daemon's service.
    pub async fn status(&self) -> Result<Value> {
        self.status_of(&self.service).await
    }

    pub async fn status_of(&self, service: &str) -> Result<Value> {
        get(&format!("{}/v1/status?service={service}", self.api)).await
    }

    /// Polls the status until `f` holds, at most `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_until_of(&self.service, what, timeout, f).await
    }

    /// Polls the status of `service` until `f` holds, at most `timeout`.
    pub async fn wait_until_of(
        &self,
        service: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            if let Ok(s) = self.status_of(service).await {
                if f(&s) {
                    return Ok(s);
                }
                last = s;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not within {timeout:?}; last status: {last:#}\ndaemon log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a CLI command against this daemon (its config gives the API address and token).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run the lifeboat binary")
    }

    /// SIGKILL: the daemon dies without any cleanup.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("the daemon is not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                c.kill()?;
                bail!("the daemon did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

pub async fn get(url: &str) -> Result<Value> {
    let r = reqwest::get(url).await?;
    Ok(r.json().await?)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The incident with `id`, from the API.
pub async fn incident(d: &Daemon, id: i64) -> Result<Value> {
    get(&format!("{}/v1/incidents/{id}", d.api)).await
}

pub fn steps(incident: &Value) -> Vec<(String, String)> {
    incident["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|e| {
                    (
                        e["step"].as_str().unwrap_or("").to_owned(),
                        e["outcome"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
