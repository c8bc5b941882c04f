//! The outbox: every notice, durable before anyone is told, and how far each notifier has got.
//!
//! A notifier reads the notices in id order from its *cursor* (the last notice it has settled:
//! sent, refused by the receiver, given up, or not routed to it). A notice is settled and the
//! cursor moved in one transaction, so a restart resumes exactly where delivery stopped:
//! nothing is lost, and nothing settled is sent again. The retry state of the notice at the
//! head (attempts, when next, the last error) is on the cursor too.
//!
//! Incidents' status states (investigating → identified → monitoring → resolved) are the
//! `incident_updates` rows: who set which state when, with a message.

use crate::{Store, StoreError};
use lifeboat_core::notice::{Notice, StatusState};
use lifeboat_core::Millis;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS notices (
  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, service TEXT NOT NULL, key TEXT NOT NULL,
  kind TEXT NOT NULL, incident INTEGER, only_to TEXT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_cursor (
  notifier TEXT PRIMARY KEY, after INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_ms INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS deliveries (
  id INTEGER PRIMARY KEY, notifier TEXT NOT NULL, notice INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL, at_ms INTEGER NOT NULL, error TEXT);
CREATE INDEX IF NOT EXISTS deliveries_by_notice ON deliveries (notice, notifier);
CREATE TABLE IF NOT EXISTS incident_updates (
  id INTEGER PRIMARY KEY, incident INTEGER NOT NULL, at_ms INTEGER NOT NULL, state TEXT NOT NULL,
  message TEXT NOT NULL, actor TEXT NOT NULL);
"#;

/// A notice as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: i64,
    /// Only this notifier gets it (a test message).
    pub only_to: Option<String>,
    pub notice: Notice,
}

/// Where a notifier stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last settled notice.
    pub after: i64,
    /// Failed attempts at the notice after it.
    pub attempts: u32,
    pub next_ms: u64,
    pub last_error: Option<String>,
}

/// How a notice ended for a notifier: `sent`, `refused` (a 4xx: not retried), `expired`
/// (retried until give-up-after).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub notifier: String,
    pub notice: i64,
    pub state: String,
    pub attempts: u32,
    pub at_ms: u64,
    pub error: Option<String>,
}

/// One status update of an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub at_ms: u64,
    pub state: StatusState,
    pub message: String,
    /// `lifeboat` or the operator.
    pub actor: String,
}

impl Store {
    /// Stores a notice (for every notifier, or `only_to` one) and wakes the dispatcher.
    pub fn notice(&self, n: &Notice, only_to: Option<&str>) -> Result<i64, StoreError> {
        let json = serde_json::to_string(n)?;
        let id = self.with(|c| {
            c.execute(
                "INSERT INTO notices (at_ms, service, key, kind, incident, only_to, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![n.at.0 as i64, n.service, n.key, n.kind.as_str(), n.incident, only_to, json],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        self.wake();
        Ok(id)
    }

    /// Gives a notifier seen for the first time its cursor, after the newest notice (it does
    /// not receive the history); a known one keeps its own.
    pub fn start_cursor(&self, notifier: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO notify_cursor (notifier, after) SELECT ?1, coalesce(max(id), 0) FROM notices",
                [notifier],
            )?;
            Ok(())
        })
    }

