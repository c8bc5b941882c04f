//! Drills, judged: what a scenario must show, what the canary's history measured, and the
//! verdict against the tier's targets. Pure, like the rest of the core: the runner in
//! `lifeboat-exec` applies the faults, drives the canary and hands the record in.

use crate::time::format_ms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// What a drill breaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The primary is killed or hangs.
    #[default]
    PrimaryFailure,
    /// Every node and check of a region goes silent (its packets are dropped).
    RegionOutage,
    /// The primary slows down in steps (its processes stopped for longer and longer slices
    /// of time: every request waits up to that long), then is lost. Lifeboat must not fail
    /// over while it is only slow, and must once it is lost.
    GradualDegradation,
    /// The primary's region and the others are cut off from each other (not from Lifeboat):
    /// nothing may be promoted, writes go on, and the standbys catch up afterwards.
    Partition,
    /// The primary's file system is filled up, then freed: writes fail meanwhile. Lifeboat
    /// does not fail over for a full disk (its probes read); the drill measures how long
    /// writes were down and that none acknowledged was lost.
    DiskFull,
    /// The standbys stop receiving WAL until they are past `max-lag`, then the primary is
    /// lost: Lifeboat must refuse to promote, and say why.
    ReplicaLag,
    /// A destructive statement drops rows the drill wrote; they are recovered by a
    /// point-in-time restore to just before it, into a side server, and counted.
    DataCorruption,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::PrimaryFailure,
        Scenario::RegionOutage,
        Scenario::GradualDegradation,
        Scenario::Partition,
        Scenario::DiskFull,
        Scenario::ReplicaLag,
        Scenario::DataCorruption,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PrimaryFailure => "primary-failure",
            Scenario::RegionOutage => "region-outage",
            Scenario::GradualDegradation => "gradual-degradation",
            Scenario::Partition => "partition",
            Scenario::DiskFull => "disk-full",
            Scenario::ReplicaLag => "replica-lag",
            Scenario::DataCorruption => "data-corruption",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether passing means a failover happened.
    pub fn expects_failover(self) -> bool {
        matches!(
            self,
            Scenario::PrimaryFailure | Scenario::RegionOutage | Scenario::GradualDegradation
        )
    }
}

/// The targets a drill is judged against (the tier's, or the drill's own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub rto_ms: u64,
    pub rpo_ms: u64,
    /// Synchronous replication: no acknowledged write may be lost, whatever the RPO.
    pub zero_loss: bool,
}

/// One canary write, as the canary saw it. Times in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub seq: u64,
    pub sent_ms: u64,
    /// When the write was acknowledged; `None`: it failed or its outcome is unknown.
    pub acked_ms: Option<u64>,
}

/// What the canary's history says about the fault at `fault_ms`, with `present` the writes
/// read back from the primary at the end (Jepsen's set-full check: lost = acknowledged and
/// missing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub attempted: u64,
    pub acked: u64,
    /// Fault → first acknowledged write after the outage began. The outage begins at the
    /// first write after the fault that was not acknowledged, so an ack that slipped in while
    /// the fault took effect does not end it (as the shared benchmark's `canary.py` counts).
    /// `None`: no write was acknowledged after the outage began.
    pub rto_ms: Option<u64>,
    /// Whether any write failed after the fault (a fault the clients never noticed has no
    /// outage to measure).
    pub outage: bool,
    /// Acknowledged writes missing from the primary at the end.
    pub lost: Vec<u64>,
    /// The oldest lost write's acknowledgement → the fault: how much time of acknowledged
    /// writes was lost (0 when none was).
    pub data_loss_ms: u64,
    /// Writes whose outcome was unknown to the canary and that did land.
    pub unacked_but_present: u64,
}

pub fn measure(writes: &[Write], fault_ms: u64, present: &BTreeSet<u64>) -> Measured {
    let outage_start = writes
        .iter()
        .filter(|w| w.acked_ms.is_none() && w.sent_ms >= fault_ms)
        .map(|w| w.sent_ms)
        .min();
    let rto_ms = outage_start.and_then(|start| {
        writes
            .iter()
            .filter(|w| w.sent_ms >= start)
            .filter_map(|w| w.acked_ms)
            .min()
            .map(|a| a.saturating_sub(fault_ms))
    });
    let lost: Vec<&Write> = writes
        .iter()
        .filter(|w| w.acked_ms.is_some() && !present.contains(&w.seq))
        .collect();
    let data_loss_ms = lost
        .iter()
        .filter_map(|w| w.acked_ms)
        .min()
        .map(|a| fault_ms.saturating_sub(a))
        .unwrap_or(0);
    Measured {
        attempted: writes.len() as u64,
        acked: writes.iter().filter(|w| w.acked_ms.is_some()).count() as u64,
        rto_ms,
        outage: outage_start.is_some(),
        lost: lost.iter().map(|w| w.seq).collect(),
        data_loss_ms,
        unacked_but_present: writes
            .iter()
            .filter(|w| w.acked_ms.is_none() && present.contains(&w.seq))
            .count() as u64,
    }
}

