//! The status snapshot the controller publishes after every event: what `lifeboat status`
//! and `GET /v1/status` show.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub at_ms: u64,
    pub service: String,
    /// The datastore: `postgres` or `redis`.
    pub kind: String,
    pub tier: String,
    pub replication: String,
    pub mode: String,
    pub primary: Option<String>,
    pub epoch: u64,
    pub paused: bool,
    pub endpoint: EndpointStatus,
    pub nodes: Vec<NodeStatus>,
    /// The current decision: a plan being run, or why Lifeboat is not acting.
    pub decision: Vec<String>,
    pub in_flight: Option<String>,
    /// Lost primaries whose fence is still being retried in the background: cut off at the
    /// endpoint, not yet reached themselves.
    #[serde(default)]
    pub fencing_in_background: Vec<String>,
    /// The most a failover right now could lose: the largest lag of an eligible standby.
    pub rpo_exposure_bytes: Option<u64>,
    pub rpo_exposure_seconds: Option<f64>,
    pub rpo_target_seconds: Option<f64>,
    pub rto_target_seconds: Option<f64>,
    pub last_incident: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub listen: String,
    pub routes_to: Option<String>,
    pub epoch: Option<u64>,
    pub active_connections: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub region: String,
    pub region_role: String,
    /// primary, standby, fenced, needs-rejoin or unknown.
    pub role: String,
    pub health: String,
    pub health_detail: String,
    /// Replication position as the engine writes it (a WAL LSN, a Redis offset).
    pub position: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub streaming: Option<bool>,
    pub sync_state: Option<String>,
    pub last_ok_ms: Option<u64>,
}
