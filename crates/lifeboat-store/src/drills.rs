//! Drill runs and the faults they applied. A fault is registered, with everything its undo
//! needs, before it is applied, so a fault whose runner was killed is undone at the next start.

use crate::{Store, StoreError};
use lifeboat_core::Millis;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS drill_runs (
  id INTEGER PRIMARY KEY, drill TEXT NOT NULL, service TEXT NOT NULL, started_ms INTEGER NOT NULL,
  ended_ms INTEGER, status TEXT NOT NULL, report TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS drill_faults (
  id INTEGER PRIMARY KEY, run INTEGER NOT NULL REFERENCES drill_runs(id), fault TEXT NOT NULL,
  state TEXT NOT NULL, changed_ms INTEGER NOT NULL, detail TEXT NOT NULL);
"#;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRun {
    pub id: i64,
    pub drill: String,
    pub service: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// running, passed, failed, aborted or interrupted.
    pub status: String,
    /// The report as JSON (the runner's type).
    pub report: String,
}

/// A fault as recorded: `registered` (its undo is known, it may have been applied), `applied`,
/// `undone`, or `undo-failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRow {
    pub id: i64,
    pub run: i64,
    /// The fault as JSON (the runner's type), with what its undo needs.
    pub fault: String,
    pub state: String,
    pub changed_ms: u64,
    pub detail: String,
}

fn run_row(r: &Row) -> rusqlite::Result<DrillRun> {
    Ok(DrillRun {
        id: r.get(0)?,
        drill: r.get(1)?,
        service: r.get(2)?,
        started_ms: r.get::<_, i64>(3)? as u64,
        ended_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        status: r.get(5)?,
        report: r.get(6)?,
    })
}

const RUN_COLUMNS: &str = "id, drill, service, started_ms, ended_ms, status, report";

impl Store {
    pub fn drill_run_open(
        &self,
        drill: &str,
        service: &str,
        at: Millis,
        report: &str,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO drill_runs (drill, service, started_ms, status, report) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![drill, service, at.0 as i64, report],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn drill_run_save(
        &self,
        id: i64,
        status: &str,
        ended: Option<Millis>,
        report: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE drill_runs SET status = ?1, ended_ms = ?2, report = ?3 WHERE id = ?4",
                params![status, ended.map(|m| m.0 as i64), report, id],
            )?;
            Ok(())
        })
    }

    pub fn drill_run(&self, id: i64) -> Result<Option<DrillRun>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM drill_runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()?)
        })
    }

    /// The newest runs, of one drill or of all, with one status or any, newest first.
    pub fn drill_runs(
        &self,
        drill: Option<&str>,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DrillRun>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM drill_runs WHERE (?1 IS NULL OR drill = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![drill, status, limit], run_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Records a fault and its undo before it is applied.
    pub fn fault_register(&self, run: i64, fault: &str, at: Millis) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO drill_faults (run, fault, state, changed_ms, detail) VALUES (?1, ?2, 'registered', ?3, '')",
                params![run, fault, at.0 as i64],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn fault_state(
        &self,
        id: i64,
        state: &str,
        at: Millis,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE drill_faults SET state = ?1, changed_ms = ?2, detail = ?3 WHERE id = ?4",
                params![state, at.0 as i64, detail, id],
            )?;
            Ok(())
        })
    }

    /// Faults that may still be in effect (registered, applied, or whose undo failed), oldest first.
    pub fn faults_outstanding(&self) -> Result<Vec<FaultRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, run, fault, state, changed_ms, detail FROM drill_faults WHERE state <> 'undone' ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(FaultRow {
                    id: r.get(0)?,
                    run: r.get(1)?,
                    fault: r.get(2)?,
                    state: r.get(3)?,
                    changed_ms: r.get::<_, i64>(4)? as u64,
                    detail: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
