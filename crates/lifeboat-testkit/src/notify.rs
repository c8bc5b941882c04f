//! Real receivers for notification tests, on free loopback ports: [`Receiver`], an HTTP
//! server that records every call (Slack, PagerDuty, webhooks) and checks Standard Webhooks
//! signatures itself (Python's `hmac`, not Lifeboat's code), and [`SmtpSink`], aiosmtpd
//! writing each message to a Maildir.

use crate::free_port;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(20);

async fn wait_listening(child: &mut Child, port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + START;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "{what} exited ({st}) before listening on port {port}; run scripts/install-deps.sh"
            );
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {START:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The recording HTTP receiver (`receiver.py`).
pub struct Receiver {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Receiver {
    /// On a free port; webhook signatures are checked against `secret`.
    pub async fn start(dir: &Path, secret: &str) -> Result<Receiver> {
        Receiver::start_on(dir, free_port()?, secret).await
    }

    /// On `port` (a receiver that was down and comes back keeps its address).
    pub async fn start_on(dir: &Path, port: u16, secret: &str) -> Result<Receiver> {
        std::fs::create_dir_all(dir)?;
        let script = dir.join("receiver.py");
        std::fs::write(&script, include_str!("receiver.py"))?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .env("RECEIVER_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("receiver.log"))?)
            .spawn()
            .context("starting the recording receiver (python3)")?;
        wait_listening(&mut child, port, "the recording receiver").await?;
        Ok(Receiver {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Makes `path` answer `status` (to its first `fail_first` calls, or all), after
    /// `delay_ms`.
    pub fn control(&self, rules: Value) -> Result<()> {
        let tmp = self.dir.join("control.json.tmp");
        std::fs::write(&tmp, rules.to_string())?;
        std::fs::rename(tmp, self.dir.join("control.json"))?;
        Ok(())
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Value> {
        calls_in(&self.dir)
    }

    /// The calls to `path`.
    pub fn calls_to(&self, path: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["path"] == path)
            .collect()
    }
}

/// The calls a receiver recorded in `dir` (also after it stopped).
pub fn calls_in(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        stop(&mut self.child)
    }
}

/// aiosmtpd (PyPI) on a free port, each message a file in `dir/maildir/new`.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
}

impl SmtpSink {
    pub async fn start(dir: &Path) -> Result<SmtpSink> {
        let port = free_port()?;
        let maildir = dir.join("maildir");
        std::fs::create_dir_all(dir)?;
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("smtp.log"))?)
            .spawn()
            .context("starting aiosmtpd (python3 -m aiosmtpd); run scripts/install-deps.sh")?;
        wait_listening(&mut child, port, "aiosmtpd").await?;
        Ok(SmtpSink {
            child,
            port,
            maildir,
        })
    }

    /// Every message received, as text, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?.modified().ok()?;
                Some((m, e.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        stop(&mut self.child)
    }
}
