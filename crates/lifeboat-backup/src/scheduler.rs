//! Backup schedules run by the daemon (`lifeboat run`): one named worker per tier (back up its
//! sources, then apply its retention), continuous WAL, the scheduled restore test, and the
//! metrics that say how old each tier's newest backup is.

use crate::archiver::{backup_paths, BackupKind, BackupOptions};
use crate::copy::CopyReport;
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::group::{backup_group, GroupOptions, Member};
use crate::postgres::base_backup;
use crate::progress::Progress;
use crate::prune::PruneReport;
use crate::repo::Repo;
use crate::restore_test::{TestRecord, TestSpec};
use crate::snapshot::{Snapshot, Summary};
use crate::storage::Storage;
use crate::walstream::{ConnSource, WalStatus, WalStreamer};
use lifeboat_config::{
    BackupConfig, BackupTierConfig, Config, NodeConfig, RepositoryConfig, Retention, TierKind,
    WalMode,
};
use lifeboat_postgres::ConnInfo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;
/// (source, tier) -> (unix time of the newest good snapshot, RPO target).
type Newest = HashMap<(String, String), (f64, Duration)>;

/// `lifeboat_backup_*`, labelled by source and tier (both from the config, so bounded).
#[derive(Default)]
struct Metrics {
    last_success: Family<Labels, FGauge>,
    age: Family<Labels, FGauge>,
    rpo_exceeded: Family<Labels, Gauge>,
    duration: Family<Labels, FGauge>,
    size: Family<Labels, Gauge>,
    added: Family<Labels, Gauge>,
    dedup_ratio: Family<Labels, FGauge>,
    failures: Family<Labels, Counter>,
    wal_last_sync: FGauge,
    wal_lag: FGauge,
    wal_segments: Gauge,
    wal_synchronous: Gauge,
    restore_test_ok: Gauge,
    restore_test_duration: FGauge,
    restore_test_last: FGauge,
}

/// The node Lifeboat records as the primary now (the controller's view in `lifeboat run`).
pub type PrimaryFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the scheduler tells people about (the daemon turns these into notices).
#[derive(Clone, Debug, PartialEq)]
pub enum BackupEvent {
    /// The newest good snapshot of `source` in `tier` is older than the tier's RPO (`age_s`
    /// old), or, with `none_yet`, there has been none since the daemon started `age_s` ago.
    Stale {
        source: String,
        tier: String,
        age_s: f64,
        rpo_s: f64,
        none_yet: bool,
    },
    /// A stale tier has a new snapshot.
    Fresh {
        source: String,
        tier: String,
    },
    RestoreTestFailed {
        source: String,
        error: String,
    },
    /// A restore test passed after one failed.
    RestoreTestPassed {
        source: String,
        seconds: f64,
    },
}

pub type EventFn = Arc<dyn Fn(BackupEvent) + Send + Sync>;

/// How long a consistent group waits for the WAL holding its restore points.
const GROUP_WAL_WAIT: Duration = Duration::from_secs(60);

/// Runs the configured backup tiers on their schedules until cancelled; offline commands use
/// it to run one tier, or the restore test, by hand.
pub struct Scheduler {
    backup: BackupConfig,
    nodes: BTreeMap<String, NodeConfig>,
    /// Where `follow-primary` sources look; without it (offline) the writable node is probed.
    primary: Option<PrimaryFn>,
    events: Option<EventFn>,
    metrics: Arc<Metrics>,
    newest: Arc<Mutex<Newest>>,
}

/// What one run of a tier did.
#[derive(Debug, Default, serde::Serialize)]
pub struct TierRun {
    pub tier: String,
    pub snapshots: Vec<TierSnapshot>,
    /// A consistent tier: the group record and the spread of its restore points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<(String, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
    pub prune: Option<PruneReport>,
    /// Sources that failed, with the reason.
    pub failures: Vec<(String, String)>,
}

