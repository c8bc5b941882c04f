//! `lifeboat backup prune`: forget the snapshots no retention rule keeps, then reclaim the space
//! of blobs no kept snapshot uses. Holds the exclusive lock, so no backup runs meanwhile.
//! Memory is bounded by the index and the set of used blob ids (tens of bytes per blob), never
//! by the data. Crash-safe order: repacked packs, then the new index, then deletions; a prune
//! killed at any point leaves a valid repository.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, PackBuilder, PackEntry};
use crate::repo::{Repo, PARALLEL_IO};
use crate::restorer::for_each_node;
use crate::retention;
use crate::snapshot::format_time;
use futures::{StreamExt, TryStreamExt};
use lifeboat_config::Retention;
use lifeboat_postgres::parse_wal_file_name;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A pack is rewritten when more than this share of its bytes is unused.
const REPACK_UNUSED_SHARE: f64 = 0.2;
/// Packs per index file written by prune.
const PACKS_PER_INDEX_FILE: usize = 2000;

#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub kept: Vec<String>,
    pub forgotten: Vec<String>,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_unindexed_deleted: usize,
    pub bytes_freed: u64,
    pub wal_deleted: usize,
    /// Group records whose snapshots were all forgotten.
    pub groups_deleted: usize,
}

/// Applies `policy` to each group of snapshots (same source and tier), or to the groups whose
/// policy `policy_for` returns.
pub async fn prune(
    repo: &Repo,
    policy_for: &(dyn Fn(&str, &str) -> Option<Retention> + Sync),
    dry_run: bool,
) -> Result<PruneReport> {
    let lock = Lock::acquire(&repo.storage, true, "prune", Duration::from_secs(600)).await?;
    let r = prune_locked(repo, policy_for, dry_run).await;
    lock.release().await?;
    r
}

