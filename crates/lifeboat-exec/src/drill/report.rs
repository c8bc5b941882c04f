//! A drill's report: kept as JSON in the store, rendered as Markdown for people and as an SVG
//! chart of the canary's writes around the fault.

use crate::text::escape_markup;
use lifeboat_core::drill::{Record, Verdict, Write};
use lifeboat_core::time::format_ms;
use lifeboat_core::Millis;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    /// ok, failed or info.
    pub outcome: String,
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub fault: String,
    pub applied_ms: Option<u64>,
    pub undone_ms: Option<u64>,
    /// registered, applied, undone or undo-failed.
    pub state: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: i64,
    pub drill: String,
    pub service: String,
    pub kind: String,
    /// running, passed, failed, aborted, interrupted or skipped.
    pub status: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// What the verdict is drawn from (scenario, targets, primaries, measurements), filled
    /// in as the drill runs; its fields sit at the top level of the JSON.
    #[serde(flatten)]
    pub record: Record,
    /// The primary when the drill ended (after the rollback and any failback).
    pub primary_at_end: Option<String>,
    pub fault_at_ms: Option<u64>,
    pub faults: Vec<FaultReport>,
    pub timeline: Vec<Entry>,
    pub incidents: Vec<i64>,
    pub verdict: Option<Verdict>,
    /// The canary's writes (for the chart): every failed one, and every `acks_every`-th
    /// acknowledged one, so that a long drill's report stays small.
    pub writes: Vec<Write>,
    #[serde(default = "one")]
    pub acks_every: u64,
}

fn one() -> u64 {
    1
}

/// At most this many writes are kept in a report.
const KEPT_WRITES: usize = 4_000;

impl Report {
    /// Keeps `writes` for the chart: all of them when few, otherwise every failed write and an
    /// even sample of the acknowledged ones.
    pub fn keep_writes(&mut self, writes: Vec<Write>) {
        let acked = writes.iter().filter(|w| w.acked_ms.is_some()).count();
        let room = KEPT_WRITES.saturating_sub(writes.len() - acked).max(1);
        let every = acked.div_ceil(room).max(1);
        let mut i = 0;
        self.writes = writes
            .into_iter()
            .filter(|w| {
                if w.acked_ms.is_none() {
                    return true;
                }
                i += 1;
                (i - 1) % every == 0
            })
            .collect();
        self.acks_every = every as u64;
    }
}

impl Report {
    pub fn note(&mut self, at: Millis, outcome: &str, what: impl Into<String>) {
        self.timeline.push(Entry {
            at_ms: at.0,
            outcome: outcome.into(),
            what: what.into(),
        });
    }

