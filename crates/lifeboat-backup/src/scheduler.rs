//! Backup schedules run by the daemon (`lifeboat run`).

use lifeboat_config::Config;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Runs the configured backup tiers on their schedules until cancelled.
pub struct Scheduler {}

impl Scheduler {
    /// `None` when the config has no `[backup]` section.
    pub fn new(config: &Config) -> Option<Scheduler> {
        config.backup.as_ref().map(|_| Scheduler {})
    }

    /// Registers `lifeboat_backup_*` metrics.
    pub fn register_metrics(&self, _registry: &mut Registry) {}

    pub async fn run(self, cancel: CancellationToken) {
        cancel.cancelled().await
    }
}
