//! The `lifeboat backup|restore|wal` commands. The binary parses them with clap and calls the
//! functions here; each prints its own output and returns the process exit code.

use crate::archiver::{backup_paths, BackupKind, BackupOptions};
use crate::error::{Error, Result};
use crate::group::{GroupOptions, Member};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::restore_test::TestRecord;
use crate::scheduler::{open_repo, passphrase_of, Scheduler};
use crate::snapshot::short_time;
use crate::storage::Storage;
use lifeboat_config::{BackupConfig, Config, RepositoryConfig, Retention};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Repository: a directory, s3://BUCKET/PREFIX (S3 settings from the AWS_* variables), or
    /// the name of one under [backup.repositories] in the config. Default: the config's only
    /// repository.
    #[arg(long, env = "LIFEBOAT_REPO")]
    pub repo: Option<String>,
    /// File holding the passphrase (otherwise the config's, or LIFEBOAT_PASSWORD).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A repository as the config describes one (location and passphrase source), and its name
/// there if it has one.
struct Resolved {
    repo: RepositoryConfig,
    name: Option<String>,
}

impl Resolved {
    fn passphrase(&self) -> Result<Vec<u8>> {
        passphrase_of(&self.repo)
    }

    async fn open(&self) -> Result<Repo> {
        open_repo(&self.repo).await
    }
}

/// `which` as the name or location of a repository of the config, else as a location;
/// `password_file` (given on the command line) wins over the config's passphrase source.
fn resolve(which: &str, password_file: Option<&Path>, config: Option<&BackupConfig>) -> Resolved {
    let named = config.and_then(|c| {
        c.repositories
            .iter()
            .find(|(name, r)| *name == which || r.location == which)
    });
    let (mut repo, name) = match named {
        Some((name, r)) => (r.clone(), Some(name.clone())),
        None => (
            RepositoryConfig {
                location: which.to_string(),
                password_file: None,
                password_env: None,
            },
            None,
        ),
    };
    if let Some(f) = password_file {
        repo.password_file = Some(f.to_path_buf());
    }
    Resolved { repo, name }
}

