//! PostgreSQL: base backups streamed from `pg_basebackup` into the repository, WAL segments
//! pushed and fetched (`archive_command` / `restore_command`), and restores to a point in time.
//!
//! A restore yields a self-contained data directory: the base backup, every WAL file needed
//! to reach the target copied into `pg_wal/`, `recovery.signal`, and the recovery target in
//! `postgresql.auto.conf`. Starting it replays up to the target, then promotes; it needs no
//! access to the repository or its passphrase.

use crate::archiver::BackupOptions;
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::pack::Index;
use crate::progress::Progress;
use crate::repo::{Repo, PARALLEL_IO};
use crate::snapshot::{format_time, Node, NodeKind, PgInfo, Snapshot, SourceKind, Summary};
use crate::writer::{Saver, Writer};
use futures::StreamExt;
use lifeboat_postgres::{
    format_lsn, parse_lsn, parse_wal_file_name, redact, wal_file_name, PgError, PgTool,
};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The name of the base backup's tar stream inside its snapshot.
const BASE_TAR: &str = "base.tar";

/// How long connecting to a server may take, for a query or a tool.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a short request to a server may take (its facts, a restore point).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `pg_basebackup` may run before it is stopped and the backup fails.
pub const BASE_BACKUP_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A PostgreSQL error in the backup subsystem, `what` was being done: the error names the
/// server, this says what to do when there is something to do.
pub(crate) fn pg_error(what: &str, e: PgError) -> Error {
    let hint = match &e {
        PgError::NoBinaries => return Error::Invalid(e.to_string()),
        PgError::Connect {
            sqlstate: Some(s), ..
        } if s.starts_with("28") => {
            "; check the user and password (the node's password-file or password-env, or the connection string)"
        }
        PgError::Connect { .. }
        | PgError::Timeout {
            what: "connecting", ..
        } => "; check that the server runs and is reachable from here at that host and port",
        PgError::Timeout { .. } => {
            "; the server did not answer in time: check its load and the network, then retry"
        }
        _ => "",
    };
    Error::Command {
        what: what.to_owned(),
        detail: format!("{e}{hint}"),
    }
}

/// Opens a connection for a short conversation, bounded by [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(what: &str, conninfo: &str) -> Result<tokio_postgres::Client> {
    lifeboat_postgres::connect_str(conninfo, CONNECT_TIMEOUT)
        .await
        .map_err(|e| pg_error(what, e))
}

