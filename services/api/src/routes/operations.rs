//! The `operations` routes: liveness, readiness, metrics (`/metrics`, rendered by
//! [`crate::metrics`]), the outbox relay's status and the OpenAPI document.
//!
//! After a writer failure (`eventstore::EventStore::failure`) both probes answer 503
//! `store-failed` with the reason: the process must be replaced, since only a fresh one
//! reopens the store.
//!
//! The relay itself runs in the server (`annals serve --nats-url`); the API only reads
//! the [`outbox::StatusHandle`] given to [`AppState::with_relay`], for
//! `GET /api/v1/outbox` and for the `outbox` member of `/readyz`.
//!
//! The server's background workers run under its supervisor (`supervisor` crate); the
//! API reads their statuses ([`AppState::with_workers`]) for `GET /api/v1/workers`, and
//! `/readyz` answers 503 `not-ready` naming every worker marked failed (restarted too
//! often, or not restartable).

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use eventstore::Position;
use outbox::{BreakerState, Health as RelayHealth, RelayState, RelayStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::{self, ApiError};
use crate::responses::{MetricsOff, NotReady, StoreFailed};

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `alive`.
    pub status: &'static str,
}

/// The answer of `/readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: &'static str,
    /// The position the next appended event will get.
    pub next_position: u64,
    /// The first position the index does not cover yet.
    pub indexed_position: u64,
    /// Durable events not indexed yet.
    pub index_lag: u64,
    /// The outbox relay's health, when this server runs one. A `degraded` relay (NATS
    /// away: the backlog waits in the log) or a `stopped` one leaves the server ready:
    /// commands and queries do not need NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxHealth>,
}

/// The process is alive and answering, and its store's writer has not failed. After a
/// failed write or sync of the log the process must be replaced (only a fresh process
/// reopens the store): `annals serve` exits by itself, and this answers 503
/// `store-failed` meanwhile, so that a liveness probe restarts a server that would not.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health), StoreFailed)
)]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    liveness(&state).map(Json)
}

/// What `/healthz` answers, for other reporters of the same health (the node status of
/// service discovery).
pub fn liveness(state: &AppState) -> Result<Health, ApiError> {
    if let Some(reason) = state.store().failure() {
        return Err(store_failed_probe(&reason));
    }
    Ok(Health { status: "alive" })
}

/// The problem `/healthz` and `/readyz` answer after a writer failure, naming it.
fn store_failed_probe(reason: &str) -> ApiError {
    problem::store_failed(format!(
        "the event store's writer failed ({reason}); the server takes no more commands and \
         must be restarted: a fresh process re-reads the disk"
    ))
}

/// The server can take traffic: not shutting down, the store's writer running, no
/// background worker marked failed (the 503 names every failed one), the index within
/// the configured lag of the log. After a writer failure it answers 503
/// `store-failed`, naming the failure. The outbox relay, when the server runs one, is
/// reported (`outbox`) but does not decide: a relay degraded because NATS is away still
/// answers 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        NotReady,
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    readiness(&state).map(Json)
}

/// What `/readyz` answers, for other reporters of the same readiness (the node status of
/// service discovery).
pub fn readiness(state: &AppState) -> Result<Readiness, ApiError> {
    let not_ready = |detail: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            detail,
        )
    };
    let store = state.store();
    // First: a server shutting down after a failure still names the failure.
    if let Some(reason) = store.failure() {
        return Err(store_failed_probe(&reason));
    }
    if state.shutdown_token().is_cancelled() {
        return Err(not_ready("the server is shutting down".into()));
    }
    if !store.writer_alive() {
        return Err(not_ready("the event store's writer has stopped".into()));
    }
    if let Some(failed) = state.workers().map(supervisor::Workers::failed)
        && !failed.is_empty()
    {
        return Err(not_ready(format!(
            "background workers failed and are not restarted any more: {} \
             (GET /api/v1/workers has their last errors)",
            failed.join(", ")
        )));
    }
    let next_position = store.next_position().0;
    let indexed_position = store.indexed_position().0;
    let index_lag = next_position.saturating_sub(indexed_position);
    let max_lag = state.config().max_ready_index_lag;
    if index_lag > max_lag {
        return Err(not_ready(format!(
            "the index lags the log by {index_lag} events (more than {max_lag})"
        )));
    }
    Ok(Readiness {
        status: "ready",
        next_position,
        indexed_position,
        index_lag,
        outbox: health(state),
    })
}

/// This API's OpenAPI document, generated from the code.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string_pretty(&crate::openapi_json())
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    });
    let mut response = DOCUMENT.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The metrics of this process in the Prometheus text format (version 0.0.4): requests by
/// route, the store's write path, read models, the outbox relay, sagas and the process
/// (docs/OPERATIONS.md, "Metrics"). With authentication on, it needs a token whose roles
/// allow `operations.metrics` (operators and admins by default). A server started with
/// `--no-metrics` answers 404 `metrics-off`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics, Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
        MetricsOff,
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if !state.config().metrics {
        return ApiError::not_found(
            "metrics-off",
            "this server records no metrics (it was started with --no-metrics, or \
             metrics = false in its config file); restart it without that to serve /metrics",
        )
        .into_response();
    }
    // The gauges read the store and the read models' status: cheap, in-memory reads.
    let text = crate::metrics::render(&state);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The answer of `GET /api/v1/outbox`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxStatus {
    /// Whether this server runs the outbox relay (`annals serve --nats-url URL`). When
    /// `false`, `health` and `relay` are absent.
    pub enabled: bool,
    /// The relay's health: `healthy`, `degraded` (with a reason; the backlog waits in the
    /// log) or `stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<OutboxHealth>,
    /// The relay's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayReport>,
}

