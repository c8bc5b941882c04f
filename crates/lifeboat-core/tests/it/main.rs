//! The decision engine's specification: compact topologies and observations in, the rendered
//! decision out; plus property tests for the invariants.

mod drill_spec;
mod health_spec;
mod props;
mod risk_spec;
mod spec;
mod transition_spec;

use lifeboat_core::model::{FailoverMode, RegionRole, ReplicationMode};
use lifeboat_core::{ClusterView, Facts, Health, Millis, NodeView, Policy, Role, SyncSetting};

pub const T0: Millis = Millis(1_700_000_000_000);

pub fn policy() -> Policy {
    Policy {
        mode: FailoverMode::Automatic,
        replication: ReplicationMode::Async,
        max_lag_bytes: 16 << 20,
        cooldown_ms: 300_000,
        sync_archive: false,
    }
}

pub fn primary_facts(lsn: u64, sync: &[&str]) -> Facts {
    Facts {
        role: Role::Primary,
        position: lsn,
        connected_replicas: vec!["pg-b".into()],
        sync_replicas: sync.iter().map(|s| s.to_string()).collect(),
        sync: SyncSetting::Names(if sync.is_empty() {
            Vec::new()
        } else {
            vec!["pg-b".into()]
        }),
        ..Facts::default()
    }
}

pub fn standby_facts(lsn: u64) -> Facts {
    Facts {
        role: Role::Replica,
        position: lsn,
        applied: Some(lsn),
        streaming: true,
        ..Facts::default()
    }
}

pub fn node(name: &str, region: &str, role: RegionRole, priority: i32, facts: Facts) -> NodeView {
    NodeView {
        name: name.into(),
        region: region.into(),
        region_role: role,
        priority,
        health: Health::Up { since: T0 },
        facts: Some(facts),
        fenced: false,
        needs_rejoin: false,
        checks_ok: true,
        controllable: true,
        stonith: false,
    }
}

/// us-east/pg-a primary, eu-west/pg-b hot standby, ap-south/pg-c cold; all healthy, no lag.
pub fn cluster() -> ClusterView {
    ClusterView {
        nodes: vec![
            node(
                "pg-a",
                "us-east",
                RegionRole::Primary,
                100,
                primary_facts(1 << 30, &[]),
            ),
            node(
                "pg-b",
                "eu-west",
                RegionRole::Standby,
                50,
                standby_facts(1 << 30),
            ),
            node(
                "pg-c",
                "ap-south",
                RegionRole::Cold,
                10,
                standby_facts(1 << 30),
            ),
        ],
        primary: Some("pg-a".into()),
        epoch: 3,
        paused: false,
        last_failover: None,
        in_flight: None,
        endpoint: Some("pg-a".into()),
    }
}

pub fn down(since: Millis) -> Health {
    Health::Down {
        since,
        reason: "connection refused".into(),
    }
}

pub fn set(v: &mut ClusterView, name: &str, f: impl FnOnce(&mut NodeView)) {
    f(v.nodes
        .iter_mut()
        .find(|n| n.name == name)
        .expect("node in test cluster"))
}
