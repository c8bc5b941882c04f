//! What every step records in the controller's durable state, before it runs and after each
//! outcome, as text: the state a failover starts from, then one line per step.

use crate::T0;
use expect_test::{expect, Expect};
use lifeboat_core::{
    after_plan, after_step, before_step, ControllerState, FenceMode, Plan, PlanKind, Step,
    StepOutcome,
};

fn start() -> ControllerState {
    ControllerState {
        primary: Some("pg-a".into()),
        epoch: 3,
        ..Default::default()
    }
}

/// `a -> b`, field by field, for what differs.
fn diff(a: &ControllerState, b: &ControllerState) -> String {
    let mut out = Vec::new();
    if a.primary != b.primary {
        out.push(format!("primary {:?} -> {:?}", a.primary, b.primary));
    }
    if a.epoch != b.epoch {
        out.push(format!("epoch {} -> {}", a.epoch, b.epoch));
    }
    for n in b.fenced.difference(&a.fenced) {
        out.push(format!("fenced += {n}"));
    }
    for n in a.fenced.difference(&b.fenced) {
        out.push(format!("fenced -= {n}"));
    }
    for n in b.needs_rejoin.difference(&a.needs_rejoin) {
        out.push(format!("needs-rejoin += {n}"));
    }
    for n in a.needs_rejoin.difference(&b.needs_rejoin) {
        out.push(format!("needs-rejoin -= {n}"));
    }
    if a.last_failover != b.last_failover {
        out.push(format!(
            "last failover {:?} -> {:?}",
            a.last_failover, b.last_failover
        ));
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}

/// Each step from `state`: what `before_step` records, then what `after_step` adds for each
/// outcome. The state carried to the next step is the one after `ok`.
fn check(mut state: ControllerState, steps: &[Step], expected: Expect) {
    let mut out = String::new();
    for step in steps {
        let before = before_step(&state, step);
        out.push_str(&format!("{}: before: {}", step, diff(&state, &before)));
        for o in [StepOutcome::Ok, StepOutcome::Failed, StepOutcome::Unknown] {
            let after = after_step(&before, step, o);
            if after != before {
                out.push_str(&format!("; {o:?}: {}", diff(&before, &after)));
            }
        }
        out.push('\n');
        state = after_step(&before, step, StepOutcome::Ok);
    }
    expected.assert_eq(&out);
}

#[test]
fn a_failover_fences_the_old_primary_before_it_is_touched_and_moves_the_primary_when_routed() {
    let n = |s: &str| s.to_owned();
    check(
        start(),
        &[
            Step::BlockEndpoint { node: n("pg-a") },
            Step::Stonith { node: n("pg-a") },
            Step::FenceNode {
                node: n("pg-a"),
                required: false,
                mode: FenceMode::Stop,
            },
            Step::Promote { node: n("pg-b") },
            Step::MarkNeedsRejoin { node: n("pg-a") },
            Step::SetSyncStandbys {
                node: n("pg-b"),
                names: vec![],
            },
            Step::RouteEndpoint {
                node: n("pg-b"),
                epoch: 4,
            },
            Step::CheckWrite { node: n("pg-b") },
        ],
        expect![[r#"
            block endpoint traffic to pg-a: before: -
            run the fence command of pg-a: before: -
            fence pg-a in the background, retried until reached (does not delay what follows): before: fenced += pg-a
            promote pg-b: before: -
            mark pg-a as needing rejoin: before: needs-rejoin += pg-a
            let writes on pg-b wait for no replica: before: -
            route the endpoint to pg-b (epoch 4): before: primary Some("pg-a") -> Some("pg-b"), epoch 3 -> 4
            write a heartbeat on pg-b: before: -
        "#]],
    );
}

#[test]
fn only_a_rejoin_or_unfence_that_certainly_succeeded_lifts_a_fence() {
    let mut fenced = start();
    fenced.fenced.insert("pg-a".into());
    fenced.needs_rejoin.insert("pg-a".into());
    check(
        fenced.clone(),
        &[Step::Rejoin {
            node: "pg-a".into(),
            source: "pg-b".into(),
        }],
        expect![[r#"
            make pg-a a replica of pg-b again (rewind or re-clone): before: -; Ok: fenced -= pg-a, needs-rejoin -= pg-a
        "#]],
    );
    fenced.needs_rejoin.clear();
    check(
        fenced,
        &[Step::Unfence {
            node: "pg-a".into(),
        }],
        expect![[r#"
            undo the fence of pg-a: before: -; Ok: fenced -= pg-a
        "#]],
    );
}

#[test]
fn an_older_epoch_never_lowers_the_current_one() {
    check(
        ControllerState {
            epoch: 9,
            ..start()
        },
        &[Step::RouteEndpoint {
            node: "pg-a".into(),
            epoch: 4,
        }],
        expect![[r#"
            route the endpoint to pg-a (epoch 4): before: -
        "#]],
    );
}

#[test]
fn plans_that_move_the_primary_start_the_cooldown_and_others_do_not() {
    let plan = |kind| Plan {
        kind,
        epoch: 4,
        old_primary: None,
        target: None,
        steps: vec![],
        reasons: vec![],
        fault_at: None,
        lag_bytes: None,
    };
    let out: Vec<String> = [
        PlanKind::Failover,
        PlanKind::ManualFailover,
        PlanKind::Switchover,
        PlanKind::FenceReturned,
        PlanKind::SyncOff,
        PlanKind::Rejoin,
    ]
    .into_iter()
    .map(|k| {
        format!(
            "{}: {}",
            k.as_str(),
            diff(&start(), &after_plan(&start(), &plan(k), T0))
        )
    })
    .collect();
    expect![[r#"
        failover: last failover None -> Some(Millis(1700000000000))
        manual-failover: last failover None -> Some(Millis(1700000000000))
        switchover: last failover None -> Some(Millis(1700000000000))
        fence-returned: -
        sync-off: -
        rejoin: -"#]]
    .assert_eq(&out.join("\n"));
}
