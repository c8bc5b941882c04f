//! `lifeboat demo`: two PostgreSQL regions on loopback, the controller and endpoint, a canary
//! writer; then the primary is killed and Lifeboat recovers. Prints the timeline, the measured
//! RTO and the acknowledged writes lost, and removes everything it started.
//!
//! The servers and the canary come from `lifeboat-testkit`: the demo is the same set-up the
//! integration tests run, shown to a person.

use crate::client::{render_incident, render_status};
use crate::daemon;
use anyhow::{bail, Context, Result};
use lifeboat_postgres::LocalServer;
use lifeboat_testkit::{canary_seqs, Canary, TwoRegions};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

pub async fn main() -> ExitCode {
    if let Err(e) = LocalServer::find_bin_dir() {
        eprintln!("error: {e}");
        eprintln!("the demo needs PostgreSQL 15 or newer: on Debian or Ubuntu run `apt-get install -y postgresql`, then `lifeboat demo` again");
        return ExitCode::from(1);
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the demo failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run() -> Result<()> {
    println!("1. starting two PostgreSQL regions on loopback: us-east-1 (primary) and eu-west-1 (streaming standby)");
    let regions = TwoRegions::start("demo", "")
        .await
        .context("setting up the PostgreSQL servers")?;
    println!("   config: {}", regions.config_path.display());
    let loaded = lifeboat_config::load(&regions.config_path)?;
    println!(
        "2. starting the controller; clients connect to the endpoint 127.0.0.1:{}",
        regions.endpoint_port
    );
    let running = daemon::start(loaded.config).await?;
    let h = running.handles[0].clone();
    let result = scenario(&regions, &h).await;
    running.shutdown().await;
    println!(
        "6. cleaning up: stopping servers, removing {}",
        regions.dir.path().display()
    );
    drop(regions);
    result
}

async fn scenario(regions: &TwoRegions, h: &lifeboat_exec::Handle) -> Result<()> {
    wait_for(
        "the endpoint routing to us-east-1",
        Duration::from_secs(30),
        || (h.status().endpoint.routes_to.as_deref() == Some("us-east-1")).then_some(()),
    )
    .await?;
    println!("3. canary writing through the endpoint every 10 ms");
    let canary = Canary::start(regions.endpoint_conninfo(), Duration::from_millis(10)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    print!("{}", indent(&render_status(&h.status())));

    println!("4. SIGKILL to every process of us-east-1 (the primary region is lost)");
    let fault = SystemTime::now();
    let started = Instant::now();
    regions.primary.kill()?;
    let incident = wait_for("a finished failover", Duration::from_secs(60), || {
        let s = h.status();
        (s.primary.as_deref() == Some("eu-west-1") && s.in_flight.is_none())
            .then_some(s.last_incident)
            .flatten()
    })
    .await?;
    println!(
        "   eu-west-1 is the primary {:.2} s after the kill",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = canary.stop().await?;
    let present = canary_seqs(&regions.standby.conninfo()).await?;
    let lost = log.lost(&present);
    let first_ack = log
        .recovered_after(fault)
        .context("no write was acknowledged after the failover")?;
    let rto = first_ack.duration_since(fault).unwrap_or_default();

    println!("5. what happened");
    if let Some(i) = h.store.incident(incident)? {
        print!("{}", indent(&render_incident(&i)));
    }
    print!("{}", indent(&render_status(&h.status())));
    println!("   measured by the canary (a client of the endpoint):");
    println!(
        "     kill -> first acknowledged write: {:.3} s",
        rto.as_secs_f64()
    );
    println!(
        "     writes acknowledged: {}, failed attempts during the outage: {}",
        log.acked.len(),
        log.failed.len()
    );
    println!("     acknowledged writes lost: {} (asynchronous replication; `replication = \"sync\"` makes this 0)", lost.len());
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}
