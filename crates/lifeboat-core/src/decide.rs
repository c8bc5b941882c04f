//! The decision engine: a cluster view, the policy and `now` in; a plan or reasons out.

use crate::health::Health;
use crate::model::{FailoverMode, RegionRole, ReplicationMode};
use crate::notice::{Condition, Severity};
use crate::plan::{Decision, FenceMode, Plan, PlanKind, Step};
use crate::time::{format_bytes, Millis};
use crate::view::{ClusterView, NodeView, Policy, SYNC_ARCHIVE};
use serde::{Deserialize, Serialize};

/// An operator's request that needs a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    Switchover { to: String },
    Failover { to: String, force: bool },
    Rejoin { node: String },
}

fn no(reasons: Vec<String>) -> Decision {
    Decision::NoAction { reasons }
}

/// The automatic decision for the current view.
pub fn decide(v: &ClusterView, p: &Policy, now: Millis) -> Decision {
    if let Some(plan) = &v.in_flight {
        let mut plan = plan.clone();
        plan.reasons.insert(
            0,
            format!(
                "resuming the {} that a controller restart interrupted",
                plan.kind.as_str()
            ),
        );
        return Decision::Act(plan);
    }
    let d = decide_unpaused(v, p, now);
    if !v.paused {
        return d;
    }
    let mut reasons =
        vec!["paused by operator: no automatic action (`lifeboat resume` to continue)".to_owned()];
    if let Decision::Act(plan) = &d {
        reasons.push(format!("would otherwise run a {}", plan.kind.as_str()));
    }
    reasons.extend(d.reasons().iter().cloned());
    no(reasons)
}

fn decide_unpaused(v: &ClusterView, p: &Policy, now: Millis) -> Decision {
    let Some(pname) = v.primary.as_deref() else {
        return adopt(v);
    };
    let Some(primary) = v.node(pname) else {
        return no(vec![format!(
            "the recorded primary {pname} is not in the config; choose one with `lifeboat failover --to NODE`"
        )]);
    };
    // Safety before availability: a second writable node is fenced on sight.
    if let Some(rogue) = v.nodes.iter().find(|n| n.name != pname && n.writable()) {
        return Decision::Act(Plan {
            kind: PlanKind::FenceReturned,
            epoch: v.epoch,
            old_primary: Some(rogue.name.clone()),
            target: Some(pname.to_owned()),
            steps: vec![
                Step::BlockEndpoint {
                    node: rogue.name.clone(),
                },
                Step::FenceNode {
                    node: rogue.name.clone(),
                    required: true,
                    mode: FenceMode::Stop,
                },
                Step::MarkNeedsRejoin {
                    node: rogue.name.clone(),
                },
            ],
            reasons: vec![format!(
                "{} accepts writes but the primary is {pname} (epoch {}): fencing it on sight",
                rogue.name, v.epoch
            )],
            fault_at: Some(now),
            lag_bytes: None,
        });
    }
    match &primary.health {
        Health::Up { .. } => primary_up(v, p, primary),
        Health::Suspect { failures, reason, .. } => no(vec![format!(
            "primary {pname} is suspect: {failures} failed probe(s), below the threshold (last: {reason})"
        )]),
        Health::Unknown { reason, .. } => no(vec![format!("waiting for probes of primary {pname}: {reason}")]),
        Health::Down { since, reason } => primary_down(v, p, primary, *since, reason, now),
    }
}

/// First start: adopt the single writable node, once every node has been probed.
fn adopt(v: &ClusterView) -> Decision {
    let unknown: Vec<&str> = v
        .nodes
        .iter()
        .filter(|n| matches!(n.health, Health::Unknown { .. }))
        .map(|n| n.name.as_str())
        .collect();
    if !unknown.is_empty() {
        return no(vec![format!(
            "no primary recorded yet; waiting for the first probes of {}",
            unknown.join(", ")
        )]);
    }
    let writable: Vec<&NodeView> = v.nodes.iter().filter(|n| n.writable()).collect();
    match writable.as_slice() {
        [one] => Decision::Act(Plan {
            kind: PlanKind::Adopt,
            epoch: v.epoch + 1,
            old_primary: None,
            target: Some(one.name.clone()),
            steps: vec![Step::RouteEndpoint { node: one.name.clone(), epoch: v.epoch + 1 }],
            reasons: vec![format!("{} is the only writable node: adopting it as the primary", one.name)],
            fault_at: None,
            lag_bytes: None,
        }),
        [] => no(vec!["no writable node found; not promoting anything on start (choose with `lifeboat failover --to NODE`)".into()]),
        many => {
            let names: Vec<&str> = many.iter().map(|n| n.name.as_str()).collect();
            no(vec![format!(
                "several nodes accept writes ({}): refusing to choose; fence all but one and run `lifeboat failover --to NODE`",
                names.join(", ")
            )])
        }
    }
}

