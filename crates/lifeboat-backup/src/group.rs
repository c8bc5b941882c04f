//! Consistent group backups: several sources (databases and directories) backed up together
//! under one label, with one point to restore them all to.
//!
//! Every base backup and directory backup runs at once. When all have ended, a restore point
//! of the same name is written in every database at once (`pg_create_restore_point` on
//! connections opened beforehand, so the points lie within a few milliseconds of each other;
//! the spread is measured and recorded), and each database switches to a new WAL segment. The
//! group is recorded (`groups/<hash>`) only once the WAL holding every restore point is in the
//! repository, so a recorded group can always be restored: every database to its restore point,
//! every directory to its snapshot. Directories are read while the group runs; they are as of
//! their backup, not of the restore point.

use crate::archiver::BackupKind;
use crate::archiver::{backup_paths, BackupOptions};
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::postgres::{
    base_backup, connect, pg_error, restore_pitr, wal_key, Pick, Target, QUERY_TIMEOUT,
};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::snapshot::{format_time, Snapshot, SourceKind};
use lifeboat_postgres::{parse_lsn, redact, within};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A member of a group: a database (libpq connection string) or directories.
#[derive(Clone, Debug)]
pub enum Member {
    Postgres { name: String, conninfo: String },
    Directory { name: String, paths: Vec<PathBuf> },
}

impl Member {
    pub fn name(&self) -> &str {
        match self {
            Member::Postgres { name, .. } | Member::Directory { name, .. } => name,
        }
    }
}

/// One run of a group, as stored in `groups/<hash>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRecord {
    pub label: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Milliseconds from the first restore point request sent to the last one answered: the
    /// databases' points lie within this window.
    pub spread_ms: f64,
    pub members: Vec<GroupMember>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    pub source: String,
    pub snapshot: Id,
    /// Databases: the restore point's name, its LSN and the WAL segment that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_segment: Option<String>,
}

/// How a group run is labelled and how long it waits for the restore points' WAL.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    pub label: String,
    pub tier: String,
    /// Which files of directory members are read again.
    pub kind: BackupKind,
    /// How long to wait for the WAL holding each restore point to reach the repository.
    pub wal_wait: Duration,
}

/// Labels and member names become restore point names, recovery settings and directory
/// names ([`lifeboat_config::is_safe_name`]).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if lifeboat_config::is_safe_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {name:?}: use 1 to 40 letters, digits, '.', '_' or '-' (not starting with '.')"
        )))
    }
}

