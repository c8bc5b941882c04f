//! The `lifeboat backup|restore|wal` commands. The binary parses them with clap and calls the
//! functions here; each prints its own output and returns the process exit code.

use crate::archiver::{backup_paths, BackupOptions};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{passphrase, Repo};
use crate::snapshot::short_time;
use crate::storage::Storage;
use lifeboat_config::{Config, Retention};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Repository: a directory or s3://BUCKET/PREFIX (S3 settings from the AWS_* variables).
    #[arg(long, env = "LIFEBOAT_REPO")]
    pub repo: String,
    /// File holding the passphrase (otherwise LIFEBOAT_PASSWORD).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl RepoArgs {
    async fn open(&self) -> Result<Repo> {
        let pass = passphrase(self.password_file.as_deref(), &self.repo)?;
        Repo::open(Storage::open(&self.repo, false)?, &pass).await
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
    /// Back up directories or files now.
    Run {
        #[command(flatten)]
        repo: RepoArgs,
        /// Name of the source in snapshots (default: dir or postgres); the parent is the last
        /// snapshot of the same source and paths.
        #[arg(long)]
        source: Option<String>,
        /// Read every file again instead of trusting size, time and inode (a full backup).
        #[arg(long)]
        full: bool,
        #[arg(long, default_value = "manual")]
        tier: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Take a PostgreSQL base backup of this server (a libpq connection string).
        #[arg(long, value_name = "CONNINFO", conflicts_with = "paths")]
        postgres: Option<String>,
        /// Directories or files to back up.
        #[arg(required_unless_present = "postgres")]
        paths: Vec<PathBuf>,
    },
    /// List snapshots, oldest first.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Check the repository's structure, and with --read-data every byte.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        read_data: bool,
        /// Read only this share of the packs, e.g. 10%.
        #[arg(long, value_parser = parse_percent, requires = "read_data")]
        subset: Option<f64>,
    },
    /// Forget snapshots no keep rule keeps and reclaim their space.
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
    /// PostgreSQL: recover up to this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
    #[arg(long, conflicts_with = "lsn")]
    at: Option<String>,
    /// PostgreSQL: recover up to this WAL position (e.g. 0/3000060).
    #[arg(long)]
    lsn: Option<String>,
    /// PostgreSQL: restore base backups of this source only.
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    repo: RepoArgs,
    /// Directory to restore into.
    #[arg(long)]
    to: PathBuf,
    /// Restore only this path of the snapshot.
    #[arg(long)]
    path: Option<String>,
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
        /// How often the segment in progress is uploaded.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
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

