//! The `log` routes: one stream, the whole log and the list of streams, page by page;
//! one event by id; and the log followed live as Server-Sent Events.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eventstore::{Direction, Position, Subscription, Version};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::events::EventView;
use crate::extract::{
    EventIdPath, QueryParams, StreamPath, check_position, check_stream_id, position_header,
};
use crate::problem::ApiError;
use crate::queries::{blocking, page_limit};
use crate::responses::{
    BadRequest, PositionBeyondEnd, UnfoldableStream, UnknownEvent, UnknownStream,
};

/// A page of one stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPage {
    /// The stream.
    pub stream: String,
    /// The stream's last version now.
    pub last_version: u64,
    /// The events, oldest first.
    pub events: Vec<EventView>,
    /// The `from` of the next page.
    pub next_from: u64,
}

/// A page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// The events, in position order.
    pub events: Vec<EventView>,
    /// The `from` of the next page.
    pub next_from: u64,
    /// The position the next appended event will get: the end of the log now.
    pub next_position: u64,
}

/// A page of the streams of the log, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    /// Each stream with its last version, sorted by name.
    pub streams: Vec<StreamHead>,
    /// Pass as `after` for the next page; absent (null) on the last page.
    pub next_after: Option<String>,
}

/// One stream and its last version.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamHead {
    /// The stream.
    pub stream: String,
    /// Its last version (its event count minus one).
    pub last_version: u64,
}

/// Which streams to list, and which page of them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamsQuery {
    /// Only streams of this category (the part of the id before the first `-`).
    category: Option<String>,
    /// Start after this stream (the `next_after` of the previous page).
    after: Option<String>,
    /// How many streams at most: 1 to 1000, 100 by default.
    limit: Option<usize>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// The first version (streams) or position (log) to return; 0 by default.
    from: Option<u64>,
    /// How many events at most: 1 to 1000, 100 by default.
    limit: Option<usize>,
}

/// Up to which version to fold a stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StateQuery {
    /// The last version to fold (0-based, included); by default the stream's head.
    version: Option<u64>,
}

/// An aggregate's state folded from its stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamState {
    /// The stream.
    pub stream: String,
    /// The category whose aggregate folded it: `order`, `stock`, `account` or
    /// `saga-fulfilment`.
    pub category: String,
    /// The last version folded.
    pub version: u64,
    /// The aggregate's state after that version (a saga's: `finished`, `state`,
    /// `pending_commands`, `pending_deadlines`).
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

/// Where to start following the log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveQuery {
    /// The first position to send; by default the end of the log (new events only).
    /// A `Last-Event-ID` header (a position) resumes after it instead.
    from: Option<u64>,
}

/// Events of one stream, oldest first, from a version.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{stream_id}",
    tag = "log",
    params(("stream_id" = String, Path, description = "The stream, e.g. order-<uuid>"), PageQuery),
    responses(
        (status = 200, description = "A page of the stream", body = StreamPage),
        BadRequest, UnknownStream,
    )
)]
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    let from = check_position("from", query.from.unwrap_or(0))?;
    let store = state.store().clone();
    let read_stream = stream.clone();
    // The page is read and encoded on the blocking pool: a page of 1,000 events is
    // milliseconds of CPU that would otherwise hold an async worker from the commands.
    let page = blocking(move || {
        let Some(head) = store.stream_head(&read_stream)? else {
            return Ok(None);
        };
        let events = store.read_stream(&read_stream, Version(from), Direction::Forward, limit)?;
        let next_from = events.last().map_or(from, |event| event.version.0 + 1);
        let page = StreamPage {
            stream: read_stream.to_string(),
            last_version: head.0,
            events: events
                .iter()
                .map(|event| EventView::marked(event, state.key_store()))
                .collect(),
            next_from,
        };
        Ok(Some(encoded(&page)))
    })
    .await?;
    match page {
        Some(page) => Ok(json_bytes(page)),
        None => Err(ApiError::not_found(
            "unknown-stream",
            format!("stream {stream} has no events"),
        )),
    }
}

