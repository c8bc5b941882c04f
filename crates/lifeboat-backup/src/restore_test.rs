//! Test restores: the newest PostgreSQL base backup of a source and all its WAL restored into a
//! scratch directory, started as a real server on a free loopback port, a query run, the server
//! stopped and the directory removed. Each test is recorded in the repository
//! (`tests/<hash>`, sealed), so whoever reads the repository sees when a restore last worked.

use crate::error::{Error, Result};
use crate::postgres::{pg_error, restore_pitr, Pick, Target, CONNECT_TIMEOUT};
use crate::progress::Progress;
use crate::repo::Repo;
use lifeboat_postgres::{ConnInfo, LocalServer, StopMode};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long the test's query may run on the restored server.
pub const QUERY_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Test records kept per source; prune deletes older ones.
pub const RECORDS_KEPT: usize = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub source: String,
    /// The base backup restored (empty when the restore did not get that far).
    pub base_snapshot: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rows the query returned.
    pub rows: usize,
    pub restore_s: f64,
    /// From `pg_ctl start` until the server accepted connections.
    pub start_s: f64,
    /// From `pg_ctl start` until the WAL was replayed to the target and the server promoted
    /// (0 in records written before this was measured).
    #[serde(default)]
    pub replay_s: f64,
    pub total_s: f64,
}

/// What a test needs besides the repository.
impl TestRecord {
    fn starting(source: &str) -> TestRecord {
        TestRecord {
            time: OffsetDateTime::now_utc(),
            source: source.to_string(),
            base_snapshot: String::new(),
            ok: false,
            error: None,
            rows: 0,
            restore_s: 0.0,
            start_s: 0.0,
            replay_s: 0.0,
            total_s: 0.0,
        }
    }
}

pub struct TestSpec<'a> {
    pub source: &'a str,
    pub query: &'a str,
    pub scratch_dir: &'a Path,
    /// OS user to run the server as when Lifeboat runs as root.
    pub os_user: &'a str,
    /// User, database and password to connect with (host and port are the scratch server's).
    pub login: ConnInfo,
}