fn primary_up(v: &ClusterView, p: &Policy, primary: &NodeView) -> Decision {
    let pname = &primary.name;
    let Some(facts) = primary.facts.as_ref().filter(|f| !f.is_replica()) else {
        return no(vec![format!(
            "primary {pname} answers but is in recovery: it is not writable; check it"
        )]);
    };
    // A restarted daemon's endpoint routes nowhere until told: route it to the recorded
    // primary, under the recorded epoch (the primary does not change).
    if v.endpoint.as_deref() != Some(pname.as_str()) && primary.writable() {
        return Decision::Act(Plan {
            kind: PlanKind::Adopt,
            epoch: v.epoch,
            old_primary: None,
            target: Some(pname.clone()),
            steps: vec![Step::RouteEndpoint {
                node: pname.clone(),
                epoch: v.epoch,
            }],
            reasons: vec![format!(
                "the endpoint does not route to the primary {pname} (a restart): routing it under epoch {}",
                v.epoch
            )],
            fault_at: None,
            lag_bytes: None,
        });
    }
    if p.replication.is_sync() || p.sync_archive {
        let desired = sync_names(v, p, primary, None);
        if !facts.sync.satisfies(&desired) {
            let (kind, why) = if desired.is_empty() {
                (
                    PlanKind::SyncOff,
                    "no healthy standby left: dropping the synchronous requirement so writes continue; the lost standby is not promoted automatically until it is synchronous again".to_owned(),
                )
            } else {
                (
                    PlanKind::SyncOn,
                    format!("synchronous replication to {}", desired.join(", ")),
                )
            };
            return Decision::Act(Plan {
                kind,
                epoch: v.epoch,
                old_primary: None,
                target: Some(pname.clone()),
                steps: vec![Step::SetSyncStandbys {
                    node: pname.clone(),
                    names: desired,
                }],
                reasons: vec![why],
                fault_at: None,
                lag_bytes: None,
            });
        }
    }
    let mut reasons = vec![format!("primary {pname} healthy")];
    for n in v.nodes.iter().filter(|n| n.name != *pname) {
        reasons.push(match (&n.health, &n.facts) {
            _ if n.needs_rejoin => {
                format!("{} needs rejoin (`lifeboat rejoin {}`)", n.name, n.name)
            }
            (Health::Up { .. }, Some(f)) => format!(
                "standby {} {}, {} behind",
                n.name,
                if f.streaming {
                    "streaming"
                } else {
                    "not streaming"
                },
                format_bytes(facts.position.saturating_sub(f.position))
            ),
            (h, _) => format!("standby {} is {h}", n.name),
        });
    }
    no(reasons)
}

fn primary_down(
    v: &ClusterView,
    p: &Policy,
    primary: &NodeView,
    since: Millis,
    reason: &str,
    now: Millis,
) -> Decision {
    let mut reasons = vec![format!(
        "primary {} down since {since}: {reason}",
        primary.name
    )];
    if let Some(last) = v.last_failover {
        let until = last.plus_ms(p.cooldown_ms);
        if now < until {
            reasons.push(format!(
                "cooldown after the failover at {last}: no automatic failover until {until}"
            ));
            return no(reasons);
        }
    }
    let mut best: Option<(&NodeView, u64)> = None;
    for n in v.nodes.iter().filter(|n| n.name != primary.name) {
        match eligibility(v, p, primary, n, false) {
            Ok(lag) => {
                reasons.push(format!(
                    "standby {} is eligible, {} behind",
                    n.name,
                    format_bytes(lag)
                ));
                let better = match best {
                    None => true,
                    Some((b, blag)) => {
                        (n.priority, std::cmp::Reverse(lag)) > (b.priority, std::cmp::Reverse(blag))
                    }
                };
                if better {
                    best = Some((n, lag));
                }
            }
            Err(why) => reasons.push(why),
        }
    }
    let Some((target, lag)) = best else {
        reasons.push("no standby can be promoted safely: not failing over".into());
        return no(reasons);
    };
    if p.mode == FailoverMode::Manual {
        reasons.push(format!(
            "manual mode: approve with `lifeboat failover --to {}`",
            target.name
        ));
        return no(reasons);
    }
    reasons.push(format!("promoting {}", target.name));
    Decision::Act(failover_plan(
        v,
        p,
        PlanKind::Failover,
        primary,
        target,
        lag,
        Some(since),
        reasons,
    ))
}

