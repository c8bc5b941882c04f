//! Copies snapshots to a second repository (another region) that shares the first one's keys
//! (`lifeboat backup init --from-repo`): only blobs the target lacks are sent, as sealed bytes,
//! read a pack at a time; nothing is decrypted on the way.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, BlobLoc};
use crate::repo::{Repo, PACKS_IN_FLIGHT};
use crate::restorer::load_nodes;
use crate::snapshot::Snapshot;
use crate::writer::Writer;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub copied: Vec<String>,
    pub already_there: usize,
    pub blobs_sent: u64,
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
    let present: Vec<Snapshot> = to.snapshots().await?.into_iter().map(|(_, s)| s).collect();
    let mut report = CopyReport::default();
    for (id, snap) in from.snapshots().await? {
        if !select(&snap) {
            continue;
        }
        if present.iter().any(|p| same_snapshot(p, &snap)) {
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
        report
            .copied
            .push(format!("{} -> {}", id.short(), new_id.short()));
    }
    source_lock.release().await?;
    Ok(report)
}
