//! The post-mortem draft of an incident, in Markdown: what Lifeboat recorded (summary, impact
//! against the tier's targets, detection, the timeline of steps, decisions and status
//! updates, what it decided not to do and why), and headings for the people to fill in.

use lifeboat_core::time::format_ms;
use lifeboat_core::Millis;
use lifeboat_store::{Event, Incident, Outcome, Store, StoreError};
use std::fmt::Write;

/// How far before the incident its context reaches (the probes that failed, the decisions).
const BEFORE_MS: u64 = 10 * 60 * 1000;

fn utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.3f UTC")
        .to_string()
}

fn hms(ms: u64) -> String {
    Millis(ms).to_string()
}

/// The draft for incident `id`, or `None` when there is no such incident.
pub fn draft(store: &Store, id: i64) -> Result<Option<String>, StoreError> {
    let Some(inc) = store.incident(id)? else {
        return Ok(None);
    };
    let from = Millis(
        inc.figures
            .last_ok_at_ms
            .unwrap_or(inc.opened_ms)
            .min(inc.opened_ms)
            .saturating_sub(BEFORE_MS),
    );
    let end = inc
        .updates
        .last()
        .map(|u| u.at_ms)
        .max(inc.closed_ms)
        .unwrap_or(inc.opened_ms);
    let events = store
        .service(&inc.service)
        .events_between(from, Millis(end), 2000)?;
    Ok(Some(render(&inc, &events)))
}

