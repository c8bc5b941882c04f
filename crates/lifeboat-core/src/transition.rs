//! Durable state transitions: what a step, or a finished plan, records in the controller's
//! state. Pure functions of state, step and outcome; the executor only runs the step between
//! [`before_step`] and [`after_step`] and persists what they return.

use crate::plan::{Plan, PlanKind, Step};
use crate::time::Millis;
use crate::view::ControllerState;
use serde::{Deserialize, Serialize};

/// What the executor learned from running a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    Ok,
    Failed,
    /// It may or may not have happened.
    Unknown,
}

/// Recorded before the step runs: what must hold even if Lifeboat dies while it runs. A node
/// being fenced counts as fenced from the start; the new primary and its epoch are recorded
/// before the endpoint routes to it; a node marked for rejoin is fenced with it.
pub fn before_step(state: &ControllerState, step: &Step) -> ControllerState {
    let mut s = state.clone();
    match step {
        Step::FenceNode { node, .. } => {
            s.fenced.insert(node.clone());
        }
        Step::RouteEndpoint { node, epoch } => {
            s.primary = Some(node.clone());
            s.epoch = s.epoch.max(*epoch);
        }
        Step::MarkNeedsRejoin { node } => {
            s.fenced.insert(node.clone());
            s.needs_rejoin.insert(node.clone());
        }
        _ => {}
    }
    s
}

/// Recorded once the step's outcome is known. Only a step that certainly succeeded lifts a
/// fence: a rejoin or an unfence that failed or ended unknown leaves the node fenced.
pub fn after_step(state: &ControllerState, step: &Step, outcome: StepOutcome) -> ControllerState {
    let mut s = state.clone();
    match (step, outcome) {
        (Step::Rejoin { node, .. }, StepOutcome::Ok) => {
            s.fenced.remove(node);
            s.needs_rejoin.remove(node);
        }
        (Step::Unfence { node }, StepOutcome::Ok) => {
            s.fenced.remove(node);
        }
        _ => {}
    }
    s
}

/// Recorded when every step of `plan` succeeded at `now`: a plan that moved the primary
/// starts the cooldown.
pub fn after_plan(state: &ControllerState, plan: &Plan, now: Millis) -> ControllerState {
    let mut s = state.clone();
    if matches!(
        plan.kind,
        PlanKind::Failover | PlanKind::ManualFailover | PlanKind::Switchover
    ) {
        s.last_failover = Some(now);
    }
    s
}
