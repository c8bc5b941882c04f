//! The daemon's control loop. Everything that can make Lifeboat act arrives as one [`Event`];
//! after each, the pure core decides and the executor carries the plan out.

use crate::executor::{now, Context, Execution, Executor, Timeouts};
use crate::metrics::Metrics;
use crate::providers::Datastore;
use crate::router::{Route, Router};
use crate::service::Service;
use crate::status::{EndpointStatus, NodeStatus, Status};
use lifeboat_config::{Config, ServiceKind};
use lifeboat_core::notice::{Notice, NoticeKind, RiskChange, Risks, StatusState};
use lifeboat_core::{
    decide, plan_command, risks, ClusterView, Command, ControllerState, Decision, Facts, Millis,
    NodeView, Policy, Thresholds, Tracker,
};
use lifeboat_store::{Outcome, Store};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Everything that can make the controller act.
#[derive(Debug)]
pub enum Event {
    /// A probe of a node that started at `started` answered, failed or ran past its
    /// timeout at `at`. Probes overlap, so answers may arrive out of order.
    Probe {
        node: String,
        started: Millis,
        at: Millis,
        result: Result<Facts, String>,
    },
    Check {
        region: String,
        check: String,
        started: Millis,
        at: Millis,
        result: Result<(), String>,
    },
    Request {
        request: Request,
        actor: String,
        reply: oneshot::Sender<Reply>,
    },
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Command(Command),
    Pause,
    Resume,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    pub incident: Option<i64>,
}

/// How the API and the CLI reach the running controller.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
    status: watch::Receiver<Status>,
    pub store: Arc<Store>,
    pub service: String,
    pub node_names: Vec<String>,
}

impl Handle {
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Sends a request and waits for its outcome (a plan may take a while to run).
    pub async fn request(&self, request: Request, actor: &str, timeout: Duration) -> Reply {
        let (reply, rx) = oneshot::channel();
        let ev = Event::Request {
            request,
            actor: actor.to_owned(),
            reply,
        };
        if self.tx.send(ev).await.is_err() {
            return Reply {
                ok: false,
                message: "the controller is shutting down".into(),
                incident: None,
            };
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Reply { ok: false, message: "the controller stopped before answering".into(), incident: None },
            Err(_) => Reply {
                ok: false,
                message: format!("no answer within {timeout:?}; the request may still complete: check `lifeboat status`"),
                incident: None,
            },
        }
    }
}

/// The controller of one service: its own loop, executor, endpoint and state. The daemon
/// runs one per service; they share nothing but the store's file and the metrics registry.
pub struct Controller {
    cfg: Arc<Config>,
    service: Service,
    store: Arc<Store>,
    router: Router,
    executor: Executor,
    policy: Policy,
    thresholds: Thresholds,
    state: ControllerState,
    trackers: BTreeMap<String, Tracker>,
    facts: BTreeMap<String, Facts>,
    /// Probes that started before this time describe a server a plan has since changed.
    facts_valid_from: BTreeMap<String, Millis>,
    checks: BTreeMap<(String, String), Tracker>,
    last_decision: String,
    resume_not_before: Option<Millis>,
    /// This service's newest incident (read once at start, then kept by `execute`).
    last_incident: Option<i64>,
    status: watch::Sender<Status>,
    metrics: Arc<Metrics>,
    /// Conditions seen, and which of them lasted long enough to be raised.
    risks: Risks,
    /// Since when the service has been healthy (its primary up and routed to, no plan since),
    /// and whether its incidents were resolved in this stretch (they are, once, after
    /// `resolve-after`; an incident opens only with a plan, which ends the stretch).
    healthy_since: Option<(Millis, bool)>,
}