/// Why `n` may or may not be promoted in place of `primary`. `Ok` carries its lag in bytes.
fn eligibility(
    v: &ClusterView,
    p: &Policy,
    primary: &NodeView,
    n: &NodeView,
    force: bool,
) -> Result<u64, String> {
    let name = &n.name;
    if n.fenced || n.needs_rejoin {
        return Err(format!(
            "{name} needs rejoin before it can be promoted (`lifeboat rejoin {name}`)"
        ));
    }
    if !n.health.is_up() {
        return Err(format!("standby {name} is {}", n.health));
    }
    let Some(f) = n.facts.as_ref().filter(|f| f.is_replica()) else {
        return Err(format!("{name} is not a standby"));
    };
    if force {
        let lag = primary
            .facts
            .as_ref()
            .map_or(0, |pf| pf.position.saturating_sub(f.position));
        return Ok(lag);
    }
    if n.region_role == RegionRole::Cold {
        return Err(format!(
            "{name} is in cold region {}: promoted only on an operator's command",
            n.region
        ));
    }
    if !n.checks_ok {
        return Err(format!(
            "checks of region {} are failing: not promoting {name}",
            n.region
        ));
    }
    let Some(pf) = primary.facts.as_ref() else {
        return Err(format!(
            "the replication position of {} was never observed: cannot bound data loss",
            primary.name
        ));
    };
    let lag = pf.position.saturating_sub(f.position);
    if lag > p.max_lag_bytes {
        return Err(format!(
            "standby {name} is {} behind (limit {})",
            format_bytes(lag),
            format_bytes(p.max_lag_bytes)
        ));
    }
    if p.replication.is_sync() {
        if !pf.sync_replicas.iter().any(|s| s == name) {
            return Err(format!(
                "standby {name} was not synchronous when the primary was lost"
            ));
        }
        // An acknowledged write reached at least one synchronous replica: the candidate must
        // hold everything each of the others may hold.
        for other in pf
            .sync_replicas
            .iter()
            .filter(|o| *o != name && !(p.sync_archive && *o == SYNC_ARCHIVE))
        {
            let seen = v
                .node(other)
                .filter(|o| o.health.is_up())
                .and_then(|o| o.facts.as_ref())
                .filter(|o| o.is_replica());
            match seen {
                Some(o) if o.position > f.position => {
                    return Err(format!(
                        "synchronous standby {other} is {} further ahead: it may hold acknowledged writes that {name} lacks",
                        format_bytes(o.position - f.position)
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(format!(
                        "synchronous standby {other} cannot be observed: it may hold acknowledged writes that {name} lacks"
                    ))
                }
            }
        }
    }
    Ok(lag)
}

/// The standbys the primary should wait for. `after_failover_of`: the plan's old primary,
/// which cannot be a healthy standby yet.
fn sync_names(
    v: &ClusterView,
    p: &Policy,
    primary: &NodeView,
    after_failover_of: Option<&str>,
) -> Vec<String> {
    let mut cands: Vec<&NodeView> = v
        .nodes
        .iter()
        .filter(|n| n.name != primary.name && n.region_role != RegionRole::Cold)
        .filter(|n| match p.replication {
            ReplicationMode::Async => false,
            ReplicationMode::SyncStrict => true,
            ReplicationMode::Sync => {
                Some(n.name.as_str()) != after_failover_of
                    && !n.fenced
                    && !n.needs_rejoin
                    && n.standby_up()
                    && n.facts.as_ref().is_some_and(|f| f.streaming)
                    && primary.facts.as_ref().is_some_and(|pf| {
                        pf.connected_replicas.contains(&n.name)
                            && pf
                                .position
                                .saturating_sub(n.facts.as_ref().map_or(0, |f| f.position))
                                <= p.max_lag_bytes
                    })
            }
        })
        .collect();
    cands.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    // A synchronous archive comes first: every commit waits for it, and for a standby too.
    p.sync_archive
        .then(|| SYNC_ARCHIVE.to_owned())
        .into_iter()
        .chain(cands.into_iter().map(|n| n.name.clone()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn failover_plan(
    v: &ClusterView,
    p: &Policy,
    kind: PlanKind,
    old: &NodeView,
    target: &NodeView,
    lag: u64,
    fault_at: Option<Millis>,
    reasons: Vec<String>,
) -> Plan {
    let epoch = v.epoch + 1;
    let mut steps = vec![Step::BlockEndpoint {
        node: old.name.clone(),
    }];
    if old.stonith {
        steps.push(Step::Stonith {
            node: old.name.clone(),
        });
    }
    steps.push(Step::FenceNode {
        node: old.name.clone(),
        required: !old.health.is_down(),
        mode: if kind == PlanKind::Switchover {
            FenceMode::ReadOnly
        } else {
            FenceMode::Stop
        },
    });
    if kind == PlanKind::Switchover {
        steps.push(Step::WaitCatchUp {
            node: target.name.clone(),
            from: old.name.clone(),
        });
    }
    steps.push(Step::Promote {
        node: target.name.clone(),
    });
    steps.push(Step::MarkNeedsRejoin {
        node: old.name.clone(),
    });
    // The new primary may have inherited the old one's synchronous setting.
    let names = sync_names(v, p, target, Some(&old.name));
    steps.push(Step::SetSyncStandbys {
        node: target.name.clone(),
        names,
    });
    steps.push(Step::RouteEndpoint {
        node: target.name.clone(),
        epoch,
    });
    steps.push(Step::CheckWrite {
        node: target.name.clone(),
    });
    if kind == PlanKind::Switchover && old.controllable {
        steps.push(Step::Rejoin {
            node: old.name.clone(),
            source: target.name.clone(),
        });
    }
    Plan {
        kind,
        epoch,
        old_primary: Some(old.name.clone()),
        target: Some(target.name.clone()),
        steps,
        reasons,
        fault_at,
        lag_bytes: Some(lag),
    }
}

/// A plan for an operator's command, or the reasons it is refused.
pub fn plan_command(
    v: &ClusterView,
    p: &Policy,
    cmd: &Command,
    now: Millis,
) -> Result<Plan, Vec<String>> {
    let node_named = |name: &str| {
        v.node(name).ok_or_else(|| {
            vec![format!(
                "unknown node {name:?}; known nodes: {}",
                v.names().join(", ")
            )]
        })
    };
    let primary = match v.primary.as_deref() {
        Some(pn) => Some(node_named(pn)?),
        None => None,
    };
    match cmd {
        Command::Switchover { to } => {
            let target = node_named(to)?;
            let Some(primary) = primary.filter(|p| p.writable()) else {
                return Err(vec!["switchover needs a healthy writable primary; use `lifeboat failover --to NODE`".into()]);
            };
            if target.name == primary.name {
                return Err(vec![format!("{to} is already the primary")]);
            }
            if target.fenced || target.needs_rejoin {
                return Err(vec![format!(
                    "{to} needs rejoin first (`lifeboat rejoin {to}`)"
                )]);
            }
            if !target.standby_up() || !target.facts.as_ref().is_some_and(|f| f.streaming) {
                return Err(vec![format!(
                    "standby {to} must be up and streaming for a switchover; it is {}",
                    target.health
                )]);
            }
            let reasons = vec![format!(
                "switchover from {} to {to} requested by operator",
                primary.name
            )];
            Ok(failover_plan(
                v,
                p,
                PlanKind::Switchover,
                primary,
                target,
                0,
                Some(now),
                reasons,
            ))
        }
        Command::Failover { to, force } => {
            let target = node_named(to)?;
            let Some(primary) = primary else {
                return choose_first_primary(v, target);
            };
            if target.name == primary.name {
                return Err(vec![format!("{to} is already the primary")]);
            }
            if primary.health.is_up() && !force {
                return Err(vec![format!(
                    "primary {} is healthy: use `lifeboat switchover --to {to}` for a planned change, or add --force",
                    primary.name
                )]);
            }
            let lag = eligibility(v, p, primary, target, *force).map_err(|e| {
                vec![e, "add --force to promote anyway (data written on the old primary since may be lost)".into()]
            })?;
            let mut reasons = vec![format!(
                "failover to {to} requested by operator{}",
                if *force { " (forced)" } else { "" }
            )];
            if let Health::Down { since, reason } = &primary.health {
                reasons.push(format!(
                    "primary {} down since {since}: {reason}",
                    primary.name
                ));
            }
            let fault = match &primary.health {
                Health::Down { since, .. } => *since,
                _ => now,
            };
            Ok(failover_plan(
                v,
                p,
                PlanKind::ManualFailover,
                primary,
                target,
                lag,
                Some(fault),
                reasons,
            ))
        }
        Command::Rejoin { node } => {
            let n = node_named(node)?;
            let Some(primary) = primary.filter(|p| p.writable()) else {
                return Err(vec![
                    "rejoin needs a healthy writable primary to follow".into()
                ]);
            };
            if n.name == primary.name {
                return Err(vec![format!(
                    "{node} is the primary; it cannot rejoin itself"
                )]);
            }
            if !n.controllable {
                return Err(vec![format!(
                    "{node} has no [control] section: Lifeboat cannot stop or rewind it; rewind it by hand and start it as a standby"
                )]);
            }
            Ok(Plan {
                kind: PlanKind::Rejoin,
                epoch: v.epoch,
                old_primary: Some(node.clone()),
                target: Some(primary.name.clone()),
                steps: vec![
                    Step::BlockEndpoint { node: node.clone() },
                    Step::Rejoin {
                        node: node.clone(),
                        source: primary.name.clone(),
                    },
                ],
                reasons: vec![format!(
                    "rejoin {node} as a standby of {} requested by operator",
                    primary.name
                )],
                fault_at: None,
                lag_bytes: None,
            })
        }
    }
}

/// `failover --to` before any primary was recorded: adopt the node if it is writable,
/// otherwise promote it.
fn choose_first_primary(v: &ClusterView, target: &NodeView) -> Result<Plan, Vec<String>> {
    let to = &target.name;
    let epoch = v.epoch + 1;
    let (kind, steps) = if target.writable() {
        (
            PlanKind::Adopt,
            vec![Step::RouteEndpoint {
                node: to.clone(),
                epoch,
            }],
        )
    } else if target.standby_up() {
        let steps = vec![
            Step::Promote { node: to.clone() },
            Step::RouteEndpoint {
                node: to.clone(),
                epoch,
            },
            Step::CheckWrite { node: to.clone() },
        ];
        (PlanKind::ManualFailover, steps)
    } else {
        return Err(vec![format!(
            "{to} is {}: cannot make it the primary",
            target.health
        )]);
    };
    Ok(Plan {
        kind,
        epoch,
        old_primary: None,
        target: Some(to.clone()),
        steps,
        reasons: vec![format!("operator chose {to} as the primary")],
        fault_at: None,
        lag_bytes: None,
    })
}

/// What is at risk now without an incident, each a [`Condition`] the controller raises once
/// it lasts: an automatic failover refused while the primary is down (and why), each standby
/// that could not be promoted automatically if the primary were lost now (and why), and the
/// RPO exposure (what a failover now could lose) above the tier's RPO. `decision` is what
/// [`decide`] said for `v`; `exposure_s` and `rpo_s` are in seconds.
pub fn risks(
    v: &ClusterView,
    p: &Policy,
    decision: &Decision,
    exposure_s: Option<f64>,
    rpo_s: Option<f64>,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let Some(primary) = v.primary.as_deref().and_then(|n| v.node(n)) else {
        return out;
    };
    if v.in_flight.is_some() {
        return out;
    }
    if primary.health.is_down() {
        if let Decision::NoAction { reasons } = decision {
            out.push(Condition {
                name: "failover-refused".into(),
                severity: Severity::Critical,
                sentence: format!(
                    "primary {} is {} and Lifeboat does not fail over automatically: {}",
                    primary.name,
                    primary.health,
                    reasons.join("; ")
                ),
            });
        }
        return out;
    }
    if !primary.health.is_up() {
        return out;
    }
    for n in v
        .nodes
        .iter()
        .filter(|n| n.name != primary.name && n.region_role != RegionRole::Cold)
    {
        if let Err(why) = eligibility(v, p, primary, n, false) {
            out.push(Condition {
                name: format!("standby-ineligible/{}", n.name),
                severity: Severity::Warning,
                sentence: format!(
                    "if {} were lost now, {} could not take over automatically: {why}",
                    primary.name, n.name
                ),
            });
        }
    }
    if let (Some(e), Some(rpo)) = (exposure_s, rpo_s) {
        if e > rpo {
            out.push(Condition {
                name: "rpo-exposure".into(),
                severity: Severity::Warning,
                sentence: format!(
                    "a failover now could lose {e:.1} s of writes, more than the tier's RPO of {rpo:.1} s: the best standby is that far behind"
                ),
            });
        }
    }
    out
}
