//! The `chaos` routes: the fault points of a server started with `--chaos` (the `chaos`
//! crate), and the `http.handler` fault point itself ([`http_handler`]).
//!
//! - `GET /api/v1/chaos/faults`: every point (its effects, its injections so far) and
//!   every active fault.
//! - `POST /api/v1/chaos/faults` with a [`FaultSpec`]: injects it, 201 with the
//!   [`Fault`]; a fault the crate refuses ([`chaos::InvalidFault`]) is a 422
//!   `chaos-fault-invalid` saying why.
//! - `DELETE /api/v1/chaos/faults`: ends every fault, `{"cleared": N}`;
//!   `DELETE /api/v1/chaos/faults/{id}`: ends one (204), 404 `unknown-fault` if it is
//!   not active.
//!
//! A server without `--chaos` does not route these paths at all ([`crate::app`]): they
//! answer the 404 `no-route` of an unknown path, and nothing can be injected. The policy
//! actions are `chaos.list`, `chaos.inject` and `chaos.clear` (operators and admins).
//!
//! The `http.handler` point is a route layer added only with `--chaos`: it passes every
//! command and query route, but never the operator's own routes (the probes, `/metrics`,
//! the document, the objectives, the workers, the outbox, and these), so that an
//! operator can always look and clear the faults.

use axum::Json;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chaos::{Effect, Fault, FaultSpec, Point, PointReport};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::JsonBody;
use crate::problem::ApiError;
use crate::responses::{BadRequest, InvalidFault, UnknownFault};

/// The problem slug of a request answered 500 by the `http.handler` point.
pub const CHAOS_INJECTED: &str = "chaos-injected";

/// The routes the `http.handler` point never touches: an operator's means to look and
/// to clear faults.
const OPERATOR_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/slo",
    "/api/v1/workers",
    "/api/v1/outbox",
    "/api/v1/chaos/faults",
    "/api/v1/chaos/faults/{id}",
    "/console",
    "/console/{asset}",
    "/",
];

/// The answer of `GET /api/v1/chaos/faults`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultsReport {
    /// Every fault point, with its effects and its injections since the server started.
    pub points: Vec<PointReport>,
    /// The active faults, oldest first.
    pub faults: Vec<Fault>,
}

/// The answer of `DELETE /api/v1/chaos/faults`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    /// How many faults were active and are now ended.
    pub cleared: usize,
}

/// The fault points and the active faults (a server started with `--chaos`; else 404).
#[utoipa::path(
    get,
    path = "/api/v1/chaos/faults",
    tag = "chaos",
    responses(
        (status = 200, description = "The points and the active faults", body = FaultsReport),
        UnknownFault,
    )
)]
pub(crate) async fn list_faults(State(state): State<AppState>) -> Json<FaultsReport> {
    let chaos = state.chaos();
    Json(FaultsReport {
        points: chaos.points(),
        faults: chaos.faults(),
    })
}

/// Injects a fault: at a point, with an effect (one the point allows), a probability,
/// and an end (a count of injections, a duration, or both).
#[utoipa::path(
    post,
    path = "/api/v1/chaos/faults",
    tag = "chaos",
    request_body = FaultSpec,
    responses(
        (status = 201, description = "The fault, active", body = Fault),
        BadRequest, InvalidFault, UnknownFault,
    )
)]
pub(crate) async fn inject_fault(
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<FaultSpec>,
) -> Result<(StatusCode, Json<Fault>), ApiError> {
    let fault = state.chaos().inject(&spec).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "chaos-fault-invalid",
            "Invalid fault",
            error.to_string(),
        )
    })?;
    Ok((StatusCode::CREATED, Json(fault)))
}

/// Ends every active fault.
#[utoipa::path(
    delete,
    path = "/api/v1/chaos/faults",
    tag = "chaos",
    responses(
        (status = 200, description = "How many faults were ended", body = Cleared),
        UnknownFault,
    )
)]
pub(crate) async fn clear_faults(State(state): State<AppState>) -> Json<Cleared> {
    Json(Cleared {
        cleared: state.chaos().clear(),
    })
}

/// Ends one active fault.
#[utoipa::path(
    delete,
    path = "/api/v1/chaos/faults/{id}",
    tag = "chaos",
    params(("id" = u64, Path, description = "The fault's id")),
    responses(
        (status = 204, description = "The fault is ended"),
        UnknownFault,
    )
)]
pub(crate) async fn remove_fault(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let unknown = || {
        ApiError::not_found(
            "unknown-fault",
            format!("no active fault {id:?} (it ended, was cleared, or never was)"),
        )
    };
    let id: u64 = id.parse().map_err(|_| unknown())?;
    if state.chaos().remove(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown())
    }
}

/// The `http.handler` fault point: a layer around the command and query routes of a
/// server with `--chaos` (never the [`OPERATOR_ROUTES`]). A `delay` waits, then
/// handles the request; a `status_500` answers 500 `chaos-injected` without handling it.
pub(crate) async fn http_handler(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let operator = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|matched| OPERATOR_ROUTES.contains(&matched.as_str()));
    if operator {
        return next.run(request).await;
    }
    match state.chaos().check(Point::HttpHandler) {
        None | Some(Effect::Error | Effect::Panic | Effect::LostAck) => next.run(request).await,
        Some(Effect::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Effect::Status500) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            CHAOS_INJECTED,
            "Internal server error",
            format!(
                "a fault injected at {} answered this request with a 500 (annals serve \
                 --chaos); the request was not handled",
                Point::HttpHandler
            ),
        )
        .into_response(),
    }
}

/// Makes `annals_chaos_injections_total{point}` show 0 for every point before any
/// injection, so that dashboards see the family of a server with `--chaos`.
pub(crate) fn register_metrics() {
    metrics::describe_counter!(
        "annals_chaos_injections_total",
        "Faults injected at each fault point (annals serve --chaos)."
    );
    for point in Point::ALL {
        metrics::counter!("annals_chaos_injections_total", "point" => point.name()).increment(0);
    }
}
