//! The synchronous WAL archive: the primary and the streamer are SIGKILLed together while
//! commits pour in, and every acknowledged commit comes back from the repository.

use crate::backup::{lb, new_repo, ok};
use crate::stderr;
use anyhow::{Context, Result};
use lifeboat_postgres::InitOptions;
use lifeboat_testkit::{PgCluster, TestDir};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `lifeboat wal stream` in a process group of its own (with its pg_receivewal), so that the
/// whole streamer can be killed by its PID.
fn stream(repo: &str, conninfo: &str, spool: &std::path::Path) -> Result<std::process::Child> {
    Ok(lb(
        repo,
        &[],
        &["wal", "stream", "--every", "100ms", "--postgres", conninfo],
    )
    .arg("--spool")
    .arg(spool)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .process_group(0)
    .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_archive_loses_no_acknowledged_commit_when_primary_and_streamer_are_killed(
) -> Result<()> {
    let dir = TestDir::new("sync-archive")?;
    let (repo, _) = new_repo(&dir)?;
    let repo = repo.as_str();
    // The setting Lifeboat manages for a synchronous archive under asynchronous replication.
    let opts = InitOptions {
        settings: vec![r#"synchronous_standby_names = 'FIRST 1 ("lifeboat_wal")'"#.into()],
        ..Default::default()
    };
    let pg = PgCluster::primary(&dir, "pg", opts).await?;
    let conninfo = pg.conninfo().to_libpq(None);
    let spool = dir.path().join("spool");
    // The streamer first: until it runs, no commit is acknowledged.
    let mut streamer = stream(repo, &conninfo, &spool)?;
    let db = pg.client().await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)"),
    )
    .await
    .context("the first commit waits for the streamer")??;
    ok(lb(repo, &[], &["backup", "run", "--postgres", &conninfo]).output()?)?;

    // Commits as fast as one client makes them; each one acknowledged is remembered.
    let acked = Arc::new(AtomicI32::new(0));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for id in 1.. {
                match db.execute("INSERT INTO t VALUES ($1)", &[&id]).await {
                    Ok(_) => acked.store(id, Ordering::SeqCst),
                    Err(_) => return,
                }
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 500 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "commits stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both at once: the streamer's whole group and the server's whole tree.
    let _ = killpg(Pid::from_raw(streamer.id() as i32), Signal::SIGKILL);
    pg.kill()?;
    let last = acked.load(Ordering::SeqCst);
    streamer.wait()?;
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let last = last.max(acked.load(Ordering::SeqCst));

    // A restarted streamer sends what its spool holds, with the server still gone.
    let again = stream(repo, &conninfo, &spool)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::sys::signal::kill(Pid::from_raw(again.id() as i32), Signal::SIGTERM)?;
    // It never reached the server, and says so.
    let out = again.wait_with_output()?;
    assert!(
        !out.status.success() && stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );

    let to = dir.path().join("restored");
    ok(lb(repo, &[], &["restore", "postgres", "--to"])
        .arg(&to)
        .output()?)?;
    let max =
        PgCluster::query_restored(&dir, "restored", "SELECT coalesce(max(id), 0)::text FROM t")
            .await?;
    let max: i32 = max.parse()?;
    assert!(
        max >= last,
        "acknowledged up to {last}, restored up to {max}: {} acknowledged commits lost",
        last - max
    );
    Ok(())
}
