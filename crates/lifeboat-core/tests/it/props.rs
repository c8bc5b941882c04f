//! Invariants over arbitrary cluster views.

use crate::*;
use lifeboat_core::model::{FailoverMode, RegionRole, ReplicationMode};
use lifeboat_core::{
    decide, plan_command, ClusterView, Command, Decision, Health, Plan, PlanKind, Policy, Role,
    Step,
};
use proptest::prelude::*;

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::Up { since: T0 }),
        Just(Health::Down {
            since: T0,
            reason: "refused".into()
        }),
        Just(Health::Suspect {
            since: T0,
            failures: 1,
            reason: "timeout".into()
        }),
        Just(Health::Unknown {
            since: T0,
            reason: "not probed yet".into()
        }),
    ]
}

fn node_strategy(i: usize) -> impl Strategy<Value = NodeView> {
    let role = prop_oneof![
        Just(RegionRole::Primary),
        Just(RegionRole::Standby),
        Just(RegionRole::Cold)
    ];
    (
        role,
        health(),
        any::<bool>(),
        0u64..(64 << 20),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0i32..3,
        any::<bool>(),
    )
        .prop_map(
            move |(role, health, in_recovery, lsn, streaming, fenced, rejoin, prio, read_only)| {
                let mut n = node(
                    &format!("n{i}"),
                    &format!("r{i}"),
                    role,
                    prio,
                    standby_facts(lsn),
                );
                n.health = health;
                let f = n.facts.as_mut().expect("facts");
                f.role = if in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                };
                f.streaming = streaming;
                f.read_only = read_only && !in_recovery;
                n.fenced = fenced;
                n.needs_rejoin = rejoin;
                n
            },
        )
}

