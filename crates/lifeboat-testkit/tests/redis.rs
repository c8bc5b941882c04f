//! Real `redis-server` processes: a password-protected set that replicates, and a canary that
//! keeps only what a replica acknowledged when the primary is killed.

use anyhow::{Context, Result};
use lifeboat_testkit::redis::{
    redis_canary_seqs, RedisCanary, RedisOptions, RedisServer, RedisSet,
};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

/// Polls `check` every 50 ms until it holds, for `timeout` at most.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

fn servers(set: &RedisSet) -> impl Iterator<Item = &RedisServer> {
    std::iter::once(&set.primary).chain(&set.replicas)
}

#[tokio::test]
async fn password_set_replicates_and_refuses_strangers() -> Result<()> {
    let pw = format!("pw-{}-\"quoted\" \\ x", std::process::id());
    let opts = RedisOptions {
        password: Some(pw.clone()),
    };
    let set = RedisSet::start("redis-auth", &opts).await?;
    assert_eq!(set.primary.role().await?, "master");
    assert_eq!(set.replicas.len(), 2);

    let mut p = set.primary.client().await?;
    redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async::<()>(&mut p)
        .await?;
    for r in &set.replicas {
        assert_eq!(r.role().await?, "slave");
        let replicated = eventually(Duration::from_secs(5), || async {
            let v: Option<String> = redis::cmd("GET")
                .arg("greeting")
                .query_async(&mut r.client().await?)
                .await?;
            Ok(v.as_deref() == Some("hello"))
        })
        .await?;
        assert!(replicated, "{} did not receive the write", r.name());
    }

    // Without the password: connected, but every command is refused.
    let url = format!("redis://{}", set.primary.addr());
    let mut anon = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let err = redis::cmd("GET")
        .arg("greeting")
        .query_async::<Option<String>>(&mut anon)
        .await
        .expect_err("a client without the password must be refused");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    // With a wrong password: AUTH fails (WRONGPASS), so no connection.
    let wrong = format!("redis://:wrong@{}", set.primary.addr());
    let err = redis::Client::open(wrong.as_str())?
        .get_multiplexed_async_connection()
        .await
        .err()
        .context("a wrong password must be refused")?;
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");

    for s in servers(&set) {
        let pid = s.pid().context("running")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("redis-server"), "{cmdline}");
        assert!(!cmdline.contains(&pw), "password on argv of {}", s.name());
        let conf = set.dir.path().join(s.name()).join("redis.conf");
        let mode = std::fs::metadata(&conf)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", conf.display());
        assert_eq!(s.password(), Some(pw.as_str()));
    }
    Ok(())
}

#[tokio::test]
async fn canary_keeps_acked_writes_on_a_replica_when_primary_is_killed() -> Result<()> {
    let mut set = RedisSet::start("redis-canary", &RedisOptions::default()).await?;
    let (port, old_pid) = (set.primary.port(), set.primary.pid());
    let canary = RedisCanary::start(
        set.primary.addr(),
        None,
        Duration::from_millis(20),
        Some((1, Duration::from_millis(500))),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set.primary.kill()?;
    let killed = SystemTime::now();
    assert_eq!(set.primary.pid(), None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = canary.stop().await?;

    assert!(log.acked.len() >= 10, "only {} acks", log.acked.len());
    let late = killed + Duration::from_millis(200);
    assert!(log.acked.iter().all(|a| a.1 < late), "acked after the kill");
    assert!(
        log.failed.iter().any(|f| *f >= killed),
        "no write failed after the kill"
    );
    assert!(log.last_error.is_some());
    assert!(log.recovered_after(killed).is_none());

    // WAIT 1: every acked write reached at least the replica that is furthest along.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut lost = Vec::new();
        for r in &set.replicas {
            lost.push((
                r.name(),
                log.lost(&redis_canary_seqs(r.addr(), None).await?),
            ));
        }
        if lost.iter().any(|l| l.1.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acked writes missing on every replica: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    set.primary.restart().await?;
    assert_eq!(set.primary.port(), port);
    assert!(set.primary.pid().is_some() && set.primary.pid() != old_pid);
    assert_eq!(set.primary.role().await?, "master");
    for r in &set.replicas {
        r.wait_link_up(Duration::from_secs(20)).await?;
    }
    set.primary.stop().await?;
    set.primary.stop().await?;
    assert_eq!(set.primary.pid(), None);
    Ok(())
}
