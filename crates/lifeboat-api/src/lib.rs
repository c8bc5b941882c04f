//! The HTTP API under `/v1`, `/metrics` and `/healthz`: the only crate that speaks HTTP to
//! users. Reading is open; every request that changes something needs the bearer token.
//! It holds no logic of its own: requests go to the controller of their service through its
//! [`Handle`]. A node names its service (a node belongs to one); pause and resume name the
//! service when there are several.

// Handlers return ready responses on their error paths; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lifeboat_core::Command;
use lifeboat_exec::drill::DrillError;
use lifeboat_exec::notify::status_page::StatusPages;
use lifeboat_exec::notify::Notifiers;
use lifeboat_exec::{Drills, Handle, Request};

mod notify;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a changing request may wait for its plan to finish.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct ApiState {
    /// One handle per service, in service-name order.
    pub services: Vec<Handle>,
    /// `None`: no token configured, so every changing request is refused.
    pub token: Option<Arc<str>>,
    pub registry: Arc<Registry>,
    pub drills: Drills,
    pub notifiers: Notifiers,
    pub pages: StatusPages,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1", get(index))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/incidents", get(incidents))
        .route("/v1/incidents/{id}", get(incident))
        .route("/v1/incidents/{id}/updates", post(notify::update))
        .route("/v1/incidents/{id}/postmortem", get(notify::postmortem))
        .route("/v1/notify", get(notify::list))
        .route("/v1/notify/{name}/test", post(notify::test))
        .route("/status", get(notify::status_html))
        .route("/status.json", get(notify::status_json))
        .route("/v1/switchover", post(switchover))
        .route("/v1/failover", post(failover))
        .route("/v1/rejoin", post(rejoin))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/drills", get(drills))
        .route("/v1/drills/abort", post(drill_abort))
        .route("/v1/drills/{name}/run", post(drill_run))
        .route("/v1/drills/{name}/history", get(drill_history))
        .route("/v1/drill-runs/{id}", get(drill_report))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; GET /v1 lists them",
            )
        })
        .with_state(state)
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

async fn index() -> Json<serde_json::Value> {
    Json(json!({
        "endpoints": {
            "GET /healthz": "liveness",
            "GET /metrics": "Prometheus metrics",
            "GET /v1": "this index",
            "GET /v1/openapi.json": "the OpenAPI 3 document of this API",
            "GET /v1/status": "regions, nodes, roles, health, lag, endpoint target and the current decision",
            "GET /v1/events?limit=N": "recent events and decisions",
            "GET /v1/incidents?limit=N": "incidents, newest first",
            "GET /v1/incidents/{id}": "one incident with its timeline, figures, status state and updates",
            "POST /v1/incidents/{id}/updates": "{\"state\": investigating|identified|monitoring|resolved, \"message\": TEXT, \"by\": NAME} set an incident's status (token)",
            "GET /v1/incidents/{id}/postmortem": "a post-mortem draft in Markdown",
            "GET /v1/notify": "notifiers, what they have not delivered yet, their last errors and recent deliveries",
            "POST /v1/notify/{name}/test": "send a test message and wait for how it ended (token)",
            "GET /status": "the public status page (HTML)",
            "GET /status.json": "the public status page in JSON",
            "POST /v1/switchover": "{\"to\": NODE} planned switchover, zero loss (token)",
            "POST /v1/failover": "{\"to\": NODE, \"force\": false} manual failover (token)",
            "POST /v1/rejoin": "{\"node\": NODE} rewind or re-clone a fenced node as a standby (token)",
            "POST /v1/pause": "stop automatic failover (token)",
            "POST /v1/resume": "resume automatic failover (token)",
            "GET /v1/drills": "configured drills, their schedules and last runs",
            "POST /v1/drills/{name}/run": "{\"dry_run\": false} start a drill, or say what it would do (token)",
            "POST /v1/drills/abort": "stop the running drill; its rollback runs (token)",
            "GET /v1/drills/{name}/history?limit=N": "a drill's runs, newest first",
            "GET /v1/drill-runs/{id}?format=json|markdown|svg": "one run's report, or its chart"
        }
    }))
}

/// The OpenAPI 3 document of this API, kept beside the code (`src/openapi.json`).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceQuery {
    service: Option<String>,
}

