//! Semantic checks over a parsed config. Every problem is collected; nothing stops early.

use crate::report::Report;
use crate::types::{CheckKind, Config, NodeConfig, ServiceConfig, ServiceKind};
use lifeboat_core::model::{FailoverMode, RegionRole, ReplicationMode};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) fn validate(c: &Config, r: &mut Report) {
    controller(c, r);
    tiers(c, r);
    crate::drill::validate(c, r);
    crate::notify::validate(c, r);
    if c.services.is_empty() {
        r.error(
            "services",
            "define at least one service: [services.NAME] with kind = \"postgres\" or \"redis\"",
        );
    }
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut listens: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    for (name, s) in &c.services {
        let path = format!("services.{name}");
        service(c, name, s, &path, r);
        for (region, _, n) in s.nodes() {
            if let Some(other) = owner.insert(n.name.as_str(), name.as_str()) {
                if other != name.as_str() {
                    r.error(
                        format!("{path}.regions.{region}.nodes"),
                        format!(
                            "node {:?} is also in service {other}; a server belongs to one service: rename one of them or remove it from one service",
                            n.name
                        ),
                    );
                }
            }
        }
        if let Some(other) = listens.insert(s.endpoint.listen, name.as_str()) {
            r.error(
                format!("{path}.endpoint.listen"),
                format!(
                    "{} is also the endpoint of service {other}; give each service its own address",
                    s.endpoint.listen
                ),
            );
        }
        if s.endpoint.listen == c.controller.api_listen {
            r.error(
                format!("{path}.endpoint.listen"),
                "must differ from controller.api-listen",
            );
        }
    }
    if let Some(b) = &c.backup {
        let nodes: Vec<&str> = c.postgres_nodes().map(|n| n.name.as_str()).collect();
        b.validate("backup", &nodes, r);
        let postgres: Vec<&str> = c
            .services
            .iter()
            .filter(|(_, s)| s.kind == ServiceKind::Postgres)
            .map(|(n, _)| n.as_str())
            .collect();
        for (name, src) in &b.sources {
            if src.follow_primary && postgres.len() != 1 {
                r.error(
                    format!("backup.sources.{name}.follow-primary"),
                    format!(
                        "follows the primary of the one PostgreSQL service, and there are {} ({}); name a node with postgres = \"NODE\"",
                        postgres.len(),
                        postgres.join(", ")
                    ),
                );
            }
        }
    }
}

fn tiers(c: &Config, r: &mut Report) {
    for (name, t) in &c.tiers {
        if t.rto.get().is_zero() {
            r.error(format!("tiers.{name}.rto"), "must be greater than 0");
        }
    }
}

