//! The embedded store: one SQLite file holding each service's durable controller state, the
//! event log, every decision (and decision not to act), incidents with their step timelines,
//! and the audit log of operator actions. It survives restarts; it is not shared between
//! controllers. A [`Store`] is scoped to one service ([`Store::service`]): what it writes is
//! tagged with that service, and its state is that service's alone.
//!
//! Calls are short synchronous transactions; callers never hold the connection across an
//! `.await`.

mod drills;
mod outbox;
pub use drills::{DrillRun, FaultRow};
pub use outbox::{Cursor, Delivery, Stored, Update};

use lifeboat_core::notice::StatusState;
use lifeboat_core::{ControllerState, Decision, Millis, Plan};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state store {path}: {source}; check that the state directory is writable"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state store holds unreadable data: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("cannot create the state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a database, fails its integrity check, or holds a state that cannot be
    /// decoded. Permanent: starting anyway would forget the primary, the epoch and the fences.
    #[error(
        "the state store {path} is damaged ({detail}); Lifeboat does not start without its \
         state (primary, epoch, fences, a plan in flight). Restore the file from a copy, or \
         move it aside to start afresh: Lifeboat then adopts the one writable node and refuses \
         to choose between several (`lifeboat failover --to NODE` decides)"
    )]
    Damaged { path: PathBuf, detail: String },
}

/// How a step or an incident ended. `Unknown`: Lifeboat could not find out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    Ok,
    Failed,
    Unknown,
    Compensated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::Compensated => "compensated",
        }
    }
    fn parse(s: &str) -> Outcome {
        match s {
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "unknown" => Outcome::Unknown,
            "compensated" => Outcome::Compensated,
            _ => Outcome::Running,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub ended_ms: Option<u64>,
    pub step: String,
    pub node: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// Measured figures of an incident (all durations in milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// First failed probe of the lost primary (the observed fault time).
    pub fault_at_ms: Option<u64>,
    /// Last successful probe before the fault: the fault happened after this.
    pub last_ok_at_ms: Option<u64>,
    /// Fault → the primary declared lost.
    pub detect_ms: Option<u64>,
    /// Fault → the new primary promoted.
    pub promote_ms: Option<u64>,
    /// Fault → first successful write on the new primary (the measured RTO).
    pub first_write_ms: Option<u64>,
    /// How far the promoted standby was behind the old primary's last known position.
    pub lag_bytes_at_fault: Option<u64>,
    pub rto_target_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub service: String,
    pub kind: String,
    pub status: Outcome,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    pub old_primary: Option<String>,
    pub target: Option<String>,
    pub epoch: u64,
    pub plan: String,
    pub figures: Figures,
    pub timeline: Vec<TimelineEntry>,
    /// Its public state: the newest update's, else investigating while its plan runs and
    /// resolved after (incidents from before status states).
    #[serde(default = "investigating")]
    pub state: StatusState,
    #[serde(default)]
    pub updates: Vec<Update>,
}

fn investigating() -> StatusState {
    StatusState::Investigating
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at_ms: u64,
    pub kind: String,
    pub message: String,
    pub service: String,
}

/// The database, and the service whose records this handle reads and writes.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    service: String,
    /// Called after a notice is stored (the dispatcher's wake-up).
    waker: Arc<Mutex<Option<Waker>>>,
}

type Waker = Arc<dyn Fn() + Send + Sync>;

/// `state` holds the state of the single service of versions before `[services.NAME]`; the
/// first PostgreSQL service to load its state claims it ([`Store::state`]).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_state (service TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, opened_ms INTEGER NOT NULL,
  closed_ms INTEGER, old_primary TEXT, target TEXT, epoch INTEGER NOT NULL, plan TEXT NOT NULL,
  figures TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS timeline (
  id INTEGER PRIMARY KEY, incident INTEGER NOT NULL REFERENCES incidents(id), at_ms INTEGER NOT NULL,
  ended_ms INTEGER, step TEXT NOT NULL, node TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
"#;

/// An `events` row read as `SELECT id, at_ms, kind, message, service`.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        at_ms: r.get::<_, i64>(1)? as u64,
        kind: r.get(2)?,
        message: r.get(3)?,
        service: r.get(4)?,
    })
}

