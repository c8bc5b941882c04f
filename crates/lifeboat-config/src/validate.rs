//! Semantic checks over a parsed config. Every problem is collected; nothing stops early.

use crate::report::Report;
use crate::types::{CheckKind, Config, NodeConfig};
use lifeboat_core::model::{FailoverMode, RegionRole, ReplicationMode};
use std::collections::BTreeSet;
use std::time::Duration;

pub(crate) fn validate(c: &Config, r: &mut Report) {
    service(c, r);
    controller(c, r);
    probe(c, r);
    failover(c, r);
    regions(c, r);
    if let Some(b) = &c.backup {
        let nodes: Vec<&str> = c
            .regions
            .values()
            .flat_map(|g| g.nodes.iter().map(|n| n.name.as_str()))
            .collect();
        b.validate("backup", &nodes, r);
    }
}

fn service(c: &Config, r: &mut Report) {
    if c.service.name.trim().is_empty() {
        r.error("service.name", "must not be empty");
    }
    for (name, t) in &c.tiers {
        if t.rto.get().is_zero() {
            r.error(format!("tiers.{name}.rto"), "must be greater than 0");
        }
        if t.rpo.get().is_zero() && c.failover.replication == ReplicationMode::Async {
            r.warn(
                format!("tiers.{name}.rpo"),
                "an RPO of 0 cannot be met with async replication; set failover.replication = \"sync\"",
            );
        }
    }
    if !c.tiers.contains_key(&c.service.tier) {
        let known: Vec<&str> = c.tiers.keys().map(String::as_str).collect();
        let msg = if known.is_empty() {
            format!(
                "tier {:?} is not defined; add [tiers.{}] with rto and rpo",
                c.service.tier, c.service.tier
            )
        } else {
            format!(
                "tier {:?} is not defined; known tiers: {}",
                c.service.tier,
                known.join(", ")
            )
        };
        r.error("service.tier", msg);
    }
}

fn controller(c: &Config, r: &mut Report) {
    let ctl = &c.controller;
    match (&ctl.api_token_file, &ctl.api_token_env) {
        (Some(_), Some(_)) => r.error(
            "controller.api-token-env",
            "set either api-token-file or api-token-env, not both",
        ),
        (Some(f), None) if !f.is_file() => r.error(
            "controller.api-token-file",
            format!("file {} does not exist", f.display()),
        ),
        (None, None) => r.warn(
            "controller",
            "no api-token-file or api-token-env: the API will refuse every changing request",
        ),
        _ => {}
    }
    if c.endpoint.listen.port() == 0 {
        r.error(
            "endpoint.listen",
            "needs a fixed port for clients to connect to",
        );
    }
    if ctl.api_listen == c.endpoint.listen {
        r.error("controller.api-listen", "must differ from endpoint.listen");
    }
    if c.endpoint.hold_timeout.get() > Duration::from_secs(60) {
        r.warn(
            "endpoint.hold-timeout",
            "clients waiting more than 60 s for a primary will likely time out themselves",
        );
    }
    let up = c.endpoint.upstream_timeout.get();
    if up < Duration::from_secs(1) {
        r.error(
            "endpoint.upstream-timeout",
            "must be at least 1s: below that a busy primary's connections would be cut",
        );
    }
}

fn probe(c: &Config, r: &mut Report) {
    let p = &c.probe;
    if p.interval.get() < Duration::from_millis(10) {
        r.error("probe.interval", "must be at least 10ms");
    }
    if p.timeout.get().is_zero() {
        r.error("probe.timeout", "must be greater than 0");
    }
    if p.failure_threshold == 0 {
        r.error("probe.failure-threshold", "must be at least 1");
    }
    if p.success_threshold == 0 {
        r.error("probe.success-threshold", "must be at least 1");
    }
    if p.failure_threshold == 1 {
        r.warn(
            "probe.failure-threshold",
            "1 means a single failed probe starts a failover",
        );
    }
    if p.timeout.get() < Duration::from_millis(300) {
        r.warn(
            "probe.timeout",
            "below 300ms a brief stall of the primary counts as a failure",
        );
    }
}

fn failover(c: &Config, r: &mut Report) {
    let f = &c.failover;
    for (key, d) in [
        ("promote-timeout", f.promote_timeout),
        ("fence-timeout", f.fence_timeout),
        ("fence-retry-for", f.fence_retry_for),
        ("catch-up-timeout", f.catch_up_timeout),
    ] {
        if d.get().is_zero() {
            r.error(format!("failover.{key}"), "must be greater than 0");
        }
    }
    if f.mode == FailoverMode::Automatic && f.replication == ReplicationMode::Async {
        r.warn(
            "failover.replication",
            "async replication can lose the last acknowledged writes in an automatic failover",
        );
    }
    if f.max_lag.0 > 1 << 30 {
        r.warn(
            "failover.max-lag",
            "more than 1 GiB of lag may be promoted: a large data loss",
        );
    }
}