/// Backs up every member at once, then marks one point in all databases, waits until the WAL
/// holding it is stored, and records the group. Returns the record and its snapshots, in the
/// members' order.
pub async fn backup_group(
    repo: &Repo,
    members: &[Member],
    opts: &GroupOptions,
) -> Result<(Id, GroupRecord, Vec<(Id, Snapshot)>)> {
    let label = &opts.label;
    check_name("group label", label)?;
    if members.is_empty() {
        return Err(Error::Invalid(format!(
            "group {label}: name at least one member"
        )));
    }
    let mut names: Vec<&str> = members.iter().map(Member::name).collect();
    for n in &names {
        check_name("member name", n)?;
    }
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!(
            "group {label}: two members are named {:?}; give each its own name",
            w[0]
        )));
    }
    let in_group = |m: &Member| format!("group {label}: {}", m.name());

    // Connect to every database first: an unreachable one fails the group before hours of
    // backups, and the restore points later need no connection set-up.
    let mut clients = Vec::new();
    for m in members {
        if let Member::Postgres { conninfo, .. } = m {
            // The connection ends when its client is dropped at the end of this function.
            let client = connect(&in_group(m), conninfo).await?;
            clients.push((m, redact(conninfo), client));
        }
    }

    let backup_opts = |name: &str| BackupOptions {
        source: name.to_string(),
        tier: opts.tier.clone(),
        tags: vec![],
        group: Some(label.clone()),
        kind: opts.kind,
    };
    let runs = members.iter().map(|m| async move {
        let hidden = Progress::hidden();
        match m {
            Member::Postgres { name, conninfo } => {
                base_backup(repo, conninfo, None, backup_opts(name), &hidden).await
            }
            Member::Directory { name, paths } => {
                backup_paths(repo, paths, backup_opts(name), &hidden).await
            }
        }
    });
    let done = futures::future::join_all(runs).await;
    let mut snapshots: Vec<(Id, Snapshot)> = Vec::new();
    for (m, r) in members.iter().zip(done) {
        snapshots.push(r.map_err(|e| Error::Command {
            what: in_group(m),
            detail: e.to_string(),
        })?);
    }

    // One restore point in every database, requested at once.
    let time = OffsetDateTime::now_utc();
    let point = format!("lifeboat-{label}-{}", time.unix_timestamp());
    let started = Instant::now();
    let marks = futures::future::join_all(clients.iter().map(|(_, target, client)| {
        let point = &point;
        async move {
            let row = within(
                "writing the restore point",
                target,
                QUERY_TIMEOUT,
                client.query_one(
                    "SELECT p::text, pg_walfile_name(p) \
                     FROM (SELECT pg_create_restore_point($1) AS p) r",
                    &[point],
                ),
            )
            .await?;
            let answered = started.elapsed();
            within(
                "switching to a new WAL segment",
                target,
                QUERY_TIMEOUT,
                client.batch_execute("SELECT pg_switch_wal()"),
            )
            .await?;
            Ok::<_, lifeboat_postgres::PgError>((
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                answered,
            ))
        }
    }))
    .await;
    let mut points = std::collections::HashMap::new();
    let mut spread = Duration::ZERO;
    for ((m, _, _), r) in clients.iter().zip(marks) {
        let (lsn, segment, answered) =
            r.map_err(|e| pg_error(&format!("{}: writing the restore point", in_group(m)), e))?;
        spread = spread.max(answered);
        points.insert(m.name().to_string(), (lsn, segment));
    }

    // Recorded only when every restore point can be replayed from the repository.
    for (m, (id, snap)) in members.iter().zip(&snapshots) {
        let (Some((_, segment)), Some(pg)) = (points.get(m.name()), &snap.postgres) else {
            continue;
        };
        wait_for_wal(repo, &pg.system_identifier, segment, opts.wal_wait)
            .await
            .map_err(|waited| {
                Error::Invalid(format!(
                    "{}: the WAL segment {segment} with the restore point did not reach {} within {waited:?}; \
                     archive this database's WAL into the repository (archive_command = 'lifeboat wal push …' \
                     or [backup.wal]). Its base backup {} is kept, but the group was not recorded",
                    in_group(m),
                    repo.location(),
                    id.short()
                ))
            })?;
    }
    let record = GroupRecord {
        label: label.clone(),
        time,
        spread_ms: spread.as_secs_f64() * 1000.0,
        members: members
            .iter()
            .zip(&snapshots)
            .map(|(m, (snapshot, _))| {
                let p = points.get(m.name());
                GroupMember {
                    source: m.name().to_string(),
                    snapshot: *snapshot,
                    restore_point: p.map(|_| point.clone()),
                    lsn: p.map(|(lsn, _)| lsn.clone()),
                    wal_segment: p.map(|(_, seg)| seg.clone()),
                }
            })
            .collect(),
    };
    let id = repo.save_json("groups", &record).await?;
    Ok((id, record, snapshots))
}