/// The relay's health, as `/api/v1/outbox` and `/readyz` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OutboxHealth {
    /// `healthy` (connected and publishing), `degraded` (running but not publishing) or
    /// `stopped`.
    #[schema(example = "degraded")]
    pub status: &'static str,
    /// Why the relay is degraded, in a few words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<RelayHealth> for OutboxHealth {
    fn from(health: RelayHealth) -> Self {
        match health {
            RelayHealth::Healthy => OutboxHealth {
                status: "healthy",
                reason: None,
            },
            RelayHealth::Degraded { reason } => OutboxHealth {
                status: "degraded",
                reason: Some(reason),
            },
            RelayHealth::Stopped => OutboxHealth {
                status: "stopped",
                reason: None,
            },
        }
    }
}

/// A snapshot of the relay (the fields of [`outbox::RelayStatus`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RelayReport {
    /// What the relay is doing: `starting`, `connecting`, `publishing`, `retrying` or
    /// `stopped`.
    #[schema(value_type = String, example = "publishing")]
    pub state: RelayState,
    /// Whether the NATS connection is up right now.
    pub connected: bool,
    /// The circuit breaker: `closed`, `open` or `half_open`.
    #[schema(value_type = String, example = "closed")]
    pub breaker: BreakerState,
    /// The next position to publish: JetStream has acknowledged every event before it.
    #[schema(value_type = u64)]
    pub checkpoint: Position,
    /// The next position the log will write.
    #[schema(value_type = u64)]
    pub log_head: Position,
    /// Events durable in the log and not yet acknowledged by JetStream.
    pub backlog: u64,
    /// Events acknowledged since the relay started.
    pub published: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure, as one line (kept after recovery; `last_error_at` says when).
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The JetStream stream.
    pub stream: String,
}

impl From<RelayStatus> for RelayReport {
    fn from(status: RelayStatus) -> Self {
        // Destructured field by field, so a field added to the status is not forgotten.
        let RelayStatus {
            state,
            connected,
            breaker,
            checkpoint,
            log_head,
            backlog,
            published,
            consecutive_failures,
            last_error,
            last_error_at,
            stream,
        } = status;
        RelayReport {
            state,
            connected,
            breaker,
            checkpoint,
            log_head,
            backlog,
            published,
            consecutive_failures,
            last_error,
            last_error_at,
            stream,
        }
    }
}

/// The relay's health now, if this server runs one.
pub(crate) fn health(state: &AppState) -> Option<OutboxHealth> {
    state.relay().map(|relay| relay.health().into())
}

/// The outbox relay: checkpoint, log head, backlog, circuit breaker state and last error.
///
/// Always 200. A server without a relay (`annals serve` without `--nats-url`) answers
/// `{"enabled": false}` rather than a 404, so that a monitor can tell "relay off" from
/// "no such route"; `annals outbox status --data-dir DIR` reads the checkpoint of a data
/// directory offline.
#[utoipa::path(
    get,
    path = "/api/v1/outbox",
    tag = "operations",
    responses((status = 200, description = "The relay's status, or `{\"enabled\": false}` when this server runs none", body = OutboxStatus))
)]
pub(crate) async fn outbox_status(State(state): State<AppState>) -> Json<OutboxStatus> {
    let Some(relay) = state.relay() else {
        return Json(OutboxStatus {
            enabled: false,
            health: None,
            relay: None,
        });
    };
    // One snapshot for both, so the health agrees with the status beside it.
    let status = relay.current();
    Json(OutboxStatus {
        enabled: true,
        health: Some(status.health().into()),
        relay: Some(status.into()),
    })
}

/// One background worker of the server, as `GET /api/v1/workers` reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerReport {
    /// The worker: `relay`, `projections`, `saga:fulfilment`, `slo-sampler`.
    #[schema(example = "relay")]
    pub name: String,
    /// `starting`, `running`, `backoff` (failed, waiting to restart), `failed` (failed
    /// too often, or not restartable: not restarted any more) or `stopped`.
    #[schema(example = "running")]
    pub state: &'static str,
    /// How many times it was restarted since the server started.
    pub restarts: u64,
    /// Its last failure (an error, or `panicked: <message>`), kept after a restart.
    pub last_error: Option<String>,
    /// When it entered its state (RFC 3339).
    pub since: DateTime<Utc>,
}

impl From<supervisor::WorkerStatus> for WorkerReport {
    fn from(status: supervisor::WorkerStatus) -> Self {
        WorkerReport {
            name: status.name,
            state: status.state.as_str(),
            restarts: status.restarts,
            last_error: status.last_error,
            since: status.since.into(),
        }
    }
}

/// The answer of `GET /api/v1/workers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkersReport {
    /// Every background worker, in the order the server started them; empty when the
    /// server runs none under a supervisor.
    pub workers: Vec<WorkerReport>,
}

/// The server's background workers (the outbox relay, the projections runner, the saga
/// driver, the freshness sampler): state, restarts, last error and since when.
///
/// Always 200. A worker that keeps failing is marked `failed` and `/readyz` names it.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "operations",
    responses((status = 200, description = "Every background worker's status", body = WorkersReport))
)]
pub(crate) async fn list_workers(State(state): State<AppState>) -> Json<WorkersReport> {
    let workers = state
        .workers()
        .map(supervisor::Workers::statuses)
        .unwrap_or_default()
        .into_iter()
        .map(WorkerReport::from)
        .collect();
    Json(WorkersReport { workers })
}