impl Controller {
    /// Builds the controller from the config, loading durable state from `store`. A state
    /// that cannot be read is an error: the controller never starts blind, with epoch 0 and
    /// no fences.
    ///
    /// `store` is the daemon's; the controller scopes it to its service. The one PostgreSQL
    /// service of a config takes over the state of the single service of earlier versions.
    pub fn new(
        cfg: Arc<Config>,
        service: Service,
        store: &Store,
        router: Router,
        metrics: Arc<Metrics>,
    ) -> Result<Controller, lifeboat_store::StoreError> {
        let store = Arc::new(store.service(&service.name));
        let sc = &service.config;
        let f = &sc.failover;
        let t = Timeouts {
            probe: sc.probe.timeout.get(),
            promote: f.promote_timeout.get(),
            fence: f.fence_timeout.get(),
            fence_retry_for: f.fence_retry_for.get(),
            catch_up: f.catch_up_timeout.get(),
            rejoin: Duration::from_secs(120),
        };
        let postgres = cfg
            .services
            .values()
            .filter(|s| s.kind == ServiceKind::Postgres)
            .count();
        let state = store.state(service.kind == ServiceKind::Postgres && postgres == 1)?;
        let last_incident = store.last_incident()?;
        // Risks raised before a restart stay raised, so that they are cleared when they end.
        let mut risks = Risks::default();
        for n in store.last_notices(&format!("risk/{}/", service.name))? {
            if n.kind == NoticeKind::RiskRaised {
                if let Some(name) = n.details.get("risk") {
                    let c = lifeboat_core::notice::Condition {
                        name: name.clone(),
                        severity: n.severity,
                        sentence: n.text.clone(),
                    };
                    risks.restore(c, n.at);
                }
            }
        }
        let start = now();
        if let Some(tier) = cfg.tier(sc) {
            metrics.targets(&service.name, tier.rpo.get(), tier.rto.get());
        }
        Ok(Controller {
            policy: Policy {
                mode: f.mode,
                replication: f.replication,
                max_lag_bytes: f.max_lag.0,
                cooldown_ms: f.cooldown.get().as_millis() as u64,
                sync_archive: cfg.synchronous_archive_of(&service.name),
            },
            thresholds: Thresholds {
                failure: sc.probe.failure_threshold,
                success: sc.probe.success_threshold,
            },
            executor: Executor::new(&service, Arc::new(router.clone()), store.clone(), t),
            trackers: service
                .nodes
                .iter()
                .map(|n| (n.name.clone(), Tracker::new(start)))
                .collect(),
            checks: sc
                .regions
                .iter()
                .flat_map(|(r, rc)| {
                    rc.checks
                        .iter()
                        .map(move |c| ((r.clone(), c.name.clone()), Tracker::new(start)))
                })
                .collect(),
            facts: BTreeMap::new(),
            facts_valid_from: BTreeMap::new(),
            last_decision: String::new(),
            resume_not_before: None,
            last_incident,
            status: watch::Sender::new(Status::default()),
            cfg,
            service,
            store,
            router,
            state,
            metrics,
            risks,
            healthy_since: None,
        })
    }

