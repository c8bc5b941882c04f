//! `[drills.NAME]`: scheduled or on-demand drills that break a service on purpose, measure its
//! recovery against its tier's targets, and always put things back (capability 9).

use crate::report::Report;
use crate::types::{Config, ServiceKind};
use crate::units::Dur;
use lifeboat_core::drill::Scenario;
use serde::Deserialize;
use std::path::PathBuf;
use std::str::FromStr;

/// How a primary-failure drill loses its primary.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL to the server and every process it started (a crash). The killed server is
    /// started again as a standby by a rejoin, which needs `control` of the node.
    Kill,
    /// SIGSTOP to the server and its processes (a hang); SIGCONT undoes it.
    Pause,
    /// Every packet to and from the server's port dropped (nftables; needs root).
    Silence,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Silence => "silence",
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillConfig {
    /// primary-failure, region-outage, gradual-degradation, partition, disk-full,
    /// replica-lag or data-corruption.
    pub scenario: String,
    /// The service broken on purpose.
    pub service: String,
    /// primary-failure only: kill (default for PostgreSQL), pause (default for Redis) or
    /// silence.
    pub fault: Option<FaultKind>,
    /// region-outage: the region that goes dark; partition: the region cut off from the
    /// others (default: the primary's at the start).
    pub region: Option<String>,
    /// How long the fault stays applied.
    #[serde(default = "default_duration")]
    pub duration: Dur,
    /// How often the canary writes through the service's endpoint.
    #[serde(default = "default_canary_interval")]
    pub canary_interval: Dur,
    /// Cron expression (5 fields, UTC; `#`, `L` and `W` allowed) for scheduled runs.
    pub schedule: Option<String>,
    /// The whole drill, rollback included, is stopped and rolled back past this.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Abort (and roll back) when the canary has had no write acknowledged for this long.
    pub max_outage: Option<Dur>,
    /// End by switching back to the primary the drill started with.
    #[serde(default = "default_true")]
    pub failback: bool,
    /// Judge against these instead of the tier's.
    pub rto: Option<Dur>,
    pub rpo: Option<Dur>,
    /// data-corruption only: where the point-in-time restore goes (relative to the config
    /// file; default: the restore test's); the PostgreSQL OS user must be able to write it.
    pub scratch_dir: Option<PathBuf>,
}

fn default_duration() -> Dur {
    Dur::from_secs(10)
}
fn default_canary_interval() -> Dur {
    Dur::from_millis(20)
}
fn default_timeout() -> Dur {
    Dur::from_secs(300)
}
fn default_true() -> bool {
    true
}

impl DrillConfig {
    pub fn scenario(&self) -> Option<Scenario> {
        Scenario::parse(&self.scenario)
    }

    /// The fault a primary-failure drill applies (kill for PostgreSQL, pause for Redis
    /// unless set).
    pub fn primary_fault(&self, kind: ServiceKind) -> FaultKind {
        self.fault.unwrap_or(match kind {
            ServiceKind::Postgres => FaultKind::Kill,
            ServiceKind::Redis => FaultKind::Pause,
        })
    }
}

/// A recurring maintenance window: it opens at each time `start` names and stays open for
/// `duration`. While it is open, drills of its services do not start (a scheduled run is
/// recorded as skipped) unless `allow-drills`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaintenanceConfig {
    /// Cron expression (5 fields, UTC) of the window's openings.
    pub start: String,
    pub duration: Dur,
    /// The services it covers (default: all).
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub allow_drills: bool,
}

impl MaintenanceConfig {
    /// When the window that is open at `t` (ms since the Unix epoch) opened, if one is.
    pub fn open_at(&self, t: u64) -> Option<u64> {
        let cron = parse_schedule(&self.start).ok()?;
        let at = chrono::DateTime::from_timestamp_millis(t as i64)?;
        let opened = cron.find_previous_occurrence(&at, true).ok()?;
        let opened = opened.timestamp_millis() as u64;
        (t < opened.saturating_add(self.duration.get().as_millis() as u64)).then_some(opened)
    }

    pub fn covers(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }
}

/// Parses a drill schedule: five fields (minute hour day-of-month month day-of-week), UTC.
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    if s.split_whitespace().count() != 5 {
        return Err(format!(
            "{s:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week), e.g. \"0 10 * * TUE\""
        ));
    }
    croner::Cron::from_str(s).map_err(|e| {
        format!("{s:?} does not parse as a cron expression ({e}); write e.g. \"0 10 * * TUE\"")
    })
}

