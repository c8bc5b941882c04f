//! A Redis service under Lifeboat, against real Redis servers (a primary in us-east and two
//! replicas in eu-west, password-protected): failover after a kill with no loss of a write a
//! `WAIT` confirmed, no failover on a short stall, the returning old primary fenced and
//! rejoined, a switchover without loss, refusal past the lag limit, bad nodes reported, and a
//! PostgreSQL and a Redis service failing over independently under one controller.

use crate::{incident, stdout, steps, Daemon};
use anyhow::{Context, Result};
use lifeboat_testkit::redis::{
    redis_canary_seqs, RedisCanary, RedisOptions, RedisServer, RedisSet,
};
use lifeboat_testkit::{free_port, TwoRegions};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(30);
const PASSWORD: &str = "redis-secret-7Hq2";

fn options() -> RedisOptions {
    RedisOptions {
        password: Some(PASSWORD.into()),
    }
}

/// The `[services.cache]` section for `set`, its endpoint on `endpoint`; `failover` goes in
/// its failover section. `password_file` holds the nodes' password.
fn cache_service(set: &RedisSet, endpoint: u16, failover: &str, password_file: &Path) -> String {
    let node = |s: &RedisServer| {
        format!(
            "{{ name = \"{}\", host = \"127.0.0.1\", port = {}, password-file = \"{}\" }}",
            s.name(),
            s.port(),
            password_file.display()
        )
    };
    let replicas: Vec<String> = set.replicas.iter().map(node).collect();
    format!(
        r#"
[services.cache]
kind = "redis"
tier = "gold"
endpoint = {{ listen = "127.0.0.1:{endpoint}" }}

[services.cache.failover]
cooldown = "1s"
{failover}

[services.cache.regions.us-east]
role = "primary"
priority = 100
nodes = [{}]

[services.cache.regions.eu-west]
role = "standby"
priority = 50
nodes = [{}]
"#,
        node(&set.primary),
        replicas.join(", ")
    )
}

/// A Redis set, a config protecting it (and nothing else) and its daemon, routing to cache-1.
struct Cache {
    set: RedisSet,
    endpoint: u16,
    daemon: Daemon,
}

impl Cache {
    async fn start(failover: &str) -> Result<Cache> {
        let set = RedisSet::start("redis-svc", &options()).await?;
        let (endpoint, api) = (free_port()?, free_port()?);
        let config = write_config(
            set.dir.path(),
            api,
            &cache_service(&set, endpoint, failover, &password_file(set.dir.path())?),
        )?;
        let daemon = Daemon::spawn_config(&config, format!("http://127.0.0.1:{api}"), "cache")?
            .routing_to("cache-1")
            .await?;
        Ok(Cache {
            set,
            endpoint,
            daemon,
        })
    }

    fn endpoint(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.endpoint).into()
    }

    fn server(&self, name: &str) -> &RedisServer {
        std::iter::once(&self.set.primary)
            .chain(&self.set.replicas)
            .find(|s| s.name() == name)
            .expect("a server of the set")
    }
}

fn password_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("redis.pass");
    std::fs::write(&path, PASSWORD)?;
    Ok(path)
}

/// A config with the controller, the tier and `services`; the token in `api-token`.
fn write_config(dir: &Path, api: u16, services: &str) -> Result<PathBuf> {
    std::fs::write(dir.join("api-token"), "redis-test-token")?;
    let path = dir.join("lifeboat-redis.toml");
    std::fs::write(
        &path,
        format!(
            "[controller]\napi-listen = \"127.0.0.1:{api}\"\nstate-dir = \"state-redis\"\napi-token-file = \"api-token\"\n\n\
             [tiers.gold]\nrto = \"5s\"\nrpo = \"1s\"\n{services}"
        ),
    )?;
    Ok(path)
}

