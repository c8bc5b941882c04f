use anyhow::Result;
use lifeboat_backup::archiver::{backup_paths, BackupOptions};
use lifeboat_backup::crypto::Id;
use lifeboat_backup::progress::Progress;
use lifeboat_backup::snapshot::Snapshot;
use lifeboat_backup::{Repo, Storage};
pub use lifeboat_testkit::tree::{describe, make_tree, random_bytes};
use std::path::Path;

pub async fn new_repo(dir: &Path) -> Result<Repo> {
    let mut repo = Repo::init(
        Storage::open(&dir.join("repo").display().to_string(), true)?,
        b"pw",
    )
    .await?;
    // Small packs, so a few MiB of test data spread over several packs.
    repo.config.pack_size = 1024 * 1024;
    Ok(repo)
}

pub async fn backup(repo: &Repo, root: &Path, tier: &str) -> Result<(Id, Snapshot)> {
    let opts = BackupOptions {
        source: "test".into(),
        tier: tier.into(),
        tags: vec![],
        group: None,
        kind: Default::default(),
    };
    Ok(backup_paths(repo, &[root.to_path_buf()], opts, &Progress::hidden()).await?)
}
