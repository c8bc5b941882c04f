//! The PostgreSQL layer against real PostgreSQL servers on loopback.

use anyhow::Result;
use lifeboat_postgres::{self as pg, InitOptions, StopMode};
use lifeboat_testkit::{free_port, PgCluster, TestDir};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn probe_sees_roles_replicas_and_positions() -> Result<()> {
    let dir = TestDir::new("pg-probe")?;
    let p = PgCluster::primary(&dir, "p", InitOptions::default()).await?;
    let s = PgCluster::standby_of(&dir, "s", &p).await?;
    p.client()
        .await?
        .batch_execute("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
        .await?;

    let po = pg::probe(&p.conninfo(), T).await?;
    assert!(!po.in_recovery);
    assert_eq!(po.timeline, 1);
    assert!(po.current_lsn > 0);
    assert_eq!(po.replicas.len(), 1);
    assert_eq!(po.replicas[0].application_name, "s");
    assert_eq!(po.replicas[0].state, "streaming");
    assert_eq!(po.replicas[0].sync_state, "async");

    let so = pg::probe(&s.conninfo(), T).await?;
    assert!(so.in_recovery);
    assert!(so.wal_receiver_streaming);
    assert_eq!(so.system_identifier, po.system_identifier);
    assert!(so.replay_lsn.is_some() && so.current_lsn > 0);
    assert!(so.replicas.is_empty());
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_a_permanent_error_that_names_the_cause() -> Result<()> {
    let dir = TestDir::new("pg-auth")?;
    let opts = InitOptions {
        superuser_password: Some("right horse".into()),
        ..InitOptions::default()
    };
    let p = PgCluster::primary(&dir, "p", opts).await?;
    assert!(
        pg::probe(&p.conninfo(), T).await.is_ok(),
        "the right password works"
    );

    let mut wrong = p.conninfo();
    wrong.password = Some("battery staple".into());
    let err = pg::probe(&wrong, T).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"));
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("password authentication failed for user \"postgres\""),
        "{msg}"
    );
    assert!(!msg.contains("battery"), "the password leaked into: {msg}");
    assert!(!format!("{wrong:?}").contains("battery"));
    Ok(())
}

/// pg_basebackup gets the password through its environment, not its command line (which
/// every user sees in `ps`), and still clones from a primary that demands it.
#[tokio::test]
async fn a_standby_clones_from_a_primary_that_needs_a_password() -> Result<()> {
    let dir = TestDir::new("pg-auth-clone")?;
    let opts = InitOptions {
        superuser_password: Some("right horse".into()),
        ..InitOptions::default()
    };
    let p = PgCluster::primary(&dir, "p", opts).await?;
    let s = PgCluster::standby_of(&dir, "s", &p).await?;
    let so = pg::probe(&s.conninfo(), T).await?;
    assert!(so.in_recovery && so.wal_receiver_streaming, "{so:?}");
    Ok(())
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connect_error() -> Result<()> {
    let conn = pg::ConnInfo {
        host: "127.0.0.1".into(),
        port: free_port()?,
        user: "postgres".into(),
        password: None,
        dbname: "postgres".into(),
    };
    let err = pg::probe(&conn, T).await.unwrap_err();
    assert!(matches!(err, pg::PgError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to postgres@127.0.0.1:{}/postgres",
            conn.port
        )),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn read_only_fence_ends_sessions_and_blocks_writes_until_lifted() -> Result<()> {
    let dir = TestDir::new("pg-fence")?;
    let p = PgCluster::primary(&dir, "p", InitOptions::default()).await?;
    let victim = p.client().await?;
    victim.batch_execute("CREATE TABLE t(x int)").await?;

    let ended = pg::fence_read_only(&p.conninfo(), T).await?;
    assert!(ended >= 1, "the open session must be ended, ended {ended}");
    assert!(
        victim
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .is_err(),
        "an old session must not write"
    );
    let err = p
        .client()
        .await?
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap_err();
    assert!(
        format!("{:?}", err.as_db_error()).contains("read-only transaction"),
        "{err:?}"
    );
    assert!(pg::probe(&p.conninfo(), T).await?.default_read_only);
    assert!(
        pg::write_heartbeat(&p.conninfo(), 1, T).await.is_err(),
        "the write check must see the fence"
    );

    pg::unfence_read_only(&p.conninfo(), T).await?;
    p.client()
        .await?
        .batch_execute("INSERT INTO t VALUES (3)")
        .await?;
    assert!(!pg::probe(&p.conninfo(), T).await?.default_read_only);
    pg::write_heartbeat(&p.conninfo(), 1, T).await?;
    Ok(())
}

#[tokio::test]
async fn synchronous_standby_names_takes_effect() -> Result<()> {
    let dir = TestDir::new("pg-sync")?;
    let p = PgCluster::primary(&dir, "p", InitOptions::default()).await?;
    let _s = PgCluster::standby_of(&dir, "s", &p).await?;
    pg::set_synchronous_standby_names(&p.conninfo(), "FIRST 1 (\"s\")", T).await?;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let o = pg::probe(&p.conninfo(), T).await?;
        assert_eq!(o.synchronous_standby_names, "FIRST 1 (\"s\")");
        if o.replicas.first().is_some_and(|r| r.sync_state == "sync") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "standby never became sync: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg::write_heartbeat(&p.conninfo(), 7, T).await?;
    pg::set_synchronous_standby_names(&p.conninfo(), "", T).await?;
    Ok(())
}

#[tokio::test]
async fn promote_then_rewind_the_old_primary_into_a_standby() -> Result<()> {
    let dir = TestDir::new("pg-promote")?;
    let p = PgCluster::primary(&dir, "p", InitOptions::default()).await?;
    let s = PgCluster::standby_of(&dir, "s", &p).await?;
    p.client()
        .await?
        .batch_execute("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
        .await?;

    pg::promote(&s.conninfo(), T).await?;
    pg::promote(&s.conninfo(), T).await?; // idempotent
    let so = pg::probe(&s.conninfo(), T).await?;
    assert!(!so.in_recovery);
    assert_eq!(so.timeline, 2);
    pg::write_heartbeat(&s.conninfo(), 2, T).await?;

    // The old primary diverges, then is stopped and rewound onto the new timeline.
    p.client()
        .await?
        .batch_execute("INSERT INTO t VALUES (99)")
        .await?;
    p.server.stop(StopMode::Fast, T).await?;
    p.server
        .rewind_from(&s.conninfo(), "p", Duration::from_secs(60))
        .await?;
    p.server.start(Duration::from_secs(60)).await?;
    p.wait_streaming(Duration::from_secs(30)).await?;
    let rows: Vec<i32> = p
        .client()
        .await?
        .query("SELECT x FROM t ORDER BY x", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        vec![1],
        "the diverged write must be gone after the rewind"
    );
    assert_eq!(
        pg::probe(&s.conninfo(), T).await?.replicas[0].application_name,
        "p"
    );
    Ok(())
}

/// A libpq string reaches a server that demands a password, bounded; a wrong password is a
/// permanent error that names the server but never carries the password.
#[tokio::test]
async fn a_connection_string_connects_and_keeps_its_password_out_of_errors() -> Result<()> {
    let dir = TestDir::new("pg-connect-str")?;
    let opts = InitOptions {
        superuser_password: Some("right horse".into()),
        ..InitOptions::default()
    };
    let p = PgCluster::primary(&dir, "p", opts).await?;
    let c = pg::connect_str(&p.conninfo().to_libpq(Some("argv-test")), T).await?;
    let name: String = pg::within(
        "query",
        "p",
        T,
        c.query_one("SELECT current_setting('application_name')", &[]),
    )
    .await?
    .get(0);
    assert_eq!(name, "argv-test");

    let mut wrong = p.conninfo();
    wrong.password = Some("battery staple".into());
    let err = pg::connect_str(&wrong.to_libpq(None), T).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"));
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot connect to host='127.0.0.1' port={}",
            p.port()
        )),
        "{msg}"
    );
    assert!(!msg.contains("battery"), "the password leaked into: {msg}");
    Ok(())
}
