//! Drills: a service broken on purpose, its recovery measured by a canary that writes
//! through the endpoint, judged against the tier's targets, and everything put back.
//!
//! One drill runs at a time. Each fault is recorded in the store with what its undo needs
//! *before* it is applied; the rollback undoes every applied fault whether the drill passed,
//! failed, timed out or was aborted (`lifeboat drill abort`, SIGTERM), and [`recover`] undoes
//! at the next start any fault a killed runner left recorded. Faults go through the fault
//! provider ([`crate::providers::fault`]); failovers, rejoins and the failback through the
//! service's controller, like any other plan, so they are on its incidents' timelines.

pub mod canary;
pub mod report;

use crate::controller::{Handle, Request};
use crate::executor::now;
use crate::providers::fault::Fault;
use crate::service::Service;
use crate::status::Status;
use canary::{Canary, Target};
use lifeboat_config::{CheckKind, Config, DrillConfig, FaultKind, ServiceKind};
use lifeboat_core::drill::{self, Record, Scenario, Targets};
use lifeboat_core::model::ReplicationMode;
use lifeboat_core::time::format_ms;
use lifeboat_core::{Command, Millis};
use lifeboat_store::{Outcome, Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub use report::{Entry, FaultReport, Report};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Each fault's apply and undo.
const FAULT_BUDGET: Duration = Duration::from_secs(10);
/// The canary must have written this long, and at least `WARM_ACKS` times, before the fault.
const WARM_UP: Duration = Duration::from_secs(1);
const WARM_ACKS: usize = 5;
/// A rejoin, and the switchover of a failback, may take this long each.
const LAYOUT_BUDGET: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("unknown drill {name:?}; configured drills: {known}")]
    Unknown { name: String, known: String },
    #[error("drill {drill} (run {id}) is already running; wait for it to end, or stop it with `lifeboat drill abort`")]
    Busy { id: i64, drill: String },
    #[error("drill {drill} did not start: {}", reasons.join("; "))]
    Refused { drill: String, reasons: Vec<String> },
    #[error("no drill is running")]
    NotRunning,
    #[error("no drill run {0}; `lifeboat drill history NAME` lists the runs")]
    NoRun(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A drill that was started (or, for a dry run, what it would do).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub run: Option<i64>,
    pub drill: String,
    pub dry_run: bool,
    /// What the drill does, step by step.
    pub plan: Vec<String>,
}

/// A configured drill as `lifeboat drill list` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DrillInfo {
    pub name: String,
    pub scenario: String,
    pub service: String,
    pub schedule: Option<String>,
    pub next_run_ms: Option<u64>,
    pub last_run: Option<RunSummary>,
    pub running: bool,
}

/// One run, as history lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub id: i64,
    pub drill: String,
    pub status: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub rto_ms: Option<u64>,
    pub lost: Option<usize>,
    pub primary_before: String,
    pub primary_after: Option<String>,
}

impl RunSummary {
    fn of(r: &Report) -> RunSummary {
        RunSummary {
            id: r.id,
            drill: r.drill.clone(),
            status: r.status.clone(),
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            rto_ms: r.record.measured.as_ref().and_then(|m| m.rto_ms),
            lost: r.record.measured.as_ref().map(|m| m.lost.len()),
            primary_before: r.record.primary_before.clone(),
            primary_after: r.record.primary_after.clone(),
        }
    }
}

struct Current {
    id: i64,
    drill: String,
    abort: CancellationToken,
    why: Arc<Mutex<Option<String>>>,
}

/// A service as drills need it: its nodes and its controller.
#[derive(Clone)]
pub struct Drilled {
    pub service: Service,
    pub handle: Handle,
}

/// Ends a run's turn when its task ends, however it ends: the next drill may start. A run
/// that panicked has its faults undone (as at a start after a crash).
struct Done(Arc<Inner>);

impl Drop for Done {
    fn drop(&mut self) {
        *self.0.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if std::thread::panicking() {
            let store = self.0.store.clone();
            tokio::spawn(async move {
                match recover(&store).await {
                    Ok(said) => said.iter().for_each(|l| warn!("{l}")),
                    Err(e) => warn!(error = %e, "undoing the faults of a drill that panicked"),
                }
            });
        }
    }
}

/// The drills of a daemon: start, abort, reports, history, schedules and metrics.
#[derive(Clone)]
pub struct Drills {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<Config>,
    store: Store,
    services: BTreeMap<String, Drilled>,
    current: Mutex<Option<Current>>,
    metrics: DrillMetrics,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
struct DrillMetrics {
    runs: Family<Labels, Counter>,
    last_run: Family<Labels, FGauge>,
    last_success: Family<Labels, FGauge>,
    rto: Family<Labels, FGauge>,
    lost: Family<Labels, Gauge>,
    passed: Family<Labels, Gauge>,
    faults_outstanding: Gauge,
}

impl DrillMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("lifeboat_drill");
        r.register("runs", "Drill runs, by drill and result", self.runs.clone());
        r.register(
            "last_run_timestamp_seconds",
            "When the drill last ended",
            self.last_run.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the drill last passed",
            self.last_success.clone(),
        );
        r.register(
            "rto_seconds",
            "Fault to first acknowledged write, in the drill's last run",
            self.rto.clone(),
        );
        r.register(
            "lost_writes",
            "Acknowledged writes lost, in the drill's last run",
            self.lost.clone(),
        );
        r.register(
            "passed",
            "1 when the drill's last run passed",
            self.passed.clone(),
        );
        r.register(
            "faults_applied",
            "Faults applied by drills and not yet undone",
            self.faults_outstanding.clone(),
        );
    }

    /// A run that ended: counted, and shown as the drill's last.
    fn record(&self, r: &Report) {
        self.runs
            .get_or_create(&vec![
                ("drill", r.drill.clone()),
                ("result", r.status.clone()),
            ])
            .inc();
        self.show_last(r);
    }

    /// The gauges of a drill's last run.
    fn show_last(&self, r: &Report) {
        let l = vec![("drill", r.drill.clone())];
        let end = r.ended_ms.unwrap_or(r.started_ms) as f64 / 1000.0;
        self.last_run.get_or_create(&l).set(end);
        let pass = r.status == "passed";
        if pass {
            self.last_success.get_or_create(&l).set(end);
        }
        self.passed.get_or_create(&l).set(i64::from(pass));
        if let Some(m) = &r.record.measured {
            if let Some(rto) = m.rto_ms {
                self.rto.get_or_create(&l).set(rto as f64 / 1000.0);
            }
            self.lost.get_or_create(&l).set(m.lost.len() as i64);
        }
    }
}

