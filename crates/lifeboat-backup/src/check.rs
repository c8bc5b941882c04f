//! `lifeboat backup verify`: the structure (config, keys, index files, snapshots and their
//! trees, every referenced blob indexed, every indexed pack present with its size) and, with
//! `--read-data`, every byte (each pack hashed against its name, each blob decrypted and hashed
//! against its id). Damage is reported with the snapshots and files it affects.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::pack::{pack_key, Index, IndexFile, PackedBlob};
use crate::postgres::{stored_segments, wal_gaps, wal_key};
use crate::progress::Progress;
use crate::repo::{Repo, PACKS_IN_FLIGHT};
use crate::restorer::for_each_node;
use crate::snapshot::{format_time, Snapshot};
use futures::StreamExt;
use lifeboat_postgres::{parse_lsn, parse_wal_file_name, wal_file_name};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    /// WAL segments stored (finished or in progress), and how many WAL files were read.
    pub wal_files: usize,
    pub wal_files_read: usize,
    pub groups: usize,
    pub bytes_read: u64,
    /// Problems that make data unrestorable.
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced packs that prune removes).
    pub warnings: Vec<String>,
    /// Snapshot id -> files that cannot be restored whole.
    pub damaged: BTreeMap<String, Vec<String>>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// `subset_percent` of packs are read when `read_data` (100 for all); which packs is decided
/// by their ids, so repeated partial checks cover different packs only if the repository
/// changed — pass a different percentage to widen it.
pub async fn verify(
    repo: &Repo,
    read_data: bool,
    subset_percent: f64,
    progress: &Progress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut index = Index::default();
    let index_keys = repo.index_keys().await?;
    report.index_files = index_keys.len();
    for k in &index_keys {
        match repo.load_json::<IndexFile>(k).await {
            Ok(f) => f.packs.iter().for_each(|p| index.add_pack(p)),
            Err(e) => report.errors.push(format!("index file {k}: {e}")),
        }
    }
    report.packs = index.pack_ids().len();
    report.blobs = index.blob_count();

    // Packs present vs indexed.
    let stored: HashMap<Id, u64> = repo
        .storage
        .list("data/")
        .await?
        .into_iter()
        .filter_map(|l| {
            l.key
                .rsplit('/')
                .next()
                .and_then(Id::parse)
                .map(|id| (id, l.size))
        })
        .collect();
    let mut bad_packs: HashSet<Id> = HashSet::new();
    let mut expected_end: HashMap<Id, u64> = HashMap::new();
    for p in index.entries() {
        let end = p
            .blobs
            .iter()
            .map(|b| (b.offset + b.length) as u64)
            .max()
            .unwrap_or(0);
        expected_end.insert(p.id, end);
        match stored.get(&p.id) {
            None => {
                report
                    .errors
                    .push(format!("pack {} is missing", p.id.hex()));
                bad_packs.insert(p.id);
            }
            Some(size) if *size < end => {
                report.errors.push(format!(
                    "pack {} is truncated ({size} bytes, blobs end at {end})",
                    p.id.hex()
                ));
                bad_packs.insert(p.id);
            }
            _ => {}
        }
    }
    for id in stored.keys() {
        if !index.has_pack(id) {
            report.warnings.push(format!(
                "pack {} is not indexed (left by an interrupted backup; prune removes it)",
                id.hex()
            ));
        }
    }

    // Every byte of the chosen packs.
    let mut bad_blobs: HashSet<Id> = HashSet::new();
    if read_data {
        let chosen: Vec<Id> = index
            .pack_ids()
            .iter()
            .filter(|id| !bad_packs.contains(id) && in_subset(id, subset_percent))
            .copied()
            .collect();
        let total: u64 = chosen.iter().filter_map(|id| stored.get(id)).sum();
        progress.start("reading data", total);
        let mut by_pack: HashMap<Id, Vec<PackedBlob>> = index
            .entries()
            .into_iter()
            .map(|p| (p.id, p.blobs))
            .collect();
        let mut results = futures::stream::iter(chosen)
            .map(|pack| {
                let blobs = by_pack.remove(&pack).unwrap_or_default();
                async move { (pack, read_pack(repo, pack, blobs).await) }
            })
            .buffer_unordered(PACKS_IN_FLIGHT);
        while let Some((pack, r)) = results.next().await {
            report.packs_read += 1;
            match r {
                Ok((n, blobs)) => {
                    report.bytes_read += n;
                    progress.inc(n);
                    if !blobs.is_empty() {
                        report.errors.push(format!(
                            "pack {}: {} damaged blob(s)",
                            pack.hex(),
                            blobs.len()
                        ));
                        bad_blobs.extend(blobs);
                    }
                }
                Err(e) => {
                    report.errors.push(format!("pack {}: {e}", pack.hex()));
                    bad_packs.insert(pack);
                }
            }
        }
        progress.finish();
    }

    // Snapshots: their trees, every referenced blob indexed, and what damage they suffer.
    let snaps = match repo.snapshots().await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("snapshots: {e}"));
            return Ok(report);
        }
    };
    report.snapshots = snaps.len();
    for (id, snap) in &snaps {
        let mut damaged = BTreeSet::new();
        let walked = for_each_node(repo, &index, snap, |n| {
            for c in &n.chunks {
                let broken = match index.get(c) {
                    None => {
                        report.errors.push(format!(
                            "snapshot {}: {}: chunk {} is not in the index",
                            id.short(),
                            n.path,
                            c.short()
                        ));
                        true
                    }
                    Some((pack, _)) => bad_packs.contains(&pack) || bad_blobs.contains(c),
                };
                if broken {
                    damaged.insert(if n.path.is_empty() {
                        ".".to_string()
                    } else {
                        n.path.clone()
                    });
                    break;
                }
            }
        })
        .await;
        if let Err(e) = walked {
            report
                .errors
                .push(format!("snapshot {}: tree unreadable: {e}", id.short()));
            report
                .damaged
                .entry(id.hex())
                .or_default()
                .push("(the whole snapshot)".into());
            continue;
        }
        if !damaged.is_empty() {
            report
                .damaged
                .insert(id.hex(), damaged.into_iter().collect());
        }
    }
    verify_wal(repo, &snaps, read_data, subset_percent, &mut report).await?;
    verify_groups(repo, &snaps, &mut report).await?;
    Ok(report)
}

