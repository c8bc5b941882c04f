//! Plans: the ordered side effects the executor carries out, and the text they render to.

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanKind {
    /// Automatic promotion after the primary was lost.
    Failover,
    /// `lifeboat failover --to`: promotion on an operator's command.
    ManualFailover,
    /// `lifeboat switchover --to`: planned, waits for catch-up, zero loss.
    Switchover,
    /// First start: adopt the one writable node as primary.
    Adopt,
    /// A node that is not the primary accepts writes: fence it.
    FenceReturned,
    /// Turn synchronous replication on (or change its standby list).
    SyncOn,
    /// `sync` mode lost its standby: drop the requirement so writes continue.
    SyncOff,
    /// `lifeboat rejoin`: make a former primary a standby of the current one.
    Rejoin,
}

impl PlanKind {
    /// Plans that move the primary open an incident and are measured.
    pub fn opens_incident(self) -> bool {
        matches!(
            self,
            PlanKind::Failover
                | PlanKind::ManualFailover
                | PlanKind::Switchover
                | PlanKind::FenceReturned
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::Failover => "failover",
            PlanKind::ManualFailover => "manual-failover",
            PlanKind::Switchover => "switchover",
            PlanKind::Adopt => "adopt",
            PlanKind::FenceReturned => "fence-returned",
            PlanKind::SyncOn => "sync-on",
            PlanKind::SyncOff => "sync-off",
            PlanKind::Rejoin => "rejoin",
        }
    }
}

/// How a fence leaves the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceMode {
    /// A lost or returning primary: stopped where Lifeboat controls the server, otherwise
    /// made to refuse writes.
    #[default]
    Stop,
    /// A switchover's old primary: refuses writes but keeps running, so the target can take
    /// its last writes.
    ReadOnly,
}

/// One side effect. Every step is idempotent, so a plan interrupted by a crash can be run
/// again from the start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// The endpoint stops routing to `node` and drops its client connections. New client
    /// connections wait (bounded) for the next primary.
    BlockEndpoint {
        node: String,
    },
    /// Run the node's STONITH command; must succeed.
    Stonith {
        node: String,
    },
    /// Make `node` refuse writes, as `mode` says, and end its client sessions.
    /// `required`: failure aborts the plan. Otherwise the node is already lost and its
    /// traffic cut: the fence runs in the background, retried and recorded, and never
    /// delays the steps after it (tenet 7).
    FenceNode {
        node: String,
        required: bool,
        #[serde(default)]
        mode: FenceMode,
    },
    /// Wait until `node` has applied everything `from` wrote (a switchover: `from` is fenced).
    WaitCatchUp {
        node: String,
        from: String,
    },
    /// Make `node` a primary. The point of no return.
    Promote {
        node: String,
    },
    /// Make writes on the primary `node` wait for the first connected replica of `names`
    /// (none when empty). How is the provider's: `synchronous_standby_names` for PostgreSQL,
    /// `min-replicas-to-write` for Redis.
    SetSyncStandbys {
        node: String,
        names: Vec<String>,
    },
    /// Route the endpoint to `node` under fencing token `epoch`; records the new primary.
    RouteEndpoint {
        node: String,
        epoch: u64,
    },
    /// A real write on `node`; its success time is the measured end of the outage.
    CheckWrite {
        node: String,
    },
    MarkNeedsRejoin {
        node: String,
    },
    /// Make the former primary `node` a replica of `source` again (PostgreSQL: pg_rewind or a
    /// fresh clone; Redis: `REPLICAOF`).
    Rejoin {
        node: String,
        source: String,
    },
    /// Compensation only: undo a fence (restart a stopped server, reset read-only).
    Unfence {
        node: String,
    },
}

impl Step {
    pub fn node(&self) -> &str {
        match self {
            Step::BlockEndpoint { node }
            | Step::Stonith { node }
            | Step::FenceNode { node, .. }
            | Step::WaitCatchUp { node, .. }
            | Step::Promote { node }
            | Step::SetSyncStandbys { node, .. }
            | Step::RouteEndpoint { node, .. }
            | Step::CheckWrite { node }
            | Step::MarkNeedsRejoin { node }
            | Step::Rejoin { node, .. }
            | Step::Unfence { node } => node,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Step::BlockEndpoint { .. } => "block-endpoint",
            Step::Stonith { .. } => "stonith",
            Step::FenceNode { .. } => "fence-node",
            Step::WaitCatchUp { .. } => "wait-catch-up",
            Step::Promote { .. } => "promote",
            Step::SetSyncStandbys { .. } => "set-sync-standbys",
            Step::RouteEndpoint { .. } => "route-endpoint",
            Step::CheckWrite { .. } => "check-write",
            Step::MarkNeedsRejoin { .. } => "mark-needs-rejoin",
            Step::Rejoin { .. } => "rejoin",
            Step::Unfence { .. } => "unfence",
        }
    }

