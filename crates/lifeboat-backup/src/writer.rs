//! Writing to a repository: blobs are chunked, deduplicated against the index, sealed and
//! gathered into packs on blocking threads; packs are uploaded by an async task, and an index
//! file is written after every few packs. A snapshot is written last, so a reader never sees a
//! snapshot whose blobs are not stored and indexed. A writer killed halfway leaves packs (and
//! index files for most of them) that the next backup reuses and prune eventually collects.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::pack::{pack_key, BlobKind, FinishedPack, Index, PackBuilder, PackEntry};
use crate::repo::{Repo, PACKS_IN_FLIGHT};
use crate::snapshot::{encode_nodes, Node, Snapshot};
use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use futures::StreamExt;
use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Packs uploaded between two index files.
const PACKS_PER_INDEX: usize = 4;

#[derive(Default)]
pub struct Counters {
    pub bytes_read: AtomicU64,
    pub new_blobs: AtomicU64,
    pub new_stored_bytes: AtomicU64,
}

/// The blocking half: chunk, deduplicate, seal, pack.
pub struct Saver {
    repo: Repo,
    index: Arc<Index>,
    pending: Mutex<HashSet<Id>>,
    pack: Mutex<PackBuilder>,
    tx: mpsc::Sender<FinishedPack>,
    pub counters: Counters,
}

impl Saver {
    /// Stores one blob unless the repository or this session already has it.
    pub fn save_blob(&self, id: Id, kind: BlobKind, plain: &[u8]) -> Result<()> {
        if !self.claim(id) {
            return Ok(());
        }
        self.store_claimed(id, kind, plain)
    }

    /// Seals and packs a blob this session has claimed.
    fn store_claimed(&self, id: Id, kind: BlobKind, plain: &[u8]) -> Result<()> {
        let sealed = self.repo.key.seal(plain, self.repo.config.zstd_level);
        self.add_sealed(id, kind, &sealed, plain.len())
    }

    /// True when `id` is new to the repository and to this session (and now claimed by the
    /// caller, who must store it).
    pub fn claim(&self, id: Id) -> bool {
        !self.index.contains(&id) && self.pending.lock().expect("pending").insert(id)
    }

    /// Adds an already sealed blob (a copy from a repository with the same keys).
    pub fn add_sealed(&self, id: Id, kind: BlobKind, sealed: &[u8], raw_len: usize) -> Result<()> {
        self.counters.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .new_stored_bytes
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let full = {
            let mut p = self.pack.lock().expect("pack");
            p.add(id, kind, sealed, raw_len);
            if p.len() >= self.repo.config.pack_size as usize {
                let next = PackBuilder::with_capacity(self.repo.config.pack_size as usize);
                Some(std::mem::replace(&mut *p, next))
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.send(p)?;
        }
        Ok(())
    }

    fn send(&self, p: PackBuilder) -> Result<()> {
        let finished = p.finish(&self.repo.key);
        self.tx
            .blocking_send(finished)
            .map_err(|_| Error::Invalid("the pack uploader stopped (see the error above)".into()))
    }

    fn flush(&self) -> Result<()> {
        let p = std::mem::take(&mut *self.pack.lock().expect("pack"));
        if p.is_empty() {
            Ok(())
        } else {
            self.send(p)
        }
    }

    /// Splits a stream into content-defined chunks and stores them; returns their ids in order.
    /// `on_bytes` is called with the size of each chunk read. This thread cuts and hashes (in
    /// stream order); with `sealers` > 0 new chunks are compressed, encrypted and packed on
    /// that many more threads, so that a lone stream (a base backup) is not held to one core.
    /// Directory backups pass 0: they already read one file per core, and more chunks in
    /// flight would only cost memory.
    pub fn save_stream(
        &self,
        r: impl Read,
        on_bytes: &dyn Fn(u64),
        sealers: usize,
    ) -> Result<Vec<Id>> {
        let c = self.repo.config.chunker;
        let seed = self.repo.key.chunker_seed();
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Id, Vec<u8>)>(sealers);
        // Shared by the sealers only: once they have all stopped (on an error), a send fails.
        let rx = Arc::new(Mutex::new(rx));
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..sealers)
                .map(|_| {
                    let rx = rx.clone();
                    scope.spawn(move || -> Result<()> {
                        loop {
                            let next = rx.lock().expect("chunk queue").recv();
                            let Ok((id, data)) = next else { return Ok(()) };
                            self.store_claimed(id, BlobKind::Data, &data)?;
                        }
                    })
                })
                .collect();
            drop(rx);
            let mut ids = Vec::new();
            let mut failed = None;
            let chunks =
                StreamCDC::with_level_and_seed(r, c.min, c.avg, c.max, Normalization::Level1, seed);
            for chunk in chunks {
                let chunk = match chunk {
                    Ok(ch) => ch,
                    Err(fastcdc::v2020::Error::IoError(e)) => {
                        failed = Some(Error::Invalid(format!("reading: {e}")));
                        break;
                    }
                    Err(other) => {
                        failed = Some(Error::Invalid(format!("chunking: {other:?}")));
                        break;
                    }
                };
                self.counters
                    .bytes_read
                    .fetch_add(chunk.length as u64, Ordering::Relaxed);
                on_bytes(chunk.length as u64);
                let id = self.repo.key.chunk_id(&chunk.data);
                ids.push(id);
                if !self.claim(id) {
                    continue;
                }
                if sealers == 0 {
                    if let Err(e) = self.store_claimed(id, BlobKind::Data, &chunk.data) {
                        failed = Some(e);
                        break;
                    }
                } else if tx.send((id, chunk.data)).is_err() {
                    break; // every sealer stopped: its error is below
                }
            }
            drop(tx);
            for s in workers {
                if let Err(e) = s.join().expect("sealer thread") {
                    failed.get_or_insert(e);
                }
            }
            failed.map_or(Ok(ids), Err)
        })
    }

    /// Chunks a buffer already in memory.
    pub fn save_bytes(&self, data: &[u8], kind: BlobKind) -> Result<Vec<Id>> {
        self.counters
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let c = self.repo.config.chunker;
        if data.len() <= c.min as usize {
            let id = self.repo.key.chunk_id(data);
            self.save_blob(id, kind, data)?;
            return Ok(vec![id]);
        }
        let seed = self.repo.key.chunker_seed();
        let mut ids = Vec::new();
        for ch in
            FastCDC::with_level_and_seed(data, c.min, c.avg, c.max, Normalization::Level1, seed)
        {
            let piece = &data[ch.offset..ch.offset + ch.length];
            let id = self.repo.key.chunk_id(piece);
            self.save_blob(id, kind, piece)?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Stores a file's content, reading small files whole and large ones as a stream.
    pub fn save_file(
        &self,
        path: &std::path::Path,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<Vec<Id>> {
        let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
        if size <= self.repo.config.chunker.max as u64 {
            let mut data = Vec::with_capacity(size as usize);
            f.read_to_end(&mut data).map_err(Error::io(path))?;
            on_bytes(data.len() as u64);
            if data.is_empty() {
                return Ok(Vec::new());
            }
            return self.save_bytes(&data, BlobKind::Data);
        }
        self.save_stream(f, on_bytes, 0).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })
    }
}

