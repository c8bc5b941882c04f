//! Copies snapshots to a second repository (another region) that shares the first one's keys
//! (`lifeboat backup init --from-repo`): only blobs the target lacks are sent, as sealed bytes,
//! read a pack at a time; nothing is decrypted on the way. The WAL of the databases copied and
//! the group records whose snapshots are all there go along.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, BlobLoc};
use crate::repo::{Repo, PACKS_IN_FLIGHT};
use crate::restorer::load_nodes;
use crate::snapshot::Snapshot;
use crate::writer::Writer;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub copied: Vec<String>,
    pub already_there: usize,
    pub blobs_sent: u64,
    pub wal_files_sent: u64,
    pub groups_copied: u64,
    /// Sealed bytes sent: blobs and WAL.
    pub bytes_sent: u64,
}

fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    a.time == b.time && a.host == b.host && a.source == b.source && a.tree == b.tree
}

/// Copies the snapshots `select` picks that `to` does not have; `tier` renames their tier in
/// the target (a copy tier's retention then applies to them).
pub async fn copy(
    from: &Repo,
    to: &Repo,
    select: &(dyn Fn(&Snapshot) -> bool + Sync),
    tier: Option<&str>,
) -> Result<CopyReport> {
    let probe = b"lifeboat: do these repositories share keys?";
    if from.key.chunk_id(probe) != to.key.chunk_id(probe) {
        return Err(Error::Invalid(format!(
            "{} and {} do not share keys, so nothing can be copied without re-chunking; create the target with `lifeboat backup init --repo {} --from-repo {}`",
            from.location(),
            to.location(),
            to.location(),
            from.location()
        )));
    }
    let source_lock = Lock::acquire(
        &from.storage,
        false,
        "copy (source)",
        Duration::from_secs(600),
    )
    .await?;
    let from_index = from.load_index().await?;
    let present = to.snapshots().await?;
    let mut report = CopyReport::default();
    // Source snapshot id -> its copy's id in the target.
    let mut copies: HashMap<Id, Id> = HashMap::new();
    let mut systems: BTreeSet<String> = BTreeSet::new();
    for (id, snap) in from.snapshots().await? {
        if !select(&snap) {
            continue;
        }
        if let Some(pg) = &snap.postgres {
            systems.insert(pg.system_identifier.clone());
        }
        if let Some((there, _)) = present.iter().find(|(_, p)| same_snapshot(p, &snap)) {
            copies.insert(id, *there);
            report.already_there += 1;
            continue;
        }
        let writer = Writer::start(to, "copy").await?;
        let saver = writer.saver();
        let mut wanted: BTreeMap<Id, Vec<(Id, BlobLoc)>> = BTreeMap::new();
        let mut seen = HashSet::new();
        let nodes = load_nodes(from, &from_index, &snap).await?;
        let ids = snap
            .tree
            .iter()
            .copied()
            .chain(nodes.iter().flat_map(|n| n.chunks.iter().copied()));
        for blob in ids {
            if !seen.insert(blob) || !saver.claim(blob) {
                continue;
            }
            let (pack, loc) = from_index.get(&blob).ok_or_else(|| {
                Error::corrupt(format!(
                    "snapshot {}: blob {} is not indexed",
                    id.short(),
                    blob.short()
                ))
            })?;
            wanted.entry(pack).or_default().push((blob, loc));
        }
        let mut reads = futures::stream::iter(wanted)
            .map(|(pack, blobs)| async move {
                let first = blobs.iter().map(|(_, l)| l.offset).min().unwrap_or(0) as usize;
                let last = blobs
                    .iter()
                    .map(|(_, l)| l.offset + l.length)
                    .max()
                    .unwrap_or(0) as usize;
                let bytes = from
                    .storage
                    .get_range(&pack_key(&pack), first..last)
                    .await?;
                Ok::<_, Error>((first, bytes, blobs))
            })
            .buffer_unordered(PACKS_IN_FLIGHT);
        while let Some(r) = reads.next().await {
            let (first, bytes, blobs) = match r {
                Ok(r) => r,
                Err(e) => return Err(writer.abandon().await.unwrap_or(e)),
            };
            let saver = saver.clone();
            let added = tokio::task::spawn_blocking(move || {
                let mut sent = 0u64;
                for (blob, loc) in blobs {
                    let s = loc.offset as usize - first;
                    let sealed = &bytes[s..s + loc.length as usize];
                    saver.add_sealed(blob, loc.kind, sealed, loc.raw_length as usize)?;
                    sent += sealed.len() as u64;
                }
                Ok::<_, Error>(sent)
            })
            .await
            .expect("copy task");
            match added {
                Ok(n) => {
                    report.bytes_sent += n;
                }
                Err(e) => return Err(writer.abandon().await.unwrap_or(e)),
            }
        }
        drop(reads);
        report.blobs_sent += saver
            .counters
            .new_blobs
            .load(std::sync::atomic::Ordering::Relaxed);
        drop(saver);
        let mut copied = snap.clone();
        if let Some(t) = tier {
            copied.tier = t.to_string();
        }
        let (new_id, _) = writer.finish(copied).await?;
        copies.insert(id, new_id);
        report
            .copied
            .push(format!("{} -> {}", id.short(), new_id.short()));
    }
    for system in &systems {
        copy_wal(from, to, system, &mut report).await?;
    }
    copy_groups(from, to, &copies, &mut report).await?;
    source_lock.release().await?;
    Ok(report)
}

