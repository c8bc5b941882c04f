//! What the decision engine sees: the cluster as last observed, plus the controller's own
//! durable state (current primary, epoch, pause, fences).

use crate::health::Health;
use crate::model::{FailoverMode, RegionRole, ReplicationMode};
use crate::plan::Plan;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// What a node is in its replication set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Takes writes unless fenced (`read_only`).
    #[default]
    Primary,
    /// Follows a primary: a PostgreSQL standby, a Redis replica.
    Replica,
}

/// Facts from the last successful probe of a node, in terms every datastore shares. What
/// they mean for one engine (WAL positions, replication offsets, `synchronous_standby_names`,
/// `min-replicas-to-write`) is the provider's business; the decision engine only compares them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub role: Role,
    /// Bytes into the replication stream. Primary: written. Replica: the furthest received
    /// or applied. Positions of one service compare across its nodes.
    pub position: u64,
    /// Replica only: applied (PostgreSQL: replayed).
    pub applied: Option<u64>,
    /// Replica only: linked to its primary and receiving.
    pub streaming: bool,
    /// Primary only: replicas that every acknowledged write has reached (PostgreSQL: `sync`
    /// or `quorum` standbys; Redis in sync mode: every linked replica, as `WAIT` may have
    /// been answered by any of them).
    pub sync_replicas: Vec<String>,
    /// Primary only: replicas linked and receiving.
    pub connected_replicas: Vec<String>,
    /// Primary only: how writes are set to wait for replicas, as read back from the server.
    pub sync: SyncSetting,
    /// Primary only: how far each linked replica is behind, in milliseconds, where known.
    pub replica_lag_ms: std::collections::BTreeMap<String, u64>,
    /// The node refuses writes although it is a primary (a read-only fence, a pause).
    pub read_only: bool,
}

/// How a primary is set to wait for its replicas, as the server holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncSetting {
    /// Writes wait for the first connected replica of these, in order (PostgreSQL's
    /// `synchronous_standby_names = 'FIRST 1 (…)'`); when the first is the policy's
    /// synchronous archive, for it and the first connected replica after it
    /// (`FIRST 2 (…)`). Empty: writes wait for none. A setting
    /// Lifeboat did not write reads as one name that is the whole setting, so it never
    /// matches what Lifeboat wants and is replaced.
    Names(Vec<String>),
    /// Writes are refused unless this many replicas are linked (Redis'
    /// `min-replicas-to-write`); the engine cannot name them.
    AtLeast(u32),
}

impl Default for SyncSetting {
    fn default() -> Self {
        SyncSetting::Names(Vec::new())
    }
}

impl SyncSetting {
    /// The setting already makes writes wait for `desired` (in order, where the engine
    /// names replicas; for at least one of them, where it only counts).
    pub fn satisfies(&self, desired: &[String]) -> bool {
        match self {
            SyncSetting::Names(names) => names == desired,
            SyncSetting::AtLeast(n) => (*n >= 1) != desired.is_empty(),
        }
    }
}

impl Facts {
    pub fn is_replica(&self) -> bool {
        self.role == Role::Replica
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub region: String,
    pub region_role: RegionRole,
    pub priority: i32,
    pub health: Health,
    /// Last successful observation; kept (stale) while the node is down.
    pub facts: Option<Facts>,
    /// Cut off from clients by Lifeboat; may never take writes through the endpoint again
    /// until it has rejoined as a standby.
    pub fenced: bool,
    pub needs_rejoin: bool,
    /// The region's application checks pass (true when it has none).
    pub checks_ok: bool,
    /// Lifeboat controls this server locally (stop, start, rewind).
    pub controllable: bool,
    /// A STONITH command is configured.
    pub stonith: bool,
}

impl NodeView {
    pub fn writable(&self) -> bool {
        self.health.is_up()
            && self
                .facts
                .as_ref()
                .is_some_and(|f| !f.is_replica() && !f.read_only)
    }
    pub fn standby_up(&self) -> bool {
        self.health.is_up() && self.facts.as_ref().is_some_and(Facts::is_replica)
    }
}

/// The name Lifeboat's WAL streamer gives its replication connection, and so the name a
/// primary's synchronous setting lists for a synchronous WAL archive.
pub const SYNC_ARCHIVE: &str = "lifeboat_wal";

/// Policy knobs from the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: FailoverMode,
    pub replication: ReplicationMode,
    pub max_lag_bytes: u64,
    pub cooldown_ms: u64,
    /// A synchronous WAL archive ([`SYNC_ARCHIVE`]) is configured: every commit on the
    /// primary also waits for it, whatever `replication` says. It is not a node and never a
    /// failover candidate.
    pub sync_archive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    /// The node Lifeboat routes writes to (durable).
    pub primary: Option<String>,
    /// Fencing token: bumped by every plan that changes the primary.
    pub epoch: u64,
    pub paused: bool,
    pub last_failover: Option<Millis>,
    /// A plan that was being executed when the controller stopped.
    pub in_flight: Option<Plan>,
    /// The node the endpoint routes to right now (`None`: blocked).
    pub endpoint: Option<String>,
}

impl ClusterView {
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

/// The controller's durable state: what must survive a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub primary: Option<String>,
    pub epoch: u64,
    pub paused: bool,
    pub last_failover: Option<Millis>,
    pub fenced: std::collections::BTreeSet<String>,
    pub needs_rejoin: std::collections::BTreeSet<String>,
    /// The plan being executed, written before its first step and cleared after its last.
    pub in_flight: Option<Plan>,
    /// The incident the in-flight plan belongs to.
    pub in_flight_incident: Option<i64>,
}