/// Takes a base backup of the server at `conninfo` (a libpq connection string; the password
/// from it, `PGPASSWORD` or `~/.pgpass`): from `data_dir`, its data directory on this host,
/// reading only what changed since the parent ([`crate::pgfiles`]); without one, the whole
/// database with `pg_basebackup`.
pub async fn base_backup(
    repo: &Repo,
    conninfo: &str,
    data_dir: Option<&Path>,
    opts: BackupOptions,
    progress: &Progress,
) -> Result<(Id, Snapshot)> {
    if let Some(dir) = data_dir {
        return crate::pgfiles::file_backup(repo, conninfo, dir, opts, progress).await;
    }
    let started = std::time::Instant::now();
    let time = OffsetDateTime::now_utc();
    let (system_identifier, segment_size) = server_facts(conninfo).await?;
    let mut tool = PgTool::find("pg_basebackup").map_err(|e| pg_error("base backup", e))?;
    // The password goes in its environment, never on its command line.
    tool.conninfo("-d", conninfo, CONNECT_TIMEOUT).args([
        "-D",
        "-",
        "-F",
        "t",
        "-X",
        "fetch",
        "-c",
        "fast",
        "-v",
        "--no-manifest",
    ]);
    let writer = Writer::start(repo, "postgres base backup").await?;
    progress.start("base backup", 0);
    let streamed = stream_base_backup(tool, writer.saver(), progress, conninfo).await;
    progress.finish();
    let (chunks, log) = match streamed {
        Ok(r) => r,
        Err(e) => return Err(writer.abandon().await.unwrap_or(e)),
    };
    let bytes = saver_bytes(&writer);
    let (start_lsn, timeline) = find_in_log(&log, "write-ahead log start point: ")
        .and_then(|s| {
            let (lsn, tli) = s.split_once(" on timeline ")?;
            Some((lsn.to_string(), tli.trim().parse::<u32>().ok()?))
        })
        .ok_or_else(|| Error::Command {
            what: "pg_basebackup".into(),
            detail: "no start point in its output".into(),
        })?;
    let end_lsn =
        find_in_log(&log, "write-ahead log end point: ").ok_or_else(|| Error::Command {
            what: "pg_basebackup".into(),
            detail: "no end point in its output".into(),
        })?;
    let start =
        parse_lsn(&start_lsn).ok_or_else(|| Error::corrupt(format!("bad LSN {start_lsn}")))?;
    let info = PgInfo {
        system_identifier,
        timeline,
        start_wal: wal_file_name(timeline, start / segment_size, segment_size),
        start_lsn,
        end_lsn,
        wal_segment_size: segment_size,
        end_time: OffsetDateTime::now_utc(),
    };
    let node = Node {
        path: BASE_TAR.into(),
        kind: NodeKind::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: info.end_time.unix_timestamp(),
        mtime_ns: 0,
        size: bytes,
        inode: 0,
        ctime: 0,
        target: None,
        chunks,
        escaped: false,
    };
    let summary = Summary {
        files: 1,
        bytes,
        files_read: 1,
        bytes_read: bytes,
        duration_s: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let roots = vec![redact(conninfo)];
    let snapshot = opts.snapshot(SourceKind::Postgres, time, roots, None, summary, Some(info));
    writer.commit(snapshot, vec![node]).await
}

/// Runs `pg_basebackup` (its tar stream on standard output) for at most
/// [`BASE_BACKUP_TIMEOUT`], chunking the stream into `saver` on a blocking thread. Returns the
/// chunks and its log (standard error, `-v`).
async fn stream_base_backup(
    mut tool: PgTool,
    saver: Arc<Saver>,
    progress: &Progress,
    conninfo: &str,
) -> Result<(Vec<Id>, Vec<String>)> {
    let what = || format!("pg_basebackup of {}", redact(conninfo));
    let mut running = tool
        .spawn(Stdio::piped(), Stdio::piped())
        .map_err(|e| pg_error("base backup", e))?;
    let stderr = running.child().stderr.take().expect("piped");
    let log = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut stderr = tokio::io::BufReader::new(stderr);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while stderr
            .read_until(b'\n', &mut line)
            .await
            .is_ok_and(|n| n > 0)
        {
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
            line.clear();
        }
        lines
    });
    let stdout = running
        .child()
        .stdout
        .take()
        .expect("piped")
        .into_owned_fd()
        .map_err(|e| Error::Command {
            what: what(),
            detail: format!("reading its output: {e}"),
        })?;
    let bar = progress.clone();
    let chunking = tokio::task::spawn_blocking(move || {
        let sealers = std::thread::available_parallelism().map_or(2, |n| n.get());
        saver.save_stream(std::fs::File::from(stdout), &|n| bar.inc(n), sealers)
    });
    let status = running.wait(BASE_BACKUP_TIMEOUT).await;
    // It ended or was killed: its output ends, and with it the chunking.
    let chunks = chunking.await.expect("base backup task");
    let log = log.await.unwrap_or_default();
    let status = status.map_err(|e| pg_error(&what(), e))?;
    if !status.success() {
        return Err(Error::Command {
            what: what(),
            detail: format!(
                "{status}: {}",
                log.iter()
                    .rev()
                    .take(3)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        });
    }
    Ok((chunks?, log))
}

fn saver_bytes(w: &Writer) -> u64 {
    w.saver().counters.bytes_read.load(Ordering::Relaxed)
}