/// Polls the repository until `wal/<system>/<segment>` exists; `Err(waited)` after `wait`.
async fn wait_for_wal(
    repo: &Repo,
    system: &str,
    segment: &str,
    wait: Duration,
) -> std::result::Result<(), Duration> {
    let key = wal_key(system, segment);
    let started = Instant::now();
    loop {
        if matches!(repo.storage.size(&key).await, Ok(Some(_))) {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every group record, oldest first.
pub async fn groups(repo: &Repo) -> Result<Vec<(Id, GroupRecord)>> {
    let mut all = Vec::new();
    for l in repo.storage.list("groups/").await? {
        let Some(id) = l.key.rsplit('/').next().and_then(Id::parse) else {
            continue;
        };
        all.push((id, repo.load_json::<GroupRecord>(&l.key).await?));
    }
    all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(all)
}

/// The newest run of the group `which` (a label), or the run with that record id prefix.
pub async fn find_group(repo: &Repo, which: &str) -> Result<(Id, GroupRecord)> {
    let all = groups(repo).await?;
    let by_label = all.iter().rev().find(|(_, g)| g.label == which);
    let by_id: Vec<_> = all
        .iter()
        .filter(|(id, _)| id.hex().starts_with(which))
        .collect();
    match (by_label, by_id.as_slice()) {
        (Some(g), _) => Ok(g.clone()),
        (None, [one]) => Ok((*one).clone()),
        _ => {
            let labels: std::collections::BTreeSet<&str> =
                all.iter().map(|(_, g)| g.label.as_str()).collect();
            Err(Error::UnknownSnapshot(format!(
                "group {which} (groups in the repository: {})",
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.into_iter().collect::<Vec<_>>().join(", ")
                }
            )))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupRestore {
    pub group: String,
    pub label: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Member name -> where it was restored.
    pub restored: Vec<(String, PathBuf)>,
}

/// Restores every member of the group `which` into `to/<member>`: databases to the group's
/// restore point (start each with `pg_ctl start -D`), directories to their snapshot.
pub async fn restore_group(repo: &Repo, which: &str, to: &Path) -> Result<GroupRestore> {
    let (gid, g) = find_group(repo, which).await?;
    let snaps = repo.snapshots().await?;
    let mut restored = Vec::new();
    for m in &g.members {
        check_name("member name", &m.source)?;
        let in_group = || format!("group {} ({}): {}", g.label, format_time(g.time), m.source);
        let (_, snap) = snaps
            .iter()
            .find(|(id, _)| *id == m.snapshot)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{}: snapshot {} is missing",
                    in_group(),
                    m.snapshot.short()
                ))
            })?;
        let dest = to.join(&m.source);
        match (snap.kind, &m.restore_point, &m.lsn) {
            (SourceKind::Postgres, Some(name), Some(lsn)) => {
                let lsn = parse_lsn(lsn)
                    .ok_or_else(|| Error::corrupt(format!("{}: bad LSN {lsn}", in_group())))?;
                let target = Target::Name {
                    name: name.clone(),
                    lsn,
                };
                // The group's own base backup: the one the restore point was written after.
                let base = m.snapshot.hex();
                restore_pitr(
                    repo,
                    target,
                    Pick {
                        source: Some(&m.source),
                        base: Some(&base),
                    },
                    &dest,
                    false,
                    &Progress::hidden(),
                )
                .await
                .map_err(|e| Error::Command {
                    what: in_group(),
                    detail: e.to_string(),
                })?;
            }
            _ => {
                let s = crate::restorer::restore(
                    repo,
                    snap,
                    &dest,
                    Default::default(),
                    &Progress::hidden(),
                )
                .await?;
                if let Some((path, why)) = s.failed.first() {
                    return Err(Error::corrupt(format!(
                        "{}: {} file(s) not restored, first {path}: {why}",
                        in_group(),
                        s.failed.len()
                    )));
                }
            }
        }
        restored.push((m.source.clone(), dest));
    }
    Ok(GroupRestore {
        group: gid.hex(),
        label: g.label,
        time: g.time,
        restored,
    })
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_safe_in_sql_settings_and_paths() {
        for ok in ["orders", "db-1", "eu_west.2"] {
            assert!(check_name("label", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a'b",
            "../x",
            "a/b",
            ".hidden",
            "with space",
            &"x".repeat(41),
        ] {
            assert!(check_name("label", bad).is_err(), "{bad}");
        }
    }
}