/// The state of a stream's aggregate (or saga instance) folded from its events up to
/// and including `version` (by default its head): the fold `annals replay stream` uses,
/// chosen by the stream's category.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{stream_id}/state",
    tag = "log",
    params(("stream_id" = String, Path, description = "The stream, e.g. order-<uuid>"), StateQuery),
    responses(
        (status = 200, description = "The state at that version", body = StreamState),
        BadRequest, UnknownStream, UnfoldableStream,
    )
)]
pub(crate) async fn stream_state(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(query): QueryParams<StateQuery>,
) -> Result<Response, ApiError> {
    let store = state.store().clone();
    let read_stream = stream.clone();
    let head = blocking(move || store.stream_head(&read_stream)).await?;
    let Some(head) = head else {
        return Err(ApiError::not_found(
            "unknown-stream",
            format!("stream {stream} has no events"),
        ));
    };
    let unfoldable = |slug, detail: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            slug,
            "Unprocessable entity",
            detail,
        )
    };
    let Some((category, fold)) = crate::replay::fold_for(&stream) else {
        return Err(unfoldable(
            "no-aggregate",
            format!(
                "no aggregate owns the category of {stream}: the streams with a state are {}",
                crate::replay::known_prefixes().join(", ")
            ),
        ));
    };
    let version = check_position("version", query.version.unwrap_or(head.0))?;
    if version > head.0 {
        return Err(unfoldable(
            "version-beyond-head",
            format!(
                "stream {stream} has no version {version}: its last version is {}",
                head.0
            ),
        ));
    }
    let store = state.store().clone();
    let folded = blocking(move || {
        let mut events = Vec::new();
        let mut from = Version(0);
        while from.0 <= version {
            let wanted = usize::try_from(version - from.0 + 1).unwrap_or(usize::MAX);
            let page = store.read_stream(&stream, from, Direction::Forward, wanted.min(1024))?;
            let Some(last) = page.last() else { break };
            from = last.version.next();
            events.extend(page);
        }
        let to_fold: Vec<crate::replay::FoldEvent<'_>> = events
            .iter()
            .map(|event| crate::replay::FoldEvent {
                version: event.version.0,
                position: event.position.0,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: crate::replay::Payload::Raw(&event.payload),
            })
            .collect();
        Ok((stream.to_string(), fold(&stream, &to_fold)))
    })
    .await?;
    let (stream, folded) = folded;
    let mut folded = folded.map_err(|error| {
        tracing::error!(%error, stream, "a stream could not be folded");
        ApiError::internal(&error)
    })?;
    // The state holds sealed values as the events do: marked, never opened.
    crate::personal_data::mark_erased(state.key_store(), &mut folded);
    Ok(axum::Json(StreamState {
        stream,
        category: category.to_owned(),
        version,
        state: folded,
    })
    .into_response())
}

/// The streams with their last versions, page by page in name order, optionally of one
/// category only. Follow `next_after` (as `after`) until it is null.
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "log",
    params(StreamsQuery),
    responses(
        (status = 200, description = "A page of the streams, sorted by name; `after` is a stream id", body = StreamList),
        BadRequest,
    )
)]
pub(crate) async fn list_streams(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<StreamsQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    if let Some(after) = &query.after {
        check_stream_id("after", after).map_err(|error| {
            ApiError::bad_request(
                "invalid-query",
                format!("after is not a stream id: {}", error.problem().detail),
            )
        })?;
    }
    let store = state.store().clone();
    let (heads, more) = blocking(move || {
        store.streams_page(query.category.as_deref(), query.after.as_deref(), limit)
    })
    .await?;
    let next_after = match heads.last() {
        Some((stream, _)) if more => Some(stream.to_string()),
        _ => None,
    };
    Ok(axum::Json(StreamList {
        streams: heads
            .into_iter()
            .map(|(stream, version)| StreamHead {
                stream: stream.to_string(),
                last_version: version.0,
            })
            .collect(),
        next_after,
    })
    .into_response())
}