#[derive(Debug, serde::Serialize)]
pub struct TierSnapshot {
    pub source: String,
    pub id: String,
    pub summary: Summary,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn labels(source: &str, tier: &str) -> Labels {
    vec![("source", source.to_string()), ("tier", tier.to_string())]
}

/// The passphrase of a repository: from its `password-file`, else its `password-env`, else
/// `LIFEBOAT_PASSWORD`.
pub fn passphrase_of(r: &RepositoryConfig) -> Result<Vec<u8>> {
    let env = r.password_env.as_deref().unwrap_or("LIFEBOAT_PASSWORD");
    crate::repo::passphrase_from(r.password_file.as_deref(), env, &r.location)
}

/// Opens a repository named in the config.
pub async fn open_repo(r: &RepositoryConfig) -> Result<Repo> {
    Repo::open(Storage::open(&r.location, false)?, &passphrase_of(r)?).await
}

/// The node the controller holds as primary, for the source `source` that follows it.
fn current_primary<'a>(
    primary: &PrimaryFn,
    nodes: &'a BTreeMap<String, NodeConfig>,
    source: &str,
) -> Result<&'a NodeConfig> {
    primary().and_then(|n| nodes.get(&n)).ok_or_else(|| {
        Error::Invalid(format!(
            "source {source} follows the primary, and none is known yet (see `lifeboat status`)"
        ))
    })
}

/// How to reach a node of the config, with its password.
pub fn node_conn(n: &NodeConfig) -> Result<ConnInfo> {
    let password =
        lifeboat_config::read_secret(n.password_file.as_deref(), n.password_env.as_deref())
            .map_err(|e| Error::Invalid(format!("node {}: password: {e}", n.name)))?;
    Ok(ConnInfo::of_node(n, password))
}

/// A libpq connection string for a node of the config, with its password.
pub fn node_conninfo(n: &NodeConfig) -> Result<String> {
    Ok(node_conn(n)?.to_libpq(Some("lifeboat-backup")))
}

/// The node's data directory when it is on this host and a backup can read it: under local
/// control, present, and without tablespaces. Base backups then read only what changed;
/// otherwise pg_basebackup reads the whole database.
fn local_data_dir(n: &NodeConfig) -> Option<&std::path::Path> {
    let dir = &n.control.as_ref()?.data_dir;
    let no_tablespaces =
        std::fs::read_dir(dir.join("pg_tblspc")).is_ok_and(|mut d| d.next().is_none());
    (dir.join("PG_VERSION").is_file() && no_tablespaces).then_some(dir.as_path())
}

impl Scheduler {
    /// `None` when the config has no `[backup]` section.
    pub fn new(config: &Config) -> Option<Scheduler> {
        let backup = config.backup.clone()?;
        let nodes = config
            .postgres_nodes()
            .map(|n| (n.name.clone(), n.clone()))
            .collect();
        Some(Scheduler {
            backup,
            nodes,
            primary: None,
            events: None,
            metrics: Arc::new(Metrics::default()),
            newest: Default::default(),
        })
    }

    /// `follow-primary` sources back up and stream from the node `primary` names.
    pub fn following(mut self, primary: PrimaryFn) -> Scheduler {
        self.primary = Some(primary);
        self
    }

    /// Stale tiers and failed restore tests are told to `f`.
    pub fn reporting(mut self, f: EventFn) -> Scheduler {
        self.events = Some(f);
        self
    }

    fn tell(&self, e: BackupEvent) {
        if let Some(f) = &self.events {
            f(e)
        }
    }

    pub fn config(&self) -> &BackupConfig {
        &self.backup
    }

    /// The node a PostgreSQL source is backed up from now.
    async fn node_of(&self, source: &str) -> Result<&NodeConfig> {
        let cfg = &self.backup.sources[source];
        if let Some(n) = &cfg.postgres {
            return Ok(&self.nodes[n]);
        }
        match &self.primary {
            Some(primary) => current_primary(primary, &self.nodes, source),
            None => self.probe_primary(source).await,
        }
    }

    /// Offline, the primary is the one node that takes writes: not in recovery, not fenced.
    async fn probe_primary(&self, source: &str) -> Result<&NodeConfig> {
        let mut seen = Vec::new();
        let mut writable = Vec::new();
        for n in self.nodes.values() {
            match lifeboat_postgres::probe(&node_conn(n)?, Duration::from_secs(5)).await {
                Ok(o) if !o.in_recovery && !o.default_read_only => {
                    seen.push(format!("{}: primary", n.name));
                    writable.push(n);
                }
                Ok(o) if o.in_recovery => seen.push(format!("{}: standby", n.name)),
                Ok(_) => seen.push(format!("{}: fenced (read-only)", n.name)),
                Err(e) => seen.push(format!("{}: {e}", n.name)),
            }
        }
        match writable.as_slice() {
            [one] => Ok(one),
            _ => Err(Error::Invalid(format!(
                "source {source} follows the primary, but {} node(s) take writes ({}); back up a named node instead",
                writable.len(),
                seen.join("; ")
            ))),
        }
    }