    /// Starts probers and the loop; returns the handle the API uses.
    pub fn start(mut self, cancel: CancellationToken, tasks: &TaskTracker) -> Handle {
        self.executor.attach(tasks.clone(), cancel.clone());
        let (tx, rx) = mpsc::channel(1024);
        let handle = Handle {
            tx: tx.clone(),
            status: self.status.subscribe(),
            store: self.store.clone(),
            service: self.service.name.clone(),
            node_names: self.service.nodes.iter().map(|n| n.name.clone()).collect(),
        };
        let probe = &self.service.config.probe;
        let (interval, timeout) = (probe.interval.get(), probe.timeout.get());
        for n in &self.service.nodes {
            tasks.spawn(prober(
                n.name.clone(),
                self.service.datastore.clone(),
                interval,
                timeout,
                tx.clone(),
                cancel.clone(),
            ));
        }
        for (region, rc) in &self.service.config.regions {
            for c in &rc.checks {
                tasks.spawn(crate::checks::checker(
                    region.clone(),
                    c.clone(),
                    interval.max(Duration::from_secs(1)),
                    timeout,
                    tx.clone(),
                    cancel.clone(),
                ));
            }
        }
        tasks.spawn(ticker(tx, cancel.clone()));
        tasks.spawn(self.run(rx, cancel));
        handle
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        info!(service = %self.service.name, primary = ?self.state.primary, epoch = self.state.epoch, "controller started");
        let _ = self.store.event(now(), "controller", "controller started");
        self.publish(&["starting".into()]);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = cancel.cancelled() => None,
            };
            let Some(ev) = ev else { break };
            self.handle(ev).await;
            // Take everything already queued before deciding once.
            while let Ok(ev) = rx.try_recv() {
                self.handle(ev).await;
            }
            self.decide_and_act().await;
        }
        let _ = self.store.event(now(), "controller", "controller stopped");
        info!("controller stopped");
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Probe {
                node,
                started,
                at,
                result,
            } => {
                let Some(tr) = self.trackers.get_mut(&node) else {
                    return;
                };
                let changed = tr.observe_probe(
                    result.as_ref().map(|_| ()).map_err(String::as_str),
                    started,
                    at,
                    self.thresholds,
                );
                // Facts come only from a probe that started after the one they replace and
                // after the last plan that changed the server: a late answer describes the
                // server as it was.
                let stale = self
                    .facts_valid_from
                    .get(&node)
                    .is_some_and(|t| started < *t);
                if let Some(facts) = result.ok().filter(|_| !stale) {
                    self.facts.insert(node.clone(), facts);
                    self.facts_valid_from.insert(node.clone(), started);
                }
                if changed {
                    let h = &self.trackers[&node].health;
                    info!(%node, health = %h, "node health changed");
                    let _ = self.store.event(at, "health", &format!("{node}: {h}"));
                }
            }
            Event::Check {
                region,
                check,
                started,
                at,
                result,
            } => {
                if let Some(tr) = self.checks.get_mut(&(region.clone(), check.clone())) {
                    if tr.observe_probe(
                        result.as_ref().map(|_| ()).map_err(String::as_str),
                        started,
                        at,
                        self.thresholds,
                    ) {
                        let _ = self.store.event(
                            at,
                            "check",
                            &format!("{region}/{check}: {}", tr.health),
                        );
                    }
                }
            }
            Event::Request {
                request,
                actor,
                reply,
            } => {
                let r = self.request(request, &actor).await;
                let _ = reply.send(r);
            }
            Event::Tick => {}
        }
    }

    async fn request(&mut self, request: Request, actor: &str) -> Reply {
        let at = now();
        let _ = self.store.audit(at, actor, &format!("{request:?}"), "");
        match request {
            Request::Pause | Request::Resume => {
                self.state.paused = request == Request::Pause;
                let _ = self.store.put_state(&self.state);
                let word = if self.state.paused {
                    "paused"
                } else {
                    "resumed"
                };
                let _ = self
                    .store
                    .event(at, "operator", &format!("{word} by {actor}"));
                Reply {
                    ok: true,
                    message: format!("automatic failover {word}"),
                    incident: None,
                }
            }
            Request::Command(cmd) => {
                if self.state.in_flight.is_some() {
                    return Reply {
                        ok: false,
                        message:
                            "a plan is in flight; wait for it to finish (see `lifeboat status`)"
                                .into(),
                        incident: None,
                    };
                }
                let view = self.view();
                match plan_command(&view, &self.policy, &cmd, at) {
                    Err(reasons) => {
                        let _ = self.store.event(
                            at,
                            "operator",
                            &format!("{cmd:?} refused: {}", reasons.join("; ")),
                        );
                        Reply {
                            ok: false,
                            message: reasons.join("\n"),
                            incident: None,
                        }
                    }
                    Ok(plan) => {
                        let ex = self.execute(&plan, at).await;
                        let ok = ex.outcome == Outcome::Ok;
                        let mut message = plan.to_string();
                        message.push_str(&format!("outcome: {}", ex.outcome.as_str()));
                        if let Some(p) = &ex.problem {
                            message.push_str(&format!(" ({p})"));
                        }
                        Reply {
                            ok,
                            message,
                            incident: ex.incident,
                        }
                    }
                }
            }
        }
    }

    async fn execute(&mut self, plan: &lifeboat_core::Plan, at: Millis) -> Execution {
        // A healthy stretch that resolves incidents starts after the last plan.
        self.healthy_since = None;
        self.publish(&[format!("executing {}", plan.kind.as_str())]);
        let last_ok = plan
            .old_primary
            .as_ref()
            .and_then(|o| self.trackers.get(o))
            .and_then(|t| t.last_ok);
        let tier = self.cfg.tier(&self.service.config);
        let ctx = Context {
            decided_at: at,
            last_ok_at: last_ok,
            rto_target_ms: tier.map(|t| t.rto.get().as_millis() as u64),
            rpo_target_ms: tier.map(|t| t.rpo.get().as_millis() as u64),
        };
        let ex = self.executor.run(plan, &mut self.state, ctx).await;
        self.last_incident = ex.incident.or(self.last_incident);
        self.metrics.plan_finished(
            &self.service.name,
            plan.kind.as_str(),
            ex.outcome.as_str(),
            &ex.figures,
        );
        let summary = format!(
            "{} {}{}",
            plan.kind.as_str(),
            ex.outcome.as_str(),
            ex.problem
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        );
        let _ = self.store.event(now(), "plan", &summary);
        if self.state.in_flight.is_some() {
            self.resume_not_before = Some(now().plus_ms(1_000));
        }
        // Facts about the servers the plan changed are stale now, and so is any probe that
        // started before the plan ended. Routing and bookkeeping steps change no server, and
        // their facts still bound data loss. After a change of synchronous standbys the old
        // facts would call a standby synchronous when it no longer is: until a fresh probe,
        // a failover must not rely on them. Steps that did not run, or could not reach their
        // node, changed nothing: what was known of it still holds (a primary lost while a
        // step tried to reach it keeps the last WAL position seen).
        let ended = now();
        for s in &ex.touched {
            if s.may_change_server() {
                self.facts.remove(s.node());
                self.facts_valid_from.insert(s.node().to_owned(), ended);
            }
        }
        ex
    }

    async fn decide_and_act(&mut self) {
        let at = now();
        if self.state.in_flight.is_some() && self.resume_not_before.is_some_and(|t| at < t) {
            return self.publish(&["waiting to resume the plan in flight".into()]);
        }
        let view = self.view();
        let d = decide(&view, &self.policy, at);
        let conditions = {
            let st = self.status.borrow();
            risks(
                &view,
                &self.policy,
                &d,
                st.rpo_exposure_seconds,
                st.rpo_target_seconds,
            )
        };
        let text = d.to_string();
        if text != self.last_decision {
            let _ = self.store.decision(at, &d);
            self.last_decision = text;
        }
        match d {
            Decision::NoAction { reasons } => self.publish(&reasons),
            Decision::Act(plan) => {
                self.execute(&plan, at).await;
                self.last_decision.clear();
                let view = self.view();
                let reasons = decide(&view, &self.policy, now()).reasons().to_vec();
                self.publish(&reasons);
            }
        }
        self.watch(conditions, now());
    }

    /// Raises the conditions that lasted and clears those gone (each a notice and an event),
    /// and resolves this service's incidents once it has been healthy for `resolve-after`.
    fn watch(&mut self, conditions: Vec<lifeboat_core::notice::Condition>, at: Millis) {
        let inc = &self.cfg.incidents;
        let service = self.service.name.clone();
        // Until every node has been observed, what is missing is not known to be gone.
        let known = self.trackers.values().all(|t| !t.health.is_unknown());
        let changes = if known {
            let after = inc.risk_after.get().as_millis() as u64;
            self.risks.observe(at, after, conditions)
        } else {
            Vec::new()
        };
        for change in changes {
            let (kind, c, title) = match change {
                RiskChange::Raised(c, since) => {
                    let t = format!("at risk since {since}: {}", c.sentence);
                    (NoticeKind::RiskRaised, c, t)
                }
                RiskChange::Cleared(c, _) => {
                    let t = format!("no longer at risk: {}", c.sentence);
                    (NoticeKind::RiskCleared, c, t)
                }
            };
            warn!(risk = %c.name, "{title}");
            let _ = self.store.event(at, "risk", &title);
            let n = Notice::new(
                kind,
                &service,
                c.severity,
                format!("risk/{service}/{}", c.name),
            )
            .at(at)
            .title(title)
            .text(c.sentence.clone())
            .detail("risk", &c.name);
            if let Err(e) = self.store.notice(&n, None) {
                warn!(error = %e, "could not record a risk's notice");
            }
        }
        let healthy = {
            let st = self.status.borrow();
            st.primary.is_some()
                && st.in_flight.is_none()
                && st.endpoint.routes_to == st.primary
                && st
                    .nodes
                    .iter()
                    .any(|n| Some(&n.name) == st.primary.as_ref() && n.health == "up")
        };
        if !healthy {
            self.healthy_since = None;
            return;
        }
        let (since, resolved) = self.healthy_since.get_or_insert((at, false));
        let since = *since;
        if *resolved || at.since(since) < inc.resolve_after.get().as_millis() as u64 {
            return;
        }
        *resolved = true;
        let Ok(open) = self.store.unresolved_incidents() else {
            return;
        };
        for id in open {
            let kind = self
                .store
                .incident(id)
                .ok()
                .flatten()
                .map_or_else(String::new, |i| i.kind);
            let text = format!(
                "{service} has been healthy for {}: its primary {} is up and takes writes through the endpoint",
                lifeboat_core::time::format_ms(at.since(since)),
                self.state.primary.as_deref().unwrap_or("?")
            );
            let r = crate::notify::set_state(
                &self.store,
                id,
                &kind,
                StatusState::Resolved,
                "resolved",
                &text,
                "lifeboat",
                at,
            );
            match r {
                Ok(()) => info!(incident = id, "incident resolved: {text}"),
                Err(e) => warn!(error = %e, "could not resolve incident {id}"),
            }
        }
    }

    fn view(&self) -> ClusterView {
        let region_ok = |region: &str| {
            !self
                .checks
                .iter()
                .any(|((r, _), t)| r == region && t.health.is_down())
        };
        ClusterView {
            nodes: self
                .service
                .nodes
                .iter()
                .map(|n| NodeView {
                    name: n.name.clone(),
                    region: n.region.clone(),
                    region_role: n.region_role,
                    priority: n.priority,
                    health: self.trackers[&n.name].health.clone(),
                    facts: self.facts.get(&n.name).cloned(),
                    fenced: self.state.fenced.contains(&n.name),
                    needs_rejoin: self.state.needs_rejoin.contains(&n.name),
                    checks_ok: region_ok(&n.region),
                    controllable: self.service.datastore.can_rejoin(&n.name),
                    stonith: n.config.fence_command.is_some(),
                })
                .collect(),
            primary: self.state.primary.clone(),
            epoch: self.state.epoch,
            paused: self.state.paused,
            last_failover: self.state.last_failover,
            in_flight: self.state.in_flight.clone(),
            endpoint: match self.router.current() {
                Route::To { node, .. } => Some(node),
                Route::Blocked => None,
            },
        }
    }

    fn publish(&self, reasons: &[String]) {
        let st = &self.state;
        let primary_facts = st
            .primary
            .as_ref()
            .and_then(|p| self.facts.get(p))
            .filter(|f| !f.is_replica());
        let ds = &self.service.datastore;
        let route = self.router.current();
        let mut exposure: Option<(u64, f64)> = None;
        let nodes: Vec<NodeStatus> = self
            .service
            .nodes
            .iter()
            .map(|n| {
                let tr = &self.trackers[&n.name];
                let f = self.facts.get(&n.name);
                let is_primary = st.primary.as_deref() == Some(n.name.as_str());
                let role = if st.needs_rejoin.contains(&n.name) {
                    "needs-rejoin"
                } else if st.fenced.contains(&n.name) {
                    "fenced"
                } else if is_primary {
                    "primary"
                } else if f.is_some_and(Facts::is_replica) {
                    "standby"
                } else {
                    "unknown"
                };
                let lag_bytes = match (f, primary_facts) {
                    (Some(f), Some(p)) if f.is_replica() => {
                        Some(p.position.saturating_sub(f.position))
                    }
                    _ => None,
                };
                let lag_seconds = primary_facts
                    .filter(|_| f.is_some_and(Facts::is_replica))
                    .and_then(|p| p.replica_lag_ms.get(&n.name))
                    .map(|ms| *ms as f64 / 1000.0);
                if role == "standby" && tr.health.is_up() {
                    if let Some(b) = lag_bytes {
                        let s = lag_seconds.unwrap_or(0.0);
                        exposure = Some(match exposure {
                            None => (b, s),
                            Some((eb, es)) => (eb.min(b), es.min(s)),
                        });
                    }
                }
                let sync_state = st
                    .primary
                    .as_ref()
                    .and_then(|p| self.facts.get(p))
                    .map(|pf| {
                        if pf.sync_replicas.contains(&n.name) {
                            "sync".to_owned()
                        } else if pf.connected_replicas.contains(&n.name) {
                            "async".to_owned()
                        } else {
                            "disconnected".to_owned()
                        }
                    });
                self.metrics.node(
                    &self.service.name,
                    &n.name,
                    tr.health.is_up(),
                    lag_bytes,
                    lag_seconds,
                );
                NodeStatus {
                    name: n.name.clone(),
                    region: n.region.clone(),
                    region_role: n.region_role.to_string(),
                    role: role.into(),
                    health: tr.health.label().into(),
                    health_detail: tr.health.to_string(),
                    position: f.map(|f| ds.format_position(f.position)),
                    lag_bytes,
                    lag_seconds,
                    streaming: f.filter(|f| f.is_replica()).map(|f| f.streaming),
                    sync_state: if is_primary { None } else { sync_state },
                    last_ok_ms: tr.last_ok.map(|m| m.0),
                }
            })
            .collect();
        self.metrics.cluster(
            &self.service.name,
            st.epoch,
            st.paused,
            exposure,
            self.router.stats.active.load(Ordering::Relaxed),
        );
        let sc = &self.service.config;
        let tier = self.cfg.tier(sc);
        let status = Status {
            at_ms: now().0,
            service: self.service.name.clone(),
            kind: sc.kind.as_str().into(),
            tier: sc.tier.clone(),
            replication: sc.failover.replication.to_string(),
            mode: format!("{:?}", sc.failover.mode).to_lowercase(),
            primary: st.primary.clone(),
            epoch: st.epoch,
            paused: st.paused,
            endpoint: EndpointStatus {
                listen: sc.endpoint.listen.to_string(),
                routes_to: match &route {
                    Route::To { node, .. } => Some(node.clone()),
                    Route::Blocked => None,
                },
                epoch: match &route {
                    Route::To { epoch, .. } => Some(*epoch),
                    Route::Blocked => None,
                },
                active_connections: self.router.stats.active.load(Ordering::Relaxed),
            },
            nodes,
            decision: reasons.to_vec(),
            in_flight: st.in_flight.as_ref().map(|p| p.to_string()),
            fencing_in_background: self.executor.fencing_in_background(),
            rpo_exposure_bytes: exposure.map(|e| e.0),
            rpo_exposure_seconds: exposure.map(|e| e.1),
            rpo_target_seconds: tier.map(|t| t.rpo.get().as_secs_f64()),
            rto_target_seconds: tier.map(|t| t.rto.get().as_secs_f64()),
            last_incident: self.last_incident,
        };
        self.status.send_replace(status);
    }
}

