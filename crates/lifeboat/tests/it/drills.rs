//! Drills against real PostgreSQL servers: faults applied on purpose, recovery measured by the
//! drill's own canary, the verdict against the tier, and everything put back — also when the
//! process running the drill is SIGKILLed while its fault is applied.

use crate::{get, stderr, stdout, Daemon};
use anyhow::{Context, Result};
use lifeboat_testkit::{SilentPort, TwoRegions};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Two regions with `drills` appended to their config.
async fn regions(prefix: &str, failover: &str, drills: &str) -> Result<TwoRegions> {
    let r = TwoRegions::start(prefix, failover).await?;
    let mut text = std::fs::read_to_string(&r.config_path)?;
    text.push('\n');
    text.push_str(drills);
    std::fs::write(&r.config_path, text)?;
    Ok(r)
}

/// [`regions`] and a daemon protecting them, routing to us-east-1.
async fn drilled(prefix: &str, failover: &str, drills: &str) -> Result<(TwoRegions, Daemon)> {
    let r = regions(prefix, failover, drills).await?;
    let d = Daemon::start(&r, "us-east-1").await?;
    Ok((r, d))
}

async fn report(d: &Daemon, id: i64) -> Result<Value> {
    get(&format!("{}/v1/drill-runs/{id}", d.api)).await
}

