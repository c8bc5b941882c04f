//! How a drill is judged: the canary's history measured the way the shared benchmark's
//! `canary.py` measures it, and one sentence per target.

use expect_test::{expect, Expect};
use lifeboat_core::drill::{
    measure, verdict, Degraded, Measured, Record, Restore, Scenario, Targets, Write,
};
use std::collections::BTreeSet;

const F: u64 = 1_000_000; // the fault

/// Writes every 100 ms from F-500; those sent in [down_from, down_to) fail.
fn history(down_from: u64, down_to: u64, last: u64) -> Vec<Write> {
    (0..)
        .map(|i| F - 500 + i * 100)
        .take_while(|t| *t <= last)
        .enumerate()
        .map(|(i, t)| Write {
            seq: i as u64,
            sent_ms: t,
            acked_ms: (!(down_from..down_to).contains(&t)).then_some(t + 5),
        })
        .collect()
}

fn all(w: &[Write]) -> BTreeSet<u64> {
    w.iter().map(|w| w.seq).collect()
}

fn record(scenario: Scenario, measured: Option<Measured>, after: &str) -> Record {
    Record {
        scenario,
        targets: Targets {
            rto_ms: 5_000,
            rpo_ms: 1_000,
            zero_loss: false,
        },
        measured,
        primary_before: "pg-a".into(),
        primary_after: Some(after.into()),
        refusal: Vec::new(),
        faults_applied: 1,
        faults_undone: 1,
        aborted: None,
        left_broken: None,
        restore: None,
        degraded: None,
        cut_off: Vec::new(),
    }
}

fn check(r: &Record, expected: Expect) {
    expected.assert_eq(&verdict(r).to_string());
}

