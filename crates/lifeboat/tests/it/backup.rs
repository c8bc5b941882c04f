//! `lifeboat backup|restore` as a user runs them: on a real S3-compatible server, killed
//! halfway, and given bad input.

use crate::{stderr, stdout, Daemon, BIN};
use anyhow::{Context, Result};
use lifeboat_postgres::InitOptions;
use lifeboat_testkit::tree::{describe, make_tree, random_bytes};
use lifeboat_testkit::{free_port, PgCluster, S3Server, SmallDisk, TestDir, TwoRegions};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A `lifeboat` command on a repository, with the passphrase in the environment.
pub fn lb(repo: &str, env: &[(&'static str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("LIFEBOAT_REPO", repo)
        .env("LIFEBOAT_PASSWORD", "correct horse");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn ok(out: Output) -> Result<Output> {
    anyhow::ensure!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    Ok(out)
}

pub fn json(out: &Output) -> Result<Value> {
    serde_json::from_str(&stdout(out)).with_context(|| stdout(out))
}

/// A new repository in `dir/repo`, its passphrase in a file (also in the environment `lb`
/// sets); returns its location and the passphrase file.
/// `[backup]` for repository `repo` (its passphrase in `pass`): one source that follows the
/// primary, base backups `every`, and continuous WAL (spooled in `dir/spool`, uploaded every
/// 300 ms).
pub fn following_the_primary(
    repo: &str,
    pass: &std::path::Path,
    dir: &TestDir,
    every: &str,
) -> String {
    format!(
        r#"
[backup.repositories.main]
location = "{repo}"
password-file = "{pass}"

[backup.sources.db]
follow-primary = true

[backup.tiers.frequent]
kind = "full"
sources = ["db"]
repository = "main"
every = "{every}"
keep = {{ last = 10 }}

[backup.wal]
source = "db"
repository = "main"
spool-dir = "{spool}"
upload-every = "300ms"
"#,
        pass = pass.display(),
        spool = dir.path().join("spool").display(),
    )
}

pub fn new_repo(dir: &TestDir) -> Result<(String, std::path::PathBuf)> {
    let repo = dir.subdir("repo")?.display().to_string();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "correct horse\n")?;
    ok(lb(&repo, &[], &["backup", "init"]).output()?)?;
    Ok((repo, pass))
}

/// A second repository `dir/dr` sharing `repo`'s keys, with everything copied to it; returns
/// its location and the copy's JSON report.
pub fn copy_to_second_repo(dir: &TestDir, repo: &str) -> Result<(String, Value)> {
    let dr = dir.subdir("dr")?.display().to_string();
    ok(lb(&dr, &[], &["backup", "init", "--from-repo", repo]).output()?)?;
    let copied = json(&ok(lb(
        repo,
        &[],
        &["backup", "copy", "--to", &dr, "--json"],
    )
    .output()?)?)?;
    Ok((dr, copied))
}

/// Settings for a server whose `archive_command` pushes its WAL into `repo`, the passphrase
/// read from `pass`.
pub fn archiving_into(repo: &str, pass: &std::path::Path) -> InitOptions {
    InitOptions {
        settings: vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{BIN} wal push --repo {repo} --password-file {} %p'",
                pass.display()
            ),
        ],
        ..Default::default()
    }
}