fn find_in_log(log: &[String], marker: &str) -> Option<String> {
    log.iter().find_map(|l| {
        l.split_once(marker)
            .map(|(_, rest)| rest.trim().to_string())
    })
}

/// The server's system identifier and WAL segment size, over a bounded connection.
pub(crate) async fn server_facts(conninfo: &str) -> Result<(String, u64)> {
    let what = "reading the server's system identifier";
    let client = connect(what, conninfo).await?;
    let row = lifeboat_postgres::within(
        "query",
        &redact(conninfo),
        QUERY_TIMEOUT,
        client.query_one(
            "SELECT system_identifier::text, \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') \
             FROM pg_control_system()",
            &[],
        ),
    )
    .await
    .map_err(|e| pg_error(what, e))?;
    Ok((row.get(0), row.get::<_, i64>(1) as u64))
}

/// The stored WAL of one cluster: for each segment number (on any timeline), the highest
/// timeline it is stored on. Finished segments and `.partial` copies both count.
pub(crate) fn stored_segments<'a>(
    names: impl Iterator<Item = &'a str>,
    segment_size: u64,
) -> std::collections::BTreeMap<u64, u32> {
    let mut out = std::collections::BTreeMap::new();
    for name in names {
        let name = name.strip_suffix(".partial").unwrap_or(name);
        if let Some((tli, seg)) = parse_wal_file_name(name, segment_size) {
            let t = out.entry(seg).or_insert(tli);
            *t = (*t).max(tli);
        }
    }
    out
}

/// The runs of segment numbers in `from..=to` that `stored` lacks, named as WAL files.
pub(crate) fn wal_gaps(
    stored: &std::collections::BTreeMap<u64, u32>,
    from: u64,
    to: u64,
    segment_size: u64,
) -> Vec<String> {
    let mut gaps = Vec::new();
    let mut seg = from;
    while seg <= to {
        if stored.contains_key(&seg) {
            seg += 1;
            continue;
        }
        let start = seg;
        while seg <= to && !stored.contains_key(&seg) {
            seg += 1;
        }
        // Named on the timeline of the segment before the gap (else after it).
        let tli = stored
            .range(..start)
            .next_back()
            .or_else(|| stored.range(seg..).next())
            .map_or(1, |(_, t)| *t);
        let first = wal_file_name(tli, start, segment_size);
        gaps.push(if seg - 1 == start {
            first
        } else {
            format!("{first} to {}", wal_file_name(tli, seg - 1, segment_size))
        });
    }
    gaps
}

/// WAL lives under the cluster's system identifier, so one repository can hold the WAL of
/// several databases (whose segment names are the same).
pub fn wal_key(system: &str, name: &str) -> String {
    format!("wal/{system}/{name}")
}

/// The system identifier in `pg_control` of the data directory `data_dir`: its first 8 bytes.
pub fn system_identifier(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read {} ({e}): run from the data directory (archive_command and restore_command do) or pass --system-identifier",
            path.display()
        ))
    })?;
    let id: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::corrupt(format!("{} is too short", path.display())))?;
    Ok(u64::from_le_bytes(id).to_string())
}

/// `lifeboat wal push PATH`: stores a WAL file. Pushing the same content again succeeds (as
/// PostgreSQL expects after a crash); different content under the same name is refused.
pub async fn wal_push(repo: &Repo, system: &str, path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{} is not a WAL file path", path.display())))?
        .to_string();
    let data = tokio::fs::read(path).await.map_err(Error::io(path))?;
    wal_store(repo, system, &name, data, false).await
}