    /// Registers `lifeboat_backup_*` metrics.
    pub fn register_metrics(&self, r: &mut Registry) {
        let m = &self.metrics;
        r.register(
            "lifeboat_backup_last_success_timestamp_seconds",
            "Unix time of the newest good snapshot of a source and tier",
            m.last_success.clone(),
        );
        r.register(
            "lifeboat_backup_age_seconds",
            "Age of the newest good snapshot of a source and tier",
            m.age.clone(),
        );
        r.register(
            "lifeboat_backup_rpo_exceeded",
            "1 when the newest good snapshot is older than the tier's RPO target (alert condition)",
            m.rpo_exceeded.clone(),
        );
        r.register(
            "lifeboat_backup_last_duration_seconds",
            "Duration of the last backup",
            m.duration.clone(),
        );
        r.register(
            "lifeboat_backup_last_size_bytes",
            "Bytes of content in the last snapshot",
            m.size.clone(),
        );
        r.register(
            "lifeboat_backup_last_added_bytes",
            "Bytes the last backup added to the repository (compressed, encrypted)",
            m.added.clone(),
        );
        r.register(
            "lifeboat_backup_dedup_ratio",
            "Content bytes of the last snapshot per byte it added",
            m.dedup_ratio.clone(),
        );
        r.register(
            "lifeboat_backup_failures",
            "Failed backup runs",
            m.failures.clone(),
        );
        r.register(
            "lifeboat_backup_wal_last_sync_timestamp_seconds",
            "Unix time the repository last held all WAL the streamer had received",
            m.wal_last_sync.clone(),
        );
        r.register(
            "lifeboat_backup_wal_recovery_point_lag_seconds",
            "Seconds since the repository last held all received WAL",
            m.wal_lag.clone(),
        );
        r.register(
            "lifeboat_backup_wal_segments_stored",
            "WAL segments stored by the streamer since start",
            m.wal_segments.clone(),
        );
        r.register(
            "lifeboat_backup_wal_synchronous",
            "1 when the primary's commits wait for the WAL archive ([backup.wal] synchronous): a growing recovery point lag then means waiting commits",
            m.wal_synchronous.clone(),
        );
        r.register(
            "lifeboat_backup_restore_test_success",
            "1 when the last scheduled restore test passed",
            m.restore_test_ok.clone(),
        );
        r.register(
            "lifeboat_backup_restore_test_duration_seconds",
            "Duration of the last restore test",
            m.restore_test_duration.clone(),
        );
        r.register(
            "lifeboat_backup_restore_test_last_timestamp_seconds",
            "Unix time the last restore test ended (0: none has run since the start)",
            m.restore_test_last.clone(),
        );
    }

    pub async fn run(self, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let this = Arc::new(self);
        for (name, tier) in &this.backup.tiers {
            let (s, name, tier, c) = (this.clone(), name.clone(), tier.clone(), cancel.clone());
            tracker.spawn(async move { s.tier_worker(name, tier, c).await });
        }
        let wal_status = Arc::new(WalStatus::default());
        if let Some(w) = this
            .backup
            .wal
            .clone()
            .filter(|w| w.mode == WalMode::Stream)
        {
            let (s, c, status) = (this.clone(), cancel.clone(), wal_status.clone());
            tracker.spawn(async move {
                match s.wal_streamer(&w, status).await {
                    Ok(streamer) => streamer.run(c).await,
                    Err(e) => warn!(error = %e, "continuous WAL cannot start"),
                }
            });
        }
        if this.backup.restore_test.is_some() {
            let (s, c) = (this.clone(), cancel.clone());
            tracker.spawn(async move { s.restore_test_worker(c).await });
        }
        let (s, c) = (this.clone(), cancel.clone());
        tracker.spawn(async move { s.age_worker(wal_status, c).await });
        tracker.close();
        tracker.wait().await;
    }

