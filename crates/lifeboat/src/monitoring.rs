//! `lifeboat monitoring rules|dashboard`: alert rules for the user's Prometheus and a
//! dashboard for their Grafana, generated from the metrics the daemon exports.
//!
//! One list of [`Check`]s says, for each thing that can be wrong, the alert that fires on it
//! and the stats of the dashboard's health row that show it; [`trends`] are the dashboard's
//! time series. The metric names are written in [`m`] only. `deploy/` holds the files as
//! generated; `tests/it/monitoring.rs` keeps them equal to this output, runs `promtool` on the
//! rules and checks every metric named here against a running daemon's `/metrics`.

use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;

/// The metrics the rules and the dashboard name, as the daemon exports them.
mod m {
    pub const NODE_UP: &str = "lifeboat_node_up";
    pub const LAG_BYTES: &str = "lifeboat_replication_lag_bytes";
    pub const LAG_SECONDS: &str = "lifeboat_replication_lag_seconds";
    pub const RPO_EXPOSURE: &str = "lifeboat_rpo_exposure_seconds";
    pub const RPO_TARGET: &str = "lifeboat_service_rpo_target_seconds";
    pub const RTO_TARGET: &str = "lifeboat_service_rto_target_seconds";
    pub const FAILOVER_RTO: &str = "lifeboat_failover_last_rto_seconds";
    pub const FAILOVER_DETECT: &str = "lifeboat_failover_last_detect_seconds";
    pub const BACKUP_AGE: &str = "lifeboat_backup_age_seconds";
    pub const BACKUP_RPO_EXCEEDED: &str = "lifeboat_backup_rpo_exceeded";
    pub const RESTORE_TEST_SUCCESS: &str = "lifeboat_backup_restore_test_success";
    pub const WAL_LAG: &str = "lifeboat_backup_wal_recovery_point_lag_seconds";
    pub const WAL_SYNCHRONOUS: &str = "lifeboat_backup_wal_synchronous";
    pub const RESTORE_TEST_LAST: &str = "lifeboat_backup_restore_test_last_timestamp_seconds";
    pub const DRILL_PASSED: &str = "lifeboat_drill_passed";
    pub const DRILL_RTO: &str = "lifeboat_drill_rto_seconds";
    pub const NOTIFY_DELIVERIES: &str = "lifeboat_notify_deliveries_total";
    pub const NOTIFY_PENDING: &str = "lifeboat_notify_pending";
}

/// `critical`: a failover now would break the tier's promise, or nothing would fail over.
/// `warning`: a way back beyond failover (backups, their restore, a rehearsal) is unproven.
#[derive(Clone, Copy)]
enum Severity {
    Critical,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// One Prometheus alerting rule.
struct Alert {
    name: &'static str,
    /// Comment lines written above the rule.
    note: &'static [&'static str],
    expr: String,
    /// How long the condition must hold (`for`); none: at once.
    hold: Option<&'static str>,
    severity: Severity,
    summary: &'static str,
    description: &'static str,
    /// The lifeboat command to look with first.
    runbook: &'static str,
}