/// Stores WAL file `name`. An existing object with the same content is left alone; with
/// other content it is replaced only when `replace` (a `.partial` that grew).
pub async fn wal_store(
    repo: &Repo,
    system: &str,
    name: &str,
    data: Vec<u8>,
    replace: bool,
) -> Result<()> {
    let key = wal_key(system, name);
    if !replace {
        if let Some(existing) = repo.storage.get(&key).await? {
            if repo.key.open_unbounded(&existing)? == data {
                return Ok(());
            }
            return Err(Error::Invalid(format!(
                "{name} is already archived in {} with different content; refusing to overwrite it",
                repo.location()
            )));
        }
    }
    let key_copy = repo.key.clone();
    // Streamed WAL (replaced as it grows, several times a second) is compressed fastest.
    let level = if replace { 1 } else { 3 };
    let sealed = tokio::task::spawn_blocking(move || key_copy.seal(&data, level))
        .await
        .expect("seal task");
    repo.storage.put(&key, sealed).await?;
    if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        raise_wal_end(repo, system, name).await?;
    }
    Ok(())
}

/// How far a cluster's WAL archive has reached: its newest finished segment, recorded after
/// that segment is stored, so that verify tells a lost tail (the newest segments gone) from an
/// archive that simply ends there.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WalEnd {
    /// The newest finished segment stored.
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

pub fn wal_end_key(system: &str) -> String {
    format!("walend/{system}")
}

/// The recorded end of `system`'s WAL archive, if any.
pub async fn wal_end(repo: &Repo, system: &str) -> Result<Option<WalEnd>> {
    match repo.storage.get(&wal_end_key(system)).await? {
        None => Ok(None),
        Some(sealed) => {
            let plain = repo.key.open_unbounded(&sealed)?;
            Ok(Some(serde_json::from_slice(&plain).map_err(|e| {
                Error::corrupt(format!("{}: {e}", wal_end_key(system)))
            })?))
        }
    }
}

/// Position order of a WAL file name: log and segment, then timeline.
fn wal_position(name: &str) -> (&str, &str) {
    (&name[8..], &name[..8])
}

/// Moves the recorded end to `name` when it is newer. Two writers may race; the loser can
/// only leave the end behind (never ahead of what is stored), which hides a lost tail at most
/// until the next segment.
async fn raise_wal_end(repo: &Repo, system: &str, name: &str) -> Result<()> {
    if let Some(end) = wal_end(repo, system).await? {
        if end.name.len() == 24 && wal_position(&end.name) >= wal_position(name) {
            return Ok(());
        }
    }
    let end = WalEnd {
        name: name.to_owned(),
        at: time::OffsetDateTime::now_utc(),
    };
    let plain = serde_json::to_vec(&end).map_err(|e| Error::Invalid(e.to_string()))?;
    let sealed = repo.key.seal(&plain, 3);
    repo.storage.put(&wal_end_key(system), sealed).await
}

/// `lifeboat wal fetch NAME PATH`: writes a WAL file where PostgreSQL asks. A segment that was
/// only streamed so far is served from its `.partial` copy. `Ok(false)` when there is none.
pub async fn wal_fetch(repo: &Repo, system: &str, name: &str, to: &Path) -> Result<bool> {
    let mut found = repo.storage.get(&wal_key(system, name)).await?;
    if found.is_none() && parse_wal_file_name(name, 16 * 1024 * 1024).is_some() {
        found = repo
            .storage
            .get(&wal_key(system, &format!("{name}.partial")))
            .await?;
    }
    let Some(sealed) = found else {
        return Ok(false);
    };
    let plain = repo.key.open_unbounded(&sealed)?;
    write_atomically(to, &plain).await?;
    Ok(true)
}

async fn write_atomically(to: &Path, data: &[u8]) -> Result<()> {
    let tmp = to.with_extension("lifeboat-tmp");
    tokio::fs::write(&tmp, data)
        .await
        .map_err(Error::io(&tmp))?;
    tokio::fs::rename(&tmp, to).await.map_err(Error::io(to))
}

/// Where a point-in-time restore stops.
#[derive(Clone, Debug)]
pub enum Target {
    Time(OffsetDateTime),
    Lsn(u64),
    /// A restore point (`pg_create_restore_point`) written at `lsn`.
    Name {
        name: String,
        lsn: u64,
    },
    /// The end of the archived WAL.
    Latest,
}

