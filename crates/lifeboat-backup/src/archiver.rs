//! Backing up directory trees: walk, reuse unchanged files from the parent snapshot, chunk the
//! rest on one thread per core, and commit a snapshot.

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{host, Repo};
use crate::snapshot::{escape, Node, NodeKind, Snapshot, SourceKind, Summary};
use crate::writer::Writer;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which files a backup reads, and so which snapshot is its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackupKind {
    /// Files unchanged since the newest snapshot of the same source are not read again.
    #[default]
    Incremental,
    /// Files unchanged since the newest full snapshot of the same source are not read again.
    Differential,
    /// Every file is read (a snapshot with no parent).
    Full,
}

/// How a snapshot is labelled, and which files are read again.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub source: String,
    pub tier: String,
    pub tags: Vec<String>,
    pub group: Option<String>,
    pub kind: BackupKind,
}

impl BackupOptions {
    /// The snapshot these options label, on this host.
    pub(crate) fn snapshot(
        self,
        kind: SourceKind,
        time: time::OffsetDateTime,
        roots: Vec<String>,
        parent: Option<crate::crypto::Id>,
        summary: Summary,
        postgres: Option<crate::snapshot::PgInfo>,
    ) -> Snapshot {
        Snapshot {
            time,
            host: host(),
            source: self.source,
            kind,
            tier: self.tier,
            tags: self.tags,
            group: self.group,
            roots,
            parent,
            tree: Vec::new(),
            summary,
            postgres,
        }
    }
}

/// Backs up `roots` (directories or files) into one snapshot.
pub async fn backup_paths(
    repo: &Repo,
    roots: &[PathBuf],
    opts: BackupOptions,
    progress: &Progress,
) -> Result<(crate::crypto::Id, Snapshot)> {
    let started = std::time::Instant::now();
    let time = time::OffsetDateTime::now_utc();
    let mut abs = Vec::new();
    for r in roots {
        let a = std::path::absolute(r).map_err(Error::io(r))?;
        std::fs::symlink_metadata(&a).map_err(Error::io(&a))?;
        abs.push(a);
    }
    let root_names: Vec<String> = abs.iter().map(|p| p.display().to_string()).collect();
    let writer = Writer::start(repo, &format!("backup of {}", root_names.join(", "))).await?;
    let parent = find_parent(repo, opts.kind, |s| {
        s.kind == SourceKind::Directory && s.source == opts.source && s.roots == root_names
    })
    .await?;
    let read = read_tree(&writer, &abs, parent.as_ref(), |_| false, progress).await;
    let (nodes, mut summary) = match read {
        Ok(r) => r,
        Err(e) => return Err(writer.abandon().await.unwrap_or(e)),
    };
    summary.duration_s = started.elapsed().as_secs_f64();
    let parent = parent.map(|(id, _)| id);
    let snapshot = opts.snapshot(
        SourceKind::Directory,
        time,
        root_names,
        parent,
        summary,
        None,
    );
    writer.commit(snapshot, nodes).await
}

/// The snapshot a backup of `kind` reads against: the newest one `same` accepts, or for a
/// differential the newest of those that is full; none for a full backup.
pub(crate) async fn find_parent(
    repo: &Repo,
    kind: BackupKind,
    same: impl Fn(&Snapshot) -> bool,
) -> Result<Option<(crate::crypto::Id, Snapshot)>> {
    if kind == BackupKind::Full {
        return Ok(None);
    }
    Ok(repo
        .snapshots()
        .await?
        .into_iter()
        .rev()
        .find(|(_, s)| same(s) && (kind == BackupKind::Incremental || s.parent.is_none())))
}

/// Whether a file may be taken from the parent snapshot (`before`, in a snapshot begun at
/// `parent_began`) without reading it: the same size, modification time, change time and
/// inode, and modified at least a second before the parent began. A file written in the
/// clock tick in which the parent read it can change again, at the same size, without its
/// time moving; such a file is read again (pgBackRest's rule). The change time also catches
/// a modification time set back by hand.
pub(crate) fn unchanged(before: &Node, now: &Node, parent_began: time::OffsetDateTime) -> bool {
    let modified_ns = i128::from(before.mtime) * 1_000_000_000 + i128::from(before.mtime_ns);
    before.size == now.size
        && before.mtime == now.mtime
        && before.mtime_ns == now.mtime_ns
        && before.inode == now.inode
        && before.ctime == now.ctime
        && before.ctime != 0
        && modified_ns + 1_000_000_000 < parent_began.unix_timestamp_nanos()
}