/// Undoes every fault the store holds as possibly applied (a runner killed while its fault
/// was applied), and marks the runs left running as interrupted, saying so in their reports.
/// Run at start, before anything else. Returns what it did, one line each.
pub async fn recover(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut said = Vec::new();
    let mut runs: BTreeMap<i64, Vec<(String, bool, String)>> = BTreeMap::new();
    for row in store.faults_outstanding()? {
        let fault: Fault = match serde_json::from_str(&row.fault) {
            Ok(f) => f,
            Err(e) => {
                said.push(format!(
                    "fault {} of drill run {} cannot be read ({e}); undo it by hand: {}",
                    row.id, row.run, row.fault
                ));
                continue;
            }
        };
        let a = fault.undo(FAULT_BUDGET).await;
        let ok = a.is_ok();
        store.fault_state(
            row.id,
            if ok { "undone" } else { "undo-failed" },
            now(),
            a.detail(),
        )?;
        said.push(format!(
            "drill run {}: {} {} at restart: {}",
            row.run,
            fault.describe(),
            if ok { "undone" } else { "NOT undone" },
            a.detail()
        ));
        runs.entry(row.run)
            .or_default()
            .push((fault.describe(), ok, a.detail().to_owned()));
    }
    for run in store.drill_runs(None, Some("running"), 1000)? {
        let mut report = read_report(&run);
        let at = now();
        report.note(
            at,
            "info",
            "the process running this drill stopped while it ran (killed?)",
        );
        for (fault, ok, detail) in runs.remove(&run.id).unwrap_or_default() {
            report.note(
                at,
                if ok { "ok" } else { "failed" },
                format!(
                    "{fault} {} at the next start: {detail}",
                    if ok { "undone" } else { "NOT undone" }
                ),
            );
            if let Some(f) = report.faults.iter_mut().find(|f| f.fault == fault) {
                f.state = if ok { "undone" } else { "undo-failed" }.into();
                f.undone_ms = ok.then_some(at.0);
            }
        }
        report.status = "interrupted".into();
        report.ended_ms = Some(at.0);
        let r = &mut report.record;
        r.faults_applied = report
            .faults
            .iter()
            .filter(|f| f.applied_ms.is_some() || f.state != "registered")
            .count() as u32;
        r.faults_undone = report.faults.iter().filter(|f| f.state == "undone").count() as u32;
        r.measured = None;
        r.aborted =
            Some("the process running it stopped; its faults were undone at the next start".into());
        report.verdict = Some(drill::verdict(&report.record));
        said.push(format!(
            "drill run {} ({}) was interrupted; its report says so",
            run.id, run.drill
        ));
        store.drill_run_save(run.id, "interrupted", Some(at), &json(&report))?;
    }
    Ok(said)
}

/// A stored run's report, under the run's id (the first save of a report precedes its id).
fn read_report(run: &lifeboat_store::DrillRun) -> Report {
    let mut r: Report = serde_json::from_str(&run.report).unwrap_or_default();
    r.id = run.id;
    r.drill.clone_from(&run.drill);
    r.status.clone_from(&run.status);
    r
}

fn json(r: &Report) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "{}".into())
}

/// The faults a drill applies: `before` (held while the stage is set), then the `main` one,
/// whose time is the fault time.
struct Prepared {
    scenario: Scenario,
    primary: String,
    before: Vec<Fault>,
    main: Fault,
    targets: Targets,
    canary: Target,
    /// replica-lag: WAL to write on the primary once the standbys are held, and the limit.
    lag: Option<(u64, u64)>,
    /// data-corruption: where to restore from and into.
    corruption: Option<Corruption>,
}

/// What a data-corruption drill restores from (the WAL archive's repository and source) and
/// into (a scratch directory), and how it logs in to the restored copy.
struct Corruption {
    repository: lifeboat_config::RepositoryConfig,
    source: String,
    dir: std::path::PathBuf,
    os_user: String,
    login: lifeboat_postgres::ConnInfo,
}

/// gradual-degradation: (stall, period) in ms, the primary's processes stopped for `stall`
/// of every `period`, in rising stages; the loss follows.
const STAGES: [(u64, u64); 3] = [(50, 250), (150, 300), (400, 500)];

/// Each gradual-degradation stage, and its loss, lasts a quarter of the drill's duration.
fn stage_length(d: &DrillConfig) -> Duration {
    d.duration.get() / 4
}

/// Rows a data-corruption drill writes, then drops.
const CORRUPTION_ROWS: u64 = 1000;

