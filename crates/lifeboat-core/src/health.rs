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

/// Consecutive-result counter for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub health: Health,
    failures: u32,
    successes: u32,
    first_failure: Option<Millis>,
    pub last_ok: Option<Millis>,
}

impl Tracker {
    pub fn new(now: Millis) -> Self {
        Tracker {
            health: Health::Unknown {
                since: now,
                reason: "not probed yet".into(),
            },
            failures: 0,
            successes: 0,
            first_failure: None,
            last_ok: None,
        }
    }

    /// Feeds one probe result taken at `at`. Returns true when the health label changed.
    pub fn observe(&mut self, result: Result<(), &str>, at: Millis, t: Thresholds) -> bool {
        let before = self.health.label();
        match result {
            Ok(()) => {
                self.failures = 0;
                self.first_failure = None;
                self.successes = self.successes.saturating_add(1);
                self.last_ok = Some(at);
                let up = match &self.health {
                    Health::Up { .. } => false,
                    Health::Down { .. } => self.successes >= t.success,
                    Health::Unknown { .. } | Health::Suspect { .. } => true,
                };
                if up {
                    self.health = Health::Up { since: at };
                }
            }
            Err(reason) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                let first = *self.first_failure.get_or_insert(at);
                let reason = reason.to_owned();
                self.health = if self.failures >= t.failure {
                    match &self.health {
                        Health::Down { since, .. } => Health::Down {
                            since: *since,
                            reason,
                        },
                        _ => Health::Down {
                            since: first,
                            reason,
                        },
                    }
                } else {
                    match &self.health {
                        Health::Unknown { since, .. } => Health::Unknown {
                            since: *since,
                            reason: format!("{} failed probe(s), last: {reason}", self.failures),
                        },
                        Health::Down { since, .. } => Health::Down {
                            since: *since,
                            reason,
                        },
                        _ => Health::Suspect {
                            since: first,
                            failures: self.failures,
                            reason,
                        },
                    }
                };
            }
        }
        before != self.health.label()
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
                tr.observe(r, Millis(i as u64 * 100), T);
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
