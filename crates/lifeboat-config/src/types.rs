//! The shape of `lifeboat.toml`. Every struct rejects unknown keys.

use crate::backup::BackupConfig;
use crate::drill::{DrillConfig, MaintenanceConfig};
use crate::notify::{IncidentsConfig, NotifyConfig};
use crate::units::{Dur, Size};
use lifeboat_core::model::{FailoverMode, RegionRole, ReplicationMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
    /// Every protected service by name; one controller protects them all, each on its own.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// Drills by name: faults applied on purpose, recovery measured, everything undone.
    #[serde(default)]
    pub drills: BTreeMap<String, DrillConfig>,
    /// Maintenance windows by name: when they are open, drills of their services do not start.
    #[serde(default)]
    pub maintenance: BTreeMap<String, MaintenanceConfig>,
    /// Notifiers by name: who hears about incidents, risks, stale backups and failed drills.
    #[serde(default)]
    pub notify: BTreeMap<String, NotifyConfig>,
    #[serde(default)]
    pub incidents: IncidentsConfig,
}

/// The datastore a service runs on; it picks the provider that probes, fences and promotes
/// its nodes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    Postgres,
    Redis,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
        }
    }
}

/// One protected service: its datastore, its nodes per region, its failover policy, the
/// tier whose RTO/RPO targets apply to it and its own client endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub tier: String,
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub failover: FailoverConfig,
    pub regions: BTreeMap<String, RegionConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerConfig {
    /// Address of the HTTP API (`/v1`, `/metrics`, `/healthz`).
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// Directory of the embedded store; relative paths are relative to the config file.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// File holding the bearer token that changing API calls require.
    pub api_token_file: Option<PathBuf>,
    /// Environment variable holding that token (instead of a file).
    pub api_token_env: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            api_listen: default_api_listen(),
            state_dir: default_state_dir(),
            api_token_file: None,
            api_token_env: None,
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("lifeboat-state")
}

/// The single write endpoint: a TCP proxy that forwards to the one current primary.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointConfig {
    pub listen: SocketAddr,
    /// How long a new client connection may wait for a primary while there is none
    /// (during a failover) before it is closed.
    #[serde(default = "default_hold")]
    pub hold_timeout: Dur,
    /// Timeout for the proxy's own connection to the primary.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// A connection to the primary on which sent data stays unacknowledged, or keepalive
    /// probes go unanswered, this long is closed (TCP_USER_TIMEOUT and keepalive): a silent
    /// primary never holds a client forever.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout: Dur,
}

fn default_upstream_timeout() -> Dur {
    Dur::from_secs(10)
}

fn default_hold() -> Dur {
    Dur::from_secs(5)
}
fn default_connect_timeout() -> Dur {
    Dur::from_secs(2)
}

/// Health probing of every database node, with hysteresis.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ProbeConfig {
    pub interval: Dur,
    pub timeout: Dur,
    /// Consecutive failed probes before a node is declared down.
    pub failure_threshold: u32,
    /// Consecutive good probes before a down node is declared up again.
    pub success_threshold: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Dur::from_millis(100),
            timeout: Dur::from_secs(1),
            failure_threshold: 3,
            success_threshold: 2,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FailoverConfig {
    pub mode: FailoverMode,
    /// The most WAL a standby may be missing and still be promoted automatically.
    pub max_lag: Size,
    /// Minimum time between two automatic failovers.
    pub cooldown: Dur,
    pub replication: ReplicationMode,
    pub promote_timeout: Dur,
    pub fence_timeout: Dur,
    /// How long the fence of a lost primary that cannot be reached keeps being retried in
    /// the background after the promotion went ahead without it.
    pub fence_retry_for: Dur,
    /// How long a switchover waits for the target to replay the last WAL of the old primary.
    pub catch_up_timeout: Dur,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            mode: FailoverMode::Automatic,
            max_lag: Size(16 << 20),
            cooldown: Dur::from_secs(300),
            replication: ReplicationMode::Async,
            promote_timeout: Dur::from_secs(10),
            fence_timeout: Dur::from_secs(5),
            fence_retry_for: Dur::from_secs(600),
            catch_up_timeout: Dur::from_secs(30),
        }
    }
}