fn node<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Waits (at most `T`) until a write on `server` fails with `NOREPLICAS`: it is fenced.
async fn wait_refuses_writes(server: &RedisServer, still: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + T;
    loop {
        // The fence ends client connections, so a connection may be cut while it is made.
        let refused = match server.client().await {
            Ok(mut c) => redis::cmd("SET")
                .arg("fence-check")
                .arg(1)
                .query_async::<()>(&mut c)
                .await
                .is_err_and(|e| e.to_string().contains("NOREPLICAS")),
            Err(_) => false,
        };
        if refused {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{still}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settled_on(s: &Value, primary: &str) -> bool {
    s["primary"] == primary && s["in_flight"].is_null() && s["endpoint"]["routes_to"] == primary
}

/// A kill of the primary: a replica holding every write `WAIT 1` confirmed is promoted, the
/// other replica follows it, clients write again through the endpoint, and nothing confirmed
/// is lost. Then the old primary returns (empty, as a primary): it is fenced on sight, and
/// `lifeboat rejoin` makes it a replica of the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_a_kill_loses_no_confirmed_write_and_the_old_primary_rejoins(
) -> Result<()> {
    let mut c = Cache::start("replication = \"sync\"").await?;
    c.daemon
        .wait_until("writes wait for a replica", T, |s| {
            node(s, "cache-2")["sync_state"] == "sync"
        })
        .await?;
    let canary = RedisCanary::start(
        c.endpoint(),
        Some(PASSWORD.into()),
        Duration::from_millis(5),
        Some((1, Duration::from_millis(500))),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fault = SystemTime::now();
    c.set.primary.kill()?;
    let s = c
        .daemon
        .wait_until("a replica promoted", T, |s| {
            s["primary"] != "cache-1" && settled_on(s, s["primary"].as_str().unwrap_or("-"))
        })
        .await?;
    let new = s["primary"].as_str().context("a primary")?.to_owned();
    assert_eq!(node(&s, "cache-1")["role"], "needs-rejoin", "{s:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = canary.stop().await?;
    assert!(
        log.recovered_after(fault).is_some(),
        "clients confirm writes again through the endpoint: {:?}",
        log.last_error
    );
    let present = redis_canary_seqs(c.server(&new).addr(), Some(PASSWORD)).await?;
    assert_eq!(
        log.lost(&present),
        Vec::<i64>::new(),
        "confirmed writes lost"
    );
    assert_eq!(c.server(&new).role().await?, "master");
    let other = if new == "cache-2" {
        "cache-3"
    } else {
        "cache-2"
    };
    let info = c.server(other).info_replication().await?;
    assert_eq!(
        info["master_port"],
        c.server(&new).port().to_string(),
        "the other replica follows {new}"
    );

    let inc = incident(
        &c.daemon,
        s["last_incident"].as_i64().context("an incident")?,
    )
    .await?;
    let st = steps(&inc);
    assert!(st.contains(&("promote".into(), "ok".into())), "{st:?}");

    // The old primary comes back as an empty primary: fenced on sight, then rejoined.
    c.set.primary.restart().await?;
    wait_refuses_writes(
        &c.set.primary,
        "the returning old primary still takes writes",
    )
    .await?;
    let s = c.daemon.status().await?;
    let fenced = incident(
        &c.daemon,
        s["last_incident"].as_i64().context("an incident")?,
    )
    .await?;
    assert_eq!(fenced["kind"], "fence-returned", "{fenced:#}");
    assert_eq!(s["primary"], new.as_str(), "{s:#}");
    let out = c.daemon.cli(&["rejoin", "cache-1"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        crate::stderr(&out)
    );
    c.set.primary.wait_role("slave", T).await?;
    c.set.primary.wait_link_up(T).await?;
    let info = c.set.primary.info_replication().await?;
    assert_eq!(info["master_port"], c.server(&new).port().to_string());
    c.daemon
        .wait_until("cache-1 a replica again", T, |s| {
            node(s, "cache-1")["role"] == "standby"
        })
        .await?;
    Ok(())
}

/// Five stalls of 300 ms (SIGSTOP, SIGCONT) are not a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300ms_stall_of_the_redis_primary_is_not_a_failover() -> Result<()> {
    let c = Cache::start("").await?;
    for _ in 0..5 {
        c.set.primary.signal(Signal::SIGSTOP)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.set.primary.signal(Signal::SIGCONT)?;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let s = c.daemon.status().await?;
    assert_eq!(s["primary"], "cache-1", "{s:#}");
    assert_eq!(s["epoch"], 1, "{s:#}");
    Ok(())
}

/// A switchover fences the primary, waits until the target has its whole replication
/// stream, and only then promotes: no acknowledged write is lost, even without `WAIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_switchover_loses_no_acknowledged_write() -> Result<()> {
    let c = Cache::start("").await?;
    let canary = RedisCanary::start(
        c.endpoint(),
        Some(PASSWORD.into()),
        Duration::from_millis(2),
        None,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = c.daemon.cli(&["switchover", "--to", "cache-3"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        crate::stderr(&out)
    );
    c.daemon
        .wait_until("cache-3 primary", T, |s| settled_on(s, "cache-3"))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = canary.stop().await?;
    assert!(log.acked.len() > 100, "{} writes", log.acked.len());
    let present = redis_canary_seqs(c.server("cache-3").addr(), Some(PASSWORD)).await?;
    assert_eq!(
        log.lost(&present),
        Vec::<i64>::new(),
        "acknowledged writes lost"
    );
    assert_eq!(c.server("cache-3").role().await?, "master");
    c.set.primary.wait_role("slave", T).await?;
    Ok(())
}

/// Replicas that fell further behind than `max-lag` when the primary is lost are not
/// promoted: Lifeboat says so and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_replica_past_the_lag_limit_is_not_promoted() -> Result<()> {
    let mut c = Cache::start("max-lag = \"1MiB\"").await?;
    for r in &c.set.replicas {
        r.signal(Signal::SIGSTOP)?;
    }
    let mut p = c.set.primary.client().await?;
    // Far more than the socket buffers of the stopped replicas hold, so most of it is only
    // in the primary's memory when it dies.
    let blob = "x".repeat(32 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&blob)
        .query_async(&mut p)
        .await?;
    // The controller sees the primary's new offset before it goes.
    c.daemon
        .wait_until("the primary's offset observed", T, |s| {
            s["nodes"].as_array().is_some_and(|n| {
                n.iter().any(|n| {
                    n["name"] == "cache-1"
                        && n["position"].as_str().is_some_and(|p| {
                            p.trim_start_matches("offset ")
                                .parse::<u64>()
                                .is_ok_and(|o| o > 32 << 20)
                        })
                })
            })
        })
        .await?;
    c.set.primary.kill()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for r in &c.set.replicas {
        r.signal(Signal::SIGCONT)?;
    }
    let s = c
        .daemon
        .wait_until("the refusal", T, |s| {
            s["decision"].as_array().is_some_and(|d| {
                d.iter().any(|r| {
                    r.as_str()
                        .is_some_and(|r| r.contains("behind (limit 1 MiB)"))
                })
            })
        })
        .await?;
    assert_eq!(s["primary"], "cache-1", "{s:#}");
    assert_eq!(s["epoch"], 1, "nothing promoted: {s:#}");
    Ok(())
}

/// A Redis node with a wrong password, and a node of a Redis service that is a PostgreSQL
/// server: each is reported with its name and the fix, and nothing is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_a_server_of_another_engine_are_named_and_nothing_is_promoted(
) -> Result<()> {
    let set = RedisSet::start("redis-bad", &options()).await?;
    let pg = TwoRegions::start("redis-bad-pg", "").await?;
    let dir = set.dir.path();
    let wrong = dir.join("wrong.pass");
    std::fs::write(&wrong, "not-the-password")?;
    let (endpoint, api) = (free_port()?, free_port()?);
    let services = format!(
        r#"
[services.cache]
kind = "redis"
tier = "gold"
endpoint = {{ listen = "127.0.0.1:{endpoint}" }}

[services.cache.regions.us-east]
role = "primary"
nodes = [{{ name = "cache-1", host = "127.0.0.1", port = {p1}, password-file = "{w}" }}]

[services.cache.regions.eu-west]
role = "standby"
nodes = [{{ name = "not-redis", host = "127.0.0.1", port = {pgport} }}]

[services.db]
kind = "postgres"
tier = "gold"
endpoint = {{ listen = "127.0.0.1:{db_endpoint}" }}

[services.db.regions.us-east]
role = "primary"
nodes = [{{ name = "not-postgres", host = "127.0.0.1", port = {redis_port} }}]

[services.db.regions.eu-west]
role = "standby"
nodes = [{{ name = "db-2", host = "127.0.0.1", port = {pg2} }}]
"#,
        p1 = set.primary.port(),
        w = wrong.display(),
        pgport = pg.primary.port(),
        db_endpoint = free_port()?,
        redis_port = set.replicas[0].port(),
        pg2 = pg.standby.port(),
    );
    let config = write_config(dir, api, &services)?;
    let d = Daemon::spawn_config(&config, format!("http://127.0.0.1:{api}"), "cache")?;
    let s = d
        .wait_until("both nodes reported down", T, |s| {
            node(s, "cache-1")["health"] == "down" && node(s, "not-redis")["health"] == "down"
        })
        .await?;
    let detail = |n: &str| {
        node(&s, n)["health_detail"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        detail("cache-1").contains("cache-1 at 127.0.0.1"),
        "{}",
        detail("cache-1")
    );
    assert!(
        detail("cache-1").contains("authentication failed"),
        "{}",
        detail("cache-1")
    );
    assert!(
        detail("cache-1").contains("password-file or password-env"),
        "{}",
        detail("cache-1")
    );
    assert!(
        !d.log().contains("not-the-password"),
        "the password leaked into the log"
    );
    assert!(
        detail("not-redis").contains("does not answer as Redis"),
        "{}",
        detail("not-redis")
    );
    assert!(
        detail("not-redis").contains("check the service's kind"),
        "{}",
        detail("not-redis")
    );
    assert!(s["primary"].is_null(), "{s:#}");
    assert_eq!(s["epoch"], 0, "nothing promoted: {s:#}");
    let db = d
        .wait_until_of("db", "not-postgres down", T, |s| {
            node(s, "not-postgres")["health"] == "down"
        })
        .await?;
    let detail = node(&db, "not-postgres")["health_detail"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(detail.contains("does not answer as PostgreSQL"), "{db:#}");
    assert!(
        db["primary"].is_null(),
        "nothing adopted with a node of another engine: {db:#}"
    );
    Ok(())
}

/// One controller, a PostgreSQL and a Redis service: the Redis primary's loss fails Redis
/// over and leaves PostgreSQL alone, and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_and_a_redis_service_fail_over_independently() -> Result<()> {
    let pg = TwoRegions::start("two-services", "").await?;
    let mut set = RedisSet::start("two-services-redis", &options()).await?;
    let endpoint = free_port()?;
    let mut config = std::fs::read_to_string(&pg.config_path)?;
    config.push_str(&cache_service(
        &set,
        endpoint,
        "",
        &password_file(pg.dir.path())?,
    ));
    std::fs::write(&pg.config_path, config)?;
    let d = Daemon::start(&pg, "us-east-1").await?;
    d.wait_until_of("cache", "the cache routed to cache-1", T, |s| {
        s["endpoint"]["routes_to"] == "cache-1"
    })
    .await?;

    set.primary.kill()?;
    let s = d
        .wait_until_of("cache", "a Redis failover", T, |s| {
            s["primary"] != "cache-1" && s["in_flight"].is_null() && s["epoch"] == 2
        })
        .await?;
    assert_ne!(s["primary"], "cache-1");
    let orders = d.status().await?;
    assert_eq!(orders["primary"], "us-east-1", "{orders:#}");
    assert_eq!(
        orders["epoch"], 1,
        "the PostgreSQL service was not touched: {orders:#}"
    );

    pg.primary.kill()?;
    let orders = d
        .wait_until("PostgreSQL failed over", T, |s| settled_on(s, "eu-west-1"))
        .await?;
    let cache_now = d.status_of("cache").await?;
    assert_eq!(
        cache_now["epoch"], 2,
        "the Redis service was not touched: {cache_now:#}"
    );
    assert_eq!(cache_now["primary"], s["primary"]);
    // Each service reports its own incident.
    for (status, service) in [(&cache_now, "cache"), (&orders, "orders")] {
        let id = status["last_incident"].as_i64().context("an incident")?;
        assert_eq!(incident(&d, id).await?["service"], service, "{status:#}");
    }

    let all = crate::get(&format!("{}/v1/status", d.api)).await?;
    let names: Vec<&str> = all["services"]
        .as_array()
        .context("services")?
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(names, ["cache", "orders"]);
    Ok(())
}

/// A hung primary (every process stopped, its port still accepting connections) is failed
/// over while it hangs; when it wakes up it still believes it is the primary, and is fenced
/// on sight: it refuses writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_primary_is_failed_over_while_it_hangs_and_fenced_when_it_wakes() -> Result<()>
{
    let c = Cache::start("").await?;
    c.set.primary.signal(Signal::SIGSTOP)?;
    let promoted = c
        .daemon
        .wait_until("a replica promoted", T, |s| {
            s["primary"] != "cache-1" && settled_on(s, s["primary"].as_str().unwrap_or("-"))
        })
        .await;
    c.set.primary.signal(Signal::SIGCONT)?;
    let s = promoted?;
    let new = s["primary"].as_str().context("a primary")?.to_owned();
    assert_eq!(c.server(&new).role().await?, "master");
    wait_refuses_writes(
        &c.set.primary,
        "the old primary takes writes after it woke up",
    )
    .await?;
    assert_eq!(
        c.set.primary.role().await?,
        "master",
        "fenced, not rejoined behind the operator's back"
    );
    Ok(())
}

/// A drill on the Redis service: the primary hangs (SIGSTOP), a replica is promoted, the old
/// primary wakes, is fenced, rejoins with `REPLICAOF`, and the failback makes it the primary
/// again; every write the canary had acknowledged is still there.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_primary_failure_drill_hangs_the_primary_and_fails_back() -> Result<()> {
    let c = Cache::start(
        "\n[drills.cache-hang]\nscenario = \"primary-failure\"\nservice = \"cache\"\nduration = \"3s\"\n",
    )
    .await?;
    let (_, rep) = crate::drills::passing(&c.daemon, "cache-hang").await?;
    assert_eq!(rep["kind"], "redis");
    assert!(rep["faults"][0]["fault"]
        .as_str()
        .unwrap()
        .starts_with("pause node cache-1"));
    assert_ne!(rep["primary_after"], "cache-1");
    assert_eq!(rep["primary_at_end"], "cache-1");
    assert_eq!(rep["measured"]["lost"].as_array().map(Vec::len), Some(0));
    Ok(())
}

/// A real incident on another service during a drill stops the drill, and its fault is
/// undone: here a PostgreSQL drill (a 30 s hang) and the Redis primary lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_incident_during_a_drill_aborts_it() -> Result<()> {
    let pg = TwoRegions::start("drill-incident", "mode = \"manual\"").await?;
    let mut set = RedisSet::start("drill-incident-redis", &options()).await?;
    let mut config = std::fs::read_to_string(&pg.config_path)?;
    config.push_str(&cache_service(
        &set,
        free_port()?,
        "",
        &password_file(pg.dir.path())?,
    ));
    config.push_str(
        "\n[drills.hang]\nscenario = \"primary-failure\"\nservice = \"orders\"\nfault = \"pause\"\nduration = \"30s\"\n",
    );
    std::fs::write(&pg.config_path, config)?;
    let d = Daemon::start(&pg, "us-east-1").await?;
    d.wait_until_of("cache", "the cache routed to cache-1", T, |s| {
        s["endpoint"]["routes_to"] == "cache-1"
    })
    .await?;
    let out = d.cli(&["drill", "run", "hang", "--no-wait"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let report = |d: &Daemon| {
        let api = d.api.clone();
        async move { crate::get(&format!("{api}/v1/drill-runs/1")).await }
    };
    let deadline = std::time::Instant::now() + T;
    while report(&d).await?["fault_at_ms"].is_null() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the fault never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set.primary.kill()?;
    let deadline = std::time::Instant::now() + T;
    let rep = loop {
        let r = report(&d).await?;
        if r["status"] != "running" {
            break r;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the drill was not stopped\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rep["status"], "aborted", "{rep:#}");
    let why = rep["verdict"]["checks"][0]["text"].as_str().unwrap_or("");
    assert!(why.contains("a real incident on service cache"), "{rep:#}");
    assert!(rep["faults"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["state"] == "undone"));
    Ok(())
}
