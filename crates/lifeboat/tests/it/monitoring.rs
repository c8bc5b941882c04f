//! The alert rules and the Grafana dashboard (`lifeboat monitoring`): the files in `deploy/`
//! are what the binary generates now; promtool accepts the rules and their unit tests
//! (`deploy/prometheus/lifeboat-rules.test.yml`) pass; and every Lifeboat metric they name is
//! one a running daemon exports, whose series carry the labels the alerts name — and with
//! that daemon's own metrics, healthy, no alert fires.

use crate::backup::new_repo;
use crate::{stderr, stdout, Daemon, BIN};
use anyhow::{bail, Context, Result};
use lifeboat_testkit::tree::make_tree;
use lifeboat_testkit::{TestDir, TwoRegions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RULES: &str = "deploy/prometheus/lifeboat-rules.yml";
const RULES_TEST: &str = "deploy/prometheus/lifeboat-rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/lifeboat-dashboard.json";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// `lifeboat monitoring ARGS`, its stdout.
fn generate(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("monitoring")
        .args(args)
        .output()
        .expect("run the lifeboat binary");
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Every `lifeboat_…` name in `text`.
fn lifeboat_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lifeboat_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

/// The rules file by alert: (expr, the labels its annotations name).
fn alerts(rules: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut current = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            current = Some(name.to_owned());
            out.insert(name.to_owned(), Default::default());
        } else if let Some(c) = &current {
            let entry = out.get_mut(c).expect("the current alert");
            if let Some(expr) = line.strip_prefix("expr: ") {
                entry.0 = expr.to_owned();
            }
            let mut rest = line;
            while let Some(i) = rest.find("$labels.") {
                rest = &rest[i + "$labels.".len()..];
                let label: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                entry.1.insert(label);
            }
        }
    }
    out
}

/// Every query of the dashboard: its panels' targets and its query variables.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut q = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            q.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        if v["type"] == "query" {
            q.push(v["query"].as_str().expect("a variable's query").to_owned());
        }
    }
    q
}

#[test]
fn the_checked_in_rules_and_dashboard_are_what_lifeboat_generates() -> Result<()> {
    for (path, args) in [
        (RULES, ["monitoring", "rules"]),
        (DASHBOARD, ["monitoring", "dashboard"]),
    ] {
        let now = generate(&args[1..]);
        let checked_in =
            std::fs::read_to_string(repo_file(path)).with_context(|| format!("reading {path}"))?;
        assert!(
            checked_in == now,
            "{path} is not what `lifeboat {}` generates now; regenerate it from the \
             repository's root: cargo run -p lifeboat -- {} --out {path}",
            args.join(" "),
            args.join(" ")
        );
        // --out writes the same text.
        let dir = TestDir::new("monitoring-out")?;
        let file = dir.path().join("out");
        let mut with_out = args[1..].to_vec();
        with_out.extend(["--out", file.to_str().unwrap()]);
        assert_eq!(generate(&with_out), "");
        assert_eq!(std::fs::read_to_string(&file)?, now);
    }

    // The dashboard: every panel queries the DS_PROMETHEUS variable, ids are unique, and
    // every query names a Lifeboat metric.
    let d: Value = serde_json::from_str(&generate(&["dashboard"]))?;
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["DS_PROMETHEUS", "service"]);
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "id twice: {p}");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{p}");
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{p}");
        }
    }
    for q in dashboard_queries(&d) {
        assert!(!lifeboat_names(&q).is_empty(), "no Lifeboat metric in {q}");
    }
    Ok(())
}

/// `promtool`, or why there is none: without it a test fails as root (CI) and is skipped
/// otherwise, saying so.
fn promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some("promtool");
    }
    assert!(
        !nix::unistd::geteuid().is_root(),
        "promtool is missing: scripts/install-deps.sh installs it (.ci/setup-monitoring.sh, \
         Debian package prometheus)"
    );
    eprintln!(
        "skipped: promtool is missing and this is not root; install the Debian package \
         prometheus (scripts/install-deps.sh as root does)"
    );
    None
}

