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
    /// The inode's change time, nanoseconds since the epoch (0 in older snapshots: their
    /// files are read again once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ctime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    /// `path` and `target` are escaped (see [`escape`]): a name on the way, or the link's
    /// target, is not UTF-8. Absent for the rest, so their records read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escaped: bool,
}

/// A name as stored when it is not all UTF-8: valid text as is, `\` doubled, every byte that
/// is not part of valid UTF-8 as `\xNN`. [`unescape`] gives the exact bytes back.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// The bytes [`escape`] was given.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x') {
                if let Some(v) = s
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

impl Node {
    /// Where this node goes under `to`, with its exact bytes.
    pub fn path_under(&self, to: &std::path::Path) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStringExt;
        if self.path.is_empty() {
            return to.to_path_buf();
        }
        if self.escaped {
            to.join(std::ffi::OsString::from_vec(unescape(&self.path)))
        } else {
            to.join(&self.path)
        }
    }

    /// A symlink's target, with its exact bytes.
    pub fn link_target(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStringExt;
        let t = self.target.as_deref().unwrap_or_default();
        if self.escaped {
            std::ffi::OsString::from_vec(unescape(t)).into()
        } else {
            t.into()
        }
    }
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

fn is_zero(v: &i64) -> bool {
    *v == 0
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

#[cfg(test)]
mod escape_tests {
    use super::{escape, unescape};

    #[test]
    fn escaping_gives_back_every_byte_string() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain",
            b"caf\xe9",
            b"\xff\xfe\\x41\\\\",
            b"a\\xZZ",
            "h\u{e9}llo \u{1F600}".as_bytes(),
            b"\xe2\x82",
            b"tail\\",
        ];
        for c in cases {
            assert_eq!(unescape(&escape(c)), *c, "{:?} -> {:?}", c, escape(c));
        }
        assert_eq!(escape(b"caf\xe9/x"), "caf\\xE9/x");
        // Every byte value, and pairs of them.
        for a in 0..=255u8 {
            for b in [0u8, b'\\', b'x', 0x80, 0xff] {
                let v = [a, b, b'4', b'1'];
                assert_eq!(unescape(&escape(&v)), v);
            }
        }
    }
}
