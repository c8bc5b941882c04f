//! `lifeboat.toml`: the configuration types, loading and validation.
//!
//! Parsing is strict (unknown keys are errors). [`load`] parses a file, then validates the
//! whole of it and returns *every* problem with its key path and line, plus warnings for legal
//! but suspicious settings. This crate reads files (the config and referenced secret files)
//! but starts nothing.

mod backup;
mod drill;
mod load;
mod notify;
mod report;
mod secret;
mod types;
mod units;
mod validate;

pub use backup::{
    is_safe_name, BackupConfig, BackupTierConfig, RepositoryConfig, RestoreTestConfig, Retention,
    SourceConfig, TierKind, WalConfig, WalMode,
};
pub use drill::{parse_schedule, DrillConfig, FaultKind, MaintenanceConfig};
pub use load::{load, parse, ConfigError, Loaded};
pub use notify::{
    EmailConfig, IncidentsConfig, NotifyConfig, PagerDutyConfig, Route, SlackConfig, WebhookConfig,
};
pub use report::{Finding, Report};
pub use secret::{read_secret, SecretError};
pub use types::*;
pub use units::{format_bytes, Dur, Size};
