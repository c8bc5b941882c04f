//! The operator commands: thin clients of the running daemon's HTTP API.

use crate::cli::ApiArgs;
use lifeboat_core::time::format_bytes;
use lifeboat_exec::{Reply, Status};
use lifeboat_store::Incident;
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub struct Api {
    base: String,
    token: Option<String>,
    pub json: bool,
    http: reqwest::Client,
}

impl Api {
    /// The address comes from `--api`, else the config's `controller.api-listen`; the token
    /// from `$LIFEBOAT_API_TOKEN`, else the config's token file or variable.
    pub fn new(config: &Path, args: &ApiArgs) -> Api {
        let cfg = lifeboat_config::load(config).ok().map(|l| l.config);
        let base = match (&args.api, &cfg) {
            (Some(a), _) => a.trim_end_matches('/').to_owned(),
            (None, Some(c)) => format!("http://{}", c.controller.api_listen),
            (None, None) => "http://127.0.0.1:7400".to_owned(),
        };
        let from_config = cfg.as_ref().and_then(|c| {
            match (&c.controller.api_token_file, &c.controller.api_token_env) {
                (Some(p), _) => std::fs::read_to_string(p).ok().map(|t| t.trim().to_owned()),
                (None, Some(v)) => std::env::var(v).ok(),
                _ => None,
            }
        });
        let token = std::env::var("LIFEBOAT_API_TOKEN").ok().or(from_config);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(330))
            .build()
            .unwrap_or_default();
        Api {
            base,
            token,
            json: args.json,
            http,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        decode(self.send_get(path).await?).await
    }

    async fn send_get(&self, path: &str) -> Result<reqwest::Response, String> {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        decode(req.send().await.map_err(|e| self.unreachable(e))?).await
    }

    /// A text answer (Markdown, SVG), or the API's error message.
    pub async fn get_text(&self, path: &str) -> Result<String, String> {
        let r = self.send_get(path).await?;
        if r.status().is_success() {
            return r
                .text()
                .await
                .map_err(|e| format!("unreadable answer: {e}"));
        }
        decode(r).await.map(|v| v.to_string())
    }

    fn unreachable(&self, e: reqwest::Error) -> String {
        format!("cannot reach the Lifeboat API at {}: {e}; is `lifeboat run` running? (--api sets the address)", self.base)
    }
}

/// The body of a successful answer, or the API's own error message.
async fn decode(r: reqwest::Response) -> Result<Value, String> {
    let code = r.status();
    let body: Value = r
        .json()
        .await
        .map_err(|e| format!("unreadable answer from the API ({code}): {e}"))?;
    if code.is_success() {
        return Ok(body);
    }
    match (body.get("error"), body.get("message")) {
        (Some(Value::String(e)), _) => Err(format!("{e} ({code})")),
        (_, Some(Value::String(m))) => Err(m.clone()),
        _ => Err(format!("the API answered {code}: {body}")),
    }
}

pub fn fail(e: String) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

