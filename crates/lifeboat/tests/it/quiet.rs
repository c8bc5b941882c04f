//! Quiet faults: the primary hangs (every process stopped) or its network goes silent
//! (packets dropped, nothing refused or reset). The failover must happen while the fault is
//! still in place, lose no acknowledged write in sync mode, and the old primary must be
//! fenced when it comes back.
//!
//! `fence-timeout` is set to 60 s, longer than the fault is ever held: a fence that held the
//! promotion hostage could not let it happen in time, whatever the machine's speed.

use crate::{incident, Daemon};
use anyhow::{bail, Result};
use lifeboat_postgres as pg;
use lifeboat_testkit::{canary_seqs, Canary, SilentPort, TwoRegions};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// The longest a fault is held while waiting for the failover.
const HOLD: Duration = Duration::from_secs(30);

enum Quiet {
    Hang,
    SilentNetwork,
}

fn promoted(s: &Value) -> bool {
    s["primary"] == "eu-west-1"
        && s["in_flight"].is_null()
        && s["endpoint"]["routes_to"] == "eu-west-1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_is_failed_over_while_it_is_still_hung_and_fenced_when_it_wakes(
) -> Result<()> {
    fail_over_while_quiet("hang", Quiet::Hang).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_behind_a_silent_network_is_failed_over_while_silent_and_fenced_on_return(
) -> Result<()> {
    if let Some(why) = SilentPort::unavailable() {
        eprintln!("skipped: a silent network cannot be made here: {why}");
        return Ok(());
    }
    fail_over_while_quiet("silent", Quiet::SilentNetwork).await
}

async fn fail_over_while_quiet(prefix: &str, quiet: Quiet) -> Result<()> {
    let regions =
        TwoRegions::start(prefix, "replication = \"sync\"\nfence-timeout = \"60s\"\n").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    d.wait_until("eu-west-1 synchronous", HOLD, |s| {
        s["nodes"].as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["name"] == "eu-west-1" && n["sync_state"] == "sync")
        })
    })
    .await?;
    let canary = Canary::start(regions.endpoint_conninfo(), Duration::from_millis(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let fault = SystemTime::now();
    let silent = match quiet {
        Quiet::Hang => {
            regions.primary.signal_all(Signal::SIGSTOP)?;
            None
        }
        Quiet::SilentNetwork => Some(SilentPort::start(regions.primary.port())?),
    };
    let during = d
        .wait_until("failover while the primary is quiet", HOLD, promoted)
        .await;
    // Let clients write through the new primary while the old one is still quiet.
    if during.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A stopped server cannot be fenced yet: its fence is still running, and status says so.
    let fencing_while_hung = match quiet {
        Quiet::Hang => Some(d.status().await?["fencing_in_background"].clone()),
        Quiet::SilentNetwork => None,
    };
    let fault_ended = SystemTime::now();
    match quiet {
        Quiet::Hang => regions.primary.signal_all(Signal::SIGCONT)?,
        Quiet::SilentNetwork => drop(silent),
    }
    let s = during?;
    assert_eq!(s["epoch"], 2, "{s:#}");
    if let Some(f) = fencing_while_hung {
        assert_eq!(f, serde_json::json!(["us-east-1"]));
    }

    let log = canary.stop().await?;
    let back = log
        .recovered_after(fault)
        .expect("clients write again through the endpoint");
    assert!(
        back < fault_ended,
        "clients could write again only after the fault ended"
    );
    let present = canary_seqs(&regions.standby.conninfo()).await?;
    assert!(
        log.acked.len() > 20,
        "the canary wrote too little: {}",
        log.acked.len()
    );
    assert_eq!(
        log.lost(&present),
        Vec::<i64>::new(),
        "acknowledged writes lost in sync mode"
    );

    // Back from the fault, the old primary is fenced: stopped, or read-only, never writable.
    wait_fenced(&regions.primary.conninfo(), &d).await?;
    let s = d.status().await?;
    let us = s["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "us-east-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(us["role"], "needs-rejoin", "{us}");
    assert_eq!(s["primary"], "eu-west-1", "{s:#}");

    // The fence that did not hold the promotion is on the incident's timeline.
    let id = s["last_incident"].as_i64().expect("an incident");
    let failover = first_failover(&d, id).await?;
    let timeline = failover["timeline"].as_array().cloned().unwrap_or_default();
    let pos = |step: &str, pred: &dyn Fn(&Value) -> bool| {
        timeline
            .iter()
            .position(|e| e["step"] == step && pred(e))
            .unwrap_or_else(|| panic!("no {step} in {timeline:#?}"))
    };
    let inline = pos("fence-node", &|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("in the background"))
    });
    let promote = pos("promote", &|e| e["outcome"] == "ok");
    assert!(inline < promote, "{timeline:#?}");
    assert!(
        timeline.iter().any(|e| e["step"] == "fence-node"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("background:"))),
        "the background fence is recorded: {timeline:#?}"
    );
    Ok(())
}

/// The failover incident: the newest incident may be the fence-on-sight that followed it.
async fn first_failover(d: &Daemon, newest: i64) -> Result<Value> {
    let deadline = Instant::now() + HOLD;
    loop {
        for id in (1..=newest).rev() {
            let inc = incident(d, id).await?;
            let background_done = inc["timeline"].as_array().is_some_and(|t| {
                t.iter().any(|e| {
                    e["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("background:"))
                })
            });
            if inc["kind"] == "failover" && background_done {
                return Ok(inc);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no failover incident with a finished background fence; daemon log:\n{}",
                d.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_fenced(conn: &pg::ConnInfo, d: &Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let fenced = match pg::probe(conn, Duration::from_secs(2)).await {
            Err(_) => true,
            Ok(o) => o.default_read_only || o.in_recovery,
        };
        if fenced {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the old primary is still writable after its return\n{}",
                d.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