fn service(c: &Config, name: &str, s: &ServiceConfig, path: &str, r: &mut Report) {
    if name.trim().is_empty()
        || name.contains(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
    {
        r.error(
            path.to_string(),
            "a service name may only hold letters, digits, - and _",
        );
    }
    match c.tiers.get(&s.tier) {
        Some(t) if t.rpo.get().is_zero() && s.failover.replication == ReplicationMode::Async => {
            r.warn(
                format!("{path}.tier"),
                format!("tier {:?} has an RPO of 0, which async replication cannot meet; set failover.replication = \"sync\"", s.tier),
            )
        }
        Some(_) => {}
        None => {
            let known: Vec<&str> = c.tiers.keys().map(String::as_str).collect();
            let msg = if known.is_empty() {
                format!(
                    "tier {:?} is not defined; add [tiers.{}] with rto and rpo",
                    s.tier, s.tier
                )
            } else {
                format!(
                    "tier {:?} is not defined; known tiers: {}",
                    s.tier,
                    known.join(", ")
                )
            };
            r.error(format!("{path}.tier"), msg);
        }
    }
    endpoint(s, path, r);
    probe(s, path, r);
    failover(s, path, r);
    regions(s, path, r);
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
}

fn endpoint(s: &ServiceConfig, path: &str, r: &mut Report) {
    let e = &s.endpoint;
    if e.listen.port() == 0 {
        r.error(
            format!("{path}.endpoint.listen"),
            "needs a fixed port for clients to connect to",
        );
    }
    if e.hold_timeout.get() > Duration::from_secs(60) {
        r.warn(
            format!("{path}.endpoint.hold-timeout"),
            "clients waiting more than 60 s for a primary will likely time out themselves",
        );
    }
    if e.upstream_timeout.get() < Duration::from_secs(1) {
        r.error(
            format!("{path}.endpoint.upstream-timeout"),
            "must be at least 1s: below that a busy primary's connections would be cut",
        );
    }
}

fn probe(s: &ServiceConfig, path: &str, r: &mut Report) {
    let p = &s.probe;
    let path = format!("{path}.probe");
    if p.interval.get() < Duration::from_millis(10) {
        r.error(format!("{path}.interval"), "must be at least 10ms");
    }
    if p.timeout.get().is_zero() {
        r.error(format!("{path}.timeout"), "must be greater than 0");
    }
    if p.failure_threshold == 0 {
        r.error(format!("{path}.failure-threshold"), "must be at least 1");
    }
    if p.success_threshold == 0 {
        r.error(format!("{path}.success-threshold"), "must be at least 1");
    }
    if p.failure_threshold == 1 {
        r.warn(
            format!("{path}.failure-threshold"),
            "1 means a single failed probe starts a failover",
        );
    }
    if p.timeout.get() < Duration::from_millis(300) {
        r.warn(
            format!("{path}.timeout"),
            "below 300ms a brief stall of the primary counts as a failure",
        );
    }
}

fn failover(s: &ServiceConfig, path: &str, r: &mut Report) {
    let f = &s.failover;
    let path = format!("{path}.failover");
    for (key, d) in [
        ("promote-timeout", f.promote_timeout),
        ("fence-timeout", f.fence_timeout),
        ("fence-retry-for", f.fence_retry_for),
        ("catch-up-timeout", f.catch_up_timeout),
    ] {
        if d.get().is_zero() {
            r.error(format!("{path}.{key}"), "must be greater than 0");
        }
    }
    if f.mode == FailoverMode::Automatic && f.replication == ReplicationMode::Async {
        r.warn(
            format!("{path}.replication"),
            "async replication can lose the last acknowledged writes in an automatic failover",
        );
    }
    if s.kind == ServiceKind::Redis && f.replication == ReplicationMode::SyncStrict {
        r.error(
            format!("{path}.replication"),
            "sync-strict is for PostgreSQL; for Redis use \"sync\" (promote only a replica holding every write a WAIT confirmed, and refuse writes without a replica via min-replicas-to-write)",
        );
    }
    if f.max_lag.0 > 1 << 30 {
        r.warn(
            format!("{path}.max-lag"),
            "more than 1 GiB of lag may be promoted: a large data loss",
        );
    }
}

fn regions(s: &ServiceConfig, path: &str, r: &mut Report) {
    let rpath0 = format!("{path}.regions");
    if s.regions.is_empty() {
        r.error(
            rpath0,
            "define at least two regions, one with role = \"primary\"",
        );
        return;
    }
    let primaries: Vec<&str> = s
        .regions
        .iter()
        .filter(|(_, rc)| rc.role == RegionRole::Primary)
        .map(|(n, _)| n.as_str())
        .collect();
    match primaries.len() {
        0 => r.error(rpath0.clone(), "no region has role = \"primary\""),
        1 => {}
        _ => r.error(
            rpath0.clone(),
            format!(
                "only one region may be primary, found: {}",
                primaries.join(", ")
            ),
        ),
    }
    let mut names = BTreeSet::new();
    let mut standbys = 0;
    for (rname, rc) in &s.regions {
        let rpath = format!("{rpath0}.{rname}");
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
            node(s.kind, n, &npath, r);
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
            rpath0,
            "no standby node: add a region with role = \"standby\" to fail over to",
        );
    }
    if s.failover.replication.is_sync()
        && !s
            .regions
            .values()
            .any(|rc| rc.role == RegionRole::Standby && !rc.nodes.is_empty())
    {
        r.error(
            format!("{path}.failover.replication"),
            "sync modes need a node in a region with role = \"standby\"",
        );
    }
}

fn node(kind: ServiceKind, n: &NodeConfig, path: &str, r: &mut Report) {
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
    if kind == ServiceKind::Redis {
        for (key, set) in [
            ("dbname", n.dbname.is_some()),
            ("control", n.control.is_some()),
        ] {
            if set {
                r.error(
                    format!("{path}.{key}"),
                    "is for PostgreSQL nodes; a Redis node has host, port, user (an ACL user), password-file or password-env and fence-command",
                );
            }
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
