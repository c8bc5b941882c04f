//! The `lifeboat backup|restore|wal` commands. The binary parses them with clap and calls the
//! functions here; each prints its own output and returns the process exit code.

use crate::archiver::{backup_paths, Labels};
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
    },
    /// Back up directories or files now.
    Run {
        #[command(flatten)]
        repo: RepoArgs,
        /// Name of the source in snapshots (the parent is the last snapshot of the same source).
        #[arg(long, default_value = "dir")]
        source: String,
        #[arg(long, default_value = "manual")]
        tier: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(required = true)]
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
    /// Snapshot id (or a unique prefix, or `latest`).
    snapshot: String,
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
pub struct WalArgs {}

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
        BackupCmd::Init { repo } => {
            let pass = passphrase(repo.password_file.as_deref(), &repo.repo)?;
            let r = Repo::init(Storage::open(&repo.repo, true)?, &pass).await?;
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
            paths,
        } => {
            let r = repo.open().await?;
            let labels = Labels {
                source,
                tier,
                tags,
                group: None,
            };
            let (id, s) = backup_paths(&r, &paths, labels, &repo.progress()).await?;
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
                    "{verb} forget {} snapshot(s), keep {}; {verb} delete {} pack(s), repack {}, delete {} unindexed; {} freed",
                    report.forgotten.len(),
                    report.kept.len(),
                    report.packs_deleted,
                    report.packs_repacked,
                    report.packs_unindexed_deleted,
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

pub async fn wal(_args: WalArgs, _config: Option<&Config>) -> ExitCode {
    eprintln!("lifeboat wal: not available yet");
    ExitCode::from(2)
}
