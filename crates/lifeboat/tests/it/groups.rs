//! Consistent groups of several databases and a directory, and backups driven by the
//! `[backup]` section of the config, as a user runs them.

use crate::backup::{
    archiving_into, copy_to_second_repo, is_of, json, lb, new_repo, ok, wait_archived,
};
use crate::{stderr, stdout, BIN};
use anyhow::Result;
use lifeboat_postgres::InitOptions;
use lifeboat_testkit::tree::{describe, make_tree};
use lifeboat_testkit::{PgCluster, TestDir, TwoRegions};
use std::process::Command;

/// Two databases archiving into one repository and a directory: the group restores each
/// database to the restore point (rows written after it are absent) and the directory to its
/// snapshot, also from a copy in a second repository, after a prune that had to keep the group
/// whole. A database whose WAL is not archived gets no group recorded.
#[tokio::test]
async fn a_group_restores_every_member_to_its_one_restore_point() -> Result<()> {
    let dir = TestDir::new("group")?;
    let (repo, pass) = new_repo(&dir)?;
    let repo = repo.as_str();
    let archiving = || archiving_into(repo, &pass);
    let orders = PgCluster::primary(&dir, "orders", archiving()).await?;
    let billing = PgCluster::primary(&dir, "billing", archiving()).await?;
    let dbs = [(&orders, "orders"), (&billing, "billing")];
    for (pg, _) in dbs {
        let db = pg.client().await?;
        db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
            .await?;
    }
    let files = dir.path().join("uploads");
    make_tree(&files, 5)?;
    let member = |name: &str, pg: &PgCluster| format!("{name}={}", pg.conninfo().to_libpq(None));

    let out = ok(lb(repo, &[], &["backup", "group", "nightly", "--json"])
        .args(["--postgres", &member("orders", &orders)])
        .args(["--postgres", &member("billing", &billing)])
        .args(["--dir", &format!("uploads={}", files.display())])
        .output()?)?;
    let group = json(&out)?;
    assert_eq!(
        group["group"]["members"].as_array().map(Vec::len),
        Some(3),
        "{group}"
    );
    assert!(
        group["group"]["spread_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "{group}"
    );

    // After the restore point: more rows, archived; and a newer snapshot of one member, so
    // that a keep-last-1 prune keeps the group's uploads snapshot only because it is in the group.
    for (pg, _) in dbs {
        let db = pg.client().await?;
        db.batch_execute("INSERT INTO t VALUES (4), (5), (6)")
            .await?;
        wait_archived(&db).await?;
    }
    ok(lb(
        repo,
        &[],
        &["backup", "run", "--source", "uploads", "--tier", "nightly"],
    )
    .arg(&files)
    .output()?)?;
    let pruned = json(&ok(lb(
        repo,
        &[],
        &["backup", "prune", "--keep-last", "1", "--json"],
    )
    .output()?)?)?;
    assert_eq!(pruned["forgotten"], serde_json::json!([]), "{pruned}");
    assert_eq!(pruned["groups_deleted"], 0, "{pruned}");

    // A database that archives nowhere: its base backup is kept, no group is recorded.
    let lonely = PgCluster::primary(&dir, "lonely", InitOptions::default()).await?;
    let out = lb(
        repo,
        &[],
        &["backup", "group", "broken", "--wal-wait", "2s"],
    )
    .args(["--postgres", &member("lonely", &lonely)])
    .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("group broken: lonely: the WAL segment")
            && stderr(&out).contains("the group was not recorded"),
        "{}",
        stderr(&out)
    );
    let listed = stdout(&ok(lb(repo, &[], &["backup", "list"]).output()?)?);
    assert!(
        listed.contains(" nightly: orders, billing, uploads"),
        "{listed}"
    );
    assert!(!listed.contains("broken:"), "{listed}");
    let out = lb(repo, &[], &["restore", "group", "broken", "--to"])
        .arg(dir.path().join("x"))
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no snapshot \"group broken (groups in the repository: nightly)\""),
        "{}",
        stderr(&out)
    );

    // The copy in a second region carries the group and the WAL its restore points need.
    let (dr, copied) = copy_to_second_repo(&dir, repo)?;
    let dr = dr.as_str();
    assert_eq!(copied["groups_copied"], 1, "{copied}");
    assert!(copied["wal_files_sent"].as_u64() > Some(0), "{copied}");
    let v = ok(lb(dr, &[], &["backup", "verify"]).output()?)?;
    assert!(stdout(&v).contains("no errors found"), "{}", stdout(&v));

    // Each restored member gets its own directory in `to`; the servers log beside them.
    let to = dir.subdir("restored")?;
    ok(lb(dr, &[], &["restore", "group", "nightly", "--to"])
        .arg(&to)
        .output()?)?;
    let sql = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    for (_, name) in dbs {
        let rows = PgCluster::query_restored(&dir, &format!("restored/{name}"), sql).await?;
        assert_eq!(rows, "1,2,3", "{name} as of the restore point");
    }
    assert_eq!(describe(&to.join("uploads"))?, describe(&files)?);
    Ok(())
}

/// A `lifeboat` command with only a config: repositories, passphrases and tiers come from it.
fn with_config(config: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-c").arg(config).args(args);
    c.env_remove("LIFEBOAT_REPO")
        .env_remove("LIFEBOAT_PASSWORD");
    c
}