/// One prober per node: a fresh connection every interval, results sent as events.
async fn prober(
    node: String,
    datastore: Arc<dyn Datastore>,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    overlapping(
        interval,
        timeout,
        cancel,
        tx,
        {
            let node = node.clone();
            move || {
                let (datastore, node) = (datastore.clone(), node.clone());
                async move { datastore.probe(&node, timeout).await }
            }
        },
        move |started, at, result| Event::Probe {
            node: node.clone(),
            started,
            at,
            result,
        },
    )
    .await
}

/// Starts `probe` every `interval` whether or not the earlier ones have answered, so a probe
/// that hangs never delays the next (tenet 7). Each probe is bounded by `timeout`: one that
/// runs past it is reported as failed at its deadline. At most `timeout / interval + 1`
/// probes are in flight; all are dropped (and their connections closed) on cancellation.
pub(crate) async fn overlapping<T, F, Fut>(
    interval: Duration,
    timeout: Duration,
    cancel: CancellationToken,
    tx: mpsc::Sender<Event>,
    probe: F,
    event: impl Fn(Millis, Millis, Result<T, String>) -> Event,
) where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut every = Every::new(interval, cancel.clone());
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            more = every.next() => {
                if !more {
                    return;
                }
                let started = now();
                let fut = probe();
                in_flight.spawn(async move {
                    let result = tokio::time::timeout(timeout, fut)
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                    (started, now(), result)
                });
            }
            Some(done) = in_flight.join_next() => {
                let Ok((started, at, result)) = done else { continue };
                let ev = event(started, at, result);
                tokio::select! {
                    sent = tx.send(ev) => if sent.is_err() { return },
                    () = cancel.cancelled() => return,
                }
            }
        }
    }
}

async fn ticker(tx: mpsc::Sender<Event>, cancel: CancellationToken) {
    let mut every = Every::new(Duration::from_secs(1), cancel);
    while every.next().await {
        if tx.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

/// The clock of a background worker: a tick every `period` (after a stall it waits a whole
/// period rather than bursting) until cancelled.
pub(crate) struct Every {
    tick: tokio::time::Interval,
    cancel: CancellationToken,
}

impl Every {
    pub(crate) fn new(period: Duration, cancel: CancellationToken) -> Every {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every { tick, cancel }
    }

    /// Waits for the next tick; `false` once cancelled.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            () = self.cancel.cancelled() => false,
        }
    }
}
