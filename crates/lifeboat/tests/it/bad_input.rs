//! Bad input: broken config, unreachable nodes, missing or wrong tokens, malformed requests.

use crate::{stderr, stdout, Daemon, BIN};
use anyhow::Result;
use lifeboat_testkit::{free_port, TestDir, TwoRegions};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[test]
fn an_invalid_config_exits_2_lists_every_error_and_starts_nothing() -> Result<()> {
    let dir = TestDir::new("badcfg")?;
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        "[services.x]\nkind = \"postgres\"\ntier = \"gold\"\n[controller]\nstate-dir = \"state\"\n[services.x.endpoint]\nlisten = \"127.0.0.1:1\"\n\
         [services.x.probe]\nfailure-threshold = 0\n[services.x.regions.a]\nrole = \"primary\"\nnodes = [{ name = \"a1\", host = \"127.0.0.1\", port = 70000 }]\n",
    )?;
    let out = Command::new(BIN).arg("run").arg("-c").arg(&path).output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("error: services.x.tier (line 3): tier \"gold\" is not defined"),
        "{err}"
    );
    assert!(
        err.contains("error: services.x.probe.failure-threshold (line 9): must be at least 1"),
        "{err}"
    );
    assert!(err.contains("services.x.regions.a.nodes[0].port"), "{err}");
    assert!(
        !dir.path().join("state").exists(),
        "nothing may start on an invalid config"
    );

    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out)
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        err.lines().filter(|l| l.starts_with("error: ")).count()
    );
    Ok(())
}

