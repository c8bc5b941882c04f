//! Loading real files: every example, and a broken config whose report is asserted word for
//! word, because these messages are the user interface of `lifeboat config check`.

use expect_test::expect;
use std::path::Path;

#[test]
fn every_example_loads_without_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded =
                lifeboat_config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!loaded.config.services.is_empty());
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example configs found in {}", dir.display());
}

#[test]
fn the_two_region_example_says_what_it_means() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/two-region.toml");
    let c = lifeboat_config::load(&path).unwrap().config;
    let orders = &c.services["orders"];
    assert_eq!(orders.kind, lifeboat_config::ServiceKind::Postgres);
    assert_eq!(orders.regions.len(), 2);
    assert_eq!(orders.failover.max_lag.0, 16 << 20);
    assert_eq!(orders.probe.failure_threshold, 3);
    let names: Vec<&str> = c.nodes().map(|(_, _, n)| n.name.as_str()).collect();
    assert_eq!(names, ["eu-west-1", "us-east-1"]);
    assert!(
        c.controller.state_dir.is_absolute(),
        "relative paths resolve against the file's directory"
    );
}

#[test]
fn a_broken_config_reports_every_error_with_its_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        r#"[services."or ders"]
kind = "postgres"
tier = "platinum"

[services."or ders".endpoint]
listen = "127.0.0.1:6432"
colour = "blue"

[services."or ders".probe]
interval = "5ms"
failure-threshold = 0

[services."or ders".failover]
max-lag = "lots"

[services."or ders".regions.us-east]
role = "primary"

