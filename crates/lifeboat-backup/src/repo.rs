//! A repository: its plain `config`, its keys, and typed access to index files, packs,
//! snapshots and locks. See docs/backup-format.md for the layout.

use crate::crypto::{Id, KeyFile, MasterKey};
use crate::error::{Error, Result};
use crate::pack::{pack_key, BlobLoc, Index, IndexFile, PackEntry};
use crate::snapshot::Snapshot;
use crate::storage::Storage;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
/// How many small objects (index files, snapshots, WAL) are read or written at once.
pub const PARALLEL_IO: usize = 8;
/// How many packs (up to `pack_size` each) a reader or writer holds in memory at once; this
/// bounds peak memory more than anything else.
pub const PACKS_IN_FLIGHT: usize = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub version: u32,
    pub id: String,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
    pub cipher: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            version: FORMAT_VERSION,
            id: hex::encode(rand::random::<[u8; 16]>()),
            chunker: ChunkerParams {
                min: 256 * 1024,
                avg: 1024 * 1024,
                max: 4 * 1024 * 1024,
            },
            pack_size: 4 * 1024 * 1024,
            zstd_level: 1,
            cipher: "aes-256-gcm".into(),
        }
    }
}

/// The passphrase from `file` (any bytes: a key file works), else from the variable `env`.
pub fn passphrase_from(file: Option<&Path>, env: &str, repo: &str) -> Result<Vec<u8>> {
    if let Some(f) = file {
        let mut bytes = std::fs::read(f).map_err(Error::io(f))?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(Error::Invalid(format!(
                "password file {} is empty",
                f.display()
            )));
        }
        return Ok(bytes);
    }
    match std::env::var(env) {
        Ok(p) if !p.is_empty() => Ok(p.into_bytes()),
        _ => Err(Error::NoPassword {
            repo: repo.into(),
            var: env.into(),
        }),
    }
}

pub fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time formats")
}

#[derive(Clone)]
pub struct Repo {
    pub storage: Storage,
    pub key: MasterKey,
    pub config: RepoConfig,
}

impl Repo {
    pub async fn init(storage: Storage, pass: &[u8]) -> Result<Repo> {
        Repo::init_with(storage, pass, MasterKey::random(), RepoConfig::default()).await
    }

    /// A repository sharing `other`'s keys and chunker, so snapshots copy between them by
    /// sending only missing blobs.
    pub async fn init_like(storage: Storage, pass: &[u8], other: &Repo) -> Result<Repo> {
        let config = RepoConfig {
            id: RepoConfig::default().id,
            ..other.config.clone()
        };
        Repo::init_with(storage, pass, other.key.clone(), config).await
    }

    async fn init_with(
        storage: Storage,
        pass: &[u8],
        key: MasterKey,
        config: RepoConfig,
    ) -> Result<Repo> {
        if storage.get("config").await?.is_some() {
            return Err(Error::AlreadyExists {
                repo: storage.location.clone(),
            });
        }
        let kf = KeyFile::wrap(&key, pass, now_rfc3339(), host());
        let kbytes = serde_json::to_vec_pretty(&kf).expect("key serializes");
        storage
            .put(&format!("keys/{}", Id::of_stored(&kbytes).hex()), kbytes)
            .await?;
        // The config is written last: a repository exists once it has one.
        let cbytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        storage.put("config", cbytes).await?;
        Ok(Repo {
            storage,
            key,
            config,
        })
    }