#[derive(Debug, serde::Serialize)]
pub struct PgRestoreSummary {
    pub base_snapshot: String,
    /// Files of the base backup (a backup taken with pg_basebackup is one), and of those the
    /// ones a delta restore found in place and left alone.
    pub base_files: u64,
    pub unchanged_files: u64,
    /// Bytes of the base backup written (a delta restore writes only what differed).
    pub written_bytes: u64,
    pub base_bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub base_end_time: OffsetDateTime,
    pub wal_files: usize,
    pub wal_bytes: u64,
    pub recovery_settings: Vec<String>,
    pub duration_s: f64,
}

/// Which base backups a point-in-time restore may start from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pick<'a> {
    /// Only base backups of this source.
    pub source: Option<&'a str>,
    /// This base backup (an id prefix), instead of the newest that ends before the target.
    pub base: Option<&'a str>,
}

/// Restores the newest base backup that ends before `target` (or the one `pick` names), and
/// the WAL up to the target, into `to`. With `delta`, `to` may hold a data directory (not in
/// use): only the files that differ from the base backup are written, and what it lacks is
/// removed, as for reseeding a standby that `pg_rewind` cannot bring back.
pub async fn restore_pitr(
    repo: &Repo,
    target: Target,
    pick: Pick<'_>,
    to: &Path,
    delta: bool,
    progress: &Progress,
) -> Result<PgRestoreSummary> {
    let started = std::time::Instant::now();
    if delta {
        refuse_if_running(to)?;
    } else if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Invalid(format!(
            "{} is not empty; restore into a new or empty directory, or over a data directory with --delta",
            to.display()
        )));
    }
    let snaps = repo.snapshots().await?;
    let candidates: Vec<(Id, Snapshot)> = snaps
        .into_iter()
        .filter(|(id, s)| {
            s.kind == SourceKind::Postgres
                && pick.source.is_none_or(|src| s.source == src)
                && pick.base.is_none_or(|b| id.hex().starts_with(b))
        })
        .collect();
    let fits = |pg: &PgInfo| match &target {
        Target::Time(t) => pg.end_time <= *t,
        Target::Lsn(l) | Target::Name { lsn: l, .. } => {
            parse_lsn(&pg.end_lsn).is_some_and(|e| e <= *l)
        }
        Target::Latest => true,
    };
    if let (Some(b), [_, _, ..]) = (pick.base, candidates.as_slice()) {
        return Err(Error::Invalid(format!(
            "base backup prefix {b:?} is ambiguous"
        )));
    }
    let (base_id, base) = candidates
        .iter()
        .rev()
        .find(|(_, s)| s.postgres.as_ref().is_some_and(fits))
        .cloned()
        .ok_or_else(|| match (candidates.first(), pick.base) {
            (None, Some(b)) => Error::UnknownSnapshot(format!("{b} (a PostgreSQL base backup)")),
            (None, None) => Error::Invalid("no PostgreSQL base backup in the repository; take one with `lifeboat backup run --postgres CONNINFO`".into()),
            (Some((_, s)), _) => Error::Invalid(format!(
                "no base backup ends before the target; the oldest ends at {}",
                s.postgres.as_ref().map(|p| format_time(p.end_time)).unwrap_or_default()
            )),
        })?;
    let pg = base.postgres.clone().expect("a postgres snapshot");

    // The WAL it needs.
    let prefix = format!("wal/{}/", pg.system_identifier);
    let listed = repo.storage.list(&prefix).await?;
    let (_, start_seg) = parse_wal_file_name(&pg.start_wal, pg.wal_segment_size)
        .ok_or_else(|| Error::corrupt(format!("bad start segment {}", pg.start_wal)))?;
    let mut segments: Vec<(u64, u32, String, String, OffsetDateTime)> = Vec::new();
    let mut wanted: Vec<(String, String)> = Vec::new();
    for l in &listed {
        let name = l.key.trim_start_matches(&prefix);
        if name.ends_with(".history") {
            wanted.push((l.key.clone(), name.to_string()));
            continue;
        }
        let (base_name, partial) = match name.strip_suffix(".partial") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let Some((tli, seg)) = parse_wal_file_name(base_name, pg.wal_segment_size) else {
            continue;
        };
        if tli < pg.timeline || seg < start_seg {
            continue;
        }
        if partial
            && listed
                .iter()
                .any(|o| o.key == wal_key(&pg.system_identifier, base_name))
        {
            continue;
        }
        segments.push((
            seg,
            tli,
            l.key.clone(),
            base_name.to_string(),
            l.modified.into(),
        ));
    }
    segments.sort();
    let newest = segments
        .iter()
        .max_by_key(|s| (s.4, s.0))
        .map(|s| (s.3.clone(), s.4));
    let mut reached = matches!(target, Target::Latest);
    for (seg, _, key, name, modified) in segments {
        wanted.push((key, name));
        let (covers, done) = match &target {
            // A segment stored after the target holds everything up to it. But when an object
            // was stored says nothing of the times inside it (a copy is stored later than its
            // WAL was written), so every segment goes: PostgreSQL stops at the target.
            Target::Time(t) => (modified >= *t, false),
            Target::Lsn(l) | Target::Name { lsn: l, .. } => {
                let at = *l / pg.wal_segment_size;
                (seg >= at, seg > at)
            }
            Target::Latest => (true, false),
        };
        reached |= covers;
        if done {
            break;
        }
    }
    // A hole in the chain would end the replay there, quietly: refuse instead. The base
    // backup holds its own WAL up to its end (and a primary switches segments there), so the
    // chain must be whole from the next segment on.
    let end_lsn = parse_lsn(&pg.end_lsn)
        .ok_or_else(|| Error::corrupt(format!("bad end LSN {}", pg.end_lsn)))?;
    let end_seg = end_lsn / pg.wal_segment_size + 1;
    let chosen = stored_segments(wanted.iter().map(|(_, n)| n.as_str()), pg.wal_segment_size);
    if let Some((&last, _)) = chosen.last_key_value() {
        let gaps = wal_gaps(&chosen, end_seg, last, pg.wal_segment_size);
        if let Some(first) = gaps.first() {
            return Err(Error::corrupt(format!(
                "WAL {first} of this database is missing from {}, so the replay from base backup {} would stop before it; restore to an earlier point, or from a base backup taken after it",
                repo.location(),
                base_id.short()
            )));
        }
    }
    if !reached {
        return Err(Error::Invalid(format!(
            "the archived WAL of this database ends before the target: {}; restore to an earlier point, or name none for the latest",
            match newest {
                Some((name, at)) => format!("its newest WAL file, {name}, was stored at {}", format_time(at)),
                None => format!("no WAL is archived after base backup {}", base_id.short()),
            }
        )));
    }
    // The base backup.
    std::fs::create_dir_all(to).map_err(Error::io(to))?;
    let index = repo.load_index().await?;
    let nodes = crate::restorer::load_nodes(repo, &index, &base).await?;
    let (files, unchanged, written, base_bytes) = match nodes.into_iter().find(|n| n.path == BASE_TAR) {
        Some(_) if delta => {
            return Err(Error::Invalid(format!(
                "base backup {} was taken with pg_basebackup (one tar stream), which a delta restore cannot compare file by file; restore it into an empty directory, or take a base backup with --data-dir",
                base_id.short()
            )))
        }
        Some(tar) => {
            progress.start("restoring base backup", tar.size);
            unpack(repo, &index, &tar.chunks, to, progress).await?;
            progress.finish();
            (1, 0, tar.size, tar.size)
        }
        None => {
            drop(index);
            let opts = crate::restorer::RestoreOptions { only: None, delta };
            let s = crate::restorer::restore(repo, &base, to, opts, progress).await?;
            if let Some((path, why)) = s.failed.first() {
                return Err(Error::corrupt(format!(
                    "base backup {}: {} file(s) not restored, first {path}: {why}; restore from another base backup (--base)",
                    base_id.short(),
                    s.failed.len()
                )));
            }
            (s.files, s.unchanged, s.written, s.bytes)
        }
    };

    let pg_wal = to.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).map_err(Error::io(&pg_wal))?;
    let wal_files = wanted.len();
    let mut wal_bytes = 0u64;
    let mut fetches = futures::stream::iter(wanted)
        .map(|(key, name)| async move {
            // A `.partial` listed a moment ago may since have been replaced by its completed
            // segment (a live archive's uploader does that), which holds at least its bytes.
            let (key, sealed) = match key.strip_suffix(".partial") {
                Some(full) => match repo.storage.get(&key).await? {
                    Some(b) => (key.clone(), b),
                    None => (full.to_string(), repo.storage.get_required(full).await?),
                },
                None => {
                    let b = repo.storage.get_required(&key).await?;
                    (key, b)
                }
            };
            let plain = repo
                .key
                .open_unbounded(&sealed)
                .map_err(|e| Error::corrupt(format!("{key}: {e}")))?;
            Ok::<_, Error>((name, key.ends_with(".partial"), plain))
        })
        .buffered(PARALLEL_IO / 2);
    while let Some(r) = fetches.next().await {
        let (name, partial, plain) = r?;
        let path = pg_wal.join(&name);
        if partial && !partial_extends(&path, &name, &plain, end_lsn, pg.wal_segment_size)? {
            continue;
        }
        wal_bytes += plain.len() as u64;
        write_atomically(&path, &plain).await?;
    }

    // Recovery settings.
    // WAL is read from pg_wal/; archiving is off so that a restored copy (a test, an
    // investigation) never writes a new timeline into the production archive.
    let mut settings = vec![
        "restore_command = 'false'".to_string(),
        "archive_mode = 'off'".to_string(),
    ];
    match &target {
        Target::Time(t) => settings.push(format!("recovery_target_time = '{}'", pg_time(*t))),
        Target::Name { name, .. } => settings.push(format!("recovery_target_name = '{name}'")),
        Target::Lsn(l) => settings.push(format!("recovery_target_lsn = '{}'", format_lsn(*l))),
        Target::Latest => {}
    }
    settings.push("recovery_target_action = 'promote'".into());
    let auto = to.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
    conf.push_str("\n# written by lifeboat restore postgres: replay the archived WAL up to the target, then promote\n");
    for s in &settings {
        conf.push_str(s);
        conf.push('\n');
    }
    std::fs::write(&auto, conf).map_err(Error::io(&auto))?;
    std::fs::write(to.join("recovery.signal"), b"").map_err(Error::io(to))?;
    give_to_owner_of_data(to)?;
    Ok(PgRestoreSummary {
        base_files: files,
        unchanged_files: unchanged,
        written_bytes: written,
        base_bytes,
        base_snapshot: base_id.hex(),
        base_end_time: pg.end_time,
        wal_files,
        wal_bytes,
        recovery_settings: settings,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// A delta restore writes into a data directory only when no server runs on it: its
/// `postmaster.pid` names no live process (a stale one, after a crash, is removed with the
/// rest of what the base backup lacks).
fn refuse_if_running(to: &Path) -> Result<()> {
    let pidfile = to.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pidfile) else {
        return Ok(());
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    };
    if alive && pid > 0 {
        return Err(Error::Invalid(format!(
            "{} is in use: PostgreSQL runs on it (process {pid}, from {}); stop it first (pg_ctl stop -D {}), then restore with --delta",
            to.display(),
            pidfile.display(),
            to.display()
        )));
    }
    Ok(())
}

/// Whether an archived `.partial` copy of segment `name` should replace the copy the base
/// backup put at `path`. The base backup's copy holds everything up to the backup's end
/// (`end_lsn`); a `.partial` may have been stored before or after that. It replaces it only
/// when it holds the same bytes up to there (and so as much or more); an archived finished
/// segment always does.
fn partial_extends(
    path: &Path,
    name: &str,
    partial: &[u8],
    end_lsn: u64,
    segment_size: u64,
) -> Result<bool> {
    let ours = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(path)(e)),
    };
    let valid = match parse_wal_file_name(name, segment_size) {
        Some((_, seg)) if seg == end_lsn / segment_size => (end_lsn % segment_size) as usize,
        _ => ours.len(),
    };
    Ok(partial.get(..valid).is_some() && partial.get(..valid) == ours.get(..valid))
}