pub async fn status(api: &Api) -> ExitCode {
    let v = match api.get("/v1/status").await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_value::<Vec<Status>>(v["services"].clone()) {
        Ok(all) => {
            let text: Vec<String> = all.iter().map(render_status).collect();
            print!("{}", text.join("\n"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("unexpected status format: {e}")),
    }
}

pub fn render_status(s: &Status) -> String {
    let mut o = String::new();
    let target = s.endpoint.routes_to.as_deref().unwrap_or("nobody (held)");
    o.push_str(&format!(
        "service {} ({}, tier {}), replication {}, failover {}{}\n",
        s.service,
        s.kind,
        s.tier,
        s.replication,
        s.mode,
        if s.paused { ", PAUSED" } else { "" }
    ));
    o.push_str(&format!(
        "primary {}, epoch {}; endpoint {} -> {target}, {} connection(s)\n",
        s.primary.as_deref().unwrap_or("none"),
        s.epoch,
        s.endpoint.listen,
        s.endpoint.active_connections
    ));
    if let (Some(b), Some(sec)) = (s.rpo_exposure_bytes, s.rpo_exposure_seconds) {
        let target = s
            .rpo_target_seconds
            .map(|t| format!(" (target {t}s)"))
            .unwrap_or_default();
        o.push_str(&format!(
            "rpo exposure {} / {sec:.3}s{target}\n",
            format_bytes(b)
        ));
    }
    o.push_str(&format!(
        "\n{:<14} {:<10} {:<13} {:<9} {:<12} {:<12} {:<10}\n",
        "NODE", "REGION", "ROLE", "HEALTH", "POSITION", "LAG", "SYNC"
    ));
    for n in &s.nodes {
        let lag = match (n.lag_bytes, n.lag_seconds) {
            (Some(b), Some(sec)) => format!("{} {sec:.2}s", format_bytes(b)),
            (Some(b), None) => format_bytes(b),
            _ => "-".into(),
        };
        o.push_str(&format!(
            "{:<14} {:<10} {:<13} {:<9} {:<12} {:<12} {:<10}\n",
            n.name,
            n.region,
            n.role,
            n.health,
            n.position.as_deref().unwrap_or("-"),
            lag,
            n.sync_state.as_deref().unwrap_or("-")
        ));
    }
    o.push_str("\nwhy:\n");
    for r in &s.decision {
        o.push_str(&format!("  - {r}\n"));
    }
    for n in &s.fencing_in_background {
        o.push_str(&format!(
            "fencing {n} in the background: cut off at the endpoint, not reached yet\n"
        ));
    }
    if let Some(p) = &s.in_flight {
        o.push_str(&format!("in flight:\n{p}"));
    }
    o
}

async fn command(api: &Api, path: &str, body: Value) -> ExitCode {
    match api.post(path, body).await {
        Ok(v) if api.json => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Ok(v) => match serde_json::from_value::<Reply>(v) {
            Ok(r) => {
                println!("{}", r.message.trim_end());
                if let Some(i) = r.incident {
                    println!("incident {i}: lifeboat incident show {i}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("unexpected answer: {e}")),
        },
        Err(e) => fail(e),
    }
}

pub async fn switchover(api: &Api, to: &str) -> ExitCode {
    command(api, "/v1/switchover", json!({ "to": to })).await
}

pub async fn failover(api: &Api, to: &str, force: bool) -> ExitCode {
    command(api, "/v1/failover", json!({ "to": to, "force": force })).await
}

pub async fn rejoin(api: &Api, node: &str) -> ExitCode {
    command(api, "/v1/rejoin", json!({ "node": node })).await
}

/// `pause` or `resume` of `service` (needed when there are several).
pub async fn simple(api: &Api, what: &str, service: Option<&str>) -> ExitCode {
    command(api, &format!("/v1/{what}"), json!({ "service": service })).await
}

pub async fn incidents(api: &Api, limit: u32) -> ExitCode {
    let v = match api.get(&format!("/v1/incidents?limit={limit}")).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let list: Vec<Incident> = match serde_json::from_value(v) {
        Ok(l) => l,
        Err(e) => return fail(format!("unexpected answer: {e}")),
    };
    println!(
        "{:<5} {:<10} {:<16} {:<10} {:<14} {:<24} {:<10} {:<10}",
        "ID", "SERVICE", "KIND", "PLAN", "STATE", "OLD -> NEW", "DETECT", "RTO"
    );
    for i in &list {
        let ms = |v: Option<u64>| {
            v.map(|m| format!("{:.3}s", m as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<5} {:<10} {:<16} {:<10} {:<14} {:<24} {:<10} {:<10}",
            i.id,
            i.service,
            i.kind,
            i.status.as_str(),
            i.state.as_str(),
            format!(
                "{} -> {}",
                i.old_primary.as_deref().unwrap_or("-"),
                i.target.as_deref().unwrap_or("-")
            ),
            ms(i.figures.detect_ms),
            ms(i.figures.first_write_ms)
        );
    }
    ExitCode::SUCCESS
}

pub async fn incident(api: &Api, id: i64) -> ExitCode {
    let v = match api.get(&format!("/v1/incidents/{id}")).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_value::<Incident>(v) {
        Ok(i) => {
            print!("{}", render_incident(&i));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("unexpected answer: {e}")),
    }
}

/// An incident as a person reads it: what happened, step by step, and what it cost.
pub fn render_incident(i: &Incident) -> String {
    let mut o = format!(
        "incident {}: {} {} -> {}, epoch {}, {}\n",
        i.id,
        i.kind,
        i.old_primary.as_deref().unwrap_or("-"),
        i.target.as_deref().unwrap_or("-"),
        i.epoch,
        i.status.as_str()
    );
    o.push_str(&format!("status: {}\n", i.state));
    for u in &i.updates {
        o.push_str(&format!(
            "  {}  {:<13} {} ({})\n",
            lifeboat_core::Millis(u.at_ms),
            u.state.as_str(),
            u.message,
            u.actor
        ));
    }
    let origin = i.figures.fault_at_ms.unwrap_or(i.opened_ms);
    o.push_str("timeline (ms after the fault, or after the decision when there was none):\n");
    for t in &i.timeline {
        let start = t.at_ms as i64 - origin as i64;
        let took = t
            .ended_ms
            .map(|e| format!("{:>5} ms", e.saturating_sub(t.at_ms)))
            .unwrap_or_else(|| "    ?   ".into());
        o.push_str(&format!(
            "  +{start:>6}  {took}  {:<18} {:<14} {:<12} {}\n",
            t.step,
            t.node,
            t.outcome.as_str(),
            t.detail
        ));
    }
    let f = &i.figures;
    let s = |v: Option<u64>| {
        v.map(|m| format!("{:.3} s", m as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    o.push_str(&format!("time to detect:        {}\n", s(f.detect_ms)));
    o.push_str(&format!("time to promote:       {}\n", s(f.promote_ms)));
    o.push_str(&format!(
        "time to first write:   {} (RTO target {})\n",
        s(f.first_write_ms),
        s(f.rto_target_ms)
    ));
    o.push_str(&format!(
        "lag at the fault:      {} (RPO target {})\n",
        f.lag_bytes_at_fault
            .map(format_bytes)
            .unwrap_or_else(|| "-".into()),
        s(f.rpo_target_ms)
    ));
    o
}