/// Switches to a new WAL segment and waits until the archiver has stored the one before;
/// returns its name.
pub async fn wait_archived(db: &tokio_postgres::Client) -> Result<String> {
    let last: String = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_one(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver",
                &[],
            )
            .await?;
        let (archived, failed): (Option<String>, i64) = (row.get(0), row.get(1));
        if archived.as_deref() >= Some(last.as_str()) {
            return Ok(last);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "WAL {last} not archived in 60 s ({failed} failures)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_repository_on_s3_round_trips_a_tree() -> Result<()> {
    let dir = TestDir::new("s3")?;
    let s3 = S3Server::start().await?;
    s3.create_bucket("backups").await?;
    let env = s3.env();
    let repo = "s3://backups/lifeboat/one";
    let src = dir.path().join("src");
    make_tree(&src, 3)?;

    ok(lb(repo, &env, &["backup", "init"]).output()?)?;
    let out = ok(
        lb(repo, &env, &["backup", "run", "--json", "--tier", "full"])
            .arg(&src)
            .output()?,
    )?;
    let snap = json(&out)?;
    assert_eq!(snap["snapshot"]["summary"]["files"], 55);
    let list = json(&ok(lb(repo, &env, &["backup", "list", "--json"]).output()?)?)?;
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    assert_eq!(list[0]["id"], snap["id"]);

    let to = dir.path().join("restored");
    ok(lb(repo, &env, &["restore", "latest", "--to"])
        .arg(&to)
        .output()?)?;
    assert_eq!(describe(&to)?, describe(&src)?);
    let v = ok(lb(repo, &env, &["backup", "verify", "--read-data", "--json"]).output()?)?;
    assert_eq!(json(&v)?["errors"], serde_json::json!([]));
    Ok(())
}

#[tokio::test]
async fn a_backup_killed_halfway_leaves_a_valid_repository_and_the_next_one_reuses_its_uploads(
) -> Result<()> {
    let dir = TestDir::new("killed")?;
    let repo_dir = dir.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src)?;
    for i in 0..40 {
        std::fs::write(
            src.join(format!("f{i:02}.bin")),
            random_bytes(i, 4 * 1024 * 1024),
        )?;
    }
    ok(lb(repo, &[], &["backup", "init"]).output()?)?;
    let mut child = lb(repo, &[], &["backup", "run"]).arg(&src).spawn()?;
    // Kill it once a few packs are indexed, long before 160 MiB are stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let indexed = std::fs::read_dir(repo_dir.join("index"))
            .map(|d| d.count())
            .unwrap_or(0);
        if indexed >= 1 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the backup indexed no pack within 60 s"
        );
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "the backup ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    child.wait()?;
    assert_eq!(
        std::fs::read_dir(repo_dir.join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no snapshot yet"
    );

    let v = ok(lb(repo, &[], &["backup", "verify", "--read-data"]).output()?)?;
    assert!(stdout(&v).contains("no errors found"), "{}", stdout(&v));

    // The next backup finds the killed one's lock expired and skips what it stored.
    let out = json(&ok(lb(repo, &[], &["backup", "run", "--json"])
        .arg(&src)
        .output()?)?)?;
    let summary = &out["snapshot"]["summary"];
    let stored = summary["new_stored_bytes"].as_u64().unwrap();
    let total = summary["bytes"].as_u64().unwrap();
    assert!(
        stored < total - 16 * 1024 * 1024,
        "stored {stored} of {total} bytes again"
    );
    let to = dir.path().join("restored");
    ok(lb(repo, &[], &["restore", "latest", "--to"])
        .arg(&to)
        .output()?)?;
    assert_eq!(describe(&to)?, describe(&src)?);
    Ok(())
}