/// Only what concerns the incident: health changes, decisions and plans from the last
/// successful probe before the fault (or ten minutes before it opened) until its last update.
pub fn render(inc: &Incident, events: &[Event]) -> String {
    let f = &inc.figures;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Post-mortem (draft): incident {} — {} {}\n",
        inc.id, inc.service, inc.kind
    );
    let _ = writeln!(
        m,
        "> Drafted by Lifeboat from its records. Figures and times are what Lifeboat measured; \
         sections marked _to fill in_ are for the people who handled it.\n"
    );

    m.push_str("## Summary\n\n");
    let moved = match (&inc.old_primary, &inc.target) {
        (Some(o), Some(t)) => format!("the primary moved from **{o}** to **{t}**"),
        (None, Some(t)) => format!("**{t}** became the primary"),
        (Some(o), None) => format!("**{o}** was acted on"),
        (None, None) => "no node was named".into(),
    };
    let _ = writeln!(
        m,
        "- What: a {} of service **{}**: {moved} (epoch {}).",
        inc.kind, inc.service, inc.epoch
    );
    let _ = writeln!(m, "- Opened: {}", utc(inc.opened_ms));
    match inc.closed_ms {
        Some(c) => {
            let _ = writeln!(
                m,
                "- Plan ended: {} ({} after it opened), {}",
                utc(c),
                format_ms(c.saturating_sub(inc.opened_ms)),
                inc.status.as_str()
            );
        }
        None => {
            let _ = writeln!(m, "- Plan: still running or in flight");
        }
    }
    let _ = writeln!(m, "- Status: **{}**", inc.state);
    if let Some(u) = inc
        .updates
        .iter()
        .rev()
        .find(|u| u.state == lifeboat_core::notice::StatusState::Resolved)
    {
        let _ = writeln!(m, "- Resolved: {} by {}", utc(u.at_ms), u.actor);
    }
    m.push('\n');

    m.push_str("## Impact, measured against the tier\n\n");
    m.push_str("| | measured | target | met |\n|---|---|---|---|\n");
    let met = |v: Option<u64>, t: Option<u64>| match (v, t) {
        (Some(v), Some(t)) => if v <= t { "yes" } else { "**no**" }.to_owned(),
        _ => "—".into(),
    };
    let opt = |v: Option<u64>| v.map_or("not measured".into(), format_ms);
    let _ = writeln!(
        m,
        "| RTO: fault → first write on the new primary | {} | {} | {} |",
        opt(f.first_write_ms),
        f.rto_target_ms.map_or("—".into(), format_ms),
        met(f.first_write_ms, f.rto_target_ms)
    );
    let lost = match f.lag_bytes_at_fault {
        Some(0) => "0 bytes: the promoted standby had every byte of WAL the old primary was last seen with".to_owned(),
        Some(b) => format!("up to {b} bytes of WAL: how far the promoted standby was behind the old primary's last known position"),
        None => "not measured (no failover of a lost primary, or its position was unknown)".into(),
    };
    let _ = writeln!(
        m,
        "| Data lost (RPO) | {lost} | {} | {} |",
        f.rpo_target_ms.map_or("—".into(), format_ms),
        match f.lag_bytes_at_fault {
            Some(0) => "yes",
            Some(_) => "check",
            None => "—",
        }
    );
    let _ = writeln!(m, "| Fault → promoted | {} | | |", opt(f.promote_ms));
    m.push_str("\nUsers affected, revenue, SLO budget spent: _to fill in_\n\n");

    m.push_str("## Detection\n\n");
    match (f.last_ok_at_ms, f.fault_at_ms, f.detect_ms) {
        (last_ok, Some(fault), detect) => {
            if let Some(l) = last_ok {
                let _ = writeln!(m, "- Last successful probe of the old primary: {}", utc(l));
            }
            let _ = writeln!(
                m,
                "- First failed probe (the fault, as observed): {}",
                utc(fault)
            );
            if let Some(d) = detect {
                let _ = writeln!(
                    m,
                    "- Declared lost: {} ({} after the fault)",
                    utc(fault + d),
                    format_ms(d)
                );
            }
        }
        _ => {
            let _ = writeln!(
                m,
                "- Not a detected fault: this {} was started on purpose (by an operator or a plan).",
                inc.kind
            );
        }
    }
    m.push('\n');

    m.push_str("## Timeline (UTC)\n\n");
    let mut rows: Vec<(u64, String)> = Vec::new();
    for e in events {
        if e.kind == "decision" && e.message.starts_with("no action") {
            rows.push((
                e.at_ms,
                format!("decided not to act: {}", one_line(&e.message)),
            ));
        } else if matches!(
            e.kind.as_str(),
            "health" | "plan" | "operator" | "fence" | "decision"
        ) {
            rows.push((e.at_ms, format!("{}: {}", e.kind, one_line(&e.message))));
        }
    }
    for s in &inc.timeline {
        let took = s
            .ended_ms
            .map(|e| format!(" in {}", format_ms(e.saturating_sub(s.at_ms))))
            .unwrap_or_default();
        let what = if s.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", one_line(&s.detail))
        };
        rows.push((
            s.at_ms,
            format!(
                "step {} {} — {}{took}{what}",
                s.step,
                s.node,
                s.outcome.as_str()
            ),
        ));
    }
    for u in &inc.updates {
        rows.push((
            u.at_ms,
            format!(
                "status **{}** ({}): {}",
                u.state,
                u.actor,
                one_line(&u.message)
            ),
        ));
    }
    rows.sort_by_key(|r| r.0);
    if rows.is_empty() {
        m.push_str("Nothing was recorded.\n");
    }
    for (at, what) in rows {
        let _ = writeln!(m, "- {} — {what}", hms(at));
    }
    m.push('\n');

    m.push_str("## What Lifeboat decided not to do, and why\n\n");
    let refusals: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == "decision" && e.message.starts_with("no action"))
        .collect();
    if refusals.is_empty() {
        m.push_str("Lifeboat recorded no refusal in this window.\n");
    }
    for e in refusals {
        let _ = writeln!(m, "- {}:", hms(e.at_ms));
        for r in e.message.lines().skip(1) {
            let _ = writeln!(m, "  {}", r.trim());
        }
    }
    if inc.status != Outcome::Ok && inc.closed_ms.is_some() {
        let _ = writeln!(
            m,
            "\nThe plan did not end well ({}); its failed or compensated steps are in the timeline.",
            inc.status.as_str()
        );
    }
    m.push('\n');

    for h in [
        "Root cause",
        "Contributing factors",
        "What went well",
        "What went poorly",
    ] {
        let _ = writeln!(m, "## {h}\n\n_to fill in_\n");
    }
    m.push_str("## Action items\n\n| kind (prevent, detect, mitigate) | action | owner | due |\n|---|---|---|---|\n| _to fill in_ | | | |\n");
    m
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
