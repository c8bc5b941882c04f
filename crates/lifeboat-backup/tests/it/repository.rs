use crate::helpers::*;
use anyhow::Result;
use lifeboat_backup::check::verify;
use lifeboat_backup::lock::Lock;
use lifeboat_backup::pack::pack_key;
use lifeboat_backup::progress::Progress;
use lifeboat_backup::prune::prune;
use lifeboat_backup::restorer::{load_nodes, restore, RestoreOptions};
use lifeboat_backup::{Error, Repo, Storage};
use lifeboat_config::Retention;
use std::time::Duration;

#[tokio::test]
async fn a_directory_comes_back_with_content_modes_times_and_links() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    make_tree(&src, 1)?;
    let repo = new_repo(tmp.path()).await?;
    let (_, snap) = backup(&repo, &src, "full").await?;
    assert_eq!(snap.summary.files, 55);

    let out = tmp.path().join("out");
    let s = restore(&repo, &snap, &out, Default::default(), &Progress::hidden()).await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(describe(&out)?, describe(&src)?);

    // One path only.
    let part = tmp.path().join("part");
    restore(
        &repo,
        &snap,
        &part,
        RestoreOptions {
            only: Some("a/b/c"),
            delta: false,
        },
        &Progress::hidden(),
    )
    .await?;
    let names: Vec<String> = describe(&part)?.into_keys().collect();
    assert_eq!(
        names,
        ["", "a", "a/b", "a/b/c", "a/b/c/copy.log", "a/b/c/text.log"]
    );
    let e = restore(
        &repo,
        &snap,
        &part,
        RestoreOptions {
            only: Some("nope"),
            delta: false,
        },
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "no path \"nope\" in the snapshot");
    Ok(())
}

#[tokio::test]
async fn a_second_backup_reads_only_changed_files_and_stores_only_new_chunks() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    make_tree(&src, 2)?;
    let repo = new_repo(tmp.path()).await?;
    // Files modified within a second of a backup's start are read again by the next one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (first_id, first) = backup(&repo, &src, "full").await?;
    assert!(first.summary.new_blobs > 0);

    std::fs::write(src.join("a/f03"), b"changed")?;
    std::fs::copy(src.join("a/b/big.bin"), src.join("big-copy.bin"))?;
    let (_, second) = backup(&repo, &src, "incremental").await?;
    assert_eq!(second.parent, Some(first_id));
    assert_eq!(
        second.summary.files_read, 2,
        "only the changed and the new file are read"
    );
    // The copy dedups completely; the change is one small blob, plus tree blobs.
    assert!(
        second.summary.new_stored_bytes < 200_000,
        "{:?}",
        second.summary
    );

    let out = tmp.path().join("out");
    restore(
        &repo,
        &second,
        &out,
        Default::default(),
        &Progress::hidden(),
    )
    .await?;
    assert_eq!(describe(&out)?, describe(&src)?);
    Ok(())
}

#[tokio::test]
async fn a_wrong_passphrase_is_refused_and_writes_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = new_repo(tmp.path()).await?;
    let before = repo.storage.list("").await?.len();
    let storage = Storage::open(repo.location(), false)?;
    let e = Repo::open(storage, b"not it").await.err().expect("refused");
    assert!(matches!(e, Error::WrongPassword { .. }));
    assert_eq!(e.exit_code(), 2);
    assert_eq!(repo.storage.list("").await?.len(), before);

    let missing = Storage::open(&tmp.path().join("nothing").display().to_string(), false);
    assert!(missing.is_err(), "a missing directory is not a repository");
    Ok(())
}

