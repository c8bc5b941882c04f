//! `lifeboat backup|restore` as a user runs them: on a real S3-compatible server, killed
//! halfway, and given bad input.

use crate::{stderr, stdout, BIN};
use anyhow::{Context, Result};
use lifeboat_testkit::tree::{describe, make_tree, random_bytes};
use lifeboat_testkit::{free_port, S3Server, TestDir};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A `lifeboat` command on a repository, with the passphrase in the environment.
fn lb(repo: &str, env: &[(&'static str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("LIFEBOAT_REPO", repo)
        .env("LIFEBOAT_PASSWORD", "correct horse");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn ok(out: Output) -> Result<Output> {
    anyhow::ensure!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    Ok(out)
}

fn json(out: &Output) -> Result<Value> {
    serde_json::from_str(&stdout(out)).with_context(|| stdout(out))
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
