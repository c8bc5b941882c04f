//! Restoring snapshots: every pack that holds needed blobs is read once, its blobs are
//! decrypted, checked against their ids and written at their offsets in every file that uses
//! them. A damaged or missing pack fails only the files that need it, and the restore says
//! which; metadata (modes, owners, times) is applied last, directories deepest first.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, BlobLoc, Index};
use crate::progress::Progress;
use crate::repo::{Repo, PARALLEL_IO};
use crate::snapshot::{decode_nodes, Node, NodeKind, Snapshot};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The nodes of a snapshot.
pub async fn load_nodes(repo: &Repo, index: &Index, snap: &Snapshot) -> Result<Vec<Node>> {
    let mut bytes = Vec::new();
    for id in &snap.tree {
        let (pack, loc) = index.get(id).ok_or_else(|| {
            Error::corrupt(format!("tree blob {} is not in the index", id.short()))
        })?;
        let plain = repo.read_blob(&pack, &loc).await?;
        if repo.key.chunk_id(&plain) != *id {
            return Err(Error::corrupt(format!(
                "tree blob {} does not match its id",
                id.short()
            )));
        }
        bytes.extend_from_slice(&plain);
    }
    decode_nodes(&bytes).map_err(|e| Error::corrupt(format!("snapshot tree: {e}")))
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Files that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    pub duration_s: f64,
}

struct Use {
    file: usize,
    offset: u64,
}

/// A blob to take from a pack, and where it goes.
struct Wanted {
    id: Id,
    loc: BlobLoc,
    uses: Vec<Use>,
}

/// The wanted blobs of one pack, by offset.
type PackPlan = BTreeMap<u32, Wanted>;

/// Restores `snap` (or the part at `only`) into `to`.
pub async fn restore(
    repo: &Repo,
    snap: &Snapshot,
    to: &Path,
    only: Option<&str>,
    progress: &Progress,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let lock = Lock::acquire(&repo.storage, false, "restore", Duration::from_secs(600)).await?;
    let index = repo.load_index().await?;
    let mut nodes = load_nodes(repo, &index, snap).await?;
    if let Some(p) = only {
        nodes.retain(|n| n.is_under(p));
        if nodes.is_empty() {
            return Err(Error::Invalid(format!("no path {p:?} in the snapshot")));
        }
    }
    let mut summary = RestoreSummary::default();
    let files: Vec<PathBuf> = nodes.iter().map(|n| target(to, &n.path)).collect();

    // Directories, empty files at their final size, symlinks.
    std::fs::create_dir_all(to).map_err(Error::io(to))?;
    for (n, path) in nodes.iter().zip(&files) {
        match n.kind {
            NodeKind::Dir => {
                std::fs::create_dir_all(path).map_err(Error::io(path))?;
                summary.dirs += 1;
            }
            NodeKind::File => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
                }
                let f = std::fs::File::create(path).map_err(Error::io(path))?;
                f.set_len(n.size).map_err(Error::io(path))?;
                summary.files += 1;
                summary.bytes += n.size;
            }
            NodeKind::Symlink => {
                let _ = std::fs::remove_file(path);
                let t = n.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(t, path).map_err(Error::io(path))?;
                summary.symlinks += 1;
            }
        }
    }

    // Which blob goes where, by pack.
    let mut by_pack: BTreeMap<Id, PackPlan> = BTreeMap::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut offset = 0u64;
        for c in &n.chunks {
            match index.get(c) {
                Some((pack, loc)) => {
                    by_pack
                        .entry(pack)
                        .or_default()
                        .entry(loc.offset)
                        .or_insert_with(|| Wanted {
                            id: *c,
                            loc,
                            uses: Vec::new(),
                        })
                        .uses
                        .push(Use { file: i, offset });
                    offset += loc.raw_length as u64;
                }
                None => {
                    failed
                        .entry(i)
                        .or_insert_with(|| format!("chunk {} is not in the index", c.short()));
                    break;
                }
            }
        }
    }
    progress.start("restoring", summary.bytes);
    let files_ref = &files;
    let results: Vec<(Vec<usize>, Option<String>)> = futures::stream::iter(by_pack)
        .map(|(pack, blobs)| async move {
            let users: BTreeSet<usize> = blobs
                .values()
                .flat_map(|w| w.uses.iter().map(|u| u.file))
                .collect();
            let r = restore_pack(repo, pack, blobs, files_ref, progress).await;
            (users.into_iter().collect(), r.err().map(|e| e.to_string()))
        })
        .buffer_unordered(PARALLEL_IO / 2)
        .collect()
        .await;
    progress.finish();
    for (users, err) in results {
        if let Some(e) = err {
            for u in users {
                failed.entry(u).or_insert_with(|| e.clone());
            }
        }
    }

    // Metadata, deepest first so a directory's time is set after its content.
    let am_root = nix::unistd::geteuid().is_root();
    for (i, n) in nodes.iter().enumerate().rev() {
        if failed.contains_key(&i) {
            continue;
        }
        if let Err(e) = apply_metadata(n, &files[i], am_root) {
            failed.insert(i, e.to_string());
        }
    }
    for (i, reason) in failed {
        let _ = std::fs::remove_file(&files[i])
            .ok()
            .filter(|_| nodes[i].kind == NodeKind::File);
        summary.failed.push((nodes[i].path.clone(), reason));
    }
    summary.duration_s = started.elapsed().as_secs_f64();
    lock.release().await?;
    Ok(summary)
}

