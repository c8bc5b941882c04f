//! Continuous WAL: `pg_receivewal` run and supervised by the daemon, writing into a local
//! spool; every `upload-every` the finished segments are stored (and removed from the spool,
//! but for the newest, which tells a restarted `pg_receivewal` where to resume)
//! and the segment being written is stored as `<name>.partial`. The recovery point therefore
//! trails the primary by about `upload-every`, not by a whole segment or `archive_timeout`.
//! A replication slot keeps the server from recycling WAL the streamer has not received.
//!
//! The server to stream from is asked for before every start and on every tick: when it
//! changes (a failover moved the primary), `pg_receivewal` is stopped and started against the
//! new one, which serves the rest of the old timeline and then the new one.

use crate::error::{Error, Result};
use crate::postgres::{pg_error, server_facts, wal_key, wal_store, CONNECT_TIMEOUT, QUERY_TIMEOUT};
use crate::repo::Repo;
use lifeboat_postgres::{LocalServer, PgError, PgTool, RunningTool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

pub const SLOT: &str = "lifeboat_wal";

/// The connection string of the server to stream from now, or why there is none.
pub type ConnSource = Arc<dyn Fn() -> Result<String> + Send + Sync>;

/// A source that is always the same server.
pub fn fixed(conninfo: String) -> ConnSource {
    Arc::new(move || Ok(conninfo.clone()))
}

/// What the streamer did last; read by metrics and status.
#[derive(Default)]
pub struct WalStatus {
    /// Unix time (ms) at which the last upload pass began that left the repository level with
    /// a running pg_receivewal (so with the server, up to network delay).
    pub last_synced_ms: AtomicU64,
    pub segments_stored: AtomicU64,
    pub restarts: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

pub struct WalStreamer {
    pub repo: Repo,
    pub server: ConnSource,
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
        // What a streamer killed before it could upload left in the spool goes first, even
        // with the server down: with a synchronous archive those are acknowledged commits.
        // They are stored under the system they came from, which is asked of the server anew
        // once it answers (a spool reused for another cluster must not relabel its WAL).
        if let Some(system) = self.spooled_system() {
            if let Err(e) = self.upload_as(&system, &mut uploaded, false).await {
                self.note_error(&e);
            }
        }
        while !cancel.is_cancelled() {
            let conninfo = match (self.server)() {
                Ok(c) => c,
                Err(e) => {
                    self.note_error(&e);
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            let mut child = match self.start(&conninfo).await {
                Ok(c) => Some(c),
                Err(e) => {
                    self.note_error(&e);
                    None
                }
            };
            let mut tick = tokio::time::interval(self.upload_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // The repository is level with the server only while pg_receivewal runs.
                let exited = child.as_mut().is_none_or(RunningTool::has_exited);
                if let Err(e) = self.upload(&conninfo, &mut uploaded, !exited).await {
                    self.note_error(&e);
                }
                if exited {
                    self.status.restarts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if (self.server)().is_ok_and(|now| now != conninfo) {
                    tracing::info!("the primary moved: streaming WAL from the new one");
                    self.status.restarts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if let Some(c) = child {
                c.stop(Duration::from_secs(10)).await;
            }
            if let Err(e) = self.upload(&conninfo, &mut uploaded, false).await {
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

    /// The system identifier of the WAL in the spool, recorded there when it was first asked.
    fn spooled_system(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.spool.join(SYSTEM)).ok()?;
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.to_owned())
    }

    /// pg_receivewal's output, inside the spool (everything the streamer writes stays in the
    /// directory it was given).
    fn log_path(&self) -> PathBuf {
        self.spool.join(LOG)
    }

    async fn start(&self, conninfo: &str) -> Result<RunningTool> {
        std::fs::create_dir_all(&self.spool).map_err(writing(&self.spool))?;
        let bin = LocalServer::find_bin_dir().map_err(|e| pg_error("continuous WAL", e))?;
        // The password goes in the children's environment, never on their command lines.
        let conninfo = named(conninfo);
        let tool = || {
            let mut t = PgTool::new(&bin, "pg_receivewal", None);
            t.args(["-S", SLOT])
                .conninfo("-d", &conninfo, CONNECT_TIMEOUT);
            t
        };
        tool()
            .label("pg_receivewal --create-slot")
            .args(["--create-slot", "--if-not-exists"])
            .output(CONNECT_TIMEOUT + QUERY_TIMEOUT)
            .await
            .map_err(|e| match e {
                PgError::Command {
                    program, stderr, ..
                } if !stderr.is_empty() => Error::Command {
                    what: program,
                    detail: stderr,
                },
                e => pg_error("pg_receivewal --create-slot", e),
            })?;
        self.prepare_spool()?;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).map_err(writing(&log_path))?;
        tool()
            .arg("-D")
            .arg(&self.spool)
            .args(["--synchronous", "--no-loop"])
            .spawn(std::process::Stdio::null(), log.into())
            .map_err(|e| pg_error("continuous WAL", e))
    }

    /// Sets where pg_receivewal resumes: it starts at the beginning of the newest `.partial`
    /// in the spool, or after the newest finished segment. The newest finished segment is
    /// renamed `.partial`, so that it is streamed again from its start: a position on its
    /// timeline before any switch to a later one. After a failover the new primary then
    /// serves the rest of the old timeline and switches to its own (pg_receivewal refuses to
    /// start exactly at a switch point, and a start after it is not in the server's history).
    ///
    /// When the last run was refused anyway (the old primary wrote more than a segment the
    /// new one never received), the spool's segments (all stored already) are set aside, so
    /// that streaming resumes where the new primary's replication slot is; verify reports the
    /// gap that may leave.
    fn prepare_spool(&self) -> Result<()> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let segments = |spool: &Path| -> Result<Vec<String>> {
            let mut names: Vec<String> = std::fs::read_dir(spool)
                .map_err(Error::io(spool))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| segment_order(n.strip_suffix(".partial").unwrap_or(n)).is_some())
                .collect();
            let order = |n: &String| {
                segment_order(n.strip_suffix(".partial").unwrap_or(n))
                    .map(|(a, b)| a.to_owned() + b)
            };
            names.sort_by_cached_key(order);
            Ok(names)
        };
        if log.contains("is not in this server's history") {
            let aside = self.spool.join(DIVERGED);
            std::fs::create_dir_all(&aside).map_err(writing(&aside))?;
            for name in segments(&self.spool)? {
                let from = self.spool.join(&name);
                std::fs::rename(&from, aside.join(&name)).map_err(writing(&from))?;
            }
            self.note_error(&Error::Command {
                what: "continuous WAL".into(),
                detail: format!(
                    "the WAL received so far is not in the new primary's history (its old timeline went further); streaming resumes at the new primary's replication slot, moved the spool's segments to {}; `lifeboat backup verify` shows any gap this leaves",
                    aside.display()
                ),
            });
            return Ok(());
        }
        if let Some(newest) = segments(&self.spool)?.pop() {
            if !newest.ends_with(".partial") {
                let from = self.spool.join(&newest);
                let to = self.spool.join(format!("{newest}.partial"));
                std::fs::rename(&from, &to).map_err(Error::io(&from))?;
            }
        }
        Ok(())
    }

    /// Stores finished segments (then drops them from the spool, but for the newest), history
    /// files, and the segment in progress when it changed. `streaming`: pg_receivewal was
    /// running when this pass began, so once the pass is done the repository holds everything
    /// the server had sent by then.
    async fn upload(
        &self,
        conninfo: &str,
        uploaded: &mut HashMap<String, (u64, SystemTime)>,
        streaming: bool,
    ) -> Result<()> {
        let system = match self.system.get() {
            Some(s) => s.clone(),
            None => {
                let (id, _) = server_facts(conninfo).await?;
                let path = self.spool.join(SYSTEM);
                std::fs::write(&path, format!("{id}\n")).map_err(writing(&path))?;
                self.system.get_or_init(|| id).clone()
            }
        };
        self.upload_as(&system, uploaded, streaming).await
    }

    /// [`Self::upload`] of the spool's WAL as that of cluster `system`.
    async fn upload_as(
        &self,
        system: &str,
        uploaded: &mut HashMap<String, (u64, SystemTime)>,
        streaming: bool,
    ) -> Result<()> {
        let started = now_ms();
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
            .map_err(Error::io(&self.spool))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        // The newest finished segment stays in the spool: a restarted pg_receivewal resumes
        // right after the newest segment it finds there, and with none it would start where
        // its replication slot is, which on a newly promoted primary is a new slot, past WAL
        // not yet received.
        let newest = names
            .iter()
            .filter_map(|n| Some((segment_order(n)?, n)))
            .max()
            .map(|(_, n)| n.clone());
        for name in names {
            let path = self.spool.join(&name);
            let finished = segment_order(&name).is_some();
            let keep = finished && Some(&name) == newest.as_ref();
            if finished || name.ends_with(".history") {
                let new = !uploaded.contains_key(&name);
                if new {
                    store_file(&self.repo, system, &path, &name).await?;
                    uploaded.insert(name.clone(), (0, UNIX_EPOCH));
                }
                if finished {
                    // Its copy in progress is obsolete once the whole segment is stored.
                    let partial = format!("{name}.partial");
                    if uploaded.remove(&partial).is_some() || new {
                        let key = wal_key(system, &partial);
                        self.repo.storage.delete(&key).await?;
                    }
                    if new {
                        self.status.segments_stored.fetch_add(1, Ordering::Relaxed);
                    }
                    if !keep {
                        std::fs::remove_file(&path).map_err(Error::io(&path))?;
                        uploaded.remove(&name);
                    }
                }
            } else if name.ends_with(".partial") {
                let md = std::fs::metadata(&path).map_err(Error::io(&path))?;
                let stamp = (md.len(), md.modified().unwrap_or(UNIX_EPOCH));
                if uploaded.get(&name) == Some(&stamp) {
                    continue;
                }
                store_file(&self.repo, system, &path, &name).await?;
                uploaded.insert(name, stamp);
            }
        }
        if streaming {
            self.status.last_synced_ms.store(started, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// pg_receivewal's output, in the spool (pg_receivewal ignores what is not WAL).
const LOG: &str = "pg_receivewal.log";
/// The system identifier of the server whose WAL the spool holds.
const SYSTEM: &str = "lifeboat-system";
use lifeboat_postgres::ARCHIVE_APPLICATION_NAME as APPLICATION_NAME;
/// Where segments the new primary does not have are set aside, in the spool.
const DIVERGED: &str = "diverged";

/// An error writing `path` that names it and, when it was refused, the user who was refused.
fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| {
        let source = if source.kind() == std::io::ErrorKind::PermissionDenied {
            let uid = nix::unistd::geteuid();
            let user = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name);
            std::io::Error::new(
                source.kind(),
                format!("{source}: the user {user} may not write here; give it the directory (chown) or choose one it owns"),
            )
        } else {
            source
        };
        Error::Io { path, source }
    }
}

/// `conninfo` with the streamer's [`APPLICATION_NAME`], which a later keyword (or URI
/// parameter) sets over any earlier one.
fn named(conninfo: &str) -> String {
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let sep = if conninfo.contains('?') { '&' } else { '?' };
        format!("{conninfo}{sep}application_name={APPLICATION_NAME}")
    } else {
        format!("{conninfo} application_name={APPLICATION_NAME}")
    }
}

/// For a finished segment's name (24 hex digits), its order: position, then timeline.
fn segment_order(name: &str) -> Option<(&str, &str)> {
    (name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (&name[8..], &name[..8]))
}

async fn store_file(repo: &Repo, system: &str, path: &Path, name: &str) -> Result<()> {
    let data = tokio::fs::read(path).await.map_err(Error::io(path))?;
    wal_store(repo, system, name, data, true).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_write_names_the_path_and_the_user() {
        let e = super::writing(std::path::Path::new("/srv/spool/pg_receivewal.log"))(
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let text = e.to_string();
        assert!(
            text.starts_with("/srv/spool/pg_receivewal.log: permission denied: ")
                && text.contains(&format!("the user {user} may not write here")),
            "{text}"
        );
    }
}