async fn prune_locked(
    repo: &Repo,
    policy_for: &(dyn Fn(&str, &str) -> Option<Retention> + Sync),
    dry_run: bool,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run,
        ..Default::default()
    };
    let snaps = repo.snapshots().await?;
    let mut groups: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, (_, s)) in snaps.iter().enumerate() {
        groups
            .entry((s.source.clone(), s.tier.clone()))
            .or_default()
            .push(i);
    }
    let mut keep = vec![true; snaps.len()];
    for ((source, tier), members) in &groups {
        let Some(policy) = policy_for(source, tier) else {
            continue;
        };
        if policy.keeps_nothing() {
            return Err(Error::Invalid(format!(
                "the retention policy for {source}/{tier} keeps nothing; set at least one keep rule"
            )));
        }
        let times: Vec<_> = members.iter().map(|&i| snaps[i].1.time).collect();
        for (&i, v) in members.iter().zip(retention::apply(&times, &policy)) {
            keep[i] = v.keep;
        }
    }
    // A group is kept whole: one kept member keeps all of them. A record with no member left
    // goes.
    let groups = crate::group::groups(repo).await?;
    let position: HashMap<Id, usize> = snaps
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut groups_doomed = Vec::new();
    for (gid, g) in &groups {
        let members: Vec<usize> = g
            .members
            .iter()
            .filter_map(|m| position.get(&m.snapshot).copied())
            .collect();
        if members.iter().any(|&i| keep[i]) {
            members.into_iter().for_each(|i| keep[i] = true);
        } else {
            groups_doomed.push(*gid);
        }
    }
    report.groups_deleted = groups_doomed.len();
    for (k, (id, s)) in keep.iter().zip(&snaps) {
        let line = format!(
            "{} {} {}/{}",
            id.short(),
            format_time(s.time),
            s.source,
            s.tier
        );
        if *k {
            report.kept.push(line)
        } else {
            report.forgotten.push(line)
        }
    }

    // What the kept snapshots use.
    let index = repo.load_index().await?;
    let mut used: HashSet<Id> = HashSet::new();
    for ((_, s), k) in snaps.iter().zip(&keep) {
        if *k {
            used.extend(s.tree.iter().copied());
            for_each_node(repo, &index, s, |n| used.extend(n.chunks)).await?;
        }
    }
    let old_index_keys = repo.index_keys().await?;
    let stored = repo.storage.list("data/").await?;

    let mut keep_entries: Vec<PackEntry> = Vec::new();
    let mut delete: Vec<Id> = Vec::new();
    let mut repack: Vec<PackEntry> = Vec::new();
    for p in index.entries() {
        let total: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
        let unused: u64 = p
            .blobs
            .iter()
            .filter(|b| !used.contains(&b.id))
            .map(|b| b.length as u64)
            .sum();
        if unused == 0 {
            keep_entries.push(p);
        } else if unused == total {
            report.bytes_freed += total;
            delete.push(p.id);
        } else if unused as f64 > REPACK_UNUSED_SHARE * total as f64 {
            report.bytes_freed += unused;
            repack.push(p);
        } else {
            keep_entries.push(p);
        }
    }
    let unindexed: Vec<(String, u64)> = stored
        .iter()
        .filter(|l| {
            l.key
                .rsplit('/')
                .next()
                .and_then(Id::parse)
                .is_some_and(|id| !index.has_pack(&id))
        })
        .map(|l| (l.key.clone(), l.size))
        .collect();
    report.bytes_freed += unindexed.iter().map(|(_, s)| s).sum::<u64>();

    // WAL older than the start of the oldest kept base backup of its cluster is needed by none
    // of them. A cluster with no base backup kept keeps all its WAL.
    let mut floors: HashMap<&str, (u64, u64)> = HashMap::new();
    for ((_, s), k) in snaps.iter().zip(&keep) {
        let Some(pg) = s.postgres.as_ref().filter(|_| *k) else {
            continue;
        };
        if let Some((_, seg)) = parse_wal_file_name(&pg.start_wal, pg.wal_segment_size) {
            let f = floors
                .entry(pg.system_identifier.as_str())
                .or_insert((seg, pg.wal_segment_size));
            f.0 = f.0.min(seg);
        }
    }
    let wal_doomed: Vec<String> = repo
        .storage
        .list("wal/")
        .await?
        .into_iter()
        .filter(|l| {
            let Some((system, name)) = l.key.trim_start_matches("wal/").split_once('/') else {
                return false;
            };
            let segment = name.strip_suffix(".partial").unwrap_or(name);
            floors.get(system).is_some_and(|(floor, size)| {
                parse_wal_file_name(segment, *size).is_some_and(|(_, seg)| seg < *floor)
            })
        })
        .map(|l| l.key)
        .collect();
    let tests_doomed = crate::restore_test::outdated(&crate::restore_test::records(repo).await?);
    report.wal_deleted = wal_doomed.len();
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.packs_unindexed_deleted = unindexed.len();
    if dry_run {
        return Ok(report);
    }

    // 1. Forget groups, then snapshots (their blobs are still there until the end).
    for gid in &groups_doomed {
        repo.storage
            .delete(&format!("groups/{}", gid.hex()))
            .await?;
    }
    for ((id, _), k) in snaps.iter().zip(&keep) {
        if !*k {
            repo.storage
                .delete(&format!("snapshots/{}", id.hex()))
                .await?;
        }
    }
    // 2. Repack: copy the sealed bytes of used blobs into new packs, no decryption needed.
    let mut builder = PackBuilder::default();
    for p in &repack {
        let bytes = repo.storage.get_required(&pack_key(&p.id)).await?;
        for b in p.blobs.iter().filter(|b| used.contains(&b.id)) {
            let s = b.offset as usize;
            let sealed = bytes
                .get(s..s + b.length as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {} is truncated", p.id.short())))?;
            builder.add(b.id, b.kind, sealed, b.raw_length as usize);
            if builder.len() >= repo.config.pack_size as usize {
                keep_entries.push(write_pack(repo, std::mem::take(&mut builder)).await?);
            }
        }
    }
    if !builder.is_empty() {
        keep_entries.push(write_pack(repo, builder).await?);
    }
    // 3. The new index, then the old index files go.
    let mut new_keys = HashSet::new();
    for chunk in keep_entries.chunks(PACKS_PER_INDEX_FILE) {
        let id = repo.save_index(chunk.to_vec()).await?;
        new_keys.insert(format!("index/{}", id.hex()));
    }
    for k in old_index_keys.iter().filter(|k| !new_keys.contains(*k)) {
        repo.storage.delete(k).await?;
    }
    // 4. Packs nothing references any more.
    let doomed: Vec<String> = delete
        .iter()
        .chain(repack.iter().map(|p| &p.id))
        .map(pack_key)
        .chain(unindexed.into_iter().map(|(k, _)| k))
        .chain(wal_doomed)
        .chain(tests_doomed)
        .collect();
    futures::stream::iter(doomed)
        .map(|k| async move { repo.storage.delete(&k).await })
        .buffer_unordered(PARALLEL_IO)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(report)
}

async fn write_pack(repo: &Repo, b: PackBuilder) -> Result<PackEntry> {
    let p = b.finish(&repo.key);
    repo.storage.put(&pack_key(&p.id), p.bytes).await?;
    Ok(PackEntry {
        id: p.id,
        blobs: p.blobs,
    })
}
