//! Notices: the one stream of things people must hear about (incidents and their states,
//! sustained risks, stale backups, failed restore tests and drills), and the pure rules
//! around delivering them: a risk is raised only once it has lasted, retries back off with
//! jitter, a storm is rate-limited.
//!
//! A notice names its *subject* by a `key` (`incident/12`, `risk/db/rpo-exposure`): every
//! notice about one subject goes to a receiver in order, and the key is the dedup key a pager
//! groups them by. Its `phase` says what it does to the subject: open it, tell more, or
//! resolve it.

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How urgent: routing sends a notifier every notice at or above its `min-severity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a notice does to its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Open,
    Update,
    Resolve,
}

/// An incident's public state, as on a status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusState {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

impl StatusState {
    pub const ALL: [StatusState; 4] = [
        StatusState::Investigating,
        StatusState::Identified,
        StatusState::Monitoring,
        StatusState::Resolved,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Investigating => "investigating",
            StatusState::Identified => "identified",
            StatusState::Monitoring => "monitoring",
            StatusState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<StatusState> {
        StatusState::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for StatusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened. The list of everything Lifeboat tells people about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// An incident was opened (a failover or switchover began).
    IncidentOpened,
    /// A step of the incident's plan ended (ok or not).
    IncidentStep,
    /// The incident's status state changed, by Lifeboat or by an operator.
    IncidentState,
    /// The incident was resolved.
    IncidentResolved,
    /// A risk without an incident has lasted (RPO exposure above target, a standby that could
    /// not be promoted, an automatic failover refused).
    RiskRaised,
    /// That risk is gone.
    RiskCleared,
    /// The newest good backup of a tier is older than the tier's RPO.
    BackupStale,
    /// A stale tier has a new backup.
    BackupFresh,
    RestoreTestFailed,
    /// A restore test passed after one failed.
    RestoreTestPassed,
    DrillFailed,
    /// A drill passed after one failed.
    DrillPassed,
    /// `lifeboat notify test NAME`.
    Test,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::IncidentOpened => "incident-opened",
            NoticeKind::IncidentStep => "incident-step",
            NoticeKind::IncidentState => "incident-state",
            NoticeKind::IncidentResolved => "incident-resolved",
            NoticeKind::RiskRaised => "risk-raised",
            NoticeKind::RiskCleared => "risk-cleared",
            NoticeKind::BackupStale => "backup-stale",
            NoticeKind::BackupFresh => "backup-fresh",
            NoticeKind::RestoreTestFailed => "restore-test-failed",
            NoticeKind::RestoreTestPassed => "restore-test-passed",
            NoticeKind::DrillFailed => "drill-failed",
            NoticeKind::DrillPassed => "drill-passed",
            NoticeKind::Test => "test",
        }
    }
    pub fn phase(self) -> Phase {
        use NoticeKind::*;
        match self {
            IncidentOpened | RiskRaised | BackupStale | RestoreTestFailed | DrillFailed | Test => {
                Phase::Open
            }
            IncidentStep | IncidentState => Phase::Update,
            IncidentResolved | RiskCleared | BackupFresh | RestoreTestPassed | DrillPassed => {
                Phase::Resolve
            }
        }
    }
}

/// One thing to tell people. `title` is one line; `text` says what Lifeboat saw and did, in
/// sentences. Neither ever holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub service: String,
    pub severity: Severity,
    /// The subject: notices with one key are delivered in order; a pager's dedup key.
    pub key: String,
    pub at: Millis,
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
    /// The incident's state after this notice, when it concerns an incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StatusState>,
    /// Figures and names a receiver may want (RTO in ms, the new primary, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Notice {
    pub fn new(kind: NoticeKind, service: &str, severity: Severity, key: String) -> Notice {
        Notice {
            kind,
            service: service.to_owned(),
            severity,
            key,
            at: Millis(0),
            title: String::new(),
            text: String::new(),
            incident: None,
            state: None,
            details: BTreeMap::new(),
        }
    }
    pub fn phase(&self) -> Phase {
        self.kind.phase()
    }
    pub fn at(mut self, at: Millis) -> Notice {
        self.at = at;
        self
    }
    pub fn title(mut self, t: impl Into<String>) -> Notice {
        self.title = t.into();
        self
    }
    pub fn text(mut self, t: impl Into<String>) -> Notice {
        self.text = t.into();
        self
    }
    pub fn incident(mut self, id: i64, state: Option<StatusState>) -> Notice {
        self.incident = Some(id);
        self.state = state;
        self
    }
    pub fn detail(mut self, k: &str, v: impl fmt::Display) -> Notice {
        self.details.insert(k.to_owned(), v.to_string());
        self
    }
}

/// The key of an incident's notices.
pub fn incident_key(id: i64) -> String {
    format!("incident/{id}")
}

/// How long to wait before attempt `attempt + 1` (the first retry follows attempt 1):
/// exponential from `base`, capped at `cap`, with "equal jitter" — half the delay fixed, half
/// scaled by `jitter` in `[0, 1)` that the caller draws — so receivers coming back are not hit
/// by every sender at once, and no wait is shorter than half its step.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let d = exp.min(cap_ms);
    let half = d / 2;
    half + ((d - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
}

/// A token bucket: `burst` sends at once, then one every `every_ms`. Time is passed in.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    every_ms: u64,
    burst: u32,
    tokens: f64,
    at: Millis,
}

impl TokenBucket {
    pub fn new(per_minute: u32, burst: u32, now: Millis) -> TokenBucket {
        TokenBucket {
            every_ms: 60_000 / u64::from(per_minute.max(1)),
            burst: burst.max(1),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }
    fn refill(&mut self, now: Millis) {
        let gained = now.since(self.at) as f64 / self.every_ms as f64;
        self.tokens = (self.tokens + gained).min(f64::from(self.burst));
        self.at = self.at.max(now);
    }
    /// Takes a token if there is one; else how long until there is.
    pub fn take(&mut self, now: Millis) -> Result<(), u64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) * self.every_ms as f64).ceil() as u64)
        }
    }
    /// Whether a send now would have to wait.
    pub fn empty(&mut self, now: Millis) -> bool {
        self.refill(now);
        self.tokens < 1.0
    }
}

/// A condition seen now, which becomes a risk once it has lasted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Stable name within the service: `rpo-exposure`, `standby-ineligible/b`, …
    pub name: String,
    pub severity: Severity,
    /// One sentence: what is wrong and why it matters.
    pub sentence: String,
}

/// What [`Risks::observe`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RiskChange {
    /// The condition has lasted `after`: raise it (with the sentence seen last).
    Raised(Condition, Millis),
    /// A raised condition is gone.
    Cleared(Condition, Millis),
}

/// Turns conditions observed tick by tick into raised and cleared risks: raised only when a
/// condition has been seen continuously for `after_ms`, cleared when it is no longer seen.
/// A condition that comes and goes faster never pages anyone.
#[derive(Clone, Debug, Default)]
pub struct Risks {
    /// name -> (first seen, raised?, last seen condition)
    seen: BTreeMap<String, (Millis, bool, Condition)>,
}

impl Risks {
    pub fn observe(
        &mut self,
        now: Millis,
        after_ms: u64,
        conds: Vec<Condition>,
    ) -> Vec<RiskChange> {
        let mut changes = Vec::new();
        let names: Vec<String> = conds.iter().map(|c| c.name.clone()).collect();
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect();
        for name in gone {
            if let Some((_, true, c)) = self.seen.remove(&name) {
                changes.push(RiskChange::Cleared(c, now));
            }
        }
        for c in conds {
            let e = self
                .seen
                .entry(c.name.clone())
                .or_insert((now, false, c.clone()));
            e.2 = c;
            if !e.1 && now.since(e.0) >= after_ms {
                e.1 = true;
                changes.push(RiskChange::Raised(e.2.clone(), e.0));
            }
        }
        changes
    }

    /// A risk raised before a restart (its last notice was a raise): it is cleared, not
    /// raised again, when the next observations no longer show it.
    pub fn restore(&mut self, c: Condition, since: Millis) {
        self.seen.insert(c.name.clone(), (since, true, c));
    }

    /// The risks raised now.
    pub fn raised(&self) -> impl Iterator<Item = &Condition> {
        self.seen.values().filter(|(_, r, _)| *r).map(|(_, _, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_never_drops_below_half() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, 1.0), 1000);
        assert_eq!(backoff_ms(3, 1000, 60_000, 0.0), 2000);
        assert_eq!(backoff_ms(30, 1000, 60_000, 0.99), 59_700);
        assert_eq!(backoff_ms(200, 1000, 60_000, 0.0), 30_000);
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_one_per_period() {
        let mut b = TokenBucket::new(60, 2, Millis(0));
        assert_eq!(b.take(Millis(0)), Ok(()));
        assert_eq!(b.take(Millis(0)), Ok(()));
        assert_eq!(b.take(Millis(0)), Err(1000));
        assert_eq!(b.take(Millis(400)), Err(600));
        assert_eq!(b.take(Millis(1000)), Ok(()));
        assert!(b.empty(Millis(1000)));
        assert!(!b.empty(Millis(5000)));
    }
}
