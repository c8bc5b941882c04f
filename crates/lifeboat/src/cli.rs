//! Command-line shape and dispatch. Exit codes: 0 success, 1 failure or refusal, 2 bad
//! input (config or arguments).

use crate::{client, daemon, demo, drill, monitoring, notify};
use clap::{Parser, Subcommand};
use lifeboat_config::{ConfigError, Loaded};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    about = "Disaster-recovery control plane: failover, backups, drills"
)]
pub struct Cli {
    /// Config file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "lifeboat.toml",
        env = "LIFEBOAT_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// API base URL (default: from the config's controller.api-listen, else http://127.0.0.1:7400).
    #[arg(long, global = true)]
    pub api: Option<String>,
    /// Output JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Validate a config file and print every problem with its key path.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Run the controller, the endpoint and the API until SIGTERM.
    Run,
    /// Regions, nodes, roles, health, lag, the endpoint's target and the current decision.
    Status(#[command(flatten)] ApiArgs),
    /// Planned switch to NODE: wait until it has caught up, then switch. Loses nothing.
    Switchover {
        #[arg(long)]
        to: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Promote NODE now. Without --force it refuses a standby past the lag limit.
    Failover {
        #[arg(long)]
        to: String,
        /// Promote even past the lag limit or without fencing confirmation (may lose data).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop automatic failover of a service (probes and status continue).
    Pause {
        /// The service (needed when the config has several).
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume automatic failover of a service.
    Resume {
        /// The service (needed when the config has several).
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Bring a fenced node back as a replica of its service's primary (PostgreSQL: pg_rewind
    /// or a re-clone; Redis: REPLICAOF).
    Rejoin {
        node: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Recorded incidents with their timelines and measured RTO/RPO.
    Incident {
        #[command(subcommand)]
        command: IncidentCmd,
    },
    /// Notifiers: who hears about incidents, risks, stale backups and failed drills.
    Notify {
        #[command(subcommand)]
        command: NotifyCmd,
    },
    /// Drills: break a service on purpose, measure its recovery, put everything back.
    Drill {
        #[command(subcommand)]
        command: DrillCmd,
    },
    /// Alert rules for Prometheus and a dashboard for Grafana, from the metrics Lifeboat
    /// exports (no daemon or config needed).
    Monitoring {
        #[command(subcommand)]
        command: MonitoringCmd,
    },
    /// Two PostgreSQL regions on loopback, a canary writer, a killed primary: watch Lifeboat recover.
    Demo,
    /// Back up sources into a repository.
    Backup(lifeboat_backup::cli::BackupArgs),
    /// Restore from a repository.
    Restore(lifeboat_backup::cli::RestoreArgs),
    /// PostgreSQL WAL archiving (archive_command / restore_command).
    Wal(lifeboat_backup::cli::WalArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check FILE; exit 2 with every error when it is invalid.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// Recent incidents, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One incident with its timeline and figures.
    Show {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set an incident's status (investigating, identified, monitoring, resolved) with a
    /// message for the status page and the notifiers.
    Update {
        id: i64,
        #[arg(long)]
        state: String,
        #[arg(long)]
        message: String,
        /// Who says so (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A post-mortem draft in Markdown, from the incident's recorded steps and decisions.
    Postmortem {
        id: i64,
        /// Write it to FILE instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCmd {
    /// Each notifier: what it has not delivered yet, its last error, recent deliveries.
    List(#[command(flatten)] ApiArgs),
    /// Send a test message through notifier NAME and say how it ended.
    Test {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum DrillCmd {
    /// Configured drills, their schedules and last runs.
    List(#[command(flatten)] ApiArgs),
    /// Run drill NAME and follow it (Ctrl-C aborts it; the rollback still runs). Exit 0 when
    /// it passed.
    Run {
        name: String,
        /// Say what the drill would do and check that it could start; apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start it and return (follow with `drill report ID`).
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop the running drill; every applied fault is undone.
    Abort(#[command(flatten)] ApiArgs),
    /// One run's report (Markdown; --json for JSON; --svg FILE writes its chart).
    Report {
        id: i64,
        #[arg(long)]
        svg: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A drill's runs, newest first, with the RTO trend.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum MonitoringCmd {
    /// The Prometheus alert rules (as in deploy/prometheus/lifeboat-rules.yml).
    Rules {
        /// The job label Prometheus scrapes Lifeboat's /metrics under (the alert that no
        /// controller runs looks for it).
        #[arg(long, default_value = "lifeboat")]
        job: String,
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The Grafana dashboard (as in deploy/grafana/lifeboat-dashboard.json).
    Dashboard {
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub async fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Cmd::Config {
            command: ConfigCmd::Check { file },
        } => config_check(&file),
        Cmd::Run => match load(&cli.config) {
            Ok(loaded) => daemon::main(loaded).await,
            Err(code) => code,
        },
        Cmd::Drill { command } => match command {
            DrillCmd::List(api) => drill::list(&client::Api::new(&cli.config, &api)).await,
            DrillCmd::Run {
                name,
                dry_run,
                no_wait,
                api,
            } => {
                drill::run(
                    &client::Api::new(&cli.config, &api),
                    &name,
                    dry_run,
                    !no_wait,
                )
                .await
            }
            DrillCmd::Abort(api) => drill::abort(&client::Api::new(&cli.config, &api)).await,
            DrillCmd::Report { id, svg, api } => {
                drill::report(&client::Api::new(&cli.config, &api), id, svg.as_deref()).await
            }
            DrillCmd::History { name, limit, api } => {
                drill::history(&client::Api::new(&cli.config, &api), &name, limit).await
            }
        },
        Cmd::Monitoring { command } => match command {
            MonitoringCmd::Rules { job, out } => {
                monitoring::emit(&monitoring::rules(&job), out.as_deref())
            }
            MonitoringCmd::Dashboard { out } => {
                monitoring::emit(&monitoring::dashboard(), out.as_deref())
            }
        },
        Cmd::Demo => demo::main().await,
        Cmd::Status(api) => client::status(&client::Api::new(&cli.config, &api)).await,
        Cmd::Switchover { to, api } => {
            client::switchover(&client::Api::new(&cli.config, &api), &to).await
        }
        Cmd::Failover { to, force, api } => {
            client::failover(&client::Api::new(&cli.config, &api), &to, force).await
        }
        Cmd::Pause { service, api } => {
            client::simple(
                &client::Api::new(&cli.config, &api),
                "pause",
                service.as_deref(),
            )
            .await
        }
        Cmd::Resume { service, api } => {
            client::simple(
                &client::Api::new(&cli.config, &api),
                "resume",
                service.as_deref(),
            )
            .await
        }
        Cmd::Rejoin { node, api } => {
            client::rejoin(&client::Api::new(&cli.config, &api), &node).await
        }
        Cmd::Incident {
            command: IncidentCmd::List { limit, api },
        } => client::incidents(&client::Api::new(&cli.config, &api), limit).await,
        Cmd::Incident {
            command: IncidentCmd::Show { id, api },
        } => client::incident(&client::Api::new(&cli.config, &api), id).await,
        Cmd::Incident {
            command:
                IncidentCmd::Update {
                    id,
                    state,
                    message,
                    by,
                    api,
                },
        } => {
            notify::update(
                &client::Api::new(&cli.config, &api),
                id,
                &state,
                &message,
                by,
            )
            .await
        }
        Cmd::Incident {
            command: IncidentCmd::Postmortem { id, out, api },
        } => notify::postmortem(&client::Api::new(&cli.config, &api), id, out.as_deref()).await,
        Cmd::Notify {
            command: NotifyCmd::List(api),
        } => notify::list(&client::Api::new(&cli.config, &api)).await,
        Cmd::Notify {
            command: NotifyCmd::Test { name, api },
        } => notify::test(&client::Api::new(&cli.config, &api), &name).await,
        Cmd::Backup(a) => match offline_config(&cli.config) {
            Ok(c) => lifeboat_backup::cli::backup(a, c.as_ref().map(|l| &l.config)).await,
            Err(code) => code,
        },
        Cmd::Restore(a) => match offline_config(&cli.config) {
            Ok(c) => lifeboat_backup::cli::restore(a, c.as_ref().map(|l| &l.config)).await,
            Err(code) => code,
        },
        Cmd::Wal(a) => match offline_config(&cli.config) {
            Ok(c) => lifeboat_backup::cli::wal(a, c.as_ref().map(|l| &l.config)).await,
            Err(code) => code,
        },
    }
}

/// The config for commands that also work without one: absent when the default file does not
/// exist; an error (exit 2) when a given file is missing or invalid.
fn offline_config(path: &Path) -> Result<Option<Loaded>, ExitCode> {
    let is_default =
        path == Path::new("lifeboat.toml") && std::env::var_os("LIFEBOAT_CONFIG").is_none();
    if is_default && !path.exists() {
        return Ok(None);
    }
    load(path).map(Some)
}

fn config_check(file: &Path) -> ExitCode {
    match lifeboat_config::load(file) {
        Ok(l) => {
            for w in &l.warnings {
                println!("warning: {w}");
            }
            println!("{}: ok ({} warning(s))", file.display(), l.warnings.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_error(&e);
            ExitCode::from(2)
        }
    }
}

fn print_config_error(e: &ConfigError) {
    match e {
        ConfigError::Read { .. } => eprintln!("error: {e}"),
        ConfigError::Syntax { path, report } | ConfigError::Invalid { path, report } => {
            eprintln!("{}: {} error(s)", path.display(), report.errors.len());
            eprint!("{report}");
        }
    }
}

/// Loads the config for commands that need one; prints every problem and gives exit code 2.
pub fn load(path: &Path) -> Result<Loaded, ExitCode> {
    lifeboat_config::load(path).map_err(|e| {
        print_config_error(&e);
        ExitCode::from(2)
    })
}
