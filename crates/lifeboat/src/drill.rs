//! `lifeboat drill …`: drills over the daemon's API.

use crate::client::{fail, Api};
use lifeboat_core::time::format_ms;
use lifeboat_exec::drill::report::utc;
use lifeboat_exec::drill::{DrillInfo, Report, RunSummary, Started};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub async fn list(api: &Api) -> ExitCode {
    let v = match api.get("/v1/drills").await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let drills: Vec<DrillInfo> = match serde_json::from_value(v["drills"].clone()) {
        Ok(d) => d,
        Err(e) => return fail(format!("unexpected answer: {e}")),
    };
    if drills.is_empty() {
        println!("no drills configured; add a [drills.NAME] section");
    }
    println!(
        "{:<20} {:<16} {:<12} {:<16} {:<20} LAST RUN",
        "DRILL", "SCENARIO", "SERVICE", "SCHEDULE", "NEXT (UTC)"
    );
    for d in drills {
        let last = match (&d.last_run, d.running) {
            (_, true) => "running now".to_string(),
            (Some(r), _) => summary(r),
            (None, _) => "never".into(),
        };
        println!(
            "{:<20} {:<16} {:<12} {:<16} {:<20} {last}",
            d.name,
            d.scenario,
            d.service,
            d.schedule.as_deref().unwrap_or("-"),
            d.next_run_ms.map(utc).unwrap_or_else(|| "-".into()),
        );
    }
    ExitCode::SUCCESS
}

fn summary(r: &RunSummary) -> String {
    format!(
        "run {} {} {}: RTO {}, {} lost",
        r.id,
        r.status,
        utc(r.started_ms),
        r.rto_ms.map(format_ms).unwrap_or_else(|| "-".into()),
        r.lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
    )
}

/// Starts the drill and follows it until it ends; Ctrl-C aborts it (the rollback still
/// runs, and is followed). Exit 0 when it passed.
pub async fn run(api: &Api, name: &str, dry_run: bool, wait: bool) -> ExitCode {
    let v = match api
        .post(
            &format!("/v1/drills/{name}/run"),
            json!({ "dry_run": dry_run }),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let started: Started = match serde_json::from_value(v.clone()) {
        Ok(s) => s,
        Err(e) => return fail(format!("unexpected answer: {e}")),
    };
    if api.json {
        if dry_run || !wait {
            println!("{v:#}");
            return ExitCode::SUCCESS;
        }
        return match started.run {
            Some(id) => follow(api, id).await,
            None => ExitCode::SUCCESS,
        };
    }
    println!(
        "drill {}{}:",
        started.drill,
        if dry_run {
            " (dry run: nothing is applied)"
        } else {
            ""
        }
    );
    for (i, step) in started.plan.iter().enumerate() {
        println!("  {}. {step}", i + 1);
    }
    let Some(id) = started.run else {
        return ExitCode::SUCCESS;
    };
    println!("run {id} started; `lifeboat drill report {id}` shows it");
    if !wait {
        return ExitCode::SUCCESS;
    }
    follow(api, id).await
}

async fn follow(api: &Api, id: i64) -> ExitCode {
    let mut shown = 0;
    let mut aborted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Bounded: a drill ends by its own timeout; this only guards against a daemon that stops
    // answering for good.
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = &mut ctrl_c, if !aborted => {
                aborted = true;
                eprintln!("aborting drill run {id}; its rollback runs…");
                if let Err(e) = api.post("/v1/drills/abort", json!({})).await {
                    eprintln!("error: {e}");
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let r: Report = match api.get(&format!("/v1/drill-runs/{id}")).await {
            Ok(v) => match serde_json::from_value(v) {
                Ok(r) => r,
                Err(e) => return fail(format!("unexpected report: {e}")),
            },
            Err(e) => {
                failures += 1;
                if failures > 40 {
                    return fail(e);
                }
                continue;
            }
        };
        failures = 0;
        let zero = r.fault_at_ms.unwrap_or(r.started_ms);
        for e in r.timeline.iter().skip(shown).filter(|_| !api.json) {
            let d = e.at_ms as i64 - zero as i64;
            println!(
                "  {}{:>8.3} s  {:<6} {}",
                if d < 0 { "-" } else { "+" },
                d.unsigned_abs() as f64 / 1000.0,
                e.outcome,
                e.what
            );
        }
        shown = r.timeline.len();
        if r.status != "running" {
            if api.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!("\n{}", r.status.to_uppercase());
                for c in r.verdict.iter().flat_map(|v| &v.checks) {
                    println!(
                        "  {} {}: {}",
                        if c.pass { "ok  " } else { "FAIL" },
                        c.name,
                        c.text
                    );
                }
            }
            return if r.status == "passed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
    }
}

pub async fn abort(api: &Api) -> ExitCode {
    match api.post("/v1/drills/abort", json!({})).await {
        Ok(v) if api.json => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!("{}", v["message"].as_str().unwrap_or("aborted"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub async fn report(api: &Api, id: i64, svg: Option<&Path>) -> ExitCode {
    if let Some(path) = svg {
        let text = match api
            .get_text(&format!("/v1/drill-runs/{id}?format=svg"))
            .await
        {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        return match std::fs::write(path, text) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("writing {}: {e}", path.display())),
        };
    }
    let path = if api.json {
        format!("/v1/drill-runs/{id}")
    } else {
        format!("/v1/drill-runs/{id}?format=markdown")
    };
    match api.get_text(&path).await {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub async fn history(api: &Api, name: &str, limit: u32) -> ExitCode {
    let v: Value = match api
        .get(&format!("/v1/drills/{name}/history?limit={limit}"))
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let runs: Vec<RunSummary> = match serde_json::from_value(v["runs"].clone()) {
        Ok(r) => r,
        Err(e) => return fail(format!("unexpected answer: {e}")),
    };
    println!(
        "{:<6} {:<12} {:<20} {:>10} {:>6} {:>10}  PRIMARY",
        "RUN", "STATUS", "STARTED (UTC)", "RTO", "LOST", "DURATION"
    );
    for r in &runs {
        println!(
            "{:<6} {:<12} {:<20} {:>10} {:>6} {:>10}  {} -> {}",
            r.id,
            r.status,
            utc(r.started_ms),
            r.rto_ms.map(format_ms).unwrap_or_else(|| "-".into()),
            r.lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            r.ended_ms
                .map(|e| format_ms(e.saturating_sub(r.started_ms)))
                .unwrap_or_else(|| "-".into()),
            r.primary_before,
            r.primary_after.as_deref().unwrap_or("-")
        );
    }
    let rtos: Vec<u64> = runs.iter().filter_map(|r| r.rto_ms).collect();
    if !rtos.is_empty() {
        let mut sorted = rtos.clone();
        sorted.sort_unstable();
        println!(
            "\nRTO over {} runs: median {}, min {}, max {}; newest first: {}",
            sorted.len(),
            format_ms(sorted[sorted.len() / 2]),
            format_ms(sorted[0]),
            format_ms(sorted[sorted.len() - 1]),
            rtos.iter()
                .map(|r| format_ms(*r))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    ExitCode::SUCCESS
}
