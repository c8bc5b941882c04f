//! Backup schedules run by the daemon (`lifeboat run`): one named worker per tier (back up its
//! sources, then apply its retention), continuous WAL, the scheduled restore test, and the
//! metrics that say how old each tier's newest backup is.

use crate::archiver::{backup_paths, BackupOptions};
use crate::error::{Error, Result};
use crate::postgres::{base_backup, restore_pitr, Target};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::storage::Storage;
use crate::walstream::{WalStatus, WalStreamer};
use lifeboat_config::{
    BackupConfig, BackupTierConfig, Config, NodeConfig, RepositoryConfig, TierKind, WalMode,
};
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
    restore_test_ok: Gauge,
    restore_test_duration: FGauge,
    restore_test_last: FGauge,
}

/// Runs the configured backup tiers on their schedules until cancelled.
pub struct Scheduler {
    backup: BackupConfig,
    nodes: BTreeMap<String, NodeConfig>,
    metrics: Arc<Metrics>,
    newest: Arc<Mutex<Newest>>,
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

/// Opens a repository named in the config.
pub async fn open_repo(r: &RepositoryConfig) -> Result<Repo> {
    let env = r.password_env.as_deref().unwrap_or("LIFEBOAT_PASSWORD");
    let pass = crate::repo::passphrase_from(r.password_file.as_deref(), env, &r.location)?;
    Repo::open(Storage::open(&r.location, false)?, &pass).await
}

/// A libpq connection string for a node of the config, with its password.
pub fn node_conninfo(n: &NodeConfig) -> Result<String> {
    let password =
        lifeboat_config::read_secret(n.password_file.as_deref(), n.password_env.as_deref())
            .map_err(|e| Error::Invalid(format!("node {}: password: {e}", n.name)))?;
    let c = lifeboat_postgres::ConnInfo {
        host: n.host.clone(),
        port: n.port,
        user: n.user.clone(),
        password,
        dbname: n.dbname.clone(),
    };
    Ok(c.to_libpq(Some("lifeboat-backup")))
}

impl Scheduler {
    /// `None` when the config has no `[backup]` section.
    pub fn new(config: &Config) -> Option<Scheduler> {
        let backup = config.backup.clone()?;
        let nodes = config
            .regions
            .values()
            .flat_map(|r| r.nodes.iter().map(|n| (n.name.clone(), n.clone())))
            .collect();
        Some(Scheduler {
            backup,
            nodes,
            metrics: Arc::new(Metrics::default()),
            newest: Default::default(),
        })
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
            "Unix time of the last restore test",
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
        let node = self.backup.sources[&w.source]
            .postgres
            .clone()
            .unwrap_or_default();
        let conninfo = node_conninfo(&self.nodes[&node])?;
        info!(source = %w.source, repository = %w.repository, every = ?w.upload_every.get(), "continuous WAL streaming");
        Ok(WalStreamer {
            repo,
            conninfo,
            spool: w.spool_dir.clone(),
            upload_every: w.upload_every.get(),
            status,
            system: Default::default(),
        })
    }

