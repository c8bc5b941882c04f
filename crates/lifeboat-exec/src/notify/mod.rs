//! Telling people: the dispatcher that delivers the outbox's notices to each `[notify.NAME]`
//! channel, and the helpers that record an incident's status state with its notice.
//!
//! Whoever has something to say stores a [`Notice`] (`Store::notice`): the executor (an
//! incident opened, a step ended, its state changed), the controller (risks that lasted, an
//! incident resolved once its service has been healthy), the drills, the backup scheduler.
//! The store is the stream. One worker per channel reads it in order from the channel's
//! cursor, skips what is not routed to it (severity, service, what the kind of channel
//! wants), sends with a budget, and settles each notice (sent, refused by a 4xx, or expired
//! after `give-up-after`) in the same transaction that moves its cursor. A receiver that is
//! down is retried with exponential backoff and jitter and holds only its own queue; a storm
//! is rate-limited per channel and, for chat and email, sent as digests.

pub mod postmortem;
pub mod status_page;

use crate::executor::now;
use crate::providers::{notifier, Answer, Notifier};
use lifeboat_backup::scheduler::BackupEvent;
use lifeboat_config::{Config, Route, ServiceKind};
use lifeboat_core::notice::{
    backoff_ms, incident_key, Notice, NoticeKind, Severity, StatusState, TokenBucket,
};
use lifeboat_core::Millis;
use lifeboat_store::{Store, Stored};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// First retry after about a second, doubling to at most five minutes.
const RETRY_BASE_MS: u64 = 1000;
const RETRY_CAP_MS: u64 = 300_000;
/// Idle channels look at the outbox at least this often (a notice stored by another process,
/// a missed wake-up).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// `🔴 [orders] primary a1 lost: failing over to b1`
pub fn headline(n: &Notice) -> String {
    let mark = match (n.kind.phase(), n.severity) {
        (lifeboat_core::notice::Phase::Resolve, _) => "✅",
        (_, _) if n.state == Some(StatusState::Resolved) => "✅",
        (_, Severity::Critical) => "🔴",
        (_, Severity::Warning) => "🟠",
        (_, Severity::Info) => "🔵",
    };
    format!("{mark} [{}] {}", n.service, n.title)
}

/// What chat and email hear: everything but steps that went well (the incident's state
/// changes say those).
pub fn for_people(n: &Notice) -> bool {
    n.kind != NoticeKind::IncidentStep || n.details.get("outcome").is_some_and(|o| o != "ok")
}