/// A stat in the dashboard's health row.
struct Stat {
    title: &'static str,
    description: &'static str,
    expr: String,
    legend: &'static str,
    unit: &'static str,
    /// Values shown as words, with their colour: (value, text, colour).
    words: &'static [(&'static str, &'static str, &'static str)],
    /// Colour below the first step, then (from value, colour).
    thresholds: (&'static str, &'static [(f64, &'static str)]),
    /// Shown when the query returns nothing.
    no_value: &'static str,
}

/// One thing that can be wrong: the alert that fires on it and the stats that show it.
struct Check {
    alert: Alert,
    stats: Vec<Stat>,
}

/// A time series panel: queries with their legends; series whose legend ends in "target"
/// are drawn dashed.
struct Trend {
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    queries: Vec<(String, &'static str)>,
}

const UP_DOWN: &[(&str, &str, &str)] = &[("1", "up", "green"), ("0", "DOWN", "red")];
const PASS_FAIL: &[(&str, &str, &str)] = &[("1", "passed", "green"), ("0", "FAILED", "red")];

/// The series of the services chosen in the dashboard's `service` variable.
fn of_services(metric: &str) -> String {
    format!("{metric}{{service=~\"$service\"}}")
}

/// A PromQL string literal.
fn promql_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Everything that can be wrong, each with its alert and its stats. `job` is the job label
/// Prometheus scrapes Lifeboat's `/metrics` under.
fn checks(job: &str) -> Vec<Check> {
    let up = format!("up{{job={}}}", promql_str(job));
    // A restore test has ended: before the first one the success gauge reads 0.
    let tested = format!("{} > 0", m::RESTORE_TEST_LAST);
    vec![
        Check {
            alert: Alert {
                name: "LifeboatNoController",
                note: &[
                    "Lifeboat has no leader election yet: the one `lifeboat run` is the",
                    "controller, and this fires when Prometheus cannot scrape it or has no",
                    "target of the job. When HA lands, a leader metric replaces this rule.",
                ],
                expr: format!("{up} == 0 or absent({up})"),
                hold: Some("1m"),
                severity: Severity::Critical,
                summary: "Lifeboat: no controller is running",
                description: "Prometheus cannot scrape Lifeboat (job {{ $labels.job }}\
                    {{ with $labels.instance }}, instance {{ . }}{{ end }}). While it does not \
                    run, nothing watches the services: nothing fails over, backs up or runs \
                    drills.",
                runbook: "check the `lifeboat run` process and its log; `lifeboat status` \
                    answers once it is back",
            },
            stats: vec![],
        },
        Check {
            alert: Alert {
                name: "LifeboatNodeDown",
                note: &[],
                expr: format!("{} == 0", m::NODE_UP),
                hold: Some("1m"),
                severity: Severity::Critical,
                summary: "Lifeboat: node {{ $labels.node }} of {{ $labels.service }} is down",
                description: "Lifeboat's probes of node {{ $labels.node }} (service \
                    {{ $labels.service }}) have failed for a minute. A lost primary is failed \
                    over (unless paused); a lost standby leaves {{ $labels.service }} without \
                    that failover target until it is back.",
                runbook: "lifeboat status (health of each node, and what Lifeboat decided); \
                    lifeboat rejoin {{ $labels.node }} when it is back and must follow the \
                    new primary",
            },
            stats: vec![Stat {
                title: "Nodes",
                description: "Each node as Lifeboat's probes see it.",
                expr: of_services(m::NODE_UP),
                legend: "{{service}} {{node}}",
                unit: "none",
                words: UP_DOWN,
                thresholds: ("red", &[(1.0, "green")]),
                no_value: "no nodes",
            }],
        },
        Check {
            alert: Alert {
                name: "LifeboatRpoExposureAboveTarget",
                note: &[
                    "Both series come from the same scrape, so they match on all labels",
                    "(service, job, instance).",
                ],
                expr: format!("{} > {}", m::RPO_EXPOSURE, m::RPO_TARGET),
                hold: Some("2m"),
                severity: Severity::Critical,
                summary: "Lifeboat: a failover of {{ $labels.service }} now would lose more \
                    than its RPO target",
                description: "The best standby of {{ $labels.service }} is \
                    {{ $value | humanizeDuration }} behind, more than the RPO target of the \
                    service's tier. (With no healthy standby the exposure reads 0: \
                    LifeboatNodeDown covers that.)",
                runbook: "lifeboat status (lag of each standby, RPO exposure and target)",
            },
            stats: vec![Stat {
                title: "RPO headroom",
                description: "The tier's RPO target minus the RPO exposure (what a failover \
                    now could lose): below 0, a failover now loses more than promised.",
                expr: format!(
                    "{} - {}",
                    of_services(m::RPO_TARGET),
                    of_services(m::RPO_EXPOSURE)
                ),
                legend: "{{service}}",
                unit: "s",
                words: &[],
                thresholds: ("red", &[(0.0, "green")]),
                no_value: "no services",
            }],
        },
        Check {
            alert: Alert {
                name: "LifeboatBackupTooOld",
                note: &[],
                expr: format!("{} == 1", m::BACKUP_RPO_EXCEEDED),
                hold: Some("5m"),
                severity: Severity::Warning,
                summary: "Lifeboat: the newest {{ $labels.tier }} backup of {{ $labels.source }} \
                    is older than the tier's RPO",
                description: "The newest good snapshot of source {{ $labels.source }} in backup \
                    tier {{ $labels.tier }} is older than the tier's RPO (its rpo, else twice \
                    its interval): its backups fail or do not run.",
                runbook: "lifeboat backup list (the newest snapshots); lifeboat backup run \
                    --tier {{ $labels.tier }} runs the tier now and says why it fails",
            },
            stats: vec![
                Stat {
                    title: "Newest backup age",
                    description: "Age of the newest good snapshot of each source and backup \
                        tier.",
                    expr: m::BACKUP_AGE.to_owned(),
                    legend: "{{source}} {{tier}}",
                    unit: "s",
                    words: &[],
                    thresholds: ("blue", &[]),
                    no_value: "no backups",
                },
                Stat {
                    title: "Backups past their RPO",
                    description: "Sources and tiers whose newest good snapshot is older than \
                        the tier's RPO.",
                    expr: format!("sum({})", m::BACKUP_RPO_EXCEEDED),
                    legend: "past RPO",
                    unit: "none",
                    words: &[],
                    thresholds: ("green", &[(1.0, "red")]),
                    no_value: "no backups",
                },
            ],
        },
        Check {
            alert: Alert {
                name: "LifeboatSynchronousArchiveBehind",
                note: &[],
                expr: format!(
                    "{} > 5 and on(job, instance) {} == 1",
                    m::WAL_LAG,
                    m::WAL_SYNCHRONOUS
                ),
                hold: Some("15s"),
                severity: Severity::Critical,
                summary: "Lifeboat: commits on the primary wait for the WAL archive",
                description: "The WAL archive is synchronous ([backup.wal] synchronous = true) \
                    and the repository has not been level with the primary for \
                    {{ $value | humanizeDuration }}: the streamer is down or cannot keep up, \
                    and every commit waits for it.",
                runbook: "lifeboat status and the daemon log (the streamer's last error); to \
                    let commits go on without the archive, set synchronous = false and reload, \
                    accepting a recovery point above zero",
            },
            stats: vec![Stat {
                title: "WAL archive behind",
                description: "Seconds since the repository last held all the WAL the \
                    streamer had received: the recovery point of a loss now.",
                expr: m::WAL_LAG.to_owned(),
                legend: "recovery point lag",
                unit: "s",
                words: &[],
                thresholds: ("green", &[(1.0, "orange"), (5.0, "red")]),
                no_value: "no continuous WAL",
            }],
        },
        Check {
            alert: Alert {
                name: "LifeboatRestoreTestFailed",
                note: &[],
                expr: format!("{} == 0 and {tested}", m::RESTORE_TEST_SUCCESS),
                hold: None,
                severity: Severity::Warning,
                summary: "Lifeboat: the last restore test failed",
                description: "The last scheduled restore test ([backup.restore-test]) failed \
                    or could not run: the newest backup may not restore.",
                runbook: "lifeboat backup list --tests (the recorded test restores and their \
                    errors); lifeboat backup verify --restore-test runs one now",
            },
            stats: vec![Stat {
                title: "Restore test",
                description: "The last scheduled restore test.",
                expr: format!("{} and {tested}", m::RESTORE_TEST_SUCCESS),
                legend: "restore test",
                unit: "none",
                words: PASS_FAIL,
                thresholds: ("red", &[(1.0, "green")]),
                no_value: "not run yet",
            }],
        },
        Check {
            alert: Alert {
                name: "LifeboatDrillFailed",
                note: &[],
                expr: format!("{} == 0", m::DRILL_PASSED),
                hold: None,
                severity: Severity::Warning,
                summary: "Lifeboat: drill {{ $labels.drill }} did not pass",
                description: "The last run of drill {{ $labels.drill }} failed, was aborted or \
                    was interrupted: the recovery it rehearses is not proven. The alert ends \
                    when a run passes.",
                runbook: "lifeboat drill history {{ $labels.drill }} (its runs); lifeboat drill \
                    report ID (the verdict and the timeline of one)",
            },
            stats: vec![Stat {
                title: "Last drill",
                description: "The last run of each drill.",
                expr: m::DRILL_PASSED.to_owned(),
                legend: "{{drill}}",
                unit: "none",
                words: PASS_FAIL,
                thresholds: ("red", &[(1.0, "green")]),
                no_value: "no drill run",
            }],
        },
        Check {
            alert: Alert {
                name: "LifeboatNotificationsFailing",
                note: &[
                    "A receiver refused notices (4xx) or they were given up (give-up-after), or",
                    "a notifier has had notices waiting for 15 minutes (a receiver down, a storm",
                    "held back by max-per-minute). Both sides carry job, instance and notifier.",
                ],
                expr: format!(
                    "(sum by (job, instance, notifier) (increase({}{{outcome=~\"refused|expired\"}}[30m])) > 0) or ({} > 0)",
                    m::NOTIFY_DELIVERIES,
                    m::NOTIFY_PENDING
                ),
                hold: Some("15m"),
                severity: Severity::Warning,
                summary: "Lifeboat: notifier {{ $labels.notifier }} is not getting notices through",
                description: "Notices to {{ $labels.notifier }} were refused or given up in the \
                    last 30 minutes, or have waited for 15 minutes: the people it pages may not \
                    hear about incidents. Nothing is lost while they wait.",
                runbook: "lifeboat notify list (what waits, the last error, refusals); lifeboat \
                    notify test {{ $labels.notifier }} once the receiver is fixed",
            },
            stats: vec![Stat {
                title: "Notices waiting",
                description: "Notices each notifier has not settled yet.",
                expr: m::NOTIFY_PENDING.to_owned(),
                legend: "{{notifier}}",
                unit: "none",
                words: &[],
                thresholds: ("green", &[(1.0, "orange"), (100.0, "red")]),
                no_value: "no notifiers",
            }],
        },
    ]
}

/// The dashboard's time series.
fn trends() -> Vec<Trend> {
    vec![
        Trend {
            title: "Replication lag",
            description: "Replay lag of each standby, as its primary reports it.",
            unit: "s",
            queries: vec![(of_services(m::LAG_SECONDS), "{{service}} {{node}}")],
        },
        Trend {
            title: "Replication lag (bytes)",
            description: "How far each standby is behind its primary.",
            unit: "bytes",
            queries: vec![(of_services(m::LAG_BYTES), "{{service}} {{node}}")],
        },
        Trend {
            title: "RPO exposure",
            description: "What a failover now could lose (the lag of the best standby), \
                against the tier's RPO target.",
            unit: "s",
            queries: vec![
                (of_services(m::RPO_EXPOSURE), "{{service}} exposure"),
                (of_services(m::RPO_TARGET), "{{service}} target"),
            ],
        },
        Trend {
            title: "Failover RTO",
            description: "Fault to first write on the new primary in the last failover, its \
                detection, and the RTO drills measured, against the tier's RTO target.",
            unit: "s",
            queries: vec![
                (of_services(m::FAILOVER_RTO), "{{service}} last failover"),
                (of_services(m::FAILOVER_DETECT), "{{service}} detection"),
                (m::DRILL_RTO.to_owned(), "drill {{drill}}"),
                (of_services(m::RTO_TARGET), "{{service}} target"),
            ],
        },
        Trend {
            title: "Backup age",
            description: "Age of the newest good snapshot of each source and backup tier.",
            unit: "s",
            queries: vec![(m::BACKUP_AGE.to_owned(), "{{source}} {{tier}}")],
        },
    ]
}

/// A YAML scalar holding `s` exactly: single-quoted (no escapes to read), or double-quoted
/// with JSON's escapes when it holds control characters.
fn yaml_str(s: &str) -> String {
    if s.chars().any(char::is_control) {
        serde_json::to_string(s).expect("a string serializes")
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The Prometheus rules file.
pub fn rules(job: &str) -> String {
    let mut y = String::from(
        "# Lifeboat's alert rules, generated by `lifeboat monitoring rules`: regenerate rather\n\
         # than edit. severity: critical when a failover now would break the tier's promise or\n\
         # nothing would fail over; warning when a way back beyond failover is unproven.\n\
         groups:\n  - name: lifeboat\n    rules:\n",
    );
    for Check { alert: a, .. } in checks(job) {
        for line in a.note {
            y.push_str(&format!("      # {line}\n"));
        }
        y.push_str(&format!("      - alert: {}\n", a.name));
        y.push_str(&format!("        expr: {}\n", yaml_str(&a.expr)));
        if let Some(hold) = a.hold {
            y.push_str(&format!("        for: {hold}\n"));
        }
        y.push_str("        labels:\n");
        y.push_str(&format!("          severity: {}\n", a.severity.as_str()));
        y.push_str("        annotations:\n");
        for (k, v) in [
            ("summary", a.summary),
            ("description", a.description),
            ("runbook", a.runbook),
        ] {
            y.push_str(&format!("          {k}: {}\n", yaml_str(v)));
        }
    }
    y
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${DS_PROMETHEUS}" })
}

fn target(ref_id: usize, expr: &str, legend: &str, instant: bool) -> Value {
    json!({
        "datasource": datasource(),
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": !instant,
        "refId": ((b'A' + ref_id as u8) as char).to_string(),
    })
}

fn grid(x: usize, y: usize, w: usize, h: usize) -> Value {
    json!({ "x": x, "y": y, "w": w, "h": h })
}

fn row(id: usize, title: &str, y: usize) -> Value {
    json!({
        "type": "row",
        "id": id,
        "title": title,
        "collapsed": false,
        "gridPos": grid(0, y, 24, 1),
        "panels": [],
    })
}

fn stat_panel(id: usize, s: &Stat, pos: Value) -> Value {
    let mut steps = vec![json!({ "color": s.thresholds.0, "value": null })];
    steps.extend(
        s.thresholds
            .1
            .iter()
            .map(|(v, c)| json!({ "color": c, "value": v })),
    );
    let mappings: Vec<Value> = if s.words.is_empty() {
        vec![]
    } else {
        let options: serde_json::Map<String, Value> = s
            .words
            .iter()
            .enumerate()
            .map(|(i, (v, text, color))| {
                (
                    v.to_string(),
                    json!({ "text": text, "color": color, "index": i }),
                )
            })
            .collect();
        vec![json!({ "type": "value", "options": options })]
    };
    json!({
        "type": "stat",
        "id": id,
        "title": s.title,
        "description": s.description,
        "datasource": datasource(),
        "gridPos": pos,
        "targets": [target(0, &s.expr, s.legend, true)],
        "fieldConfig": {
            "defaults": {
                "unit": s.unit,
                "mappings": mappings,
                "thresholds": { "mode": "absolute", "steps": steps },
                "color": { "mode": "thresholds" },
                "noValue": s.no_value,
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
        },
    })
}

fn trend_panel(id: usize, t: &Trend, pos: Value) -> Value {
    let targets: Vec<Value> = t
        .queries
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| target(i, expr, legend, false))
        .collect();
    json!({
        "type": "timeseries",
        "id": id,
        "title": t.title,
        "description": t.description,
        "datasource": datasource(),
        "gridPos": pos,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": t.unit,
                "min": 0,
                "color": { "mode": "palette-classic" },
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "spanNulls": false,
                },
            },
            "overrides": [{
                "matcher": { "id": "byRegexp", "options": ".* target$" },
                "properties": [
                    { "id": "custom.lineStyle", "value": { "fill": "dash", "dash": [10, 10] } },
                    { "id": "custom.fillOpacity", "value": 0 },
                ],
            }],
        },
        "options": {
            "legend": { "displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"] },
            "tooltip": { "mode": "multi", "sort": "desc" },
        },
    })
}

/// The Grafana dashboard (JSON). Its data source is the variable `DS_PROMETHEUS`, so it
/// imports into any Grafana, by hand or provisioned.
pub fn dashboard() -> String {
    let stats: Vec<Stat> = checks("lifeboat")
        .into_iter()
        .flat_map(|c| c.stats)
        .collect();
    let mut panels = vec![row(1, "Health", 0)];
    let mut id = 2;
    let w = 24 / stats.len().max(1);
    for (i, s) in stats.iter().enumerate() {
        panels.push(stat_panel(id, s, grid(i * w, 1, w, 4)));
        id += 1;
    }
    panels.push(row(id, "Trends", 5));
    id += 1;
    let trends = trends();
    for (i, t) in trends.iter().enumerate() {
        // Two per line; a last one alone takes the whole width.
        let alone = i + 1 == trends.len() && i % 2 == 0;
        let pos = grid(
            (i % 2) * 12,
            6 + (i / 2) * 8,
            if alone { 24 } else { 12 },
            8,
        );
        panels.push(trend_panel(id, t, pos));
        id += 1;
    }
    let services = format!("label_values({}, service)", m::NODE_UP);
    let d = json!({
        "title": "Lifeboat",
        "uid": "lifeboat",
        "description": "Lifeboat's services, backups and drills, from the metrics it exports \
            (generated by `lifeboat monitoring dashboard`).",
        "tags": ["lifeboat", "disaster-recovery"],
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "timezone": "",
        "links": [],
        "annotations": { "list": [] },
        "templating": { "list": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": false,
                "multi": false,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            {
                "name": "service",
                "label": "Service",
                "type": "query",
                "datasource": datasource(),
                "query": services,
                "definition": services,
                "current": {},
                "hide": 0,
                "includeAll": true,
                "multi": true,
                "options": [],
                "refresh": 2,
                "regex": "",
                "sort": 1,
            },
        ]},
        "panels": panels,
    });
    let mut text = serde_json::to_string_pretty(&d).expect("the dashboard serializes");
    text.push('\n');
    text
}

/// Prints `text`, or writes it to `out`.
pub fn emit(text: &str, out: Option<&Path>) -> ExitCode {
    match out {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing {}: {e}", p.display());
                ExitCode::from(1)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_strings_keep_quotes_and_control_characters() {
        assert_eq!(yaml_str(r#"up{job="x"} == 0"#), r#"'up{job="x"} == 0'"#);
        assert_eq!(yaml_str("it's"), "'it''s'");
        assert_eq!(yaml_str("a\nb"), r#""a\nb""#);
    }

    #[test]
    fn a_job_name_is_a_promql_string() {
        assert!(rules(r#"a"b\c"#).contains(r#"up{job="a\"b\\c"}"#));
    }
}
