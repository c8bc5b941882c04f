//! Restoring snapshots: every pack that holds needed blobs is read once, its blobs are
//! decrypted, checked against their ids and written at their offsets in every file that uses
//! them. A damaged or missing pack fails only the files that need it, and the restore says
//! which; metadata (modes, owners, times) is applied last, directories deepest first.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, BlobLoc, Index};
use crate::progress::Progress;
use crate::repo::{Repo, PACKS_IN_FLIGHT};
use crate::snapshot::{decode_nodes, Node, NodeKind, Snapshot};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The nodes of a snapshot.
pub async fn load_nodes(repo: &Repo, index: &Index, snap: &Snapshot) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for_each_node(repo, index, snap, |n| nodes.push(n)).await?;
    Ok(nodes)
}

/// Calls `f` with each node of a snapshot in path order, holding one tree blob at a time.
pub async fn for_each_node(
    repo: &Repo,
    index: &Index,
    snap: &Snapshot,
    mut f: impl FnMut(Node),
) -> Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let bad = |e: serde_json::Error| Error::corrupt(format!("snapshot tree: {e}"));
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
        carry.extend_from_slice(&plain);
        // Every complete line is a node; a line cut by the chunker waits for the next blob.
        let complete = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        decode_nodes(&carry[..complete])
            .map_err(bad)?
            .into_iter()
            .for_each(&mut f);
        carry.drain(..complete);
    }
    decode_nodes(&carry)
        .map_err(bad)?
        .into_iter()
        .for_each(&mut f);
    Ok(())
}

/// What to restore, and over what.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions<'a> {
    /// Only this path of the snapshot.
    pub only: Option<&'a str>,
    /// Into an existing directory: of a file already there at the snapshot's size, only the
    /// chunks whose bytes differ from the snapshot's are written; other files are written
    /// whole, and whatever the snapshot lacks is removed.
    pub delta: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    /// With delta: files already as in the snapshot, left unwritten.
    pub unchanged: u64,
    /// Bytes written (with delta, only the chunks that differed).
    pub written: u64,
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

/// A restore's fixed facts, shared by the pack workers.
struct Plan {
    nodes: Vec<Node>,
    paths: Vec<PathBuf>,
    /// Files whose content is all in one pack: that pack's worker creates them and sets their
    /// metadata, so most files are touched by one thread, once.
    single_pack: Vec<bool>,
    /// A delta restore's files already in place at the right size: which of their chunks
    /// already hold the snapshot's bytes. Such a file is written into, never truncated.
    in_place: Vec<Option<Vec<bool>>>,
    am_root: bool,
}