/// The WAL of each database with base backups: no hole from the end of its oldest base
/// backup to its newest stored segment (a hole ends every replay there), and with
/// `read_data` every WAL file opens.
async fn verify_wal(
    repo: &Repo,
    snaps: &[(Id, Snapshot)],
    read_data: bool,
    subset_percent: f64,
    report: &mut VerifyReport,
) -> Result<()> {
    let listed = repo.storage.list("wal/").await?;
    // system identifier -> (segment size, the segment after its oldest base backup's end:
    // a base backup holds its own WAL up to there)
    let mut clusters: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for pg in snaps.iter().filter_map(|(_, s)| s.postgres.as_ref()) {
        let Some(end) = parse_lsn(&pg.end_lsn) else {
            continue;
        };
        let c = clusters
            .entry(pg.system_identifier.as_str())
            .or_insert((pg.wal_segment_size, u64::MAX));
        c.1 = c.1.min(end / pg.wal_segment_size + 1);
    }
    for (system, (size, from)) in &clusters {
        let prefix = format!("wal/{system}/");
        let names = listed.iter().filter_map(|l| l.key.strip_prefix(&prefix));
        let names: Vec<&str> = names.collect();
        let stored = stored_segments(names.iter().copied(), *size);
        report.wal_files += stored.len();
        if let Some((&last, _)) = stored.last_key_value() {
            for gap in wal_gaps(&stored, *from, last, *size) {
                report.errors.push(format!(
                    "WAL of database {system}: {gap} missing; no point-in-time restore past it from the base backups before it"
                ));
            }
        }
        // A lost tail: the archive once reached further than what is stored now.
        if let Some(end) = crate::postgres::wal_end(repo, system).await? {
            let reached = parse_wal_file_name(&end.name, *size);
            let last = stored.last_key_value().map(|(s, _)| *s);
            if let Some((tli, _)) = reached.filter(|(_, seg)| last.is_none_or(|l| *seg > l)) {
                let first = last.map_or(*from, |l| l + 1);
                let name = |seg: u64| wal_file_name(tli, seg, *size);
                report.errors.push(format!(
                    "WAL of database {system}: the archive reached {} (recorded {}), but its newest segment now is {}; {}..{} are missing, and a point-in-time restore stops before them",
                    end.name,
                    format_time(end.at),
                    last.map_or("none".to_owned(), &name),
                    name(first),
                    end.name
                ));
            }
        }
        // A timeline without its history file: a restore cannot follow the switch to it.
        let timelines: BTreeSet<u32> = stored.values().copied().collect();
        for tli in timelines.into_iter().filter(|t| *t > 1) {
            let history = format!("{tli:08X}.history");
            if !names.contains(&history.as_str()) {
                let first = stored.iter().find(|(_, t)| **t == tli).map(|(s, _)| *s);
                report.errors.push(format!(
                    "WAL of database {system}: {history} is missing; segments of timeline {tli} (from {}) cannot be replayed without it",
                    first.map_or("?".to_owned(), |s| wal_file_name(tli, s, *size))
                ));
            }
        }
    }
    if read_data {
        let chosen: Vec<&str> = listed
            .iter()
            .map(|l| l.key.as_str())
            .filter(|k| in_subset(&Id::of_stored(k.as_bytes()), subset_percent))
            .collect();
        let mut reads = futures::stream::iter(chosen)
            .map(|key| async move {
                let r = match repo.storage.get_required(key).await {
                    Ok(sealed) => {
                        let n = sealed.len() as u64;
                        repo.key.open_unbounded(&sealed).map(|_| n)
                    }
                    Err(e) => Err(e),
                };
                (key, r)
            })
            // WAL segments are pack-sized (16 MiB): as many in memory as packs.
            .buffer_unordered(PACKS_IN_FLIGHT);
        while let Some((key, r)) = reads.next().await {
            match r {
                Ok(n) => {
                    report.wal_files_read += 1;
                    report.bytes_read += n;
                }
                Err(e) => report.errors.push(format!("{key}: {e}")),
            }
        }
    }
    Ok(())
}