impl RepoArgs {
    fn resolve(&self, config: Option<&BackupConfig>) -> Result<Resolved> {
        if let Some(r) = &self.repo {
            return Ok(resolve(r, self.password_file.as_deref(), config));
        }
        let names: Vec<&String> = config
            .map(|c| c.repositories.keys().collect())
            .unwrap_or_default();
        match names.as_slice() {
            [one] => Ok(resolve(one, self.password_file.as_deref(), config)),
            [] => Err(Error::Invalid(
                "name a repository: --repo PATH or s3://BUCKET/PREFIX (or LIFEBOAT_REPO)".into(),
            )),
            many => Err(Error::Invalid(format!(
                "name a repository with --repo: the config defines {}",
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    async fn open(&self, config: Option<&BackupConfig>) -> Result<Repo> {
        self.resolve(config)?.open().await
    }

    fn progress(&self) -> Progress {
        Progress::new(self.json)
    }
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    cmd: BackupCmd,
}

#[derive(Debug, clap::Subcommand)]
enum BackupCmd {
    /// Create a repository.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Share this repository's keys and chunker, so snapshots can be copied from it
        /// sending only missing data (the copy target in another region).
        #[arg(long, value_name = "REPO")]
        from_repo: Option<String>,
        /// Passphrase file of --from-repo (default: the same passphrase).
        #[arg(long, requires = "from_repo")]
        from_password_file: Option<PathBuf>,
    },
    /// Copy snapshots to another repository created with `init --from-repo`; only the data
    /// it lacks is sent.
    Copy {
        #[command(flatten)]
        repo: RepoArgs,
        /// The target repository.
        #[arg(long, value_name = "REPO")]
        to: String,
        /// Passphrase file of the target (default: the same passphrase).
        #[arg(long)]
        to_password_file: Option<PathBuf>,
        /// Copy only snapshots of this source.
        #[arg(long)]
        source: Option<String>,
        /// Tier the copies get in the target (default: their own).
        #[arg(long)]
        as_tier: Option<String>,
    },
    /// Back up directories, files or a PostgreSQL server now; or, with only --tier, run that
    /// tier of the config once (its sources, or its copy, then its retention).
    Run {
        #[command(flatten)]
        repo: RepoArgs,
        /// Name of the source in snapshots (default: dir or postgres); the parent is the last
        /// snapshot of the same source and paths.
        #[arg(long)]
        source: Option<String>,
        /// Read every file again instead of trusting size, times and inode (a full backup).
        #[arg(long)]
        full: bool,
        /// Read the files changed since the newest full backup of the source (a differential
        /// backup; the default reads those changed since the newest backup of any kind).
        #[arg(long, conflicts_with = "full")]
        diff: bool,
        /// With --postgres: the server's data directory on this host. The backup reads it
        /// between pg_backup_start and pg_backup_stop, only the files changed since the
        /// parent; without it, pg_basebackup reads the whole database.
        #[arg(long, requires = "postgres")]
        data_dir: Option<PathBuf>,
        /// The snapshot's tier (default: manual); alone, a tier of the config to run.
        #[arg(long)]
        tier: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Take a PostgreSQL base backup of this server (a libpq connection string).
        #[arg(long, value_name = "CONNINFO", conflicts_with = "paths")]
        postgres: Option<String>,
        /// Directories or files to back up.
        paths: Vec<PathBuf>,
    },
    /// Back up several databases and directories as one group with one restore point;
    /// `lifeboat restore group LABEL` gives them back as of that point.
    Group {
        #[command(flatten)]
        repo: RepoArgs,
        /// The group's label (letters, digits, '.', '_', '-').
        label: String,
        /// A database: NAME=CONNINFO (repeat). Its WAL must be archived into the repository.
        #[arg(long = "postgres", value_name = "NAME=CONNINFO", value_parser = parse_member)]
        postgres: Vec<(String, String)>,
        /// A directory: NAME=PATH (repeat).
        #[arg(long = "dir", value_name = "NAME=PATH", value_parser = parse_member)]
        dirs: Vec<(String, String)>,
        /// The snapshots' tier (default: the label).
        #[arg(long)]
        tier: Option<String>,
        /// Read every file of the directories again.
        #[arg(long)]
        full: bool,
        /// How long to wait for each database's WAL with the restore point to be archived.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wal_wait: std::time::Duration,
    },
    /// List snapshots (oldest first) and groups; with --tests, the recorded test restores.
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        tests: bool,
    },
    /// Check the repository's structure and WAL, with --read-data every byte, and with
    /// --restore-test run the config's test restore once.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        read_data: bool,
        /// Read only this share of the packs and WAL, e.g. 10%.
        #[arg(long, value_parser = parse_percent, requires = "read_data")]
        subset: Option<f64>,
        /// Also restore the newest PostgreSQL backup into a scratch server and query it, as
        /// [backup.restore-test] in the config says; the result is recorded.
        #[arg(long)]
        restore_test: bool,
    },
    /// Forget snapshots no keep rule keeps and reclaim their space. The rules: the --keep-*
    /// flags for every snapshot, or else the `keep` of each config tier stored here.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        keep: KeepArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct KeepArgs {
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
}

fn parse_member(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("expected a percentage like 10%, got {s:?}"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!(
            "the subset must be above 0% and at most 100%, got {s:?}"
        ))
    }
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix, or `latest`), or `postgres` for a point-in-time
    /// restore of PostgreSQL.
    snapshot: String,
    /// With `group`: the group's label.
    label: Option<String>,
    /// PostgreSQL: recover up to this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
    #[arg(long, conflicts_with = "lsn")]
    at: Option<String>,
    /// PostgreSQL: recover up to this WAL position (e.g. 0/3000060).
    #[arg(long)]
    lsn: Option<String>,
    /// PostgreSQL: restore base backups of this source only.
    #[arg(long)]
    source: Option<String>,
    /// PostgreSQL: start from this base backup (an id prefix) instead of the newest one that
    /// ends before the target, e.g. when verify found that one damaged.
    #[arg(long)]
    base: Option<String>,
    #[command(flatten)]
    repo: RepoArgs,
    /// Directory to restore into.
    #[arg(long)]
    to: PathBuf,
    /// Restore only this path of the snapshot.
    #[arg(long, conflicts_with = "delta")]
    path: Option<String>,
    /// Restore over an existing directory (for PostgreSQL, a data directory no server runs
    /// on): files already as in the snapshot are kept, the rest written, and what the
    /// snapshot lacks removed.
    #[arg(long)]
    delta: bool,
    /// PostgreSQL: start the restored server and wait until it has replayed to the target
    /// and accepts writes; it keeps running (stop it with pg_ctl stop -D DIR).
    #[arg(long)]
    start: bool,
    /// With --start: the port it listens on (default: a free one).
    #[arg(long, requires = "start")]
    port: Option<u16>,
    /// With --start, as root: the OS user that runs it (default: the owner of the restored
    /// files).
    #[arg(long, requires = "start")]
    os_user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WalArgs {
    #[command(subcommand)]
    cmd: WalCmd,
}

#[derive(Debug, clap::Subcommand)]
enum WalCmd {
    /// Archive a WAL file (archive_command = 'lifeboat wal push --repo R --password-file F %p').
    Push {
        path: PathBuf,
        #[command(flatten)]
        repo: RepoArgs,
        /// The cluster's system identifier (default: read from global/pg_control of the
        /// current directory, which is the data directory when PostgreSQL runs the command).
        #[arg(long)]
        system_identifier: Option<String>,
    },
    /// Stream WAL from a server into the repository until stopped (SIGTERM or Ctrl-C): the
    /// same supervised pg_receivewal the daemon runs for [backup.wal], in the foreground.
    Stream {
        #[command(flatten)]
        repo: RepoArgs,
        /// The server (a libpq connection string; a replication connection is made).
        #[arg(long, value_name = "CONNINFO")]
        postgres: String,
        /// Local spool directory for pg_receivewal.
        #[arg(long)]
        spool: PathBuf,
        /// How often the segment in progress is uploaded when it changed. Named in the
        /// primary's synchronous_standby_names as lifeboat_wal, the streamer makes every
        /// commit wait until its WAL is on the spool's disk (a synchronous archive).
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
    },
    /// Fetch an archived WAL file (restore_command = 'lifeboat wal fetch … %f %p').
    Fetch {
        name: String,
        path: PathBuf,
        #[command(flatten)]
        repo: RepoArgs,
        /// As for push.
        #[arg(long)]
        system_identifier: Option<String>,
    },
}

/// A second repository (`--to`, `--from-repo`): its passphrase from `file`, else from the
/// config when it names it there, else the first one's.
fn other(
    which: &str,
    file: Option<&Path>,
    first: &RepoArgs,
    config: Option<&BackupConfig>,
) -> Resolved {
    let mut r = resolve(which, file, config);
    if r.name.is_none() && r.repo.password_file.is_none() {
        r.repo.password_file = first.password_file.clone();
    }
    r
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn bytes(n: u64) -> String {
    lifeboat_config::format_bytes(n)
}

pub async fn backup(args: BackupArgs, config: Option<&Config>) -> ExitCode {
    match run_backup(args, config).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn scheduler(config: Option<&Config>, why: &str) -> Result<Scheduler> {
    config.and_then(Scheduler::new).ok_or_else(|| {
        Error::Invalid(format!(
            "{why} needs a config with a [backup] section (-c FILE)"
        ))
    })
}

async fn run_backup(args: BackupArgs, config: Option<&Config>) -> Result<ExitCode> {
    let backup_config = config.and_then(|c| c.backup.as_ref());
    match args.cmd {
        BackupCmd::Init {
            repo,
            from_repo,
            from_password_file,
        } => {
            let target = repo.resolve(backup_config)?;
            let pass = target.passphrase()?;
            let storage = Storage::open(&target.repo.location, true)?;
            let r = match from_repo {
                None => Repo::init(storage, &pass).await?,
                Some(from) => {
                    let from = other(&from, from_password_file.as_deref(), &repo, backup_config);
                    Repo::init_like(storage, &pass, &from.open().await?).await?
                }
            };
            if repo.json {
                print_json(&serde_json::json!({ "repository": r.location(), "id": r.config.id }));
            } else {
                println!("created repository {} (id {})", r.location(), r.config.id);
            }
        }
        BackupCmd::Run {
            repo,
            source,
            tier,
            tags,
            full,
            diff,
            data_dir,
            postgres,
            paths,
        } => {
            if postgres.is_none() && paths.is_empty() {
                return run_configured_tier(config, tier.as_deref(), repo.json).await;
            }
            let r = repo.open(backup_config).await?;
            let kind = if postgres.is_some() {
                "postgres"
            } else {
                "dir"
            };
            let opts = BackupOptions {
                source: source.unwrap_or_else(|| kind.to_string()),
                tier: tier.unwrap_or_else(|| "manual".into()),
                tags,
                group: None,
                kind: backup_kind(full, diff),
            };
            let (id, s) = match postgres {
                Some(conninfo) => {
                    crate::postgres::base_backup(
                        &r,
                        &conninfo,
                        data_dir.as_deref(),
                        opts,
                        &repo.progress(),
                    )
                    .await?
                }
                None => backup_paths(&r, &paths, opts, &repo.progress()).await?,
            };
            if repo.json {
                print_json(&serde_json::json!({ "id": id.hex(), "snapshot": s }));
            } else {
                println!(
                    "snapshot {} saved: {}",
                    id.short(),
                    describe_summary(&s.summary)
                );
            }
        }
        BackupCmd::Copy {
            repo,
            to,
            to_password_file,
            source,
            as_tier,
        } => {
            let from = repo.open(backup_config).await?;
            let target = other(&to, to_password_file.as_deref(), &repo, backup_config)
                .open()
                .await?;
            let select =
                |s: &crate::snapshot::Snapshot| source.as_ref().is_none_or(|src| &s.source == src);
            let report = crate::copy::copy(&from, &target, &select, as_tier.as_deref()).await?;
            if repo.json {
                print_json(&report);
            } else {
                println!("{}", describe_copy(&report, target.location()));
            }
        }
        BackupCmd::Group {
            repo,
            label,
            postgres,
            dirs,
            tier,
            full,
            wal_wait,
        } => {
            let r = repo.open(backup_config).await?;
            let members: Vec<Member> = postgres
                .into_iter()
                .map(|(name, conninfo)| Member::Postgres { name, conninfo })
                .chain(dirs.into_iter().map(|(name, p)| Member::Directory {
                    name,
                    paths: vec![PathBuf::from(p)],
                }))
                .collect();
            let opts = GroupOptions {
                tier: tier.unwrap_or_else(|| label.clone()),
                label,
                kind: backup_kind(full, false),
                wal_wait,
            };
            let (id, g, _) = crate::group::backup_group(&r, &members, &opts).await?;
            if repo.json {
                print_json(&serde_json::json!({ "id": id.hex(), "group": g }));
            } else {
                println!(
                    "group {} ({}) saved: {} member(s); the databases' restore points lie within {:.1} ms",
                    g.label,
                    id.short(),
                    g.members.len(),
                    g.spread_ms
                );
            }
        }
        BackupCmd::List { repo, tests } => {
            let r = repo.open(backup_config).await?;
            if tests {
                list_tests(&r, repo.json).await?;
            } else {
                list(&r, repo.json).await?;
            }
        }
        BackupCmd::Verify {
            repo,
            read_data,
            subset,
            restore_test,
        } => {
            let r = repo.open(backup_config).await?;
            let report =
                crate::check::verify(&r, read_data, subset.unwrap_or(100.0), &repo.progress())
                    .await?;
            let test = match restore_test {
                true => Some(scheduler(config, "--restore-test")?.restore_test().await?),
                false => None,
            };
            let ok = report.ok() && test.as_ref().is_none_or(|t| t.ok);
            if repo.json {
                let mut v = serde_json::to_value(&report).expect("serializes");
                v["restore_test"] = serde_json::to_value(&test).expect("serializes");
                print_json(&v);
            } else {
                print_verify(&report);
                if let Some(t) = &test {
                    println!("{}", describe_test(t));
                }
                println!(
                    "{}",
                    if ok {
                        "no errors found"
                    } else {
                        "the repository has errors"
                    }
                );
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        BackupCmd::Prune {
            repo,
            dry_run,
            keep,
        } => {
            let flags = Retention {
                last: keep.keep_last,
                hourly: keep.keep_hourly,
                daily: keep.keep_daily,
                weekly: keep.keep_weekly,
                monthly: keep.keep_monthly,
                yearly: keep.keep_yearly,
            };
            let target = repo.resolve(backup_config)?;
            let tiers: std::collections::HashMap<String, Retention> =
                match (&target.name, config.and_then(Scheduler::new)) {
                    (Some(name), Some(s)) if flags.keeps_nothing() => s.retention_in(name),
                    _ => Default::default(),
                };
            if flags.keeps_nothing() && tiers.is_empty() {
                return Err(Error::Invalid(
                    "prune needs keep rules: --keep-last 7 --keep-daily 30 …, or a config whose tiers keep their snapshots in this repository"
                        .into(),
                ));
            }
            let r = target.open().await?;
            let policy = |_: &str, tier: &str| match flags.keeps_nothing() {
                true => tiers.get(tier).copied(),
                false => Some(flags),
            };
            let report = crate::prune::prune(&r, &policy, dry_run).await?;
            if repo.json {
                print_json(&report);
            } else {
                let verb = if dry_run { "would" } else { "did" };
                for k in &report.forgotten {
                    println!("forget {k}");
                }
                println!(
                    "{verb} forget {} snapshot(s) and {} group(s), keep {}; {verb} delete {} pack(s), repack {}, delete {} unindexed, {} WAL file(s); {} freed",
                    report.forgotten.len(),
                    report.groups_deleted,
                    report.kept.len(),
                    report.packs_deleted,
                    report.packs_repacked,
                    report.packs_unindexed_deleted,
                    report.wal_deleted,
                    bytes(report.bytes_freed)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lifeboat backup run --tier NAME`: one run of a tier of the config, as the daemon does it.
async fn run_configured_tier(
    config: Option<&Config>,
    tier: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let what =
        "name what to back up: PATHS, --postgres CONNINFO, or --tier NAME of a tier in the config";
    let Some(name) = tier else {
        return Err(Error::Invalid(what.into()));
    };
    let s = scheduler(config, &format!("--tier {name} without paths"))?;
    let Some(t) = s.config().tiers.get(name) else {
        let known: Vec<&str> = s.config().tiers.keys().map(String::as_str).collect();
        return Err(Error::Invalid(format!(
            "no tier {name:?} in the config (tiers: {}); {what}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let run = s.run_tier(name, t).await?;
    if json {
        print_json(&run);
    } else {
        for snap in &run.snapshots {
            println!(
                "{} {}: snapshot {} saved: {}",
                run.tier,
                snap.source,
                &snap.id[..8],
                describe_summary(&snap.summary)
            );
        }
        if let Some((id, spread)) = &run.group {
            println!(
                "{}: group {} saved; the databases' restore points lie within {spread:.1} ms",
                run.tier,
                &id[..8]
            );
        }
        if let Some(c) = &run.copy {
            println!(
                "{}: {}",
                run.tier,
                describe_copy(c, &t.copy_to.clone().unwrap_or_default())
            );
        }
        if let Some(p) = &run.prune {
            println!(
                "{}: retention kept {}, forgot {} snapshot(s)",
                run.tier,
                p.kept.len(),
                p.forgotten.len()
            );
        }
        for (source, e) in &run.failures {
            eprintln!("error: {} {source}: {e}", run.tier);
        }
    }
    Ok(if run.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn describe_summary(m: &crate::snapshot::Summary) -> String {
    format!(
        "{} files, {} dirs, {} ({} read, {} new blobs, {} stored) in {:.1} s",
        m.files,
        m.dirs,
        bytes(m.bytes),
        bytes(m.bytes_read),
        m.new_blobs,
        bytes(m.new_stored_bytes),
        m.duration_s
    )
}

fn describe_copy(r: &crate::copy::CopyReport, to: &str) -> String {
    format!(
        "copied {} snapshot(s) to {to} ({} already there): {} blob(s), {} WAL file(s), {} group(s), {} sent",
        r.copied.len(),
        r.already_there,
        r.blobs_sent,
        r.wal_files_sent,
        r.groups_copied,
        bytes(r.bytes_sent)
    )
}

fn describe_test(t: &TestRecord) -> String {
    match &t.error {
        None => format!(
            "restore test of {} passed at {}: base backup {} restored in {:.1} s, accepting connections after {:.1} s, WAL replayed and promoted after {:.1} s, query gave {} row(s); {:.1} s in all",
            t.source,
            short_time(t.time),
            t.base_snapshot.get(..8).unwrap_or("?"),
            t.restore_s,
            t.start_s,
            t.replay_s,
            t.rows,
            t.total_s
        ),
        Some(e) => format!("restore test of {} FAILED at {}: {e}", t.source, short_time(t.time)),
    }
}

async fn list(r: &Repo, json: bool) -> Result<()> {
    let snaps = r.snapshots().await?;
    let groups = crate::group::groups(r).await?;
    if json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| serde_json::json!({ "id": id.hex(), "snapshot": s }))
            .collect();
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<10} {:<20} {:<12} {:<10} {:>10}  ROOTS",
        "ID", "TIME (UTC)", "SOURCE", "TIER", "SIZE"
    );
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<12} {:<10} {:>10}  {}",
            id.short(),
            short_time(s.time),
            s.source,
            s.tier,
            bytes(s.summary.bytes),
            s.roots.join(" ")
        );
    }
    println!("{} snapshot(s)", snaps.len());
    for (id, g) in &groups {
        let members: Vec<&str> = g.members.iter().map(|m| m.source.as_str()).collect();
        println!(
            "group {} {} {}: {} (restore points within {:.1} ms)",
            id.short(),
            short_time(g.time),
            g.label,
            members.join(", "),
            g.spread_ms
        );
    }
    Ok(())
}

async fn list_tests(r: &Repo, json: bool) -> Result<()> {
    let tests = crate::restore_test::records(r).await?;
    if json {
        print_json(&tests.iter().map(|(_, t)| t).collect::<Vec<_>>());
        return Ok(());
    }
    for (_, t) in &tests {
        println!("{}", describe_test(t));
    }
    let passed = tests.iter().filter(|(_, t)| t.ok).count();
    println!("{} restore test(s), {passed} passed", tests.len());
    Ok(())
}

fn print_verify(report: &crate::check::VerifyReport) {
    println!(
        "{} snapshot(s), {} group(s), {} index file(s), {} pack(s), {} blob(s), {} WAL segment(s); {} pack(s) and {} WAL file(s) read ({})",
        report.snapshots,
        report.groups,
        report.index_files,
        report.packs,
        report.blobs,
        report.wal_files,
        report.packs_read,
        report.wal_files_read,
        bytes(report.bytes_read)
    );
    for w in &report.warnings {
        println!("warning: {w}");
    }
    for e in &report.errors {
        println!("error: {e}");
    }
    for (snap, files) in &report.damaged {
        println!(
            "snapshot {} is damaged: {} file(s) cannot be restored whole:",
            &snap[..8],
            files.len()
        );
        for f in files.iter().take(20) {
            println!("  {f}");
        }
        if files.len() > 20 {
            println!("  … and {} more (--json lists all)", files.len() - 20);
        }
    }
}

pub async fn restore(args: RestoreArgs, config: Option<&Config>) -> ExitCode {
    match run_restore(args, config.and_then(|c| c.backup.as_ref())).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn run_restore(args: RestoreArgs, config: Option<&BackupConfig>) -> Result<ExitCode> {
    let r = args.repo.open(config).await?;
    if args.snapshot == "postgres" {
        return restore_postgres(&r, args).await;
    }
    if args.at.is_some() || args.lsn.is_some() || args.start {
        return Err(Error::Invalid(
            "--at, --lsn and --start apply to `lifeboat restore postgres` only".into(),
        ));
    }
    if args.snapshot == "group" {
        let label = args.label.as_deref().ok_or_else(|| {
            Error::Invalid("name the group: lifeboat restore group LABEL --to DIR".into())
        })?;
        let g = crate::group::restore_group(&r, label, &args.to).await?;
        if args.repo.json {
            print_json(&g);
        } else {
            println!(
                "restored group {} of {} ({}):",
                g.label,
                short_time(g.time),
                &g.group[..8]
            );
            for (member, dir) in &g.restored {
                println!("  {member} -> {}", dir.display());
            }
            println!("start each database (as its owner) with: pg_ctl start -D DIR; it replays to the group's restore point, then promotes");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (id, snap) = r.find_snapshot(&args.snapshot).await?;
    let opts = crate::restorer::RestoreOptions {
        only: args.path.as_deref(),
        delta: args.delta,
    };
    let s = crate::restorer::restore(&r, &snap, &args.to, opts, &args.repo.progress()).await?;
    if args.repo.json {
        print_json(&serde_json::json!({ "id": id.hex(), "summary": s }));
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.1} s",
            id.short(),
            args.to.display(),
            s.files,
            s.dirs,
            s.symlinks,
            bytes(s.bytes),
            s.duration_s
        );
        for (path, why) in &s.failed {
            eprintln!("error: {path}: not restored: {why}");
        }
    }
    if s.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} file(s) could not be restored; the rest is in place",
            s.failed.len()
        );
        Ok(ExitCode::from(1))
    }
}

async fn restore_postgres(r: &Repo, args: RestoreArgs) -> Result<ExitCode> {
    use crate::postgres::{restore_pitr, Pick, Target};
    use lifeboat_postgres::parse_lsn;
    let target =
        match (&args.at, &args.lsn) {
            (Some(t), _) => Target::Time(parse_time(t)?),
            (_, Some(l)) => Target::Lsn(parse_lsn(l).ok_or_else(|| {
                Error::Invalid(format!("invalid LSN {l:?}; write e.g. 0/3000060"))
            })?),
            _ => Target::Latest,
        };
    let pick = Pick {
        source: args.source.as_deref(),
        base: args.base.as_deref(),
    };
    let s = restore_pitr(r, target, pick, &args.to, args.delta, &args.repo.progress()).await?;
    let started = if args.start {
        Some(start_restored(&args).await?)
    } else {
        None
    };
    if args.repo.json {
        print_json(&serde_json::json!({ "restore": s, "started": started }));
    } else {
        println!(
            "restored base backup {} (ended {}) and {} WAL file(s) ({}) to {} in {:.1} s",
            &s.base_snapshot[..8],
            crate::snapshot::format_time(s.base_end_time),
            s.wal_files,
            bytes(s.wal_bytes),
            args.to.display(),
            s.duration_s
        );
        println!("recovery settings: {}", s.recovery_settings.join("; "));
        match &started {
            Some(st) => println!(
                "started on port {}: accepting connections after {:.2} s, WAL replayed to the target and promoted after {:.2} s; stop it with: pg_ctl stop -D {}",
                st.port,
                st.accepting_s,
                st.promoted_s,
                args.to.display()
            ),
            None => println!(
                "start it (as its owner) with: pg_ctl start -D {}",
                args.to.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--start`: the restored server on its port, run by the owner of its files (as root), and
/// how long until it accepted connections and until it finished replaying.
async fn start_restored(args: &RestoreArgs) -> Result<crate::restore_test::Started> {
    use std::os::unix::fs::MetadataExt;
    let port = match args.port {
        Some(p) => p,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(Error::io(&args.to))?
            .port(),
    };
    let os_user = if nix::unistd::geteuid().is_root() {
        Some(match &args.os_user {
            Some(u) => u.clone(),
            None => {
                let uid = std::fs::metadata(args.to.join("PG_VERSION"))
                    .map_err(Error::io(&args.to))?
                    .uid();
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the restored files belong to uid {uid}, which has no user here; name one with --os-user"
                        ))
                    })?
            }
        })
    } else {
        None
    };
    let server = lifeboat_postgres::LocalServer {
        bin_dir: lifeboat_postgres::LocalServer::find_bin_dir()
            .map_err(|e| Error::Invalid(e.to_string()))?,
        data_dir: args.to.clone(),
        os_user,
        port,
    };
    // Its superuser, over loopback; a password, when its pg_hba.conf wants one, from PGPASSWORD.
    let login = lifeboat_postgres::ConnInfo {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        dbname: "postgres".into(),
        password: std::env::var("PGPASSWORD").ok(),
    };
    crate::restore_test::start_restored(&server, &login, std::time::Duration::from_secs(3600)).await
}

fn backup_kind(full: bool, diff: bool) -> BackupKind {
    match (full, diff) {
        (true, _) => BackupKind::Full,
        (_, true) => BackupKind::Differential,
        _ => BackupKind::Incremental,
    }
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fraction]` taken as UTC.
fn parse_time(s: &str) -> Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let f = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    time::PrimitiveDateTime::parse(s, &f)
        .map(|t| t.assume_utc())
        .map_err(|_| {
            Error::Invalid(format!(
            "invalid time {s:?}; write e.g. 2026-11-22T10:42:03Z or \"2026-11-22 10:42:03\" (UTC)"
        ))
        })
}

/// The system identifier given, or the one of the data directory we run in.
fn system_of(given: Option<String>) -> Result<String> {
    match given {
        Some(s) => Ok(s),
        None => crate::postgres::system_identifier(std::path::Path::new(".")),
    }
}

pub async fn wal(args: WalArgs, config: Option<&Config>) -> ExitCode {
    run_wal(args, config.and_then(|c| c.backup.as_ref()))
        .await
        .unwrap_or_else(|e| fail(&e))
}

async fn run_wal(args: WalArgs, config: Option<&BackupConfig>) -> Result<ExitCode> {
    match args.cmd {
        WalCmd::Push {
            path,
            repo,
            system_identifier,
        } => {
            let system = system_of(system_identifier)?;
            let r = repo.open(config).await?;
            crate::postgres::wal_push(&r, &system, &path).await?;
            Ok(ExitCode::SUCCESS)
        }
        WalCmd::Fetch {
            name,
            path,
            repo,
            system_identifier,
        } => {
            let system = system_of(system_identifier)?;
            let r = repo.open(config).await?;
            match crate::postgres::wal_fetch(&r, &system, &name, &path).await? {
                true => Ok(ExitCode::SUCCESS),
                // PostgreSQL asks for files that do not exist yet; a quiet 1 is the answer.
                false => Ok(ExitCode::from(1)),
            }
        }
        WalCmd::Stream {
            repo,
            postgres,
            spool,
            every,
        } => {
            let r = repo.open(config).await?;
            let status = std::sync::Arc::new(crate::walstream::WalStatus::default());
            let streamer = crate::walstream::WalStreamer {
                repo: r,
                server: crate::walstream::fixed(postgres),
                spool,
                upload_every: every,
                status: status.clone(),
                system: Default::default(),
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let stop = cancel.clone();
            // Ends with the process: it only waits for the signal that stops the streamer.
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                stop.cancel();
            });
            streamer.run(cancel).await;
            // Never in step with the server: say why, and fail.
            let never_synced = status
                .last_synced_ms
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0;
            let last_error = status.last_error.lock().expect("status").take();
            match last_error {
                Some(e) if never_synced => Err(Error::Command {
                    what: "wal stream".into(),
                    detail: e,
                }),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    }
}