fn target(to: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        to.to_path_buf()
    } else {
        to.join(rel)
    }
}

async fn restore_pack(
    repo: &Repo,
    pack: Id,
    blobs: PackPlan,
    files: &[PathBuf],
    progress: &Progress,
) -> Result<()> {
    let first = *blobs.keys().next().expect("a pack with blobs") as usize;
    let last = blobs
        .values()
        .map(|w| (w.loc.offset + w.loc.length) as usize)
        .max()
        .unwrap_or(first);
    let bytes = repo
        .storage
        .get_range(&pack_key(&pack), first..last)
        .await?;
    let repo = repo.clone();
    let files = files.to_vec();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let mut open: HashMap<usize, std::fs::File> = HashMap::new();
        for Wanted { id, loc, uses } in blobs.values() {
            let start = loc.offset as usize - first;
            let sealed = bytes
                .get(start..start + loc.length as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {} is truncated", pack.short())))?;
            let plain = repo
                .key
                .open(sealed, loc.raw_length as usize)
                .map_err(|e| {
                    Error::corrupt(format!("pack {}: blob {}: {e}", pack.short(), id.short()))
                })?;
            if repo.key.chunk_id(&plain) != *id {
                return Err(Error::corrupt(format!(
                    "pack {}: blob {} does not match its id",
                    pack.short(),
                    id.short()
                )));
            }
            for u in uses {
                let path = &files[u.file];
                let f = match open.entry(u.file) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(Error::io(path))?,
                    ),
                };
                f.write_all_at(&plain, u.offset).map_err(Error::io(path))?;
                progress.inc(plain.len() as u64);
            }
        }
        Ok(())
    })
    .await
    .expect("restore task")
}

fn apply_metadata(n: &Node, path: &Path, am_root: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if am_root {
        std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid)).map_err(Error::io(path))?;
    }
    let mtime = filetime::FileTime::from_unix_time(n.mtime, n.mtime_ns);
    match n.kind {
        NodeKind::Symlink => {
            filetime::set_symlink_file_times(path, mtime, mtime).map_err(Error::io(path))
        }
        _ => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(n.mode))
                .map_err(Error::io(path))?;
            filetime::set_file_times(path, mtime, mtime).map_err(Error::io(path))
        }
    }
}