#[tokio::test]
async fn damage_is_named_by_verify_and_fails_only_the_files_it_touches() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("large.bin"), random_bytes(7, 6 * 1024 * 1024))?;
    std::fs::write(src.join("small.txt"), b"stays intact")?;
    let repo = new_repo(tmp.path()).await?;
    let (id, snap) = backup(&repo, &src, "full").await?;
    assert!(verify(&repo, true, 100.0, &Progress::hidden()).await?.ok());

    // Damage one pack that holds part of large.bin but not small.txt.
    let index = repo.load_index().await?;
    let nodes = load_nodes(&repo, &index, &snap).await?;
    let chunks_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.path == name)
            .unwrap()
            .chunks
            .clone()
    };
    let small_pack = index.get(&chunks_of("small.txt")[0]).unwrap().0;
    let victim = chunks_of("large.bin")
        .iter()
        .map(|c| index.get(c).unwrap().0)
        .find(|p| *p != small_pack)
        .expect("large.bin spans several packs");
    let path = tmp.path().join("repo").join(pack_key(&victim));
    let mut bytes = std::fs::read(&path)?;
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes)?;

    let structure = verify(&repo, false, 100.0, &Progress::hidden()).await?;
    assert!(
        structure.ok(),
        "a flipped byte is invisible to the structure check"
    );
    let r = verify(&repo, true, 100.0, &Progress::hidden()).await?;
    assert!(!r.ok());
    assert_eq!(
        r.damaged.get(&id.hex()),
        Some(&vec!["large.bin".to_string()])
    );

    let out = tmp.path().join("out");
    let s = restore(&repo, &snap, &out, Default::default(), &Progress::hidden()).await?;
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].0, "large.bin");
    assert!(
        s.failed[0].1.contains("authentication failed"),
        "{}",
        s.failed[0].1
    );
    assert!(
        !out.join("large.bin").exists(),
        "a damaged file is not left half-written"
    );
    assert_eq!(std::fs::read(out.join("small.txt"))?, b"stays intact");

    // A missing pack: the structure check already sees it.
    std::fs::remove_file(&path)?;
    let r = verify(&repo, false, 100.0, &Progress::hidden()).await?;
    assert!(
        r.errors.iter().any(|e| e.contains("is missing")),
        "{:?}",
        r.errors
    );
    assert_eq!(
        r.damaged.get(&id.hex()),
        Some(&vec!["large.bin".to_string()])
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_backups_and_a_prune_lose_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    make_tree(&a, 10)?;
    make_tree(&b, 20)?;
    let repo = new_repo(tmp.path()).await?;
    let (ra, rb) = tokio::join!(backup(&repo, &a, "t"), backup(&repo, &b, "t"));
    let (ra, rb) = (ra?, rb?);

    // A prune that keeps only the newest snapshot of the group, while another backup runs.
    let a_before = describe(&a)?;
    std::fs::write(a.join("new-file"), random_bytes(99, 500_000))?;
    let keep_last = Retention {
        last: 2,
        ..Default::default()
    };
    let policy = move |_: &str, _: &str| Some(keep_last);
    let (third, pruned) = tokio::join!(backup(&repo, &a, "t"), prune(&repo, &policy, false));
    let (third, pruned) = (third?, pruned?);
    assert!(verify(&repo, true, 100.0, &Progress::hidden()).await?.ok());

    let snaps: Vec<_> = repo
        .snapshots()
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        snaps.contains(&third.0),
        "the concurrent backup's snapshot survives"
    );
    assert_eq!(snaps.len(), 3 - pruned.forgotten.len());
    for (id, snap) in repo.snapshots().await? {
        let out = tmp.path().join(format!("out-{}", id.short()));
        restore(&repo, &snap, &out, Default::default(), &Progress::hidden()).await?;
        let expected = if id == rb.0 {
            describe(&b)?
        } else if id == ra.0 {
            a_before.clone()
        } else {
            describe(&a)?
        };
        assert_eq!(describe(&out)?, expected, "snapshot {}", id.short());
    }
    Ok(())
}

