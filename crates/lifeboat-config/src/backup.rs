//! The `[backup]` section: repositories, sources, tiers with schedules and retention,
//! continuous WAL, and the scheduled restore test (capability 8). Owned by the backup
//! subsystem; the rest of the config only embeds it.

use crate::report::Report;
use crate::units::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub tiers: BTreeMap<String, BackupTierConfig>,
    /// Continuous WAL of one PostgreSQL source.
    pub wal: Option<WalConfig>,
    /// A scheduled real restore of the newest PostgreSQL backup.
    pub restore_test: Option<RestoreTestConfig>,
}

/// A repository: a directory or `s3://bucket/prefix` (S3 settings from the `AWS_*`
/// environment variables), and where its passphrase comes from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositoryConfig {
    pub location: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

/// What to back up: directories and files, or a PostgreSQL node of `regions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceConfig {
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// The name of a node in `regions`; base backups use its address and credentials.
    pub postgres: Option<String>,
    /// Back up whichever node is the primary now, and stream WAL from it: the node Lifeboat
    /// records as primary (`lifeboat run`), or the one writable node (offline commands).
    /// Backups and continuous WAL then carry on after a failover.
    #[serde(default)]
    pub follow_primary: bool,
}

impl SourceConfig {
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some() || self.follow_primary
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TierKind {
    /// Unchanged files (same size, time and inode as in the last snapshot) are not read again.
    Incremental,
    /// Files unchanged since the newest snapshot of a full tier are not read again
    /// (a snapshot depends only on that full one).
    Differential,
    /// Every file is read again.
    Full,
    /// The newest snapshots of `repository` are copied to `copy-to` (only missing data is sent).
    Copy,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupTierConfig {
    pub kind: TierKind,
    #[serde(default)]
    pub sources: Vec<String>,
    pub repository: String,
    pub copy_to: Option<String>,
    pub every: Dur,
    pub keep: Retention,
    /// An alert condition is exported when the newest good snapshot is older than this
    /// (default: twice `every`).
    pub rpo: Option<Dur>,
    /// Back up the sources together as one consistent group labelled with the tier's name:
    /// every database gets one restore point within milliseconds of the others
    /// (`lifeboat restore group TIER`). Each database's WAL must be archived into the same
    /// repository.
    #[serde(default)]
    pub consistent: bool,
}

impl BackupTierConfig {
    pub fn rpo(&self) -> Dur {
        self.rpo.unwrap_or(Dur(self.every.0 * 2))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WalMode {
    /// `pg_receivewal`, run and supervised by the daemon; the segment being written is
    /// uploaded every `upload-every`, so the recovery point trails the primary by about that.
    #[default]
    Stream,
    /// Only what `archive_command = 'lifeboat wal push …'` sends, a whole segment at a time.
    Archive,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WalConfig {
    pub source: String,
    pub repository: String,
    #[serde(default)]
    pub mode: WalMode,
    /// Where `pg_receivewal` writes before upload (relative to the config file).
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    /// How often the segment being written is uploaded when it changed: the recovery point
    /// trails the primary by about this (plus the upload's own time).
    #[serde(default = "default_upload_every")]
    pub upload_every: Dur,
    /// Zero loss: the primary acknowledges a commit only once its WAL is on the spool's disk
    /// (the streamer is named in `synchronous_standby_names`, beside a synchronous standby
    /// when there is one). Commits wait while the streamer is down.
    #[serde(default)]
    pub synchronous: bool,
}

fn default_spool() -> PathBuf {
    PathBuf::from("lifeboat-wal-spool")
}
fn default_upload_every() -> Dur {
    Dur::from_millis(100)
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreTestConfig {
    pub source: String,
    pub repository: String,
    pub every: Dur,
    /// Run on the restored database; the test passes when it succeeds and returns a row.
    pub query: String,
    /// Scratch directory (relative to the config file); must be writable by `os-user`.
    #[serde(default = "default_scratch")]
    pub scratch_dir: PathBuf,
    /// OS user that runs the temporary PostgreSQL when Lifeboat runs as root.
    #[serde(default = "default_os_user")]
    pub os_user: String,
}

fn default_scratch() -> PathBuf {
    PathBuf::from("lifeboat-restore-test")
}
fn default_os_user() -> String {
    "postgres".into()
}

impl BackupConfig {
    /// Adds every problem found under `path` (normally `"backup"`) to `report`; `nodes` are the
    /// PostgreSQL node names defined in `regions`.
    pub fn validate(&self, path: &str, nodes: &[&str], r: &mut Report) {
        for (name, repo) in &self.repositories {
            let p = format!("{path}.repositories.{name}");
            if repo.location.trim().is_empty() {
                r.error(
                    format!("{p}.location"),
                    "must be a directory or s3://BUCKET[/PREFIX]",
                );
            } else if repo.location.contains("://") && !repo.location.starts_with("s3://") {
                r.error(
                    format!("{p}.location"),
                    "only directories and s3:// locations are supported",
                );
            }
            crate::validate::check_password_keys(
                r,
                &p,
                &repo.password_file,
                &repo.password_env,
                true,
            );
        }
        let repo_ok = |r: &mut Report, key: String, name: &str| {
            if !self.repositories.contains_key(name) {
                r.error(
                    key,
                    format!("repository {name:?} is not defined under {path}.repositories"),
                );
            }
        };
        let source_ok = |r: &mut Report, key: String, name: &str| {
            if !self.sources.contains_key(name) {
                r.error(
                    key,
                    format!("source {name:?} is not defined under {path}.sources"),
                );
            }
        };
        for (name, s) in &self.sources {
            let p = format!("{path}.sources.{name}");
            let kinds = usize::from(s.postgres.is_some())
                + usize::from(s.follow_primary)
                + usize::from(!s.paths.is_empty());
            match (&s.postgres, kinds) {
                (_, 0) => r.error(
                    p.clone(),
                    "set paths = [\"/dir\", …], postgres = \"NODE\" or follow-primary = true",
                ),
                (_, 2..) => r.error(p.clone(), "set one of paths, postgres and follow-primary"),
                (Some(n), _) if !nodes.contains(&n.as_str()) => r.error(
                    format!("{p}.postgres"),
                    format!("no node {n:?} in regions (known: {})", nodes.join(", ")),
                ),
                _ => {}
            }
        }
        for (name, t) in &self.tiers {
            let p = format!("{path}.tiers.{name}");
            repo_ok(r, format!("{p}.repository"), &t.repository);
            if t.every.0 < std::time::Duration::from_secs(1) {
                r.error(format!("{p}.every"), "must be at least 1s");
            }
            if t.keep.keeps_nothing() {
                r.error(format!("{p}.keep"), "keeps nothing; set at least one of last, hourly, daily, weekly, monthly, yearly");
            }
            match t.kind {
                TierKind::Copy => {
                    if t.consistent {
                        r.error(
                            format!("{p}.consistent"),
                            "a copy tier copies the groups of its repository; only backup tiers take groups",
                        );
                    }
                    match &t.copy_to {
                        None => r.error(
                            format!("{p}.copy-to"),
                            "a copy tier needs copy-to = \"REPOSITORY\"",
                        ),
                        Some(to) if *to == t.repository => {
                            r.error(format!("{p}.copy-to"), "must differ from repository")
                        }
                        Some(to) => repo_ok(r, format!("{p}.copy-to"), to),
                    }
                    if !t.sources.is_empty() {
                        r.error(
                            format!("{p}.sources"),
                            "a copy tier copies snapshots, not sources",
                        );
                    }
                }
                _ => {
                    if t.copy_to.is_some() {
                        r.error(
                            format!("{p}.copy-to"),
                            "only a tier of kind \"copy\" copies",
                        );
                    }
                    if t.sources.is_empty() {
                        r.error(format!("{p}.sources"), "name at least one source");
                    }
                    for (i, s) in t.sources.iter().enumerate() {
                        source_ok(r, format!("{p}.sources[{i}]"), s);
                    }
                    // A group's label and member names name restore points and directories.
                    if t.consistent {
                        if !is_safe_name(name) {
                            r.error(p.clone(), "a consistent tier's name labels its groups: use 1 to 40 letters, digits, '.', '_' or '-'");
                        }
                        for (i, s) in t
                            .sources
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| !is_safe_name(s))
                        {
                            r.error(format!("{p}.sources[{i}]"), format!("source {s:?} in a consistent tier: use 1 to 40 letters, digits, '.', '_' or '-'"));
                        }
                    }
                }
            }
        }
        if let Some(w) = &self.wal {
            repo_ok(r, format!("{path}.wal.repository"), &w.repository);
            source_ok(r, format!("{path}.wal.source"), &w.source);
            if self
                .sources
                .get(&w.source)
                .is_some_and(|s| !s.is_postgres())
            {
                r.error(
                    format!("{path}.wal.source"),
                    format!("source {:?} is not a PostgreSQL source", w.source),
                );
            }
            if w.upload_every.0 < std::time::Duration::from_millis(20) {
                r.error(format!("{path}.wal.upload-every"), "must be at least 20ms");
            }
            if w.synchronous
                && self
                    .sources
                    .get(&w.source)
                    .is_some_and(|s| !s.follow_primary)
            {
                r.error(
                    format!("{path}.wal.synchronous"),
                    "a synchronous archive streams from whichever node is primary: set follow-primary = true on its source (after a failover, commits on the new primary would wait for an archive streaming from another node)",
                );
            }
            if w.synchronous && w.mode == WalMode::Archive {
                r.error(
                    format!("{path}.wal.synchronous"),
                    "a synchronous archive streams WAL: set mode = \"stream\" (archive_command only sees finished segments)",
                );
            }
        }
        if let Some(t) = &self.restore_test {
            repo_ok(r, format!("{path}.restore-test.repository"), &t.repository);
            source_ok(r, format!("{path}.restore-test.source"), &t.source);
            if self
                .sources
                .get(&t.source)
                .is_some_and(|s| !s.is_postgres())
            {
                r.error(
                    format!("{path}.restore-test.source"),
                    format!("source {:?} is not a PostgreSQL source", t.source),
                );
            }
            if t.query.trim().is_empty() {
                r.error(
                    format!("{path}.restore-test.query"),
                    "must be a SQL query, e.g. SELECT count(*) FROM orders",
                );
            }
        }
    }

    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for repo in self.repositories.values_mut() {
            if let Some(f) = repo.password_file.as_mut() {
                abs(f);
            }
            if !repo.location.contains("://") && Path::new(&repo.location).is_relative() {
                repo.location = base.join(&repo.location).display().to_string();
            }
        }
        for s in self.sources.values_mut() {
            s.paths.iter_mut().for_each(abs);
        }
        if let Some(w) = self.wal.as_mut() {
            abs(&mut w.spool_dir);
        }
        if let Some(t) = self.restore_test.as_mut() {
            abs(&mut t.scratch_dir);
        }
    }
}

/// A name that may label a group or its members: it becomes a restore point's name, a
/// recovery setting and a directory name, so 1 to 40 letters, digits, `.`, `_` or `-`, not
/// starting with `.`.
pub fn is_safe_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
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
