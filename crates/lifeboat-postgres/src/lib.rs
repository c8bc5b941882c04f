//! Everything that speaks to PostgreSQL: probes over a fresh connection, promotion, read-only
//! fencing, `synchronous_standby_names`, the write check, and control of a local server
//! through its own tools (`initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind`).
//!
//! It knows nothing of plans or policy: the executor decides, this crate does one thing at a
//! time, bounded by the timeout it is given.

mod conninfo;
mod error;
mod local;
mod lsn;
mod sql;

pub use conninfo::split_password;
pub use error::PgError;
pub use local::{InitOptions, LocalServer, StopMode};
pub use lsn::{format_lsn, parse_lsn};
pub use sql::{
    connect, fence_read_only, probe, promote, set_synchronous_standby_names, unfence_read_only,
    write_heartbeat, ConnInfo, PgObservation, ReplicaState,
};
