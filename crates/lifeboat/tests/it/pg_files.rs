//! PostgreSQL base backups read from the data directory: incremental and differential ones
//! that read only changed files and miss no change, and a delta restore over a damaged data
//! directory, against a real PostgreSQL 15.

use crate::backup::{archiving_into, json, lb, new_repo, ok};
use crate::stderr;
use anyhow::Result;
use lifeboat_postgres::InitOptions;
use lifeboat_testkit::{PgCluster, S3Server, TestDir};
use serde_json::Value;

/// `lifeboat backup run --postgres … --data-dir …` with `extra` flags; the snapshot's JSON.
fn file_backup(
    repo: &str,
    conninfo: &str,
    data: &std::path::Path,
    extra: &[&str],
) -> Result<Value> {
    let out = ok(lb(
        repo,
        &[],
        &["backup", "run", "--json", "--postgres", conninfo],
    )
    .arg("--data-dir")
    .arg(data)
    .args(extra)
    .output()?)?;
    json(&out)
}

fn summary(b: &Value, key: &str) -> u64 {
    b["snapshot"]["summary"][key].as_u64().unwrap_or(u64::MAX)
}

/// The relation file of `table` in the data directory.
async fn relation_file(
    db: &tokio_postgres::Client,
    data: &std::path::Path,
    table: &str,
) -> Result<std::path::PathBuf> {
    let rel: String = db
        .query_one("SELECT pg_relation_filepath($1::text::regclass)", &[&table])
        .await?
        .get(0);
    Ok(data.join(rel))
}

/// A repository, and a primary `pg` that archives its WAL into it.
struct Setup {
    dir: TestDir,
    repo: String,
    pg: PgCluster,
    /// Its data directory.
    data: std::path::PathBuf,
    conninfo: String,
    db: tokio_postgres::Client,
}

impl Setup {
    async fn new(name: &str) -> Result<Setup> {
        let dir = TestDir::new(name)?;
        let (repo, pass) = new_repo(&dir)?;
        let pg = PgCluster::primary(&dir, "pg", archiving_into(&repo, &pass)).await?;
        Ok(Setup {
            data: dir.path().join("pg"),
            conninfo: pg.conninfo().to_libpq(None),
            db: pg.client().await?,
            dir,
            repo,
            pg,
        })
    }
}

