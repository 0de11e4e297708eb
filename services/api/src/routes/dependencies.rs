//! `GET /api/v1/dependencies`: the external services this server calls and the state of
//! each one's circuit breaker. Today the payment providers (`annals serve --psp-url`),
//! in chain order; the chain itself runs in the fulfilment saga, the API only reads it
//! ([`AppState::with_payment_providers`]).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// One external dependency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyReport {
    /// The dependency: a payment provider's base URL.
    #[schema(example = "http://psp-a.internal:8080")]
    pub name: String,
    /// What it is: `payment-provider`.
    #[schema(example = "payment-provider")]
    pub kind: &'static str,
    /// Its place in its chain, from 0 (asked first).
    pub rank: usize,
    /// Its circuit breaker: `closed` (called), `open` (skipped until `next_probe`) or
    /// `half_open` (one probe under way).
    #[schema(value_type = String, example = "closed")]
    pub state: psp::BreakerState,
    /// Calls failed in a row (after their retries); the breaker opens at the threshold.
    pub consecutive_failures: u32,
    /// Calls failed since the server started.
    pub failures_total: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339).
    pub last_error_at: Option<DateTime<Utc>>,
    /// While the breaker is open: when one probe will be let through (RFC 3339).
    pub next_probe: Option<DateTime<Utc>>,
    /// Times the breaker entered each state since the server started.
    pub transitions: TransitionsReport,
}

/// Times a breaker entered each state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct TransitionsReport {
    /// To closed.
    pub closed: u64,
    /// To open.
    pub open: u64,
    /// To half-open.
    pub half_open: u64,
}

/// The answer of `GET /api/v1/dependencies`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependenciesReport {
    /// Every dependency, in chain order; empty when the server calls none.
    pub dependencies: Vec<DependencyReport>,
}

impl From<psp::DependencyStatus> for DependencyReport {
    fn from(status: psp::DependencyStatus) -> Self {
        DependencyReport {
            name: status.name,
            kind: "payment-provider",
            rank: status.rank,
            state: status.state,
            consecutive_failures: status.consecutive_failures,
            failures_total: status.failures_total,
            last_error: status.last_error,
            last_error_at: status.last_error_at,
            next_probe: status.next_probe,
            transitions: TransitionsReport {
                closed: status.transitions.closed,
                open: status.transitions.open,
                half_open: status.transitions.half_open,
            },
        }
    }
}

/// The external services this server calls (the payment providers, in chain order):
/// each one's circuit breaker state, failures, last error and next probe.
///
/// Always 200; an empty list when the server runs without `--psp-url`.
#[utoipa::path(
    get,
    path = "/api/v1/dependencies",
    tag = "operations",
    responses((status = 200, description = "Every dependency's breaker", body = DependenciesReport))
)]
pub(crate) async fn list_dependencies(State(state): State<AppState>) -> Json<DependenciesReport> {
    let dependencies = state
        .payment_providers()
        .map(psp::Chain::dependencies)
        .unwrap_or_default()
        .into_iter()
        .map(DependencyReport::from)
        .collect();
    Json(DependenciesReport { dependencies })
}