/// Restores `snap` (or the part `opts.only` names) into `to`.
pub async fn restore(
    repo: &Repo,
    snap: &Snapshot,
    to: &Path,
    opts: RestoreOptions<'_>,
    progress: &Progress,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let lock = Lock::acquire(&repo.storage, false, "restore", Duration::from_secs(600)).await?;
    let index = repo.load_index().await?;
    let mut nodes = load_nodes(repo, &index, snap).await?;
    if let Some(p) = opts.only {
        nodes.retain(|n| n.is_under(p));
        if nodes.is_empty() {
            return Err(Error::Invalid(format!("no path {p:?} in the snapshot")));
        }
    }
    let mut summary = RestoreSummary::default();
    let (nodes, in_place, index) = if opts.delta {
        let (r, dest) = (repo.clone(), to.to_path_buf());
        tokio::task::spawn_blocking(move || {
            remove_extra(&nodes, &dest)?;
            let in_place = chunks_in_place(&r, &index, &nodes, &dest);
            Ok::<_, Error>((nodes, in_place, index))
        })
        .await
        .expect("delta task")?
    } else {
        let n = nodes.len();
        (nodes, vec![None; n], index)
    };

    // Which blob goes where, by pack.
    let mut by_pack: BTreeMap<Id, PackPlan> = BTreeMap::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    let mut single_pack = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut offset = 0u64;
        let mut packs = BTreeSet::new();
        let mask = in_place[i].as_deref();
        for (k, c) in n.chunks.iter().enumerate() {
            let Some((pack, loc)) = index.get(c) else {
                failed
                    .entry(i)
                    .or_insert_with(|| format!("chunk {} is not in the index", c.short()));
                break;
            };
            if mask.is_some_and(|m| m[k]) {
                offset += loc.raw_length as u64;
                continue;
            }
            summary.written += loc.raw_length as u64;
            packs.insert(pack);
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
        single_pack[i] = packs.len() == 1 && !failed.contains_key(&i);
        match n.kind {
            NodeKind::Dir => summary.dirs += 1,
            NodeKind::Symlink => summary.symlinks += 1,
            NodeKind::File if mask.is_some_and(|m| m.iter().all(|k| *k)) => {
                summary.files += 1;
                summary.unchanged += 1;
                summary.bytes += n.size;
            }
            NodeKind::File => {
                summary.files += 1;
                summary.bytes += n.size;
            }
        }
    }
    let paths = nodes.iter().map(|n| n.path_under(to)).collect();
    let plan = Arc::new(Plan {
        nodes,
        paths,
        single_pack,
        in_place,
        am_root: nix::unistd::geteuid().is_root(),
    });

    // Directories, symlinks, and files that no single pack worker creates.
    let p = plan.clone();
    let to_owned = to.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&to_owned).map_err(Error::io(&to_owned))?;
        for (i, (n, path)) in p.nodes.iter().zip(&p.paths).enumerate() {
            match n.kind {
                NodeKind::Dir => std::fs::create_dir_all(path).map_err(Error::io(path))?,
                NodeKind::Symlink => {
                    let _ = std::fs::remove_file(path);
                    std::os::unix::fs::symlink(n.link_target(), path).map_err(Error::io(path))?;
                }
                NodeKind::File if !p.single_pack[i] && p.in_place[i].is_none() => {
                    let f = std::fs::File::create(path).map_err(Error::io(path))?;
                    f.set_len(n.size).map_err(Error::io(path))?;
                }
                NodeKind::File => {}
            }
        }
        Ok::<_, Error>(())
    })
    .await
    .expect("create task")?;

    progress.start("restoring", summary.bytes);
    let results: Vec<(Vec<usize>, Option<String>)> = futures::stream::iter(by_pack)
        .map(|(pack, blobs)| {
            let plan = plan.clone();
            async move {
                let users: BTreeSet<usize> = blobs
                    .values()
                    .flat_map(|w| w.uses.iter().map(|u| u.file))
                    .collect();
                let r = restore_pack(repo, pack, blobs, plan, progress).await;
                (users.into_iter().collect(), r.err().map(|e| e.to_string()))
            }
        })
        .buffer_unordered(PACKS_IN_FLIGHT)
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

    // The rest of the metadata, deepest first so a directory's time is set after its content.
    let p = plan.clone();
    let failed = tokio::task::spawn_blocking(move || {
        for (i, n) in p.nodes.iter().enumerate().rev() {
            if p.single_pack[i] || failed.contains_key(&i) {
                continue;
            }
            if let Err(e) = apply_metadata(n, &p.paths[i], p.am_root) {
                failed.insert(i, e.to_string());
            }
        }
        for i in failed.keys() {
            if p.nodes[*i].kind == NodeKind::File {
                let _ = std::fs::remove_file(&p.paths[*i]);
            }
        }
        failed
    })
    .await
    .expect("metadata task");
    summary.failed = failed
        .into_iter()
        .map(|(i, why)| (plan.nodes[i].path.clone(), why))
        .collect();
    summary.duration_s = started.elapsed().as_secs_f64();
    lock.release().await?;
    Ok(summary)
}

/// A delta restore's first pass: removes what is in `to` but not in the snapshot, or there
/// as another kind (a directory where a file goes), so that only the snapshot remains.
fn remove_extra(nodes: &[Node], to: &Path) -> Result<()> {
    let wanted: std::collections::HashMap<PathBuf, NodeKind> =
        nodes.iter().map(|n| (n.path_under(to), n.kind)).collect();
    let mut stack = vec![to.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir)(e)),
        };
        for e in entries {
            let e = e.map_err(Error::io(&dir))?;
            let path = e.path();
            let ft = e.file_type().map_err(Error::io(&path))?;
            let kind = if ft.is_dir() {
                NodeKind::Dir
            } else if ft.is_symlink() {
                NodeKind::Symlink
            } else {
                NodeKind::File
            };
            match wanted.get(&path) {
                Some(k) if *k == kind => {
                    if kind == NodeKind::Dir {
                        stack.push(path);
                    }
                }
                _ if kind == NodeKind::Dir => {
                    std::fs::remove_dir_all(&path).map_err(Error::io(&path))?
                }
                _ => std::fs::remove_file(&path).map_err(Error::io(&path))?,
            }
        }
    }
    Ok(())
}