#[tokio::test]
async fn prune_forgets_by_policy_and_reclaims_space() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    let repo = new_repo(tmp.path()).await?;
    for i in 0..3 {
        std::fs::write(src.join("data.bin"), random_bytes(i, 2 * 1024 * 1024))?;
        backup(&repo, &src, "t").await?;
    }
    let size = |repo: &Repo| {
        let r = repo.clone();
        async move {
            r.storage
                .list("data/")
                .await
                .map(|l| l.iter().map(|x| x.size).sum::<u64>())
        }
    };
    let before = size(&repo).await?;
    let keep = Retention {
        last: 1,
        ..Default::default()
    };
    let dry = prune(&repo, &|_, _| Some(keep), true).await?;
    assert_eq!(dry.forgotten.len(), 2);
    assert_eq!(
        repo.snapshots().await?.len(),
        3,
        "a dry run changes nothing"
    );
    assert_eq!(size(&repo).await?, before);

    let done = prune(&repo, &|_, _| Some(keep), false).await?;
    assert_eq!(done.forgotten.len(), 2);
    let after = size(&repo).await?;
    assert!(after < before / 2, "{after} of {before} bytes left");
    let (_, snap) = repo.find_snapshot("latest").await?;
    let out = tmp.path().join("out");
    restore(&repo, &snap, &out, Default::default(), &Progress::hidden()).await?;
    assert_eq!(
        std::fs::read(out.join("data.bin"))?,
        random_bytes(2, 2 * 1024 * 1024)
    );
    assert!(verify(&repo, true, 100.0, &Progress::hidden()).await?.ok());

    let nothing = Retention::default();
    let e = prune(&repo, &|_, _| Some(nothing), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("keeps nothing"), "{e}");
    Ok(())
}

#[tokio::test]
async fn a_lock_whose_holder_is_gone_expires_and_a_live_one_holds() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = new_repo(tmp.path()).await?;
    // An exclusive lock left by a process of this host that no longer exists.
    let mut dead = std::process::Command::new("true").spawn()?;
    let pid = dead.id();
    dead.wait()?;
    let host = nix::unistd::gethostname()?.into_string().unwrap();
    let stale = format!(
        r#"{{"host":"{host}","pid":{pid},"exclusive":true,"purpose":"prune","created":1,"refreshed":1}}"#
    );
    repo.storage
        .put("locks/left-behind", stale.into_bytes())
        .await?;
    let lock = Lock::acquire(&repo.storage, false, "test", Duration::from_secs(5)).await?;
    assert!(
        repo.storage.get("locks/left-behind").await?.is_none(),
        "the expired lock is removed"
    );

    // While this shared lock is live, an exclusive one cannot be taken.
    let e = Lock::acquire(&repo.storage, true, "prune", Duration::from_millis(300))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .starts_with("repository is locked by test (pid "),
        "{e}"
    );
    lock.release().await?;
    Lock::acquire(&repo.storage, true, "prune", Duration::from_secs(5))
        .await?
        .release()
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_copy_to_a_second_repository_sends_only_what_it_lacks() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    make_tree(&src, 5)?;
    let first = new_repo(tmp.path()).await?;
    backup(&first, &src, "daily").await?;
    let second_dir = tmp.path().join("second").display().to_string();
    let second = Repo::init_like(Storage::open(&second_dir, true)?, b"other pw", &first).await?;

    let all = |_: &lifeboat_backup::snapshot::Snapshot| true;
    let one = lifeboat_backup::copy::copy(&first, &second, &all, Some("archive")).await?;
    assert_eq!(one.copied.len(), 1);
    assert!(one.blobs_sent > 0);

    // A second backup changes one file: the next copy sends a few blobs, not everything again.
    std::fs::write(src.join("a/f07"), b"new content")?;
    backup(&first, &src, "daily").await?;
    let two = lifeboat_backup::copy::copy(&first, &second, &all, Some("archive")).await?;
    assert_eq!((two.copied.len(), two.already_there), (1, 1));
    assert!(two.blobs_sent <= 3, "{} blobs sent", two.blobs_sent);

    let reopened = Repo::open(Storage::open(&second_dir, false)?, b"other pw").await?;
    let (_, snap) = reopened.find_snapshot("latest").await?;
    assert_eq!(snap.tier, "archive");
    let out = tmp.path().join("out");
    restore(
        &reopened,
        &snap,
        &out,
        Default::default(),
        &Progress::hidden(),
    )
    .await?;
    assert_eq!(describe(&out)?, describe(&src)?);
    assert!(verify(&reopened, true, 100.0, &Progress::hidden())
        .await?
        .ok());

    // Repositories with their own keys cannot share blobs.
    let third_dir = tmp.path().join("third").display().to_string();
    let third = Repo::init(Storage::open(&third_dir, true)?, b"pw").await?;
    let e = lifeboat_backup::copy::copy(&first, &third, &all, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("do not share keys"), "{e}");
    Ok(())
}

