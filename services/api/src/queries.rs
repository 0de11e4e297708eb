//! What the query routes (`GET`) share: store reads on tokio's blocking pool (reads of
//! the store are synchronous), an aggregate folded from its stream, a view answered
//! with its version as the `ETag` (304 when the client has it), and page lengths.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventstore::{Aggregate, Loaded, Repository, Version};
use serde::Serialize;

use crate::AppState;
use crate::extract::{etag, if_none_match};
use crate::problem::ApiError;

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