    /// The notifier's cursor ([`Store::start_cursor`] made it).
    pub fn cursor(&self, notifier: &str) -> Result<Cursor, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT after, attempts, next_ms, last_error FROM notify_cursor WHERE notifier = ?1",
                [notifier],
                |r| {
                    Ok(Cursor {
                        after: r.get(0)?,
                        attempts: r.get::<_, i64>(1)? as u32,
                        next_ms: r.get::<_, i64>(2)? as u64,
                        last_error: r.get(3)?,
                    })
                },
            )?)
        })
    }

    /// Up to `limit` notices after `after` that `notifier` may get, oldest first.
    pub fn notices_after(
        &self,
        notifier: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Stored>, StoreError> {
        let rows: Vec<(i64, Option<String>, String)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, only_to, json FROM notices WHERE id > ?1 AND (only_to IS NULL OR only_to = ?2) ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![after, notifier, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(id, only_to, json)| {
                Ok(Stored {
                    id,
                    only_to,
                    notice: serde_json::from_str(&json)?,
                })
            })
            .collect()
    }

    /// How many notices `notifier` has not settled yet (routed to it or not).
    pub fn behind(&self, notifier: &str, after: i64) -> Result<u64, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM notices WHERE id > ?1 AND (only_to IS NULL OR only_to = ?2)",
                params![after, notifier],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Settles `settled` (each with its state; `None` for a notice not routed to the
    /// notifier) and moves the cursor past `to`, in one transaction.
    pub fn settle(
        &self,
        notifier: &str,
        to: i64,
        settled: &[(i64, &str)],
        attempts: u32,
        at: Millis,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for (notice, state) in settled {
                tx.execute(
                    "INSERT INTO deliveries (notifier, notice, state, attempts, at_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![notifier, notice, state, attempts, at.0 as i64, error],
                )?;
            }
            tx.execute(
                "UPDATE notify_cursor SET after = ?2, attempts = 0, next_ms = 0, last_error = NULL WHERE notifier = ?1",
                params![notifier, to],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Records a failed attempt at the head notice: try again at `next`.
    pub fn retry_at(
        &self,
        notifier: &str,
        attempts: u32,
        next: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE notify_cursor SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE notifier = ?1",
                params![notifier, attempts, next.0 as i64, error],
            )?;
            Ok(())
        })
    }

    /// The newest deliveries, of one notifier or all, newest first.
    pub fn deliveries(
        &self,
        notifier: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT notifier, notice, state, attempts, at_ms, error FROM deliveries WHERE ?1 IS NULL OR notifier = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![notifier, limit], delivery)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// How `notice` ended for `notifier`, once settled.
    pub fn delivery(&self, notifier: &str, notice: i64) -> Result<Option<Delivery>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT notifier, notice, state, attempts, at_ms, error FROM deliveries WHERE notice = ?1 AND notifier = ?2",
                params![notice, notifier],
                delivery,
            )
            .optional()?)
        })
    }

    /// The newest notice of each of this service's subjects whose key starts with `prefix`.
    pub fn last_notices(&self, prefix: &str) -> Result<Vec<Notice>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT json FROM notices WHERE id IN (SELECT max(id) FROM notices WHERE service = ?1 AND substr(key, 1, length(?2)) = ?2 AND only_to IS NULL GROUP BY key) ORDER BY id",
            )?;
            let rows = st.query_map(params![self.service, prefix], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
    }

    /// Records a status update of an incident.
    pub fn incident_update(
        &self,
        incident: i64,
        at: Millis,
        state: StatusState,
        message: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO incident_updates (incident, at_ms, state, message, actor) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![incident, at.0 as i64, state.as_str(), message, actor],
            )?;
            Ok(())
        })
    }

    pub(crate) fn updates_of(
        c: &rusqlite::Connection,
        incident: i64,
    ) -> Result<Vec<Update>, StoreError> {
        let mut st = c.prepare(
            "SELECT at_ms, state, message, actor FROM incident_updates WHERE incident = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([incident], |r| {
            Ok(Update {
                at_ms: r.get::<_, i64>(0)? as u64,
                state: StatusState::parse(&r.get::<_, String>(1)?)
                    .unwrap_or(StatusState::Investigating),
                message: r.get(2)?,
                actor: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// This service's incidents not resolved yet, oldest first.
    pub fn unresolved_incidents(&self) -> Result<Vec<i64>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT i.id FROM incidents i WHERE i.service = ?1 AND coalesce(
                   (SELECT u.state FROM incident_updates u WHERE u.incident = i.id ORDER BY u.id DESC LIMIT 1),
                   CASE i.status WHEN 'running' THEN 'investigating' ELSE 'resolved' END) != 'resolved'
                 ORDER BY i.id",
            )?;
            let rows = st.query_map([&self.service], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        notifier: r.get(0)?,
        notice: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get::<_, i64>(3)? as u32,
        at_ms: r.get::<_, i64>(4)? as u64,
        error: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::notice::{NoticeKind, Severity};

    fn n(key: &str) -> Notice {
        Notice::new(NoticeKind::RiskRaised, "db", Severity::Warning, key.into()).title(key)
    }

    #[test]
    fn a_cursor_resumes_after_what_it_settled_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap().service("db");
        s.notice(&n("before"), None).unwrap();
        // A new notifier does not get the history.
        s.start_cursor("hook").unwrap();
        assert_eq!(s.cursor("hook").unwrap().after, 1);
        let a = s.notice(&n("a"), None).unwrap();
        let t = s.notice(&n("test"), Some("other")).unwrap();
        let b = s.notice(&n("b"), None).unwrap();
        let got = s.notices_after("hook", 1, 10).unwrap();
        assert_eq!(
            got.iter().map(|x| x.id).collect::<Vec<_>>(),
            [a, b],
            "a test message for another notifier is not ours"
        );
        s.retry_at("hook", 1, Millis(50), "503").unwrap();
        s.settle("hook", a, &[(a, "sent")], 2, Millis(60), None)
            .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap().service("db");
        s.start_cursor("hook").unwrap();
        let c = s.cursor("hook").unwrap();
        assert_eq!((c.after, c.attempts, c.last_error), (a, 0, None));
        assert_eq!(s.behind("hook", c.after).unwrap(), 1);
        assert_eq!(s.delivery("hook", a).unwrap().unwrap().attempts, 2);
        assert_eq!(s.delivery("hook", t).unwrap(), None);
    }
}
