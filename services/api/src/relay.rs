//! The outbox relay route: `GET /api/v1/outbox`, and the relay's health as `/readyz`
//! reports it.
//!
//! The relay itself runs in the server (`annals serve --nats-url`); the API only reads
//! the [`outbox::StatusHandle`] given to [`AppState::with_relay`].

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use eventstore::Position;
use outbox::{BreakerState, Health, RelayState, RelayStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

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

impl From<Health> for OutboxHealth {
    fn from(health: Health) -> Self {
        match health {
            Health::Healthy => OutboxHealth {
                status: "healthy",
                reason: None,
            },
            Health::Degraded { reason } => OutboxHealth {
                status: "degraded",
                reason: Some(reason),
            },
            Health::Stopped => OutboxHealth {
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