#[test]
fn rto_runs_from_the_fault_to_the_first_ack_after_the_outage_began() {
    // An ack at F+5 slipped in while the fault took effect; the outage began at F+100.
    let w = history(F + 100, F + 1_300, F + 2_000);
    let m = measure(&w, F, &all(&w));
    assert_eq!(m.rto_ms, Some(1_305));
    assert!(m.lost.is_empty());
    check(
        &record(Scenario::PrimaryFailure, Some(m), "pg-b"),
        expect![[r#"
            PASS
              ok   failover: pg-b was promoted in place of pg-a
              ok   rto: the first write was acknowledged 1.305 s after the fault (target 5.000 s)
              ok   data loss: 0 of 14 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
}

#[test]
fn lost_acknowledged_writes_fail_sync_mode_and_are_measured_in_time_against_the_rpo() {
    let w = history(F, F + 1_000, F + 2_000);
    let mut present = all(&w);
    // The writes acknowledged 495 ms and 95 ms before the fault never reached the standby.
    present.remove(&0);
    present.remove(&4);
    let m = measure(&w, F, &present);
    assert_eq!(m.lost, vec![0, 4]);
    assert_eq!(m.data_loss_ms, 495);
    let mut r = record(Scenario::PrimaryFailure, Some(m), "pg-b");
    check(
        &r,
        expect![[r#"
            PASS
              ok   failover: pg-b was promoted in place of pg-a
              ok   rto: the first write was acknowledged 1.005 s after the fault (target 5.000 s)
              ok   data loss: 2 of 16 acknowledged writes lost, 495 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
    r.targets.zero_loss = true;
    check(
        &r,
        expect![[r#"
            FAIL
              ok   failover: pg-b was promoted in place of pg-a
              ok   rto: the first write was acknowledged 1.005 s after the fault (target 5.000 s)
              FAIL data loss: 2 of 16 acknowledged writes lost (synchronous replication: 0 allowed)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
}

#[test]
fn no_recovery_and_a_fault_left_applied_fail() {
    let w = history(F, F + 10_000, F + 2_000);
    let mut r = record(
        Scenario::RegionOutage,
        Some(measure(&w, F, &all(&w))),
        "pg-a",
    );
    r.refusal = vec!["standby pg-b: region eu-west's checks fail".into()];
    r.faults_undone = 0;
    r.aborted = Some("timed out after 2m".into());
    r.left_broken = Some("node pg-a needs a rejoin".into());
    check(
        &r,
        expect![[r#"
            FAIL
              FAIL completed: the drill was stopped early: timed out after 2m
              FAIL failover: pg-a was still the primary at the end of the fault: nothing was promoted: standby pg-b: region eu-west's checks fail
              FAIL rto: no write was acknowledged after the fault (target 5.000 s)
              ok   data loss: 0 of 5 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              FAIL rolled back: 0 of 1 faults undone, but node pg-a needs a rejoin
        "#]],
    );
}

#[test]
fn a_fault_the_clients_never_noticed_has_no_rto() {
    let w = history(0, 0, F + 2_000);
    let m = measure(&w, F, &all(&w));
    assert!(!m.outage);
    check(
        &record(Scenario::PrimaryFailure, Some(m), "pg-b"),
        expect![[r#"
            FAIL
              ok   failover: pg-b was promoted in place of pg-a
              FAIL rto: no canary write failed after the fault: the fault did not reach the clients
              ok   data loss: 0 of 26 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
}

#[test]
fn replica_lag_passes_only_when_the_failover_was_refused_with_a_reason() {
    let w = history(F, F + 3_000, F + 4_000);
    let m = measure(&w, F, &all(&w));
    let mut r = record(Scenario::ReplicaLag, Some(m), "pg-a");
    r.refusal = vec!["standby pg-b: 3.0 MiB behind, more than max-lag 1.0 MiB".into()];
    check(
        &r,
        expect![[r#"
            PASS
              ok   refused: no standby was promoted: standby pg-b: 3.0 MiB behind, more than max-lag 1.0 MiB
              ok   data loss: 0 of 16 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
    r.primary_after = Some("pg-b".into());
    check(
        &r,
        expect![[r#"
            FAIL
              FAIL refused: pg-b was promoted although the standbys were past max-lag: that failover may have lost data
              ok   data loss: 0 of 16 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
    r.primary_after = Some("pg-a".into());
    r.refusal.clear();
    r.measured = None;
    check(
        &r,
        expect![[r#"
            FAIL
              FAIL refused: nothing was promoted, but Lifeboat gave no reason while the primary was lost (was it lost?)
              FAIL canary: the canary's writes could not be read back, so nothing was measured
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
}

#[test]
fn data_corruption_passes_when_the_restored_copy_holds_every_row_in_time() {
    let w = history(0, 0, F + 2_000);
    let m = measure(&w, F, &all(&w));
    let mut r = record(Scenario::DataCorruption, Some(m), "pg-a");
    r.restore = Some(Restore {
        expected: 1000,
        found: Some(1000),
        ms: Some(3_200),
        error: None,
    });
    check(
        &r,
        expect![[r#"
            PASS
              ok   restored: the copy restored to just before the statement holds 1000 of the 1000 rows
              ok   rto: the rows were readable again 3.200 s after the statement (target 5.000 s)
              ok   data loss: 0 of 26 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
    r.restore = Some(Restore {
        expected: 1000,
        found: None,
        ms: None,
        error: Some("no base backup of source db ends before 0/3000060".into()),
    });
    r.primary_after = Some("pg-b".into());
    check(
        &r,
        expect![[r#"
            FAIL
              FAIL no failover: pg-b was promoted: a destructive statement is replicated, a failover does not undo it
              FAIL restored: the point-in-time restore failed: no base backup of source db ends before 0/3000060
              ok   data loss: 0 of 26 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
              ok   rolled back: 1 of 1 faults undone
        "#]],
    );
}

#[test]
fn gradual_degradation_fails_a_failover_while_the_primary_was_only_slow() {
    let w = history(F, F + 1_300, F + 2_000);
    let mut r = record(
        Scenario::GradualDegradation,
        Some(measure(&w, F, &all(&w))),
        "pg-b",
    );
    r.degraded = Some(Degraded {
        max_stall_ms: 400,
        promoted_while_slow: None,
    });
    check(
        &r,
        expect![[r#"
        PASS
          ok   held while slow: pg-a stayed the primary through stalls of up to 400 ms
          ok   failover: pg-b was promoted in place of pg-a
          ok   rto: the first write was acknowledged 1.305 s after the fault (target 5.000 s)
          ok   data loss: 0 of 13 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
    r.degraded = Some(Degraded {
        max_stall_ms: 400,
        promoted_while_slow: Some("pg-b".into()),
    });
    check(
        &r,
        expect![[r#"
        FAIL
          FAIL held while slow: pg-b was promoted while pg-a was only slow (stalls of up to 400 ms)
          ok   failover: pg-b was promoted in place of pg-a
          ok   rto: the first write was acknowledged 1.305 s after the fault (target 5.000 s)
          ok   data loss: 0 of 13 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
}

#[test]
fn a_partition_passes_when_nothing_is_promoted_writes_go_on_and_the_standby_was_cut_off() {
    let w = history(0, 0, F + 2_000);
    let mut r = record(Scenario::Partition, Some(measure(&w, F, &all(&w))), "pg-a");
    r.cut_off = vec!["pg-b".into()];
    check(
        &r,
        expect![[r#"
        PASS
          ok   no failover: pg-a stayed the primary
          ok   partitioned: pg-b stopped streaming from the primary
          ok   available: no canary write failed during the partition
          ok   data loss: 0 of 26 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
    r.cut_off.clear();
    r.primary_after = Some("pg-b".into());
    check(
        &r,
        expect![[r#"
        FAIL
          FAIL no failover: pg-b was promoted although pg-a was healthy and only cut off from the other regions
          FAIL partitioned: no standby was seen cut off from the primary: the partition did not take
          ok   available: no canary write failed during the partition
          ok   data loss: 0 of 26 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
}

#[test]
fn a_full_disk_is_judged_by_how_long_writes_were_down() {
    let w = history(F, F + 3_000, F + 4_000);
    let mut r = record(Scenario::DiskFull, Some(measure(&w, F, &all(&w))), "pg-a");
    r.targets.rto_ms = 2_000;
    check(
        &r,
        expect![[r#"
        FAIL
          FAIL rto: writes were acknowledged again 3.005 s after the disk filled (target 2.000 s), on pg-a once the space was freed: Lifeboat does not fail over for a full disk
          ok   data loss: 0 of 16 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
    r.targets.rto_ms = 60_000;
    check(
        &r,
        expect![[r#"
        PASS
          ok   rto: writes were acknowledged again 3.005 s after the disk filled (target 60.000 s), on pg-a once the space was freed: Lifeboat does not fail over for a full disk
          ok   data loss: 0 of 16 acknowledged writes lost, 0 ms of writes before the fault (target 1.000 s)
          ok   rolled back: 1 of 1 faults undone
    "#]],
    );
}