#[tokio::test]
async fn incremental_base_backups_read_only_changed_files_and_miss_no_change() -> Result<()> {
    let Setup {
        dir,
        repo,
        pg,
        data,
        conninfo,
        db,
    } = Setup::new("pg-incremental").await?;
    let repo = repo.as_str();
    db.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g;
         CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) g;
         CHECKPOINT",
    )
    .await?;
    // Files written more than a second before a backup starts are trusted by the next one.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let full = file_backup(repo, &conninfo, &data, &[])?;
    assert!(full["snapshot"]["parent"].is_null(), "{full}");
    assert_eq!(
        summary(&full, "files_read"),
        summary(&full, "files"),
        "{full}"
    );
    let full_id = full["id"].as_str().unwrap().to_string();

    // A change, then an incremental right away: t's file was written within a second of it.
    db.batch_execute("UPDATE t SET v = 1; CHECKPOINT").await?;
    let t_file = relation_file(&db, &data, "t").await?;
    let first = file_backup(repo, &conninfo, &data, &[])?;
    assert_eq!(first["snapshot"]["parent"], full_id.as_str());
    let (read, files) = (summary(&first, "files_read"), summary(&first, "files"));
    assert!(
        read > 0 && read * 4 < files,
        "read {read} of {files} files: {first}"
    );

    // The same page again, at the same size, and the file's time set back to what the
    // incremental saw: neither size nor time tells, the rule must.
    let before = std::fs::metadata(&t_file)?;
    db.batch_execute("UPDATE t SET v = 2; CHECKPOINT").await?;
    assert_eq!(std::fs::metadata(&t_file)?.len(), before.len());
    filetime::set_file_mtime(
        &t_file,
        filetime::FileTime::from_last_modification_time(&before),
    )?;
    let second = file_backup(repo, &conninfo, &data, &[])?;
    let second_end = second["snapshot"]["postgres"]["end_lsn"]
        .as_str()
        .unwrap()
        .to_string();

    // A differential reads against the full backup, so it reads t's and big's … files again
    // when they changed since the full one, and has the full backup as its parent.
    let diff = file_backup(repo, &conninfo, &data, &["--diff"])?;
    assert_eq!(diff["snapshot"]["parent"], full_id.as_str(), "{diff}");

    // Restored to the end of the second incremental alone (its own WAL, no later), t holds
    // the last value: the change the times hid was read.
    let to = dir.path().join("second");
    let base = second["id"].as_str().unwrap();
    ok(lb(
        repo,
        &[],
        &[
            "restore",
            "postgres",
            "--base",
            &base[..12],
            "--lsn",
            &second_end,
            "--to",
        ],
    )
    .arg(&to)
    .output()?)?;
    let v = PgCluster::query_restored(
        &dir,
        "second",
        "SELECT string_agg(DISTINCT v::text, ',') FROM t",
    )
    .await?;
    assert_eq!(v, "2");
    let n = PgCluster::query_restored(&dir, "second", "SELECT count(*)::text FROM big").await?;
    assert_eq!(n, "20000");

    // The same restore in a second region: everything copied to S3, restored from there
    // and started on a port of our choosing.
    let s3 = S3Server::start().await?;
    s3.create_bucket("second-region").await?;
    let env = s3.env();
    let dr = "s3://second-region/lifeboat";
    ok(lb(dr, &env, &["backup", "init", "--from-repo", repo]).output()?)?;
    ok(lb(repo, &env, &["backup", "copy", "--to", dr]).output()?)?;
    let port = lifeboat_testkit::free_port()?;
    let to = dir.path().join("from-s3");
    let out = ok(lb(
        dr,
        &env,
        &["restore", "postgres", "--json", "--start", "--port"],
    )
    .arg(port.to_string())
    .arg("--to")
    .arg(&to)
    .output()?)?;
    assert_eq!(json(&out)?["started"]["port"], port);
    let restored = lifeboat_postgres::ConnInfo {
        port,
        ..pg.conninfo()
    };
    let c = lifeboat_postgres::connect(&restored, std::time::Duration::from_secs(10)).await?;
    let v: String = c
        .query_one("SELECT string_agg(DISTINCT v::text, ',') FROM t", &[])
        .await?
        .get(0);
    assert_eq!(v, "2", "the latest value, from the second region");
    drop(c);
    lifeboat_postgres::LocalServer {
        bin_dir: lifeboat_postgres::LocalServer::find_bin_dir()?,
        data_dir: to,
        os_user: None,
        port,
    }
    .stop(
        lifeboat_postgres::StopMode::Fast,
        std::time::Duration::from_secs(30),
    )
    .await?;

    // Bad input: a data directory of another server is refused, naming both identities.
    let other = PgCluster::primary(&dir, "other", InitOptions::default()).await?;
    let out = lb(
        repo,
        &[],
        &["backup", "run", "--postgres", &conninfo, "--data-dir"],
    )
    .arg(dir.path().join("other"))
    .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the data directory of")
            && stderr(&out).contains("give the server's own data directory"),
        "{}",
        stderr(&out)
    );
    other.stop().await?;
    pg.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_delta_restore_rewrites_only_what_differs_and_refuses_a_data_directory_in_use(
) -> Result<()> {
    let Setup {
        dir,
        repo,
        pg,
        data,
        conninfo,
        db,
    } = Setup::new("pg-delta").await?;
    let repo = repo.as_str();
    db.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g; CHECKPOINT",
    )
    .await?;
    file_backup(repo, &conninfo, &data, &[])?;
    let big = relation_file(&db, &data, "big").await?;
    let big_rel = big.strip_prefix(&data)?.to_path_buf();
    db.batch_execute("SELECT pg_switch_wal()").await?;
    pg.stop().await?;

    // A first restore, started and stopped: a data directory like a standby's.
    let to = dir.path().join("copy");
    ok(lb(repo, &[], &["restore", "postgres", "--to"])
        .arg(&to)
        .output()?)?;
    assert_eq!(
        PgCluster::query_restored(&dir, "copy", "SELECT count(*)::text FROM big").await?,
        "20000"
    );

    // While a server runs on it, a delta restore is refused and changes nothing.
    let port = lifeboat_testkit::free_port()?;
    ok(lb(
        repo,
        &[],
        &["restore", "postgres", "--start", "--delta", "--port"],
    )
    .arg(port.to_string())
    .arg("--to")
    .arg(&to)
    .output()?)?;
    let pid_file = to.join("postmaster.pid");
    let out = lb(repo, &[], &["restore", "postgres", "--delta", "--to"])
        .arg(&to)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in use: PostgreSQL runs on it")
            && stderr(&out).contains("pg_ctl stop -D"),
        "{}",
        stderr(&out)
    );
    assert!(pid_file.exists());
    let running = lifeboat_postgres::LocalServer {
        bin_dir: lifeboat_postgres::LocalServer::find_bin_dir()?,
        data_dir: to.clone(),
        os_user: None,
        port,
    };
    running
        .stop(
            lifeboat_postgres::StopMode::Fast,
            std::time::Duration::from_secs(30),
        )
        .await?;

    // Damage: a block of the table overwritten, a file deleted, a stray file added.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(to.join(&big_rel))?;
        f.write_all_at(&[0xAB; 8192], 8192 * 3)?;
    }
    std::fs::remove_file(to.join("PG_VERSION"))?;
    std::fs::write(to.join("base/stray"), b"not from the backup")?;

    let out = ok(lb(
        repo,
        &[],
        &["restore", "postgres", "--json", "--delta", "--to"],
    )
    .arg(&to)
    .output()?)?;
    let r = json(&out)?["restore"].clone();
    let (files, unchanged) = (
        r["base_files"].as_u64().unwrap(),
        r["unchanged_files"].as_u64().unwrap(),
    );
    assert!(unchanged > 0 && unchanged < files, "{r}");
    // Of the damaged table file, only the chunk with the damaged block is written again.
    let (written, total) = (
        r["written_bytes"].as_u64().unwrap(),
        r["base_bytes"].as_u64().unwrap(),
    );
    assert!(written * 4 < total, "{r}");
    assert!(!to.join("base/stray").exists());
    assert!(to.join("PG_VERSION").exists());
    assert_eq!(
        PgCluster::query_restored(&dir, "copy", "SELECT count(*)::text FROM big").await?,
        "20000"
    );
    assert_eq!(
        PgCluster::query_restored(
            &dir,
            "copy",
            "SELECT count(*)::text FROM big WHERE pad = repeat('x', 200)"
        )
        .await?,
        "20000"
    );
    Ok(())
}