/// Every group record names snapshots that exist, and the WAL with each restore point.
async fn verify_groups(
    repo: &Repo,
    snaps: &[(Id, Snapshot)],
    report: &mut VerifyReport,
) -> Result<()> {
    let groups = match crate::group::groups(repo).await {
        Ok(g) => g,
        Err(e) => {
            report.errors.push(format!("group records: {e}"));
            return Ok(());
        }
    };
    report.groups = groups.len();
    for (_, g) in &groups {
        let name = format!("group {} ({})", g.label, format_time(g.time));
        for m in &g.members {
            let Some((_, snap)) = snaps.iter().find(|(id, _)| *id == m.snapshot) else {
                report.errors.push(format!(
                    "{name}: the snapshot {} of {} is missing, so the group cannot be restored",
                    m.snapshot.short(),
                    m.source
                ));
                continue;
            };
            if let (Some(seg), Some(pg)) = (&m.wal_segment, &snap.postgres) {
                let key = wal_key(&pg.system_identifier, seg);
                if repo.storage.size(&key).await?.is_none() {
                    report.errors.push(format!(
                        "{name}: {}'s WAL {seg} with the restore point is missing",
                        m.source
                    ));
                }
            }
        }
    }
    Ok(())
}

fn in_subset(id: &Id, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let v = u32::from_le_bytes(id.0[..4].try_into().expect("4 bytes")) as f64 / u32::MAX as f64;
    v * 100.0 < percent
}

/// Reads a whole pack: its hash must be its name, and every blob the index places in it must
/// decrypt to content with its id. Returns the bytes read and the damaged blobs.
async fn read_pack(repo: &Repo, pack: Id, blobs: Vec<PackedBlob>) -> Result<(u64, Vec<Id>)> {
    let bytes = repo.storage.get_required(&pack_key(&pack)).await?;
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || {
        let blob_ok = |b: &PackedBlob| {
            let s = b.offset as usize;
            bytes
                .get(s..s + b.length as usize)
                .and_then(|sealed| repo.key.open(sealed, b.raw_length as usize).ok())
                .is_some_and(|plain| repo.key.chunk_id(&plain) == b.id)
        };
        let bad: Vec<Id> = blobs.iter().filter(|b| !blob_ok(b)).map(|b| b.id).collect();
        if Id::of_stored(&bytes) != pack && bad.is_empty() {
            return Err(Error::corrupt(
                "content does not match its name (header damaged?)",
            ));
        }
        Ok((bytes.len() as u64, bad))
    })
    .await
    .expect("verify task")
}