/// Every service's status (`{"services": [...]}`), or one service's with `?service=NAME`.
async fn status(
    State(s): State<ApiState>,
    q: Result<Query<ServiceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Err(e) => error(StatusCode::BAD_REQUEST, e.body_text()),
        Ok(Query(ServiceQuery { service: None })) => {
            let all: Vec<_> = s.services.iter().map(Handle::status).collect();
            Json(json!({ "services": all })).into_response()
        }
        Ok(Query(ServiceQuery {
            service: Some(name),
        })) => match service_named(&s, &name) {
            Ok(h) => Json(h.status()).into_response(),
            Err(r) => r,
        },
    }
}

fn service_named<'a>(s: &'a ApiState, name: &str) -> Result<&'a Handle, Response> {
    s.services
        .iter()
        .find(|h| h.service == name)
        .ok_or_else(|| {
            let known: Vec<&str> = s.services.iter().map(|h| h.service.as_str()).collect();
            error(
                StatusCode::BAD_REQUEST,
                format!("unknown service {name:?}; services: {}", known.join(", ")),
            )
        })
}

/// The one handle that reaches the store (the services share its file).
fn store(s: &ApiState) -> &lifeboat_store::Store {
    &s.services[0].store
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u32>,
}

async fn events(
    State(s): State<ApiState>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match q {
        Ok(Query(l)) => l.limit.unwrap_or(100).min(10_000),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match store(&s).events(limit) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn incidents(
    State(s): State<ApiState>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match q {
        Ok(Query(l)) => l.limit.unwrap_or(20).min(1_000),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match store(&s).incidents(limit) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn incident(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("incident id must be a number, got {id:?}"),
        );
    };
    match store(&s).incident(id) {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no incident {id}; GET /v1/incidents lists them"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Checks the bearer token; on success returns the actor name for the audit log.
fn authorize(s: &ApiState, headers: &HeaderMap) -> Result<String, Response> {
    let Some(expected) = &s.token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "no API token is configured (controller.api-token-file or api-token-env), so changes over the API are disabled",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <token>",
        )),
        // Comparing digests keeps the comparison constant-time (blake3::Hash's Eq is).
        Some(t) if blake3::hash(t.as_bytes()) == blake3::hash(expected.as_bytes()) => {
            Ok("api".into())
        }
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
    }
}

/// The service `node` belongs to.
fn service_of<'a>(s: &'a ApiState, node: &str) -> Result<&'a Handle, Response> {
    s.services
        .iter()
        .find(|h| h.node_names.iter().any(|n| n == node))
        .ok_or_else(|| {
            let known: Vec<&str> = s
                .services
                .iter()
                .flat_map(|h| h.node_names.iter().map(String::as_str))
                .collect();
            error(
                StatusCode::BAD_REQUEST,
                format!("unknown node {node:?}; known nodes: {}", known.join(", ")),
            )
        })
}

/// The service a pause or resume is for: the one named, or the only one.
fn service_for<'a>(s: &'a ApiState, name: Option<&str>) -> Result<&'a Handle, Response> {
    match (name, s.services.as_slice()) {
        (Some(n), _) => service_named(s, n),
        (None, [one]) => Ok(one),
        (None, all) => {
            let known: Vec<&str> = all.iter().map(|h| h.service.as_str()).collect();
            Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "several services ({}): name one with {{\"service\": NAME}} (--service NAME)",
                    known.join(", ")
                ),
            ))
        }
    }
}

