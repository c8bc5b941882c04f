use crate::*;
use expect_test::{expect, Expect};
use lifeboat_core::model::{FailoverMode, ReplicationMode};
use lifeboat_core::{decide, plan_command, ClusterView, Command, Health, Policy, SyncSetting};

fn check(v: &ClusterView, p: &Policy, expected: Expect) {
    expected.assert_eq(&decide(v, p, T0.plus_ms(1_000)).to_string());
}

fn check_cmd(v: &ClusterView, cmd: Command, expected: Expect) {
    let out = match plan_command(v, &policy(), &cmd, T0.plus_ms(1_000)) {
        Ok(plan) => plan.to_string(),
        Err(reasons) => format!(
            "refused:\n{}",
            reasons
                .iter()
                .map(|r| format!("  - {r}\n"))
                .collect::<String>()
        ),
    };
    expected.assert_eq(&out);
}

#[test]
fn healthy_primary_means_no_action() {
    check(
        &cluster(),
        &policy(),
        expect![[r#"
        no action:
          - primary pg-a healthy
          - standby pg-b streaming, 0 B behind
          - standby pg-c streaming, 0 B behind
    "#]],
    );
}

#[test]
fn lost_primary_fails_over_to_the_hot_standby() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    check(
        &v,
        &policy(),
        expect![[r#"
            plan failover (epoch 4)
              1. block endpoint traffic to pg-a
              2. fence pg-a in the background, retried until reached (does not delay what follows)
              3. promote pg-b
              4. mark pg-a as needing rejoin
              5. let writes on pg-b wait for no replica
              6. route the endpoint to pg-b (epoch 4)
              7. write a heartbeat on pg-b
            because:
              - primary pg-a down since 22:13:20.000: connection refused
              - standby pg-b is eligible, 0 B behind
              - pg-c is in cold region ap-south: promoted only on an operator's command
              - promoting pg-b
        "#]],
    );
}

#[test]
fn suspect_primary_below_threshold_is_not_failed_over() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| {
        n.health = Health::Suspect {
            since: T0,
            failures: 2,
            reason: "timeout".into(),
        }
    });
    check(
        &v,
        &policy(),
        expect![[r#"
        no action:
          - primary pg-a is suspect: 2 failed probe(s), below the threshold (last: timeout)
    "#]],
    );
}

#[test]
fn refuses_to_promote_past_the_lag_limit() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    set(&mut v, "pg-b", |n| {
        n.facts = Some(standby_facts((1 << 30) - (48 << 20)))
    });
    check(
        &v,
        &policy(),
        expect![[r#"
        no action:
          - primary pg-a down since 22:13:20.000: connection refused
          - standby pg-b is 48 MiB behind (limit 16 MiB)
          - pg-c is in cold region ap-south: promoted only on an operator's command
          - no standby can be promoted safely: not failing over
    "#]],
    );
}

#[test]
fn sync_mode_never_promotes_a_standby_that_was_not_synchronous() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    let p = Policy {
        replication: ReplicationMode::Sync,
        ..policy()
    };
    check(
        &v,
        &p,
        expect![[r#"
        no action:
          - primary pg-a down since 22:13:20.000: connection refused
          - standby pg-b was not synchronous when the primary was lost
          - pg-c is in cold region ap-south: promoted only on an operator's command
          - no standby can be promoted safely: not failing over
    "#]],
    );
    set(&mut v, "pg-a", |n| {
        n.facts = Some(primary_facts(1 << 30, &["pg-b"]))
    });
    assert!(decide(&v, &p, T0).to_string().contains("promote pg-b"));
}

#[test]
fn sync_mode_drops_the_requirement_when_the_standby_is_lost() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| {
        n.facts = Some(primary_facts(1 << 30, &["pg-b"]))
    });
    set(&mut v, "pg-b", |n| n.health = down(T0));
    check(
        &v,
        &Policy {
            replication: ReplicationMode::Sync,
            ..policy()
        },
        expect![[r#"
            plan sync-off (epoch 3)
              1. let writes on pg-a wait for no replica
            because:
              - no healthy standby left: dropping the synchronous requirement so writes continue; the lost standby is not promoted automatically until it is synchronous again
        "#]],
    );
}

#[test]
fn sync_strict_keeps_the_requirement_when_the_standby_is_lost() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| {
        n.facts = Some(primary_facts(1 << 30, &["pg-b"]))
    });
    set(&mut v, "pg-b", |n| n.health = down(T0));
    check(
        &v,
        &Policy {
            replication: ReplicationMode::SyncStrict,
            ..policy()
        },
        expect![[r#"
        no action:
          - primary pg-a healthy
          - standby pg-b is down since 22:13:20.000: connection refused
          - standby pg-c streaming, 0 B behind
    "#]],
    );
}

#[test]
fn pause_cooldown_and_manual_mode_each_say_why_not() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    v.paused = true;
    check(
        &v,
        &policy(),
        expect![[r#"
        no action:
          - paused by operator: no automatic action (`lifeboat resume` to continue)
          - would otherwise run a failover
          - primary pg-a down since 22:13:20.000: connection refused
          - standby pg-b is eligible, 0 B behind
          - pg-c is in cold region ap-south: promoted only on an operator's command
          - promoting pg-b
    "#]],
    );
    v.paused = false;
    v.last_failover = Some(T0);
    check(
        &v,
        &policy(),
        expect![[r#"
        no action:
          - primary pg-a down since 22:13:20.000: connection refused
          - cooldown after the failover at 22:13:20.000: no automatic failover until 22:18:20.000
    "#]],
    );
    v.last_failover = None;
    check(
        &v,
        &Policy {
            mode: FailoverMode::Manual,
            ..policy()
        },
        expect![[r#"
        no action:
          - primary pg-a down since 22:13:20.000: connection refused
          - standby pg-b is eligible, 0 B behind
          - pg-c is in cold region ap-south: promoted only on an operator's command
          - manual mode: approve with `lifeboat failover --to pg-b`
    "#]],
    );
}

#[test]
fn a_returning_old_primary_is_fenced_on_sight() {
    let mut v = cluster();
    v.primary = Some("pg-b".into());
    v.endpoint = Some("pg-b".into());
    set(&mut v, "pg-b", |n| {
        n.facts = Some(primary_facts(2 << 30, &[]))
    });
    set(&mut v, "pg-a", |n| n.needs_rejoin = true);
    check(
        &v,
        &policy(),
        expect![[r#"
        plan fence-returned (epoch 3)
          1. block endpoint traffic to pg-a
          2. fence pg-a: stop it or make it read-only
          3. mark pg-a as needing rejoin
        because:
          - pg-a accepts writes but the primary is pg-b (epoch 3): fencing it on sight
    "#]],
    );
}

#[test]
fn an_interrupted_plan_is_resumed_after_a_restart() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    let lifeboat_core::Decision::Act(plan) = decide(&v, &policy(), T0) else {
        panic!("expected a plan")
    };
    v.in_flight = Some(plan.clone());
    let lifeboat_core::Decision::Act(resumed) = decide(&v, &policy(), T0.plus_ms(5_000)) else {
        panic!("expected a plan")
    };
    assert_eq!(resumed.steps, plan.steps);
    assert_eq!(resumed.epoch, plan.epoch);
    assert!(resumed.reasons[0].contains("resuming the failover"));
}

#[test]
fn after_a_restart_the_endpoint_is_routed_to_the_recorded_primary_under_its_epoch() {
    let mut v = cluster();
    v.endpoint = None;
    check(
        &v,
        &policy(),
        expect![[r#"
        plan adopt (epoch 3)
          1. route the endpoint to pg-a (epoch 3)
        because:
          - the endpoint does not route to the primary pg-a (a restart): routing it under epoch 3
    "#]],
    );
    // A primary that refuses writes is not routed to.
    set(&mut v, "pg-a", |n| {
        n.facts.as_mut().unwrap().read_only = true;
    });
    let d = decide(&v, &policy(), T0.plus_ms(1_000)).to_string();
    assert!(!d.contains("route the endpoint"), "{d}");
}

#[test]
fn first_start_adopts_the_only_writable_node_once_all_are_probed() {
    let mut v = cluster();
    v.primary = None;
    set(&mut v, "pg-c", |n| {
        n.health = Health::Unknown {
            since: T0,
            reason: "not probed yet".into(),
        }
    });
    check(
        &v,
        &policy(),
        expect![[r#"
        no action:
          - no primary recorded yet; waiting for the first probes of pg-c
    "#]],
    );
    set(&mut v, "pg-c", |n| n.health = down(T0));
    check(
        &v,
        &policy(),
        expect![[r#"
        plan adopt (epoch 4)
          1. route the endpoint to pg-a (epoch 4)
        because:
          - pg-a is the only writable node: adopting it as the primary
    "#]],
    );
}

#[test]
fn switchover_waits_for_catch_up_and_rejoins_the_old_primary() {
    check_cmd(
        &cluster(),
        Command::Switchover { to: "pg-b".into() },
        expect![[r#"
            plan switchover (epoch 4)
              1. block endpoint traffic to pg-a
              2. fence pg-a: make it read-only, keep it running
              3. wait until pg-b has applied everything pg-a wrote
              4. promote pg-b
              5. mark pg-a as needing rejoin
              6. let writes on pg-b wait for no replica
              7. route the endpoint to pg-b (epoch 4)
              8. write a heartbeat on pg-b
              9. make pg-a a replica of pg-b again (rewind or re-clone)
            because:
              - switchover from pg-a to pg-b requested by operator
        "#]],
    );
}

#[test]
fn commands_name_unknown_nodes_and_refuse_unsafe_requests() {
    check_cmd(
        &cluster(),
        Command::Switchover { to: "pg-z".into() },
        expect![[r#"
        refused:
          - unknown node "pg-z"; known nodes: pg-a, pg-b, pg-c
    "#]],
    );
    check_cmd(
        &cluster(),
        Command::Failover {
            to: "pg-b".into(),
            force: false,
        },
        expect![[r#"
        refused:
          - primary pg-a is healthy: use `lifeboat switchover --to pg-b` for a planned change, or add --force
    "#]],
    );
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    set(&mut v, "pg-b", |n| n.facts = Some(standby_facts(1 << 20)));
    check_cmd(
        &v,
        Command::Failover {
            to: "pg-b".into(),
            force: false,
        },
        expect![[r#"
        refused:
          - standby pg-b is 1023 MiB behind (limit 16 MiB)
          - add --force to promote anyway (data written on the old primary since may be lost)
    "#]],
    );
    check_cmd(
        &v,
        Command::Failover {
            to: "pg-b".into(),
            force: true,
        },
        expect![[r#"
            plan manual-failover (epoch 4)
              1. block endpoint traffic to pg-a
              2. fence pg-a in the background, retried until reached (does not delay what follows)
              3. promote pg-b
              4. mark pg-a as needing rejoin
              5. let writes on pg-b wait for no replica
              6. route the endpoint to pg-b (epoch 4)
              7. write a heartbeat on pg-b
            because:
              - failover to pg-b requested by operator (forced)
              - primary pg-a down since 22:13:20.000: connection refused
        "#]],
    );
    check_cmd(
        &cluster(),
        Command::Rejoin {
            node: "pg-a".into(),
        },
        expect![[r#"
        refused:
          - pg-a is the primary; it cannot rejoin itself
    "#]],
    );
}

#[test]
fn with_several_synchronous_replicas_only_the_one_holding_every_acknowledged_write_is_promoted() {
    // Redis in sync mode: a write confirmed by WAIT reached at least one linked replica,
    // any of them.
    let mut v = cluster();
    v.nodes.push(node(
        "pg-d",
        "eu-west",
        RegionRole::Standby,
        50,
        standby_facts(1 << 30),
    ));
    set(&mut v, "pg-a", |n| {
        let mut f = primary_facts(1 << 30, &["pg-b", "pg-d"]);
        f.connected_replicas = vec!["pg-b".into(), "pg-d".into()];
        n.facts = Some(f);
        n.health = down(T0);
    });
    set(&mut v, "pg-b", |n| {
        n.facts = Some(standby_facts((1 << 30) - 4096))
    });
    let p = Policy {
        replication: ReplicationMode::Sync,
        ..policy()
    };
    check(
        &v,
        &p,
        expect![[r#"
            plan failover (epoch 4)
              1. block endpoint traffic to pg-a
              2. fence pg-a in the background, retried until reached (does not delay what follows)
              3. promote pg-d
              4. mark pg-a as needing rejoin
              5. let writes on pg-d wait for no replica
              6. route the endpoint to pg-d (epoch 4)
              7. write a heartbeat on pg-d
            because:
              - primary pg-a down since 22:13:20.000: connection refused
              - synchronous standby pg-d is 4 KiB further ahead: it may hold acknowledged writes that pg-b lacks
              - pg-c is in cold region ap-south: promoted only on an operator's command
              - standby pg-d is eligible, 0 B behind
              - promoting pg-d
        "#]],
    );
    set(&mut v, "pg-d", |n| n.health = down(T0));
    check(
        &v,
        &p,
        expect![[r#"
            no action:
              - primary pg-a down since 22:13:20.000: connection refused
              - synchronous standby pg-d cannot be observed: it may hold acknowledged writes that pg-b lacks
              - pg-c is in cold region ap-south: promoted only on an operator's command
              - standby pg-d is down since 22:13:20.000: connection refused
              - no standby can be promoted safely: not failing over
        "#]],
    );
}

#[test]
fn a_synchronous_archive_is_waited_for_and_is_never_taken_for_a_standby() {
    let mut v = cluster();
    let archive = Policy {
        sync_archive: true,
        ..policy()
    };
    // Asynchronous replication: commits wait for the archive alone.
    check(
        &v,
        &archive,
        expect![[r#"
            plan sync-on (epoch 3)
              1. make writes on pg-a wait for the WAL archive
            because:
              - synchronous replication to lifeboat_wal
        "#]],
    );
    // Synchronous replication: for the archive and the first healthy standby.
    let both = Policy {
        replication: ReplicationMode::Sync,
        ..archive.clone()
    };
    set(&mut v, "pg-a", |n| {
        n.facts = Some(primary_facts(1 << 30, &["pg-b"]))
    });
    check(
        &v,
        &both,
        expect![[r#"
            plan sync-on (epoch 3)
              1. make writes on pg-a wait for the WAL archive and a synchronous replica (first of pg-b)
            because:
              - synchronous replication to lifeboat_wal, pg-b
        "#]],
    );
    // The primary lost: the archive, synchronous like pg-b, is no standby that might hold
    // more, and pg-b is promoted, its new setting again naming the archive first.
    set(&mut v, "pg-a", |n| {
        let mut f = primary_facts(1 << 30, &["lifeboat_wal", "pg-b"]);
        f.sync = SyncSetting::Names(vec!["lifeboat_wal".into(), "pg-b".into()]);
        n.facts = Some(f);
        n.health = down(T0);
    });
    check(
        &v,
        &both,
        expect![[r#"
            plan failover (epoch 4)
              1. block endpoint traffic to pg-a
              2. fence pg-a in the background, retried until reached (does not delay what follows)
              3. promote pg-b
              4. mark pg-a as needing rejoin
              5. make writes on pg-b wait for the WAL archive
              6. route the endpoint to pg-b (epoch 4)
              7. write a heartbeat on pg-b
            because:
              - primary pg-a down since 22:13:20.000: connection refused
              - standby pg-b is eligible, 0 B behind
              - pg-c is in cold region ap-south: promoted only on an operator's command
              - promoting pg-b
        "#]],
    );
}