/// A second repository; its passphrase from `file`, else the first one's.
async fn open_other(
    location: &str,
    file: Option<&std::path::Path>,
    first: &RepoArgs,
) -> Result<Repo> {
    let pass = match file {
        Some(f) => passphrase(Some(f), location)?,
        None => passphrase(first.password_file.as_deref(), location)?,
    };
    Repo::open(Storage::open(location, false)?, &pass).await
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

pub async fn backup(args: BackupArgs, _config: Option<&Config>) -> ExitCode {
    match run_backup(args).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn run_backup(args: BackupArgs) -> Result<ExitCode> {
    match args.cmd {
        BackupCmd::Init {
            repo,
            from_repo,
            from_password_file,
        } => {
            let pass = passphrase(repo.password_file.as_deref(), &repo.repo)?;
            let storage = Storage::open(&repo.repo, true)?;
            let r = match from_repo {
                None => Repo::init(storage, &pass).await?,
                Some(from) => {
                    let other = open_other(&from, from_password_file.as_deref(), &repo).await?;
                    Repo::init_like(storage, &pass, &other).await?
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
            postgres,
            paths,
        } => {
            let r = repo.open().await?;
            let kind = if postgres.is_some() {
                "postgres"
            } else {
                "dir"
            };
            let opts = BackupOptions {
                source: source.unwrap_or_else(|| kind.to_string()),
                tier,
                tags,
                group: None,
                full,
            };
            let (id, s) = match postgres {
                Some(conninfo) => {
                    crate::postgres::base_backup(&r, &conninfo, opts, &repo.progress()).await?
                }
                None => backup_paths(&r, &paths, opts, &repo.progress()).await?,
            };
            if repo.json {
                print_json(&serde_json::json!({ "id": id.hex(), "snapshot": s }));
            } else {
                let m = &s.summary;
                println!(
                    "snapshot {} saved: {} files, {} dirs, {} ({} read, {} new blobs, {} stored) in {:.1} s",
                    id.short(),
                    m.files,
                    m.dirs,
                    lifeboat_config::format_bytes(m.bytes),
                    lifeboat_config::format_bytes(m.bytes_read),
                    m.new_blobs,
                    lifeboat_config::format_bytes(m.new_stored_bytes),
                    m.duration_s
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
            let from = repo.open().await?;
            let target = open_other(&to, to_password_file.as_deref(), &repo).await?;
            let select =
                |s: &crate::snapshot::Snapshot| source.as_ref().is_none_or(|src| &s.source == src);
            let report = crate::copy::copy(&from, &target, &select, as_tier.as_deref()).await?;
            if repo.json {
                print_json(&report);
            } else {
                println!(
                    "copied {} snapshot(s) to {} ({} already there): {} blob(s), {} sent",
                    report.copied.len(),
                    target.location(),
                    report.already_there,
                    report.blobs_sent,
                    lifeboat_config::format_bytes(report.bytes_sent)
                );
            }
        }
        BackupCmd::List { repo } => {
            let r = repo.open().await?;
            let snaps = r.snapshots().await?;
            if repo.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|(id, s)| serde_json::json!({ "id": id.hex(), "snapshot": s }))
                    .collect();
                print_json(&v);
            } else {
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
                        lifeboat_config::format_bytes(s.summary.bytes),
                        s.roots.join(" ")
                    );
                }
                println!("{} snapshot(s)", snaps.len());
            }
        }
        BackupCmd::Verify {
            repo,
            read_data,
            subset,
        } => {
            let r = repo.open().await?;
            let report =
                crate::check::verify(&r, read_data, subset.unwrap_or(100.0), &repo.progress())
                    .await?;
            if repo.json {
                print_json(&report);
            } else {
                println!(
                    "{} snapshot(s), {} index file(s), {} pack(s), {} blob(s); {} pack(s) read ({})",
                    report.snapshots,
                    report.index_files,
                    report.packs,
                    report.blobs,
                    report.packs_read,
                    lifeboat_config::format_bytes(report.bytes_read)
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
                println!(
                    "{}",
                    if report.ok() {
                        "no errors found"
                    } else {
                        "the repository has errors"
                    }
                );
            }
            return Ok(if report.ok() {
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
            let policy = Retention {
                last: keep.keep_last,
                hourly: keep.keep_hourly,
                daily: keep.keep_daily,
                weekly: keep.keep_weekly,
                monthly: keep.keep_monthly,
                yearly: keep.keep_yearly,
            };
            if policy.keeps_nothing() {
                return Err(Error::Invalid(
                    "prune needs at least one keep rule (e.g. --keep-last 7 --keep-daily 30)"
                        .into(),
                ));
            }
            let r = repo.open().await?;
            let report = crate::prune::prune(&r, &|_, _| Some(policy), dry_run).await?;
            if repo.json {
                print_json(&report);
            } else {
                let verb = if dry_run { "would" } else { "did" };
                for k in &report.forgotten {
                    println!("forget {k}");
                }
                println!(
                    "{verb} forget {} snapshot(s), keep {}; {verb} delete {} pack(s), repack {}, delete {} unindexed, {} WAL file(s); {} freed",
                    report.forgotten.len(),
                    report.kept.len(),
                    report.packs_deleted,
                    report.packs_repacked,
                    report.packs_unindexed_deleted,
                    report.wal_deleted,
                    lifeboat_config::format_bytes(report.bytes_freed)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs, _config: Option<&Config>) -> ExitCode {
    match run_restore(args).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn run_restore(args: RestoreArgs) -> Result<ExitCode> {
    if args.snapshot == "postgres" {
        return restore_postgres(args).await;
    }
    if args.at.is_some() || args.lsn.is_some() {
        return Err(Error::Invalid(
            "--at and --lsn apply to `lifeboat restore postgres` only".into(),
        ));
    }
    let r = args.repo.open().await?;
    let (id, snap) = r.find_snapshot(&args.snapshot).await?;
    let s = crate::restorer::restore(
        &r,
        &snap,
        &args.to,
        args.path.as_deref(),
        &args.repo.progress(),
    )
    .await?;
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
            lifeboat_config::format_bytes(s.bytes),
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

async fn restore_postgres(args: RestoreArgs) -> Result<ExitCode> {
    use crate::postgres::{parse_lsn, restore_pitr, Target};
    let target =
        match (&args.at, &args.lsn) {
            (Some(t), _) => Target::Time(parse_time(t)?),
            (_, Some(l)) => Target::Lsn(parse_lsn(l).ok_or_else(|| {
                Error::Invalid(format!("invalid LSN {l:?}; write e.g. 0/3000060"))
            })?),
            _ => Target::Latest,
        };
    let r = args.repo.open().await?;
    let s = restore_pitr(
        &r,
        target,
        args.source.as_deref(),
        &args.to,
        &args.repo.progress(),
    )
    .await?;
    if args.repo.json {
        print_json(&s);
    } else {
        println!(
            "restored base backup {} (ended {}) and {} WAL file(s) ({}) to {} in {:.1} s",
            &s.base_snapshot[..8],
            crate::snapshot::format_time(s.base_end_time),
            s.wal_files,
            lifeboat_config::format_bytes(s.wal_bytes),
            args.to.display(),
            s.duration_s
        );
        println!("recovery settings: {}", s.recovery_settings.join("; "));
        println!(
            "start it (as its owner) with: pg_ctl start -D {}",
            args.to.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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

pub async fn wal(args: WalArgs, _config: Option<&Config>) -> ExitCode {
    let r = match args.cmd {
        WalCmd::Push {
            path,
            repo,
            system_identifier,
        } => {
            async {
                let system = system_of(system_identifier)?;
                let r = repo.open().await?;
                crate::postgres::wal_push(&r, &system, &path)
                    .await
                    .map(|_| ExitCode::SUCCESS)
            }
            .await
        }
        WalCmd::Stream {
            repo,
            postgres,
            spool,
            every,
        } => match repo.open().await {
            Ok(r) => {
                let status = std::sync::Arc::new(crate::walstream::WalStatus::default());
                let streamer = crate::walstream::WalStreamer {
                    repo: r,
                    conninfo: postgres,
                    spool,
                    upload_every: every,
                    status: status.clone(),
                    system: Default::default(),
                };
                let cancel = tokio_util::sync::CancellationToken::new();
                let stop = cancel.clone();
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
            Err(e) => Err(e),
        },
        WalCmd::Fetch {
            name,
            path,
            repo,
            system_identifier,
        } => {
            async {
                let system = system_of(system_identifier)?;
                let r = repo.open().await?;
                match crate::postgres::wal_fetch(&r, &system, &name, &path).await? {
                    true => Ok(ExitCode::SUCCESS),
                    // PostgreSQL asks for files that do not exist yet; a quiet 1 is the answer.
                    false => Ok(ExitCode::from(1)),
                }
            }
            .await
        }
    };
    r.unwrap_or_else(|e| fail(&e))
}