[[services."or ders".regions.us-east.nodes]]
name = "a"
host = "127.0.0.1"
port = 0
password = "hunter2"
"#,
    )
    .unwrap();
    let err = lifeboat_config::load(&path).unwrap_err();
    let report = err.report().expect("a report").to_string();
    assert!(
        !report.contains("hunter2"),
        "a secret leaked into the report"
    );
    expect![[r#"
        error: services.or ders.endpoint.colour (line 7): unknown field `colour`, expected one of `listen`, `hold-timeout`, `connect-timeout`, `upstream-timeout`
        error: services.or ders.failover.max-lag (line 14): invalid size "lots"; write e.g. "16MiB", "512KiB", "1GiB"
        error: services.or ders.regions.us-east.nodes[0].password (line 23): secrets are never written in the config: use password-file or password-env
        error: services.or ders (line 1): a service name may only hold letters, digits, - and _
        error: services.or ders.tier (line 3): tier "platinum" is not defined; add [tiers.platinum] with rto and rpo
        error: services.or ders.probe.interval (line 10): must be at least 10ms
        error: services.or ders.probe.failure-threshold (line 11): must be at least 1
        error: services.or ders.regions.us-east.nodes[0].port (line 22): must be between 1 and 65535
        error: services.or ders.regions (line 16): no standby node: add a region with role = "standby" to fail over to
        warning: controller: no api-token-file or api-token-env: the API will refuse every changing request
        warning: services.or ders.failover.replication (line 13): async replication can lose the last acknowledged writes in an automatic failover
    "#]]
    .assert_eq(&report);
}

#[test]
fn a_missing_file_names_the_path() {
    let err = lifeboat_config::load(Path::new("/nonexistent/lifeboat.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read config file /nonexistent/lifeboat.toml: No such file or directory (os error 2); check the path given to --config"
    );
}

#[test]
fn a_broken_backup_section_reports_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        r#"[services.orders]
kind = "postgres"
tier = "gold"
endpoint = { listen = "127.0.0.1:6432" }

[tiers.gold]
rto = "5s"
rpo = "1s"

[services.orders.regions.a]
role = "primary"
nodes = [{ name = "a1", host = "127.0.0.1", port = 5432 }]

[services.orders.regions.b]
role = "standby"
nodes = [{ name = "b1", host = "127.0.0.1", port = 5433 }]

[backup.repositories.main]
location = "ftp://nowhere"

[backup.sources.db]
postgres = "c9"

[backup.sources.both]
paths = ["/srv"]
postgres = "a1"

[backup.tiers.hot]
kind = "incremental"
sources = ["db", "missing"]
repository = "main"
every = "0s"
keep = {}

[backup.tiers.offsite]
kind = "copy"
repository = "main"
copy-to = "main"
every = "7d"
keep = { weekly = 4 }
consistent = true

[backup.tiers."night run"]
kind = "full"
sources = ["db", "both"]
repository = "main"
every = "1d"
keep = { daily = 7 }
consistent = true

[backup.sources.files]
paths = ["/srv/files"]

[backup.wal]
source = "both"
repository = "elsewhere"
mode = "archive"
synchronous = true
upload-every = "10ms"

[backup.restore-test]
source = "files"
repository = "main"
every = "1d"
query = "SELECT 1"
"#,
    )
    .unwrap();
    let err = lifeboat_config::load(&path).unwrap_err();
    let report = err.report().expect("a report").to_string();
    expect![[r#"
        error: backup.repositories.main.location (line 19): only directories and s3:// locations are supported
        error: backup.repositories.main (line 18): set password-file or password-env
        error: backup.sources.both (line 24): set one of paths, postgres and follow-primary
        error: backup.sources.db.postgres (line 22): no node "c9" in regions (known: a1, b1)
        error: backup.tiers.hot.every (line 32): must be at least 1s
        error: backup.tiers.hot.keep (line 33): keeps nothing; set at least one of last, hourly, daily, weekly, monthly, yearly
        error: backup.tiers.hot.sources[1] (line 30): source "missing" is not defined under backup.sources
        error: backup.tiers.night run (line 43): a consistent tier's name labels its groups: use 1 to 40 letters, digits, '.', '_' or '-'
        error: backup.tiers.offsite.consistent (line 41): a copy tier copies the groups of its repository; only backup tiers take groups
        error: backup.tiers.offsite.copy-to (line 38): must differ from repository
        error: backup.wal.repository (line 56): repository "elsewhere" is not defined under backup.repositories
        error: backup.wal.upload-every (line 59): must be at least 20ms
        error: backup.wal.synchronous (line 58): a synchronous archive streams from whichever node is primary: set follow-primary = true on its source (after a failover, commits on the new primary would wait for an archive streaming from another node)
        error: backup.wal.synchronous (line 58): a synchronous archive streams WAL: set mode = "stream" (archive_command only sees finished segments)
        error: backup.restore-test.source (line 62): source "files" is not a PostgreSQL source
        warning: controller: no api-token-file or api-token-env: the API will refuse every changing request
        warning: services.orders.failover.replication (line 1): async replication can lose the last acknowledged writes in an automatic failover
    "#]].assert_eq(&report);
}

fn report_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(&path, text).unwrap();
    let err = lifeboat_config::load(&path).unwrap_err();
    err.report().expect("a report").to_string()
}

#[test]
fn the_single_service_shape_gets_one_error_that_says_how_to_rewrite_it() {
    let report = report_of(
        r#"[service]
name = "orders"
tier = "gold"

[endpoint]
listen = "127.0.0.1:6432"

[regions.a]
role = "primary"
nodes = [{ name = "a1", host = "127.0.0.1", port = 5432 }]
"#,
    );
    expect![[r#"
        error: service (line 1): [service], [endpoint], [regions] at the top level is the single-service shape, which [services.orders] replaced; rewrite it as: [service] name = "orders", tier = T -> [services.orders] kind = "postgres", tier = T; [endpoint] -> [services.orders.endpoint]; [probe] -> [services.orders.probe]; [failover] -> [services.orders.failover]; [regions.R] and [[regions.R.nodes]] -> [services.orders.regions.R] and [[services.orders.regions.R.nodes]] (see examples/two-region.toml)
    "#]]
    .assert_eq(&report);
}

#[test]
fn two_services_that_share_a_node_an_address_or_an_unknown_kind_are_refused() {
    let report = report_of(
        r#"[tiers.gold]
rto = "30s"
rpo = "1s"

[services.orders]
kind = "postgres"
tier = "gold"
endpoint = { listen = "127.0.0.1:6432" }
failover = { replication = "sync" }

[services.orders.regions.a]
role = "primary"
nodes = [{ name = "a1", host = "127.0.0.1", port = 5432 }]

[services.orders.regions.b]
role = "standby"
nodes = [{ name = "b1", host = "127.0.0.1", port = 5433 }]

[services.cache]
kind = "redis"
tier = "gold"
endpoint = { listen = "127.0.0.1:6432" }
failover = { replication = "sync-strict" }

[services.cache.regions.a]
role = "primary"
nodes = [{ name = "a1", host = "127.0.0.1", port = 6379, dbname = "postgres" }]

[services.cache.regions.b]
role = "standby"
nodes = [{ name = "c2", host = "127.0.0.1", port = 6380 }]
"#,
    );
    expect![[r#"
        error: services.cache.failover.replication (line 23): sync-strict is for PostgreSQL; for Redis use "sync" (promote only a replica holding every write a WAIT confirmed, and refuse writes without a replica via min-replicas-to-write)
        error: services.cache.regions.a.nodes[0].dbname (line 27): is for PostgreSQL nodes; a Redis node has host, port, user (an ACL user), password-file or password-env and fence-command
        error: services.orders.regions.a.nodes (line 13): node "a1" is also in service cache; a server belongs to one service: rename one of them or remove it from one service
        error: services.orders.endpoint.listen (line 8): 127.0.0.1:6432 is also the endpoint of service cache; give each service its own address
        warning: controller: no api-token-file or api-token-env: the API will refuse every changing request
    "#]]
    .assert_eq(&report);

    let report = report_of(
        r#"[services.orders]
kind = "mysql"
tier = "gold"
endpoint = { listen = "127.0.0.1:6432" }
regions = {}
"#,
    );
    assert!(
        report.contains("services.orders.kind (line 2): unknown variant `mysql`, expected `postgres` or `redis`"),
        "{report}"
    );
}

#[test]
fn a_backup_that_follows_the_primary_needs_exactly_one_postgresql_service() {
    let service = |name: &str, port: u16| {
        format!(
            r#"
[services.{name}]
kind = "postgres"
tier = "gold"
endpoint = {{ listen = "127.0.0.1:{port}" }}
[services.{name}.regions.a]
role = "primary"
nodes = [{{ name = "{name}-a", host = "127.0.0.1", port = 5432 }}]
[services.{name}.regions.b]
role = "standby"
nodes = [{{ name = "{name}-b", host = "127.0.0.1", port = 5433 }}]
"#
        )
    };
    let report = report_of(&format!(
        r#"[tiers.gold]
rto = "30s"
rpo = "1s"
{}{}
[backup.repositories.main]
location = "/srv/backups"
password-env = "LIFEBOAT_PASSWORD"

[backup.sources.db]
follow-primary = true
"#,
        service("orders", 6432),
        service("billing", 6433)
    ));
    assert!(
        report.contains("error: backup.sources.db.follow-primary (line 32): follows the primary of the one PostgreSQL service, and there are 2 (billing, orders); name a node with postgres = \"NODE\""),
        "{report}"
    );
}

#[test]
fn a_maintenance_window_is_open_from_each_opening_for_its_duration() {
    let m = lifeboat_config::MaintenanceConfig {
        start: "0 22 * * FRI".into(),
        duration: "4h".parse().unwrap(),
        services: vec![],
        allow_drills: false,
    };
    let ms = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp() as u64
            * 1000
    };
    // 2026-12-04 is a Friday.
    let opened = ms("2026-12-04T22:00:00Z");
    assert_eq!(m.open_at(ms("2026-12-04T22:00:00Z")), Some(opened));
    assert_eq!(
        m.open_at(ms("2026-12-05T01:59:59Z")),
        Some(opened),
        "past midnight"
    );
    assert_eq!(
        m.open_at(ms("2026-12-05T02:00:00Z")),
        None,
        "closed after 4 h"
    );
    assert_eq!(m.open_at(ms("2026-12-04T21:59:59Z")), None);
    assert!(m.covers("anything"));
}

#[test]
fn a_broken_notify_section_reports_every_error() {
    let report = report_of(
        r#"[tiers.gold]
rto = "30s"
rpo = "1s"

[services.orders]
kind = "postgres"
tier = "gold"
endpoint = { listen = "127.0.0.1:6432" }

[services.orders.regions.a]
role = "primary"
nodes = [{ name = "a1", host = "127.0.0.1", port = 5432 }]

[notify.chat]
kind = "slack"
url-file = "/run/slack-url"
url-env = "SLACK_URL"
services = ["billing"]

[notify.pager]
kind = "pagerduty"
min-severity = "critical"

[notify.hook]
kind = "webhook"
url = "ftp://example"
secret-env = "HOOK_SECRET"
max-per-minute = 0

[notify.mail]
kind = "email"
server = "127.0.0.1"
from = "lifeboat"
to = []
password-env = "SMTP_PASSWORD"

"#,
    );
    expect![[r#"
        error: notify.chat.url-env (line 17): set url-file or url-env, not both
        error: notify.chat.services[0] (line 18): no service "billing" (services: orders)
        error: notify.hook.url (line 26): must be an http:// or https:// URL
        error: notify.hook.max-per-minute (line 28): must be at least 1 (0 would never send)
        error: notify.mail.to (line 34): name at least one recipient
        error: notify.mail.from (line 33): "lifeboat" is not an email address
        error: notify.mail.username (line 30): a password is set without a username
        error: notify.pager.routing-key-file (line 20): the PagerDuty routing key is a secret: set routing-key-file (a file only Lifeboat reads) or routing-key-env (an environment variable)
        error: services.orders.regions (line 10): no standby node: add a region with role = "standby" to fail over to
        warning: controller: no api-token-file or api-token-env: the API will refuse every changing request
        warning: services.orders.failover.replication (line 5): async replication can lose the last acknowledged writes in an automatic failover
    "#]]
    .assert_eq(&report);
}

#[test]
fn an_unknown_notifier_kind_or_key_is_named() {
    let report = report_of(
        r#"[notify.x]
kind = "sms"
"#,
    );
    expect![[r#"
        error: notify.x.kind (line 2): unknown variant `sms`, expected one of `slack`, `pagerduty`, `webhook`, `email`
    "#]]
    .assert_eq(&report);
}

#[test]
fn a_notifier_key_of_another_kind_is_refused() {
    let report = report_of(
        r#"[notify.typo]
kind = "webhook"
url = "http://127.0.0.1:9/"
secret-env = "X"
routing-key-env = "PD"
"#,
    );
    expect![[r#"
        error: notify.typo.routing-key-env (line 1): unknown field `routing-key-env`, expected one of `url`, `secret-file`, `secret-env`, `min-severity`, `services`, `max-per-minute`, `timeout`, `give-up-after`
    "#]]
    .assert_eq(&report);
}
