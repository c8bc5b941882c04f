//! Short SQL conversations with one server, each on a fresh connection and bounded in time.

use crate::error::{describe, PgError};
use crate::lsn::parse_lsn;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Where and as whom to connect. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl ConnInfo {
    /// How to reach the configured node `n`, with its password (read once, by the caller,
    /// from the node's password-file or password-env).
    pub fn of_node(n: &lifeboat_config::NodeConfig, password: Option<String>) -> ConnInfo {
        ConnInfo {
            host: n.host.clone(),
            port: n.port,
            user: n.pg_user().to_owned(),
            password,
            dbname: n.pg_dbname().to_owned(),
        }
    }

    /// A libpq connection string with the password, for `primary_conninfo` (a file only the
    /// server's OS user reads). Never for a command line as it is: a tool gets it through
    /// [`crate::PgTool::conninfo`], the password in its environment.
    pub fn to_libpq(&self, application_name: Option<&str>) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            q(&self.host),
            self.port,
            q(&self.user),
            q(&self.dbname)
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", q(p)));
        }
        if let Some(a) = application_name {
            s.push_str(&format!(" application_name={}", q(a)));
        }
        s
    }
}

/// What one probe saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PgObservation {
    pub in_recovery: bool,
    pub system_identifier: u64,
    pub timeline: u32,
    /// Primary: the WAL insert position. Standby: the furthest of received and replayed.
    pub current_lsn: u64,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub wal_receiver_streaming: bool,
    /// Primary only: one row of `pg_stat_replication` per connected standby.
    pub replicas: Vec<ReplicaState>,
    pub synchronous_standby_names: String,
    pub default_read_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaState {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
    pub sent_lsn: Option<u64>,
    pub flush_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub write_lag_s: Option<f64>,
    pub flush_lag_s: Option<f64>,
    pub replay_lag_s: Option<f64>,
}

async fn bounded<T>(
    what: &'static str,
    conn: &ConnInfo,
    timeout: Duration,
    fut: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(PgError::Timeout {
                what,
                target: conn.to_string(),
                after: timeout,
            })
        })
}

fn query_err<'a>(
    what: &'static str,
    conn: &'a ConnInfo,
) -> impl Fn(tokio_postgres::Error) -> PgError + 'a {
    move |e| {
        let (reason, sqlstate) = describe(&e);
        PgError::Query {
            what,
            target: conn.to_string(),
            reason,
            sqlstate,
        }
    }
}

/// Opens a fresh connection; the connection task ends when the client is dropped.
pub async fn connect(conn: &ConnInfo, timeout: Duration) -> Result<Client, PgError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&conn.host)
        .port(conn.port)
        .user(&conn.user)
        .dbname(&conn.dbname)
        .application_name("lifeboat");
    if let Some(p) = &conn.password {
        cfg.password(p);
    }
    connect_config(cfg, conn.to_string(), timeout).await
}

/// Opens a fresh connection to the server of a libpq connection string (`key=value` pairs
/// or a `postgres://` URI), bounded by `timeout`; errors name the server by the string
/// without its password. Without an `application_name` in the string, it is `lifeboat`.
pub async fn connect_str(conninfo: &str, timeout: Duration) -> Result<Client, PgError> {
    let target = redact(conninfo);
    let mut cfg: tokio_postgres::Config = conninfo.parse().map_err(|e| PgError::Refused {
        what: "reading the connection string",
        target: target.clone(),
        reason: format!("{e}; write it as libpq key=value pairs or a postgres:// URI"),
    })?;
    if cfg.get_application_name().is_none() {
        cfg.application_name("lifeboat");
    }
    connect_config(cfg, target, timeout).await
}

/// A libpq connection string without its password, to name a server in messages.
pub fn redact(conninfo: &str) -> String {
    crate::split_password(conninfo).0
}

async fn connect_config(
    mut cfg: tokio_postgres::Config,
    target: String,
    timeout: Duration,
) -> Result<Client, PgError> {
    cfg.connect_timeout(timeout);
    let connecting = async {
        cfg.connect(NoTls).await.map_err(|e| {
            let (reason, sqlstate) = describe(&e);
            PgError::Connect {
                target: target.clone(),
                reason,
                sqlstate,
            }
        })
    };
    let (client, connection) = tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(PgError::Timeout {
                what: "connecting",
                target: target.clone(),
                after: timeout,
            })
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// One request on an open connection to `target` (how messages name the server), bounded
/// by `timeout`: `what` it was, the server's own message when it failed, or how long it was
/// waited for.
pub async fn within<T>(
    what: &'static str,
    target: &str,
    timeout: Duration,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(r) => r.map_err(|e| {
            let (reason, sqlstate) = describe(&e);
            PgError::Query {
                what,
                target: target.to_owned(),
                reason,
                sqlstate,
            }
        }),
        Err(_) => Err(PgError::Timeout {
            what,
            target: target.to_owned(),
            after: timeout,
        }),
    }
}

