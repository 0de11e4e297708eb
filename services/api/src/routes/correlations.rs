//! `GET /api/v1/correlations/{correlation_id}` (tag `log`): every event of one business
//! transaction (the events whose metadata carries the correlation id), in log order.
//!
//! The positions come from the `correlations` read model
//! ([`read_models::correlations`]), never from a scan of the log; the events are then
//! read by position. The answer is as of the read model's checkpoint: an event appended
//! a moment ago may not be listed yet.
//!
//! The read model is kept only by a server started with `--correlations` (it applies
//! nearly every event); any other answers 404 `correlations-not-kept`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use eventstore::Position;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::events::EventView;
use crate::extract::QueryParams;
use crate::problem::{ApiError, correlations_not_kept, projections_not_running};
use crate::queries::{blocking, page_limit};
use crate::responses::{BadRequest, CorrelationsNotKept, ProjectionsUnavailable};

/// How many events to answer.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CorrelationQuery {
    /// How many events at most: 1 to 1000, 100 by default.
    limit: Option<usize>,
}

/// The events of one correlation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelatedEvents {
    /// The correlation id.
    pub correlation_id: String,
    /// Its events, in log order (empty for an id no event carries).
    pub events: Vec<EventView>,
    /// Whether it has more events than `limit`.
    pub more: bool,
}

/// Every event whose metadata `correlation_id` is this id, in log order, at most `limit`
/// of them (from the `correlations` read model, as of its checkpoint). A server started
/// without `--correlations` keeps no such read model and answers 404
/// `correlations-not-kept`.
#[utoipa::path(
    get,
    path = "/api/v1/correlations/{correlation_id}",
    tag = "log",
    params(("correlation_id" = String, Path, description = "The correlation id (a UUID)"), CorrelationQuery),
    responses(
        (status = 200, description = "The correlation's events", body = CorrelatedEvents),
        BadRequest, CorrelationsNotKept, ProjectionsUnavailable,
    )
)]
pub(crate) async fn correlated_events(
    State(state): State<AppState>,
    Path(text): Path<String>,
    QueryParams(query): QueryParams<CorrelationQuery>,
) -> Result<Response, ApiError> {
    let correlation_id = crate::extract::parse_uuid(&text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-id",
            format!(
                "invalid correlation id {:?}: correlation ids are UUIDs",
                text.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let limit = page_limit(&state, query.limit)?;
    let read_side = state
        .projections()
        .cloned()
        .ok_or_else(projections_not_running)?;
    if !read_side.keeps_correlations() {
        return Err(correlations_not_kept());
    }
    let (positions, more) =
        tokio::task::spawn_blocking(move || read_side.correlated(correlation_id.as_bytes(), limit))
            .await
            .map_err(|error| ApiError::internal(&error))??;
    let store = state.store().clone();
    let key_store = state.key_store().cloned();
    let events = blocking(move || {
        let mut events = Vec::with_capacity(positions.len());
        for position in positions {
            events.extend(
                store
                    .read_all(Position(position), 1)?
                    .iter()
                    .map(|event| EventView::marked(event, key_store.as_ref())),
            );
        }
        Ok(events)
    })
    .await?;
    Ok(axum::Json(CorrelatedEvents {
        correlation_id: correlation_id.hyphenated().to_string(),
        events,
        more,
    })
    .into_response())
}