/// Everything a verdict is drawn from. A drill's report carries it, filled in as the drill
/// runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub scenario: Scenario,
    pub targets: Targets,
    /// `None` when the canary's history could not be read back (the verdict fails).
    pub measured: Option<Measured>,
    pub primary_before: String,
    /// The primary at the end of the fault (before any failback).
    pub primary_after: Option<String>,
    /// What Lifeboat said while the primary was lost and it did not act.
    pub refusal: Vec<String>,
    /// Faults applied, and which of them were undone.
    pub faults_applied: u32,
    pub faults_undone: u32,
    /// Why the drill stopped early (an abort, a timeout, a real incident), if it did.
    pub aborted: Option<String>,
    /// What the rollback could not put back (a node left to rejoin, a service not healthy).
    #[serde(default)]
    pub left_broken: Option<String>,
    /// data-corruption: what the point-in-time restore recovered.
    #[serde(default)]
    pub restore: Option<Restore>,
    /// gradual-degradation: the slowest stage (its longest stall, ms), and the node promoted
    /// while the primary was only slow, if one was.
    #[serde(default)]
    pub degraded: Option<Degraded>,
    /// partition: the standbys seen cut off from the primary (not streaming) meanwhile.
    #[serde(default)]
    pub cut_off: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    pub max_stall_ms: u64,
    pub promoted_while_slow: Option<String>,
}

/// A point-in-time restore of the rows a destructive statement removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// Rows written before the statement.
    pub expected: u64,
    /// Rows the restored copy holds (`None`: the restore or the query failed).
    pub found: Option<u64>,
    /// Statement → rows readable on the restored copy.
    pub ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    /// One sentence: what was measured, against what.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub checks: Vec<Check>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.pass { "PASS" } else { "FAIL" })?;
        for c in &self.checks {
            writeln!(
                f,
                "  {} {}: {}",
                if c.pass { "ok  " } else { "FAIL" },
                c.name,
                c.text
            )?;
        }
        Ok(())
    }
}