/// One event, by its id.
#[utoipa::path(
    get,
    path = "/api/v1/events/{event_id}",
    tag = "log",
    params(("event_id" = String, Path, description = "The event id (a UUID v7)")),
    responses(
        (status = 200, description = "The event", body = EventView),
        BadRequest, UnknownEvent,
    )
)]
pub(crate) async fn get_event(
    State(state): State<AppState>,
    EventIdPath(id): EventIdPath,
) -> Result<Response, ApiError> {
    let found = state
        .store()
        .read_cached_or_blocking(move |store| store.read_event(&id))
        .await?;
    match found {
        Some(event) => Ok(axum::Json(EventView::marked(&event, state.key_store())).into_response()),
        None => Err(ApiError::not_found(
            "unknown-event",
            format!("no event has the id {id}"),
        )),
    }
}

/// Events of the whole log, in position order, from a position.
#[utoipa::path(
    get,
    path = "/api/v1/log",
    tag = "log",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the log", body = LogPage),
        BadRequest,
    )
)]
pub(crate) async fn read_log(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    let from = check_position("from", query.from.unwrap_or(0))?;
    let store = state.store().clone();
    // Read and encoded on the blocking pool, as a stream's page is.
    let page = blocking(move || {
        let next_position = store.next_position();
        let events = store.read_all(Position(from), limit)?;
        let next_from = events.last().map_or(from, |event| event.position.0 + 1);
        Ok(encoded(&LogPage {
            events: events
                .iter()
                .map(|event| EventView::marked(event, state.key_store()))
                .collect(),
            next_from,
            next_position: next_position.0,
        }))
    })
    .await?;
    Ok(json_bytes(page))
}

/// The log as it grows, as Server-Sent Events: each event's `id` is its position and
/// its `data` the event as JSON. Events already in the log from `from` come first, then
/// new ones as they become durable. An `error` event (a problem) ends the stream.
#[utoipa::path(
    get,
    path = "/api/v1/log/live",
    tag = "log",
    params(LiveQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position")),
    responses(
        (status = 200, description = "The log, live", content_type = "text/event-stream", body = EventView),
        BadRequest, PositionBeyondEnd,
    )
)]
pub(crate) async fn follow_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_event_id = position_header(&headers, "last-event-id", "Last-Event-ID")?;
    // Checked even when Last-Event-ID takes precedence: a request the document forbids
    // is refused whatever else it carries.
    let query_from = query
        .from
        .map(|from| check_position("from", from))
        .transpose()?;
    let end = state.store().next_position();
    let from = match (last_event_id, query_from) {
        (Some(last), _) => last.saturating_add(1),
        (None, Some(from)) => from,
        (None, None) => end.0,
    };
    if from > end.0 {
        // Well formed, but the log has not reached it: a 422, as a version beyond a
        // stream's head is (the document cannot state a bound that moves).
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "position-beyond-end",
            "Unprocessable entity",
            format!("from {from} is beyond the end of the log ({end})"),
        ));
    }
    let follow = Follow {
        subscription: state.store().subscribe(Position(from)),
        shutdown: state.shutdown_token(),
        done: false,
        key_store: state.key_store().cloned(),
    };
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        if follow.done {
            return None;
        }
        let next = tokio::select! {
            _ = follow.shutdown.cancelled() => return None,
            next = follow.subscription.next() => next?,
        };
        let event = match next {
            Ok(event) => Event::default()
                .id(event.position.to_string())
                .json_data(EventView::marked(&event, follow.key_store.as_ref()))
                .unwrap_or_else(|error| error_event(ApiError::internal(&error))),
            Err(error) => {
                follow.done = true;
                error_event(ApiError::from(error))
            }
        };
        Some((Ok(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One live subscriber: the store's subscription and the server's shutdown signal.
struct Follow {
    subscription: Subscription,
    shutdown: CancellationToken,
    done: bool,
    /// The server's key store, to mark erased values (never to open them).
    key_store: Option<privacy::KeyStore>,
}

fn error_event(error: ApiError) -> Event {
    Event::default()
        .event("error")
        .data(String::from_utf8_lossy(&error.body()))
}

/// `page` as JSON text (a page of views always encodes).
fn encoded(page: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(page).expect("a page encodes as JSON")
}

/// A 200 with `body`, JSON text.
fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
