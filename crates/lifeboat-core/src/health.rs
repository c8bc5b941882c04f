//! Probe hysteresis: turns a stream of single probe results into a node's health.
//!
//! A node is declared down only after `failure_threshold` consecutive failed probes, and up
//! again after `success_threshold` consecutive good ones. One slow or failed probe below the
//! threshold never changes the state beyond "suspect".

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub failure: u32,
    pub success: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Health {
    /// Not enough probes yet to say.
    Unknown {
        since: Millis,
        reason: String,
    },
    Up {
        since: Millis,
    },
    /// Some probes failed, fewer than the threshold.
    Suspect {
        since: Millis,
        failures: u32,
        reason: String,
    },
    /// `failures` consecutive probes failed; `since` is the first failure of the streak.
    Down {
        since: Millis,
        reason: String,
    },
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up { .. })
    }
    pub fn is_down(&self) -> bool {
        matches!(self, Health::Down { .. })
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, Health::Unknown { .. })
    }
    pub fn label(&self) -> &'static str {
        match self {
            Health::Unknown { .. } => "unknown",
            Health::Up { .. } => "up",
            Health::Suspect { .. } => "suspect",
            Health::Down { .. } => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Unknown { reason, .. } => write!(f, "unknown ({reason})"),
            Health::Up { since } => write!(f, "up since {since}"),
            Health::Suspect {
                failures, reason, ..
            } => write!(f, "suspect: {failures} failed probe(s), last: {reason}"),
            Health::Down { since, reason } => write!(f, "down since {since}: {reason}"),
        }
    }
}

/// One finished probe, as the tracker keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Finished {
    started: Millis,
    /// `None`: the probe succeeded; otherwise why it failed or that it ran past its timeout.
    failure: Option<String>,
}

/// Consecutive-result counter for one node.
///
/// Probes overlap: a new one starts on every interval whether or not the previous ones have
/// answered, so results can arrive out of order. "Consecutive" is by the time a probe
/// *started*: the tracker keeps the newest finished probes ordered by start, and the node's
/// health follows the streak at the newest end. A late answer from an older probe lands in
/// the middle and cannot break a newer streak: a stall shorter than the timeout makes every
/// probe in it late, never failed, and a slow success from before a fault cannot mask the
/// failures of the probes that started after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub health: Health,
    /// The newest finished probes, oldest first; at most as many as the larger threshold.
    recent: std::collections::VecDeque<Finished>,
    pub last_ok: Option<Millis>,
}

impl Tracker {
    pub fn new(now: Millis) -> Self {
        Tracker {
            health: Health::Unknown {
                since: now,
                reason: "not probed yet".into(),
            },
            recent: Default::default(),
            last_ok: None,
        }
    }

    /// Feeds the result of a probe that started at `started` and whose answer (or timeout)
    /// was known at `at`. A probe that ran past its timeout is a failure. Returns true when
    /// the health label changed.
    pub fn observe_probe(
        &mut self,
        result: Result<(), &str>,
        started: Millis,
        at: Millis,
        t: Thresholds,
    ) -> bool {
        let before = self.health.label();
        let keep = t.failure.max(t.success).max(1) as usize;
        if self.recent.len() >= keep && self.recent.front().is_some_and(|f| started < f.started) {
            // Older than every probe kept: it cannot change the newest streak.
            return false;
        }
        if result.is_ok() {
            self.last_ok = Some(self.last_ok.map_or(at, |l| l.max(at)));
        }
        let pos = self.recent.partition_point(|f| f.started <= started);
        self.recent.insert(
            pos,
            Finished {
                started,
                failure: result.err().map(str::to_owned),
            },
        );
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
        self.health = self.next_health(t);
        before != self.health.label()
    }

    /// The health the newest streak of finished probes gives, from the current one.
    fn next_health(&self, t: Thresholds) -> Health {
        let Some(newest) = self.recent.back() else {
            return self.health.clone();
        };
        let failing = newest.failure.is_some();
        let streak: Vec<&Finished> = self
            .recent
            .iter()
            .rev()
            .take_while(|f| f.failure.is_some() == failing)
            .collect();
        let n = streak.len() as u32;
        if !failing {
            return match &self.health {
                Health::Up { .. } => self.health.clone(),
                Health::Down { .. } if n < t.success => self.health.clone(),
                _ => Health::Up {
                    since: newest.started,
                },
            };
        }
        let first = streak.last().map_or(newest.started, |f| f.started);
        let reason = newest.failure.clone().unwrap_or_default();
        match &self.health {
            Health::Down { since, .. } => Health::Down {
                since: *since,
                reason,
            },
            _ if n >= t.failure => Health::Down {
                since: first,
                reason,
            },
            Health::Unknown { since, .. } => Health::Unknown {
                since: *since,
                reason: format!("{n} failed probe(s), last: {reason}"),
            },
            _ => Health::Suspect {
                since: first,
                failures: n,
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        failure: 3,
        success: 2,
    };

    fn run(tr: &mut Tracker, seq: &str) -> Vec<&'static str> {
        seq.chars()
            .enumerate()
            .map(|(i, c)| {
                let r = if c == '+' {
                    Ok(())
                } else {
                    Err("connection refused")
                };
                let at = Millis(i as u64 * 100);
                tr.observe_probe(r, at, at, T);
                tr.health.label()
            })
            .collect()
    }

    #[test]
    fn failures_below_the_threshold_only_make_a_node_suspect() {
        let mut tr = Tracker::new(Millis(0));
        assert_eq!(
            run(&mut tr, "+--+--+"),
            ["up", "suspect", "suspect", "up", "suspect", "suspect", "up"]
        );
    }

    #[test]
    fn down_after_threshold_and_up_after_success_threshold() {
        let mut tr = Tracker::new(Millis(0));
        assert_eq!(
            run(&mut tr, "+---+-++"),
            ["up", "suspect", "suspect", "down", "down", "down", "down", "up"]
        );
        assert_eq!(tr.health, Health::Up { since: Millis(700) });
    }

    #[test]
    fn down_since_is_the_first_failure_of_the_streak() {
        let mut tr = Tracker::new(Millis(0));
        run(&mut tr, "++----");
        assert!(matches!(
            tr.health,
            Health::Down {
                since: Millis(200),
                ..
            }
        ));
    }

    #[test]
    fn an_unreachable_node_at_start_is_unknown_until_the_threshold_confirms_it() {
        let mut tr = Tracker::new(Millis(0));
        assert_eq!(run(&mut tr, "---"), ["unknown", "unknown", "down"]);
    }
}