    /// Keeps the age and RPO gauges current.
    async fn age_worker(&self, wal: Arc<WalStatus>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let now = unix_now();
            for ((source, tier), (t, rpo)) in self.newest.lock().expect("newest").iter() {
                let l = labels(source, tier);
                self.metrics.last_success.get_or_create(&l).set(*t);
                self.metrics.age.get_or_create(&l).set(now - t);
                self.metrics
                    .rpo_exceeded
                    .get_or_create(&l)
                    .set(i64::from(now - t > rpo.as_secs_f64()));
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

    /// Runs a tier once, as the daemon does on schedule.
    pub async fn run_tier(&self, name: &str, tier: &BackupTierConfig) -> Result<()> {
        let repo = open_repo(&self.backup.repositories[&tier.repository]).await?;
        let mut failed = None;
        if tier.kind == TierKind::Copy {
            let to_name = tier.copy_to.as_deref().unwrap_or_default();
            let target = open_repo(&self.backup.repositories[to_name]).await?;
            let report = crate::copy::copy(&repo, &target, &|s| s.tier != name, Some(name)).await?;
            info!(tier = %name, copied = report.copied.len(), bytes = report.bytes_sent, "copy done");
            for (_, s) in target
                .snapshots()
                .await?
                .iter()
                .filter(|(_, s)| s.tier == name)
            {
                self.record_newest(&s.source, name, s, tier.rpo().get());
            }
            let keep = tier.keep;
            crate::prune::prune(&target, &|_, t| (t == name).then_some(keep), false).await?;
            return Ok(());
        }
        for source in &tier.sources {
            let l = labels(source, name);
            let started = std::time::Instant::now();
            match self
                .backup_source(&repo, source, name, tier.kind == TierKind::Full)
                .await
            {
                Ok(s) => {
                    let m = &self.metrics;
                    m.duration
                        .get_or_create(&l)
                        .set(started.elapsed().as_secs_f64());
                    m.size.get_or_create(&l).set(s.summary.bytes as i64);
                    m.added
                        .get_or_create(&l)
                        .set(s.summary.new_stored_bytes as i64);
                    m.dedup_ratio
                        .get_or_create(&l)
                        .set(s.summary.bytes as f64 / s.summary.new_stored_bytes.max(1) as f64);
                    self.record_newest(source, name, &s, tier.rpo().get());
                    info!(tier = %name, source = %source, bytes = s.summary.bytes, added = s.summary.new_stored_bytes, "backup done");
                }
                Err(e) => {
                    self.metrics.failures.get_or_create(&l).inc();
                    warn!(tier = %name, source = %source, error = %e, "backup failed");
                    failed = Some(e);
                }
            }
        }
        let keep = tier.keep;
        crate::prune::prune(&repo, &|_, t| (t == name).then_some(keep), false).await?;
        failed.map_or(Ok(()), Err)
    }

    async fn backup_source(
        &self,
        repo: &Repo,
        source: &str,
        tier: &str,
        full: bool,
    ) -> Result<Snapshot> {
        let cfg = &self.backup.sources[source];
        let opts = BackupOptions {
            source: source.into(),
            tier: tier.into(),
            tags: vec![],
            group: None,
            full,
        };
        let (_, s) = match &cfg.postgres {
            Some(node) => {
                base_backup(
                    repo,
                    &node_conninfo(&self.nodes[node])?,
                    opts,
                    &Progress::hidden(),
                )
                .await?
            }
            None => backup_paths(repo, &cfg.paths, opts, &Progress::hidden()).await?,
        };
        Ok(s)
    }

    async fn restore_test_worker(&self, cancel: CancellationToken) {
        let Some(t) = self.backup.restore_test.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(t.every.get()) => {}
            }
            let started = std::time::Instant::now();
            let result = self.restore_test(&t).await;
            let m = &self.metrics;
            m.restore_test_duration.set(started.elapsed().as_secs_f64());
            m.restore_test_last.set(unix_now());
            m.restore_test_ok.set(i64::from(result.is_ok()));
            match &result {
                Ok(rows) => {
                    info!(source = %t.source, seconds = started.elapsed().as_secs_f64(), rows, "restore test passed")
                }
                Err(e) => warn!(source = %t.source, error = %e, "restore test failed"),
            }
        }
    }

    /// Restores the newest backup of the source with all its WAL into a scratch directory,
    /// starts PostgreSQL on it, runs the query, stops it and removes the directory. Returns the
    /// number of rows the query gave.
    async fn restore_test(&self, t: &lifeboat_config::RestoreTestConfig) -> Result<usize> {
        let repo = open_repo(&self.backup.repositories[&t.repository]).await?;
        let dir = t
            .scratch_dir
            .join(format!("restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&t.scratch_dir).map_err(Error::io(&t.scratch_dir))?;
        let r = async {
            restore_pitr(
                &repo,
                Target::Latest,
                Some(&t.source),
                &dir,
                &Progress::hidden(),
            )
            .await?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(Error::io(&dir))?
                .port();
            let root = nix::unistd::geteuid().is_root();
            let server = lifeboat_postgres::LocalServer {
                bin_dir: lifeboat_postgres::LocalServer::find_bin_dir()
                    .map_err(|e| Error::Invalid(e.to_string()))?,
                data_dir: dir.clone(),
                os_user: root.then(|| t.os_user.clone()),
                port,
            };
            let fail = |what: &str, e: String| Error::Command {
                what: format!("restore test: {what}"),
                detail: e,
            };
            server
                .start(Duration::from_secs(300))
                .await
                .map_err(|e| fail("starting PostgreSQL", e.to_string()))?;
            let node = self.backup.sources[&t.source]
                .postgres
                .clone()
                .unwrap_or_default();
            let mut c = self.nodes[&node].clone();
            c.host = "127.0.0.1".into();
            c.port = port;
            let rows = async {
                let (client, conn) =
                    tokio_postgres::connect(&node_conninfo(&c)?, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| fail("connecting", e.to_string()))?;
                tokio::spawn(conn);
                let rows = client
                    .simple_query(&t.query)
                    .await
                    .map_err(|e| fail("query", e.to_string()))?;
                let n = rows
                    .iter()
                    .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                    .count();
                if n == 0 {
                    return Err(fail("query", "returned no row".into()));
                }
                Ok(n)
            }
            .await;
            let _ = server
                .stop(lifeboat_postgres::StopMode::Fast, Duration::from_secs(60))
                .await;
            rows
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        r
    }
}