fn promtool_ok(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() -> Result<()> {
    let rules = generate(&["rules"]);
    let tests = std::fs::read_to_string(repo_file(RULES_TEST))?;
    // Each alert has a case where it fires and one where it must not.
    for name in alerts(&rules).keys() {
        assert!(
            tests.contains(&format!("alertname: {name}, exp_alerts: [] }}")),
            "{RULES_TEST}: no case where {name} must not fire"
        );
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - exp_labels:"
            )),
            "{RULES_TEST}: no case where {name} fires"
        );
    }
    let Some(_) = promtool() else {
        return Ok(());
    };
    let dir = TestDir::new("promtool")?;
    std::fs::write(dir.path().join("lifeboat-rules.yml"), &rules)?;
    std::fs::write(dir.path().join("lifeboat-rules.test.yml"), &tests)?;
    promtool_ok(&["check", "rules", "lifeboat-rules.yml"], dir.path());
    promtool_ok(&["test", "rules", "lifeboat-rules.test.yml"], dir.path());
    // Another job name is a valid rules file too.
    std::fs::write(
        dir.path().join("other.yml"),
        generate(&["rules", "--job", "dr \"control\""]),
    )?;
    promtool_ok(&["check", "rules", "other.yml"], dir.path());
    Ok(())
}

/// A `/metrics` text: the sample names each family gives (from its TYPE line) and the
/// samples, each with its labels.
struct Scrape {
    names: BTreeSet<String>,
    samples: Vec<(String, BTreeMap<String, String>, String)>,
}

impl Scrape {
    fn parse(text: &str) -> Result<Scrape> {
        let mut names = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').context("a TYPE line")?;
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
            } else if !line.starts_with('#') && !line.is_empty() {
                samples.push(sample(line).with_context(|| format!("sample {line:?}"))?);
            }
        }
        Ok(Scrape { names, samples })
    }

    /// The label names of `metric`'s samples; none when it has none.
    fn labels_of(&self, metric: &str) -> Option<BTreeSet<String>> {
        let mut found = None;
        for (name, labels, _) in &self.samples {
            if name == metric {
                found
                    .get_or_insert_with(BTreeSet::new)
                    .extend(labels.keys().cloned());
            }
        }
        found
    }

    /// Of `wanted`, the names this scrape does not export.
    fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        wanted
            .into_iter()
            .filter(|n| !self.names.contains(*n))
            .cloned()
            .collect()
    }
}

/// `name{a="x",b="y"} value` (label values without quotes or commas, as Lifeboat's are).
fn sample(line: &str) -> Result<(String, BTreeMap<String, String>, String)> {
    let (series, value) = line.rsplit_once(' ').context("no value")?;
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').context("no closing brace")?;
            let mut labels = BTreeMap::new();
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').context("a label without =")?;
                labels.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
            (name, labels)
        }
    };
    Ok((name.to_owned(), labels, value.to_owned()))
}

