//! Backups and point-in-time recovery (capability 8). Work in progress: the interface the
//! binary calls is fixed here; the repository format and sources are being built.

pub mod cli;
pub mod scheduler;