/// Authorizes first (401 before anything about the body is revealed), then checks the
/// request and hands it to the controller.
async fn act(
    s: &ApiState,
    headers: &HeaderMap,
    request: Result<(Request, Option<String>), Response>,
) -> Response {
    let actor = match authorize(s, headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (request, service) = match request {
        Ok(r) => r,
        Err(r) => return r,
    };
    let handle = match &request {
        Request::Command(Command::Switchover { to } | Command::Failover { to, .. }) => {
            service_of(s, to)
        }
        Request::Command(Command::Rejoin { node }) => service_of(s, node),
        Request::Pause | Request::Resume => service_for(s, service.as_deref()),
    };
    let handle = match handle {
        Ok(h) => h,
        Err(r) => return r,
    };
    let reply = handle.request(request, &actor, REQUEST_TIMEOUT).await;
    let code = if reply.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(reply)).into_response()
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    b.map(|Json(v)| v)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct To {
    to: String,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    node: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceBody {
    service: Option<String>,
}

async fn switchover(
    State(s): State<ApiState>,
    headers: HeaderMap,
    b: Result<Json<To>, JsonRejection>,
) -> Response {
    let request = body(b).and_then(|To { to, force }| match force {
        true => Err(error(
            StatusCode::BAD_REQUEST,
            "a switchover cannot be forced; use /v1/failover",
        )),
        false => Ok((Request::Command(Command::Switchover { to }), None)),
    });
    act(&s, &headers, request).await
}

async fn failover(
    State(s): State<ApiState>,
    headers: HeaderMap,
    b: Result<Json<To>, JsonRejection>,
) -> Response {
    let request =
        body(b).map(|To { to, force }| (Request::Command(Command::Failover { to, force }), None));
    act(&s, &headers, request).await
}

async fn rejoin(
    State(s): State<ApiState>,
    headers: HeaderMap,
    b: Result<Json<NodeBody>, JsonRejection>,
) -> Response {
    let request =
        body(b).map(|NodeBody { node }| (Request::Command(Command::Rejoin { node }), None));
    act(&s, &headers, request).await
}

/// A pause or resume body: none, or `{"service": NAME}`.
fn service_body(b: &[u8]) -> Result<Option<String>, Response> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<ServiceBody>(b)
        .map(|s| s.service)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))
}

async fn pause(State(s): State<ApiState>, headers: HeaderMap, b: axum::body::Bytes) -> Response {
    let request = service_body(&b).map(|svc| (Request::Pause, svc));
    act(&s, &headers, request).await
}

async fn resume(State(s): State<ApiState>, headers: HeaderMap, b: axum::body::Bytes) -> Response {
    let request = service_body(&b).map(|svc| (Request::Resume, svc));
    act(&s, &headers, request).await
}

fn drill_error(e: DrillError) -> Response {
    let code = match &e {
        DrillError::Unknown { .. } | DrillError::NoRun(_) => StatusCode::NOT_FOUND,
        DrillError::Busy { .. } | DrillError::Refused { .. } | DrillError::NotRunning => {
            StatusCode::CONFLICT
        }
        DrillError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.to_string())
}

async fn drills(State(s): State<ApiState>) -> Response {
    match s.drills.list() {
        Ok(l) => Json(json!({ "drills": l })).into_response(),
        Err(e) => drill_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
}

async fn drill_run(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    b: axum::body::Bytes,
) -> Response {
    let actor = match authorize(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let body = if b.iter().all(u8::is_ascii_whitespace) {
        RunBody::default()
    } else {
        match serde_json::from_slice::<RunBody>(&b) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid body: {e}; send {{\"dry_run\": true|false}} or nothing"),
                )
            }
        }
    };
    match s.drills.start(&name, body.dry_run, &actor) {
        Ok(started) => (
            if started.dry_run {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            },
            Json(started),
        )
            .into_response(),
        Err(e) => drill_error(e),
    }
}

async fn drill_abort(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let actor = match authorize(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match s.drills.abort(&actor) {
        Ok(run) => Json(json!({ "run": run, "message": format!("drill run {run} is stopping; its rollback runs") })).into_response(),
        Err(e) => drill_error(e),
    }
}

async fn drill_history(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match q {
        Ok(Query(l)) => l.limit.unwrap_or(50).min(1000),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match s.drills.history(&name, limit) {
        Ok(runs) => Json(json!({ "drill": name, "runs": runs })).into_response(),
        Err(e) => drill_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Format {
    format: Option<String>,
}

async fn drill_report(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<Format>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a drill run id is a number, got {id:?}"),
        );
    };
    let format = match q {
        Ok(Query(f)) => f.format.unwrap_or_else(|| "json".into()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let report = match s.drills.report(id) {
        Ok(r) => r,
        Err(e) => return drill_error(e),
    };
    match format.as_str() {
        "json" => Json(report).into_response(),
        "markdown" | "md" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response(),
        "svg" => ([(header::CONTENT_TYPE, "image/svg+xml")], report.svg()).into_response(),
        other => error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}; use json, markdown or svg"),
        ),
    }
}
