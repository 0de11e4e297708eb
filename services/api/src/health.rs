//! Operations routes: liveness, readiness and the OpenAPI document.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::{ApiError, Problem};

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
    pub outbox: Option<crate::relay::OutboxHealth>,
}

/// The process is alive and answering.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "alive" })
}

/// The server can take traffic: not shutting down, the store's writer running, the
/// index within the configured lag of the log. The outbox relay, when the server runs
/// one, is reported (`outbox`) but does not decide: a relay degraded because NATS is away
/// still answers 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, and why", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let not_ready = |detail: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            detail,
        )
    };
    if state.shutdown_token().is_cancelled() {
        return Err(not_ready("the server is shutting down".into()));
    }
    let store = state.store();
    if !store.writer_alive() {
        return Err(not_ready("the event store's writer has stopped".into()));
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
    Ok(Json(Readiness {
        status: "ready",
        next_position,
        indexed_position,
        index_lag,
        outbox: crate::relay::health(&state),
    }))
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
        crate::openapi()
            .to_pretty_json()
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    });
    let mut response = DOCUMENT.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
