//! Snapshots and the nodes (files, directories, symlinks) they hold. A snapshot's nodes are one
//! stream of JSON lines, cut by the same keyed chunker as file data and stored as tree blobs, so
//! an unchanged part of a tree is stored once across snapshots.

use crate::crypto::Id;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub host: String,
    /// The source's name (from the config, or `dir` / `postgres` for ad-hoc backups).
    pub source: String,
    pub kind: SourceKind,
    pub tier: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Label shared by the snapshots of one consistent group backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Absolute paths backed up. With one root, node paths are relative to it; with several,
    /// each node path starts with its root's final component.
    pub roots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub tree: Vec<Id>,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgInfo>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Directory,
    Postgres,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files read (not reused unchanged from the parent snapshot).
    pub files_read: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// New blobs written, and their stored (compressed, encrypted) size.
    pub new_blobs: u64,
    pub new_stored_bytes: u64,
    pub duration_s: f64,
}

/// What a PostgreSQL base backup needs to be restored to a point in time.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgInfo {
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    /// First WAL segment the backup needs.
    pub start_wal: String,
    pub wal_segment_size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub path: String,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
}

impl Node {
    /// True when `path` names this node or a directory above it.
    pub fn is_under(&self, path: &str) -> bool {
        let p = path.trim_matches('/');
        p.is_empty()
            || self.path == p
            || (self.path.starts_with(p) && self.path.as_bytes().get(p.len()) == Some(&b'/'))
    }
}

pub fn encode_nodes(nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * 160);
    for n in nodes {
        serde_json::to_writer(&mut out, n).expect("node serializes");
        out.push(b'\n');
    }
    out
}

pub fn decode_nodes(bytes: &[u8]) -> Result<Vec<Node>, serde_json::Error> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect()
}

pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("time formats")
}

/// `2026-11-22 10:42:03` (UTC), for tables.
pub fn short_time(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).expect("time formats")
}