#[test]
fn commands_without_a_daemon_say_what_to_do() -> Result<()> {
    let api = format!("http://127.0.0.1:{}", free_port()?);
    let out = Command::new(BIN).args(["status", "--api", &api]).output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("cannot reach the Lifeboat API at {api}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is `lifeboat run` running?"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn the_demo_without_postgresql_says_how_to_install_it() -> Result<()> {
    let out = Command::new(BIN)
        .arg("demo")
        .env("LIFEBOAT_PG_BIN_DIR", "/nonexistent")
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("apt-get install -y postgresql"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_give_a_clear_status_and_no_failover() -> Result<()> {
    let dir = TestDir::new("unreachable")?;
    let (path, api) = config_without_servers(&dir)?;
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env("LIFEBOAT_TEST_TOKEN", "t0ken")
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{api}");
    let mut s = serde_json::Value::Null;
    for _ in 0..200 {
        if let Ok(v) = crate::get(&format!("{base}/v1/status?service=x")).await {
            if v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().all(|n| n["health"] == "down"))
            {
                s = v;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = child.wait()?;
    assert!(
        status.success(),
        "SIGTERM must end the daemon cleanly: {status}"
    );
    assert!(s.is_object(), "the nodes never showed as down");
    let detail = s["nodes"][0]["health_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("cannot connect"),
        "the status must say why: {s:#}"
    );
    assert!(
        s["primary"].is_null() && s["endpoint"]["routes_to"].is_null(),
        "{s:#}"
    );
    assert_eq!(
        s["epoch"], 0,
        "nothing may be promoted while every node is unreachable"
    );
    assert!(
        !s["decision"].as_array().unwrap().is_empty(),
        "the status must give a reason"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_tokens_and_malformed_requests() -> Result<()> {
    let regions = TwoRegions::start("api", "").await?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", d.api);

    let r = http.post(url("/v1/pause")).send().await?;
    assert_eq!(r.status(), 401);
    let r = http
        .post(url("/v1/pause"))
        .bearer_auth("guess")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await?["error"],
        "wrong bearer token"
    );
    assert_eq!(
        d.status().await?["paused"],
        false,
        "a refused request must change nothing"
    );

    let r = http
        .post(url("/v1/switchover"))
        .bearer_auth(&regions.token)
        .header("content-type", "application/json")
        .body("{\"to\": ")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(r.json::<serde_json::Value>().await?["error"]
        .as_str()
        .unwrap()
        .contains("Failed to parse the request body as JSON"));
    let r = http
        .post(url("/v1/switchover"))
        .bearer_auth(&regions.token)
        .json(&json!({"to": "eu-west-1", "colour": 1}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = http
        .post(url("/v1/switchover"))
        .bearer_auth(&regions.token)
        .json(&json!({"to": "mars-1"}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await?["error"],
        "unknown node \"mars-1\"; known nodes: eu-west-1, us-east-1"
    );
    let r = http.get(url("/v1/incidents/abc")).send().await?;
    assert_eq!(r.status(), 400);
    let r = http.get(url("/v1/incidents/42")).send().await?;
    assert_eq!(r.status(), 404);

    let out = d.cli(&["switchover", "--to", "mars-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("known nodes: eu-west-1, us-east-1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.status().await?["primary"], "us-east-1");

    let wanted = [
        "lifeboat_node_up{service=\"orders\",node=\"us-east-1\"} 1",
        "lifeboat_replication_lag_bytes{service=\"orders\",node=\"eu-west-1\"}",
        "lifeboat_rpo_exposure_bytes{service=\"orders\"}",
        "lifeboat_controller_epoch{service=\"orders\"} 1",
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http.get(url("/metrics")).send().await?.text().await?;
        if wanted.iter().all(|m| metrics.contains(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in wanted {
        assert!(metrics.contains(m), "{m} missing in\n{metrics}");
    }
    assert_eq!(http.get(url("/healthz")).send().await?.status(), 200);
    // Every endpoint the index lists is described in the OpenAPI document, and no other.
    let index = http
        .get(url("/v1"))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let doc = http
        .get(url("/v1/openapi.json"))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let mut listed: Vec<String> = index["endpoints"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.split('?').next().unwrap().to_lowercase())
        .collect();
    let mut described: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    listed.sort();
    described.sort();
    assert_eq!(listed, described);
    let st = d.cli(&["status"]);
    assert!(st.status.success());
    assert!(
        stdout(&st).contains("endpoint 127.0.0.1:"),
        "{}",
        stdout(&st)
    );
    Ok(())
}

/// A config whose nodes are never reached (nothing listens on their ports), its API token in
/// `LIFEBOAT_TEST_TOKEN`; with the API's port.
fn config_without_servers(dir: &TestDir) -> Result<(std::path::PathBuf, u16)> {
    let (api, ep, a, b) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        format!(
            "[services.x]\nkind = \"postgres\"\ntier = \"t\"\n[tiers.t]\nrto = \"5s\"\nrpo = \"1s\"\n[controller]\napi-listen = \"127.0.0.1:{api}\"\n\
             state-dir = \"state\"\napi-token-env = \"LIFEBOAT_TEST_TOKEN\"\n[services.x.endpoint]\nlisten = \"127.0.0.1:{ep}\"\n\
             [services.x.regions.one]\nrole = \"primary\"\nnodes = [{{ name = \"one-1\", host = \"127.0.0.1\", port = {a} }}]\n\
             [services.x.regions.two]\nrole = \"standby\"\nnodes = [{{ name = \"two-1\", host = \"127.0.0.1\", port = {b} }}]\n"
        ),
    )?;
    Ok((path, api))
}

/// A store that cannot be read stops `lifeboat run` before anything starts, with an error that
/// names the file and how to recover, and the file is left exactly as it was: the daemon never
/// starts blind, with epoch 0 and no fences.
#[test]
fn a_damaged_store_stops_the_daemon_and_is_left_as_it_was() -> Result<()> {
    let dir = TestDir::new("damaged-store")?;
    let (config, _) = config_without_servers(&dir)?;
    let state = dir.path().join("state");
    let db = state.join("lifeboat.db");

    // A real store with a state in it, then its pages after the first overwritten.
    {
        let store = lifeboat_store::Store::open(&state)?.service("x");
        let s = lifeboat_core::ControllerState {
            primary: Some("one-1".into()),
            epoch: 7,
            ..Default::default()
        };
        store.put_state(&s)?;
        for i in 0..200 {
            store.event(lifeboat_core::Millis(i), "test", &"x".repeat(200))?;
        }
    }
    let mut bytes = std::fs::read(&db)?;
    assert!(bytes.len() > 8192, "the store is {} bytes", bytes.len());
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    let garbage = b"this is not a database, whatever its name says\n".repeat(100);
    for (what, content) in [("corrupt pages", bytes), ("not a database", garbage)] {
        std::fs::write(&db, &content)?;
        let _ = std::fs::remove_file(state.join("lifeboat.db-wal"));
        let out = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .output()?;
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: the daemon started\n{err}");
        assert!(
            err.contains(&format!("the state store {} is damaged", db.display())),
            "{what}: {err}"
        );
        assert!(
            err.contains("Restore the file from a copy"),
            "{what}: {err}"
        );
        assert_eq!(
            std::fs::read(&db)?,
            content,
            "{what}: the damaged file was changed"
        );
    }
    Ok(())
}
