//! The `[backup]` section: repositories, tiers, schedules and retention (capability 8).
//! Owned by the backup subsystem; the rest of the config only embeds it.

use crate::report::Report;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {}

impl BackupConfig {
    /// Adds every problem found under `path` (normally `"backup"`) to `report`.
    pub fn validate(&self, _path: &str, _report: &mut Report) {}
}
