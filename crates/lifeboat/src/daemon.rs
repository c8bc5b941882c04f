//! `lifeboat run`: wires the store, controller, endpoint, API and backup scheduler together
//! and runs them until SIGTERM or SIGINT, then drains within a grace period.

use anyhow::{Context, Result};
use lifeboat_config::{Config, Loaded, ServiceKind};
use lifeboat_exec::notify::status_page::StatusPages;
use lifeboat_exec::notify::{self, Notifiers};
use lifeboat_exec::{Controller, Drilled, Drills, Handle, Metrics, Router, Service};
use lifeboat_store::Store;
use prometheus_client::registry::Registry;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

const GRACE: Duration = Duration::from_secs(10);

/// A started daemon: everything it runs hangs off `cancel` and `tasks`.
pub struct Running {
    /// One per service, in service-name order.
    pub handles: Vec<Handle>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Cancels everything and waits for the tasks to end, at most `GRACE`.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            warn!("tasks did not stop within {GRACE:?}; exiting anyway");
        }
    }
}

pub async fn main(loaded: Loaded) -> ExitCode {
    init_logging();
    for w in &loaded.warnings {
        warn!("config {}: {w}", loaded.path.display());
    }
    let running = match start(loaded.config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    wait_for_signal().await;
    info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The API token from the configured file or variable; `None` when none is configured.
fn api_token(cfg: &Config) -> Result<Option<Arc<str>>> {
    let c = &cfg.controller;
    let token =
        lifeboat_config::read_secret(c.api_token_file.as_deref(), c.api_token_env.as_deref())
            .context("the API token (controller.api-token-file or api-token-env)")?
            .map(|t| t.trim().to_owned());
    match token {
        Some(t) if t.is_empty() => {
            anyhow::bail!("the API token is empty; put a long random string in it")
        }
        t => Ok(t.map(Arc::from)),
    }
}

/// Starts every part of the daemon. Fails, before anything runs, when the state directory,
/// a secret or a listen address is unusable.
pub async fn start(cfg: Config) -> Result<Running> {
    let cfg = Arc::new(cfg);
    let state_dir = &cfg.controller.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let store = Store::open(state_dir)
        .with_context(|| format!("opening the store in {}", state_dir.display()))?;
    // Faults a drill left applied when the process running it was killed come off first.
    for line in lifeboat_exec::drill::recover(&store)
        .await
        .context("undoing the faults of an interrupted drill")?
    {
        warn!("{line}");
    }
    let token = api_token(&cfg)?;
    if token.is_none() {
        warn!("no API token configured: changing API calls (switchover, failover, pause, ...) are refused");
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    // Every notifier with its secret, before anything is bound or runs.
    let notifiers = Notifiers::new(&cfg, &store, &mut registry).map_err(anyhow::Error::msg)?;
    // Every service's nodes, endpoint and controller, before anything runs.
    let mut services = Vec::new();
    for (name, sc) in &cfg.services {
        let service = Service::new(name, sc)?;
        let drilled = service.clone();
        let endpoint = tokio::net::TcpListener::bind(sc.endpoint.listen)
            .await
            .with_context(|| {
                format!(
                    "services.{name}.endpoint.listen: cannot listen on {}",
                    sc.endpoint.listen
                )
            })?;
        let router = Router::new().with_upstream_timeout(sc.endpoint.upstream_timeout.get());
        let controller = Controller::new(
            cfg.clone(),
            service,
            &store,
            router.clone(),
            metrics.clone(),
        )?;
        services.push((name, sc, endpoint, router, controller, drilled));
    }
    let api = tokio::net::TcpListener::bind(cfg.controller.api_listen)
        .await
        .with_context(|| {
            format!(
                "controller.api-listen: cannot listen on {}",
                cfg.controller.api_listen
            )
        })?;
    let api_addr = api.local_addr()?;
    let scheduler = lifeboat_backup::scheduler::Scheduler::new(&cfg);
    if let Some(s) = &scheduler {
        s.register_metrics(&mut registry);
    }

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut handles = Vec::new();
    let mut drilled = Vec::new();
    for (name, sc, endpoint, router, controller, service) in services {
        let addr = endpoint.local_addr()?;
        let handle = controller.start(cancel.clone(), &tasks);
        drilled.push(Drilled {
            service,
            handle: handle.clone(),
        });
        handles.push(handle);
        tasks.spawn(router.serve(
            endpoint,
            sc.endpoint.hold_timeout.get(),
            sc.endpoint.connect_timeout.get(),
            cancel.clone(),
            tasks.clone(),
        ));
        info!(service = %name, kind = sc.kind.as_str(), endpoint = %addr, "service protected");
    }
    let drills = Drills::new(
        cfg.clone(),
        store.clone(),
        drilled,
        &mut registry,
        cancel.clone(),
        tasks.clone(),
    );
    tasks.spawn(drills.clone().schedule());
    notifiers.run(&tasks, &cancel);
    info!(notifiers = ?notifiers.names(), "notifications");
    let state = lifeboat_api::ApiState {
        services: handles.clone(),
        token,
        registry: Arc::new(registry),
        drills,
        notifiers,
        pages: StatusPages {
            config: cfg.clone(),
            store: store.clone(),
        },
    };
    let api_cancel = cancel.clone();
    tasks.spawn(async move {
        if let Err(e) = lifeboat_api::serve(api, state, api_cancel).await {
            warn!(error = %e, "the API server stopped");
        }
    });
    if let Some(s) = scheduler {
        // Sources that follow the primary back up, and stream WAL from, the node the
        // controller of the PostgreSQL service holds as primary: they carry on after a
        // failover. (The config allows follow-primary with one PostgreSQL service only.)
        let pg = handles
            .iter()
            .zip(cfg.services.values())
            .find(|(_, sc)| sc.kind == ServiceKind::Postgres)
            .map(|(h, _)| h.clone());
        let (events, c) = (store.clone(), cfg.clone());
        let s = s
            .following(Arc::new(move || {
                pg.as_ref().and_then(|h| h.status().primary)
            }))
            .reporting(Arc::new(move |e| {
                if let Err(err) = events.notice(&notify::backup_notice(&c, e), None) {
                    warn!(error = %err, "could not record a backup notice");
                }
            }));
        tasks.spawn(s.run(cancel.clone()));
    }
    info!(api = %api_addr, services = handles.len(), "lifeboat running");
    Ok(Running {
        handles,
        cancel,
        tasks,
    })
}
