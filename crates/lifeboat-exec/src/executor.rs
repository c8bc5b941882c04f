//! The one executor: every side effect of a plan goes through here, bounded in time and
//! recorded step by step in the incident's timeline. A step that cannot tell what happened
//! ends as `unknown`; the plan is then kept in flight and resumed, never guessed.

use crate::notify::incident_severity;
use crate::providers::{Answer, Datastore, TrafficSwitch};
use crate::service::{Node, Service};
use lifeboat_core::notice::{incident_key, Notice, NoticeKind, StatusState};
use lifeboat_core::plan::FenceMode;
use lifeboat_core::{
    after_plan, after_step, before_step, ControllerState, Millis, Plan, PlanKind, Step, StepOutcome,
};
use lifeboat_store::{Figures, Outcome, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

pub fn now() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

pub use crate::providers::Timeouts;

/// What a plan run achieved.
#[derive(Clone, Debug)]
pub struct Execution {
    pub outcome: Outcome,
    pub incident: Option<i64>,
    pub figures: Figures,
    /// The step that failed or ended unknown, with its detail.
    pub problem: Option<String>,
    /// Steps (compensations included) that may have changed a server: all that ran, but for
    /// those that could not reach their node. What the controller knew of those servers is
    /// stale now.
    pub touched: Vec<Step>,
}

/// Known before the plan runs, for the incident's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    pub decided_at: Millis,
    pub last_ok_at: Option<Millis>,
    pub rto_target_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
}

pub struct Executor {
    nodes: BTreeMap<String, Node>,
    datastore: Arc<dyn Datastore>,
    traffic: Arc<dyn TrafficSwitch>,
    store: Arc<Store>,
    t: Timeouts,
    background: Background,
}

/// Fences that carry on after their step: one per node at most, each cancelled by the next
/// step that may change its node, and all by the daemon's shutdown.
struct Background {
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// node -> the token of its running background fence. Whoever cancels a token removes
    /// it first (under the lock), so a fence that ends uncancelled still owns its entry.
    fences: Arc<Mutex<BTreeMap<String, CancellationToken>>>,
}

impl Executor {
    pub fn new(
        service: &Service,
        traffic: Arc<dyn TrafficSwitch>,
        store: Arc<Store>,
        t: Timeouts,
    ) -> Executor {
        Executor {
            nodes: service
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            datastore: service.datastore.clone(),
            traffic,
            store,
            t,
            background: Background {
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                fences: Arc::default(),
            },
        }
    }

    /// Runs background fences on the daemon's task tracker, under its cancellation token, so
    /// shutdown stops and drains them with everything else.
    pub fn attach(&mut self, tasks: TaskTracker, cancel: CancellationToken) {
        self.background.tasks = tasks;
        self.background.cancel = cancel;
    }

    /// Nodes whose fence is still being retried in the background.
    pub fn fencing_in_background(&self) -> Vec<String> {
        let fences = self
            .background
            .fences
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        fences.keys().cloned().collect()
    }

    /// Stops the background fence of `node`, if any: a step that changes that server now
    /// owns it (a rejoin must not be stopped by a fence that started before it).
    fn stop_background_fence(&self, node: &str) {
        let mut fences = self
            .background
            .fences
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(token) = fences.remove(node) {
            token.cancel();
        }
    }