/// A time as PostgreSQL reads it: microseconds, UTC.
fn pg_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let f = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
    );
    t.format(&f).expect("time formats")
}

/// Streams the tar's chunks, in order, into an unpacker on a blocking thread.
async fn unpack(
    repo: &Repo,
    index: &Index,
    chunks: &[Id],
    to: &Path,
    progress: &Progress,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PARALLEL_IO);
    let dest = to.to_path_buf();
    let am_root = nix::unistd::geteuid().is_root();
    let unpacker = tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        });
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(am_root);
        archive.set_preserve_mtime(true);
        archive.unpack(&dest).map_err(Error::io(&dest))
    });
    let mut blobs = futures::stream::iter(chunks.iter().copied())
        .map(|id| async move {
            let (pack, loc) = index.get(&id).ok_or_else(|| {
                Error::corrupt(format!("chunk {} is not in the index", id.short()))
            })?;
            let plain = repo.read_blob(&pack, &loc).await?;
            if repo.key.chunk_id(&plain) != id {
                return Err(Error::corrupt(format!(
                    "chunk {} does not match its id",
                    id.short()
                )));
            }
            Ok(plain)
        })
        .buffered(PARALLEL_IO / 2);
    let mut failed = None;
    while let Some(b) = blobs.next().await {
        match b {
            Ok(plain) => {
                progress.inc(plain.len() as u64);
                if tx.send(plain).is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpacker.await.expect("unpack task");
    match failed {
        Some(e) => Err(e),
        None => unpacked,
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Leaves the restored data directory as `pg_ctl start` wants it, whoever ran the restore:
/// mode 0700 always (PostgreSQL refuses a group- or world-readable data directory), and, when
/// run as root, every file written here owned by the owner of the restored data files.
fn give_to_owner_of_data(to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::geteuid().is_root() {
        let version = to.join("PG_VERSION");
        let md = std::fs::metadata(&version).map_err(Error::io(&version))?;
        let (uid, gid) = (md.uid(), md.gid());
        let mut stack = vec![to.to_path_buf()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(Error::io(&p))?;
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(&p).map_err(Error::io(&p))? {
                    stack.push(e.map_err(Error::io(&p))?.path());
                }
            }
        }
    }
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(Error::io(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_and_times() {
        assert_eq!(redact("host=a password=secret user=b"), "host=a user=b");
        let t = time::macros::datetime!(2026-11-23 03:47:05.133354759 +01:00);
        assert_eq!(pg_time(t), "2026-11-23 02:47:05.133354+00");
    }

    #[test]
    fn gaps_in_the_wal_chain_are_named_across_timelines() {
        let mb16 = 16 * 1024 * 1024;
        // Timeline 2 begins in segment 5, whose timeline-1 part was streamed as a .partial.
        let names = [
            "000000010000000000000003",
            "000000010000000000000005.partial",
            "000000020000000000000005",
            "000000020000000000000006",
            "00000002.history",
            "000000020000000000000009",
            "00000002000000000000000A.partial",
        ];
        let stored = stored_segments(names.into_iter(), mb16);
        assert_eq!(stored.get(&5), Some(&2));
        assert_eq!(
            wal_gaps(&stored, 3, 10, mb16),
            [
                "000000010000000000000004",
                "000000020000000000000007 to 000000020000000000000008"
            ]
        );
        assert!(wal_gaps(&stored, 5, 6, mb16).is_empty());
        assert!(
            wal_gaps(&stored, 9, 8, mb16).is_empty(),
            "an empty range has no gap"
        );
    }
}