/// Recovery targets of a tier.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TierConfig {
    pub rto: Dur,
    pub rpo: Dur,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionConfig {
    pub role: RegionRole,
    /// Higher wins when several standbys are eligible.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Extra TCP/HTTP checks of the region's application; a standby region whose checks fail
    /// is not promoted automatically.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

/// One server of a service's datastore.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// PostgreSQL role (default `postgres`) or Redis ACL user (default: the `default` user).
    pub user: Option<String>,
    /// PostgreSQL only (default `postgres`).
    pub dbname: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// PostgreSQL only: present when Lifeboat may stop, start and rewind this server itself.
    pub control: Option<ControlConfig>,
    /// A STONITH hook run (argv, no shell) to fence this node when it is lost.
    pub fence_command: Option<Vec<String>>,
}

impl NodeConfig {
    /// The PostgreSQL role to connect as.
    pub fn pg_user(&self) -> &str {
        self.user.as_deref().unwrap_or("postgres")
    }
    /// The PostgreSQL database to connect to.
    pub fn pg_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or("postgres")
    }
}

/// Local control of a server: its data directory and the OS user that owns it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlConfig {
    pub data_dir: PathBuf,
    /// Directory of `pg_ctl`, `pg_rewind`, … (default: found automatically).
    pub bin_dir: Option<PathBuf>,
    /// Run the server's binaries as this user when Lifeboat runs as root.
    pub os_user: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    Tcp,
    Http,
}

/// A TCP or HTTP health check of an application in a region.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckConfig {
    pub name: String,
    pub kind: CheckKind,
    /// `host:port` for tcp checks.
    pub address: Option<String>,
    /// `http://…` for http checks.
    pub url: Option<String>,
    /// Expected HTTP status (default: any 2xx).
    pub expect_status: Option<u16>,
}

impl Config {
    /// Every node of every service with the name of its region and the region's config, in
    /// service then region-name order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &RegionConfig, &NodeConfig)> {
        self.services.values().flat_map(ServiceConfig::nodes)
    }

    /// The nodes of PostgreSQL services (the ones backups can read).
    pub fn postgres_nodes(&self) -> impl Iterator<Item = &NodeConfig> {
        self.services
            .values()
            .filter(|s| s.kind == ServiceKind::Postgres)
            .flat_map(|s| s.nodes().map(|(_, _, n)| n))
    }

    pub fn node(&self, name: &str) -> Option<(&str, &RegionConfig, &NodeConfig)> {
        self.nodes().find(|(_, _, n)| n.name == name)
    }

    /// The targets of `service`'s tier.
    pub fn tier(&self, service: &ServiceConfig) -> Option<&TierConfig> {
        self.tiers.get(&service.tier)
    }

    /// `[backup.wal]` and its source, when the source follows the primary (of the one
    /// PostgreSQL service) or names a node of `service`: that service's WAL archive.
    pub fn wal_of(
        &self,
        service: &ServiceConfig,
    ) -> Option<(&crate::backup::WalConfig, &crate::backup::SourceConfig)> {
        let b = self.backup.as_ref()?;
        let w = b.wal.as_ref()?;
        let src = b.sources.get(&w.source)?;
        let ours = src.follow_primary
            || src
                .postgres
                .as_deref()
                .is_some_and(|n| service.nodes().any(|(_, _, x)| x.name == n));
        ours.then_some((w, src))
    }

    /// Whether `service`'s primary must wait for its WAL archive on every commit.
    pub fn synchronous_archive_of(&self, service: &str) -> bool {
        self.services
            .get(service)
            .and_then(|s| self.wal_of(s))
            .is_some_and(|(w, _)| w.synchronous)
    }
}

impl ServiceConfig {
    /// Every node with the name and config of its region, in region-name order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &RegionConfig, &NodeConfig)> {
        self.regions
            .iter()
            .flat_map(|(r, rc)| rc.nodes.iter().map(move |n| (r.as_str(), rc, n)))
    }
}