    /// Fences `n` in the background: attempts bounded by the fence timeout, retried every
    /// half second for `fence_retry_for`, recorded on the incident's timeline when it ends.
    fn fence_in_background(&self, node: &str, mode: FenceMode, incident: Option<i64>) {
        self.stop_background_fence(node);
        let token = self.background.cancel.child_token();
        self.background
            .fences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned(), token.clone());
        let (node, store, t) = (node.to_owned(), self.store.clone(), self.t);
        let datastore = self.datastore.clone();
        let fences = self.background.fences.clone();
        let span = tracing::info_span!(parent: None, "background-fence", %node, incident);
        self.background.tasks.spawn(
            async move {
                let started = now();
                let row = incident.and_then(|i| {
                    store
                        .step_started(i, started, "fence-node", &node, "background")
                        .ok()
                });
                let (outcome, detail) = background_fence(&*datastore, &node, mode, t, &token).await;
                let detail = format!(
                    "background: {detail}, {:.1} s after the plan went on without it",
                    now().since(started) as f64 / 1000.0
                );
                info!(outcome = outcome.as_str(), "{detail}");
                if let Some(row) = row {
                    let _ = store.step_finished(row, now(), outcome, &detail);
                }
                let _ = store.event(now(), "fence", &format!("{node}: {detail}"));
                let mut fences = fences.lock().unwrap_or_else(|e| e.into_inner());
                if !token.is_cancelled() {
                    fences.remove(&node);
                }
            }
            .instrument(span),
        );
    }

    fn persist(&self, state: &ControllerState) {
        if let Err(e) = self.store.put_state(state) {
            warn!(error = %e, "could not persist controller state");
        }
    }

    /// Runs `plan` to the end, or compensates it when it fails before its point of no return.
    pub async fn run(&self, plan: &Plan, state: &mut ControllerState, ctx: Context) -> Execution {
        let span = tracing::info_span!("plan", kind = plan.kind.as_str(), epoch = plan.epoch);
        let mut touched = Vec::new();
        let mut ex = self
            .run_inner(plan, state, ctx, &mut touched)
            .instrument(span)
            .await;
        ex.touched = touched;
        ex
    }

    async fn run_inner(
        &self,
        plan: &Plan,
        state: &mut ControllerState,
        ctx: Context,
        touched: &mut Vec<Step>,
    ) -> Execution {
        let fault = plan.fault_at.unwrap_or(ctx.decided_at);
        let mut figures = Figures {
            fault_at_ms: plan.fault_at.map(|m| m.0),
            last_ok_at_ms: ctx.last_ok_at.map(|m| m.0),
            detect_ms: plan.fault_at.map(|f| ctx.decided_at.since(f)),
            lag_bytes_at_fault: plan.lag_bytes,
            rto_target_ms: ctx.rto_target_ms,
            rpo_target_ms: ctx.rpo_target_ms,
            ..Figures::default()
        };
        let incident = match state
            .in_flight_incident
            .filter(|_| is_in_flight(state, plan))
        {
            Some(id) => Some(id),
            None if plan.kind.opens_incident() => {
                match self.store.open_incident(ctx.decided_at, plan, &figures) {
                    Ok(id) => {
                        self.opened(id, plan, &figures, ctx.decided_at);
                        Some(id)
                    }
                    Err(e) => {
                        warn!(error = %e, "could not record the incident");
                        None
                    }
                }
            }
            None => None,
        };
        if plan.kind.opens_incident() || plan.kind == PlanKind::Rejoin {
            state.in_flight = Some(plan.clone());
            state.in_flight_incident = incident;
            self.persist(state);
        }
        info!(incident, "executing\n{plan}");
        let mut done: Vec<&Step> = Vec::new();
        let mut past_no_return = false;
        for step in &plan.steps {
            if plan.epoch < state.epoch {
                let why = format!(
                    "fencing token {} is older than the current epoch {}: plan abandoned",
                    plan.epoch, state.epoch
                );
                return self.finish(
                    plan,
                    state,
                    incident,
                    figures,
                    Outcome::Failed,
                    Some(why),
                    false,
                );
            }
            let started = now();
            let row = incident.and_then(|i| {
                self.store
                    .step_started(i, started, step.name(), step.node(), "")
                    .ok()
            });
            let result = self
                .step(plan, step, state, incident)
                .instrument(tracing::info_span!(
                    "step",
                    step = step.name(),
                    node = step.node()
                ))
                .await;
            let ended = now();
            let (outcome, detail) = match &result {
                Answer::Ok(d) => (Outcome::Ok, d.clone()),
                Answer::Failed(d) | Answer::Unreached(d) => (Outcome::Failed, d.clone()),
                Answer::Unknown(d) => (Outcome::Unknown, d.clone()),
            };
            if !matches!(result, Answer::Unreached(_)) {
                touched.push(step.clone());
            }
            info!(
                step = step.name(),
                node = step.node(),
                outcome = outcome.as_str(),
                ms = ended.since(started),
                "{detail}"
            );
            if let Some(row) = row {
                let _ = self.store.step_finished(row, ended, outcome, &detail);
            }
            if let Some(i) = incident {
                self.step_notice(i, plan, step, outcome, &detail, ended);
            }
            match result {
                Answer::Ok(_) => {
                    match step {
                        Step::Promote { node, .. } => {
                            figures.promote_ms = Some(ended.since(fault));
                            if let Some(i) = incident {
                                let text = format!(
                                    "{node} is the primary (epoch {}); traffic moves to it next",
                                    plan.epoch
                                );
                                self.state_notice(
                                    i,
                                    plan,
                                    StatusState::Identified,
                                    &format!("{node} promoted"),
                                    &text,
                                );
                            }
                        }
                        Step::CheckWrite { .. } => {
                            figures.first_write_ms = Some(ended.since(fault))
                        }
                        _ => {}
                    }
                    past_no_return |= step.is_point_of_no_return();
                    done.push(step);
                    if let Some(i) = incident {
                        let _ = self.store.update_figures(i, &figures);
                    }
                }
                Answer::Failed(d) | Answer::Unknown(d) | Answer::Unreached(d) => {
                    let problem = format!("{} {}: {d}", step.name(), step.node());
                    // Never roll back a promotion that may have happened: keep the plan in
                    // flight so the next loop carries it forward.
                    let keep = past_no_return || matches!(step, Step::Promote { .. });
                    if keep {
                        warn!(%problem, "plan stalled after its point of no return; it stays in flight");
                    } else {
                        self.compensate(plan, &done, state, incident, touched).await;
                    }
                    return self.finish(
                        plan,
                        state,
                        incident,
                        figures,
                        outcome,
                        Some(problem),
                        keep,
                    );
                }
            }
        }
        *state = after_plan(state, plan, now());
        self.finish(plan, state, incident, figures, Outcome::Ok, None, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        plan: &Plan,
        state: &mut ControllerState,
        incident: Option<i64>,
        figures: Figures,
        outcome: Outcome,
        problem: Option<String>,
        keep_in_flight: bool,
    ) -> Execution {
        if !keep_in_flight && is_in_flight(state, plan) {
            state.in_flight = None;
            state.in_flight_incident = None;
        }
        self.persist(state);
        if let Some(i) = incident {
            let (state, title, text) = match (&problem, keep_in_flight) {
                (None, _) => (
                    StatusState::Monitoring,
                    "recovered; monitoring",
                    match (&plan.target, figures.first_write_ms) {
                        (Some(t), Some(ms)) => format!(
                            "{t} takes writes through the endpoint; recovery took {} from the fault",
                            lifeboat_core::time::format_ms(ms)
                        ),
                        (Some(t), None) => format!("the plan is done; {t} is the primary"),
                        _ => "the plan is done".into(),
                    },
                ),
                (Some(p), true) => (
                    StatusState::Investigating,
                    "plan stalled",
                    format!("the plan stalled after its point of no return ({p}); it stays in flight and Lifeboat carries it forward"),
                ),
                (Some(p), false) => (
                    StatusState::Investigating,
                    "plan failed",
                    format!("the plan failed and was rolled back ({p}); Lifeboat decides again on the next observations"),
                ),
            };
            self.state_notice(i, plan, state, title, &text);
            let status = if keep_in_flight {
                Outcome::Running
            } else {
                outcome
            };
            let r = if keep_in_flight {
                self.store.update_figures(i, &figures)
            } else {
                self.store.close_incident(i, now(), status, &figures)
            };
            if let Err(e) = r {
                warn!(error = %e, "could not record the incident's end");
            }
        }
        Execution {
            outcome,
            incident,
            figures,
            problem,
            touched: Vec::new(),
        }
    }

    /// The incident is opened: people hear it, and it starts as investigating.
    fn opened(&self, id: i64, plan: &Plan, figures: &Figures, at: Millis) {
        let target = plan.target.as_deref().unwrap_or("?");
        let old = plan.old_primary.as_deref().unwrap_or("?");
        let title = match plan.kind {
            PlanKind::Failover => format!("primary {old} lost: failing over to {target}"),
            PlanKind::ManualFailover => format!("manual failover from {old} to {target}"),
            PlanKind::Switchover => format!("switchover from {old} to {target}"),
            PlanKind::FenceReturned => {
                format!("{target} takes writes and is not the primary: fencing it")
            }
            k => format!("{} of {target}", k.as_str()),
        };
        let mut n = Notice::new(
            NoticeKind::IncidentOpened,
            self.store.service_name(),
            incident_severity(plan.kind.as_str()),
            incident_key(id),
        )
        .at(at)
        .title(format!("incident {id}: {title}"))
        .text(plan.to_string().trim_end().to_owned())
        .incident(id, Some(StatusState::Investigating))
        .detail("plan", plan.kind.as_str())
        .detail("epoch", plan.epoch);
        if let Some(d) = figures.detect_ms {
            n = n.detail("detect_ms", d);
        }
        if let Some(b) = figures.lag_bytes_at_fault {
            n = n.detail("lag_bytes_at_fault", b);
        }
        let r = self
            .store
            .incident_update(id, at, StatusState::Investigating, &title, "lifeboat")
            .and_then(|_| self.store.notice(&n, None));
        if let Err(e) = r {
            warn!(error = %e, "could not record the incident's notice");
        }
    }

    fn step_notice(
        &self,
        id: i64,
        plan: &Plan,
        step: &Step,
        outcome: Outcome,
        detail: &str,
        at: Millis,
    ) {
        let n = Notice::new(
            NoticeKind::IncidentStep,
            self.store.service_name(),
            incident_severity(plan.kind.as_str()),
            incident_key(id),
        )
        .at(at)
        .title(format!(
            "incident {id}: {} {} {}",
            step.name(),
            step.node(),
            outcome.as_str()
        ))
        .text(detail)
        .incident(id, None)
        .detail("step", step.name())
        .detail("node", step.node())
        .detail("outcome", outcome.as_str());
        if let Err(e) = self.store.notice(&n, None) {
            warn!(error = %e, "could not record a step's notice");
        }
    }

    fn state_notice(&self, id: i64, plan: &Plan, state: StatusState, title: &str, text: &str) {
        let r = crate::notify::set_state(
            &self.store,
            id,
            plan.kind.as_str(),
            state,
            title,
            text,
            "lifeboat",
            now(),
        );
        if let Err(e) = r {
            warn!(error = %e, "could not record the incident's state");
        }
    }

    async fn compensate(
        &self,
        plan: &Plan,
        done: &[&Step],
        state: &mut ControllerState,
        incident: Option<i64>,
        touched: &mut Vec<Step>,
    ) {
        for step in done.iter().rev() {
            let Some(undo) = step.compensation(plan.epoch) else {
                continue;
            };
            // Routing back is only right if the node we blocked is still the primary.
            if let Step::RouteEndpoint { node, .. } = &undo {
                if state.primary.as_deref() != Some(node.as_str()) {
                    continue;
                }
            }
            let at = now();
            let row = incident.and_then(|i| {
                self.store
                    .step_started(i, at, undo.name(), undo.node(), "compensation")
                    .ok()
            });
            let r = self.step(plan, &undo, state, incident).await;
            if !matches!(r, Answer::Unreached(_)) {
                touched.push(undo.clone());
            }
            let (outcome, detail) = match r {
                Answer::Ok(d) => (Outcome::Compensated, d),
                Answer::Failed(d) | Answer::Unreached(d) => (Outcome::Failed, d),
                Answer::Unknown(d) => (Outcome::Unknown, d),
            };
            info!(
                step = undo.name(),
                node = undo.node(),
                outcome = outcome.as_str(),
                "compensation: {detail}"
            );
            if let Some(row) = row {
                let _ = self.store.step_finished(row, now(), outcome, &detail);
            }
        }
    }

    fn node(&self, name: &str) -> Result<&Node, Answer> {
        self.nodes
            .get(name)
            .ok_or_else(|| Answer::Failed(format!("node {name} is not in the config")))
    }

    async fn step(
        &self,
        plan: &Plan,
        step: &Step,
        state: &mut ControllerState,
        incident: Option<i64>,
    ) -> Answer {
        if step.may_change_server() {
            self.stop_background_fence(step.node());
        }
        self.transition(state, before_step(state, step));
        let r = match self.step_inner(plan, step, incident).await {
            Ok(r) | Err(r) => r,
        };
        let outcome = match &r {
            Answer::Ok(_) => StepOutcome::Ok,
            Answer::Failed(_) | Answer::Unreached(_) => StepOutcome::Failed,
            Answer::Unknown(_) => StepOutcome::Unknown,
        };
        self.transition(state, after_step(state, step, outcome));
        r
    }

    /// Replaces the durable state with `next`, persisting it when it changed.
    fn transition(&self, state: &mut ControllerState, next: ControllerState) {
        if next != *state {
            *state = next;
            self.persist(state);
        }
    }

    async fn step_inner(
        &self,
        plan: &Plan,
        step: &Step,
        incident: Option<i64>,
    ) -> Result<Answer, Answer> {
        let t = self.t;
        let ds = &*self.datastore;
        Ok(match step {
            Step::BlockEndpoint { node } => self.traffic.block(node).await,
            Step::Stonith { node } => {
                let n = self.node(node)?;
                let Some(cmd) = &n.config.fence_command else {
                    return Ok(Answer::Ok("no fence command".into()));
                };
                run_command(cmd, t.fence).await
            }
            Step::FenceNode {
                node,
                required,
                mode,
            } => {
                self.node(node)?;
                if *required {
                    ds.fence(node, *mode, t).await
                } else {
                    self.fence_in_background(node, *mode, incident);
                    Answer::Ok(format!(
                        "{node} is lost and the endpoint no longer routes to it: fencing it in the background for up to {:?}, without delaying the promotion",
                        t.fence_retry_for
                    ))
                }
            }
            Step::WaitCatchUp { node, from } => ds.catch_up(node, from, t).await,
            Step::Promote { node } => ds.promote(node, t).await,
            Step::SetSyncStandbys { node, names } => ds.set_sync(node, names, t).await,
            Step::RouteEndpoint { node, epoch } => {
                let n = self.node(node)?;
                self.traffic.route(node, n.addr, *epoch).await
            }
            Step::CheckWrite { node } => ds.write_check(node, plan.epoch, t).await,
            Step::MarkNeedsRejoin { node } => {
                Answer::Ok(format!("{node} must rejoin before it serves again"))
            }
            Step::Rejoin { node, source } => ds.rejoin(node, source, t).await,
            Step::Unfence { node } => ds.unfence(node, t).await,
        })
    }
}