/// For each node, when it is a file already at its place in `to` with the snapshot's size:
/// which of its chunks already hold the snapshot's bytes (each range hashed as the chunk's id
/// is). Work is split into pieces of at most [`COMPARE_PIECE`] bytes, one per core, so a
/// large file is compared on every core. A file that cannot be read is written whole.
fn chunks_in_place(
    repo: &Repo,
    index: &crate::pack::Index,
    nodes: &[Node],
    to: &Path,
) -> Vec<Option<Vec<bool>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const COMPARE_PIECE: u64 = 32 << 20;
    /// A run of one file's chunks compared by one worker.
    struct Piece {
        node: usize,
        /// The index of its first chunk in the file, and where that chunk starts.
        first: usize,
        offset: u64,
        /// (id, length) of each chunk.
        chunks: Vec<(Id, usize)>,
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut masks: Vec<Option<Vec<AtomicBool>>> = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let path = n.path_under(to);
        let present = n.kind == NodeKind::File
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == n.size);
        let lengths: Option<Vec<usize>> = present
            .then(|| {
                n.chunks
                    .iter()
                    .map(|c| index.get(c).map(|(_, l)| l.raw_length as usize))
                    .collect()
            })
            .flatten();
        let Some(lengths) = lengths else {
            masks.push(None);
            continue;
        };
        masks.push(Some(
            n.chunks.iter().map(|_| AtomicBool::new(false)).collect(),
        ));
        let (mut offset, mut piece_start, mut size) = (0u64, 0u64, 0u64);
        let mut piece: Vec<(Id, usize)> = Vec::new();
        let mut first = 0;
        for (k, (c, len)) in n.chunks.iter().zip(lengths).enumerate() {
            if piece.is_empty() {
                first = k;
                piece_start = offset;
            }
            piece.push((*c, len));
            size += len as u64;
            offset += len as u64;
            if size >= COMPARE_PIECE {
                pieces.push(Piece {
                    node: i,
                    first,
                    offset: piece_start,
                    chunks: std::mem::take(&mut piece),
                });
                size = 0;
            }
        }
        if !piece.is_empty() {
            pieces.push(Piece {
                node: i,
                first,
                offset: piece_start,
                chunks: piece,
            });
        }
    }
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = Vec::new();
                while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let path = nodes[piece.node].path_under(to);
                    let Ok(f) = std::fs::File::open(&path) else {
                        continue;
                    };
                    let mask = masks[piece.node]
                        .as_ref()
                        .expect("a piece of a file in place");
                    let mut at = piece.offset;
                    for (k, (id, len)) in piece.chunks.iter().enumerate() {
                        buf.resize(*len, 0);
                        let same =
                            f.read_exact_at(&mut buf, at).is_ok() && repo.key.chunk_id(&buf) == *id;
                        mask[piece.first + k].store(same, Ordering::Relaxed);
                        at += *len as u64;
                    }
                }
            });
        }
    });
    masks
        .into_iter()
        .map(|m| m.map(|m| m.into_iter().map(AtomicBool::into_inner).collect()))
        .collect()
}

async fn restore_pack(
    repo: &Repo,
    pack: Id,
    blobs: PackPlan,
    plan: Arc<Plan>,
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
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let mut open: BTreeMap<usize, std::fs::File> = BTreeMap::new();
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
                let path = &plan.paths[u.file];
                let f = match open.entry(u.file) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let f = if plan.single_pack[u.file] && plan.in_place[u.file].is_none() {
                            std::fs::File::create(path)
                        } else {
                            std::fs::OpenOptions::new().write(true).open(path)
                        };
                        v.insert(f.map_err(Error::io(path))?)
                    }
                };
                f.write_all_at(&plain, u.offset).map_err(Error::io(path))?;
                progress.inc(plain.len() as u64);
            }
        }
        for (i, f) in open {
            if plan.single_pack[i] {
                apply_file_metadata(&f, &plan.nodes[i], plan.am_root)
                    .map_err(Error::io(&plan.paths[i]))?;
            }
        }
        Ok(())
    })
    .await
    .expect("restore task")
}

/// Owner, mode and times through an open file: no second lookup of the path.
fn apply_file_metadata(f: &std::fs::File, n: &Node, am_root: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if am_root {
        std::os::unix::fs::fchown(f, Some(n.uid), Some(n.gid))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(n.mode))?;
    let t = std::time::UNIX_EPOCH + Duration::new(n.mtime.max(0) as u64, n.mtime_ns);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
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