    async fn wal_streamer(
        &self,
        w: &lifeboat_config::WalConfig,
        status: Arc<WalStatus>,
    ) -> Result<WalStreamer> {
        let repo = open_repo(&self.backup.repositories[&w.repository]).await?;
        let source = &self.backup.sources[&w.source];
        let server: ConnSource = match (&source.postgres, &self.primary) {
            (Some(node), _) => crate::walstream::fixed(node_conninfo(&self.nodes[node])?),
            (None, Some(primary)) => {
                let (primary, nodes) = (primary.clone(), self.nodes.clone());
                let name = w.source.clone();
                Arc::new(move || node_conninfo(current_primary(&primary, &nodes, &name)?))
            }
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "source {} follows the primary: only `lifeboat run` knows it",
                    w.source
                )))
            }
        };
        info!(source = %w.source, repository = %w.repository, every = ?w.upload_every.get(), synchronous = w.synchronous, "continuous WAL streaming");
        self.metrics.wal_synchronous.set(i64::from(w.synchronous));
        Ok(WalStreamer {
            repo,
            server,
            spool: w.spool_dir.clone(),
            upload_every: w.upload_every.get(),
            status,
            system: Default::default(),
        })
    }

    /// Keeps the age and RPO gauges current, and tells when a tier's source grows older than
    /// the tier's RPO (measured from its newest snapshot, or from the start when it has none
    /// yet) and when it is fresh again.
    async fn age_worker(&self, wal: Arc<WalStatus>, cancel: CancellationToken) {
        let mut stale = std::collections::BTreeSet::new();
        let started = unix_now();
        while !cancel.is_cancelled() {
            let now = unix_now();
            let newest = self.newest.lock().expect("newest").clone();
            for ((source, tier), (t, rpo)) in &newest {
                let l = labels(source, tier);
                self.metrics.last_success.get_or_create(&l).set(*t);
                self.metrics.age.get_or_create(&l).set(now - t);
                self.metrics
                    .rpo_exceeded
                    .get_or_create(&l)
                    .set(i64::from(now - t > rpo.as_secs_f64()));
            }
            let mut events = Vec::new();
            for (tier, cfg) in self
                .backup
                .tiers
                .iter()
                .filter(|(_, t)| t.kind != TierKind::Copy)
            {
                let rpo_s = cfg.rpo().get().as_secs_f64();
                for source in &cfg.sources {
                    let key = (source.clone(), tier.clone());
                    let last = newest.get(&key).map(|(t, _)| *t);
                    let age_s = now - last.unwrap_or(started);
                    if age_s > rpo_s {
                        if stale.insert(key) {
                            events.push(BackupEvent::Stale {
                                source: source.clone(),
                                tier: tier.clone(),
                                age_s,
                                rpo_s,
                                none_yet: last.is_none(),
                            });
                        }
                    } else if stale.remove(&key) {
                        events.push(BackupEvent::Fresh {
                            source: source.clone(),
                            tier: tier.clone(),
                        });
                    }
                }
            }
            for e in events {
                self.tell(e);
            }
            let synced = wal.last_synced_ms.load(Ordering::Relaxed) as f64 / 1000.0;
            if synced > 0.0 {
                self.metrics.wal_last_sync.set(synced);
                self.metrics.wal_lag.set(now - synced);
            }
            self.metrics
                .wal_segments
                .set(wal.segments_stored.load(Ordering::Relaxed) as i64);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn record_newest(&self, source: &str, tier: &str, s: &Snapshot, rpo: Duration) {
        let t = s.time.unix_timestamp_nanos() as f64 / 1e9;
        let mut newest = self.newest.lock().expect("newest");
        let e = newest
            .entry((source.to_string(), tier.to_string()))
            .or_insert((t, rpo));
        e.0 = e.0.max(t);
    }

    /// One tier: wait until due, back up each source (or copy), apply retention, repeat.
    async fn tier_worker(&self, name: String, tier: BackupTierConfig, cancel: CancellationToken) {
        let every = tier.every.get();
        // Due when the newest snapshot of the tier is `every` old, so a restart does not
        // start every tier at once.
        let mut due = tokio::time::Instant::now();
        match open_repo(&self.backup.repositories[&tier.repository]).await {
            Ok(repo) => match repo.snapshots().await {
                Ok(snaps) => {
                    for (_, s) in snaps.iter().filter(|(_, s)| s.tier == name) {
                        self.record_newest(&s.source, &name, s, tier.rpo().get());
                    }
                    if let Some((_, s)) = snaps.iter().rev().find(|(_, s)| s.tier == name) {
                        let age = (time::OffsetDateTime::now_utc() - s.time)
                            .try_into()
                            .unwrap_or(Duration::ZERO);
                        due += every.saturating_sub(age);
                    }
                }
                Err(e) => warn!(tier = %name, error = %e, "listing snapshots"),
            },
            Err(e) => warn!(tier = %name, error = %e, "opening the repository"),
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
            due = tokio::time::Instant::now() + every;
            if let Err(e) = self.run_tier(&name, &tier).await {
                warn!(tier = %name, error = %e, "backup tier failed");
            }
        }
    }

    /// Runs a tier once, as the daemon does on schedule: back up its sources (or copy), then
    /// apply its retention. A source that fails is reported in the result; the others still run.
    pub async fn run_tier(&self, name: &str, tier: &BackupTierConfig) -> Result<TierRun> {
        let repo = open_repo(&self.backup.repositories[&tier.repository]).await?;
        let mut run = TierRun {
            tier: name.to_string(),
            ..Default::default()
        };
        let keep = tier.keep;
        let this_tier = move |_: &str, t: &str| (t == name).then_some(keep);
        if tier.kind == TierKind::Copy {
            let to_name = tier.copy_to.as_deref().unwrap_or_default();
            let target = open_repo(&self.backup.repositories[to_name]).await?;
            let report = crate::copy::copy(&repo, &target, &|s| s.tier != name, Some(name)).await?;
            info!(tier = %name, copied = report.copied.len(), bytes = report.bytes_sent, wal = report.wal_files_sent, "copy done");
            for (_, s) in target
                .snapshots()
                .await?
                .iter()
                .filter(|(_, s)| s.tier == name)
            {
                self.record_newest(&s.source, name, s, tier.rpo().get());
            }
            run.copy = Some(report);
            run.prune = Some(crate::prune::prune(&target, &this_tier, false).await?);
            return Ok(run);
        }
        let started = std::time::Instant::now();
        let kind = match tier.kind {
            TierKind::Full => BackupKind::Full,
            TierKind::Differential => BackupKind::Differential,
            TierKind::Incremental | TierKind::Copy => BackupKind::Incremental,
        };
        let done: Vec<(String, Result<(Id, Snapshot)>)> = if tier.consistent {
            match self.backup_as_group(&repo, name, tier, kind).await {
                Ok((gid, spread, snaps)) => {
                    run.group = Some((gid.hex(), spread));
                    snaps.into_iter().map(|(src, r)| (src, Ok(r))).collect()
                }
                Err(e) => tier
                    .sources
                    .iter()
                    .map(|src| (src.clone(), Err(Error::Invalid(e.to_string()))))
                    .collect(),
            }
        } else {
            let mut done = Vec::new();
            for source in &tier.sources {
                done.push((
                    source.clone(),
                    self.backup_source(&repo, source, name, kind).await,
                ));
            }
            done
        };
        for (source, r) in done {
            let l = labels(&source, name);
            match r {
                Ok((id, s)) => {
                    let m = &self.metrics;
                    m.duration.get_or_create(&l).set(if tier.consistent {
                        started.elapsed().as_secs_f64()
                    } else {
                        s.summary.duration_s
                    });
                    m.size.get_or_create(&l).set(s.summary.bytes as i64);
                    m.added
                        .get_or_create(&l)
                        .set(s.summary.new_stored_bytes as i64);
                    m.dedup_ratio
                        .get_or_create(&l)
                        .set(s.summary.bytes as f64 / s.summary.new_stored_bytes.max(1) as f64);
                    self.record_newest(&source, name, &s, tier.rpo().get());
                    info!(tier = %name, source = %source, bytes = s.summary.bytes, added = s.summary.new_stored_bytes, "backup done");
                    run.snapshots.push(TierSnapshot {
                        source,
                        id: id.hex(),
                        summary: s.summary,
                    });
                }
                Err(e) => {
                    self.metrics.failures.get_or_create(&l).inc();
                    warn!(tier = %name, source = %source, error = %e, "backup failed");
                    run.failures.push((source, e.to_string()));
                }
            }
        }
        run.prune = Some(crate::prune::prune(&repo, &this_tier, false).await?);
        Ok(run)
    }

    async fn backup_source(
        &self,
        repo: &Repo,
        source: &str,
        tier: &str,
        kind: BackupKind,
    ) -> Result<(Id, Snapshot)> {
        let cfg = &self.backup.sources[source];
        let opts = BackupOptions {
            source: source.into(),
            tier: tier.into(),
            tags: vec![],
            group: None,
            kind,
        };
        if cfg.is_postgres() {
            let node = self.node_of(source).await?;
            let conninfo = node_conninfo(node)?;
            let data_dir = local_data_dir(node);
            base_backup(repo, &conninfo, data_dir, opts, &Progress::hidden()).await
        } else {
            backup_paths(repo, &cfg.paths, opts, &Progress::hidden()).await
        }
    }

    /// A consistent tier: its sources as one group labelled with the tier's name.
    async fn backup_as_group(
        &self,
        repo: &Repo,
        name: &str,
        tier: &BackupTierConfig,
        kind: BackupKind,
    ) -> Result<(Id, f64, Vec<(String, (Id, Snapshot))>)> {
        let mut members = Vec::new();
        for source in &tier.sources {
            let cfg = &self.backup.sources[source];
            members.push(if cfg.is_postgres() {
                Member::Postgres {
                    name: source.clone(),
                    conninfo: node_conninfo(self.node_of(source).await?)?,
                }
            } else {
                Member::Directory {
                    name: source.clone(),
                    paths: cfg.paths.clone(),
                }
            });
        }
        let opts = GroupOptions {
            label: name.to_string(),
            tier: name.to_string(),
            kind,
            wal_wait: GROUP_WAL_WAIT,
        };
        let (gid, record, snapshots) = backup_group(repo, &members, &opts).await?;
        let members = record
            .members
            .iter()
            .map(|m| m.source.clone())
            .zip(snapshots)
            .collect();
        Ok((gid, record.spread_ms, members))
    }

    /// Retention of every tier whose snapshots live in the repository `name`: a backup tier's
    /// own repository, a copy tier's target.
    pub fn retention_in(&self, name: &str) -> HashMap<String, Retention> {
        self.backup
            .tiers
            .iter()
            .filter(|(_, t)| match t.kind {
                TierKind::Copy => t.copy_to.as_deref() == Some(name),
                _ => t.repository == name,
            })
            .map(|(tier, t)| (tier.clone(), t.keep))
            .collect()
    }

    async fn restore_test_worker(&self, cancel: CancellationToken) {
        let Some(t) = self.backup.restore_test.clone() else {
            return;
        };
        let mut failed = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(t.every.get()) => {}
            }
            let m = &self.metrics;
            let result = self.restore_test().await;
            // Set when the result is: a timestamp above 0 says the success gauge holds a
            // result (before the first test it is 0, which is not a failure).
            m.restore_test_last.set(unix_now());
            let failure = match &result {
                Ok(r) => {
                    m.restore_test_duration.set(r.total_s);
                    m.restore_test_ok.set(i64::from(r.ok));
                    match &r.error {
                        None => {
                            info!(source = %t.source, seconds = r.total_s, rows = r.rows, base = %r.base_snapshot, "restore test passed");
                            None
                        }
                        Some(e) => {
                            warn!(source = %t.source, error = %e, "restore test failed");
                            Some(e.to_string())
                        }
                    }
                }
                Err(e) => {
                    m.restore_test_ok.set(0);
                    warn!(source = %t.source, error = %e, "restore test could not run");
                    Some(format!("could not run: {e}"))
                }
            };
            // Told when it starts failing, and when it passes again; not at every run.
            let was_failing = std::mem::replace(&mut failed, failure.is_some());
            match (failure, &result) {
                (Some(error), _) if !was_failing => self.tell(BackupEvent::RestoreTestFailed {
                    source: t.source.clone(),
                    error,
                }),
                (None, Ok(r)) if was_failing => self.tell(BackupEvent::RestoreTestPassed {
                    source: t.source.clone(),
                    seconds: r.total_s,
                }),
                _ => {}
            }
        }
    }

    /// Runs the configured restore test once and records it in the repository.
    pub async fn restore_test(&self) -> Result<TestRecord> {
        let t = self.backup.restore_test.as_ref().ok_or_else(|| {
            Error::Invalid("the config has no [backup.restore-test] section".into())
        })?;
        let repo = open_repo(&self.backup.repositories[&t.repository]).await?;
        // Credentials of the source's node (any node for a source that follows the primary:
        // they are copies of one cluster).
        let cfg = &self.backup.sources[&t.source];
        let node = cfg
            .postgres
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .or_else(|| self.nodes.values().next())
            .ok_or_else(|| Error::Invalid("no PostgreSQL node in the config".into()))?;
        let spec = TestSpec {
            source: &t.source,
            query: &t.query,
            scratch_dir: &t.scratch_dir,
            os_user: &t.os_user,
            login: node_conn(node)?,
        };
        crate::restore_test::run(&repo, &spec).await
    }
}
