//! Incidents' status states, post-mortem drafts, the public status page, and the notifiers.

use crate::{authorize, error, store, ApiState};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifeboat_core::notice::StatusState;
use lifeboat_exec::executor::now;
use lifeboat_exec::notify::{postmortem, set_state};
use lifeboat_exec::Handle;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

fn incident_id(id: &str) -> Result<i64, Response> {
    id.parse::<i64>().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("incident id must be a number, got {id:?}"),
        )
    })
}

fn no_incident(id: i64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no incident {id}; `lifeboat incident list` (GET /v1/incidents) lists them"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    state: String,
    message: String,
    /// Who says so (shown on the status page and in the post-mortem).
    by: Option<String>,
}

/// `POST /v1/incidents/{id}/updates {"state", "message", "by"}`: an operator sets the state.
pub(crate) async fn update(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: axum::body::Bytes,
) -> Response {
    let actor = match authorize(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = match incident_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body: UpdateBody = match serde_json::from_slice(&b) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid body: {e}; send {{\"state\": \"investigating|identified|monitoring|resolved\", \"message\": TEXT, \"by\": NAME}}"),
            )
        }
    };
    let Some(state) = StatusState::parse(&body.state) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown state {:?}; states: investigating, identified, monitoring, resolved",
                body.state
            ),
        );
    };
    let message = body.message.trim();
    if message.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "say what changed: the message is shown on the status page and sent to the notifiers",
        );
    }
    if message.len() > 4000 {
        return error(
            StatusCode::BAD_REQUEST,
            "the message is longer than 4,000 bytes",
        );
    }
    let inc = match store(&s).incident(id) {
        Ok(Some(i)) => i,
        Ok(None) => return no_incident(id),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let who = body
        .by
        .map(|b| b.trim().chars().take(64).collect::<String>())
        .filter(|b| !b.is_empty())
        .unwrap_or(actor.clone());
    let first: String = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect();
    let title = format!("{first} (by {who})");
    let svc = store(&s).service(&inc.service);
    let at = now();
    let _ = svc.audit(at, &actor, &format!("incident {id} {state}"), message);
    if let Err(e) = set_state(&svc, id, &inc.kind, state, &title, message, &who, at) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    match store(&s).incident(id) {
        Ok(Some(i)) => Json(i).into_response(),
        _ => no_incident(id),
    }
}

/// `GET /v1/incidents/{id}/postmortem`: the Markdown draft.
pub(crate) async fn postmortem(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let id = match incident_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match postmortem::draft(store(&s), id) {
        Ok(Some(md)) => {
            ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], md).into_response()
        }
        Ok(None) => no_incident(id),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn page(s: &ApiState) -> Result<lifeboat_exec::notify::status_page::StatusPage, Response> {
    let statuses: Vec<_> = s.services.iter().map(Handle::status).collect();
    s.pages
        .build(&statuses, now().0)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /status`: the public status page (HTML).
pub(crate) async fn status_html(State(s): State<ApiState>) -> Response {
    match page(&s) {
        Ok(p) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            p.html(),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `GET /status.json`
pub(crate) async fn status_json(State(s): State<ApiState>) -> Response {
    match page(&s) {
        Ok(p) => Json(p).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/notify`: each notifier, how far behind it is, its last error, recent deliveries.
pub(crate) async fn list(State(s): State<ApiState>) -> Response {
    Json(json!({ "notifiers": s.notifiers.status() })).into_response()
}

/// `POST /v1/notify/{name}/test`: sends a test message and waits (up to 30 s) for how it
/// ended.
pub(crate) async fn test(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let id = match s.notifiers.test(&name) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(d) = s.notifiers.delivery(&name, id) {
            return Json(json!({ "notifier": name, "notice": id, "delivery": d })).into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = s.notifiers.status().into_iter().find(|c| c.name == name);
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "notifier": name,
            "notice": id,
            "pending": true,
            "message": format!(
                "not delivered within 30 s; it stays in the outbox and is retried ({})",
                st.and_then(|c| c.last_error).unwrap_or_else(|| "queued behind earlier notices".into())
            ),
        })),
    )
        .into_response()
}
