//! PostgreSQL base backups read from the data directory itself, on the database's host.
//!
//! On one session: a temporary replication slot holds the WAL from here on in `pg_wal/`,
//! `pg_backup_start` marks the start, the files are walked and only those changed since the
//! parent are read, as for directories ([`unchanged`](crate::archiver::unchanged): size,
//! times and inode, and a file modified within a second of the parent's start is read
//! again), then `pg_backup_stop` gives the backup label. The WAL from the start to the end is
//! taken from `pg_wal/` into the snapshot, so a base backup restores without the archive, as
//! one taken with `pg_basebackup -X fetch` does. A session that ends early (an error, a kill)
//! aborts the backup on the server and drops the slot.

use crate::archiver::{find_parent, read_tree, BackupOptions};
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::pack::BlobKind;
use crate::postgres::{connect, pg_error, server_facts, system_identifier, QUERY_TIMEOUT};
use crate::progress::Progress;
use crate::repo::{host, Repo};
use crate::snapshot::{Node, NodeKind, PgInfo, Snapshot, SourceKind};
use crate::writer::Writer;
use lifeboat_postgres::{redact, wal_file_name};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What `pg_basebackup` leaves out of a data directory, and so does this: files the server
/// rebuilds or that belong to the running instance, and the contents (not the directories) of
/// the directories it empties at start or that hold WAL, slots and temporary state.
pub(crate) fn excluded(rel: &str) -> bool {
    const FILES: &[&str] = &[
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "tablespace_map.old",
        "recovery.signal",
        "standby.signal",
        "current_logfiles.tmp",
        "postgresql.auto.conf.tmp",
    ];
    const EMPTIED: &[&str] = &[
        "pg_wal",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    ];
    let name = rel.rsplit('/').next().unwrap_or(rel);
    FILES.contains(&rel)
        || name == "pg_internal.init"
        || name.starts_with("pgsql_tmp")
        || EMPTIED
            .iter()
            .any(|d| rel.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
}

/// Takes a base backup of the server at `conninfo` by reading `data_dir`, its data directory
/// on this host; with a parent (by `opts.kind`), only the files changed since it are read.
pub async fn file_backup(
    repo: &Repo,
    conninfo: &str,
    data_dir: &Path,
    opts: BackupOptions,
    progress: &Progress,
) -> Result<(Id, Snapshot)> {
    let started = std::time::Instant::now();
    let time = OffsetDateTime::now_utc();
    let data_dir = std::path::absolute(data_dir).map_err(Error::io(data_dir))?;
    let (system, segment_size) = server_facts(conninfo).await?;
    let here = system_identifier(&data_dir)?;
    if here != system {
        return Err(Error::Invalid(format!(
            "{} is not the data directory of {} (its system identifier is {here}, the server's {system}); give the server's own data directory, on its host",
            data_dir.display(),
            redact(conninfo)
        )));
    }
    let tablespaces = data_dir.join("pg_tblspc");
    if std::fs::read_dir(&tablespaces).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Invalid(format!(
            "{} has tablespaces, which a backup of the data directory does not follow yet; leave out the data directory to take the backup with pg_basebackup",
            tablespaces.display()
        )));
    }
    let root = data_dir.display().to_string();
    let parent = find_parent(repo, opts.kind, |s| {
        s.kind == SourceKind::Postgres
            && s.source == opts.source
            && s.roots == [root.as_str()]
            && s.postgres
                .as_ref()
                .is_some_and(|p| p.system_identifier == system)
    })
    .await?;
    let writer = Writer::start(repo, "postgres base backup").await?;
    let taken = take(
        &writer,
        conninfo,
        &data_dir,
        segment_size,
        parent.as_ref(),
        progress,
    )
    .await;
    let mut t = match taken {
        Ok(t) => t,
        Err(e) => return Err(writer.abandon().await.unwrap_or(e)),
    };
    let timeline = u32::from_str_radix(&t.start_wal[..8], 16)
        .map_err(|_| Error::corrupt(format!("bad WAL file name {}", t.start_wal)))?;
    t.summary.duration_s = started.elapsed().as_secs_f64();
    let info = PgInfo {
        system_identifier: system,
        timeline,
        start_lsn: t.start_lsn,
        end_lsn: t.end_lsn,
        start_wal: t.start_wal,
        wal_segment_size: segment_size,
        end_time: t.end_time,
    };
    let parent = parent.map(|(id, _)| id);
    let snapshot = opts.snapshot(
        SourceKind::Postgres,
        time,
        vec![root],
        parent,
        t.summary,
        Some(info),
    );
    writer.commit(snapshot, t.nodes).await
}

/// What the server and the data directory gave between start and stop.
struct Taken {
    /// The files, the backup label (and tablespace map) and the WAL in between, by path.
    nodes: Vec<Node>,
    summary: crate::snapshot::Summary,
    start_lsn: String,
    /// The first WAL file the backup needs.
    start_wal: String,
    end_lsn: String,
    end_time: OffsetDateTime,
}

