//! Automatic failover: after a kill, in sync mode, across a daemon crash, and not on a stall.

use crate::{incident, stdout, steps, Daemon};
use anyhow::Result;
use lifeboat_postgres as pg;
use lifeboat_testkit::{canary_seqs, Canary, TwoRegions};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(30);

fn promoted(s: &serde_json::Value) -> bool {
    s["primary"] == "eu-west-1"
        && s["in_flight"].is_null()
        && s["endpoint"]["routes_to"] == "eu-west-1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_a_kill_then_fence_on_return_then_rejoin() -> Result<()> {
    let regions = TwoRegions::start("failover", "").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    let canary = Canary::start(regions.endpoint_conninfo(), Duration::from_millis(10)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fault = SystemTime::now();
    regions.primary.kill()?;
    let s = d.wait_until("failover to eu-west-1", T, promoted).await?;
    assert_eq!(s["epoch"], 2);
    let us = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "us-east-1")
        .unwrap()
        .clone();
    assert_eq!(us["role"], "needs-rejoin", "{us}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = canary.stop().await?;
    let back = log
        .recovered_after(fault)
        .expect("clients write again through the endpoint");
    assert!(
        log.acked.iter().filter(|a| a.1 >= back).count() > 1,
        "writes continue after the failover"
    );

    let id = s["last_incident"]
        .as_i64()
        .expect("an incident was recorded");
    let inc = incident(&d, id).await?;
    assert_eq!(inc["kind"], "failover");
    assert_eq!(inc["status"], "ok");
    let st = steps(&inc);
    for want in [
        "block-endpoint",
        "fence-node",
        "promote",
        "route-endpoint",
        "check-write",
    ] {
        assert!(
            st.contains(&(want.to_owned(), "ok".to_owned())),
            "{want} missing in {st:?}"
        );
    }
    let f = &inc["figures"];
    let (detect, first_write) = (
        f["detect_ms"].as_u64().unwrap(),
        f["first_write_ms"].as_u64().unwrap(),
    );
    assert!(detect <= first_write, "{f}");
    assert!(f["lag_bytes_at_fault"].is_u64(), "{f}");
    let shown = d.cli(&["incident", "show", &id.to_string()]);
    assert!(shown.status.success());
    assert!(
        stdout(&shown).contains("time to first write:"),
        "{}",
        stdout(&shown)
    );

    // The lost primary comes back by itself, as a writable primary on the old timeline.
    let deadline = Instant::now() + T;
    while let Err(e) = regions.primary.server.start(T).await {
        // A killed postmaster can linger as a zombie until it is reaped; its lock file then blocks a restart.
        assert!(
            Instant::now() < deadline,
            "cannot restart the old primary: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + T;
    loop {
        let fenced = match pg::probe(&regions.primary.conninfo(), Duration::from_secs(2)).await {
            Ok(o) => o.default_read_only,
            Err(_) => !regions.primary.server.is_running().await,
        };
        if fenced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the returning primary was not fenced\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let via_endpoint =
        lifeboat_postgres::connect(&regions.endpoint_conninfo(), Duration::from_secs(5)).await?;
    let port: i32 = via_endpoint
        .query_one("SELECT inet_server_port()", &[])
        .await?
        .get(0);
    assert_eq!(
        port,
        i32::from(regions.standby.port()),
        "the endpoint must stay on the new primary"
    );
    drop(via_endpoint);

    let out = d.cli(&["rejoin", "us-east-1"]);
    assert!(
        out.status.success(),
        "rejoin failed: {}{}",
        stdout(&out),
        crate::stderr(&out)
    );
    let s = d
        .wait_until("us-east-1 back as a healthy standby", T, |s| {
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == "us-east-1" && n["role"] == "standby" && n["health"] == "up")
        })
        .await?;
    assert_eq!(s["primary"], "eu-west-1");
    let o = pg::probe(&regions.standby.conninfo(), Duration::from_secs(5)).await?;
    assert!(
        o.replicas
            .iter()
            .any(|r| r.application_name == "us-east-1" && r.state == "streaming"),
        "{o:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_loses_no_acknowledged_write() -> Result<()> {
    let regions = TwoRegions::start("sync", r#"replication = "sync""#).await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    d.wait_until("eu-west-1 synchronous", T, |s| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "eu-west-1" && n["sync_state"] == "sync")
    })
    .await?;
    let canary = Canary::start(regions.endpoint_conninfo(), Duration::from_millis(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault = SystemTime::now();
    regions.primary.kill()?;
    d.wait_until("failover to eu-west-1", T, promoted).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = canary.stop().await?;
    assert!(log.recovered_after(fault).is_some(), "clients write again");
    let present = canary_seqs(&regions.standby.conninfo()).await?;
    assert!(
        log.acked.len() > 20,
        "the canary wrote too little to mean anything: {}",
        log.acked.len()
    );
    assert_eq!(
        log.lost(&present),
        Vec::<i64>::new(),
        "acknowledged writes lost in sync mode"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_of_the_primary_never_starts_a_failover() -> Result<()> {
    let regions = TwoRegions::start("stall", "").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    for _ in 0..5 {
        regions.primary.signal_all(Signal::SIGSTOP)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        regions.primary.signal_all(Signal::SIGCONT)?;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let s = d.status().await?;
    assert_eq!(s["primary"], "us-east-1");
    assert_eq!(s["epoch"], 1, "{s:#}");
    let incidents = crate::get(&format!("{}/v1/incidents", d.api)).await?;
    assert_eq!(incidents.as_array().map(Vec::len), Some(0), "{incidents:#}");
    Ok(())
}

/// The daemon is SIGKILLed while it fences the lost primary (its STONITH hook hangs). A new
/// daemon resumes the same plan, under the same incident, and finishes the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_failover_resumes_the_plan_after_restart() -> Result<()> {
    let regions = TwoRegions::start("restart", "fence-timeout = \"60s\"").await?;
    let dir = regions.dir.path();
    let (marker, pidfile) = (dir.join("stonith-started"), dir.join("stonith.pid"));
    let script = format!(
        "if [ -e {m} ]; then exit 0; fi; echo $$ > {p}; touch {m}; exec sleep 120",
        m = marker.display(),
        p = pidfile.display()
    );
    let text = std::fs::read_to_string(&regions.config_path)?.replace(
        "name = \"us-east-1\"\n",
        &format!("name = \"us-east-1\"\nfence-command = [\"/bin/sh\", \"-c\", {script:?}]\n"),
    );
    std::fs::write(&regions.config_path, text)?;

    let mut d = Daemon::start(&regions, "us-east-1").await?;
    regions.primary.kill()?;
    let deadline = Instant::now() + T;
    while !pidfile.exists() || std::fs::read_to_string(&pidfile)?.trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the STONITH hook never ran\n{:#}\n{}",
            d.status().await?,
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill()?;
    let hook: i32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(hook), Signal::SIGKILL);

    let d = Daemon::spawn(&regions)?;
    let s = d.wait_until("the resumed failover", T, promoted).await?;
    assert_eq!(s["epoch"], 2);
    let list = crate::get(&format!("{}/v1/incidents", d.api)).await?;
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "the restart must not open a second incident: {list:#?}"
    );
    let inc = incident(&d, list[0]["id"].as_i64().unwrap()).await?;
    assert_eq!(inc["status"], "ok", "{inc:#}");
    let st = steps(&inc);
    let stonith: Vec<&str> = st
        .iter()
        .filter(|s| s.0 == "stonith")
        .map(|s| s.1.as_str())
        .collect();
    assert_eq!(
        stonith.len(),
        2,
        "the interrupted step and its retry: {st:?}"
    );
    assert_eq!(stonith[1], "ok");
    assert!(st.contains(&("promote".into(), "ok".into())), "{st:?}");
    Ok(())
}

fn sync_state(s: &serde_json::Value, node: &str) -> String {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n["sync_state"].to_string())
        .unwrap_or_default()
}

/// `sync`: losing the standby drops the requirement, so writes continue; the standby is
/// synchronous again once it is back and caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_drops_the_requirement_while_the_standby_is_away() -> Result<()> {
    let regions = TwoRegions::start("sync-drop", r#"replication = "sync""#).await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    d.wait_until("eu-west-1 synchronous", T, |s| {
        sync_state(s, "eu-west-1") == "\"sync\""
    })
    .await?;

    regions.standby.stop().await?;
    let s = d
        .wait_until("eu-west-1 seen as gone", T, |s| {
            sync_state(s, "eu-west-1") == "\"disconnected\""
        })
        .await?;
    let deadline = Instant::now() + T;
    while !pg::probe(&regions.primary.conninfo(), Duration::from_secs(2))
        .await?
        .synchronous_standby_names
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "synchronous_standby_names never cleared: {s:#}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = pg::connect(&regions.endpoint_conninfo(), Duration::from_secs(5)).await?;
    tokio::time::timeout(T, c.batch_execute("CREATE TABLE during_outage(x int)")).await??;

    regions.standby.server.start(T).await?;
    d.wait_until("eu-west-1 synchronous again", T, |s| {
        sync_state(s, "eu-west-1") == "\"sync\""
    })
    .await?;
    Ok(())
}

/// `sync-strict`: losing the standby makes writes wait until it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_strict_mode_makes_writes_wait_for_the_standby() -> Result<()> {
    let regions = TwoRegions::start("sync-strict", r#"replication = "sync-strict""#).await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    d.wait_until("eu-west-1 synchronous", T, |s| {
        sync_state(s, "eu-west-1") == "\"sync\""
    })
    .await?;
    regions.standby.stop().await?;
    d.wait_until("eu-west-1 seen as gone", T, |s| {
        sync_state(s, "eu-west-1") == "\"disconnected\""
    })
    .await?;

    let c = pg::connect(&regions.endpoint_conninfo(), Duration::from_secs(5)).await?;
    let write = tokio::spawn(async move { c.batch_execute("CREATE TABLE waits(x int)").await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !write.is_finished(),
        "a commit returned without the synchronous standby"
    );
    assert!(
        !pg::probe(&regions.primary.conninfo(), Duration::from_secs(2))
            .await?
            .synchronous_standby_names
            .is_empty()
    );

    regions.standby.server.start(T).await?;
    tokio::time::timeout(T, write).await???;
    Ok(())
}