/// A promtool unit test feeding `scrape`'s samples, as Prometheus would store them from a
/// healthy scrape, for ten minutes: no alert may fire.
fn quiet_test(scrape: &Scrape, alerts: impl Iterator<Item = String>) -> String {
    let mut t = String::from(
        "rule_files:\n  - lifeboat-rules.yml\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n      - series: 'up{job=\"lifeboat\", instance=\"lb:7400\"}'\n        values: '1+0x40'\n",
    );
    for (name, labels, value) in &scrape.samples {
        let labels: String = labels
            .iter()
            .map(|(k, v)| format!(", {k}=\"{v}\""))
            .collect();
        t.push_str(&format!(
            "      - series: '{name}{{job=\"lifeboat\", instance=\"lb:7400\"{labels}}}'\n        values: '{value}+0x40'\n"
        ));
    }
    t.push_str("    alert_rule_test:\n");
    for a in alerts {
        t.push_str(&format!(
            "      - {{ eval_time: 10m, alertname: {a}, exp_alerts: [] }}\n"
        ));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported_by_a_running_daemon(
) -> Result<()> {
    // A daemon with a drill and a backup tier, so that every family is registered.
    let regions = TwoRegions::start("monitoring", "").await?;
    let dir = &regions.dir;
    let (repo, pass) = new_repo(dir)?;
    let files = dir.path().join("files");
    make_tree(&files, 3)?;
    let mut config = std::fs::read_to_string(&regions.config_path)?;
    config.push_str(&format!(
        r#"
[drills.kill-primary]
scenario = "primary-failure"
service = "orders"

[backup.repositories.main]
location = "{repo}"
password-file = "{pass}"

[backup.sources.files]
paths = ["{files}"]

[backup.tiers.hourly]
kind = "incremental"
sources = ["files"]
repository = "main"
every = "1h"
keep = {{ last = 2 }}

[notify.oncall]
kind = "webhook"
url = "http://127.0.0.1:9/hook"
secret-file = "hook-secret"
"#,
        pass = pass.display(),
        files = files.display(),
    ));
    std::fs::write(&regions.config_path, config)?;
    // A notifier whose receiver is down, so that its series exist.
    std::fs::write(dir.path().join("hook-secret"), "s3cret")?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    d.wait_until("both nodes up", Duration::from_secs(30), |s| {
        s["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["health"] == "up"))
    })
    .await?;
    // The tier's first backup runs at start; its age series follows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = reqwest::get(format!("{}/metrics", d.api))
            .await?
            .text()
            .await?;
        if text.contains("lifeboat_backup_age_seconds{") {
            break text;
        }
        if Instant::now() >= deadline {
            bail!("no backup age within 60 s:\n{text}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let scrape = Scrape::parse(&text)?;

    let rules = generate(&["rules"]);
    let dashboard: Value = serde_json::from_str(&generate(&["dashboard"]))?;
    let mut named = lifeboat_names(&rules);
    named.extend(
        dashboard_queries(&dashboard)
            .iter()
            .flat_map(|q| lifeboat_names(q)),
    );
    for wanted in [
        "lifeboat_node_up",
        "lifeboat_service_rpo_target_seconds",
        "lifeboat_backup_rpo_exceeded",
        "lifeboat_drill_passed",
        "lifeboat_replication_lag_seconds",
    ] {
        assert!(named.contains(wanted), "{wanted} not found in {named:?}");
    }
    let missing = scrape.missing(&named);
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard but not exported: {missing:?}\n{text}"
    );
    // The check itself catches a wrong name.
    assert_eq!(
        scrape.missing(&["lifeboat_node_upp".to_owned()]),
        ["lifeboat_node_upp"]
    );

    // The new tier targets, from the config (gold: rto 5s, rpo 1s).
    for want in [
        "lifeboat_service_rpo_target_seconds{service=\"orders\"} 1.0",
        "lifeboat_service_rto_target_seconds{service=\"orders\"} 5.0",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }

    // The labels an alert's annotations name are on the series of its metrics (those with
    // series here: drills have none before a run), or come from the scrape.
    let mut checked = BTreeSet::new();
    for (alert, (expr, labels)) in alerts(&rules) {
        for metric in lifeboat_names(&expr) {
            let Some(have) = scrape.labels_of(&metric) else {
                continue;
            };
            for l in &labels {
                assert!(
                    have.contains(l) || l == "job" || l == "instance",
                    "{alert} names the label {l}, which {metric} does not have ({have:?})"
                );
            }
            checked.insert(metric);
        }
    }
    for metric in [
        "lifeboat_node_up",
        "lifeboat_rpo_exposure_seconds",
        "lifeboat_backup_rpo_exceeded",
        "lifeboat_notify_pending",
    ] {
        assert!(checked.contains(metric), "{metric}'s labels not checked");
    }

    // The daemon's own metrics, healthy: no alert fires on them.
    if promtool().is_some() {
        let t = TestDir::new("promtool-live")?;
        std::fs::write(t.path().join("lifeboat-rules.yml"), &rules)?;
        std::fs::write(
            t.path().join("quiet.test.yml"),
            quiet_test(&scrape, alerts(&rules).into_keys()),
        )?;
        promtool_ok(&["test", "rules", "quiet.test.yml"], t.path());
    }
    Ok(())
}
