//! What the decision engine sees: the cluster as last observed, plus the controller's own
//! durable state (current primary, epoch, pause, fences).

use crate::health::Health;
use crate::model::{FailoverMode, RegionRole, ReplicationMode};
use crate::plan::Plan;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// Facts from the last successful PostgreSQL probe of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgFacts {
    pub in_recovery: bool,
    /// Primary: current WAL insert position. Standby: the furthest WAL received or replayed.
    pub lsn: u64,
    /// Standby only: WAL replayed.
    pub replay_lsn: Option<u64>,
    /// Standby only: the WAL receiver is streaming.
    pub streaming: bool,
    /// Primary only: standbys whose `sync_state` is `sync` or `quorum`.
    pub sync_standbys: Vec<String>,
    /// Primary only: standbys connected (any state), by application name.
    pub connected_standbys: Vec<String>,
    pub synchronous_standby_names: String,
    pub timeline: u32,
    /// `default_transaction_read_only` is on (a read-only fence).
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub region: String,
    pub region_role: RegionRole,
    pub priority: i32,
    pub health: Health,
    /// Last successful observation; kept (stale) while the node is down.
    pub facts: Option<PgFacts>,
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
                .is_some_and(|f| !f.in_recovery && !f.read_only)
    }
    pub fn standby_up(&self) -> bool {
        self.health.is_up() && self.facts.as_ref().is_some_and(|f| f.in_recovery)
    }
}

/// Policy knobs from the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: FailoverMode,
    pub replication: ReplicationMode,
    pub max_lag_bytes: u64,
    pub cooldown_ms: u64,
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