/// The retries of a background fence, until one attempt succeeds, `fence_retry_for` has
/// passed, or `cancel`.
async fn background_fence(
    ds: &dyn Datastore,
    node: &str,
    mode: FenceMode,
    t: Timeouts,
    cancel: &CancellationToken,
) -> (Outcome, String) {
    let deadline = tokio::time::Instant::now() + t.fence_retry_for;
    let mut attempts = 0u32;
    let mut last = String::new();
    loop {
        attempts += 1;
        let r = tokio::select! {
            r = ds.fence(node, mode, t) => r,
            () = cancel.cancelled() => break,
        };
        match r {
            Answer::Ok(d) => return (Outcome::Ok, format!("{d} at attempt {attempts}")),
            Answer::Failed(d) | Answer::Unknown(d) | Answer::Unreached(d) => last = d,
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                Outcome::Failed,
                format!(
                    "not reached in {attempts} attempt(s) over {:?} (last: {last}); it stays fenced at the endpoint and is fenced on sight if it returns writable",
                    t.fence_retry_for
                ),
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = cancel.cancelled() => break,
        }
    }
    (
        Outcome::Unknown,
        format!(
            "stopped after {attempts} attempt(s): a later step on {node} or shutdown took over{}",
            if last.is_empty() {
                String::new()
            } else {
                format!(" (last: {last})")
            }
        ),
    )
}

/// `plan` is the one in flight. A resumed plan carries an extra reason, so the comparison
/// is on what the plan does, not on why.
fn is_in_flight(state: &ControllerState, plan: &Plan) -> bool {
    state
        .in_flight
        .as_ref()
        .is_some_and(|p| p.kind == plan.kind && p.epoch == plan.epoch && p.steps == plan.steps)
}

/// Runs a fence (STONITH) command, argv without a shell, bounded in time.
async fn run_command(argv: &[String], timeout: Duration) -> Answer {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => Answer::Unknown(format!("{} did not finish within {timeout:?}", argv[0])),
        Ok(Err(e)) => Answer::Failed(format!("cannot run {}: {e}", argv[0])),
        Ok(Ok(out)) if out.status.success() => Answer::Ok(format!("{} succeeded", argv[0])),
        Ok(Ok(out)) => Answer::Failed(format!(
            "{} exited with {}: {}",
            argv[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}