    /// The step may change the server it names (its role, its settings, whether it runs), so
    /// what was observed of that server before the step no longer holds. Routing and
    /// bookkeeping steps change no server.
    pub fn may_change_server(&self) -> bool {
        matches!(
            self,
            Step::Promote { .. }
                | Step::FenceNode { .. }
                | Step::Rejoin { .. }
                | Step::Unfence { .. }
                | Step::SetSyncStandbys { .. }
        )
    }

    /// After this step succeeds the plan is never rolled back, only carried forward.
    pub fn is_point_of_no_return(&self) -> bool {
        matches!(self, Step::Promote { .. })
    }

    /// The step that undoes this one when a later step fails before the point of no return:
    /// the old primary is unfenced and routed to again, under the plan's epoch.
    pub fn compensation(&self, epoch: u64) -> Option<Step> {
        match self {
            Step::BlockEndpoint { node } => Some(Step::RouteEndpoint {
                node: node.clone(),
                epoch,
            }),
            Step::FenceNode { node, .. } => Some(Step::Unfence { node: node.clone() }),
            _ => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::BlockEndpoint { node } => write!(f, "block endpoint traffic to {node}"),
            Step::Stonith { node } => write!(f, "run the fence command of {node}"),
            Step::FenceNode {
                node,
                required: true,
                mode: FenceMode::Stop,
            } => write!(f, "fence {node}: stop it or make it read-only"),
            Step::FenceNode {
                node,
                required: true,
                mode: FenceMode::ReadOnly,
            } => write!(f, "fence {node}: make it read-only, keep it running"),
            Step::FenceNode {
                node,
                required: false,
                ..
            } => write!(
                f,
                "fence {node} in the background, retried until reached (does not delay what follows)"
            ),
            Step::WaitCatchUp { node, from } => {
                write!(f, "wait until {node} has applied everything {from} wrote")
            }
            Step::Promote { node } => write!(f, "promote {node}"),
            Step::SetSyncStandbys { node, names } if names.is_empty() => {
                write!(f, "let writes on {node} wait for no replica")
            }
            Step::SetSyncStandbys { node, names } if names[0] == crate::SYNC_ARCHIVE => {
                write!(f, "make writes on {node} wait for the WAL archive")?;
                match &names[1..] {
                    [] => Ok(()),
                    rest => write!(f, " and a synchronous replica (first of {})", rest.join(", ")),
                }
            }
            Step::SetSyncStandbys { node, names } => {
                write!(
                    f,
                    "make writes on {node} wait for a synchronous replica (first of {})",
                    names.join(", ")
                )
            }
            Step::RouteEndpoint { node, epoch } => {
                write!(f, "route the endpoint to {node} (epoch {epoch})")
            }
            Step::CheckWrite { node } => write!(f, "write a heartbeat on {node}"),
            Step::MarkNeedsRejoin { node } => write!(f, "mark {node} as needing rejoin"),
            Step::Rejoin { node, source } => {
                write!(f, "make {node} a replica of {source} again (rewind or re-clone)")
            }
            Step::Unfence { node } => write!(f, "undo the fence of {node}"),
        }
    }
}

/// An ordered list of steps and the reasons for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub kind: PlanKind,
    /// Fencing token that every step of this plan carries.
    pub epoch: u64,
    pub old_primary: Option<String>,
    pub target: Option<String>,
    pub steps: Vec<Step>,
    pub reasons: Vec<String>,
    /// When the fault that triggered the plan was first seen (first failed probe).
    pub fault_at: Option<Millis>,
    /// Bytes the target was behind the old primary's last known position.
    pub lag_bytes: Option<u64>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {} (epoch {})", self.kind.as_str(), self.epoch)?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {s}", i + 1)?;
        }
        if !self.reasons.is_empty() {
            writeln!(f, "because:")?;
            for r in &self.reasons {
                writeln!(f, "  - {r}")?;
            }
        }
        Ok(())
    }
}

/// The engine's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    Act(Plan),
    NoAction { reasons: Vec<String> },
}

impl Decision {
    pub fn reasons(&self) -> &[String] {
        match self {
            Decision::Act(p) => &p.reasons,
            Decision::NoAction { reasons } => reasons,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Act(p) => p.fmt(f),
            Decision::NoAction { reasons } => {
                writeln!(f, "no action:")?;
                for r in reasons {
                    writeln!(f, "  - {r}")?;
                }
                Ok(())
            }
        }
    }
}
