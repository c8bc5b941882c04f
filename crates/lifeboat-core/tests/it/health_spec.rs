//! The health tracker's rules with overlapping probes, as timelines: each probe starts on
//! its interval whatever the earlier ones are doing, and answers (or runs past its timeout)
//! at some later time. Answers are fed in the order they arrive; the table shows the
//! node's health after each.

use expect_test::{expect, Expect};
use lifeboat_core::{Millis, Thresholds, Tracker};

const T: Thresholds = Thresholds {
    failure: 3,
    success: 2,
};

/// `(started ms, answered ms, result)`; result `ok`, or the failure's text.
fn check(probes: &[(u64, u64, &str)], expected: Expect) {
    let mut arrivals: Vec<&(u64, u64, &str)> = probes.iter().collect();
    arrivals.sort_by_key(|p| (p.1, p.0));
    let mut tr = Tracker::new(Millis(0));
    let mut out = String::new();
    for (started, at, r) in arrivals {
        let result = if *r == "ok" { Ok(()) } else { Err(*r) };
        tr.observe_probe(result, Millis(*started), Millis(*at), T);
        let since = match &tr.health {
            lifeboat_core::Health::Down { since, .. } => format!(" since {}", since.0),
            lifeboat_core::Health::Suspect { since, .. } => format!(" since {}", since.0),
            _ => String::new(),
        };
        out.push_str(&format!(
            "at {at:>4}: probe of {started:>4} {r:<9} -> {}{since}\n",
            tr.health.label()
        ));
    }
    expected.assert_eq(&out);
}

/// Every 100 ms, a probe; up to the hang at 1 000 ms they answer in 2 ms.
fn healthy_until(end: u64) -> Vec<(u64, u64, &'static str)> {
    (0..end / 100)
        .map(|i| (i * 100, i * 100 + 2, "ok"))
        .collect()
}

#[test]
fn a_hung_node_is_down_one_timeout_and_two_intervals_after_it_hung() {
    // Timeout 1 000 ms. The probes of 1 000, 1 100 and 1 200 never answer and are failed at
    // their deadline; they do not wait for each other.
    let mut p = healthy_until(1_000);
    p.retain(|x| x.0 >= 700);
    for s in [1_000, 1_100, 1_200] {
        p.push((s, s + 1_000, "timed out"));
    }
    check(
        &p,
        expect![[r#"
            at  702: probe of  700 ok        -> up
            at  802: probe of  800 ok        -> up
            at  902: probe of  900 ok        -> up
            at 2000: probe of 1000 timed out -> suspect since 1000
            at 2100: probe of 1100 timed out -> suspect since 1000
            at 2200: probe of 1200 timed out -> down since 1000
        "#]],
    );
}

#[test]
fn a_stall_shorter_than_the_timeout_makes_probes_late_never_failed() {
    // The node stalls from 1 000 to 1 300 ms: the probes started in the stall all answer
    // at 1 300, late but within their timeout.
    let mut p = healthy_until(1_000);
    p.retain(|x| x.0 >= 800);
    p.extend([
        (1_000, 1_300, "ok"),
        (1_100, 1_300, "ok"),
        (1_200, 1_300, "ok"),
        (1_300, 1_302, "ok"),
    ]);
    check(
        &p,
        expect![[r#"
            at  802: probe of  800 ok        -> up
            at  902: probe of  900 ok        -> up
            at 1300: probe of 1000 ok        -> up
            at 1300: probe of 1100 ok        -> up
            at 1300: probe of 1200 ok        -> up
            at 1302: probe of 1300 ok        -> up
        "#]],
    );
}

#[test]
fn a_late_success_from_before_the_fault_does_not_mask_the_failures_after_it() {
    // The probe of 1 000 was slow and answers ok at 1 350; the server crashed at 1 050, so
    // the probes of 1 100, 1 200 and 1 300 were refused at once.
    let p = [
        (900, 902, "ok"),
        (1_000, 1_350, "ok"),
        (1_100, 1_101, "refused"),
        (1_200, 1_201, "refused"),
        (1_300, 1_301, "refused"),
    ];
    check(
        &p,
        expect![[r#"
            at  902: probe of  900 ok        -> up
            at 1101: probe of 1100 refused   -> suspect since 1100
            at 1201: probe of 1200 refused   -> suspect since 1100
            at 1301: probe of 1300 refused   -> down since 1100
            at 1350: probe of 1000 ok        -> down since 1100
        "#]],
    );
}

#[test]
fn a_late_timeout_of_an_old_probe_does_not_undo_newer_successes() {
    // The probe of 1 000 hit a dropped packet and times out at 2 000; every probe after it
    // answered: one lost probe is not a failure streak.
    let mut p = healthy_until(2_100);
    p.retain(|x| x.0 >= 1_700 || x.0 == 900);
    p.push((1_000, 2_000, "timed out"));
    check(
        &p,
        expect![[r#"
            at  902: probe of  900 ok        -> up
            at 1702: probe of 1700 ok        -> up
            at 1802: probe of 1800 ok        -> up
            at 1902: probe of 1900 ok        -> up
            at 2000: probe of 1000 timed out -> up
            at 2002: probe of 2000 ok        -> up
        "#]],
    );
}

#[test]
fn a_down_node_is_up_again_after_the_success_threshold_of_probes_started_after_the_failures() {
    let p = [
        (0, 1, "refused"),
        (100, 101, "refused"),
        (200, 201, "refused"),
        // Back at 300: the probe of 300 answers slowly, after the probe of 400.
        (300, 450, "ok"),
        (400, 402, "ok"),
        // A timeout of the probe of 250 arrives last: it started before both successes.
        (250, 1_250, "timed out"),
    ];
    check(
        &p,
        expect![[r#"
            at    1: probe of    0 refused   -> unknown
            at  101: probe of  100 refused   -> unknown
            at  201: probe of  200 refused   -> down since 0
            at  402: probe of  400 ok        -> down since 0
            at  450: probe of  300 ok        -> up
            at 1250: probe of  250 timed out -> up
        "#]],
    );
}