fn lsn(v: Option<String>) -> Option<u64> {
    v.as_deref().and_then(parse_lsn)
}

/// Role, WAL positions, replication state and fence state, over a fresh connection.
pub async fn probe(conn: &ConnInfo, timeout: Duration) -> Result<PgObservation, PgError> {
    bounded("probe", conn, timeout, async {
        let c = connect(conn, timeout).await?;
        let e = query_err("probe", conn);
        let row = c
            .query_one(
                "SELECT pg_is_in_recovery(), \
                        (SELECT system_identifier FROM pg_control_system())::text, \
                        current_setting('synchronous_standby_names'), \
                        current_setting('default_transaction_read_only') = 'on', \
                        (SELECT timeline_id FROM pg_control_checkpoint())",
                &[],
            )
            .await
            .map_err(&e)?;
        let mut o = PgObservation {
            in_recovery: row.get(0),
            system_identifier: row.get::<_, String>(1).parse().unwrap_or(0),
            synchronous_standby_names: row.get(2),
            default_read_only: row.get(3),
            timeline: row.get::<_, i32>(4) as u32,
            ..PgObservation::default()
        };
        if o.in_recovery {
            let row = c
                .query_one(
                    "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                            (SELECT status FROM pg_stat_wal_receiver), \
                            (SELECT received_tli FROM pg_stat_wal_receiver)",
                    &[],
                )
                .await
                .map_err(&e)?;
            o.receive_lsn = lsn(row.get(0));
            o.replay_lsn = lsn(row.get(1));
            o.current_lsn = o.receive_lsn.max(o.replay_lsn).unwrap_or(0);
            o.wal_receiver_streaming = row.get::<_, Option<String>>(2).as_deref() == Some("streaming");
            if let Some(tli) = row.get::<_, Option<i32>>(3) {
                o.timeline = o.timeline.max(tli as u32);
            }
        } else {
            // The checkpoint's timeline lags just after a promotion; the WAL file name does not.
            let row = c
                .query_one("SELECT pg_current_wal_lsn()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)", &[])
                .await
                .map_err(&e)?;
            o.current_lsn = lsn(row.get(0)).unwrap_or(0);
            o.timeline = u32::from_str_radix(&row.get::<_, String>(1), 16).unwrap_or(o.timeline);
            let rows = c
                .query(
                    "SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''), \
                            sent_lsn::text, flush_lsn::text, replay_lsn::text, \
                            extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8, \
                            extract(epoch FROM replay_lag)::float8 \
                     FROM pg_stat_replication ORDER BY application_name",
                    &[],
                )
                .await
                .map_err(&e)?;
            o.replicas = rows
                .iter()
                .map(|r| ReplicaState {
                    application_name: r.get(0),
                    state: r.get(1),
                    sync_state: r.get(2),
                    sent_lsn: lsn(r.get(3)),
                    flush_lsn: lsn(r.get(4)),
                    replay_lsn: lsn(r.get(5)),
                    write_lag_s: r.get(6),
                    flush_lag_s: r.get(7),
                    replay_lag_s: r.get(8),
                })
                .collect();
        }
        Ok(o)
    })
    .await
}

/// Promotes a standby with `pg_promote()` and waits until it leaves recovery. A server that is
/// already out of recovery counts as promoted.
pub async fn promote(conn: &ConnInfo, timeout: Duration) -> Result<(), PgError> {
    bounded("promotion", conn, timeout, async {
        let c = connect(conn, timeout).await?;
        let e = query_err("promotion", conn);
        let one = |sql: &'static str| {
            let (c, e) = (&c, &e);
            async move {
                c.query_one(sql, &[])
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .map_err(e)
            }
        };
        if !one("SELECT pg_is_in_recovery()").await? {
            return Ok(());
        }
        // Without waiting inside the server (which polls every 100 ms), then poll faster here.
        if !one("SELECT pg_promote(false)").await? {
            let reason = "pg_promote() returned false".into();
            return Err(PgError::Refused {
                what: "promotion",
                target: conn.to_string(),
                reason,
            });
        }
        while one("SELECT pg_is_in_recovery()").await? {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    })
    .await
}