/// The backup between start and stop, on one session.
async fn take(
    writer: &Writer,
    conninfo: &str,
    data_dir: &Path,
    segment_size: u64,
    parent: Option<&(Id, Snapshot)>,
    progress: &Progress,
) -> Result<Taken> {
    let server = redact(conninfo);
    let client = connect("base backup", conninfo).await?;
    let query = |what: &'static str, sql: &'static str| {
        let client = &client;
        let server = server.clone();
        async move {
            lifeboat_postgres::within(what, &server, QUERY_TIMEOUT, client.query_one(sql, &[]))
                .await
                .map_err(|e| pg_error(what, e))
        }
    };
    let standby: bool = query(
        "asking whether it is a standby",
        "SELECT pg_is_in_recovery()",
    )
    .await?
    .get(0);
    if standby {
        return Err(Error::Invalid(format!(
            "{server} is a standby; back up the primary from its data directory, or leave out the data directory to take the backup with pg_basebackup"
        )));
    }
    // The slot keeps the server from recycling the WAL between start and stop.
    let slot = format!(
        "lifeboat_base_{}_{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000
    );
    lifeboat_postgres::within(
        "creating a temporary replication slot",
        &server,
        QUERY_TIMEOUT,
        client.execute(
            "SELECT pg_create_physical_replication_slot($1, true, true)",
            &[&slot],
        ),
    )
    .await
    .map_err(|e| pg_error("creating a temporary replication slot", e))?;
    let row = lifeboat_postgres::within(
        "pg_backup_start",
        &server,
        QUERY_TIMEOUT,
        client.query_one(
            "SELECT lsn::text, pg_walfile_name(lsn) FROM pg_backup_start($1, true) AS lsn",
            &[&format!("lifeboat {}", host())],
        ),
    )
    .await
    .map_err(|e| pg_error("pg_backup_start", e))?;
    let (start_lsn, start_wal): (String, String) = (row.get(0), row.get(1));

    let (mut nodes, mut summary) = read_tree(
        writer,
        &[data_dir.to_path_buf()],
        parent,
        excluded,
        progress,
    )
    .await?;

    let row = query(
        "pg_backup_stop",
        "SELECT lsn::text, labelfile, spcmapfile, pg_walfile_name(lsn) FROM pg_backup_stop(false)",
    )
    .await?;
    let end_time = OffsetDateTime::now_utc();
    let (end_lsn, label, map, end_wal): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // The label and the WAL are read on a blocking thread, as the files were.
    let saver = writer.saver();
    let dir = data_dir.to_path_buf();
    let wal = segment_names(&start_wal, &end_wal, segment_size)?;
    let extra = tokio::task::spawn_blocking(move || {
        label_and_wal(&saver, &dir, &label, &map, end_time, &wal)
    })
    .await
    .expect("label and WAL task")?;
    for n in &extra {
        summary.files += 1;
        summary.files_read += 1;
        summary.bytes += n.size;
    }
    nodes.extend(extra);
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    summary.bytes_read = writer
        .saver()
        .counters
        .bytes_read
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(client);
    Ok(Taken {
        nodes,
        summary,
        start_lsn,
        start_wal,
        end_lsn,
        end_time,
    })
}

/// The nodes of the backup label (and of the tablespace map, when there is one), owned as
/// the data directory's files are, and of the WAL files `wal` in `pg_wal/`, all stored.
fn label_and_wal(
    saver: &crate::writer::Saver,
    data_dir: &Path,
    label: &str,
    map: &str,
    end_time: OffsetDateTime,
    wal: &[String],
) -> Result<Vec<Node>> {
    let version = data_dir.join("PG_VERSION");
    let owner = std::fs::metadata(&version).map_err(Error::io(&version))?;
    let mut out = Vec::new();
    for (path, data) in [("backup_label", label), ("tablespace_map", map)] {
        if data.is_empty() {
            continue;
        }
        out.push(Node {
            path: path.into(),
            kind: NodeKind::File,
            mode: 0o600,
            uid: owner.uid(),
            gid: owner.gid(),
            mtime: end_time.unix_timestamp(),
            mtime_ns: 0,
            size: data.len() as u64,
            inode: 0,
            ctime: 0,
            target: None,
            chunks: saver.save_bytes(data.as_bytes(), BlobKind::Data)?,
            escaped: false,
        });
    }
    for name in wal {
        let path: PathBuf = data_dir.join("pg_wal").join(name);
        let md = std::fs::metadata(&path).map_err(Error::io(&path))?;
        out.push(Node {
            path: format!("pg_wal/{name}"),
            kind: NodeKind::File,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec() as u32,
            size: md.len(),
            inode: 0,
            ctime: 0,
            target: None,
            chunks: saver.save_file(&path, md.len(), &|_| {})?,
            escaped: false,
        });
    }
    Ok(out)
}

/// The names of the segments from `start` to `end`, on `start`'s timeline.
fn segment_names(start: &str, end: &str, segment_size: u64) -> Result<Vec<String>> {
    let parse = |n: &str| {
        lifeboat_postgres::parse_wal_file_name(n, segment_size)
            .ok_or_else(|| Error::corrupt(format!("bad WAL file name {n}")))
    };
    let ((tli, first), (_, last)) = (parse(start)?, parse(end)?);
    Ok((first..=last)
        .map(|seg| wal_file_name(tli, seg, segment_size))
        .collect())
}
