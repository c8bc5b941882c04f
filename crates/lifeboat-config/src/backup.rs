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

/// How many snapshots a tier keeps: the newest `last`, and the newest of each of the most
/// recent `hourly` hours, `daily` days, `weekly` ISO weeks, `monthly` months and `yearly`
/// years that have one. A snapshot kept by any rule is kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
}

impl Retention {
    /// True when no rule keeps anything; such a policy is refused, since it would delete every
    /// backup.
    pub fn keeps_nothing(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
    }
}