impl Drills {
    pub fn new(
        cfg: Arc<Config>,
        store: Store,
        services: Vec<Drilled>,
        registry: &mut Registry,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Drills {
        let metrics = DrillMetrics::default();
        metrics.register(registry);
        let d = Drills {
            inner: Arc::new(Inner {
                cfg,
                store,
                services: services
                    .into_iter()
                    .map(|t| (t.service.name.clone(), t))
                    .collect(),
                current: Mutex::new(None),
                metrics,
                cancel,
                tasks,
            }),
        };
        // The gauges start from each drill's last run and last success (two rows each, not
        // the history); the counters start at zero, as counters do after a restart.
        let store = &d.inner.store;
        for name in d.inner.cfg.drills.keys() {
            for status in [Some("passed"), None] {
                if let Ok(Some(r)) = store
                    .drill_runs(Some(name), status, 1)
                    .map(|v| v.into_iter().next())
                {
                    d.inner.metrics.show_last(&read_report(&r));
                }
            }
        }
        d.refresh_outstanding();
        d
    }

    fn refresh_outstanding(&self) {
        if let Ok(f) = self.inner.store.faults_outstanding() {
            self.inner.metrics.faults_outstanding.set(f.len() as i64);
        }
    }

    fn config(&self, name: &str) -> Result<&DrillConfig, DrillError> {
        self.inner
            .cfg
            .drills
            .get(name)
            .ok_or_else(|| DrillError::Unknown {
                name: name.into(),
                known: if self.inner.cfg.drills.is_empty() {
                    "none (add a [drills.NAME] section)".into()
                } else {
                    self.inner
                        .cfg
                        .drills
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    pub fn list(&self) -> Result<Vec<DrillInfo>, DrillError> {
        let running = self.running().map(|(_, d)| d);
        let mut out = Vec::new();
        for (name, d) in &self.inner.cfg.drills {
            let last = self.inner.store.drill_runs(Some(name), None, 1)?;
            out.push(DrillInfo {
                name: name.clone(),
                scenario: d.scenario.clone(),
                service: d.service.clone(),
                schedule: d.schedule.clone(),
                next_run_ms: d
                    .schedule
                    .as_deref()
                    .and_then(|s| next_after(s, now()))
                    .map(|m| m.0),
                last_run: last.first().map(read_report).map(|r| RunSummary::of(&r)),
                running: running.as_deref() == Some(name.as_str()),
            });
        }
        Ok(out)
    }

    fn running(&self) -> Option<(i64, String)> {
        let c = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|c| (c.id, c.drill.clone()))
    }

    pub fn report(&self, id: i64) -> Result<Report, DrillError> {
        let run = self
            .inner
            .store
            .drill_run(id)?
            .ok_or(DrillError::NoRun(id))?;
        Ok(read_report(&run))
    }

    pub fn history(&self, name: &str, limit: u32) -> Result<Vec<RunSummary>, DrillError> {
        self.config(name)?;
        Ok(self
            .inner
            .store
            .drill_runs(Some(name), None, limit)?
            .iter()
            .map(read_report)
            .map(|r| RunSummary::of(&r))
            .collect())
    }

    /// Stops the running drill; its rollback still runs. Returns the run.
    pub fn abort(&self, actor: &str) -> Result<i64, DrillError> {
        let c = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        let c = c.as_ref().ok_or(DrillError::NotRunning)?;
        *c.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("aborted by {actor}"));
        c.abort.cancel();
        let _ = self
            .inner
            .store
            .audit(now(), actor, "drill abort", &format!("run {}", c.id));
        Ok(c.id)
    }

    /// Starts drill `name` (in the background), or with `dry_run` says what it would do.
    /// Refuses when a drill is running, the service is not healthy, or a fault cannot be
    /// applied here (root, a server on another machine).
    pub fn start(&self, name: &str, dry_run: bool, actor: &str) -> Result<Started, DrillError> {
        let d = self.config(name)?.clone();
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref() {
            return Err(DrillError::Busy {
                id: c.id,
                drill: c.drill.clone(),
            });
        }
        let target = self
            .inner
            .services
            .get(&d.service)
            .ok_or_else(|| DrillError::Refused {
                drill: name.into(),
                reasons: vec![format!("service {} is not running", d.service)],
            })?;
        let status = target.handle.status();
        let refuse = |reasons: Vec<String>| DrillError::Refused {
            drill: name.into(),
            reasons,
        };
        let mut reasons = healthy(&status);
        let t = now().0;
        for (w, m) in &self.inner.cfg.maintenance {
            if m.allow_drills || !m.covers(&d.service) {
                continue;
            }
            if let Some(opened) = m.open_at(t) {
                reasons.push(format!(
                    "maintenance window {w} (opened {} UTC, for {}) does not allow drills",
                    report::utc(opened),
                    m.duration
                ));
            }
        }
        if let Some(i) = status.last_incident {
            if let Ok(Some(inc)) = self.inner.store.incident(i) {
                if inc.status == Outcome::Running {
                    reasons.push(format!("incident {i} ({}) is still open", inc.kind));
                }
            }
        }
        if !reasons.is_empty() {
            return Err(refuse(reasons));
        }
        let prepared = self
            .prepare(&d, target, &status)
            .map_err(|r| refuse(vec![r]))?;
        let plan = plan_lines(&d, &prepared);
        if dry_run {
            return Ok(Started {
                run: None,
                drill: name.into(),
                dry_run,
                plan,
            });
        }
        let at = now();
        let mut report = Report {
            drill: name.into(),
            service: d.service.clone(),
            kind: target.service.kind.as_str().into(),
            status: "running".into(),
            started_ms: at.0,
            record: Record {
                scenario: prepared.scenario,
                targets: prepared.targets,
                primary_before: prepared.primary.clone(),
                ..Record::default()
            },
            ..Report::default()
        };
        report.note(at, "info", format!("started by {actor}"));
        let id = self
            .inner
            .store
            .drill_run_open(name, &d.service, at, &json(&report))?;
        report.id = id;
        let _ = self
            .inner
            .store
            .audit(at, actor, "drill run", &format!("{name} (run {id})"));
        let abort = self.inner.cancel.child_token();
        let why = Arc::new(Mutex::new(None));
        *current = Some(Current {
            id,
            drill: name.into(),
            abort: abort.clone(),
            why: why.clone(),
        });
        drop(current);
        info!(drill = name, run = id, "drill started");
        let me = self.clone();
        let target = target.clone();
        self.inner.tasks.spawn(async move {
            let _done = Done(me.inner.clone());
            let run = Run {
                inner: me.inner.clone(),
                d,
                target,
                report,
                abort,
                why,
                applied: Vec::new(),
            };
            let report = run.drive(prepared).await;
            me.inner.metrics.record(&report);
            tell(&me.inner.store, &report);
            me.refresh_outstanding();
            info!(drill = %report.drill, run = report.id, status = %report.status, "drill ended");
        });
        Ok(Started {
            run: Some(id),
            drill: name.into(),
            dry_run,
            plan,
        })
    }

    fn prepare(&self, d: &DrillConfig, t: &Drilled, status: &Status) -> Result<Prepared, String> {
        let scenario = d
            .scenario()
            .ok_or_else(|| format!("unknown scenario {:?}", d.scenario))?;
        let svc = &t.service;
        let primary = status.primary.clone().ok_or("no primary is known")?;
        let node = |n: &str| {
            svc.nodes
                .iter()
                .find(|x| x.name == n)
                .ok_or_else(|| format!("node {n} is not in service {}", svc.name))
        };
        let p = node(&primary)?;
        let tag = format!("{}_{}", std::process::id(), now().0);
        let mut before = Vec::new();
        let mut lag = None;
        let mut corruption = None;
        let main = match scenario {
            Scenario::PrimaryFailure => match d.primary_fault(svc.kind) {
                FaultKind::Kill => Fault::kill(&p.name, p.addr)?,
                FaultKind::Pause => Fault::pause(&p.name, p.addr)?,
                FaultKind::Silence => {
                    Fault::silence(format!("node {}", p.name), vec![p.addr.port()], &tag)?
                }
            },
            Scenario::Partition => {
                let region = d.region.clone().unwrap_or_else(|| p.region.clone());
                let (a, b): (Vec<_>, Vec<_>) = svc.nodes.iter().partition(|n| n.region == region);
                if a.is_empty() || b.is_empty() {
                    return Err(format!(
                        "a partition needs nodes on both sides of region {region}"
                    ));
                }
                let named = |v: &[&crate::service::Node]| -> Vec<(String, std::net::SocketAddr)> {
                    v.iter().map(|n| (n.name.clone(), n.addr)).collect()
                };
                let mut others: Vec<&str> = b.iter().map(|n| n.region.as_str()).collect();
                others.dedup();
                Fault::partition(
                    format!("region {region} from {}", others.join(", ")),
                    &named(&a),
                    &named(&b),
                    &tag,
                )?
            }
            Scenario::DiskFull => {
                let ctl = p.control.as_ref().ok_or_else(|| {
                    format!("disk-full needs control of {}'s data directory", p.name)
                })?;
                Fault::FillDisk {
                    target: format!("the file system of {}'s data directory", p.name),
                    file: ctl.data_dir.join(format!("lifeboat_drill_fill_{tag}")),
                }
            }
            Scenario::GradualDegradation => {
                before.push(Fault::throttle(&p.name, p.addr)?);
                Fault::pause(&p.name, p.addr)?
            }
            Scenario::RegionOutage => {
                let region = d.region.clone().unwrap_or_else(|| p.region.clone());
                if region != p.region {
                    return Err(format!(
                        "region {region} does not hold the primary ({} is in {}); a region-outage drill takes the primary's region down",
                        p.name, p.region
                    ));
                }
                let rc = &svc.config.regions[&region];
                let mut ports: Vec<u16> = svc
                    .nodes
                    .iter()
                    .filter(|n| n.region == region)
                    .map(|n| n.addr.port())
                    .collect();
                let mut what: Vec<String> = svc
                    .nodes
                    .iter()
                    .filter(|n| n.region == region)
                    .map(|n| n.name.clone())
                    .collect();
                for c in &rc.checks {
                    if let Some(port) = check_port(c.kind, c.address.as_deref(), c.url.as_deref()) {
                        ports.push(port);
                        what.push(format!("check {}", c.name));
                    }
                }
                Fault::silence(
                    format!("region {region} ({})", what.join(", ")),
                    ports,
                    &tag,
                )?
            }
            Scenario::DataCorruption => {
                let b = self
                    .inner
                    .cfg
                    .backup
                    .as_ref()
                    .ok_or("no [backup] is configured")?;
                let wal = b.wal.as_ref().ok_or("no [backup.wal] is configured")?;
                let repository = b
                    .repositories
                    .get(&wal.repository)
                    .ok_or_else(|| format!("no repository {}", wal.repository))?
                    .clone();
                let rt = b.restore_test.as_ref();
                let scratch = d
                    .scratch_dir
                    .clone()
                    .or_else(|| rt.map(|t| t.scratch_dir.clone()))
                    .ok_or("no scratch directory (drills.NAME.scratch-dir)")?;
                let os_user = rt
                    .map(|t| t.os_user.clone())
                    .unwrap_or_else(|| "postgres".into());
                let dir = scratch.join(format!("drill-{tag}"));
                let c = Corruption {
                    repository,
                    source: wal.source.clone(),
                    login: lifeboat_postgres::ConnInfo::of_node(&p.config, p.password.clone()),
                    os_user: os_user.clone(),
                    dir: dir.clone(),
                };
                corruption = Some(c);
                Fault::Scratch {
                    target: "the side server of the point-in-time restore".into(),
                    dir,
                    os_user: nix::unistd::geteuid().is_root().then_some(os_user),
                }
            }
            Scenario::ReplicaLag => {
                for n in svc.nodes.iter().filter(|n| n.name != primary) {
                    if status
                        .nodes
                        .iter()
                        .any(|s| s.name == n.name && s.role == "standby")
                    {
                        before.push(Fault::hold_wal_receiver(&n.name, n.addr)?);
                    }
                }
                if before.is_empty() {
                    return Err("there is no standby to hold back".into());
                }
                let max = svc.config.failover.max_lag.0;
                lag = Some((max + (1 << 20), max));
                Fault::pause(&p.name, p.addr)?
            }
        };
        let tier = self.inner.cfg.tier(&svc.config);
        let targets = Targets {
            rto_ms: d
                .rto
                .or(tier.map(|t| t.rto))
                .map(|x| x.get().as_millis() as u64)
                .unwrap_or(u64::MAX),
            rpo_ms: d
                .rpo
                .or(tier.map(|t| t.rpo))
                .map(|x| x.get().as_millis() as u64)
                .unwrap_or(u64::MAX),
            zero_loss: svc.config.failover.replication != ReplicationMode::Async,
        };
        let n0 = &svc.nodes[0];
        let endpoint = svc.config.endpoint.listen;
        let canary = match svc.kind {
            ServiceKind::Postgres => {
                let mut ci = lifeboat_postgres::ConnInfo::of_node(&n0.config, n0.password.clone());
                ci.host = endpoint.ip().to_string();
                ci.port = endpoint.port();
                Target::Postgres(ci)
            }
            ServiceKind::Redis => Target::Redis {
                addr: endpoint,
                user: n0.config.user.clone(),
                password: n0.password.clone(),
                wait_replica: targets.zero_loss,
            },
        };
        Ok(Prepared {
            scenario,
            primary,
            before,
            main,
            targets,
            canary,
            lag,
            corruption,
        })
    }

    /// Runs scheduled drills when their cron expressions say, until `cancel`. A run that
    /// cannot start (another drill running, the service unhealthy) is recorded as skipped.
    pub async fn schedule(self) {
        let cancel = self.inner.cancel.clone();
        loop {
            let t = now();
            let next = self
                .inner
                .cfg
                .drills
                .iter()
                .filter_map(|(n, d)| Some((next_after(d.schedule.as_deref()?, t)?, n.clone())))
                .min();
            let Some((at, name)) = next else {
                return;
            };
            let wait = Duration::from_millis(at.since(now()));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.start(&name, false, "schedule") {
                Ok(s) => info!(drill = %name, run = ?s.run, "scheduled drill started"),
                Err(e) => {
                    warn!(drill = %name, error = %e, "scheduled drill skipped");
                    let at = now();
                    let d = &self.inner.cfg.drills[&name];
                    let mut report = Report {
                        drill: name.clone(),
                        record: Record {
                            scenario: d.scenario().unwrap_or_default(),
                            ..Record::default()
                        },
                        service: d.service.clone(),
                        status: "skipped".into(),
                        started_ms: at.0,
                        ended_ms: Some(at.0),
                        ..Report::default()
                    };
                    report.note(
                        at,
                        "failed",
                        format!("the scheduled run did not start: {e}"),
                    );
                    if let Ok(id) =
                        self.inner
                            .store
                            .drill_run_open(&name, &d.service, at, &json(&report))
                    {
                        report.id = id;
                        let _ = self.inner.store.drill_run_save(
                            id,
                            "skipped",
                            Some(at),
                            &json(&report),
                        );
                        self.inner.metrics.record(&report);
                        tell(&self.inner.store, &report);
                    }
                }
            }
            // Never fire twice for one occurrence.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
}

/// The next time after `t` that the cron expression `schedule` names (UTC).
pub fn next_after(schedule: &str, t: Millis) -> Option<Millis> {
    let cron = lifeboat_config::parse_schedule(schedule).ok()?;
    let from = chrono::DateTime::from_timestamp_millis(t.0 as i64)?;
    let next = cron.find_next_occurrence(&from, false).ok()?;
    Some(Millis(next.timestamp_millis() as u64))
}

fn check_port(kind: CheckKind, address: Option<&str>, url: Option<&str>) -> Option<u16> {
    match kind {
        CheckKind::Tcp => address?.rsplit(':').next()?.parse().ok(),
        CheckKind::Http => {
            let rest = url?.split("://").nth(1)?;
            let hostport = rest.split('/').next()?;
            match hostport.rsplit_once(':') {
                Some((_, p)) => p.parse().ok(),
                None => Some(if url?.starts_with("https") { 443 } else { 80 }),
            }
        }
    }
}

/// Why the service is not in a state to be drilled (empty: it is).
fn healthy(s: &Status) -> Vec<String> {
    let mut r = Vec::new();
    if s.paused {
        r.push(format!(
            "service {} is paused (`lifeboat resume`)",
            s.service
        ));
    }
    if let Some(p) = &s.in_flight {
        r.push(format!("a {p} is in flight"));
    }
    if s.primary.is_none() {
        r.push("no primary is known".into());
    }
    if !s.fencing_in_background.is_empty() {
        r.push(format!(
            "{} is still being fenced",
            s.fencing_in_background.join(", ")
        ));
    }
    for n in &s.nodes {
        if n.role == "needs-rejoin" || n.role == "fenced" {
            r.push(format!(
                "node {} is {} (`lifeboat rejoin {}` first)",
                n.name, n.role, n.name
            ));
        } else if n.health != "up" {
            r.push(format!(
                "node {} is {}: {}",
                n.name, n.health, n.health_detail
            ));
        }
    }
    r
}

fn plan_lines(d: &DrillConfig, p: &Prepared) -> Vec<String> {
    let mut l = vec![format!(
        "start a canary writing every {} through the endpoint of {}",
        d.canary_interval, d.service
    )];
    for f in &p.before {
        l.push(format!("record, then apply: {}", f.describe()));
    }
    if let Some((bytes, max)) = p.lag {
        l.push(format!(
            "write {} of WAL on {} and wait until Lifeboat sees the standbys past max-lag ({})",
            lifeboat_core::time::format_bytes(bytes),
            p.primary,
            lifeboat_core::time::format_bytes(max)
        ));
    }
    if let Some(c) = &p.corruption {
        l.push(format!("record {}", p.main.describe()));
        l.push(format!(
            "write {CORRUPTION_ROWS} rows on {} and note the WAL position, then DROP their table (the fault)",
            p.primary
        ));
        l.push(format!(
            "restore source {} from repository {} to that position into the scratch directory, start it and count the rows",
            c.source, c.repository.location
        ));
        l.push("stop the restored copy and remove it".into());
        return l;
    }
    l.push(format!(
        "record, then apply: {} (the fault)",
        p.main.describe()
    ));
    l.push(format!(
        "hold it for {}; expect {}",
        d.duration,
        if p.scenario.expects_failover() {
            format!(
                "a failover, the first write within {} and {}",
                format_ms(p.targets.rto_ms),
                if p.targets.zero_loss {
                    "no acknowledged write lost".to_string()
                } else {
                    format!("at most {} of writes lost", format_ms(p.targets.rpo_ms))
                }
            )
        } else {
            "no failover, and the reason Lifeboat gives".into()
        }
    ));
    l.push("undo every fault; read every acknowledged write back from the primary".into());
    if p.scenario.expects_failover() {
        l.push(format!(
            "rejoin {} as a standby{}",
            p.primary,
            if d.failback {
                ", then switch back to it".to_string()
            } else {
                String::new()
            }
        ));
    }
    l
}

/// One run in progress.
struct Run {
    inner: Arc<Inner>,
    d: DrillConfig,
    target: Drilled,
    report: Report,
    abort: CancellationToken,
    why: Arc<Mutex<Option<String>>>,
    /// Faults recorded (store id, fault, index in the report).
    applied: Vec<(i64, Fault, usize)>,
}

impl Run {
    fn save(&self) {
        let r = &self.report;
        if let Err(e) =
            self.inner
                .store
                .drill_run_save(r.id, &r.status, r.ended_ms.map(Millis), &json(r))
        {
            warn!(run = r.id, error = %e, "cannot save the drill report");
        }
    }

    fn note(&mut self, outcome: &str, what: impl Into<String>) {
        let what = what.into();
        info!(drill = %self.report.drill, run = self.report.id, "{what}");
        self.report.note(now(), outcome, what);
        self.save();
    }

    fn stopped(&self) -> Option<String> {
        if !self.abort.is_cancelled() {
            return None;
        }
        Some(
            self.why
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "the daemon is stopping".into()),
        )
    }

    fn status(&self) -> Status {
        self.target.handle.status()
    }

    /// Records the fault, then applies it. Its undo is in the store before anything happens.
    async fn apply(&mut self, fault: Fault) -> Result<(), String> {
        let text = serde_json::to_string(&fault).map_err(|e| e.to_string())?;
        let id = self
            .inner
            .store
            .fault_register(self.report.id, &text, now())
            .map_err(|e| e.to_string())?;
        self.report.faults.push(FaultReport {
            fault: fault.describe(),
            applied_ms: None,
            undone_ms: None,
            state: "registered".into(),
            detail: String::new(),
        });
        let i = self.report.faults.len() - 1;
        self.applied.push((id, fault.clone(), i));
        self.save();
        let at = now();
        let a = fault.apply(FAULT_BUDGET).await;
        let state = if a.is_ok() { "applied" } else { "registered" };
        let _ = self.inner.store.fault_state(id, state, now(), a.detail());
        let f = &mut self.report.faults[i];
        f.applied_ms = Some(at.0);
        f.state = state.into();
        f.detail = a.detail().into();
        let outcome = if a.is_ok() { "ok" } else { "failed" };
        self.note(
            outcome,
            format!("applied: {}: {}", fault.describe(), a.detail()),
        );
        if a.is_ok() {
            Ok(())
        } else {
            Err(format!("{}: {}", fault.describe(), a.detail()))
        }
    }

    /// Undoes every recorded fault, newest first. Returns (applied, undone).
    /// Undoes the recorded faults past the first `keep`, newest first. Returns (applied,
    /// undone).
    async fn undo_down_to(&mut self, keep: usize) -> (u32, u32) {
        let mut undone = 0;
        let all = self.applied.split_off(keep.min(self.applied.len()));
        let n = all.len() as u32;
        for (id, fault, i) in all.into_iter().rev() {
            let a = fault.undo(FAULT_BUDGET).await;
            let ok = a.is_ok();
            let state = if ok { "undone" } else { "undo-failed" };
            let _ = self.inner.store.fault_state(id, state, now(), a.detail());
            let f = &mut self.report.faults[i];
            f.state = state.into();
            if ok {
                f.undone_ms = Some(now().0);
                undone += 1;
            }
            f.detail = a.detail().into();
            self.note(
                if ok { "ok" } else { "failed" },
                format!("undone: {}: {}", fault.describe(), a.detail()),
            );
        }
        (n, undone)
    }

    /// Waits for `cond` on the service's status, at most `limit`, or until aborted.
    async fn wait_status(&self, limit: Duration, cond: impl Fn(&Status) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(&self.status()) {
                return true;
            }
            if Instant::now() >= deadline || self.inner.cancel.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn drive(mut self, p: Prepared) -> Report {
        let deadline = Instant::now() + self.d.timeout.get();
        let canary_target = p.canary.clone();
        let mut aborted: Option<String> = None;
        if let Err(e) = canary_target.prepare().await {
            aborted = Some(format!("the canary cannot write through the endpoint: {e}"));
        }
        let canary = Canary::start(
            canary_target.clone(),
            self.report.id,
            self.d.canary_interval.get(),
        );
        if aborted.is_none() {
            aborted = self.warm_up(&canary).await.err();
        }
        if aborted.is_none() {
            aborted = match &p.corruption {
                Some(c) => self.corrupt_and_restore(&p, c, deadline).await.err(),
                None => self.break_it(&p, &canary, deadline).await.err(),
            };
        }
        // Rollback, always.
        // The fault first. When no failover may happen, the lost primary must be seen back
        // before the standbys are released: a standby that caught up while Lifeboat still
        // held the primary for lost would be promoted, by a correct decision the drill caused.
        let (mut applied, mut undone) = self.undo_down_to(p.before.len()).await;
        if !p.scenario.expects_failover() && !self.inner.cancel.is_cancelled() {
            let back = self
                .wait_status(Duration::from_secs(30), |s| {
                    s.nodes
                        .iter()
                        .any(|n| n.name == p.primary && n.health == "up")
                })
                .await;
            if back {
                self.note("ok", format!("Lifeboat sees {} up again", p.primary));
            } else {
                self.note(
                    "failed",
                    format!("{} was not seen up within 30 s of the undo", p.primary),
                );
            }
        }
        let (a, u) = self.undo_down_to(0).await;
        applied += a;
        undone += u;
        let undone_at = now();
        if self.inner.cancel.is_cancelled() {
            self.note(
                "info",
                "the daemon is stopping: the faults are undone, the rest of the rollback is left",
            );
        } else if self.report.fault_at_ms.is_some() {
            // Recovered when a write sent after the undo is acknowledged.
            let limit = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(30));
            let back = Instant::now() + limit;
            while !canary.acked_since(undone_at.0)
                && Instant::now() < back
                && !self.inner.cancel.is_cancelled()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if canary.acked_since(undone_at.0) {
                self.note("ok", "the canary writes through the endpoint again");
            } else {
                self.note(
                    "failed",
                    format!(
                        "the canary could not write within {limit:?} of the undo: {}",
                        canary.last_error().unwrap_or_default()
                    ),
                );
            }
        }
        if self.report.fault_at_ms.is_some() {
            // Also catches a failover the undo itself caused.
            self.report.record.primary_after = self.status().primary;
        }
        let writes = canary.stop().await;
        let measured = match self.report.fault_at_ms {
            Some(f) if !self.inner.cancel.is_cancelled() => {
                match canary_target
                    .read_back(self.report.id, Duration::from_secs(30))
                    .await
                {
                    Ok(present) => {
                        let m = drill::measure(&writes, f, &present);
                        self.note(
                            if m.lost.is_empty() { "ok" } else { "failed" },
                            format!(
                                "read back from the primary: {} of {} acknowledged writes present",
                                m.acked as usize - m.lost.len(),
                                m.acked
                            ),
                        );
                        canary_target.clean(self.report.id).await;
                        Some(m)
                    }
                    Err(e) => {
                        self.note("failed", e);
                        None
                    }
                }
            }
            _ => None,
        };
        self.report.keep_writes(writes);
        self.report.record.measured = measured.clone();
        let left_broken = if self.report.fault_at_ms.is_none() {
            None
        } else if self.inner.cancel.is_cancelled() {
            let now_primary = self.status().primary;
            (now_primary.as_deref() != Some(p.primary.as_str())).then(|| {
                format!(
                    "the daemon stopped before {} could rejoin (`lifeboat rejoin {}`)",
                    p.primary, p.primary
                )
            })
        } else {
            self.restore_layout(&p, aborted.is_none()).await.err()
        };
        self.report.primary_at_end = self.status().primary;
        if aborted.is_none() {
            aborted = self.stopped();
        }
        let r = &mut self.report.record;
        r.measured = measured;
        r.faults_applied = applied;
        r.faults_undone = undone;
        r.aborted = aborted.clone();
        r.left_broken = left_broken;
        let verdict = drill::verdict(r);
        self.report.status = if aborted.is_some() {
            "aborted"
        } else if verdict.pass {
            "passed"
        } else {
            "failed"
        }
        .into();
        self.report.verdict = Some(verdict);
        self.report.ended_ms = Some(now().0);
        self.save();
        self.report
    }

    async fn warm_up(&mut self, canary: &Canary) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(why) = self.stopped() {
                return Err(why);
            }
            let (_, acked) = canary.acks();
            if start.elapsed() >= WARM_UP && acked >= WARM_ACKS {
                self.note(
                    "ok",
                    format!("the canary writes through the endpoint ({acked} acknowledged)"),
                );
                return Ok(());
            }
            if start.elapsed() >= WARM_UP * 10 {
                return Err(format!(
                    "the canary could not write through the endpoint before the fault ({acked} acknowledged in {:?}): {}",
                    start.elapsed(),
                    canary.last_error().unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Applies the faults, holds them for the drill's duration and watches.
    async fn break_it(
        &mut self,
        p: &Prepared,
        canary: &Canary,
        deadline: Instant,
    ) -> Result<(), String> {
        for f in &p.before {
            self.apply(f.clone()).await?;
        }
        if let Some((bytes, max)) = p.lag {
            self.write_wal(&p.primary, bytes).await?;
            let seen = self
                .wait_status(Duration::from_secs(15), |s| {
                    s.nodes
                        .iter()
                        .filter(|n| n.role == "standby")
                        .all(|n| n.lag_bytes.is_some_and(|l| l > max))
                })
                .await;
            if !seen {
                return Err(format!(
                    "the standbys were not seen past max-lag ({}) within 15 s",
                    lifeboat_core::time::format_bytes(max)
                ));
            }
            self.note("ok", "Lifeboat sees every standby past max-lag");
        }
        let degrading = p.scenario == Scenario::GradualDegradation;
        if degrading {
            self.degrade(p, deadline).await?;
        }
        let other_incidents: BTreeMap<String, Option<i64>> = self
            .inner
            .services
            .iter()
            .filter(|(n, _)| **n != self.target.service.name)
            .map(|(n, t)| (n.clone(), t.handle.status().last_incident))
            .collect();
        let mut route = self.status().endpoint.routes_to;
        let mut still: BTreeMap<String, (Option<String>, Option<String>, Instant)> =
            BTreeMap::new();
        let mut incident = self.status().last_incident;
        let fault_at = now();
        self.report.fault_at_ms = Some(fault_at.0);
        self.apply(p.main.clone()).await?;
        let hold_until = Instant::now()
            + if degrading {
                stage_length(&self.d)
            } else {
                self.d.duration.get()
            };
        let result = loop {
            if let Some(why) = self.stopped() {
                break Err(why);
            }
            if Instant::now() >= deadline {
                break Err(format!("timed out after {}", self.d.timeout));
            }
            if Instant::now() >= hold_until {
                break Ok(());
            }
            let s = self.status();
            if s.endpoint.routes_to != route {
                route = s.endpoint.routes_to.clone();
                self.note(
                    "info",
                    match &route {
                        Some(r) => format!(
                            "the endpoint routes to {r} (epoch {})",
                            s.endpoint.epoch.unwrap_or(0)
                        ),
                        None => "the endpoint routes nowhere".into(),
                    },
                );
            }
            if s.last_incident != incident {
                incident = s.last_incident;
                if let Some(i) = incident {
                    self.report.incidents.push(i);
                    self.note("info", format!("incident {i} opened"));
                }
            }
            // A cut-off standby may still say it streams (until wal_receiver_timeout): it is
            // cut off when its position stands still for a second while the primary's moves.
            let primary_pos = s
                .nodes
                .iter()
                .find(|n| n.name == p.primary)
                .and_then(|n| n.position.clone());
            for n in s.nodes.iter().filter(|n| n.role == "standby") {
                let seen = still.entry(n.name.clone()).or_insert((
                    n.position.clone(),
                    primary_pos.clone(),
                    Instant::now(),
                ));
                if seen.0 != n.position {
                    *seen = (n.position.clone(), primary_pos.clone(), Instant::now());
                } else if seen.1 != primary_pos
                    && seen.2.elapsed() >= Duration::from_secs(1)
                    && !self.report.record.cut_off.contains(&n.name)
                {
                    self.report.record.cut_off.push(n.name.clone());
                    self.note(
                        "info",
                        format!(
                            "{} received nothing for a second while the primary wrote (it stands at {})",
                            n.name,
                            n.position.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
            let lost = s
                .nodes
                .iter()
                .any(|n| n.name == p.primary && n.health == "down");
            let acting =
                s.in_flight.is_some() || s.decision.iter().any(|d| d.starts_with("executing "));
            // The reasons carry the latest probe error, which changes with every probe: the
            // report keeps the latest, the timeline the first.
            if lost && !acting && s.primary.as_deref() == Some(p.primary.as_str()) {
                let first = self.report.record.refusal.is_empty();
                self.report.record.refusal = s.decision.clone();
                if first {
                    self.note(
                        "info",
                        format!("Lifeboat does not promote: {}", s.decision.join("; ")),
                    );
                }
            }
            for (name, before) in &other_incidents {
                let now_inc = self.inner.services[name].handle.status().last_incident;
                if now_inc != *before {
                    return self.held_result(Err(format!(
                        "a real incident on service {name} (incident {}) during the drill",
                        now_inc.unwrap_or(0)
                    )));
                }
            }
            if let Some(max) = self.d.max_outage {
                let last = canary.acks().0.unwrap_or(fault_at.0).max(fault_at.0);
                if now().since(Millis(last)) > max.get().as_millis() as u64 {
                    break Err(format!(
                        "no canary write was acknowledged for {max} (max-outage)"
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if p.scenario == Scenario::DiskFull {
            let s = self.status();
            self.note(
                "info",
                format!("Lifeboat's view meanwhile: {}", s.decision.join("; ")),
            );
        }
        self.held_result(result)
    }

    /// data-corruption: rows written, their table dropped (the fault), then a point-in-time
    /// restore to just before the statement into the scratch directory, started and counted.
    /// The restore's outcome goes into the report; an error here stops the drill.
    async fn corrupt_and_restore(
        &mut self,
        p: &Prepared,
        c: &Corruption,
        deadline: Instant,
    ) -> Result<(), String> {
        self.apply(p.main.clone()).await?;
        let table = format!("lifeboat_drill_rows_{}", self.report.id);
        let db = lifeboat_postgres::connect(&c.login, Duration::from_secs(5))
            .await
            .map_err(|e| format!("connecting to {}: {e}", p.primary))?;
        let sql = |q: String| {
            let db = &db;
            async move {
                tokio::time::timeout(Duration::from_secs(30), db.simple_query(&q))
                    .await
                    .map_err(|_| format!("{q}: no answer within 30 s"))?
                    .map_err(|e| format!("{q}: {e}"))
            }
        };
        sql(format!(
            "CREATE TABLE {table} AS SELECT g AS n FROM generate_series(1, {CORRUPTION_ROWS}) g"
        ))
        .await?;
        let lsn = db
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| e.to_string())?
            .get::<_, String>(0);
        let at = lifeboat_postgres::parse_lsn(&lsn).ok_or_else(|| format!("bad LSN {lsn}"))?;
        self.note(
            "ok",
            format!(
                "wrote {CORRUPTION_ROWS} rows into {table} on {} (WAL at {lsn})",
                p.primary
            ),
        );
        let fault_at = now();
        self.report.fault_at_ms = Some(fault_at.0);
        sql(format!("DROP TABLE {table}")).await?;
        self.note(
            "ok",
            format!("the destructive statement: DROP TABLE {table}"),
        );
        // Close the segment, so the archive reaches past the target at once.
        sql("SELECT pg_switch_wal()".into()).await?;
        drop(db);

        let mut restore = drill::Restore {
            expected: CORRUPTION_ROWS,
            found: None,
            ms: None,
            error: None,
        };
        let outcome = self.restore_to(c, at, &table, deadline).await;
        match outcome {
            Ok(rows) => {
                restore.found = Some(rows as u64);
                restore.ms = Some(now().since(fault_at));
                self.note(
                    if rows as u64 == CORRUPTION_ROWS {
                        "ok"
                    } else {
                        "failed"
                    },
                    format!("the restored copy holds {rows} of the {CORRUPTION_ROWS} rows"),
                );
            }
            Err(e) => {
                self.note("failed", format!("the point-in-time restore failed: {e}"));
                restore.error = Some(e);
            }
        }
        self.report.record.restore = Some(restore);
        self.report.record.primary_after = self.status().primary;
        Ok(())
    }

    /// Restores `c.source` to the WAL position `at` into `c.dir` (waiting, within the
    /// deadline, until the archive reaches it), starts it and counts the rows of `table`.
    async fn restore_to(
        &mut self,
        c: &Corruption,
        at: u64,
        table: &str,
        deadline: Instant,
    ) -> Result<usize, String> {
        use lifeboat_backup::postgres::{restore_pitr, Pick, Target};
        let repo = lifeboat_backup::scheduler::open_repo(&c.repository)
            .await
            .map_err(|e| format!("opening repository {}: {e}", c.repository.location))?;
        let parent = c.dir.parent().unwrap_or(&c.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        loop {
            let _ = std::fs::remove_dir_all(&c.dir);
            let r = restore_pitr(
                &repo,
                Target::Lsn(at),
                Pick {
                    source: Some(&c.source),
                    base: None,
                },
                &c.dir,
                false,
                &lifeboat_backup::progress::Progress::hidden(),
            )
            .await;
            match r {
                Ok(summary) => {
                    self.note(
                        "ok",
                        format!(
                            "restored base backup {} and {} WAL files up to {}",
                            summary.base_snapshot,
                            summary.wal_files,
                            lifeboat_postgres::format_lsn(at)
                        ),
                    );
                    break;
                }
                Err(e)
                    if e.to_string().contains("ends before the target")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
            if let Some(why) = self.stopped() {
                return Err(why);
            }
        }
        let query = format!("SELECT n FROM {table}");
        let spec = lifeboat_backup::restore_test::TestSpec {
            source: &c.source,
            query: &query,
            scratch_dir: &parent,
            os_user: &c.os_user,
            login: c.login.clone(),
        };
        lifeboat_backup::restore_test::count_restored(&c.dir, &spec)
            .await
            .map_err(|e| e.to_string())
    }

    /// gradual-degradation: the primary is stopped for longer and longer slices of time
    /// ([`STAGES`]), each stage a quarter of the drill's duration; the loss (the last quarter)
    /// follows in `break_it`. Records whether anything was promoted meanwhile.
    async fn degrade(&mut self, p: &Prepared, deadline: Instant) -> Result<(), String> {
        let throttle = p.before.first().cloned().ok_or("no throttle")?;
        let stage = stage_length(&self.d);
        let mut promoted = None;
        let mut max_stall = 0;
        'stages: for (stall, period) in STAGES {
            self.note(
                "info",
                format!(
                    "latency stage: {} stopped {stall} ms of every {period} ms",
                    p.primary
                ),
            );
            max_stall = stall;
            let end = Instant::now() + stage;
            while Instant::now() < end {
                if let Some(why) = self.stopped() {
                    throttle.stall(false);
                    return Err(why);
                }
                if Instant::now() >= deadline {
                    throttle.stall(false);
                    return Err(format!("timed out after {}", self.d.timeout));
                }
                throttle.stall(true);
                tokio::time::sleep(Duration::from_millis(stall)).await;
                throttle.stall(false);
                tokio::time::sleep(Duration::from_millis(period - stall)).await;
                let now_primary = self.status().primary;
                if now_primary.as_deref() != Some(p.primary.as_str()) {
                    promoted = now_primary;
                    self.note(
                        "failed",
                        format!(
                            "{} was promoted while {} was only slow",
                            promoted.as_deref().unwrap_or("nothing"),
                            p.primary
                        ),
                    );
                    break 'stages;
                }
            }
        }
        self.report.record.degraded = Some(drill::Degraded {
            max_stall_ms: max_stall,
            promoted_while_slow: promoted,
        });
        Ok(())
    }

    fn held_result(&mut self, r: Result<(), String>) -> Result<(), String> {
        self.report.record.primary_after = self.status().primary;
        if let Err(e) = &r {
            self.note("failed", format!("stopped: {e}"));
        } else {
            self.note("info", format!("held the fault for {}", self.d.duration));
        }
        r
    }

    /// replica-lag: writes `bytes` of WAL on the primary, directly.
    async fn write_wal(&mut self, primary: &str, bytes: u64) -> Result<(), String> {
        let n = self
            .target
            .service
            .nodes
            .iter()
            .find(|n| n.name == primary)
            .ok_or("the primary is not in the service")?;
        let ci = lifeboat_postgres::ConnInfo::of_node(&n.config, n.password.clone());
        let c = lifeboat_postgres::connect(&ci, Duration::from_secs(5))
            .await
            .map_err(|e| format!("connecting to {primary}: {e}"))?;
        let chunk: u64 = 1 << 20;
        let work = async {
            for _ in 0..bytes.div_ceil(chunk) {
                c.execute(
                    "SELECT pg_logical_emit_message(false, 'lifeboat-drill', repeat('x', $1::int))",
                    &[&(chunk as i32)],
                )
                .await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .map_err(|_| "writing WAL took longer than 60 s".to_string())?
            .map_err(|e| format!("writing WAL on {primary}: {e}"))?;
        self.note(
            "ok",
            format!(
                "wrote {} of WAL on {primary}",
                lifeboat_core::time::format_bytes(bytes)
            ),
        );
        Ok(())
    }

    /// Puts the service back as it was: the old primary rejoins as a standby, and with
    /// `failback` (and a drill that was not aborted) becomes the primary again. Says what it
    /// could not put back.
    async fn restore_layout(&mut self, p: &Prepared, failback: bool) -> Result<(), String> {
        let r = self.put_back(p, failback).await;
        match &r {
            Ok(()) => {
                let s = self.status();
                self.note(
                    "ok",
                    format!(
                        "the service is healthy again, {} primary",
                        s.primary.unwrap_or_default()
                    ),
                );
            }
            Err(e) => self.note("failed", e.clone()),
        }
        r
    }

    async fn put_back(&mut self, p: &Prepared, failback: bool) -> Result<(), String> {
        let old = p.primary.clone();
        if self.status().primary.as_deref() != Some(old.as_str()) {
            let marked = self
                .wait_status(Duration::from_secs(30), |s| {
                    s.in_flight.is_none()
                        && s.nodes
                            .iter()
                            .any(|n| n.name == old && n.role == "needs-rejoin")
                })
                .await;
            if !marked {
                return Err(format!(
                    "{old} was not marked as needing a rejoin: rejoin it by hand (`lifeboat rejoin {old}`)"
                ));
            }
            if !self
                .request(Command::Rejoin { node: old.clone() }, "rejoin")
                .await
            {
                return Err(format!("{old} did not rejoin: `lifeboat rejoin {old}`"));
            }
            let back = self
                .wait_status(Duration::from_secs(60), |s| {
                    s.nodes
                        .iter()
                        .any(|n| n.name == old && n.role == "standby" && n.health == "up")
                })
                .await;
            if !back {
                return Err(format!(
                    "{old} did not come back as a healthy standby within 60 s"
                ));
            }
            if self.d.failback && failback {
                let caught_up = self
                    .wait_status(Duration::from_secs(60), |s| {
                        s.nodes
                            .iter()
                            .any(|n| n.name == old && n.lag_bytes == Some(0))
                    })
                    .await;
                if !caught_up {
                    self.note("info", format!("{old} is not fully caught up; switching back anyway (a switchover waits for it)"));
                }
                if !self
                    .request(Command::Switchover { to: old.clone() }, "failback")
                    .await
                {
                    return Err(format!(
                        "the failback to {old} failed: `lifeboat switchover --to {old}`"
                    ));
                }
            }
        }
        if self
            .wait_status(Duration::from_secs(60), |s| healthy(s).is_empty())
            .await
        {
            Ok(())
        } else {
            Err(format!(
                "the service is not healthy 60 s after the rollback: {}",
                healthy(&self.status()).join("; ")
            ))
        }
    }

    async fn request(&mut self, c: Command, what: &str) -> bool {
        let reply = self
            .target
            .handle
            .request(
                Request::Command(c),
                &format!("drill run {}", self.report.id),
                LAYOUT_BUDGET,
            )
            .await;
        if let Some(i) = reply.incident {
            self.report.incidents.push(i);
        }
        // A plan's reply is the plan and its outcome: keep its first and last lines.
        let m = reply.message.trim();
        let said = match (m.lines().next(), m.lines().last()) {
            (Some(first), Some(last)) if first != last => format!("{first}, {last}"),
            _ => m.to_owned(),
        };
        self.note(
            if reply.ok { "ok" } else { "failed" },
            format!("{what}: {said}"),
        );
        reply.ok
    }
}

/// A drill that failed (or a scheduled run that could not start) is a notice, and so is one
/// that passed: it resolves an earlier failure under the same key.
fn tell(store: &Store, r: &Report) {
    use lifeboat_core::notice::{Notice, NoticeKind, Severity};
    let kind = match r.status.as_str() {
        "passed" => NoticeKind::DrillPassed,
        "failed" | "skipped" => NoticeKind::DrillFailed,
        _ => return,
    };
    let why = match &r.verdict {
        Some(v) => v
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
            .join(" "),
        None => r
            .timeline
            .last()
            .map(|t| t.what.clone())
            .unwrap_or_default(),
    };
    let title = match kind {
        NoticeKind::DrillPassed => format!("drill {} passed (run {})", r.drill, r.id),
        _ => format!("drill {} {} (run {}): {why}", r.drill, r.status, r.id),
    };
    let mut n = Notice::new(
        kind,
        &r.service,
        Severity::Warning,
        format!("drill/{}", r.drill),
    )
    .at(Millis(r.ended_ms.unwrap_or(r.started_ms)))
    .title(title)
    .text(format!("`lifeboat drill report {}` shows the run.", r.id))
    .detail("run", r.id)
    .detail("drill", &r.drill);
    if let Some(rto) = r.record.measured.as_ref().and_then(|m| m.rto_ms) {
        n = n.detail("rto_ms", rto);
    }
    if let Err(e) = store.notice(&n, None) {
        warn!(error = %e, "could not record the drill's notice");
    }
}