/// Walks `roots` (absolute) but for what `skip` names (a node's path in the snapshot), takes
/// the files [`unchanged`] since `parent` from it, and reads the rest into `writer`, one
/// file per core. A file that vanishes while the backup runs is left out.
pub(crate) async fn read_tree(
    writer: &Writer,
    roots: &[PathBuf],
    parent: Option<&(crate::crypto::Id, Snapshot)>,
    skip: fn(&str) -> bool,
    progress: &Progress,
) -> Result<(Vec<Node>, Summary)> {
    // Files of the parent whose chunks are all still indexed, by path.
    let mut previous: Vec<Node> = Vec::new();
    if let Some((id, p)) = parent {
        let index = writer.index();
        crate::restorer::for_each_node(&writer.repo, index, p, |n| {
            if n.kind == NodeKind::File && n.chunks.iter().all(|c| index.contains(c)) {
                previous.push(n);
            }
        })
        .await
        .map_err(|e| {
            Error::corrupt(format!(
                "the parent snapshot {} cannot be read ({e}); run `lifeboat backup verify`, and take a full backup (--full) to go on",
                id.short()
            ))
        })?;
    }

    let walk_roots = roots.to_vec();
    let mut nodes = tokio::task::spawn_blocking(move || walk(&walk_roots, skip))
        .await
        .expect("walk task")?;
    let by_path: HashMap<&str, &Node> = previous.iter().map(|n| (n.path.as_str(), n)).collect();
    let mut todo = Vec::new();
    let mut summary = Summary::default();
    for (i, (n, _)) in nodes.iter_mut().enumerate() {
        match n.kind {
            NodeKind::Dir => summary.dirs += 1,
            NodeKind::File => {
                summary.files += 1;
                summary.bytes += n.size;
                match (by_path.get(n.path.as_str()), parent) {
                    (Some(p), Some((_, parent))) if unchanged(p, n, parent.time) => {
                        n.chunks = p.chunks.clone()
                    }
                    _ => todo.push(i),
                }
            }
            NodeKind::Symlink => {}
        }
    }
    drop(by_path);
    drop(previous);
    summary.files_read = todo.len() as u64;
    let to_read: u64 = todo.iter().map(|&i| nodes[i].0.size).sum();
    progress.start("backing up", to_read);

    let saver = writer.saver();
    let work: Vec<(usize, PathBuf, u64)> = todo
        .iter()
        .map(|&i| (i, nodes[i].1.clone(), nodes[i].0.size))
        .collect();
    let bar = progress.clone();
    let read = tokio::task::spawn_blocking(move || {
        let next = AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(work.len()));
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((i, path, size)) = work.get(k) else { break };
                    if first_error.lock().expect("err").is_some() {
                        break;
                    }
                    match saver.save_file(path, *size, &|n| bar.inc(n)) {
                        Ok(chunks) => results.lock().expect("results").push((*i, Some(chunks))),
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            tracing::warn!(path = %path.display(), "file vanished during the backup");
                            results.lock().expect("results").push((*i, None));
                        }
                        Err(e) => {
                            first_error.lock().expect("err").get_or_insert(e);
                        }
                    }
                });
            }
        });
        match first_error.into_inner().expect("err") {
            Some(e) => Err(e),
            None => Ok(results.into_inner().expect("results")),
        }
    })
    .await
    .expect("file workers");
    progress.finish();
    let mut vanished = vec![false; nodes.len()];
    for (i, chunks) in read? {
        match chunks {
            Some(c) => nodes[i].0.chunks = c,
            None => vanished[i] = true,
        }
    }
    let nodes: Vec<Node> = nodes
        .into_iter()
        .zip(vanished)
        .filter(|(_, gone)| !gone)
        .map(|((n, _), _)| n)
        .collect();
    summary.bytes_read = writer.saver().counters.bytes_read.load(Ordering::Relaxed);
    Ok((nodes, summary))
}

/// Every node under the roots, sorted by path, with the absolute path to read it from.
fn walk(roots: &[PathBuf], skip: fn(&str) -> bool) -> Result<Vec<(Node, PathBuf)>> {
    let mut out = Vec::new();
    let single = roots.len() == 1;
    let mut names = std::collections::HashSet::new();
    for root in roots {
        let prefix = if single {
            String::new()
        } else {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "root".into());
            if !names.insert(name.clone()) {
                return Err(Error::Invalid(format!(
                    "two paths to back up end in the same name {name:?}; back them up separately"
                )));
            }
            name
        };
        visit(root, &prefix, false, skip, &mut out)?;
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(out)
}