/// The verdict: one check per target, each a sentence.
pub fn verdict(r: &Record) -> Verdict {
    let mut checks = Vec::new();
    let mut check = |name: &str, pass: bool, text: String| {
        checks.push(Check {
            name: name.into(),
            pass,
            text,
        })
    };
    if let Some(why) = &r.aborted {
        check(
            "completed",
            false,
            format!("the drill was stopped early: {why}"),
        );
    }
    let moved = r
        .primary_after
        .as_ref()
        .is_some_and(|p| *p != r.primary_before);
    if r.scenario == Scenario::Partition {
        if moved {
            check(
                "no failover",
                false,
                format!(
                    "{} was promoted although {} was healthy and only cut off from the other regions",
                    r.primary_after.as_deref().unwrap_or("?"),
                    r.primary_before
                ),
            );
        } else {
            check(
                "no failover",
                true,
                format!("{} stayed the primary", r.primary_before),
            );
        }
        check(
            "partitioned",
            !r.cut_off.is_empty(),
            if r.cut_off.is_empty() {
                "no standby was seen cut off from the primary: the partition did not take".into()
            } else {
                format!(
                    "{} stopped streaming from the primary",
                    r.cut_off.join(", ")
                )
            },
        );
        if let Some(m) = &r.measured {
            check(
                "available",
                !m.outage,
                match m.rto_ms {
                    _ if !m.outage => "no canary write failed during the partition".into(),
                    Some(ms) => format!(
                        "canary writes failed; the service took writes again {} after the partition began",
                        format_ms(ms)
                    ),
                    None => "canary writes failed, and none was acknowledged after".into(),
                },
            );
        }
    } else if r.scenario == Scenario::DiskFull {
        if let Some(m) = &r.measured {
            if !m.outage {
                check(
                    "writes failed",
                    false,
                    "no canary write failed while the disk was full: the fill did not reach the primary's data".into(),
                );
            }
            match m.rto_ms {
                Some(ms) => check(
                    "rto",
                    ms <= r.targets.rto_ms,
                    format!(
                        "writes were acknowledged again {} after the disk filled (target {}){}",
                        format_ms(ms),
                        format_ms(r.targets.rto_ms),
                        if moved {
                            format!(", on {}", r.primary_after.as_deref().unwrap_or("?"))
                        } else {
                            format!(
                                ", on {} once the space was freed: Lifeboat does not fail over for a full disk",
                                r.primary_before
                            )
                        }
                    ),
                ),
                None if m.outage => check(
                    "rto",
                    false,
                    "no write was acknowledged after the disk filled, not even once the space was freed".into(),
                ),
                None => {}
            }
        }
    } else if r.scenario == Scenario::DataCorruption {
        if moved {
            check(
                "no failover",
                false,
                format!(
                    "{} was promoted: a destructive statement is replicated, a failover does not undo it",
                    r.primary_after.as_deref().unwrap_or("?")
                ),
            );
        }
        match &r.restore {
            None => check("restored", false, "no restore was attempted".into()),
            Some(x) => {
                match (x.found, &x.error) {
                    (Some(found), _) => check(
                        "restored",
                        found == x.expected,
                        format!(
                            "the copy restored to just before the statement holds {found} of the {} rows",
                            x.expected
                        ),
                    ),
                    (None, e) => check(
                        "restored",
                        false,
                        format!(
                            "the point-in-time restore failed: {}",
                            e.as_deref().unwrap_or("no reason given")
                        ),
                    ),
                }
                if let Some(ms) = x.ms {
                    check(
                        "rto",
                        ms <= r.targets.rto_ms,
                        format!(
                            "the rows were readable again {} after the statement (target {})",
                            format_ms(ms),
                            format_ms(r.targets.rto_ms)
                        ),
                    );
                }
            }
        }
    } else if r.scenario.expects_failover() {
        if let Some(d) = &r.degraded {
            match &d.promoted_while_slow {
                None => check(
                    "held while slow",
                    true,
                    format!(
                        "{} stayed the primary through stalls of up to {}",
                        r.primary_before,
                        format_ms(d.max_stall_ms)
                    ),
                ),
                Some(n) => check(
                    "held while slow",
                    false,
                    format!(
                        "{n} was promoted while {} was only slow (stalls of up to {})",
                        r.primary_before,
                        format_ms(d.max_stall_ms)
                    ),
                ),
            }
        }
        match &r.primary_after {
            Some(p) if moved => check(
                "failover",
                true,
                format!("{} was promoted in place of {}", p, r.primary_before),
            ),
            _ => check(
                "failover",
                false,
                format!(
                    "{} was still the primary at the end of the fault: nothing was promoted{}",
                    r.primary_before,
                    reasons(&r.refusal)
                ),
            ),
        }
    } else if moved {
        check(
            "refused",
            false,
            format!(
                "{} was promoted although the standbys were past max-lag: that failover may have lost data",
                r.primary_after.as_deref().unwrap_or("?")
            ),
        );
    } else if r.refusal.is_empty() {
        check(
            "refused",
            false,
            "nothing was promoted, but Lifeboat gave no reason while the primary was lost (was it lost?)".into(),
        );
    } else {
        check(
            "refused",
            true,
            format!("no standby was promoted{}", reasons(&r.refusal)),
        );
    }
    let t = r.targets;
    match &r.measured {
        None => check(
            "canary",
            false,
            "the canary's writes could not be read back, so nothing was measured".into(),
        ),
        Some(m) => {
            if r.scenario.expects_failover() {
                match m.rto_ms {
                    Some(rto) => check(
                        "rto",
                        rto <= t.rto_ms,
                        format!(
                            "the first write was acknowledged {} after the fault (target {})",
                            format_ms(rto),
                            format_ms(t.rto_ms)
                        ),
                    ),
                    None if !m.outage => check(
                        "rto",
                        false,
                        "no canary write failed after the fault: the fault did not reach the clients".into(),
                    ),
                    None => check(
                        "rto",
                        false,
                        format!(
                            "no write was acknowledged after the fault (target {})",
                            format_ms(t.rto_ms)
                        ),
                    ),
                }
            }
            let lost = m.lost.len();
            if t.zero_loss {
                check(
                    "data loss",
                    lost == 0,
                    format!(
                        "{lost} of {} acknowledged writes lost (synchronous replication: 0 allowed)",
                        m.acked
                    ),
                );
            } else {
                check(
                    "data loss",
                    m.data_loss_ms <= t.rpo_ms,
                    format!(
                        "{lost} of {} acknowledged writes lost, {} of writes before the fault (target {})",
                        m.acked,
                        format_ms(m.data_loss_ms),
                        format_ms(t.rpo_ms)
                    ),
                );
            }
        }
    }
    check(
        "rolled back",
        r.faults_undone == r.faults_applied && r.left_broken.is_none(),
        format!(
            "{} of {} faults undone{}",
            r.faults_undone,
            r.faults_applied,
            match &r.left_broken {
                Some(why) => format!(", but {why}"),
                None => String::new(),
            }
        ),
    );
    let pass = checks.iter().all(|c| c.pass);
    Verdict { pass, checks }
}

fn reasons(r: &[String]) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": {}", r.join("; "))
    }
}
