//! What the query routes (`GET`) share: store reads on tokio's blocking pool (reads of
//! the store are synchronous), an aggregate folded from its stream, a view answered
//! with its version as the `ETag` (304 when the client has it), page lengths, and
//! read-your-writes for a read of one entity from the log ([`read_your_writes`]).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventstore::{Aggregate, Loaded, Repository, Version};
use serde::Serialize;

use crate::AppState;
use crate::extract::{etag, if_none_match};
use crate::problem::ApiError;
use crate::routes::read_models::min_position;

/// Runs a read of the store on the blocking pool; for a request of the bulk lane, on the
/// low-priority threads ([`eventstore::low_priority`]), where it gives way to commands.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, eventstore::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let running = if crate::lanes::current() == Some(crate::lanes::Lane::Bulk) {
        eventstore::low_priority::spawn_blocking(work)
    } else {
        tokio::task::spawn_blocking(work)
    };
    running
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(ApiError::from)
}

/// Folds the aggregate `id` from its stream: on the worker if its events are in the page
/// cache, else on the store's bounded blocking pool ([`Repository::load_async`]).
pub(crate) async fn load<A: Aggregate>(
    repository: &Repository<A>,
    id: String,
) -> Result<Loaded<A>, ApiError> {
    Ok(repository.load_async(&id).await?)
}

/// A view with its version as the `ETag`; 304 if the client has that version.
pub(crate) fn entity_response<T: Serialize>(
    headers: &HeaderMap,
    version: Version,
    view: &T,
) -> Response {
    let tag = HeaderValue::from_str(&etag(version)).ok();
    let mut response = if if_none_match(headers, version) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(view).into_response()
    };
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// The page length asked for, checked against the configured bound.
pub(crate) fn page_limit(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
    let max = state.config().max_page_events;
    match limit {
        None => Ok(state.config().default_page_events.clamp(1, max)),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {max}, not {limit}"),
        )),
    }
}

/// The query of a read of one entity from the log (an order, a sku, an account, a
/// saga, a customer's profile).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EntityQuery {
    /// Wait until this node's log holds the event at this position (the `position` a
    /// command answered, on this node or another of the cluster). Same as the
    /// `Annals-Min-Position` header.
    pub(crate) min_position: Option<u64>,
}

/// Read-your-writes for a read of one entity from the log: with `min_position` (the
/// query's, else the `Annals-Min-Position` header's), waits until this node's log holds
/// that position. On one machine it does once a command answered it; on a node of a
/// cluster (the log on JetStream) the node's copy may trail the node that took the
/// command, by its follower's lag. Not in time ([`crate::ApiConfig::projection_wait_timeout`]):
/// a 503 `projection-lagging` with the log's `checkpoint` (also in the `Annals-Checkpoint`
/// header, as a lagging read model answers) and `Retry-After`.
pub(crate) async fn read_your_writes(
    state: &AppState,
    query: Option<u64>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    match min_position(query, headers)? {
        Some(wanted) => wait_for_log(state, wanted).await,
        None => Ok(()),
    }
}

async fn wait_for_log(state: &AppState, wanted: u64) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + state.config().projection_wait_timeout;
    loop {
        if state.store().next_position().0 > wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let checkpoint = state.store().next_position().0;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection-lagging",
                "Service unavailable",
                format!("position {wanted} is not in this node's log yet"),
            )
            .with_checkpoint(checkpoint)
            .with_header(
                header::HeaderName::from_static(crate::problem::CHECKPOINT_HEADER),
                HeaderValue::from(checkpoint),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