fn view() -> impl Strategy<Value = ClusterView> {
    (2usize..5)
        .prop_flat_map(|k| {
            let nodes: Vec<_> = (0..k).map(node_strategy).collect();
            (
                nodes,
                proptest::option::of(0..k),
                proptest::collection::vec(0..k, 0..3),
                any::<bool>(),
                0u64..10,
            )
        })
        .prop_map(|(mut nodes, primary, sync, paused, epoch)| {
            let sync_names: Vec<String> = sync.iter().map(|i| format!("n{i}")).collect();
            if let Some(p) = primary {
                let f = nodes[p].facts.as_mut().expect("facts");
                f.sync_replicas = sync_names.clone();
                f.connected_replicas = sync_names;
            }
            ClusterView {
                nodes,
                primary: primary.map(|p| format!("n{p}")),
                epoch,
                paused,
                last_failover: None,
                in_flight: None,
                endpoint: primary.map(|p| format!("n{p}")),
            }
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let mode = prop_oneof![Just(FailoverMode::Automatic), Just(FailoverMode::Manual)];
    let repl = prop_oneof![
        Just(ReplicationMode::Async),
        Just(ReplicationMode::Sync),
        Just(ReplicationMode::SyncStrict)
    ];
    (mode, repl, 0u64..(32 << 20)).prop_map(|(mode, replication, max_lag_bytes)| Policy {
        sync_archive: false,
        mode,
        replication,
        max_lag_bytes,
        cooldown_ms: 60_000,
    })
}

/// Replays a plan against a model of who is writable and where the endpoint routes.
fn assert_single_writer(v: &ClusterView, plan: &Plan) {
    let mut routed = v.primary.clone();
    let mut promoted = 0;
    for s in &plan.steps {
        match s {
            Step::BlockEndpoint { node } if routed.as_deref() == Some(node) => routed = None,
            Step::Promote { node } => {
                promoted += 1;
                assert!(
                    routed.is_none() || routed.as_deref() == Some(node),
                    "promoted {node} while the endpoint still routes to {routed:?}\n{plan}"
                );
                assert_ne!(
                    Some(node),
                    plan.old_primary.as_ref(),
                    "promoted the old primary\n{plan}"
                );
            }
            Step::RouteEndpoint { node, epoch } => {
                assert_eq!(
                    Some(node),
                    plan.target.as_ref(),
                    "routed to a node that is not the target\n{plan}"
                );
                assert!(
                    *epoch > v.epoch,
                    "routing without a new fencing token\n{plan}"
                );
                routed = Some(node.clone());
            }
            _ => {}
        }
    }
    assert!(promoted <= 1, "two promotions in one plan\n{plan}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn automatic_plans_never_make_two_writers_or_exceed_limits(v in view(), p in policy_strategy()) {
        let Decision::Act(plan) = decide(&v, &p, T0) else { return Ok(()) };
        prop_assert!(!v.paused, "acted while paused:\n{plan}");
        assert_single_writer(&v, &plan);
        if plan.kind == PlanKind::Failover {
            prop_assert_eq!(p.mode, FailoverMode::Automatic);
            let old = v.node(plan.old_primary.as_deref().unwrap()).unwrap();
            let target = v.node(plan.target.as_deref().unwrap()).unwrap();
            prop_assert!(old.health.is_down(), "failed over a primary that is not down:\n{}", plan);
            prop_assert!(target.standby_up() && !target.fenced && !target.needs_rejoin);
            prop_assert_ne!(target.region_role, RegionRole::Cold);
            let lag = old.facts.as_ref().unwrap().position.saturating_sub(target.facts.as_ref().unwrap().position);
            prop_assert!(lag <= p.max_lag_bytes, "promoted past the lag limit: {} > {}\n{}", lag, p.max_lag_bytes, plan);
            if p.replication.is_sync() {
                prop_assert!(old.facts.as_ref().unwrap().sync_replicas.contains(&target.name),
                    "sync mode promoted a standby that was not synchronous:\n{}", plan);
            }
        }
    }

    #[test]
    fn operator_plans_never_make_two_writers(v in view(), p in policy_strategy(), to in 0usize..4, force: bool, which in 0u8..3) {
        let to = format!("n{to}");
        let cmd = match which {
            0 => Command::Switchover { to },
            1 => Command::Failover { to, force },
            _ => Command::Rejoin { node: to },
        };
        if let Ok(plan) = plan_command(&v, &p, &cmd, T0) {
            assert_single_writer(&v, &plan);
        }
    }
}

/// Probes every 100 ms, each answering after its own latency (up to 3 s): `(ok, latency)`.
fn probes() -> impl Strategy<Value = Vec<(bool, u64)>> {
    proptest::collection::vec((any::<bool>(), 0u64..3_000), 1..60)
}

/// Feeds `probes` to a tracker in the order their answers arrive; the health after each.
fn arrivals(probes: &[(bool, u64)]) -> Vec<lifeboat_core::Health> {
    use lifeboat_core::{Millis, Thresholds, Tracker};
    let t = Thresholds {
        failure: 3,
        success: 2,
    };
    let mut order: Vec<(u64, u64, bool)> = probes
        .iter()
        .enumerate()
        .map(|(i, (ok, lat))| (i as u64 * 100 + lat, i as u64 * 100, *ok))
        .collect();
    order.sort();
    let mut tr = Tracker::new(Millis(0));
    order
        .into_iter()
        .map(|(at, started, ok)| {
            tr.observe_probe(
                if ok { Ok(()) } else { Err("x") },
                Millis(started),
                Millis(at),
                t,
            );
            tr.health.clone()
        })
        .collect()
}

proptest! {
    /// However late they answer, probes that all succeed never make a node suspect or down.
    #[test]
    fn late_successes_never_fail_a_node(lat in proptest::collection::vec(0u64..3_000, 1..60)) {
        let p: Vec<(bool, u64)> = lat.into_iter().map(|l| (true, l)).collect();
        for h in arrivals(&p) {
            prop_assert!(h.is_up(), "{h}");
        }
    }

    /// A node is down only when, among the probes answered so far, the newest `failure`
    /// by start time all failed, or it was down before and has not had `success` newer
    /// successes since.
    #[test]
    fn down_only_after_a_failure_streak_by_start(p in probes()) {
        let mut answered: Vec<(u64, u64, bool)> = p
            .iter()
            .enumerate()
            .map(|(i, (ok, lat))| (i as u64 * 100 + lat, i as u64 * 100, *ok))
            .collect();
        answered.sort();
        let healths = arrivals(&p);
        let mut was_down = false;
        for (k, h) in healths.iter().enumerate() {
            let mut by_start: Vec<(u64, bool)> =
                answered[..=k].iter().map(|(_, s, ok)| (*s, *ok)).collect();
            by_start.sort();
            let newest_fail_streak = by_start.iter().rev().take_while(|(_, ok)| !ok).count();
            let newest_ok_streak = by_start.iter().rev().take_while(|(_, ok)| *ok).count();
            if h.is_down() {
                prop_assert!(
                    newest_fail_streak >= 3 || (was_down && newest_ok_streak < 2),
                    "down with {by_start:?}"
                );
            }
            if was_down && newest_ok_streak >= 2 {
                prop_assert!(h.is_up(), "still {h} with {by_start:?}");
            }
            was_down = h.is_down();
        }
    }
}
