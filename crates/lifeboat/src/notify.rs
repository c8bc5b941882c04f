//! `lifeboat incident update|postmortem` and `lifeboat notify list|test`, over the API.

use crate::client::{fail, Api};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;

pub async fn update(
    api: &Api,
    id: i64,
    state: &str,
    message: &str,
    by: Option<String>,
) -> ExitCode {
    let by = by.or_else(|| std::env::var("USER").ok());
    let body = json!({ "state": state, "message": message, "by": by });
    match api.post(&format!("/v1/incidents/{id}/updates"), body).await {
        Ok(v) if api.json => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!(
                "incident {id} is {}: {message}",
                v.get("state").and_then(Value::as_str).unwrap_or(state)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub async fn postmortem(api: &Api, id: i64, out: Option<&Path>) -> ExitCode {
    let md = match api
        .get_text(&format!("/v1/incidents/{id}/postmortem"))
        .await
    {
        Ok(m) if m.starts_with('{') => return fail(m),
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    match out {
        None => {
            print!("{md}");
            ExitCode::SUCCESS
        }
        Some(p) => match std::fs::write(p, md) {
            Ok(()) => {
                println!(
                    "wrote the post-mortem draft of incident {id} to {}",
                    p.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot write {}: {e}", p.display())),
        },
    }
}

pub async fn list(api: &Api) -> ExitCode {
    let v = match api.get("/v1/notify").await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let list = v["notifiers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!(
            "no notifiers: add [notify.NAME] sections (kind = slack, pagerduty, webhook or email)"
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<14} {:<10} {:<9} {:<8} LAST ERROR",
        "NAME", "KIND", "MIN", "BEHIND"
    );
    for n in &list {
        println!(
            "{:<14} {:<10} {:<9} {:<8} {}",
            n["name"].as_str().unwrap_or("?"),
            n["kind"].as_str().unwrap_or("?"),
            n["min_severity"].as_str().unwrap_or("?"),
            n["behind"],
            match (n["last_error"].as_str(), n["attempts"].as_u64()) {
                (Some(e), Some(a)) => format!("{e} (attempt {a}, retrying)"),
                _ => "-".into(),
            }
        );
        for d in n["recent"].as_array().into_iter().flatten().take(5) {
            if d["state"] != "sent" {
                println!(
                    "    notice {} {} after {} attempt(s): {}",
                    d["notice"],
                    d["state"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["error"].as_str().unwrap_or("")
                );
            }
        }
    }
    ExitCode::SUCCESS
}

pub async fn test(api: &Api, name: &str) -> ExitCode {
    let v = match api
        .post(&format!("/v1/notify/{name}/test"), json!({}))
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if api.json {
        println!("{v:#}");
    }
    if v.get("pending").is_some() {
        return fail(
            v["message"]
                .as_str()
                .unwrap_or("not delivered yet")
                .to_owned(),
        );
    }
    let d = &v["delivery"];
    match d["state"].as_str() {
        Some("sent") => {
            if !api.json {
                println!(
                    "test message delivered to {name} (attempt {})",
                    d["attempts"]
                );
            }
            ExitCode::SUCCESS
        }
        _ => fail(format!(
            "{name} did not take the test message: {} ({})",
            d["error"].as_str().unwrap_or("?"),
            d["state"].as_str().unwrap_or("?")
        )),
    }
}