/// Names that are not UTF-8 (a file, a directory and what is under it, a link's target) and
/// names holding what the escaping uses (`\`, `\x41`) come back byte for byte.
#[tokio::test]
async fn names_that_are_not_utf8_come_back_byte_for_byte() -> Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(src.join(latin1), b"latin-1 name")?;
    let dir = src.join(OsStr::from_bytes(b"dir-\xff"));
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("inner\\x41.txt"), b"under a non-UTF-8 directory")?;
    std::fs::write(src.join("back\\slash"), b"valid, with a backslash")?;
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target-\xfe"), src.join("link"))?;
    let repo = new_repo(tmp.path()).await?;
    let (_, snap) = backup(&repo, &src, "full").await?;

    let out = tmp.path().join("out");
    let s = restore(&repo, &snap, &out, Default::default(), &Progress::hidden()).await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(std::fs::read(out.join(latin1))?, b"latin-1 name");
    let inner = out
        .join(OsStr::from_bytes(b"dir-\xff"))
        .join("inner\\x41.txt");
    assert_eq!(std::fs::read(inner)?, b"under a non-UTF-8 directory");
    assert_eq!(
        std::fs::read(out.join("back\\slash"))?,
        b"valid, with a backslash"
    );
    assert_eq!(
        std::fs::read_link(out.join("link"))?
            .into_os_string()
            .into_vec(),
        b"target-\xfe"
    );
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(&out)?
        .map(|e| e.map(|e| e.file_name().into_vec()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut want: Vec<Vec<u8>> = std::fs::read_dir(&src)?
        .map(|e| e.map(|e| e.file_name().into_vec()))
        .collect::<Result<_, _>>()?;
    want.sort();
    assert_eq!(names, want);
    Ok(())
}

#[tokio::test]
async fn a_backup_after_a_lost_pack_stores_its_content_again_instead_of_referring_to_it(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    make_tree(&src, 4)?;
    let repo = new_repo(tmp.path()).await?;
    std::thread::sleep(Duration::from_millis(1100));
    let (first_id, first) = backup(&repo, &src, "full").await?;
    // A pack of the parent is lost (the index still lists it).
    let data = tmp.path().join("repo/data");
    let pack = std::fs::read_dir(&data)?
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&pack)?;
    // Nothing changed, yet the files whose content was in that pack are read again: the
    // incremental is whole.
    let (_, second) = backup(&repo, &src, "incremental").await?;
    assert_eq!(second.parent, Some(first_id));
    assert!(
        second.summary.files_read > 0 && second.summary.files_read < first.summary.files,
        "{:?}",
        second.summary
    );
    let out = tmp.path().join("out");
    let s = restore(
        &repo,
        &second,
        &out,
        Default::default(),
        &Progress::hidden(),
    )
    .await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(describe(&out)?, describe(&src)?);
    // What the lost pack held is stored again, so the parent restores whole too.
    let old = tmp.path().join("old");
    let s = restore(&repo, &first, &old, Default::default(), &Progress::hidden()).await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(describe(&old)?, describe(&src)?);
    Ok(())
}