fn regions(c: &Config, r: &mut Report) {
    if c.regions.is_empty() {
        r.error(
            "regions",
            "define at least two regions, one with role = \"primary\"",
        );
        return;
    }
    let primaries: Vec<&str> = c
        .regions
        .iter()
        .filter(|(_, rc)| rc.role == RegionRole::Primary)
        .map(|(n, _)| n.as_str())
        .collect();
    match primaries.len() {
        0 => r.error("regions", "no region has role = \"primary\""),
        1 => {}
        _ => r.error(
            "regions",
            format!(
                "only one region may be primary, found: {}",
                primaries.join(", ")
            ),
        ),
    }
    let mut names = BTreeSet::new();
    let mut standbys = 0;
    for (rname, rc) in &c.regions {
        let rpath = format!("regions.{rname}");
        if rc.nodes.is_empty() {
            r.error(format!("{rpath}.nodes"), "a region needs at least one node");
        }
        if rc.role == RegionRole::Primary && rc.nodes.len() > 1 {
            r.warn(
                format!("{rpath}.nodes"),
                "only the first node of the primary region starts as primary",
            );
        }
        if rc.role != RegionRole::Primary {
            standbys += rc.nodes.len();
        }
        for (i, n) in rc.nodes.iter().enumerate() {
            let npath = format!("{rpath}.nodes[{i}]");
            if !names.insert(n.name.as_str()) {
                r.error(
                    format!("{npath}.name"),
                    format!("node name {:?} is used twice", n.name),
                );
            }
            node(n, &npath, r);
        }
        for (i, ch) in rc.checks.iter().enumerate() {
            let cpath = format!("{rpath}.checks[{i}]");
            match ch.kind {
                CheckKind::Tcp if ch.address.is_none() => r.error(
                    format!("{cpath}.address"),
                    "a tcp check needs address = \"host:port\"",
                ),
                CheckKind::Http => match &ch.url {
                    None => r.error(
                        format!("{cpath}.url"),
                        "an http check needs url = \"http://…\"",
                    ),
                    Some(u) if !u.starts_with("http://") => r.error(
                        format!("{cpath}.url"),
                        "must start with http:// (https checks are not supported yet)",
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if standbys == 0 {
        r.error(
            "regions",
            "no standby node: add a region with role = \"standby\" to fail over to",
        );
    }
    if c.failover.replication.is_sync()
        && !c
            .regions
            .values()
            .any(|rc| rc.role == RegionRole::Standby && !rc.nodes.is_empty())
    {
        r.error(
            "failover.replication",
            "sync modes need a node in a region with role = \"standby\"",
        );
    }
}

fn node(n: &NodeConfig, path: &str, r: &mut Report) {
    if n.name.trim().is_empty()
        || n.name
            .contains(|c: char| c.is_whitespace() || c == ',' || c == '"')
    {
        r.error(
            format!("{path}.name"),
            "must be non-empty without spaces, commas or quotes",
        );
    }
    if n.host.trim().is_empty() {
        r.error(format!("{path}.host"), "must not be empty");
    }
    if n.port == 0 {
        r.error(format!("{path}.port"), "must be between 1 and 65535");
    }
    check_password_keys(r, path, &n.password_file, &n.password_env, false);
    if let Some(cmd) = &n.fence_command {
        if cmd.is_empty() || cmd[0].trim().is_empty() {
            r.error(
                format!("{path}.fence-command"),
                "must name a program: [\"/usr/local/bin/stonith\", \"node-1\"]",
            );
        }
    }
    if let Some(ctl) = &n.control {
        if let Some(b) = &ctl.bin_dir {
            if !b.join("pg_ctl").is_file() {
                r.error(
                    format!("{path}.control.bin-dir"),
                    format!("{} has no pg_ctl", b.display()),
                );
            }
        }
    }
}

/// `password-file` / `password-env` under `path`: not both, an existing file, and one of them
/// when `required`.
pub(crate) fn check_password_keys(
    r: &mut Report,
    path: &str,
    file: &Option<std::path::PathBuf>,
    env: &Option<String>,
    required: bool,
) {
    match (file, env) {
        (None, None) if required => r.error(path.to_string(), "set password-file or password-env"),
        (Some(_), Some(_)) => r.error(
            format!("{path}.password-env"),
            "set either password-file or password-env, not both",
        ),
        (Some(f), None) if !f.is_file() => r.error(
            format!("{path}.password-file"),
            format!("file {} does not exist", f.display()),
        ),
        _ => {}
    }
}
