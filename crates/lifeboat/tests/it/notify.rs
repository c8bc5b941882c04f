//! Notifications against real receivers on loopback: a recording HTTP server standing in for
//! Slack, PagerDuty and a webhook receiver (it checks webhook signatures with Python's own
//! `hmac`), and aiosmtpd for email. Incident states, the status page and post-mortems too.

use crate::{get, stderr, stdout, Daemon};
use anyhow::{Context, Result};
use lifeboat_testkit::notify::{calls_in, Receiver, SmtpSink};
use lifeboat_testkit::{free_port, TwoRegions};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw==";
const PD_KEY: &str = "R0UTINGKEY0000000000000000000042";
const SLACK_TOKEN: &str = "XXXXslacksecretpath";

fn append(config: &Path, text: &str) -> Result<()> {
    let mut c = std::fs::read_to_string(config)?;
    c.push_str(text);
    std::fs::write(config, c)?;
    Ok(())
}

/// Polls `f` every 100 ms until it gives a value, at most `timeout`.
async fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        anyhow::ensure!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every notifier has settled everything (`behind` 0, no retry pending).
async fn drained(d: &Daemon, names: &[&str]) -> Result<Value> {
    let start = Instant::now();
    loop {
        let v = get(&format!("{}/v1/notify", d.api)).await?;
        let done = v["notifiers"].as_array().is_some_and(|l| {
            l.iter()
                .filter(|n| names.iter().any(|x| n["name"] == *x))
                .all(|n| n["behind"] == 0)
        });
        if done {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < T,
            "notifiers not drained within {T:?}: {v:#}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(d: &Daemon, token: &str, path: &str, body: Value) -> Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", d.api))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

fn ids(calls: &[Value]) -> Vec<i64> {
    calls
        .iter()
        .map(|c| {
            c["headers"]["webhook-id"]
                .as_str()
                .and_then(|i| i.strip_prefix("msg_"))
                .and_then(|i| i.parse().ok())
                .unwrap_or(-1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_reaches_slack_pagerduty_a_signed_webhook_and_email_in_order() -> Result<()> {
    let regions = TwoRegions::start("notify", "").await?;
    let dir = regions.dir.path().to_path_buf();
    let rx = Receiver::start(&dir.join("receiver"), SECRET).await?;
    let smtp = SmtpSink::start(&dir.join("smtp")).await?;
    std::fs::write(
        dir.join("slack-url"),
        rx.url(&format!("/slack/T0/B0/{SLACK_TOKEN}")),
    )?;
    std::fs::write(dir.join("pd-key"), format!("{PD_KEY}\n"))?;
    std::fs::write(dir.join("hook-secret"), SECRET)?;
    append(
        &regions.config_path,
        &format!(
            r#"
[incidents]
risk-after = "1s"
resolve-after = "2s"
status-page-title = "Orders status"

[notify.chat]
kind = "slack"
url-file = "slack-url"

[notify.pager]
kind = "pagerduty"
routing-key-file = "pd-key"
url = "{pd}"

[notify.hook]
kind = "webhook"
url = "{hook}"
secret-file = "hook-secret"
min-severity = "info"

[notify.mail]
kind = "email"
server = "127.0.0.1"
port = {smtp}
starttls = false
from = "Lifeboat <lifeboat@example.org>"
to = ["oncall@example.org"]
"#,
            pd = rx.url("/pagerduty"),
            hook = rx.url("/hook"),
            smtp = smtp.port
        ),
    )?;
    let mut d = Daemon::start(&regions, "us-east-1").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    regions.primary.kill()?;
    d.wait_until("eu-west-1 is the primary", T, |s| {
        s["primary"] == "eu-west-1"
    })
    .await?;
    let id = d.status().await?["last_incident"]
        .as_i64()
        .context("an incident")?;
    // Monitoring, then resolved once the service has been healthy for resolve-after.
    let start = Instant::now();
    let inc = loop {
        let inc = get(&format!("{}/v1/incidents/{id}", d.api)).await?;
        if inc["state"] == "resolved" {
            break inc;
        }
        anyhow::ensure!(start.elapsed() < T, "incident {id} not resolved: {inc:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let states: Vec<&str> = inc["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["investigating", "identified", "monitoring", "resolved"],
        "{inc:#}"
    );
    // The old primary is down and must rejoin: a risk, raised once it lasted risk-after.
    let key = "risk/orders/standby-ineligible/us-east-1";
    until("the risk about us-east-1 reaches the webhook", T, || {
        rx.calls_to("/hook")
            .iter()
            .any(|c| c["body"]["data"]["key"] == key && c["body"]["type"] == "risk-raised")
            .then_some(())
    })
    .await?;
    drained(&d, &["chat", "pager", "hook", "mail"]).await?;

    // PagerDuty: trigger, acknowledge, resolve under one dedup key and the routing key.
    let dedup = format!("lifeboat/incident/{id}");
    let pd: Vec<Value> = rx
        .calls_to("/pagerduty")
        .into_iter()
        .filter(|c| c["body"]["dedup_key"] == dedup.as_str())
        .collect();
    let actions: Vec<&str> = pd
        .iter()
        .map(|c| c["body"]["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"], "{pd:#?}");
    let trigger = &pd[0]["body"];
    assert_eq!(trigger["routing_key"], PD_KEY);
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["component"], "orders");
    let summary = trigger["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("primary us-east-1 lost: failing over to eu-west-1"),
        "{summary}"
    );
    assert!(pd.iter().all(|c| c["body"]["routing_key"] == PD_KEY));

    // Slack: opened, identified, monitoring, resolved, in that order, each once; no step
    // that went well.
    let slack: Vec<String> = rx
        .calls()
        .iter()
        .filter(|c| c["path"].as_str().unwrap().starts_with("/slack/"))
        .map(|c| c["body"]["text"].as_str().unwrap().to_owned())
        .filter(|t| t.contains(&format!("incident {id}")))
        .collect();
    let order = [
        "primary us-east-1 lost",
        "identified",
        "monitoring",
        "resolved",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|w| {
            slack
                .iter()
                .position(|t| t.contains(w))
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?} in {slack:#?}");
    assert_eq!(slack.len(), 4, "{slack:#?}");

    // The webhook: everything, each signed (checked by the receiver), each id once, in order.
    let hook = rx.calls_to("/hook");
    assert!(
        hook.iter().all(|c| c["signature_ok"] == true),
        "unsigned or badly signed: {hook:#?}"
    );
    let hook_ids = ids(&hook);
    assert!(hook_ids.windows(2).all(|w| w[0] < w[1]), "{hook_ids:?}");
    let types: Vec<&str> = hook
        .iter()
        .filter(|c| c["body"]["data"]["incident"] == id)
        .map(|c| c["body"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"incident-opened"), "{types:?}");
    assert_eq!(types.last(), Some(&"incident-resolved"), "{types:?}");
    assert!(types.contains(&"incident-step"), "{types:?}");

    // Email: the opening and the resolution.
    let mails = smtp.messages();
    let subjects: Vec<&str> = mails
        .iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("Subject:")))
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains(&format!("incident {id}")) && s.contains("resolved")),
        "{subjects:#?}"
    );
    assert!(mails.iter().all(|m| m.contains("oncall@example.org")));
    assert!(
        mails
            .iter()
            .all(|m| m.contains("Message-ID: <lifeboat-notice-")),
        "a stable Message-ID on each: {mails:#?}"
    );

    // A PagerDuty test opens and closes an alert of its own.
    let out = d.cli(&["notify", "test", "pager"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let test: Vec<Value> = rx
        .calls_to("/pagerduty")
        .into_iter()
        .filter(|c| {
            c["body"]["dedup_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("lifeboat/test/"))
        })
        .collect();
    let actions: Vec<&str> = test
        .iter()
        .map(|c| c["body"]["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"], "{test:#?}");
    assert_eq!(test[0]["body"]["dedup_key"], test[1]["body"]["dedup_key"]);

    // The post-mortem draft.
    let out = d.cli(&["incident", "postmortem", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = stdout(&out);
    for part in [
        "# Post-mortem (draft)",
        "## Impact, measured against the tier",
        "| RTO: fault → first write on the new primary |",
        "## Detection",
        "## Timeline (UTC)",
        "step promote eu-west-1 — ok",
        "status **resolved** (lifeboat)",
        "## What Lifeboat decided not to do, and why",
        "## Root cause\n\n_to fill in_",
        "## Action items",
    ] {
        assert!(md.contains(part), "missing {part:?} in:\n{md}");
    }

    // The status page: resolved, the service degraded (its old primary is down).
    let page = get(&format!("{}/status.json", d.api)).await?;
    assert_eq!(page["title"], "Orders status");
    assert_eq!(page["resolved"][0]["id"], id, "{page:#}");
    assert_eq!(
        page["services"][0]["status"], "degraded_performance",
        "{page:#}"
    );
    let html = reqwest::get(format!("{}/status", d.api))
        .await?
        .text()
        .await?;
    assert!(
        html.contains("Orders status") && html.contains("primary lost, failed over to eu-west-1")
    );

    // The daemon restarts (the risk it raised stays raised), the old primary rejoins: the
    // risk clears, once.
    d.stop()?;
    let d = Daemon::spawn(&regions)?.routing_to("eu-west-1").await?;
    let out = d.cli(&["rejoin", "us-east-1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    until("the risk clears", T, || {
        rx.calls_to("/hook")
            .iter()
            .any(|c| c["body"]["data"]["key"] == key && c["body"]["type"] == "risk-cleared")
            .then_some(())
    })
    .await?;
    let raised = rx
        .calls_to("/hook")
        .iter()
        .filter(|c| c["body"]["data"]["key"] == key && c["body"]["type"] == "risk-raised")
        .count();
    assert_eq!(raised, 1, "raised once, also across the restart");

    // No secret anywhere Lifeboat writes or answers.
    let notify = get(&format!("{}/v1/notify", d.api)).await?.to_string();
    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await?
        .text()
        .await?;
    for (what, text) in [
        ("log", d.log()),
        ("/v1/notify", notify),
        ("/metrics", metrics),
    ] {
        for s in [SLACK_TOKEN, PD_KEY, SECRET, "c2VjcmV0LXNpZ25pbmc"] {
            assert!(!text.contains(s), "{what} shows a secret");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_and_a_killed_daemon_lose_nothing_and_send_nothing_twice() -> Result<()> {
    let regions = TwoRegions::start("outbox", "").await?;
    let dir = regions.dir.path().to_path_buf();
    let port = free_port()?;
    std::fs::write(dir.join("hook-secret"), SECRET)?;
    append(
        &regions.config_path,
        &format!(
            r#"
[notify.hook]
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
secret-file = "hook-secret"
min-severity = "info"
timeout = "1s"
"#
        ),
    )?;
    let mut d = Daemon::start(&regions, "us-east-1").await?;
    // Nothing listens: a planned switchover and three operator updates wait in the outbox.
    let out = d.cli(&["switchover", "--to", "eu-west-1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = d.status().await?["last_incident"].as_i64().unwrap();
    for i in 1..=3 {
        let out = d.cli(&[
            "incident",
            "update",
            &id.to_string(),
            "--state",
            "monitoring",
            "--message",
            &format!("update {i} while the receiver is down"),
            "--by",
            "alice",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let v = get(&format!("{}/v1/notify", d.api)).await?;
    let hook = &v["notifiers"][0];
    assert!(hook["behind"].as_u64().unwrap() >= 4, "{v:#}");
    let start = Instant::now();
    loop {
        let v = get(&format!("{}/v1/notify", d.api)).await?;
        let e = v["notifiers"][0]["last_error"].as_str().unwrap_or("");
        if e.contains("cannot connect") {
            break;
        }
        anyhow::ensure!(start.elapsed() < T, "no failed attempt shown: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The daemon dies with its outbox full; the receiver comes back; the daemon restarts.
    d.kill()?;
    let rx = Receiver::start_on(&dir.join("receiver"), port, SECRET).await?;
    let d = Daemon::spawn(&regions)?.routing_to("eu-west-1").await?;
    drained(&d, &["hook"]).await?;
    let calls = rx.calls_to("/hook");
    let got = ids(&calls);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "each notice once, in order: {got:?}"
    );
    assert!(calls.iter().all(|c| c["signature_ok"] == true));
    let ours: Vec<&Value> = calls
        .iter()
        .filter(|c| c["body"]["data"]["incident"] == id)
        .collect();
    assert_eq!(ours[0]["body"]["type"], "incident-opened", "{ours:#?}");
    let messages: Vec<&str> = ours
        .iter()
        .filter(|c| c["body"]["data"]["details"]["actor"] == "alice")
        .map(|c| c["body"]["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        (1..=3)
            .map(|i| format!("update {i} while the receiver is down"))
            .collect::<Vec<_>>()
    );
    let v = get(&format!("{}/v1/notify", d.api)).await?;
    let recent = v["notifiers"][0]["recent"].as_array().unwrap();
    assert!(recent.iter().all(|r| r["state"] == "sent"), "{v:#}");
    assert!(
        recent.iter().any(|r| r["attempts"].as_u64() > Some(1)),
        "the first notice was retried: {v:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_failing_and_hanging_receivers_and_a_storm_get_what_they_should() -> Result<()> {
    let regions = TwoRegions::start("receivers", "").await?;
    let dir = regions.dir.path().to_path_buf();
    let rx = Receiver::start(&dir.join("receiver"), SECRET).await?;
    let smtp = SmtpSink::start(&dir.join("smtp")).await?;
    rx.control(json!({
        "/refuse": {"status": 400},
        "/flaky": {"status": 503, "fail_first": 2},
        "/hang": {"status": 200, "delay_ms": 3000},
    }))?;
    std::fs::write(dir.join("hook-secret"), SECRET)?;
    std::fs::write(dir.join("slack-url"), rx.url("/slack/storm"))?;
    let hook = |name: &str, path: &str, extra: &str| {
        format!(
            "\n[notify.{name}]\nkind = \"webhook\"\nurl = \"{}\"\nsecret-file = \"hook-secret\"\nmin-severity = \"critical\"\n{extra}\n",
            rx.url(path)
        )
    };
    let mut text = hook("refuse", "/refuse", "");
    text += &hook("flaky", "/flaky", "");
    text += &hook(
        "hang",
        "/hang",
        "timeout = \"500ms\"\ngive-up-after = \"2s\"",
    );
    text += &format!(
        "\n[notify.tls]\nkind = \"email\"\nserver = \"127.0.0.1\"\nport = {}\nfrom = \"lifeboat@example.org\"\nto = [\"oncall@example.org\"]\nmin-severity = \"critical\"\n",
        smtp.port
    );
    text +=
        "\n[notify.chat]\nkind = \"slack\"\nurl-file = \"slack-url\"\nmin-severity = \"info\"\n";
    text += "\n[incidents]\nresolve-after = \"2s\"\n";
    append(&regions.config_path, &text)?;
    let d = Daemon::start(&regions, "us-east-1").await?;

    // 4xx: recorded as refused, not retried.
    let out = d.cli(&["notify", "test", "refuse"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("refuse did not take the test message: HTTP 400: invalid_payload (refused)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(rx.calls_to("/refuse").len(), 1);
    // 5xx twice, then delivered: three attempts of one message (one webhook-id).
    let out = d.cli(&["notify", "test", "flaky"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("attempt 3"), "{}", stdout(&out));
    let flaky = rx.calls_to("/flaky");
    let answered: Vec<u64> = flaky
        .iter()
        .map(|c| c["answered"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [503, 503, 200]);
    let flaky_ids = ids(&flaky);
    assert!(
        flaky_ids.iter().all(|i| *i == flaky_ids[0]),
        "{flaky_ids:?}"
    );
    // A receiver that hangs: retried within the attempt budget, given up after give-up-after.
    let out = d.cli(&["notify", "test", "hang"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("(expired)"), "{}", stderr(&out));
    until("a second attempt reaches the hanging receiver", T, || {
        (rx.calls_to("/hang").len() >= 2).then_some(())
    })
    .await?;
    // STARTTLS required and not offered: refused with what to do.
    let out = d.cli(&["notify", "test", "tls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("it must offer STARTTLS, or set starttls = false"),
        "{}",
        stderr(&out)
    );
    assert!(smtp.messages().is_empty());
    // Bad input.
    let out = d.cli(&["notify", "test", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no notifier \"nosuch\"; configured: chat, flaky, hang, refuse, tls"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&[
        "incident",
        "update",
        "999",
        "--state",
        "resolved",
        "--message",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no incident 999"), "{}", stderr(&out));
    let out = d.cli(&["incident", "postmortem", "999"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no incident 999"), "{}", stderr(&out));
    let list = d.cli(&["notify", "list"]);
    assert!(
        stdout(&list).contains("refused after 1 attempt(s): HTTP 400"),
        "{}",
        stdout(&list)
    );

    // A storm: 40 updates at once reach Slack once each, in order, in fewer messages.
    let out = d.cli(&["switchover", "--to", "eu-west-1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = d.status().await?["last_incident"].as_i64().unwrap();
    for i in 0..40 {
        let (code, v) = post(
            &d,
            &regions.token,
            &format!("/v1/incidents/{id}/updates"),
            json!({"state": "monitoring", "message": format!("storm-{i:02}")}),
        )
        .await?;
        assert_eq!(code, 200, "{v}");
    }
    let (code, v) = post(
        &d,
        &regions.token,
        &format!("/v1/incidents/{id}/updates"),
        json!({"state": "sleeping", "message": "x"}),
    )
    .await?;
    assert_eq!(code, 400);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("states: investigating, identified, monitoring, resolved"));
    drained(&d, &["chat"]).await?;
    // The switchover's incident resolves itself resolve-after (2 s) after its plan ended, not
    // at once (the daemon had been healthy for longer than that before it).
    let start = Instant::now();
    let inc = loop {
        let inc = get(&format!("{}/v1/incidents/{id}", d.api)).await?;
        if inc["state"] == "resolved" {
            break inc;
        }
        anyhow::ensure!(start.elapsed() < T, "incident {id} not resolved: {inc:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let updates = inc["updates"].as_array().unwrap();
    let by_lifeboat = |state: &str| {
        updates
            .iter()
            .find(|u| u["state"] == state && u["actor"] == "lifeboat")
            .and_then(|u| u["at_ms"].as_u64())
            .unwrap_or_else(|| panic!("no {state} update by lifeboat: {inc:#}"))
    };
    let waited = by_lifeboat("resolved") - by_lifeboat("monitoring");
    assert!(waited >= 2000, "resolved {waited} ms after the plan ended");
    let slack: Vec<String> = calls_in(&dir.join("receiver"))
        .iter()
        .filter(|c| c["path"] == "/slack/storm")
        .map(|c| c["body"].to_string())
        .collect();
    // Each update in exactly one message, in order (message, then place in a digest).
    let mut last = (0, 0);
    for i in 0..40 {
        let w = format!("storm-{i:02}");
        let holders: Vec<usize> = (0..slack.len())
            .filter(|m| slack[*m].contains(&w))
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "{w} not in exactly one message: {slack:#?}"
        );
        let at = (holders[0], slack[holders[0]].find(&w).unwrap());
        assert!(at > last, "{w} out of order");
        last = at;
    }
    assert!(
        slack.len() < 40,
        "a throttled storm goes out in digests: {} messages",
        slack.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_without_its_secret_stops_the_daemon_before_it_starts() -> Result<()> {
    let regions = TwoRegions::start("nosecret", "").await?;
    append(
        &regions.config_path,
        "\n[notify.pager]\nkind = \"pagerduty\"\nrouting-key-env = \"LIFEBOAT_TEST_NO_SUCH_VARIABLE\"\n",
    )?;
    let out = std::process::Command::new(crate::BIN)
        .args(["-c"])
        .arg(&regions.config_path)
        .arg("run")
        .env_remove("LIFEBOAT_TEST_NO_SUCH_VARIABLE")
        .output()?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "notify.pager: the routing key: the environment variable LIFEBOAT_TEST_NO_SUCH_VARIABLE is not set"
        ),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// A tier past its RPO and a restore test that fails are notices (the restore test fails
/// here because the repository holds no base backup of its source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_backup_and_a_failed_restore_test_are_notices() -> Result<()> {
    let regions = TwoRegions::start("backup-notices", "").await?;
    let dir = &regions.dir;
    let (repo, pass) = crate::backup::new_repo(dir)?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("a"), "a")?;
    let rx = Receiver::start(&dir.path().join("receiver"), SECRET).await?;
    std::fs::write(dir.path().join("hook-secret"), SECRET)?;
    append(
        &regions.config_path,
        &format!(
            r#"
[backup.repositories.main]
location = "{repo}"
password-file = "{pass}"

[backup.sources.files]
paths = ["{files}"]

[backup.sources.db]
follow-primary = true

[backup.tiers.hourly]
kind = "incremental"
sources = ["files"]
repository = "main"
every = "1h"
rpo = "2s"
keep = {{ last = 2 }}

[backup.restore-test]
source = "db"
repository = "main"
every = "1s"
query = "SELECT 1"
scratch-dir = "{scratch}"

[notify.hook]
kind = "webhook"
url = "{hook}"
secret-file = "hook-secret"
"#,
            pass = pass.display(),
            files = files.display(),
            scratch = dir.subdir("scratch")?.display(),
            hook = rx.url("/hook"),
        ),
    )?;
    let d = Daemon::start(&regions, "us-east-1").await?;
    let found = |kind: &str, key: &str| {
        rx.calls_to("/hook")
            .into_iter()
            .find(|c| c["body"]["type"] == kind && c["body"]["data"]["key"] == key)
    };
    let stale = until("the hourly tier goes stale", T, || {
        found("backup-stale", "backup/files/hourly")
    })
    .await?;
    let title = stale["body"]["data"]["title"].as_str().unwrap();
    assert!(title.contains("older than its RPO of 2 s"), "{title}");
    assert_eq!(stale["body"]["data"]["service"], "orders");
    let failed = until("the restore test fails", T, || {
        found("restore-test-failed", "restore-test/db")
    })
    .await?;
    assert!(
        failed["body"]["data"]["text"].as_str().unwrap().len() > 10,
        "says why: {failed:#}"
    );
    // Told once, not at every failing run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = rx
        .calls_to("/hook")
        .iter()
        .filter(|c| c["body"]["type"] == "restore-test-failed")
        .count();
    assert_eq!(n, 1, "{}", d.log());
    Ok(())
}
