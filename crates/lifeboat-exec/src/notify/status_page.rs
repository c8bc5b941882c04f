//! The public status page: each service's component status (Statuspage's vocabulary), its
//! open incidents with their updates, and those resolved in the last week. Read-only and
//! built from what Lifeboat already shows at `/v1/status`; it names services and nodes, never
//! addresses or secrets.

use crate::text::escape_markup;
use crate::Status;
use lifeboat_config::Config;
use lifeboat_core::notice::StatusState;
use lifeboat_store::{Store, StoreError, Update};
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;

const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Operational,
    UnderMaintenance,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

impl Component {
    fn words(self) -> &'static str {
        match self {
            Component::Operational => "Operational",
            Component::UnderMaintenance => "Under maintenance",
            Component::DegradedPerformance => "Degraded performance",
            Component::PartialOutage => "Partial outage",
            Component::MajorOutage => "Major outage",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceLine {
    pub name: String,
    pub status: Component,
}

#[derive(Clone, Debug, Serialize)]
pub struct PageIncident {
    pub id: i64,
    pub service: String,
    pub title: String,
    pub state: StatusState,
    pub opened_ms: u64,
    pub updates: Vec<Update>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusPage {
    pub title: String,
    pub updated_ms: u64,
    /// The worst of the services.
    pub overall: Component,
    pub services: Vec<ServiceLine>,
    pub open: Vec<PageIncident>,
    pub resolved: Vec<PageIncident>,
}

/// Builds the page from the services' status and the store.
#[derive(Clone)]
pub struct StatusPages {
    pub config: Arc<Config>,
    pub store: Store,
}

fn title_of(i: &lifeboat_store::Incident) -> String {
    let target = i.target.as_deref().unwrap_or("?");
    match i.kind.as_str() {
        "failover" => format!("{}: primary lost, failed over to {target}", i.service),
        "switchover" => format!("{}: planned switchover to {target}", i.service),
        "manual-failover" => format!("{}: failover to {target} by an operator", i.service),
        k => format!("{}: {k}", i.service),
    }
}

impl StatusPages {
    pub fn build(&self, statuses: &[Status], now_ms: u64) -> Result<StatusPage, StoreError> {
        let recent = self.store.incidents(200)?;
        let page_incident = |i: &lifeboat_store::Incident| PageIncident {
            id: i.id,
            service: i.service.clone(),
            title: title_of(i),
            state: i.state,
            opened_ms: i.opened_ms,
            updates: i.updates.iter().rev().cloned().collect(),
        };
        let open: Vec<PageIncident> = recent
            .iter()
            .filter(|i| i.state != StatusState::Resolved)
            .map(page_incident)
            .collect();
        let resolved: Vec<PageIncident> = recent
            .iter()
            .filter(|i| {
                i.state == StatusState::Resolved
                    && i.updates
                        .last()
                        .map_or(i.closed_ms.unwrap_or(i.opened_ms), |u| u.at_ms)
                        + WEEK_MS
                        >= now_ms
            })
            .take(20)
            .map(page_incident)
            .collect();
        let services: Vec<ServiceLine> = statuses
            .iter()
            .map(|st| {
                let primary_up = st
                    .nodes
                    .iter()
                    .any(|n| Some(&n.name) == st.primary.as_ref() && n.health == "up");
                let worst_open = open
                    .iter()
                    .filter(|i| i.service == st.service)
                    .map(|i| i.state)
                    .min();
                let maintenance = self
                    .config
                    .maintenance
                    .values()
                    .any(|m| m.covers(&st.service) && m.open_at(now_ms).is_some());
                let status = if !primary_up || st.endpoint.routes_to.is_none() {
                    Component::MajorOutage
                } else if matches!(
                    worst_open,
                    Some(StatusState::Investigating | StatusState::Identified)
                ) {
                    Component::PartialOutage
                } else if worst_open.is_some() || st.nodes.iter().any(|n| n.health == "down") {
                    Component::DegradedPerformance
                } else if maintenance {
                    Component::UnderMaintenance
                } else {
                    Component::Operational
                };
                ServiceLine {
                    name: st.service.clone(),
                    status,
                }
            })
            .collect();
        Ok(StatusPage {
            title: self.config.incidents.status_page_title.clone(),
            updated_ms: now_ms,
            overall: services
                .iter()
                .map(|s| s.status)
                .max()
                .unwrap_or(Component::Operational),
            services,
            open,
            resolved,
        })
    }
}

fn utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

impl StatusPage {
    /// A self-contained HTML page (no script, no external resource), refreshed every 30 s.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let colour = |c: Component| match c {
            Component::Operational => "#1a7f37",
            Component::UnderMaintenance => "#0969da",
            Component::DegradedPerformance => "#9a6700",
            Component::PartialOutage => "#bc4c00",
            Component::MajorOutage => "#cf222e",
        };
        let _ = write!(
            h,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2328}}\
             .banner{{padding:1rem;border-radius:6px;color:#fff;font-weight:600}}li{{margin:.3rem 0}}\
             .svc{{display:flex;justify-content:space-between;border-bottom:1px solid #d0d7de;padding:.5rem 0}}\
             .upd{{color:#57606a;font-size:.9rem}}</style></head><body><h1>{t}</h1>",
            t = escape_markup(&self.title)
        );
        let banner = match self.overall {
            Component::Operational => "All systems operational".to_owned(),
            c => c.words().to_owned(),
        };
        let _ = write!(
            h,
            "<p class=\"banner\" style=\"background:{}\" data-overall=\"{}\">{}</p><h2>Services</h2>",
            colour(self.overall),
            serde_json::to_value(self.overall).unwrap_or_default().as_str().unwrap_or(""),
            escape_markup(&banner)
        );
        for s in &self.services {
            let _ = write!(
                h,
                "<div class=\"svc\"><span>{}</span><span style=\"color:{}\">{}</span></div>",
                escape_markup(&s.name),
                colour(s.status),
                s.status.words()
            );
        }
        for (heading, list) in [
            ("Current incidents", &self.open),
            ("Resolved in the last 7 days", &self.resolved),
        ] {
            let _ = write!(h, "<h2>{heading}</h2>");
            if list.is_empty() {
                h.push_str("<p>None.</p>");
            }
            for i in list {
                let _ = write!(
                    h,
                    "<h3>{} <small>({}, since {})</small></h3><ul>",
                    escape_markup(&i.title),
                    i.state,
                    utc(i.opened_ms)
                );
                for u in &i.updates {
                    let _ = write!(
                        h,
                        "<li><b>{}</b> — {} <span class=\"upd\">{}</span></li>",
                        u.state,
                        escape_markup(&u.message),
                        utc(u.at_ms)
                    );
                }
                h.push_str("</ul>");
            }
        }
        let _ = write!(
            h,
            "<p class=\"upd\">Updated {}. JSON: <a href=\"/status.json\">/status.json</a></p></body></html>",
            utc(self.updated_ms)
        );
        h
    }
}
