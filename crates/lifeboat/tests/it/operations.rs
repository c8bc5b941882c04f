//! Operator commands: switchover, failover past the lag limit, pause and resume.

use crate::{stderr, stdout, Daemon};
use anyhow::Result;
use lifeboat_testkit::{canary_seqs, Canary, TwoRegions};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn node<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_loses_nothing_and_the_old_primary_follows() -> Result<()> {
    let regions = TwoRegions::start("switchover", "").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    let canary = Canary::start(regions.endpoint_conninfo(), Duration::from_millis(5)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let out = d.cli(&["switchover", "--to", "eu-west-1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("outcome: ok"), "{}", stdout(&out));
    let s = d
        .wait_until("us-east-1 following eu-west-1", T, |s| {
            s["primary"] == "eu-west-1"
                && node(s, "us-east-1")["role"] == "standby"
                && node(s, "us-east-1")["health"] == "up"
        })
        .await?;
    assert_eq!(s["epoch"], 2);
    assert_eq!(s["endpoint"]["routes_to"], "eu-west-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = canary.stop().await?;
    let present = canary_seqs(&regions.standby.conninfo()).await?;
    assert!(
        log.acked.len() > 20,
        "the canary wrote too little to mean anything"
    );
    assert_eq!(
        log.lost(&present),
        Vec::<i64>::new(),
        "a switchover must lose no acknowledged write"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_limit_blocks_automatic_promotion_until_forced() -> Result<()> {
    let regions = TwoRegions::start("lag", "max-lag = \"1MiB\"").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    // Cut the standby off, then write 10 MB it will never receive.
    let standby = regions.standby.client().await?;
    standby
        .batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .await?;
    standby.batch_execute("SELECT pg_reload_conf()").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    regions
        .primary
        .client()
        .await?
        .batch_execute(
            "CREATE TABLE big AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, 10000)",
        )
        .await?;
    d.wait_until("eu-west-1 behind by more than 1 MiB", T, |s| {
        node(s, "eu-west-1")["lag_bytes"]
            .as_u64()
            .is_some_and(|b| b > 1 << 20)
    })
    .await?;

    regions.primary.kill()?;
    let s = d
        .wait_until("a refusal naming the lag", T, |s| {
            s["decision"].as_array().unwrap().iter().any(|r| {
                r.as_str()
                    .unwrap_or("")
                    .contains("MiB behind (limit 1 MiB)")
            })
        })
        .await?;
    // Observed for a while: the refusal holds.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let s = d.status().await?;
        assert_eq!(
            s["primary"], "us-east-1",
            "promoted past the lag limit: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s["epoch"], 1);

    let out = d.cli(&["failover", "--to", "eu-west-1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--force"),
        "the refusal must say how to override: {}",
        stderr(&out)
    );
    let out = d.cli(&["failover", "--to", "eu-west-1", "--force"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let s = d
        .wait_until("forced failover", T, |s| {
            s["primary"] == "eu-west-1" && s["in_flight"].is_null()
        })
        .await?;
    assert_eq!(s["endpoint"]["routes_to"], "eu-west-1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_automatic_failover_until_resumed() -> Result<()> {
    let regions = TwoRegions::start("pause", "").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    let out = d.cli(&["pause"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.wait_until("paused", T, |s| s["paused"] == true).await?;

    regions.primary.kill()?;
    d.wait_until("the pause named as the reason", T, |s| {
        s["decision"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap_or("").contains("paused by operator"))
    })
    .await?;
    assert_eq!(d.status().await?["primary"], "us-east-1");
    let status = d.cli(&["status"]);
    assert!(stdout(&status).contains("PAUSED"), "{}", stdout(&status));

    let out = d.cli(&["resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.wait_until("failover after resume", T, |s| {
        s["primary"] == "eu-west-1" && s["in_flight"].is_null()
    })
    .await?;
    Ok(())
}