    /// Seconds from the fault (or the start) to `t`, signed.
    fn rel(&self, t: u64) -> String {
        let zero = self.fault_at_ms.unwrap_or(self.started_ms);
        let d = t as i64 - zero as i64;
        format!(
            "{}{:.3} s",
            if d < 0 { "-" } else { "+" },
            d.unsigned_abs() as f64 / 1000.0
        )
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "# Drill {} — run {}: {}\n",
            self.drill,
            self.id,
            self.status.to_uppercase()
        );
        let _ = writeln!(
            m,
            "Scenario **{}** on service **{}** ({}), started {} UTC{}.\n",
            self.record.scenario.as_str(),
            self.service,
            self.kind,
            utc(self.started_ms),
            match self.ended_ms {
                Some(e) => format!(
                    ", ended after {}",
                    format_ms(e.saturating_sub(self.started_ms))
                ),
                None => String::new(),
            }
        );
        if let Some(v) = &self.verdict {
            let _ = writeln!(m, "## Verdict: {}\n", if v.pass { "pass" } else { "fail" });
            let _ = writeln!(m, "| check | result | measured |\n|---|---|---|");
            for c in &v.checks {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} |",
                    c.name,
                    if c.pass { "pass" } else { "**FAIL**" },
                    c.text
                );
            }
            m.push('\n');
        }
        if let Some(x) = &self.record.measured {
            let _ = writeln!(m, "## Measured\n");
            let t = &self.record.targets;
            let _ = writeln!(
                m,
                "- targets: RTO {}, RPO {}{}",
                format_ms(t.rto_ms),
                format_ms(t.rpo_ms),
                if t.zero_loss {
                    ", no acknowledged write lost (synchronous)"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                m,
                "- RTO (fault → first acknowledged write after the outage began): {}",
                x.rto_ms.map(format_ms).unwrap_or_else(|| "none".into())
            );
            let _ = writeln!(
                m,
                "- canary: {} writes, {} acknowledged, {} lost, {} unacknowledged but present",
                x.attempted,
                x.acked,
                x.lost.len(),
                x.unacked_but_present
            );
            let _ = writeln!(
                m,
                "- primary: {} before, {} after the fault, {} at the end\n",
                self.record.primary_before,
                self.record.primary_after.as_deref().unwrap_or("unknown"),
                self.primary_at_end.as_deref().unwrap_or("unknown")
            );
        }
        if !self.record.refusal.is_empty() {
            let _ = writeln!(m, "## What Lifeboat said while the primary was lost\n");
            for r in &self.record.refusal {
                let _ = writeln!(m, "- {r}");
            }
            m.push('\n');
        }
        let _ = writeln!(
            m,
            "## Faults\n\n| fault | state | applied | undone | detail |\n|---|---|---|---|---|"
        );
        for f in &self.faults {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                f.fault,
                f.state,
                f.applied_ms.map(|t| self.rel(t)).unwrap_or_default(),
                f.undone_ms.map(|t| self.rel(t)).unwrap_or_default(),
                f.detail.replace('|', "/")
            );
        }
        let _ = writeln!(
            m,
            "\n## Timeline (from the fault)\n\n| at | | what |\n|---|---|---|"
        );
        for e in &self.timeline {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                self.rel(e.at_ms),
                e.outcome,
                e.what.replace('|', "/")
            );
        }
        if !self.incidents.is_empty() {
            let ids: Vec<String> = self.incidents.iter().map(i64::to_string).collect();
            let _ = writeln!(
                m,
                "\nIncidents opened during the drill: {} (`lifeboat incident show ID`).",
                ids.join(", ")
            );
        }
        if !self.writes.is_empty() {
            let _ = writeln!(
                m,
                "\nChart of the canary's writes: `lifeboat drill report {} --svg FILE`.",
                self.id
            );
        }
        m
    }

    /// Acknowledged writes over time: the cumulative count, failed writes as red marks, the
    /// fault and its undo as lines, the outage shaded.
    pub fn svg(&self) -> String {
        const W: f64 = 800.0;
        const H: f64 = 300.0;
        const L: f64 = 60.0;
        const R: f64 = 20.0;
        const T: f64 = 40.0;
        const B: f64 = 50.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{L}\" y=\"22\" font-size=\"15\">{} — run {} ({}): acknowledged writes</text>\n",
            escape_markup(&self.drill),
            self.id,
            escape_markup(&self.status)
        );
        let Some(first) = self.writes.first() else {
            s.push_str("<text x=\"60\" y=\"150\">no canary writes were recorded</text>\n</svg>\n");
            return s;
        };
        let t0 = first.sent_ms;
        let t1 = self
            .writes
            .iter()
            .map(|w| w.acked_ms.unwrap_or(w.sent_ms))
            .max()
            .unwrap_or(t0)
            .max(t0 + 1);
        let every = self.acks_every.max(1) as usize;
        let acked_total =
            (self.writes.iter().filter(|w| w.acked_ms.is_some()).count() * every).max(1);
        let x = |t: u64| L + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * (W - L - R);
        let y = |n: usize| H - B - n as f64 / acked_total as f64 * (H - T - B);
        // Outage: fault to the first acknowledgement after it.
        if let (Some(f), Some(rto)) = (
            self.fault_at_ms,
            self.record.measured.as_ref().and_then(|m| m.rto_ms),
        ) {
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{T}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fde2e2\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#b00\">outage {}</text>",
                x(f),
                (x(f + rto) - x(f)).max(1.0),
                H - T - B,
                x(f) + 4.0,
                T + 14.0,
                format_ms(rto)
            );
        }
        // Axes and ticks (seconds since the first write).
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{0}\" stroke=\"black\"/>",
            H - B,
            W - R
        );
        let span_s = (t1 - t0) as f64 / 1000.0;
        let step = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]
            .into_iter()
            .find(|st| span_s / st <= 12.0)
            .unwrap_or(600.0);
        let mut tick = 0.0;
        while tick <= span_s + 1e-9 {
            let xt = x(t0 + (tick * 1000.0) as u64);
            let _ = writeln!(
                s,
                "<line x1=\"{xt:.1}\" y1=\"{0}\" x2=\"{xt:.1}\" y2=\"{1}\" stroke=\"black\"/><text x=\"{xt:.1}\" y=\"{2}\" text-anchor=\"middle\">{tick}</text>",
                H - B,
                H - B + 5.0,
                H - B + 18.0
            );
            tick += step;
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">seconds since the canary's first write</text>\n<text x=\"15\" y=\"{:.1}\" transform=\"rotate(-90 15 {:.1})\" text-anchor=\"middle\">acknowledged writes ({acked_total})</text>",
            (L + W - R) / 2.0,
            H - 10.0,
            (T + H - B) / 2.0,
            (T + H - B) / 2.0
        );
        // The cumulative line and the failed writes.
        let mut n = 0;
        let mut points = format!("{L:.1},{:.1}", y(0));
        let mut acks: Vec<u64> = self.writes.iter().filter_map(|w| w.acked_ms).collect();
        acks.sort_unstable();
        for a in acks {
            n += every;
            let _ = write!(points, " {:.1},{:.1}", x(a), y(n));
        }
        let _ = writeln!(
            s,
            "<polyline points=\"{points}\" fill=\"none\" stroke=\"#1a7f37\" stroke-width=\"2\"/>"
        );
        for w in self.writes.iter().filter(|w| w.acked_ms.is_none()) {
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#d00\"/>",
                x(w.sent_ms),
                H - B - 8.0,
                H - B
            );
        }
        let mut mark = |t: u64, label: &str, color: &str| {
            // Labels near the right edge go to the left of their line.
            let (lx, anchor) = if x(t) > W - R - 60.0 {
                (x(t) - 3.0, "end")
            } else {
                (x(t) + 3.0, "start")
            };
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{T}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/><text x=\"{lx:.1}\" y=\"{2}\" text-anchor=\"{anchor}\" fill=\"{color}\">{label}</text>",
                x(t),
                H - B,
                T + 28.0
            );
        };
        if let Some(f) = self.fault_at_ms {
            mark(f, "fault", "#b00");
        }
        if let Some(u) = self.faults.iter().filter_map(|f| f.undone_ms).max() {
            mark(u, "undone", "#555");
        }
        s.push_str("</svg>\n");
        s
    }
}

/// `2026-12-04 22:13:51`
pub fn utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}