/// A repository on a full disk: the backup fails naming the cause, the snapshots before it
/// stay restorable, and once prune has removed the failed backup's packs the next one fits.
#[tokio::test]
async fn a_full_disk_fails_the_backup_with_the_reason_and_keeps_earlier_snapshots() -> Result<()> {
    let dir = TestDir::new("fulldisk")?;
    let disk = SmallDisk::mount(&dir.path().join("disk"), "24m")?;
    let repo_dir = disk.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    ok(lb(repo, &[], &["backup", "init"]).output()?)?;
    let small = dir.path().join("small");
    make_tree(&small, 7)?;
    ok(lb(repo, &[], &["backup", "run"]).arg(&small).output()?)?;

    let big = dir.path().join("big");
    std::fs::create_dir_all(&big)?;
    for i in 0..8 {
        std::fs::write(
            big.join(format!("r{i}")),
            random_bytes(100 + i, 4 * 1024 * 1024),
        )?;
    }
    let out = lb(repo, &[], &["backup", "run"]).arg(&big).output()?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "No space left on device (os error 28); free space where the repository lives"
        ),
        "{}",
        stderr(&out)
    );
    let v = ok(lb(repo, &[], &["backup", "verify", "--read-data"]).output()?)?;
    assert!(stdout(&v).contains("no errors found"), "{}", stdout(&v));
    let to = dir.path().join("restored");
    ok(lb(repo, &[], &["restore", "latest", "--to"])
        .arg(&to)
        .output()?)?;
    assert_eq!(describe(&to)?, describe(&small)?);

    ok(lb(repo, &[], &["backup", "prune", "--keep-last", "5"]).output()?)?;
    for i in 0..5 {
        std::fs::remove_file(big.join(format!("r{i}")))?;
    }
    ok(lb(repo, &[], &["backup", "run"]).arg(&big).output()?)?;
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_non_zero_exit() -> Result<()> {
    let dir = TestDir::new("badbackup")?;
    let repo_dir = dir.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    ok(lb(repo, &[], &["backup", "init"]).output()?)?;

    let out = lb(repo, &[], &["backup", "list"])
        .env("LIFEBOAT_PASSWORD", "wrong")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: wrong passphrase for repository {repo}: none of its keys opens with it")
    );
    let out = lb(repo, &[], &["backup", "list"])
        .env_remove("LIFEBOAT_PASSWORD")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("set LIFEBOAT_PASSWORD or pass --password-file FILE"));

    let out = lb(repo, &[], &["restore", "abcdef12", "--to"])
        .arg(dir.path().join("x"))
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: no snapshot \"abcdef12\" in the repository (see `lifeboat backup list`)"
    );
    let elsewhere = dir.path().join("none");
    let out = lb(elsewhere.to_str().unwrap(), &[], &["backup", "list"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid repository location"),
        "{}",
        stderr(&out)
    );
    let out = lb(repo, &[], &["backup", "init"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: a repository already exists at {repo}")
    );

    // An S3 endpoint nobody listens on: the reason, after bounded retries, and nothing kept.
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let env = vec![
        ("AWS_ENDPOINT_URL", closed),
        ("AWS_ACCESS_KEY_ID", "x".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "x".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    let out = lb("s3://nowhere/repo", &env, &["backup", "list"]).output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("reading config in s3://nowhere/repo:"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// A restored data directory is 0700, and owned by the owner of its files (postgres, when the
/// restore ran as root).
fn restored_as_pg_ctl_wants(to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(to)?;
    assert_eq!(md.permissions().mode() & 0o777, 0o700, "{}", to.display());
    let files = std::fs::metadata(to.join("PG_VERSION"))?;
    assert_eq!((md.uid(), md.gid()), (files.uid(), files.gid()));
    for f in ["postgresql.auto.conf", "recovery.signal", "pg_wal"] {
        assert_eq!(std::fs::metadata(to.join(f))?.uid(), files.uid(), "{f}");
    }
    Ok(())
}

#[tokio::test]
async fn a_point_in_time_restore_has_exactly_the_rows_committed_before_the_target() -> Result<()> {
    let dir = TestDir::new("pitr")?;
    let (repo, pass) = new_repo(&dir)?;
    let repo = repo.as_str();
    let pg = PgCluster::primary(&dir, "pg", archiving_into(repo, &pass)).await?;
    let conninfo = pg.conninfo().to_libpq(None);
    let db = pg.client().await?;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    )
    .await?;
    let base = json(&ok(lb(
        repo,
        &[],
        &["backup", "run", "--json", "--postgres", &conninfo],
    )
    .output()?)?)?;
    assert_eq!(base["snapshot"]["kind"], "postgres");

    for id in 1..=3 {
        db.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await?;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let target = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for id in 4..=6 {
        db.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await?;
    }
    let last = wait_archived(&db).await?;

    // wal fetch gives back what was pushed; a second push of the same file is fine, of other
    // content under the same name refused; an unknown name is a quiet exit 1.
    // PostgreSQL runs these in the data directory, where pg_control names the cluster.
    let data = dir.path().join("pg");
    let fetched = dir.path().join("fetched");
    ok(lb(repo, &[], &["wal", "fetch", &last])
        .arg(&fetched)
        .current_dir(&data)
        .output()?)?;
    let original = data.join("pg_wal").join(&last);
    assert_eq!(std::fs::read(&fetched)?, std::fs::read(&original)?);
    let system = lifeboat_backup::postgres::system_identifier(&data)?;
    ok(
        lb(repo, &[], &["wal", "push", "--system-identifier", &system])
            .arg(&original)
            .output()?,
    )?;
    let forged = dir.path().join(&last);
    std::fs::write(&forged, b"not the same")?;
    let out = lb(repo, &[], &["wal", "push"])
        .arg(&forged)
        .current_dir(&data)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already archived"),
        "{}",
        stderr(&out)
    );
    let out = lb(repo, &[], &["wal", "fetch", "0000000100000000000000FF"])
        .arg(&fetched)
        .current_dir(&data)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let out = lb(repo, &[], &["wal", "push"])
        .arg(&original)
        .current_dir(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pass --system-identifier"),
        "{}",
        stderr(&out)
    );

    let at = target.format(&time::format_description::well_known::Rfc3339)?;
    let to = dir.path().join("at-target");
    ok(lb(repo, &[], &["restore", "postgres", "--at", &at, "--to"])
        .arg(&to)
        .output()?)?;
    let sql = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    let ids = PgCluster::query_restored(&dir, "at-target", sql).await?;
    assert_eq!(ids, "1,2,3", "rows committed before {at}");

    let to = dir.path().join("latest");
    ok(lb(repo, &[], &["restore", "postgres", "--to"])
        .arg(&to)
        .output()?)?;
    restored_as_pg_ctl_wants(&to)?;
    let n = PgCluster::query_restored(&dir, "latest", "SELECT count(*)::text FROM t").await?;
    assert_eq!(n, "6", "every archived row");

    // --start: the restored server runs on the port given, replayed and promoted.
    let port = lifeboat_testkit::free_port()?;
    let to = dir.path().join("started");
    let out = ok(lb(
        repo,
        &[],
        &["restore", "postgres", "--json", "--start", "--port"],
    )
    .arg(port.to_string())
    .arg("--to")
    .arg(&to)
    .output()?)?;
    let started = json(&out)?["started"].clone();
    assert_eq!(started["port"], port);
    let (accepting, promoted) = (
        started["accepting_s"].as_f64().unwrap(),
        started["promoted_s"].as_f64().unwrap(),
    );
    assert!(accepting > 0.0 && promoted >= accepting, "{started}");
    let server = lifeboat_postgres::LocalServer {
        bin_dir: lifeboat_postgres::LocalServer::find_bin_dir()?,
        data_dir: to.clone(),
        os_user: nix::unistd::geteuid()
            .is_root()
            .then(|| "postgres".to_owned()),
        port,
    };
    let conn = lifeboat_postgres::ConnInfo {
        port,
        ..pg.conninfo()
    };
    let c = lifeboat_postgres::connect_str(&conn.to_libpq(None), Duration::from_secs(5)).await?;
    let row = c
        .query_one("SELECT count(*)::text, pg_is_in_recovery() FROM t", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "6");
    assert!(!row.get::<_, bool>(1), "promoted: it takes writes");
    drop(c);
    server
        .stop(lifeboat_postgres::StopMode::Fast, Duration::from_secs(30))
        .await?;
    // The same restore run by the postgres user (as an operator on a database host would):
    // the data directory is 0700 too, which `pg_ctl start` needs.
    if nix::unistd::geteuid().is_root() {
        // The repository is the postgres user's here (a restore takes a lock in it).
        ok(std::process::Command::new("chown")
            .args(["-R", "postgres:postgres", repo])
            .output()?)?;
        let theirs = dir.subdir("as-postgres")?;
        lifeboat_testkit::give_to_postgres(&theirs)?;
        let to = theirs.join("latest");
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            BIN,
        ]);
        c.args(["restore", "postgres", "--repo", repo, "--password-file"])
            .arg(&pass)
            .arg("--to")
            .arg(&to)
            .env_remove("LIFEBOAT_PASSWORD");
        ok(c.output()?)?;
        restored_as_pg_ctl_wants(&to)?;
        let n =
            PgCluster::query_restored(&dir, "as-postgres/latest", "SELECT count(*)::text FROM t")
                .await?;
        assert_eq!(n, "6", "every archived row, restored by the postgres user");
    } else {
        eprintln!("skipped: the restore as the postgres user needs root to switch to that user");
    }

    // Bad targets: before the first base backup, and a malformed time.
    let out = lb(
        repo,
        &[],
        &["restore", "postgres", "--at", "2001-01-01 00:00:00", "--to"],
    )
    .arg(dir.path().join("x"))
    .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no base backup ends before the target"),
        "{}",
        stderr(&out)
    );
    let out = lb(
        repo,
        &[],
        &["restore", "postgres", "--at", "yesterday", "--to"],
    )
    .arg(dir.path().join("x"))
    .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid time \"yesterday\""),
        "{}",
        stderr(&out)
    );
    // Past the newest archived WAL: refused up front, nothing written.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)?;
    let out = lb(repo, &[], &["restore", "postgres", "--at", &later, "--to"])
        .arg(dir.path().join("x"))
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "the archived WAL of this database ends before the target: its newest WAL file"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("x").exists());
    // One more archived segment, so that a segment lost below it is a hole in the chain.
    db.execute("INSERT INTO t (id) VALUES (7)", &[]).await?;
    wait_archived(&db).await?;
    pg.stop().await?;

    // A copy in a second repository recovers to the same point: the WAL went along.
    let (dr, copied) = copy_to_second_repo(&dir, repo)?;
    let dr = dr.as_str();
    assert!(copied["wal_files_sent"].as_u64() >= Some(2), "{copied}");
    let to = dir.path().join("dr-at-target");
    ok(lb(dr, &[], &["restore", "postgres", "--at", &at, "--to"])
        .arg(&to)
        .output()?)?;
    let ids = PgCluster::query_restored(&dir, "dr-at-target", sql).await?;
    assert_eq!(ids, "1,2,3", "rows committed before {at}, from the copy");

    // A WAL segment lost from the copy (the first after the base backup's end): verify names
    // it, and a restore past it is refused instead of quietly stopping early.
    let end_lsn = base["snapshot"]["postgres"]["end_lsn"].as_str().unwrap();
    let (hi, lo) = end_lsn.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?;
    let seg = lsn / (16 * 1024 * 1024) + 1;
    let lost = format!("00000001{:08X}{:08X}", seg >> 8, seg & 0xff);
    let system = base["snapshot"]["postgres"]["system_identifier"]
        .as_str()
        .unwrap();
    std::fs::remove_file(
        std::path::Path::new(dr)
            .join("wal")
            .join(system)
            .join(&lost),
    )?;
    let v = lb(dr, &[], &["backup", "verify"]).output()?;
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stdout(&v).contains(&format!("error: WAL of database {system}: {lost} missing")),
        "{}",
        stdout(&v)
    );
    let out = lb(dr, &[], &["restore", "postgres", "--to"])
        .arg(dir.path().join("y"))
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("WAL {lost} of this database is missing from {dr}")),
        "{}",
        stderr(&out)
    );

    // A lost tail: the archive verifies whole, then its newest segment goes. No hole shows
    // it, the recorded end does.
    ok(lb(repo, &[], &["backup", "verify"]).output()?)?;
    let wal_dir = std::path::Path::new(repo).join("wal").join(system);
    let mut segments: Vec<String> = std::fs::read_dir(&wal_dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    segments.sort_by_key(|n| n[8..].to_owned());
    let newest = segments.last().context("archived segments")?;
    std::fs::remove_file(wal_dir.join(newest))?;
    let v = lb(repo, &[], &["backup", "verify"]).output()?;
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(
        stdout(&v).contains(&format!("the archive reached {newest} (recorded ")),
        "{}",
        stdout(&v)
    );
    Ok(())
}

