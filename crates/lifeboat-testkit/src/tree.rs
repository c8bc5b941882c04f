//! Directory trees for backup tests: a reproducible tree with every kind of entry, and a
//! description of a tree (content hashes, modes, times, link targets) to compare restores by.

use anyhow::Result;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A tree with nested directories, empty, small, large and duplicate files, a symlink, and
/// unusual modes and times.
pub fn make_tree(root: &Path, seed: u64) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(root.join("a/b/c"))?;
    std::fs::create_dir_all(root.join("empty-dir"))?;
    std::fs::write(root.join("empty"), b"")?;
    std::fs::write(root.join("a/small.txt"), b"hello, lifeboat\n")?;
    std::fs::write(
        root.join("a/b/big.bin"),
        random_bytes(seed, 3 * 1024 * 1024 + 17),
    )?;
    let text: Vec<u8> = (0..200_000)
        .flat_map(|i: u32| format!("line {i}\n").into_bytes())
        .collect();
    std::fs::write(root.join("a/b/c/text.log"), &text)?;
    std::fs::write(root.join("a/b/c/copy.log"), &text)?;
    for i in 0..50 {
        let len = rng.gen_range(0..20_000);
        std::fs::write(root.join(format!("a/f{i:02}")), random_bytes(seed + i, len))?;
    }
    std::os::unix::fs::symlink("b/big.bin", root.join("a/link"))?;
    std::fs::set_permissions(
        root.join("a/small.txt"),
        std::fs::Permissions::from_mode(0o640),
    )?;
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o750))?;
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("a/b/big.bin"), t)?;
    Ok(())
}

/// Everything a restore must reproduce, by relative path.
pub fn describe(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    describe_into(root, root, &mut out)?;
    Ok(out)
}

fn describe_into(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let md = std::fs::symlink_metadata(p)?;
    let rel = p.strip_prefix(root)?.display().to_string();
    let desc = if md.is_symlink() {
        format!("link -> {}", std::fs::read_link(p)?.display())
    } else if md.is_dir() {
        format!("dir {:o} mtime {}", md.mode() & 0o7777, md.mtime())
    } else {
        let content = std::fs::read(p)?;
        format!(
            "file {:o} mtime {}.{:09} size {} hash {}",
            md.mode() & 0o7777,
            md.mtime(),
            md.mtime_nsec(),
            content.len(),
            blake3::hash(&content).to_hex()
        )
    };
    out.insert(rel, desc);
    if md.is_dir() {
        for e in std::fs::read_dir(p)? {
            describe_into(root, &e?.path(), out)?;
        }
    }
    Ok(())
}
