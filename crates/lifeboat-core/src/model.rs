//! Domain vocabulary shared by the config, the decision engine and the executor.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The role a region plays in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionRole {
    /// Where the writable primary normally runs.
    Primary,
    /// Hot standby: eligible for automatic promotion.
    Standby,
    /// Cold / DR copy: promoted only on an operator's command.
    Cold,
}

/// Whether Lifeboat fails over by itself or waits for an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverMode {
    Automatic,
    Manual,
}

/// How commits on the primary wait for the standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Commits never wait; a failover may lose the last acknowledged writes.
    Async,
    /// Commits wait for a synchronous standby while one is healthy; when it is lost Lifeboat
    /// drops the requirement so writes continue, and that standby is no longer promoted
    /// automatically until it is synchronous again.
    Sync,
    /// Commits always wait for a synchronous standby, even when none is left.
    SyncStrict,
}

impl ReplicationMode {
    pub fn is_sync(self) -> bool {
        !matches!(self, ReplicationMode::Async)
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
            ReplicationMode::SyncStrict => "sync-strict",
        })
    }
}

impl fmt::Display for RegionRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionRole::Primary => "primary",
            RegionRole::Standby => "standby",
            RegionRole::Cold => "cold",
        })
    }
}
