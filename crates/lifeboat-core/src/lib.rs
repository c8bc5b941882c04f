//! The decision core of Lifeboat: the domain model and the pure decision engine.
//!
//! Observations and the current time go in; a [`plan::Plan`] or a reasoned "no action" comes
//! out. Nothing here performs IO, reads a clock, spawns a task or draws a random number, so
//! every decision can be replayed, tested exhaustively and simulated. Side effects live in
//! `lifeboat-exec`.

pub mod decide;
pub mod drill;
pub mod health;
pub mod model;
pub mod notice;
pub mod plan;
pub mod time;
pub mod transition;
pub mod view;

pub use decide::{decide, plan_command, risks, Command};
pub use health::{Health, Thresholds, Tracker};
pub use plan::{Decision, FenceMode, Plan, PlanKind, Step};
pub use time::Millis;
pub use transition::{after_plan, after_step, before_step, StepOutcome};
pub use view::{
    ClusterView, ControllerState, Facts, NodeView, Policy, Role, SyncSetting, SYNC_ARCHIVE,
};