fn checks(r: &Value) -> Vec<(String, bool)> {
    r["verdict"]["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_owned(),
                        c["pass"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The only run of `drill`.
async fn only_run(d: &Daemon, drill: &str) -> Result<Value> {
    let h = get(&format!("{}/v1/drills/{drill}/history", d.api)).await?;
    let runs = h["runs"].as_array().context("runs")?;
    assert_eq!(runs.len(), 1, "{h:#}");
    report(d, runs[0]["id"].as_i64().context("id")?).await
}

fn timeline(r: &Value) -> String {
    r["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|e| {
                    format!(
                        "{} {}\n",
                        e["outcome"].as_str().unwrap_or(""),
                        e["what"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_failure_drill_kills_the_primary_measures_the_recovery_and_fails_back(
) -> Result<()> {
    let (r, d) = drilled(
        "drill-kill",
        "",
        "[drills.kill-primary]\nscenario = \"primary-failure\"\nservice = \"orders\"\nduration = \"3s\"\nschedule = \"0 10 * * TUE\"\n",
    )
    .await?;

    let dry = d.cli(&["drill", "run", "kill-primary", "--dry-run"]);
    assert!(dry.status.success(), "{}{}", stdout(&dry), stderr(&dry));
    assert!(
        stdout(&dry).contains("kill node us-east-1"),
        "{}",
        stdout(&dry)
    );
    assert!(
        r.primary.server.is_running().await,
        "a dry run applies nothing"
    );

    let (said, rep) = passing(&d, "kill-primary").await?;
    assert!(said.contains("PASSED"), "{said}");
    assert_eq!(rep["status"], "passed");
    for (name, pass) in checks(&rep) {
        assert!(pass, "{name} failed: {rep:#}");
    }
    let m = &rep["measured"];
    assert!(m["rto_ms"].as_u64().is_some(), "{m}");
    assert_eq!(m["lost"].as_array().map(Vec::len), Some(0), "{m}");
    assert!(m["acked"].as_u64().unwrap() > 20, "{m}");
    assert_eq!(rep["primary_before"], "us-east-1");
    assert_eq!(rep["primary_after"], "eu-west-1");
    assert_eq!(
        rep["primary_at_end"],
        "us-east-1",
        "failback\n{}",
        timeline(&rep)
    );
    assert!(rep["faults"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["state"] == "undone"));
    assert!(
        !rep["incidents"].as_array().unwrap().is_empty(),
        "the failover's incident is linked"
    );
    let s = d.status().await?;
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["health"], "up", "{s:#}");
    }

    // The report as a person reads it, and the chart.
    let id = rep["id"].as_i64().unwrap().to_string();
    let md = d.cli(&["drill", "report", &id]);
    assert!(stdout(&md).contains("## Verdict: pass"), "{}", stdout(&md));
    let svg_path = r.dir.path().join("chart.svg");
    let svg = d.cli(&["drill", "report", &id, "--svg", svg_path.to_str().unwrap()]);
    assert!(svg.status.success(), "{}", stderr(&svg));
    let svg = std::fs::read_to_string(&svg_path)?;
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("fault"),
        "{svg}"
    );
    let list = d.cli(&["drill", "list"]);
    assert!(
        stdout(&list).contains("kill-primary") && stdout(&list).contains("passed"),
        "{}",
        stdout(&list)
    );
    let hist = d.cli(&["drill", "history", "kill-primary"]);
    assert!(
        stdout(&hist).contains("RTO over 1 runs"),
        "{}",
        stdout(&hist)
    );
    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await?
        .text()
        .await?;
    for want in [
        "lifeboat_drill_last_success_timestamp_seconds{drill=\"kill-primary\"}",
        "lifeboat_drill_rto_seconds{drill=\"kill-primary\"}",
        "lifeboat_drill_runs_total{drill=\"kill-primary\",result=\"passed\"} 1",
        "lifeboat_drill_faults_applied 0",
    ] {
        assert!(metrics.contains(want), "{want} missing in\n{metrics}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_lag_drill_passes_only_because_lifeboat_refuses_to_promote_and_says_why(
) -> Result<()> {
    let (_servers, d) = drilled(
        "drill-lag",
        "max-lag = \"1MiB\"",
        "[drills.lagging]\nscenario = \"replica-lag\"\nservice = \"orders\"\nduration = \"3s\"\n",
    )
    .await?;
    let (_, rep) = passing(&d, "lagging").await?;
    assert_eq!(rep["primary_after"], "us-east-1", "nothing promoted");
    let refusal = rep["refusal"].to_string();
    assert!(
        refusal.contains("eu-west-1 is") && refusal.contains("behind (limit 1 MiB)"),
        "the reason names the standby and the limit: {refusal}"
    );
    assert_eq!(
        checks(&rep).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        ["refused", "data loss", "rolled back"]
    );
    // Put back: the standby streams again and catches up.
    d.wait_until("the standby caught up", T, |s| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["health"] == "up")
            && node(s, "eu-west-1")["lag_bytes"] == 0
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_outage_drill_silences_the_primary_region_and_fails_back() -> Result<()> {
    if let Some(why) = SilentPort::unavailable() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let (_servers, d) = drilled(
        "drill-region",
        "",
        "[drills.east-dark]\nscenario = \"region-outage\"\nservice = \"orders\"\nregion = \"us-east\"\nduration = \"4s\"\n",
    )
    .await?;
    let (_, rep) = passing(&d, "east-dark").await?;
    assert_eq!(rep["primary_after"], "eu-west-1");
    assert_eq!(rep["primary_at_end"], "us-east-1");
    assert!(rep["faults"][0]["fault"]
        .as_str()
        .unwrap()
        .starts_with("silence region us-east"));
    Ok(())
}

fn node<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or(&Value::Null)
}

/// `lifeboat drill run NAME`, followed to its end: its output and its report, or an error
/// with both and the daemon's log unless it passed.
pub async fn passing(d: &Daemon, name: &str) -> Result<(String, Value)> {
    let out = d.cli(&["drill", "run", name]);
    let rep = only_run(d, name).await?;
    anyhow::ensure!(
        out.status.success(),
        "drill {name} did not pass:\n{}{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        timeline(&rep),
        d.log()
    );
    Ok((stdout(&out), rep))
}

/// The state letter of a process (`T`: stopped).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn postmaster_pid(r: &TwoRegions) -> Result<i32> {
    let text = std::fs::read_to_string(r.primary.server.data_dir.join("postmaster.pid"))?;
    Ok(text.lines().next().context("pid line")?.trim().parse()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_whose_runner_is_killed_has_its_fault_undone_at_the_next_start() -> Result<()> {
    let r = regions(
        "drill-killed",
        "mode = \"manual\"",
        "[drills.hang]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\nduration = \"60s\"\n",
    )
    .await?;
    let mut d = Daemon::start(&r, "us-east-1").await?;
    let pid = postmaster_pid(&r)?;
    let out = d.cli(&["drill", "run", "hang", "--no-wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // A second drill at once is refused, and changes nothing.
    let twice = d.cli(&["drill", "run", "hang", "--no-wait"]);
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("is already running"),
        "{}",
        stderr(&twice)
    );

    let deadline = Instant::now() + T;
    while proc_state(pid) != Some('T') {
        assert!(
            Instant::now() < deadline,
            "the primary was never paused\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proc_state(pid),
        Some('T'),
        "still paused while nobody runs the drill"
    );

    let d = Daemon::start(&r, "us-east-1").await?;
    assert_ne!(
        proc_state(pid),
        Some('T'),
        "the pause was undone at the start"
    );
    let rep = only_run(&d, "hang").await?;
    assert_eq!(rep["status"], "interrupted", "{rep:#}");
    let tl = timeline(&rep);
    assert!(tl.contains("undone at the next start"), "{tl}");
    assert!(
        rep["faults"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] == "undone"),
        "{rep:#}"
    );
    assert!(d.log().contains("undone at restart"), "{}", d.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_drills_are_refused_with_the_reason() -> Result<()> {
    let r = regions(
        "drill-bad",
        "",
        "[drills.typo]\nscenario = \"primary-failur\"\nservice = \"orders\"\n\n[drills.nobody]\nscenario = \"primary-failure\"\nservice = \"payments\"\n\n[drills.cron]\nscenario = \"primary-failure\"\nservice = \"orders\"\nschedule = \"every tuesday\"\n\n[drills.wrong-key]\nscenario = \"replica-lag\"\nservice = \"orders\"\nfault = \"kill\"\n",
    )
    .await?;
    let out = std::process::Command::new(crate::BIN)
        .args(["config", "check"])
        .arg(&r.config_path)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out) + &stdout(&out);
    for want in [
        "drills.typo.scenario",
        "unknown scenario \"primary-failur\"; known scenarios: primary-failure, region-outage, gradual-degradation, partition, disk-full, replica-lag, data-corruption",
        "drills.nobody.service",
        "unknown service \"payments\"; known services: orders",
        "drills.cron.schedule",
        "is not a cron expression of five fields",
        "drills.wrong-key.fault",
        "only a primary-failure drill takes a fault",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }

    // A valid config: an unknown drill, and a drill on a service that is not healthy.
    let (r, d) = drilled(
        "drill-unfit",
        "",
        "[drills.hang]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\n\n[maintenance.always]\nstart = \"* * * * *\"\nduration = \"2m\"\nservices = [\"orders\"]\n",
    )
    .await?;
    let out = d.cli(&["drill", "run", "hang", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("maintenance window always (opened ")
            && stderr(&out).contains("does not allow drills"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["drill", "run", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown drill \"nope\"; configured drills: hang"),
        "{}",
        stderr(&out)
    );
    r.standby.stop().await?;
    d.wait_until("the standby is down", T, |s| {
        node(s, "eu-west-1")["health"] == "down"
    })
    .await?;
    let out = d.cli(&["drill", "run", "hang"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did not start: node eu-west-1 is down"),
        "{}",
        stderr(&out)
    );
    assert!(r.primary.server.is_running().await);
    let h = get(&format!("{}/v1/drills/hang/history", d.api)).await?;
    assert_eq!(
        h["runs"].as_array().map(Vec::len),
        Some(0),
        "a refused drill is not a run"
    );
    Ok(())
}

/// Waits until the run `id` is no longer running.
async fn ended(d: &Daemon, id: i64) -> Result<Value> {
    let deadline = Instant::now() + T;
    loop {
        let rep = report(d, id).await?;
        if rep["status"] != "running" {
            return Ok(rep);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "run {id} did not end\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn paused(pid: i32, d: &Daemon) -> Result<()> {
    let deadline = Instant::now() + T;
    while proc_state(pid) != Some('T') {
        anyhow::ensure!(Instant::now() < deadline, "never paused\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn run_id(out: &std::process::Output) -> Result<i64> {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("run "))
        .with_context(|| format!("no run id in {text}"))?;
    Ok(line.split_whitespace().nth(1).context("id")?.parse()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_drill_and_a_daemon_stopped_mid_drill_undo_their_fault() -> Result<()> {
    let r = regions(
        "drill-abort",
        "mode = \"manual\"",
        "[drills.hang]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\nduration = \"60s\"\n",
    )
    .await?;
    let mut d = Daemon::start(&r, "us-east-1").await?;
    let pid = postmaster_pid(&r)?;

    let out = d.cli(&["drill", "run", "hang", "--no-wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = run_id(&out)?;
    paused(pid, &d).await?;
    let abort = d.cli(&["drill", "abort"]);
    assert!(abort.status.success(), "{}", stderr(&abort));
    let rep = ended(&d, id).await?;
    assert_ne!(proc_state(pid), Some('T'), "resumed after the abort");
    assert_eq!(rep["status"], "aborted");
    assert!(
        rep["verdict"]["checks"][0]["text"]
            .as_str()
            .unwrap()
            .contains("aborted by api"),
        "{rep:#}"
    );
    assert!(rep["faults"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["state"] == "undone"));
    let again = d.cli(&["drill", "abort"]);
    assert!(!again.status.success() && stderr(&again).contains("no drill is running"));

    // SIGTERM while the fault is applied: the drain undoes it.
    d.wait_until("healthy again", T, |s| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["health"] == "up")
    })
    .await?;
    let out = d.cli(&["drill", "run", "hang", "--no-wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = run_id(&out)?;
    paused(pid, &d).await?;
    assert!(d.stop()?.success());
    assert_ne!(proc_state(pid), Some('T'), "resumed by the stopping daemon");
    let d = Daemon::start(&r, "us-east-1").await?;
    let rep = report(&d, id).await?;
    assert_eq!(rep["status"], "aborted", "{rep:#}");
    assert!(
        timeline(&rep).contains("the daemon is stopping"),
        "{}",
        timeline(&rep)
    );
    // The restarted daemon shows the drill's last run from the store.
    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await?
        .text()
        .await?;
    for want in [
        "lifeboat_drill_last_run_timestamp_seconds{drill=\"hang\"}",
        "lifeboat_drill_passed{drill=\"hang\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing in\n{metrics}");
    }
    Ok(())
}

/// A destructive statement (the drill's own rows dropped) recovered by a point-in-time
/// restore to just before it, from the continuous WAL archive, into a side server that the
/// drill starts, counts and removes.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_corruption_drill_restores_the_dropped_rows_to_just_before_the_statement(
) -> Result<()> {
    let r = TwoRegions::start("drill-pitr", "").await?;
    let dir = &r.dir;
    let (repo, pass) = crate::backup::new_repo(dir)?;
    let scratch = dir.subdir("scratch")?;
    let mut config = std::fs::read_to_string(&r.config_path)?;
    config.push_str(&crate::backup::following_the_primary(
        &repo, &pass, dir, "1h",
    ));
    config.push_str(&format!(
        "\n[drills.oops]\nscenario = \"data-corruption\"\nservice = \"orders\"\nscratch-dir = \"{}\"\n",
        scratch.display()
    ));
    std::fs::write(&r.config_path, config)?;
    let d = Daemon::start(&r, "us-east-1").await?;
    crate::backup::wait_for_base_backup_of(&repo, &r.primary, &d).await?;

    let (_, rep) = passing(&d, "oops").await?;
    assert_eq!(rep["restore"]["found"], 1000, "{rep:#}");
    assert_eq!(
        checks(&rep).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        ["restored", "rto", "data loss", "rolled back"]
    );
    assert_eq!(rep["primary_after"], "us-east-1", "no failover");
    assert_eq!(
        std::fs::read_dir(&scratch)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()?
            .len(),
        0,
        "the restored copy is removed: {}",
        timeline(&rep)
    );
    // The dropped table is gone from the primary: only the restored copy had it.
    let c = lifeboat_postgres::connect(&r.endpoint_conninfo(), Duration::from_secs(5)).await?;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'lifeboat_drill_rows_%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 0);
    Ok(())
}

/// The primary slows down in three stages (stalls of 50, 150, 400 ms), then is lost: no
/// failover while it is only slow, a failover once it is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_gradual_degradation_drill_holds_while_the_primary_is_slow_and_fails_over_when_lost(
) -> Result<()> {
    let (_servers, d) = drilled(
        "drill-slow",
        "",
        "[drills.slow]\nscenario = \"gradual-degradation\"\nservice = \"orders\"\nduration = \"8s\"\n",
    )
    .await?;
    let (_, rep) = passing(&d, "slow").await?;
    assert_eq!(rep["degraded"]["max_stall_ms"], 400);
    assert!(rep["degraded"]["promoted_while_slow"].is_null());
    assert_eq!(
        checks(&rep).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        [
            "held while slow",
            "failover",
            "rto",
            "data loss",
            "rolled back"
        ]
    );
    assert_eq!(rep["primary_after"], "eu-west-1");
    assert_eq!(rep["primary_at_end"], "us-east-1");
    Ok(())
}

/// The primary's region cut off from the standby's (not from Lifeboat): nothing is
/// promoted, writes go on, the standby stops streaming and catches up afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_drill_cuts_the_regions_apart_and_nothing_is_promoted() -> Result<()> {
    if let Some(why) = SilentPort::unavailable() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let (_servers, d) = drilled(
        "drill-split",
        "",
        "[drills.split]\nscenario = \"partition\"\nservice = \"orders\"\nduration = \"4s\"\n",
    )
    .await?;
    let (_, rep) = passing(&d, "split").await?;
    assert_eq!(rep["cut_off"][0], "eu-west-1", "{rep:#}");
    assert_eq!(rep["primary_after"], "us-east-1");
    d.wait_until("the standby streams again", T, |s| {
        node(s, "eu-west-1")["streaming"] == true
    })
    .await?;
    Ok(())
}

/// The primary's file system filled up, then freed: writes fail meanwhile, Lifeboat does not
/// fail over (its probes read), nothing acknowledged is lost, and the report says how long
/// writes were down and what Lifeboat saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_disk_full_drill_measures_the_write_outage_and_loses_nothing() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the primary's small file system needs root");
        return Ok(());
    }
    let r = TwoRegions::start_with("drill-full", "", Some("96m")).await?;
    let mut text = std::fs::read_to_string(&r.config_path)?;
    text.push_str(
        "\n[drills.full]\nscenario = \"disk-full\"\nservice = \"orders\"\nduration = \"4s\"\ncanary-interval = \"5ms\"\nrto = \"30s\"\n",
    );
    std::fs::write(&r.config_path, text)?;
    let d = Daemon::start(&r, "us-east-1").await?;
    let (_, rep) = passing(&d, "full").await?;
    assert_eq!(rep["measured"]["outage"], true, "writes failed: {rep:#}");
    let rto = rep["measured"]["rto_ms"].as_u64().unwrap();
    assert!(
        rto >= 4_000,
        "writes came back only once the space was freed: {rto} ms"
    );
    assert_eq!(rep["primary_after"], "us-east-1");
    let tl = timeline(&rep);
    assert!(
        tl.contains("Lifeboat's view meanwhile: primary us-east-1 healthy"),
        "{tl}"
    );
    let data_dir = &r.primary.server.data_dir;
    assert!(
        std::fs::read_dir(data_dir)?.flatten().all(|e| !e
            .file_name()
            .to_string_lossy()
            .starts_with("lifeboat_drill_fill")),
        "the fill file is removed"
    );
    Ok(())
}

/// A drill stops itself, and undoes its fault, when the canary has had nothing acknowledged
/// for `max-outage` (here: a hang nothing fails over, in manual mode).
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_past_its_max_outage_stops_and_undoes_its_fault() -> Result<()> {
    let (r, d) = drilled(
        "drill-guard",
        "mode = \"manual\"",
        "[drills.hang]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\nduration = \"60s\"\nmax-outage = \"2s\"\n",
    )
    .await?;
    let pid = postmaster_pid(&r)?;
    let out = d.cli(&["drill", "run", "hang"]);
    assert_eq!(out.status.code(), Some(1), "an aborted drill does not pass");
    let rep = only_run(&d, "hang").await?;
    assert_eq!(rep["status"], "aborted", "{rep:#}");
    assert!(
        timeline(&rep).contains("no canary write was acknowledged for 2s (max-outage)"),
        "{}",
        timeline(&rep)
    );
    assert_ne!(proc_state(pid), Some('T'), "the hang is undone");
    Ok(())
}

/// A scheduled drill starts by itself when its cron expression says (every minute here).
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_drill_starts_by_itself_and_its_result_is_a_notice() -> Result<()> {
    let rx_dir = lifeboat_testkit::TestDir::new("drill-cron-receiver")?;
    let rx = lifeboat_testkit::notify::Receiver::start(rx_dir.path(), "s3cret").await?;
    std::fs::write(rx_dir.path().join("secret"), "s3cret")?;
    let (servers, d) = drilled(
        "drill-cron",
        "mode = \"manual\"",
        &format!("[drills.minutely]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\nduration = \"1s\"\nschedule = \"* * * * *\"\nfailback = false\n\n[notify.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret-file = \"{}\"\n", rx.url("/hook"), rx_dir.path().join("secret").display()),
    )
    .await?;
    let _ = &servers;
    let deadline = Instant::now() + Duration::from_secs(75);
    let rep = loop {
        let h = get(&format!("{}/v1/drills/minutely/history", d.api)).await?;
        if let Some(id) = h["runs"][0]["id"].as_i64() {
            let rep = ended(&d, id).await?;
            break rep;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no scheduled run within 75 s\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        timeline(&rep).contains("started by schedule"),
        "{rep:#}\n{}",
        d.log()
    );
    assert_ne!(rep["status"], "skipped", "{rep:#}");
    // Passed or failed, the run is a notice under the drill's key (a pass resolves a failure).
    let kind = format!("drill-{}", rep["status"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let calls = rx.calls_to("/hook");
        if let Some(c) = calls.iter().find(|c| c["body"]["type"] == kind.as_str()) {
            assert_eq!(c["body"]["data"]["key"], "drill/minutely");
            assert_eq!(c["body"]["data"]["details"]["run"], rep["id"].to_string());
            assert_eq!(c["signature_ok"], true);
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no {kind} notice: {calls:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