/// `Damaged` for a file that is not a database or is corrupt; otherwise an open error.
fn damaged_or(path: &Path, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => StoreError::Damaged {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

impl Store {
    /// Opens (creating if needed) `dir/lifeboat.db`. A file that is not a database or fails
    /// SQLite's quick check is refused as `Damaged`, and so is, by [`Store::state`], a state
    /// that does not decode: the caller must not start without its state.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.into(),
            source,
        })?;
        let path = dir.join("lifeboat.db");
        let opened = |source: rusqlite::Error| damaged_or(&path, source);
        let conn = Connection::open(&path).map_err(opened)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(opened)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(opened)?;
        if check != "ok" {
            return Err(StoreError::Damaged {
                path,
                detail: format!("integrity check: {check}"),
            });
        }
        conn.execute_batch(SCHEMA).map_err(opened)?;
        conn.execute_batch(drills::SCHEMA).map_err(opened)?;
        conn.execute_batch(outbox::SCHEMA).map_err(opened)?;
        for table in ["events", "incidents"] {
            let has: bool = conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM pragma_table_info('{table}') WHERE name = 'service'"
                    ),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(opened)?
                > 0;
            if !has {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN service TEXT NOT NULL DEFAULT ''"
                ))
                .map_err(opened)?;
            }
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
            service: String::new(),
            waker: Arc::default(),
        })
    }

    /// `f` is called after every notice is stored, from the thread that stored it.
    pub fn on_notice(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    fn wake(&self) {
        let w = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = w {
            w()
        }
    }

    /// The same database, scoped to `service`.
    pub fn service(&self, service: &str) -> Store {
        Store {
            service: service.to_owned(),
            ..self.clone()
        }
    }

    pub fn service_name(&self) -> &str {
        &self.service
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    /// This service's durable state. `claim_legacy`: a service with no state of its own yet
    /// takes over the state of the single service of earlier versions (its primary, epoch
    /// and fences), once; the caller passes it for the one PostgreSQL service.
    pub fn state(&self, claim_legacy: bool) -> Result<ControllerState, StoreError> {
        self.with(|c| {
            let read = |sql: &str| -> Result<Option<String>, StoreError> {
                c.query_row(sql, [&self.service], |r| r.get(0))
                    .optional()
                    .map_err(|e| damaged_or(&self.path, e))
            };
            let mut json = read("SELECT json FROM service_state WHERE service = ?1")?;
            if json.is_none() && claim_legacy {
                json = read("SELECT json FROM state WHERE id = 1 AND ?1 IS NOT NULL")?;
                if let Some(j) = &json {
                    c.execute(
                        "INSERT INTO service_state (service, json) VALUES (?1, ?2)",
                        params![self.service, j],
                    )?;
                    c.execute("DELETE FROM state WHERE id = 1", [])?;
                }
            }
            Ok(match json {
                Some(j) => serde_json::from_str(&j).map_err(|e| StoreError::Damaged {
                    path: self.path.clone(),
                    detail: format!("the controller state does not decode: {e}"),
                })?,
                None => ControllerState::default(),
            })
        })
    }

    /// Writes the whole state in one transaction (fsynced: `synchronous=FULL`).
    pub fn put_state(&self, s: &ControllerState) -> Result<(), StoreError> {
        let json = serde_json::to_string(s)?;
        self.with(|c| {
            c.execute("INSERT INTO service_state (service, json) VALUES (?1, ?2) ON CONFLICT(service) DO UPDATE SET json = excluded.json", params![self.service, json])?;
            Ok(())
        })
    }

    pub fn event(&self, at: Millis, kind: &str, message: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO events (at_ms, kind, message, service) VALUES (?1, ?2, ?3, ?4)",
                params![at.0 as i64, kind, message, self.service],
            )?;
            Ok(())
        })
    }

    /// This service's events from `from` to `to` (inclusive), oldest first, at most `limit`.
    pub fn events_between(
        &self,
        from: Millis,
        to: Millis,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, at_ms, kind, message, service FROM events WHERE service = ?1 AND at_ms BETWEEN ?2 AND ?3 ORDER BY id LIMIT ?4",
            )?;
            let rows = st.query_map(
                params![self.service, from.0 as i64, to.0 as i64, limit],
                event_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Logs a decision (`decision` kind events): what was decided and every reason.
    pub fn decision(&self, at: Millis, d: &Decision) -> Result<(), StoreError> {
        self.event(at, "decision", d.to_string().trim_end())
    }

    pub fn events(&self, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, at_ms, kind, message, service FROM events ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit], event_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn audit(
        &self,
        at: Millis,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![at.0 as i64, actor, action, detail],
            )?;
            Ok(())
        })
    }

    pub fn open_incident(
        &self,
        at: Millis,
        plan: &Plan,
        figures: &Figures,
    ) -> Result<i64, StoreError> {
        let figures = serde_json::to_string(figures)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO incidents (kind, status, opened_ms, old_primary, target, epoch, plan, figures, service) VALUES (?1, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![plan.kind.as_str(), at.0 as i64, plan.old_primary, plan.target, plan.epoch as i64, plan.to_string(), figures, self.service],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn update_figures(&self, incident: i64, figures: &Figures) -> Result<(), StoreError> {
        let figures = serde_json::to_string(figures)?;
        self.with(|c| {
            c.execute(
                "UPDATE incidents SET figures = ?1 WHERE id = ?2",
                params![figures, incident],
            )?;
            Ok(())
        })
    }

    pub fn close_incident(
        &self,
        incident: i64,
        at: Millis,
        status: Outcome,
        figures: &Figures,
    ) -> Result<(), StoreError> {
        let figures = serde_json::to_string(figures)?;
        self.with(|c| {
            c.execute(
                "UPDATE incidents SET status = ?1, closed_ms = ?2, figures = ?3 WHERE id = ?4",
                params![status.as_str(), at.0 as i64, figures, incident],
            )?;
            Ok(())
        })
    }

    /// Records that a step started; returns the timeline row to finish later.
    pub fn step_started(
        &self,
        incident: i64,
        at: Millis,
        step: &str,
        node: &str,
        detail: &str,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO timeline (incident, at_ms, step, node, outcome, detail) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                params![incident, at.0 as i64, step, node, detail],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn step_finished(
        &self,
        row: i64,
        at: Millis,
        outcome: Outcome,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE timeline SET ended_ms = ?1, outcome = ?2, detail = ?3 WHERE id = ?4",
                params![at.0 as i64, outcome.as_str(), detail, row],
            )?;
            Ok(())
        })
    }

    /// The id of this service's newest incident.
    pub fn last_incident(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT max(id) FROM incidents WHERE service = ?1",
                [&self.service],
                |r| r.get(0),
            )?)
        })
    }

    pub fn incidents(&self, limit: u32) -> Result<Vec<Incident>, StoreError> {
        let ids: Vec<i64> = self.with(|c| {
            let mut st = c.prepare("SELECT id FROM incidents ORDER BY id DESC LIMIT ?1")?;
            let rows = st.query_map([limit], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        ids.into_iter()
            .filter_map(|id| self.incident(id).transpose())
            .collect()
    }

    pub fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT kind, status, opened_ms, closed_ms, old_primary, target, epoch, plan, figures, service FROM incidents WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, String>(7)?,
                            r.get::<_, String>(8)?,
                            r.get::<_, String>(9)?,
                        ))
                    },
                )
                .optional()?;
            let Some((kind, status, opened, closed, old_primary, target, epoch, plan, figures, service)) = row else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT at_ms, ended_ms, step, node, outcome, detail FROM timeline WHERE incident = ?1 ORDER BY id",
            )?;
            let timeline = st
                .query_map([id], |r| {
                    Ok(TimelineEntry {
                        at_ms: r.get::<_, i64>(0)? as u64,
                        ended_ms: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        step: r.get(2)?,
                        node: r.get(3)?,
                        outcome: Outcome::parse(&r.get::<_, String>(4)?),
                        detail: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let updates = Store::updates_of(c, id)?;
            let status = Outcome::parse(&status);
            let state = match updates.last() {
                Some(u) => u.state,
                None if status == Outcome::Running => StatusState::Investigating,
                None => StatusState::Resolved,
            };
            Ok(Some(Incident {
                id,
                service,
                kind,
                status,
                opened_ms: opened as u64,
                closed_ms: closed.map(|v| v as u64),
                old_primary,
                target,
                epoch: epoch as u64,
                plan,
                figures: serde_json::from_str(&figures)?,
                timeline,
                state,
                updates,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::{PlanKind, Step};

    #[test]
    fn state_incidents_and_timeline_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            kind: PlanKind::Failover,
            epoch: 2,
            old_primary: Some("a".into()),
            target: Some("b".into()),
            steps: vec![Step::Promote { node: "b".into() }],
            reasons: vec!["primary a down".into()],
            fault_at: Some(Millis(10)),
            lag_bytes: Some(0),
        };
        {
            let s = Store::open(dir.path()).unwrap().service("orders");
            let st = ControllerState {
                primary: Some("a".into()),
                epoch: 2,
                in_flight: Some(plan.clone()),
                ..Default::default()
            };
            s.put_state(&st).unwrap();
            let id = s
                .open_incident(Millis(10), &plan, &Figures::default())
                .unwrap();
            let row = s.step_started(id, Millis(11), "promote", "b", "").unwrap();
            s.step_finished(row, Millis(12), Outcome::Unknown, "timed out after 10s")
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap().service("orders");
        assert_eq!(s.state(false).unwrap().in_flight, Some(plan));
        assert_eq!(
            s.service("cache").state(false).unwrap(),
            ControllerState::default(),
            "each service has its own state"
        );
        let inc = s.incidents(10).unwrap();
        assert_eq!(inc.len(), 1);
        assert_eq!(inc[0].service, "orders");
        assert_eq!(s.last_incident().unwrap(), Some(inc[0].id));
        assert_eq!(s.service("cache").last_incident().unwrap(), None);
        assert_eq!(inc[0].status, Outcome::Running);
        assert_eq!(inc[0].timeline[0].outcome, Outcome::Unknown);
        assert_eq!(inc[0].timeline[0].detail, "timed out after 10s");
    }

    /// A state row that no longer decodes (a partial write by hand, a downgrade) is damage,
    /// named with the file, never an empty state.
    #[test]
    fn a_state_that_does_not_decode_is_damage_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().service("orders");
        let s = ControllerState {
            primary: Some("pg-a".into()),
            epoch: 7,
            ..Default::default()
        };
        store.put_state(&s).unwrap();
        assert_eq!(store.state(false).unwrap(), s);
        store
            .with(|c| {
                c.execute(
                    "UPDATE service_state SET json = '{\"primary\": 3' WHERE service = 'orders'",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        let err = store.state(false).unwrap_err().to_string();
        let db = dir.path().join("lifeboat.db");
        assert!(
            err.starts_with(&format!(
                "the state store {} is damaged (the controller state does not decode",
                db.display()
            )),
            "{err}"
        );
    }

    /// The state of the single service of earlier versions is not lost with the new config
    /// shape: the PostgreSQL service claims it, once.
    #[test]
    fn the_state_of_the_former_single_service_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = ControllerState {
            primary: Some("pg-b".into()),
            epoch: 9,
            fenced: ["pg-a".to_string()].into(),
            ..Default::default()
        };
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO state (id, json) VALUES (1, ?1)",
                    [serde_json::to_string(&old)?],
                )?;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.service("cache").state(false).unwrap(),
            ControllerState::default()
        );
        assert_eq!(store.service("orders").state(true).unwrap(), old);
        assert_eq!(
            store.service("other").state(true).unwrap(),
            ControllerState::default(),
            "claimed once"
        );
        assert_eq!(
            Store::open(dir.path())
                .unwrap()
                .service("orders")
                .state(false)
                .unwrap(),
            old
        );
    }
}