pub(crate) fn validate(c: &Config, r: &mut Report) {
    for (name, m) in &c.maintenance {
        let path = format!("maintenance.{name}");
        if let Err(e) = parse_schedule(&m.start) {
            r.error(format!("{path}.start"), e);
        }
        if m.duration.get().is_zero() {
            r.error(format!("{path}.duration"), "must be greater than 0");
        }
        for s in &m.services {
            if !c.services.contains_key(s) {
                let known: Vec<&str> = c.services.keys().map(String::as_str).collect();
                r.error(
                    format!("{path}.services"),
                    format!(
                        "unknown service {s:?}; known services: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    for (name, d) in &c.drills {
        let path = format!("drills.{name}");
        if name.is_empty()
            || name.contains(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
        {
            r.error(&path, "a drill name may only hold letters, digits, - and _");
        }
        let Some(scenario) = d.scenario() else {
            let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
            r.error(
                format!("{path}.scenario"),
                format!(
                    "unknown scenario {:?}; known scenarios: {}",
                    d.scenario,
                    known.join(", ")
                ),
            );
            continue;
        };
        let Some(s) = c.services.get(&d.service) else {
            let known: Vec<&str> = c.services.keys().map(String::as_str).collect();
            r.error(
                format!("{path}.service"),
                format!(
                    "unknown service {:?}; known services: {}",
                    d.service,
                    known.join(", ")
                ),
            );
            continue;
        };
        if let Some(cron) = &d.schedule {
            if let Err(e) = parse_schedule(cron) {
                r.error(format!("{path}.schedule"), e);
            }
        }
        if d.duration.get().is_zero() {
            r.error(format!("{path}.duration"), "must be greater than 0");
        }
        if d.canary_interval.get().is_zero() {
            r.error(format!("{path}.canary-interval"), "must be greater than 0");
        }
        if d.timeout.get() <= d.duration.get() {
            r.error(
                format!("{path}.timeout"),
                format!(
                    "must be longer than duration ({}): the timeout bounds the whole drill, its rollback included",
                    d.duration
                ),
            );
        }
        if d.fault.is_some() && scenario != Scenario::PrimaryFailure {
            r.error(
                format!("{path}.fault"),
                format!(
                    "only a primary-failure drill takes a fault; {} applies its own",
                    scenario.as_str()
                ),
            );
        }
        if d.region.is_some() && !matches!(scenario, Scenario::RegionOutage | Scenario::Partition) {
            r.error(
                format!("{path}.region"),
                "only a region-outage or partition drill takes a region",
            );
        }
        if let Some(region) = &d.region {
            if !s.regions.contains_key(region) {
                let known: Vec<&str> = s.regions.keys().map(String::as_str).collect();
                r.error(
                    format!("{path}.region"),
                    format!(
                        "service {} has no region {region:?}; its regions: {}",
                        d.service,
                        known.join(", ")
                    ),
                );
            }
        }
        match scenario {
            Scenario::PrimaryFailure => {
                let fault = d.primary_fault(s.kind);
                if fault == FaultKind::Kill {
                    if s.kind == ServiceKind::Redis {
                        r.error(
                            format!("{path}.fault"),
                            "kill is for PostgreSQL nodes, which Lifeboat can start again as standbys; a killed Redis server stays down: use fault = \"pause\" (a hang) or \"silence\"",
                        );
                    } else if let Some((_, _, n)) = s.nodes().find(|(_, _, n)| n.control.is_none())
                    {
                        r.error(
                            format!("{path}.fault"),
                            format!(
                                "kill needs control of every node of service {} (node {} has no control = {{ data-dir = … }}): the killed primary is started again as a standby by a rejoin; or use fault = \"pause\"",
                                d.service, n.name
                            ),
                        );
                    }
                }
            }
            Scenario::RegionOutage | Scenario::Partition => {}
            Scenario::DiskFull => {
                if s.kind != ServiceKind::Postgres {
                    r.error(
                        format!("{path}.scenario"),
                        format!("disk-full fills a PostgreSQL data directory's file system; service {} is not PostgreSQL", d.service),
                    );
                } else if let Some((_, _, n)) = s.nodes().find(|(_, _, n)| n.control.is_none()) {
                    r.error(
                        format!("{path}.scenario"),
                        format!(
                            "disk-full fills the file system of the primary's data directory, so it needs control = {{ data-dir = … }} on every node of service {} (node {} has none)",
                            d.service, n.name
                        ),
                    );
                }
            }
            Scenario::GradualDegradation => {
                if d.duration.get() < std::time::Duration::from_secs(8) {
                    r.error(
                        format!("{path}.duration"),
                        format!(
                            "gradual-degradation runs three latency stages and then the loss, a quarter of duration each, and the loss must outlast detection: give it at least \"8s\" (it is {})",
                            d.duration
                        ),
                    );
                }
            }
            Scenario::DataCorruption => {
                if s.kind != ServiceKind::Postgres {
                    r.error(
                        format!("{path}.scenario"),
                        format!(
                            "data-corruption restores PostgreSQL to a point in time; service {} is not PostgreSQL",
                            d.service
                        ),
                    );
                }
                let wal = c.backup.as_ref().and_then(|b| b.wal.as_ref());
                let has_source = wal.is_some_and(|w| {
                    c.backup
                        .as_ref()
                        .is_some_and(|b| b.sources.contains_key(&w.source))
                });
                match wal {
                    _ if !has_source => r.error(
                        format!("{path}.scenario"),
                        "data-corruption restores from the continuous WAL archive: configure [backup.wal] (and a tier that takes base backups of its source)",
                    ),
                    Some(w) if c.wal_of(s).is_none() => r.error(
                        format!("{path}.service"),
                        format!(
                            "the WAL archive (backup.wal.source = {:?}) does not follow service {}: make the source follow-primary or name one of its nodes",
                            w.source, d.service
                        ),
                    ),
                    _ => {}
                }
                let scratch = d.scratch_dir.is_some()
                    || c.backup.as_ref().is_some_and(|b| b.restore_test.is_some());
                if !scratch {
                    r.error(
                        format!("{path}.scratch-dir"),
                        "data-corruption restores into a scratch directory: set scratch-dir (writable by the postgres user) or configure [backup.restore-test]",
                    );
                }
            }
            Scenario::ReplicaLag => {
                if s.kind != ServiceKind::Postgres {
                    r.error(
                        format!("{path}.scenario"),
                        "replica-lag stops a PostgreSQL standby's WAL receiver; a Redis replica cannot be held back without stopping it",
                    );
                }
                if s.failover.max_lag.0 > 256 << 20 {
                    r.error(
                        format!("{path}.scenario"),
                        format!(
                            "replica-lag writes max-lag + 1 MiB of WAL to put the standbys past it, and services.{}.failover.max-lag is {}; drills allow at most 256 MiB",
                            d.service,
                            crate::format_bytes(s.failover.max_lag.0)
                        ),
                    );
                }
            }
        }
    }
}
