//! What is at risk without an incident, and when a risk is raised and cleared.

use crate::*;
use expect_test::{expect, Expect};
use lifeboat_core::notice::{Condition, RiskChange, Risks, Severity};
use lifeboat_core::{decide, risks, ClusterView};

fn check(v: &ClusterView, exposure: Option<f64>, expected: Expect) {
    let p = policy();
    let d = decide(v, &p, T0.plus_ms(1_000));
    let out: String = risks(v, &p, &d, exposure, Some(1.0))
        .iter()
        .map(|c| format!("{} ({}): {}\n", c.name, c.severity.as_str(), c.sentence))
        .collect();
    expected.assert_eq(&out);
}

#[test]
fn a_healthy_cluster_within_its_rpo_is_at_no_risk() {
    check(&cluster(), Some(0.2), expect![[""]]);
}

#[test]
fn a_standby_that_could_not_take_over_and_exposure_past_the_rpo_are_risks() {
    let mut v = cluster();
    set(&mut v, "pg-b", |n| {
        n.facts = Some(standby_facts((1 << 30) - (32 << 20)))
    });
    check(
        &v,
        Some(4.5),
        expect![[r#"
            standby-ineligible/pg-b (warning): if pg-a were lost now, pg-b could not take over automatically: standby pg-b is 32 MiB behind (limit 16 MiB)
            rpo-exposure (warning): a failover now could lose 4.5 s of writes, more than the tier's RPO of 1.0 s: the best standby is that far behind
        "#]],
    );
}

#[test]
fn a_lost_primary_that_lifeboat_will_not_fail_over_is_a_critical_risk_with_the_reasons() {
    let mut v = cluster();
    set(&mut v, "pg-a", |n| n.health = down(T0));
    v.paused = true;
    check(
        &v,
        None,
        expect![[r#"
            failover-refused (critical): primary pg-a is down since 22:13:20.000: connection refused and Lifeboat does not fail over automatically: paused by operator: no automatic action (`lifeboat resume` to continue); would otherwise run a failover; primary pg-a down since 22:13:20.000: connection refused; standby pg-b is eligible, 0 B behind; pg-c is in cold region ap-south: promoted only on an operator's command; promoting pg-b
        "#]],
    );
    // Lifeboat acting on it is not a risk: the incident says the rest.
    v.paused = false;
    check(&v, None, expect![[""]]);
}

fn cond(name: &str) -> Condition {
    Condition {
        name: name.into(),
        severity: Severity::Warning,
        sentence: format!("{name} seen"),
    }
}

#[test]
fn a_risk_is_raised_once_it_lasts_and_cleared_when_it_is_gone_and_a_blip_is_never_raised() {
    let mut r = Risks::default();
    let at = |ms| T0.plus_ms(ms);
    assert_eq!(
        r.observe(at(0), 1000, vec![cond("lag"), cond("blip")]),
        vec![]
    );
    assert_eq!(r.observe(at(500), 1000, vec![cond("lag")]), vec![]);
    assert_eq!(
        r.observe(at(1000), 1000, vec![cond("lag")]),
        vec![RiskChange::Raised(cond("lag"), at(0))]
    );
    assert_eq!(
        r.observe(at(1500), 1000, vec![cond("lag")]),
        vec![],
        "raised once"
    );
    assert_eq!(r.raised().count(), 1);
    assert_eq!(
        r.observe(at(2000), 1000, vec![]),
        vec![RiskChange::Cleared(cond("lag"), at(2000))]
    );
    // The blip came and went within the second: never raised, never cleared.
    assert_eq!(r.observe(at(3000), 1000, vec![]), vec![]);
}

#[test]
fn a_risk_raised_before_a_restart_is_cleared_when_it_is_gone_and_not_raised_again() {
    let mut r = Risks::default();
    r.restore(cond("lag"), T0);
    assert_eq!(
        r.observe(T0.plus_ms(60_000), 1000, vec![cond("lag")]),
        vec![]
    );
    assert_eq!(
        r.observe(T0.plus_ms(61_000), 1000, vec![]),
        vec![RiskChange::Cleared(cond("lag"), T0.plus_ms(61_000))]
    );
}