/// A backup in progress: a shared lock, the index as it was, and the uploader.
pub struct Writer {
    pub(crate) repo: Repo,
    lock: Lock,
    saver: Arc<Saver>,
    uploader: JoinHandle<Result<()>>,
}

impl Writer {
    pub async fn start(repo: &Repo, purpose: &str) -> Result<Writer> {
        let lock = Lock::acquire(&repo.storage, false, purpose, Duration::from_secs(600)).await?;
        let index = Arc::new(repo.load_index().await?);
        let (tx, rx) = mpsc::channel::<FinishedPack>(1);
        let saver = Arc::new(Saver {
            repo: repo.clone(),
            index,
            pending: Mutex::new(HashSet::new()),
            pack: Mutex::new(PackBuilder::with_capacity(repo.config.pack_size as usize)),
            tx,
            counters: Counters::default(),
        });
        let uploader = tokio::spawn(upload(repo.clone(), rx));
        Ok(Writer {
            repo: repo.clone(),
            lock,
            saver,
            uploader,
        })
    }

    pub fn saver(&self) -> Arc<Saver> {
        self.saver.clone()
    }

    pub fn index(&self) -> &Index {
        &self.saver.index
    }

    /// Stores the nodes as tree blobs, then finishes with the snapshot.
    pub async fn commit(self, mut snapshot: Snapshot, nodes: Vec<Node>) -> Result<(Id, Snapshot)> {
        let saver = self.saver.clone();
        let tree = tokio::task::spawn_blocking(move || {
            saver.save_bytes(&encode_nodes(&nodes), BlobKind::Tree)
        })
        .await
        .expect("tree task");
        match tree {
            Ok(t) => snapshot.tree = t,
            Err(e) => return Err(self.abandon().await.unwrap_or(e)),
        }
        let counters = &self.saver.counters;
        snapshot.summary.new_blobs = counters.new_blobs.load(Ordering::Relaxed);
        snapshot.summary.new_stored_bytes = counters.new_stored_bytes.load(Ordering::Relaxed);
        self.finish(snapshot).await
    }

    /// Waits for every pack and index file, then writes the snapshot (whose tree blobs must be
    /// stored by now) and releases the lock.
    pub async fn finish(self, snapshot: Snapshot) -> Result<(Id, Snapshot)> {
        let saver = self.saver.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || saver.flush())
            .await
            .expect("flush task")
        {
            return Err(self.abandon().await.unwrap_or(e));
        }
        let Writer {
            repo,
            lock,
            saver,
            uploader,
        } = self;
        drop(saver);
        uploader.await.expect("uploader task")?;
        let id = repo.save_json("snapshots", &snapshot).await?;
        lock.release().await?;
        Ok((id, snapshot))
    }

    /// Gives up: uploads what is already packed and indexes it, so a later backup reuses it.
    /// Returns the uploader's error, which is the cause when the pipeline stopped on it.
    pub async fn abandon(self) -> Option<Error> {
        let Writer {
            lock,
            saver,
            uploader,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || saver.flush()).await;
        let failed = uploader.await.expect("uploader task").err();
        let _ = lock.release().await;
        failed
    }
}

/// Uploads packs as they come, a few at a time, and writes an index file every few packs.
async fn upload(repo: Repo, rx: mpsc::Receiver<FinishedPack>) -> Result<()> {
    let packs =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let mut uploads = std::pin::pin!(packs
        .map(|p| {
            let repo = repo.clone();
            async move {
                repo.storage.put(&pack_key(&p.id), p.bytes).await?;
                Ok::<_, Error>(PackEntry {
                    id: p.id,
                    blobs: p.blobs,
                })
            }
        })
        .buffer_unordered(PACKS_IN_FLIGHT));
    let mut done: Vec<PackEntry> = Vec::new();
    let mut failed = None;
    while let Some(r) = uploads.next().await {
        match r {
            Ok(entry) => done.push(entry),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if done.len() >= PACKS_PER_INDEX {
            repo.save_index(std::mem::take(&mut done)).await?;
        }
    }
    if !done.is_empty() {
        repo.save_index(done).await?;
    }
    failed.map_or(Ok(()), Err)
}