async fn alter_system(
    c: &Client,
    conn: &ConnInfo,
    what: &'static str,
    sql: &str,
) -> Result<(), PgError> {
    let e = query_err(what, conn);
    c.batch_execute(sql).await.map_err(&e)?;
    c.batch_execute("SELECT pg_reload_conf()").await.map_err(&e)
}

/// Makes new transactions read-only by default and ends every client session, so that no
/// client keeps writing to a fenced server. Replication connections are kept. Returns the
/// number of sessions ended.
pub async fn fence_read_only(conn: &ConnInfo, timeout: Duration) -> Result<u32, PgError> {
    bounded("read-only fence", conn, timeout, async {
        let c = connect(conn, timeout).await?;
        alter_system(
            &c,
            conn,
            "read-only fence",
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .await?;
        let n: i64 = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map_err(query_err("ending client sessions", conn))?
            .get(0);
        Ok(n as u32)
    })
    .await
}

/// Lifts a read-only fence.
pub async fn unfence_read_only(conn: &ConnInfo, timeout: Duration) -> Result<(), PgError> {
    bounded("lifting the read-only fence", conn, timeout, async {
        let c = connect(conn, timeout).await?;
        alter_system(
            &c,
            conn,
            "lifting the read-only fence",
            "ALTER SYSTEM RESET default_transaction_read_only",
        )
        .await
    })
    .await
}

/// Sets `synchronous_standby_names` and waits until a new session sees the value.
pub async fn set_synchronous_standby_names(
    conn: &ConnInfo,
    value: &str,
    timeout: Duration,
) -> Result<(), PgError> {
    const WHAT: &str = "setting synchronous_standby_names";
    bounded(WHAT, conn, timeout, async {
        let c = connect(conn, timeout).await?;
        let literal = format!("'{}'", value.replace('\'', "''"));
        alter_system(
            &c,
            conn,
            WHAT,
            &format!("ALTER SYSTEM SET synchronous_standby_names = {literal}"),
        )
        .await?;
        loop {
            // Past the change: a failure here is not a connect error, the outcome is unknown.
            let c = connect(conn, timeout).await.map_err(|e| PgError::Query {
                what: WHAT,
                target: conn.to_string(),
                reason: format!("changed, then could not check the new value: {e}"),
                sqlstate: e.sqlstate().map(str::to_owned),
            })?;
            let now: String = c
                .query_one("SELECT current_setting('synchronous_standby_names')", &[])
                .await
                .map_err(query_err(WHAT, conn))?
                .get(0);
            if now == value {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Commits a transaction that writes WAL and carries the fencing token, proving the server
/// takes writes (and, in sync mode, that a synchronous standby acknowledges them).
pub async fn write_heartbeat(
    conn: &ConnInfo,
    epoch: u64,
    timeout: Duration,
) -> Result<(), PgError> {
    bounded("write check", conn, timeout, async {
        let c = connect(conn, timeout).await?;
        let e = query_err("write check", conn);
        c.batch_execute("BEGIN").await.map_err(&e)?;
        // txid_current() and a WAL message pass in a read-only transaction: ask, as a
        // client's INSERT would find out.
        let read_only: String = c.query_one("SHOW transaction_read_only", &[]).await.map_err(&e)?.get(0);
        if read_only == "on" {
            return Err(PgError::Refused { what: "write check", target: conn.to_string(), reason: "the server is read-only (fenced)".into() });
        }
        let sql = format!("SELECT txid_current(); SELECT pg_logical_emit_message(true, 'lifeboat', 'epoch {epoch}'); COMMIT");
        c.batch_execute(&sql).await.map_err(&e)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::ConnInfo;

    /// What `to_libpq` quotes, `split_password` reads back: a tool's command line gets the
    /// string without the password, its environment the password itself.
    #[test]
    fn a_tools_command_line_never_carries_the_password() {
        let c = ConnInfo {
            host: "db.example".into(),
            port: 5432,
            user: "lifeboat".into(),
            password: Some("s3cr'et \\ x".into()),
            dbname: "postgres".into(),
        };
        let (public, password) = crate::split_password(&c.to_libpq(Some("eu-west-1")));
        assert_eq!(
            public,
            "host='db.example' port=5432 user='lifeboat' dbname='postgres' application_name='eu-west-1'"
        );
        assert_eq!(password.as_deref(), Some("s3cr'et \\ x"));
        let none = ConnInfo {
            password: None,
            ..c
        };
        assert_eq!(crate::split_password(&none.to_libpq(None)).1, None);
    }

    #[tokio::test]
    async fn a_bad_connection_string_is_refused_without_its_password() {
        let err = super::connect_str(
            "host=db port=notaport password=s3cret",
            std::time::Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("host=db port=notaport"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(!err.is_retryable());
    }
}
