use crate::helpers::new_repo;
use anyhow::Result;
use lifeboat_backup::archiver::BackupOptions;
use lifeboat_backup::postgres::{base_backup, restore_pitr, Pick, Target};
use lifeboat_backup::progress::Progress;
use lifeboat_backup::walstream::{WalStatus, WalStreamer};
use lifeboat_postgres::InitOptions;
use lifeboat_testkit::{PgCluster, TestDir};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

fn full_options() -> BackupOptions {
    BackupOptions {
        source: "db".into(),
        tier: "full".into(),
        tags: vec![],
        group: None,
        kind: Default::default(),
    }
}

/// A WAL streamer from `conninfo` into `repo`, uploading every 200 ms, and its status.
fn streamer(
    repo: &lifeboat_backup::repo::Repo,
    conninfo: &str,
    dir: &TestDir,
) -> (WalStreamer, Arc<WalStatus>) {
    let status = Arc::new(WalStatus::default());
    let s = WalStreamer {
        repo: repo.clone(),
        server: lifeboat_backup::walstream::fixed(conninfo.to_owned()),
        spool: dir.path().join("spool"),
        upload_every: Duration::from_millis(200),
        status: status.clone(),
        system: Default::default(),
    };
    (s, status)
}

/// Rows committed after the base backup, in a segment never finished or archived, come back
/// from the streamed `.partial` after the primary is killed.
#[tokio::test]
async fn streamed_wal_recovers_rows_of_an_unfinished_segment_after_the_primary_is_killed(
) -> Result<()> {
    let dir = TestDir::new("walstream")?;
    let repo = new_repo(dir.path()).await?;
    let pg = PgCluster::primary(&dir, "pg", InitOptions::default()).await?;
    let conninfo = pg.conninfo().to_libpq(None);
    let db = pg.client().await?;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    let opts = full_options();
    base_backup(&repo, &conninfo, None, opts, &Progress::hidden()).await?;

    let (streamer, status) = streamer(&repo, &conninfo, &dir);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(streamer.run(cancel.clone()));
    for id in 1..=50 {
        db.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
    }
    let committed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.last_synced_ms.load(Ordering::Relaxed) <= committed + 300 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no upload after the commits: {:?}",
            status.last_error.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.kill()?;
    cancel.cancel();
    task.await?;
    assert_eq!(
        status.segments_stored.load(Ordering::Relaxed),
        0,
        "the rows are in an unfinished segment"
    );
    // Everything the streamer wrote is inside its spool: nothing beside it.
    let beside: Vec<String> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("spool") && n != "spool")
        .collect();
    assert!(beside.is_empty(), "written beside the spool: {beside:?}");
    assert!(dir.path().join("spool/pg_receivewal.log").is_file());

    let to = dir.path().join("restored");
    let summary = restore_pitr(
        &repo,
        Target::Latest,
        Pick::default(),
        &to,
        false,
        &Progress::hidden(),
    )
    .await?;
    assert!(summary.wal_files >= 1);
    let n = PgCluster::query_restored(&dir, "restored", "SELECT count(*)::text FROM t").await?;
    assert_eq!(n, "50");
    Ok(())
}

/// WAL older than the oldest kept base backup goes with the backups that needed it; the kept
/// one still restores to its latest point.
#[tokio::test]
async fn prune_deletes_only_wal_no_kept_base_backup_needs() -> Result<()> {
    let dir = TestDir::new("walprune")?;
    let repo = new_repo(dir.path()).await?;
    let pg = PgCluster::primary(&dir, "pg", InitOptions::default()).await?;
    let conninfo = pg.conninfo().to_libpq(None);
    let db = pg.client().await?;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    let opts = || BackupOptions {
        source: "db".into(),
        tier: "full".into(),
        ..Default::default()
    };
    base_backup(&repo, &conninfo, None, opts(), &Progress::hidden()).await?;
    // Archive every finished segment through wal push, as archive_command would.
    let system = lifeboat_backup::postgres::system_identifier(&dir.path().join("pg"))?;
    let push_all = || async {
        for e in std::fs::read_dir(dir.path().join("pg/pg_wal"))? {
            let p = e?.path();
            if p.file_name().is_some_and(|n| n.len() == 24) {
                lifeboat_backup::postgres::wal_push(&repo, &system, &p).await?;
            }
        }
        anyhow::Ok(())
    };
    for id in 1..=3 {
        db.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
        db.batch_execute("SELECT pg_switch_wal()").await?;
    }
    push_all().await?;
    base_backup(&repo, &conninfo, None, opts(), &Progress::hidden()).await?;
    db.execute("INSERT INTO t VALUES (4)", &[]).await?;
    db.batch_execute("SELECT pg_switch_wal()").await?;
    push_all().await?;
    let before = repo.storage.list("wal/").await?.len();

    let keep_one = lifeboat_config::Retention {
        last: 1,
        ..Default::default()
    };
    let report = lifeboat_backup::prune::prune(&repo, &|_, _| Some(keep_one), false).await?;
    assert_eq!(report.forgotten.len(), 1);
    assert!(
        report.wal_deleted >= 3,
        "{} of {before} WAL files deleted",
        report.wal_deleted
    );
    assert_eq!(
        repo.storage.list("wal/").await?.len(),
        before - report.wal_deleted
    );
    pg.stop().await?;

    let to = dir.path().join("restored");
    restore_pitr(
        &repo,
        Target::Latest,
        Pick::default(),
        &to,
        false,
        &Progress::hidden(),
    )
    .await?;
    let n = PgCluster::query_restored(&dir, "restored", "SELECT count(*)::text FROM t").await?;
    assert_eq!(n, "4");
    Ok(())
}

/// pg_basebackup and pg_receivewal get the password through their environment, not their
/// command lines (which every user sees in `ps`), and still reach a server that demands it.
#[tokio::test]
async fn a_server_that_needs_a_password_is_backed_up_and_streamed_from() -> Result<()> {
    let dir = TestDir::new("pg-password")?;
    let repo = new_repo(dir.path()).await?;
    let opts = InitOptions {
        superuser_password: Some("correct horse".into()),
        ..InitOptions::default()
    };
    let pg = PgCluster::primary(&dir, "pg", opts).await?;
    let conninfo = pg.conninfo().to_libpq(None);
    assert!(conninfo.contains("password="));
    let opts = full_options();
    base_backup(&repo, &conninfo, None, opts, &Progress::hidden()).await?;

    let (streamer, status) = streamer(&repo, &conninfo, &dir);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(streamer.run(cancel.clone()));
    pg.client()
        .await?
        .batch_execute("SELECT pg_switch_wal()")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.last_synced_ms.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the streamer never synced: {:?}",
            status.last_error.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    task.await?;
    Ok(())
}
