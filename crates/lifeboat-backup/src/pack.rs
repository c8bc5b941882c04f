//! Packs and the index. A pack is `blob... || sealed header || header length (u32 LE)`; the
//! header lists each blob's id, kind, offset, stored and raw length, so the index can always be
//! rebuilt from the packs. Index files (`index/<id>`) hold the same entries for many packs and
//! are written after the packs they describe.

use crate::crypto::{Id, MasterKey};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Data,
    Tree,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackedBlob {
    pub id: Id,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: Id,
    pub blobs: Vec<PackedBlob>,
}

#[derive(Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<PackEntry>,
}

pub fn pack_key(id: &Id) -> String {
    let h = id.hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Collects sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

pub struct FinishedPack {
    pub id: Id,
    pub bytes: Vec<u8>,
    pub blobs: Vec<PackedBlob>,
}

impl PackBuilder {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// A builder whose buffer holds a pack of about `size` without growing.
    pub fn with_capacity(size: usize) -> PackBuilder {
        PackBuilder {
            buf: Vec::with_capacity(size + 1024 * 1024),
            blobs: Vec::new(),
        }
    }

    pub fn add(&mut self, id: Id, kind: BlobKind, sealed: &[u8], raw_length: usize) {
        self.blobs.push(PackedBlob {
            id,
            kind,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length: raw_length as u32,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn finish(self, key: &MasterKey) -> FinishedPack {
        let PackBuilder { mut buf, blobs } = self;
        let header = key.seal(&serde_json::to_vec(&blobs).expect("header serializes"), 3);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        FinishedPack {
            id: Id::of_stored(&buf),
            bytes: buf,
            blobs,
        }
    }
}

/// Reads the header at the end of a whole pack.
pub fn read_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackedBlob>> {
    let n = pack.len();
    if n < 4 {
        return Err(Error::corrupt("pack shorter than its header length"));
    }
    let hlen = u32::from_le_bytes(pack[n - 4..].try_into().expect("4 bytes")) as usize;
    if hlen + 4 > n {
        return Err(Error::corrupt("pack header length out of range"));
    }
    let plain = key.open_unbounded(&pack[n - 4 - hlen..n - 4])?;
    serde_json::from_slice(&plain).map_err(|e| Error::corrupt(format!("pack header: {e}")))
}

#[derive(Clone, Copy, Debug)]
pub struct BlobLoc {
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// Every blob the index files know, by id. About 100 bytes per blob: a 2 GiB repository of
/// 1 MiB chunks and 60k small files needs a few MiB.
#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLoc>,
}

impl Index {
    pub fn add_pack(&mut self, pack: &PackEntry) {
        let pos = *self.pack_pos.entry(pack.id).or_insert_with(|| {
            self.packs.push(pack.id);
            (self.packs.len() - 1) as u32
        });
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLoc {
                pack: pos,
                kind: b.kind,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            });
        }
    }

    pub fn get(&self, id: &Id) -> Option<(Id, BlobLoc)> {
        self.blobs
            .get(id)
            .map(|l| (self.packs[l.pack as usize], *l))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn pack_ids(&self) -> &[Id] {
        &self.packs
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Blobs grouped by pack, as index entries.
    pub fn entries(&self) -> Vec<PackEntry> {
        let mut packs: Vec<PackEntry> = self
            .packs
            .iter()
            .map(|id| PackEntry {
                id: *id,
                blobs: Vec::new(),
            })
            .collect();
        for (id, l) in &self.blobs {
            packs[l.pack as usize].blobs.push(PackedBlob {
                id: *id,
                kind: l.kind,
                offset: l.offset,
                length: l.length,
                raw_length: l.raw_length,
            });
        }
        for p in &mut packs {
            p.blobs.sort_by_key(|b| b.offset);
        }
        packs
    }
}