/// Without the daemon, each step of the config runs by hand: a tier (whose PostgreSQL source
/// follows the primary), its retention, the copy tier, prune by the tiers' own rules, and the
/// restore test, which is recorded.
#[tokio::test]
async fn each_configured_step_runs_by_hand() -> Result<()> {
    let regions = TwoRegions::start("bytier", "").await?;
    let dir = &regions.dir;
    let pass = dir.path().join("backup-passphrase");
    std::fs::write(&pass, "correct horse\n")?;
    let files = dir.path().join("files");
    make_tree(&files, 4)?;
    let mut config = std::fs::read_to_string(&regions.config_path)?;
    config.push_str(&format!(
        r#"
[backup.repositories.main]
location = "{main}"
password-file = "{pass}"

[backup.repositories.dr]
location = "{dr}"
password-file = "{pass}"

[backup.sources.files]
paths = ["{files}"]

[backup.sources.db]
follow-primary = true

[backup.tiers.hourly]
kind = "incremental"
sources = ["files", "db"]
repository = "main"
every = "1h"
keep = {{ last = 1 }}

[backup.tiers.offsite]
kind = "copy"
repository = "main"
copy-to = "dr"
every = "1d"
keep = {{ last = 5 }}

[backup.restore-test]
source = "db"
repository = "main"
every = "1d"
query = "SELECT 1"
scratch-dir = "{scratch}"
"#,
        main = dir.path().join("main").display(),
        dr = dir.path().join("dr").display(),
        pass = pass.display(),
        files = files.display(),
        scratch = dir.subdir("scratch")?.display(),
    ));
    std::fs::write(&regions.config_path, config)?;
    let cfg = regions.config_path.as_path();

    let out = with_config(cfg, &["backup", "list"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: name a repository with --repo: the config defines dr, main"
    );
    ok(with_config(cfg, &["backup", "init", "--repo", "main"]).output()?)?;
    ok(with_config(
        cfg,
        &["backup", "init", "--repo", "dr", "--from-repo", "main"],
    )
    .output()?)?;

    for _ in 0..2 {
        let run = json(&ok(with_config(
            cfg,
            &["backup", "run", "--tier", "hourly", "--json"],
        )
        .output()?)?)?;
        assert_eq!(run["snapshots"].as_array().map(Vec::len), Some(2), "{run}");
        assert_eq!(run["failures"], serde_json::json!([]), "{run}");
    }
    let list = json(&ok(with_config(
        cfg,
        &["backup", "list", "--repo", "main", "--json"],
    )
    .output()?)?)?;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "the tier keeps one per source: {list}"
    );
    let db = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot"]["source"] == "db")
        .unwrap();
    assert!(
        is_of(db, &regions.primary),
        "the writable node was backed up: {db}"
    );

    let copy = json(&ok(with_config(
        cfg,
        &["backup", "run", "--tier", "offsite", "--json"],
    )
    .output()?)?)?;
    assert_eq!(
        copy["copy"]["copied"].as_array().map(Vec::len),
        Some(2),
        "{copy}"
    );
    let dr = json(&ok(with_config(
        cfg,
        &["backup", "list", "--repo", "dr", "--json"],
    )
    .output()?)?)?;
    assert!(
        dr.as_array()
            .unwrap()
            .iter()
            .all(|s| s["snapshot"]["tier"] == "offsite"),
        "{dr}"
    );

    // By the tiers' rules: the older `hourly` snapshot of files goes, an ad-hoc one stays.
    for tier in ["manual", "hourly"] {
        ok(with_config(
            cfg,
            &[
                "backup", "run", "--repo", "main", "--source", "files", "--tier", tier,
            ],
        )
        .arg(&files)
        .output()?)?;
    }
    let pruned = json(&ok(with_config(
        cfg,
        &["backup", "prune", "--repo", "main", "--json"],
    )
    .output()?)?)?;
    let forgotten = pruned["forgotten"].as_array().unwrap();
    assert_eq!(forgotten.len(), 1, "{pruned}");
    assert!(
        forgotten[0].as_str().unwrap().ends_with(" files/hourly"),
        "{pruned}"
    );
    assert_eq!(pruned["kept"].as_array().map(Vec::len), Some(3), "{pruned}");

    let out = with_config(cfg, &["backup", "run", "--tier", "weekly"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no tier \"weekly\" in the config (tiers: hourly, offsite)"),
        "{}",
        stderr(&out)
    );

    let v = ok(with_config(
        cfg,
        &["backup", "verify", "--repo", "main", "--restore-test"],
    )
    .output()?)?;
    assert!(
        stdout(&v).contains("restore test of db passed"),
        "{}",
        stdout(&v)
    );
    // It measures the WAL replay too: accepting connections, then replayed and promoted.
    let line = stdout(&v);
    let secs = |after: &str| -> f64 {
        let i = line
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {line}"))
            + after.len();
        line[i..].split(' ').next().unwrap().parse().unwrap()
    };
    let (accepting, promoted) = (
        secs("accepting connections after "),
        secs("WAL replayed and promoted after "),
    );
    assert!(promoted >= accepting, "{line}");
    let tests = stdout(&ok(with_config(
        cfg,
        &["backup", "list", "--repo", "main", "--tests"],
    )
    .output()?)?);
    assert!(tests.contains("1 restore test(s), 1 passed"), "{tests}");
    Ok(())
}
