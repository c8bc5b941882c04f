//! Backups and point-in-time recovery (capability 8): a deduplicating, encrypted repository
//! format on a local directory or S3-compatible storage; directory and PostgreSQL sources; WAL
//! archiving; retention, prune, verification, test restores, consistent groups of several
//! sources, and copies between repositories.
//!
//! Not here: deciding *when* to fail over or which node is primary (lifeboat-core), and
//! anything that speaks HTTP (lifeboat-api). The binary calls [`cli`]; the daemon runs
//! [`scheduler::Scheduler`].

pub mod archiver;
pub mod check;
pub mod cli;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod group;
pub mod lock;
pub mod pack;
pub mod pgfiles;
pub mod postgres;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restore_test;
pub mod restorer;
pub mod retention;
pub mod scheduler;
pub mod snapshot;
pub mod storage;
pub mod walstream;
pub mod writer;

pub use error::{Error, Result};
pub use repo::Repo;
pub use storage::Storage;