#[tokio::test]
async fn the_daemon_runs_tiers_with_retention_streams_wal_and_passes_restore_tests() -> Result<()> {
    let regions = TwoRegions::start("sched", "").await?;
    let dir = &regions.dir;
    let (repo, pass) = new_repo(dir)?;
    let repo = repo.as_str();
    let files = dir.path().join("files");
    make_tree(&files, 9)?;
    let scratch = dir.subdir("scratch")?;
    let mut config = std::fs::read_to_string(&regions.config_path)?;
    config.push_str(&format!(
        r#"
[backup.repositories.main]
location = "{repo}"
password-file = "{pass}"

[backup.sources.files]
paths = ["{files}"]

[backup.sources.db]
follow-primary = true

[backup.tiers.frequent]
kind = "incremental"
sources = ["files", "db"]
repository = "main"
every = "2s"
keep = {{ last = 2 }}

[backup.tiers.together]
kind = "full"
consistent = true
sources = ["files", "db"]
repository = "main"
every = "3s"
keep = {{ last = 1 }}

[backup.wal]
source = "db"
repository = "main"
spool-dir = "{spool}"
synchronous = true

[backup.restore-test]
source = "db"
repository = "main"
every = "3s"
query = "SELECT 1"
scratch-dir = "{scratch}"
"#,
        pass = pass.display(),
        files = files.display(),
        spool = dir.path().join("spool").display(),
        scratch = scratch.display(),
    ));
    std::fs::write(&regions.config_path, config)?;
    let daemon = Daemon::start(&regions, "us-east-1").await?;

    let http = reqwest::Client::new();
    let wanted = [
        "lifeboat_backup_restore_test_success 1",
        "lifeboat_backup_rpo_exceeded{source=\"files\",tier=\"frequent\"} 0",
        "lifeboat_backup_rpo_exceeded{source=\"db\",tier=\"frequent\"} 0",
        "lifeboat_backup_rpo_exceeded{source=\"db\",tier=\"together\"} 0",
        "lifeboat_backup_wal_last_sync_timestamp_seconds",
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = http
            .get(format!("{}/metrics", daemon.api))
            .send()
            .await?
            .text()
            .await?;
        if wanted.iter().all(|m| metrics.contains(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for m in wanted {
        assert!(
            metrics.contains(m),
            "{m} missing in\n{metrics}\n{}",
            daemon.log()
        );
    }
    // The synchronous archive: the daemon made the primary's commits wait for the streamer
    // (asynchronous replication, so for it alone), and they are acknowledged.
    let db = regions.primary.client().await?;
    let setting: String = db
        .query_one("SHOW synchronous_standby_names", &[])
        .await?
        .get(0);
    assert_eq!(setting, r#"FIRST 1 ("lifeboat_wal")"#, "{}", daemon.log());
    let sync: String = db
        .query_one(
            "SELECT string_agg(application_name || ' ' || sync_state, ',') FROM pg_stat_replication WHERE application_name = 'lifeboat_wal'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(sync, "lifeboat_wal sync");
    tokio::time::timeout(
        Duration::from_secs(10),
        db.batch_execute("CREATE TABLE acked (id int)"),
    )
    .await??;
    // Let a few more runs happen; retention keeps the newest two of each source.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(daemon);
    let list = json(&ok(lb(repo, &[], &["backup", "list", "--json"]).output()?)?)?;
    let count = |source: &str, tier: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["snapshot"]["source"] == source && s["snapshot"]["tier"] == tier)
            .count()
    };
    assert!((1..=2).contains(&count("files", "frequent")), "{list}");
    assert!((1..=2).contains(&count("db", "frequent")), "{list}");
    // The consistent tier: its retention keeps one group (a run the daemon was stopped in
    // may have left snapshots whose group was not recorded), restored as of its point.
    assert!((1..=2).contains(&count("files", "together")), "{list}");
    assert!((1..=2).contains(&count("db", "together")), "{list}");
    let listed = stdout(&ok(lb(repo, &[], &["backup", "list"]).output()?)?);
    assert!(listed.contains(" together: files, db "), "{listed}");
    let to = dir.subdir("together")?;
    ok(lb(repo, &[], &["restore", "group", "together", "--to"])
        .arg(&to)
        .output()?)?;
    assert_eq!(describe(&to.join("files"))?, describe(&files)?);
    let one = PgCluster::query_restored(dir, "together/db", "SELECT 1::text").await?;
    assert_eq!(one, "1");
    Ok(())
}

/// The value of an unlabelled metric in a /metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Continuous WAL and scheduled base backups of a source that follows the primary carry on
/// through a failover: the next base backup is of the new primary, and both the base backup
/// from before the failover (replaying across the timeline switch) and the newest one restore
/// every row acknowledged before and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_continuous_wal_follow_the_primary_through_a_failover() -> Result<()> {
    let regions = TwoRegions::start("walfollow", "").await?;
    let dir = &regions.dir;
    let (repo, pass) = new_repo(dir)?;
    let repo = repo.as_str();
    let mut config = std::fs::read_to_string(&regions.config_path)?;
    config.push_str(&following_the_primary(repo, &pass, dir, "3s"));
    std::fs::write(&regions.config_path, config)?;
    let daemon = Daemon::start(&regions, "us-east-1").await?;
    let conn = regions.endpoint_conninfo();

    write_rows(&conn, 1, 50).await?;
    wait_for_base_backup_of(repo, &regions.primary, &daemon).await?;
    wait_wal_synced(&daemon, unix_now() + 0.5).await?;
    let before = snapshots(repo)?
        .iter()
        .rev()
        .find(|s| is_of(s, &regions.primary))
        .and_then(|s| s["id"].as_str().map(str::to_string))
        .unwrap();

    regions.primary.kill()?;
    daemon
        .wait_until("failover to eu-west-1", Duration::from_secs(30), |s| {
            s["primary"] == "eu-west-1" && s["in_flight"].is_null()
        })
        .await?;
    write_rows(&conn, 51, 100).await?;
    wait_wal_synced(&daemon, unix_now() + 0.5).await?;
    wait_for_base_backup_of(repo, &regions.standby, &daemon).await?;
    drop(daemon);

    let sql = "SELECT count(*)::text || ' ' || max(id)::text FROM t";
    ok(lb(
        repo,
        &[],
        &["restore", "postgres", "--base", &before[..12], "--to"],
    )
    .arg(dir.path().join("from-before"))
    .output()?)?;
    let rows = PgCluster::query_restored(dir, "from-before", sql).await?;
    assert_eq!(
        rows, "100 100",
        "replayed from us-east-1's base backup across the failover"
    );
    ok(lb(repo, &[], &["restore", "postgres", "--to"])
        .arg(dir.path().join("newest"))
        .output()?)?;
    let rows = PgCluster::query_restored(dir, "newest", sql).await?;
    assert_eq!(rows, "100 100", "from eu-west-1's base backup");

    // The archive verifies across the timeline switch; without the new timeline's history
    // file, verify says which file is missing and which segments need it.
    ok(lb(repo, &[], &["backup", "verify"]).output()?)?;
    let wal = std::fs::read_dir(std::path::Path::new(repo).join("wal"))?
        .next()
        .context("a cluster's WAL")??
        .path();
    std::fs::remove_file(wal.join("00000002.history"))?;
    let v = lb(repo, &[], &["backup", "verify"]).output()?;
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("00000002.history is missing; segments of timeline 2 (from 00000002"),
        "{}",
        stdout(&v)
    );
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn write_rows(conn: &lifeboat_postgres::ConnInfo, from: i32, to: i32) -> Result<()> {
    let (c, connection) =
        tokio_postgres::connect(&conn.to_libpq(None), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    c.batch_execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
        .await?;
    for id in from..=to {
        c.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
    }
    Ok(())
}

/// Waits until the repository holds every WAL byte the server sent before `after` (unix s).
async fn wait_wal_synced(d: &Daemon, after: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = reqwest::get(format!("{}/metrics", d.api))
            .await?
            .text()
            .await?;
        if metric(&m, "lifeboat_backup_wal_last_sync_timestamp_seconds").is_some_and(|t| t > after)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "WAL not in sync after {after}:\n{m}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn snapshots(repo: &str) -> Result<Vec<Value>> {
    let list = json(&ok(lb(repo, &[], &["backup", "list", "--json"]).output()?)?)?;
    Ok(list.as_array().cloned().unwrap_or_default())
}

/// True when the snapshot is a base backup of `pg`.
/// A base backup of `pg`: taken with pg_basebackup (its root names the server's port) or read
/// from its data directory (its root is that directory).
pub fn is_of(s: &Value, pg: &PgCluster) -> bool {
    s["snapshot"]["roots"][0].as_str().is_some_and(|r| {
        r.contains(&format!("port={} ", pg.port()))
            || std::path::Path::new(r) == pg.server.data_dir.as_path()
    })
}

pub async fn wait_for_base_backup_of(repo: &str, pg: &PgCluster, d: &Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !snapshots(repo)?.iter().any(|s| is_of(s, pg)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no base backup of {}:\n{}",
            pg.name,
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