/// Runs one test and records it; the record says whether it passed.
pub async fn run(repo: &Repo, spec: &TestSpec<'_>) -> Result<TestRecord> {
    let started = Instant::now();
    let mut record = TestRecord::starting(spec.source);
    let dir = spec
        .scratch_dir
        .join(format!("restore-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = async {
        std::fs::create_dir_all(spec.scratch_dir).map_err(Error::io(spec.scratch_dir))?;
        let restored = restore_pitr(
            repo,
            Target::Latest,
            Pick {
                source: Some(spec.source),
                base: None,
            },
            &dir,
            false,
            &Progress::hidden(),
        )
        .await?;
        record.base_snapshot = restored.base_snapshot;
        record.restore_s = started.elapsed().as_secs_f64();
        query_restored(&dir, spec, &mut record).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    record.total_s = started.elapsed().as_secs_f64();
    match outcome {
        Ok(rows) => {
            record.ok = true;
            record.rows = rows;
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    repo.save_json("tests", &record).await?;
    Ok(record)
}

/// Starts the restored data directory `dir` on a free loopback port, runs `spec.query`,
/// stops it: the number of rows the query returned (an error when none).
pub async fn count_restored(dir: &Path, spec: &TestSpec<'_>) -> Result<usize> {
    let mut record = TestRecord::starting(spec.source);
    query_restored(dir, spec, &mut record).await
}

async fn query_restored(dir: &Path, spec: &TestSpec<'_>, record: &mut TestRecord) -> Result<usize> {
    let fail = |what: &str, e: String| Error::Command {
        what: format!("restore test: {what}"),
        detail: e,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(Error::io(dir))?
        .port();
    let server = LocalServer {
        bin_dir: LocalServer::find_bin_dir().map_err(|e| Error::Invalid(e.to_string()))?,
        data_dir: dir.to_path_buf(),
        os_user: nix::unistd::geteuid()
            .is_root()
            .then(|| spec.os_user.to_string()),
        port,
    };
    let login = ConnInfo {
        host: "127.0.0.1".into(),
        port,
        ..spec.login.clone()
    };
    let started = start_restored(&server, &login, Duration::from_secs(300)).await;
    let rows = async {
        let started = started?;
        record.start_s = started.accepting_s;
        record.replay_s = started.promoted_s;
        // The connection ends with the client, at the end of this block.
        let client = lifeboat_postgres::connect_str(
            &login.to_libpq(Some("lifeboat-restore-test")),
            CONNECT_TIMEOUT,
        )
        .await
        .map_err(|e| pg_error("restore test: connecting", e))?;
        let rows = lifeboat_postgres::within(
            "the query",
            &login.to_string(),
            QUERY_LIMIT,
            client.simple_query(spec.query),
        )
        .await
        .map_err(|e| pg_error("restore test", e))?;
        let n = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        if n == 0 {
            return Err(fail("query", "returned no row".into()));
        }
        Ok(n)
    }
    .await;
    let _ = server.stop(StopMode::Fast, Duration::from_secs(60)).await;
    rows
}

/// How a restored server came up.
#[derive(Clone, Debug, Serialize)]
pub struct Started {
    pub port: u16,
    /// From `pg_ctl start` until it accepted connections.
    pub accepting_s: f64,
    /// From `pg_ctl start` until it had replayed the WAL to the target and promoted.
    pub promoted_s: f64,
}

/// Starts the restored data directory of `server` and waits, at most `limit`, until it
/// accepts connections, then until its recovery ends (`pg_is_in_recovery()` false: the WAL
/// replayed to the target and the server promoted), connecting as `login`.
pub async fn start_restored(
    server: &LocalServer,
    login: &ConnInfo,
    limit: Duration,
) -> Result<Started> {
    let fail = |what: &str, e: String| Error::Command {
        what: format!("starting the restored server: {what}"),
        detail: e,
    };
    let starting = Instant::now();
    server
        .start(limit)
        .await
        .map_err(|e| fail("pg_ctl start", e.to_string()))?;
    let accepting_s = starting.elapsed().as_secs_f64();
    let client =
        lifeboat_postgres::connect_str(&login.to_libpq(Some("lifeboat-restore")), CONNECT_TIMEOUT)
            .await
            .map_err(|e| pg_error("starting the restored server: connecting", e))?;
    loop {
        let row = lifeboat_postgres::within(
            "pg_is_in_recovery()",
            &login.to_string(),
            CONNECT_TIMEOUT,
            client.query_one("SELECT pg_is_in_recovery()", &[]),
        )
        .await
        .map_err(|e| pg_error("starting the restored server", e))?;
        if !row.get::<_, bool>(0) {
            break;
        }
        if starting.elapsed() > limit {
            return Err(fail(
                "recovery",
                format!("still replaying WAL after {limit:?}; it goes on in the background"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Started {
        port: server.port,
        accepting_s,
        promoted_s: starting.elapsed().as_secs_f64(),
    })
}

/// Every test record, oldest first.
pub async fn records(repo: &Repo) -> Result<Vec<(String, TestRecord)>> {
    let mut all = Vec::new();
    for l in repo.storage.list("tests/").await? {
        all.push((l.key.clone(), repo.load_json::<TestRecord>(&l.key).await?));
    }
    all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(all)
}

/// Keys of the records beyond the newest [`RECORDS_KEPT`] of each source.
pub fn outdated(records: &[(String, TestRecord)]) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    let mut out = Vec::new();
    for (key, r) in records.iter().rev() {
        let n = seen.entry(r.source.as_str()).or_default();
        *n += 1;
        if *n > RECORDS_KEPT {
            out.push(key.clone());
        }
    }
    out
}
