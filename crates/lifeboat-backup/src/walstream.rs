//! Continuous WAL: `pg_receivewal` run and supervised by the daemon, writing into a local
//! spool; every `upload-every` the finished segments are stored (and removed from the spool)
//! and the segment being written is stored as `<name>.partial`. The recovery point therefore
//! trails the primary by about `upload-every`, not by a whole segment or `archive_timeout`.
//! A replication slot keeps the server from recycling WAL the streamer has not received.

use crate::error::{Error, Result};
use crate::postgres::{server_facts, wal_key, wal_store};
use crate::repo::Repo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

pub const SLOT: &str = "lifeboat_wal";

/// What the streamer did last; read by metrics and status.
#[derive(Default)]
pub struct WalStatus {
    /// Unix time (ms) of the last upload that left the repository level with the spool.
    pub last_synced_ms: AtomicU64,
    pub segments_stored: AtomicU64,
    pub restarts: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

pub struct WalStreamer {
    pub repo: Repo,
    pub conninfo: String,
    pub spool: PathBuf,
    pub upload_every: Duration,
    pub status: Arc<WalStatus>,
    /// The server's system identifier, which names its WAL in the repository (asked once).
    pub system: std::sync::OnceLock<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl WalStreamer {
    /// Runs until `cancel`: restarts `pg_receivewal` when it exits (a second later), uploads on
    /// every tick, and uploads once more after stopping it.
    pub async fn run(self, cancel: CancellationToken) {
        let mut uploaded: HashMap<String, (u64, SystemTime)> = HashMap::new();
        while !cancel.is_cancelled() {
            let child = match self.start().await {
                Ok(c) => Some(c),
                Err(e) => {
                    self.note_error(&e);
                    None
                }
            };
            let mut child = child;
            let mut tick = tokio::time::interval(self.upload_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = self.upload(&mut uploaded).await {
                    self.note_error(&e);
                }
                let exited = match child.as_mut() {
                    Some(c) => c.try_wait().ok().flatten().is_some(),
                    None => true,
                };
                if exited {
                    self.status.restarts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if let Some(mut c) = child {
                if let Some(pid) = c.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
                let _ = c.kill().await;
            }
            if let Err(e) = self.upload(&mut uploaded).await {
                self.note_error(&e);
            }
            if !cancel.is_cancelled() {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    fn note_error(&self, e: &Error) {
        tracing::warn!(error = %e, "continuous WAL");
        *self.status.last_error.lock().expect("status") = Some(e.to_string());
    }

    async fn start(&self) -> Result<tokio::process::Child> {
        std::fs::create_dir_all(&self.spool).map_err(Error::io(&self.spool))?;
        let bin = lifeboat_postgres::LocalServer::find_bin_dir()
            .map_err(|e| Error::Invalid(e.to_string()))?
            .join("pg_receivewal");
        let slot = tokio::process::Command::new(&bin)
            .args([
                "--create-slot",
                "--if-not-exists",
                "-S",
                SLOT,
                "-d",
                &self.conninfo,
            ])
            .output()
            .await
            .map_err(|e| Error::Command {
                what: "pg_receivewal --create-slot".into(),
                detail: e.to_string(),
            })?;
        if !slot.status.success() {
            return Err(Error::Command {
                what: "pg_receivewal --create-slot".into(),
                detail: String::from_utf8_lossy(&slot.stderr).trim().to_string(),
            });
        }
        let log = std::fs::File::create(self.spool.with_extension("log"))
            .map_err(Error::io(&self.spool))?;
        tokio::process::Command::new(&bin)
            .arg("-D")
            .arg(&self.spool)
            .args([
                "-S",
                SLOT,
                "-d",
                &self.conninfo,
                "--synchronous",
                "--no-loop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Command {
                what: format!("starting {}", bin.display()),
                detail: e.to_string(),
            })
    }

    /// Stores finished segments (then drops them from the spool), history files, and the
    /// segment in progress when it changed.
    async fn upload(&self, uploaded: &mut HashMap<String, (u64, SystemTime)>) -> Result<()> {
        let system = match self.system.get() {
            Some(s) => s.clone(),
            None => {
                let (id, _) = server_facts(&self.conninfo).await?;
                self.system.get_or_init(|| id).clone()
            }
        };
        let started = now_ms();
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
            .map_err(Error::io(&self.spool))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = self.spool.join(&name);
            let finished = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if finished || name.ends_with(".history") {
                if uploaded.contains_key(&name) {
                    continue;
                }
                store_file(&self.repo, &system, &path, &name).await?;
                if finished {
                    let partial = format!("{name}.partial");
                    self.repo
                        .storage
                        .delete(&wal_key(&system, &partial))
                        .await?;
                    uploaded.remove(&partial);
                    self.status.segments_stored.fetch_add(1, Ordering::Relaxed);
                    std::fs::remove_file(&path).map_err(Error::io(&path))?;
                } else {
                    uploaded.insert(name, (0, UNIX_EPOCH));
                }
            } else if name.ends_with(".partial") {
                let md = std::fs::metadata(&path).map_err(Error::io(&path))?;
                let stamp = (md.len(), md.modified().unwrap_or(UNIX_EPOCH));
                if uploaded.get(&name) == Some(&stamp) {
                    continue;
                }
                store_file(&self.repo, &system, &path, &name).await?;
                uploaded.insert(name, stamp);
            }
        }
        self.status.last_synced_ms.store(started, Ordering::Relaxed);
        Ok(())
    }
}

async fn store_file(repo: &Repo, system: &str, path: &Path, name: &str) -> Result<()> {
    let data = tokio::fs::read(path).await.map_err(Error::io(path))?;
    wal_store(repo, system, name, data, true).await
}