pub fn rfc3339(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at.0 as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How urgent an incident of this plan kind is.
pub fn incident_severity(kind: &str) -> Severity {
    match kind {
        "failover" => Severity::Critical,
        "switchover" => Severity::Info,
        _ => Severity::Warning,
    }
}

/// Records an incident's new status state and tells people, in that order.
#[allow(clippy::too_many_arguments)]
pub fn set_state(
    store: &Store,
    incident: i64,
    kind: &str,
    state: StatusState,
    title: &str,
    message: &str,
    actor: &str,
    at: Millis,
) -> Result<(), lifeboat_store::StoreError> {
    store.incident_update(incident, at, state, message, actor)?;
    let k = if state == StatusState::Resolved {
        NoticeKind::IncidentResolved
    } else {
        NoticeKind::IncidentState
    };
    let n = Notice::new(
        k,
        store.service_name(),
        incident_severity(kind),
        incident_key(incident),
    )
    .at(at)
    .title(format!("incident {incident} {state}: {title}"))
    .text(message)
    .incident(incident, Some(state))
    .detail("actor", actor);
    store.notice(&n, None)?;
    Ok(())
}

/// The service a backup source belongs to: the PostgreSQL service it follows, or the one
/// holding its node.
fn service_of_source(cfg: &Config, source: &str) -> String {
    let src = cfg.backup.as_ref().and_then(|b| b.sources.get(source));
    let node = src.and_then(|s| s.postgres.as_deref());
    cfg.services
        .iter()
        .find(|(_, sc)| match node {
            Some(n) => sc.nodes().any(|(_, _, x)| x.name == n),
            None => sc.kind == ServiceKind::Postgres,
        })
        .map_or_else(|| source.to_owned(), |(name, _)| name.clone())
}

/// A backup scheduler's event as a notice.
pub fn backup_notice(cfg: &Config, e: BackupEvent) -> Notice {
    let at = now();
    let notice = |kind, source: &str, key: String| {
        Notice::new(
            kind,
            &service_of_source(cfg, source),
            Severity::Warning,
            key,
        )
        .at(at)
        .detail("source", source)
    };
    match e {
        BackupEvent::Stale {
            source,
            tier,
            age_s,
            rpo_s,
            none_yet,
        } => notice(NoticeKind::BackupStale, &source, format!("backup/{source}/{tier}"))
            .title(if none_yet {
                format!("backup {tier} of {source}: no snapshot in the {age_s:.0} s since Lifeboat started, past its RPO of {rpo_s:.0} s")
            } else {
                format!("backup {tier} of {source} is {age_s:.0} s old, older than its RPO of {rpo_s:.0} s")
            })
            .text("Restoring now would lose more than the tier allows. `lifeboat backup list` shows the snapshots; the daemon's log says why the last run failed.")
            .detail("tier", &tier),
        BackupEvent::Fresh { source, tier } => {
            notice(NoticeKind::BackupFresh, &source, format!("backup/{source}/{tier}"))
                .title(format!("backup {tier} of {source} is within its RPO again"))
                .detail("tier", &tier)
        }
        BackupEvent::RestoreTestFailed { source, error } => notice(
            NoticeKind::RestoreTestFailed,
            &source,
            format!("restore-test/{source}"),
        )
        .title(format!("the restore test of {source} failed"))
        .text(error),
        BackupEvent::RestoreTestPassed { source, seconds } => notice(
            NoticeKind::RestoreTestPassed,
            &source,
            format!("restore-test/{source}"),
        )
        .title(format!("the restore test of {source} passed again ({seconds:.1} s)")),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Labels {
    notifier: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ChannelLabel {
    notifier: String,
}

#[derive(Default)]
struct Metrics {
    deliveries: Family<Labels, Counter>,
    pending: Family<ChannelLabel, Gauge>,
}

struct Channel {
    name: String,
    kind: &'static str,
    route: Route,
    provider: Arc<dyn Notifier>,
}

impl Channel {
    fn routed(&self, s: &Stored) -> bool {
        if s.only_to.is_some() {
            return s.only_to.as_deref() == Some(self.name.as_str());
        }
        let n = &s.notice;
        n.severity >= self.route.min_severity
            && (self.route.services.is_empty() || self.route.services.contains(&n.service))
            && self.provider.wants(n)
    }
}

/// Where a channel stands, for `lifeboat notify list` and `/v1/notify`.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelStatus {
    pub name: String,
    pub kind: &'static str,
    pub min_severity: Severity,
    pub services: Vec<String>,
    /// Notices not settled yet (some may not be for this channel).
    pub behind: u64,
    /// Failed attempts at the notice at the head of its queue.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_ms: Option<u64>,
    pub recent: Vec<lifeboat_store::Delivery>,
}

struct Inner {
    store: Store,
    channels: Vec<Arc<Channel>>,
    wake: watch::Sender<u64>,
    metrics: Metrics,
}

/// The configured channels and their workers.
#[derive(Clone)]
pub struct Notifiers(Arc<Inner>);

enum Next {
    /// More may be ready now.
    Now,
    /// Nothing to send: wait for a new notice.
    Idle,
    /// Wait this long (a retry's backoff, the rate limit).
    Sleep(Duration),
}

impl Notifiers {
    /// Builds every channel of `[notify]`, reading its secrets, and gives each its cursor (a
    /// channel seen for the first time starts after the newest notice): a channel that cannot
    /// be built stops the daemon before it starts, with the reason.
    pub fn new(cfg: &Config, store: &Store, registry: &mut Registry) -> Result<Notifiers, String> {
        let mut channels = Vec::new();
        for (name, c) in &cfg.notify {
            store
                .start_cursor(name)
                .map_err(|e| format!("notify.{name}: {e}"))?;
            channels.push(Arc::new(Channel {
                name: name.clone(),
                kind: c.kind(),
                route: c.route(),
                provider: notifier(name, c)?,
            }));
        }
        let (wake, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            store: store.service(""),
            channels,
            wake,
            metrics: Metrics::default(),
        });
        let r = registry.sub_registry_with_prefix("lifeboat");
        r.register(
            "notify_deliveries",
            "Notices settled or retried per notifier: sent, refused (4xx, not retried), expired (given up), retried",
            inner.metrics.deliveries.clone(),
        );
        r.register(
            "notify_pending",
            "Notices a notifier has not settled yet",
            inner.metrics.pending.clone(),
        );
        let w = Arc::downgrade(&inner);
        store.on_notice(move || {
            if let Some(i) = w.upgrade() {
                i.wake.send_modify(|v| *v += 1);
            }
        });
        Ok(Notifiers(inner))
    }

    pub fn names(&self) -> Vec<String> {
        self.0.channels.iter().map(|c| c.name.clone()).collect()
    }

    /// One worker per channel on `tasks`, until `cancel`.
    pub fn run(&self, tasks: &TaskTracker, cancel: &CancellationToken) {
        for c in &self.0.channels {
            let (inner, c, cancel) = (self.0.clone(), c.clone(), cancel.clone());
            tasks.spawn(async move { worker(inner, c, cancel).await });
        }
    }

    /// Stores a test message for `name` alone; its id, to follow its delivery.
    pub fn test(&self, name: &str) -> Result<i64, String> {
        if !self.0.channels.iter().any(|c| c.name == name) {
            return Err(format!(
                "no notifier {name:?}; configured: {}",
                if self.0.channels.is_empty() {
                    "none (add a [notify.NAME] section)".to_owned()
                } else {
                    self.names().join(", ")
                }
            ));
        }
        let n = Notice::new(NoticeKind::Test, "lifeboat", Severity::Info, format!("test/{name}"))
            .at(now())
            .title(format!("test message to {name}"))
            .text(format!(
                "`lifeboat notify test {name}` sent this to check that {name} reaches you. Nothing is wrong."
            ));
        self.0
            .store
            .notice(&n, Some(name))
            .map_err(|e| e.to_string())
    }

    /// How notice `id` ended for `name`, once settled.
    pub fn delivery(&self, name: &str, id: i64) -> Option<lifeboat_store::Delivery> {
        self.0.store.delivery(name, id).ok().flatten()
    }

    pub fn status(&self) -> Vec<ChannelStatus> {
        let s = &self.0.store;
        self.0
            .channels
            .iter()
            .map(|c| {
                let cur = s.cursor(&c.name).unwrap_or_default();
                ChannelStatus {
                    name: c.name.clone(),
                    kind: c.kind,
                    min_severity: c.route.min_severity,
                    services: c.route.services.clone(),
                    behind: s.behind(&c.name, cur.after).unwrap_or(0),
                    attempts: cur.attempts,
                    last_error: cur.last_error,
                    next_attempt_ms: (cur.next_ms > 0).then_some(cur.next_ms),
                    recent: s.deliveries(Some(&c.name), 20).unwrap_or_default(),
                }
            })
            .collect()
    }
}

async fn worker(inner: Arc<Inner>, c: Arc<Channel>, cancel: CancellationToken) {
    let mut rx = inner.wake.subscribe();
    // A burst of ten, then the channel's rate.
    let mut bucket = TokenBucket::new(c.route.max_per_minute, 10, now());
    let mut throttled = false;
    loop {
        rx.borrow_and_update();
        let (next, after) = tokio::select! {
            _ = cancel.cancelled() => return,
            n = step(&inner, &c, &mut bucket, &mut throttled) => n,
        };
        if let Some(Ok(p)) = after.map(|a| inner.store.behind(&c.name, a)) {
            inner
                .metrics
                .pending
                .get_or_create(&ChannelLabel {
                    notifier: c.name.clone(),
                })
                .set(p as i64);
        }
        match next {
            Next::Now => {}
            Next::Idle => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
            Next::Sleep(d) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// One step of a channel's worker: what to do next, and where its cursor is now (for the
/// pending gauge; `None` when the outbox could not be read or written).
async fn step(
    inner: &Inner,
    c: &Channel,
    bucket: &mut TokenBucket,
    throttled: &mut bool,
) -> (Next, Option<i64>) {
    let store = &inner.store;
    let outbox = store
        .cursor(&c.name)
        .and_then(|cur| Ok((store.notices_after(&c.name, cur.after, 200)?, cur)));
    let (batch, cur) = match outbox {
        Ok(x) => x,
        Err(e) => {
            warn!(notifier = %c.name, error = %e, "reading the outbox");
            return (Next::Sleep(IDLE_POLL), None);
        }
    };
    let Some(last) = batch.last() else {
        return (Next::Idle, Some(cur.after));
    };
    // Move past what is not for this channel.
    let head = match batch.iter().position(|s| c.routed(s)) {
        Some(0) => 0,
        found => {
            let to = found.map_or(last.id, |i| batch[i - 1].id);
            if let Err(e) = store.settle(&c.name, to, &[], 0, now(), None) {
                warn!(notifier = %c.name, error = %e, "moving the cursor");
                return (Next::Sleep(IDLE_POLL), None);
            }
            return (Next::Now, Some(to));
        }
    };
    let t = now();
    if cur.next_ms > t.0 {
        let wait = Duration::from_millis(cur.next_ms - t.0);
        return (Next::Sleep(wait), Some(cur.after));
    }
    if let Err(wait) = bucket.take(t) {
        *throttled = true;
        return (Next::Sleep(Duration::from_millis(wait)), Some(cur.after));
    }
    let size = if std::mem::take(throttled) {
        c.provider.batch()
    } else {
        1
    };
    let group: Vec<Stored> = batch[head..]
        .iter()
        .filter(|s| c.routed(s))
        .take(size.max(1))
        .cloned()
        .collect();
    let to = group.last().map_or(cur.after, |s| s.id);
    let budget = c.route.timeout;
    let answer = tokio::time::timeout(
        budget + Duration::from_secs(1),
        c.provider.send(&group, budget),
    )
    .await
    .unwrap_or_else(|_| Answer::Unknown(format!("no answer within {budget:?}")));
    let attempts = cur.attempts + 1;
    let ids = |state: &'static str| group.iter().map(|s| (s.id, state)).collect::<Vec<_>>();
    let count = |outcome: &str, n: usize| {
        inner
            .metrics
            .deliveries
            .get_or_create(&Labels {
                notifier: c.name.clone(),
                outcome: outcome.into(),
            })
            .inc_by(n as u64);
    };
    let settled = match &answer {
        Answer::Ok(_) => {
            count("sent", group.len());
            store
                .settle(&c.name, to, &ids("sent"), attempts, now(), None)
                .map(|_| to)
        }
        Answer::Failed(d) => {
            warn!(notifier = %c.name, notices = group.len(), error = %d, "the receiver refused a notice; it is recorded and not sent again");
            count("refused", group.len());
            store
                .settle(&c.name, to, &ids("refused"), attempts, now(), Some(d))
                .map(|_| to)
        }
        Answer::Unknown(d) | Answer::Unreached(d) => {
            let end = now();
            // A notice older than give-up-after is given up at its next failure (a page
            // about yesterday helps nobody); one that is delivered late is still delivered.
            let born = group.first().map_or(t, |s| s.notice.at);
            if end.since(born) >= c.route.give_up_after.as_millis() as u64 {
                warn!(notifier = %c.name, attempts, error = %d, "giving up a notice after give-up-after");
                count("expired", group.len());
                store
                    .settle(&c.name, to, &ids("expired"), attempts, end, Some(d))
                    .map(|_| to)
            } else {
                let wait = backoff_ms(attempts, RETRY_BASE_MS, RETRY_CAP_MS, rand::random::<f64>());
                if attempts == 1 || attempts.is_power_of_two() {
                    info!(notifier = %c.name, attempts, retry_in_ms = wait, error = %d, "delivery failed; retrying");
                }
                count("retried", 1);
                store
                    .retry_at(&c.name, attempts, end.plus_ms(wait), d)
                    .map(|_| cur.after)
            }
        }
    };
    match settled {
        Ok(after) => (Next::Now, Some(after)),
        Err(e) => {
            warn!(notifier = %c.name, error = %e, "recording a delivery");
            (Next::Sleep(IDLE_POLL), None)
        }
    }
}