/// `rel` is the node's path in the snapshot; `escaped`: it is in [`escape`]d form, because a
/// name on the way is not UTF-8.
fn visit(
    path: &Path,
    rel: &str,
    escaped: bool,
    skip: fn(&str) -> bool,
    out: &mut Vec<(Node, PathBuf)>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if skip(rel) {
        return Ok(());
    }
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path)(e)),
    };
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_file() {
        NodeKind::File
    } else {
        tracing::warn!(path = %path.display(), "skipping a special file (socket, fifo or device)");
        return Ok(());
    };
    let link = if kind == NodeKind::Symlink {
        Some(std::fs::read_link(path).map_err(Error::io(path))?)
    } else {
        None
    };
    // A target that is not UTF-8 is escaped, and then so is the path (one flag says both).
    let link_escaped = link
        .as_ref()
        .is_some_and(|l| std::str::from_utf8(l.as_os_str().as_bytes()).is_err());
    let node_escaped = escaped || link_escaped;
    let target = link.map(|l| {
        let b = l.as_os_str().as_bytes();
        if node_escaped {
            escape(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    });
    let node_path = if node_escaped && !escaped {
        escape(rel.as_bytes())
    } else {
        rel.to_string()
    };
    out.push((
        Node {
            path: node_path,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec() as u32,
            size: if kind == NodeKind::File { md.len() } else { 0 },
            inode: md.ino(),
            ctime: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            target,
            chunks: Vec::new(),
            escaped: node_escaped,
        },
        path.to_path_buf(),
    ));
    if kind == NodeKind::Dir {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path)(e)),
        };
        for e in entries {
            let e = e.map_err(Error::io(path))?;
            let raw = e.file_name();
            // Names that are not UTF-8 (and, below them, every name) are stored escaped, so
            // that they come back byte for byte.
            let (name, child_escaped) = match (escaped, raw.to_str()) {
                (false, Some(n)) => (n.to_owned(), false),
                _ => (escape(raw.as_bytes()), true),
            };
            let parent = if child_escaped && !escaped {
                escape(rel.as_bytes())
            } else {
                rel.to_owned()
            };
            let child = if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            };
            visit(&e.path(), &child, child_escaped, skip, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unchanged;
    use crate::snapshot::{Node, NodeKind};

    fn file(mtime: i64, mtime_ns: u32, ctime: i64) -> Node {
        Node {
            path: "base/1/1234".into(),
            kind: NodeKind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime,
            mtime_ns,
            size: 8192,
            inode: 7,
            ctime,
            target: None,
            chunks: Vec::new(),
            escaped: false,
        }
    }

    #[test]
    fn a_file_is_trusted_only_when_nothing_tells_it_changed_and_it_had_settled() {
        let began = time::macros::datetime!(2026-12-05 10:00:00 UTC);
        let t = began.unix_timestamp();
        let ctime = |s: i64| s * 1_000_000_000;
        let old = file(t - 5, 0, ctime(t - 5));
        assert!(unchanged(&old, &old.clone(), began));
        // Modified within the second before the parent began: read again, though size,
        // times and inode are all the same (a second write in the same clock tick).
        let recent = file(t - 1, 500_000_000, ctime(t - 1));
        assert!(!unchanged(&recent, &recent.clone(), began));
        let during = file(t, 1, ctime(t));
        assert!(!unchanged(&during, &during.clone(), began));
        // Each attribute alone tells a change.
        let mut other = old.clone();
        other.size += 1;
        assert!(!unchanged(&old, &other, began));
        let mut other = old.clone();
        other.mtime_ns += 1;
        assert!(!unchanged(&old, &other, began));
        let mut other = old.clone();
        other.ctime += 1;
        assert!(
            !unchanged(&old, &other, began),
            "a modification time set back by hand"
        );
        let mut other = old.clone();
        other.inode += 1;
        assert!(!unchanged(&old, &other, began));
        // A parent from before change times were recorded is not trusted.
        let unknown = file(t - 5, 0, 0);
        assert!(!unchanged(&unknown, &unknown.clone(), began));
    }
}