    pub async fn open(storage: Storage, pass: &[u8]) -> Result<Repo> {
        let repo = storage.location.clone();
        let Some(cbytes) = storage.get("config").await? else {
            return Err(Error::NoRepository { repo });
        };
        let config: RepoConfig = serde_json::from_slice(&cbytes)
            .map_err(|e| Error::corrupt(format!("{repo}/config: {e}")))?;
        if config.version != FORMAT_VERSION {
            return Err(Error::Invalid(format!(
                "repository {repo} has format version {}, this lifeboat reads {FORMAT_VERSION}",
                config.version
            )));
        }
        for k in storage.list("keys/").await? {
            let bytes = storage.get_required(&k.key).await?;
            let kf: KeyFile = serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(format!("{}: {e}", k.key)))?;
            let pass = pass.to_vec();
            let opened = tokio::task::spawn_blocking(move || kf.unwrap(&pass))
                .await
                .expect("argon2 task");
            if let Some(key) = opened {
                return Ok(Repo {
                    storage,
                    key,
                    config,
                });
            }
        }
        Err(Error::WrongPassword { repo })
    }

    pub fn location(&self) -> &str {
        &self.storage.location
    }

    /// Seals and stores a JSON document under `dir/<id>`, the id being the hash of the bytes.
    pub async fn save_json<T: Serialize>(&self, dir: &str, value: &T) -> Result<Id> {
        let plain = serde_json::to_vec(value).expect("serializes");
        let sealed = self.key.seal(&plain, 3);
        let id = Id::of_stored(&sealed);
        self.storage
            .put(&format!("{dir}/{}", id.hex()), sealed)
            .await?;
        Ok(id)
    }

    pub async fn load_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<T> {
        let sealed = self.storage.get_required(key).await?;
        let plain = self
            .key
            .open_unbounded(&sealed)
            .map_err(|e| Error::corrupt(format!("{key}: {e}")))?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(format!("{key}: {e}")))
    }

    pub async fn index_keys(&self) -> Result<Vec<String>> {
        Ok(self
            .storage
            .list("index/")
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect())
    }

    /// Reads every index file, leaving out packs that are no longer stored (a deleted file, a
    /// bucket rule): a blob is found in a pack that holds it, and a backup stores again what
    /// only a lost pack held, instead of referring to it. `lifeboat backup verify` reports the
    /// snapshots the loss damaged.
    pub async fn load_index(&self) -> Result<Index> {
        let keys = self.index_keys().await?;
        let files: Vec<IndexFile> = futures::stream::iter(keys)
            .map(|k| async move { self.load_json::<IndexFile>(&k).await })
            .buffer_unordered(PARALLEL_IO)
            .try_collect()
            .await?;
        let stored: std::collections::HashSet<String> = self
            .storage
            .list("data/")
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect();
        let mut index = Index::default();
        let mut lost = std::collections::HashSet::new();
        for f in &files {
            for p in &f.packs {
                if stored.contains(&pack_key(&p.id)) {
                    index.add_pack(p);
                } else {
                    lost.insert(p.id);
                }
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                repository = self.location(),
                packs = lost.len(),
                "packs listed in the index are missing: what only they held is stored again by the next backup; `lifeboat backup verify` shows the damaged snapshots"
            );
        }
        Ok(index)
    }

    pub async fn save_index(&self, packs: Vec<PackEntry>) -> Result<Id> {
        self.save_json("index", &IndexFile { packs }).await
    }

    /// Reads and opens one blob.
    pub async fn read_blob(&self, pack: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        let start = loc.offset as usize;
        let sealed = self
            .storage
            .get_range(&pack_key(pack), start..start + loc.length as usize)
            .await?;
        self.key.open(&sealed, loc.raw_length as usize)
    }

    pub async fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let listed = self.storage.list("snapshots/").await?;
        Ok(listed
            .iter()
            .filter_map(|l| l.key.rsplit('/').next().and_then(Id::parse))
            .collect())
    }

    /// All snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let ids = self.snapshot_ids().await?;
        let mut all: Vec<(Id, Snapshot)> = futures::stream::iter(ids)
            .map(|id| async move {
                let s: Snapshot = self.load_json(&format!("snapshots/{}", id.hex())).await?;
                Ok::<_, Error>((id, s))
            })
            .buffer_unordered(PARALLEL_IO)
            .try_collect()
            .await?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// A snapshot by id prefix, or `latest`.
    pub async fn find_snapshot(&self, which: &str) -> Result<(Id, Snapshot)> {
        let all = self.snapshots().await?;
        let found: Vec<_> = if which == "latest" {
            all.into_iter().last().into_iter().collect()
        } else {
            all.into_iter()
                .filter(|(id, _)| id.hex().starts_with(which))
                .collect()
        };
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(Error::UnknownSnapshot(which.into())),
            _ => Err(Error::Invalid(format!(
                "snapshot prefix {which:?} is ambiguous"
            ))),
        }
    }
}
