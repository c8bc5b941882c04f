//! Everything that speaks to PostgreSQL: probes over a fresh connection, promotion, read-only
//! fencing, `synchronous_standby_names`, the write check, and control of a local server
//! through its own tools (`initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind`).
//!
//! It knows nothing of plans or policy: the executor decides, this crate does one thing at a
//! time, bounded by the timeout it is given.
//!
//! It is the one way to reach PostgreSQL, for the backup subsystem too: every connection
//! ([`connect`], [`connect_str`]) and request ([`within`]) is bounded in time, every tool runs
//! through [`PgTool`] (bounded, killed when dropped, the password in its environment and never
//! in its argv), and a WAL position is a `u64` ([`parse_lsn`], [`format_lsn`],
//! [`wal_file_name`]).

mod conninfo;
mod error;
mod local;
mod lsn;
mod sql;
mod tool;

pub use conninfo::split_password;

/// The name Lifeboat's WAL streamer (`pg_receivewal`) gives its replication connection, and so
/// the name a primary's `synchronous_standby_names` lists for a synchronous WAL archive.
pub const ARCHIVE_APPLICATION_NAME: &str = lifeboat_core::SYNC_ARCHIVE;
pub use error::PgError;
pub use local::{InitOptions, LocalServer, StopMode};
pub use lsn::{format_lsn, parse_lsn, parse_wal_file_name, wal_file_name};
pub use sql::{
    connect, connect_str, fence_read_only, probe, promote, redact, set_synchronous_standby_names,
    unfence_read_only, within, write_heartbeat, ConnInfo, PgObservation, ReplicaState,
};
pub use tool::{PgTool, RunningTool};