/// Sends the WAL files of one database the target lacks, and `.partial` copies that changed,
/// as sealed bytes: a copied base backup can then be recovered to any point in the target too.
async fn copy_wal(from: &Repo, to: &Repo, system: &str, report: &mut CopyReport) -> Result<()> {
    let prefix = format!("wal/{system}/");
    let there: HashMap<String, u64> = to
        .storage
        .list(&prefix)
        .await?
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    let missing: Vec<String> = from
        .storage
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|l| match there.get(&l.key) {
            None => true,
            Some(size) => l.key.ends_with(".partial") && *size != l.size,
        })
        .map(|l| l.key)
        .collect();
    let mut sends = futures::stream::iter(missing)
        .map(|key| async move {
            let bytes = from.storage.get_required(&key).await?;
            let n = bytes.len() as u64;
            to.storage.put(&key, bytes.to_vec()).await?;
            Ok::<_, Error>(n)
        })
        // WAL segments are pack-sized (16 MiB): as many in memory as packs.
        .buffer_unordered(PACKS_IN_FLIGHT);
    while let Some(n) = sends.next().await {
        report.wal_files_sent += 1;
        report.bytes_sent += n?;
    }
    // The recorded end goes last, once every segment it vouches for is there.
    let end = crate::postgres::wal_end_key(system);
    if let Some(bytes) = from.storage.get(&end).await? {
        to.storage.put(&end, bytes.to_vec()).await?;
    }
    Ok(())
}

/// Writes, in the target, each group record whose snapshots are all there, naming the
/// target's snapshots.
async fn copy_groups(
    from: &Repo,
    to: &Repo,
    copies: &HashMap<Id, Id>,
    report: &mut CopyReport,
) -> Result<()> {
    let there = crate::group::groups(to).await?;
    for (_, mut g) in crate::group::groups(from).await? {
        if there
            .iter()
            .any(|(_, t)| t.label == g.label && t.time == g.time)
        {
            continue;
        }
        let Some(members) = g
            .members
            .iter()
            .map(|m| copies.get(&m.snapshot).copied())
            .collect::<Option<Vec<Id>>>()
        else {
            continue;
        };
        for (m, id) in g.members.iter_mut().zip(members) {
            m.snapshot = id;
        }
        to.save_json("groups", &g).await?;
        report.groups_copied += 1;
    }
    Ok(())
}
