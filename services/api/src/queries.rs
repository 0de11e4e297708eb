//! The query routes (`GET`): one aggregate folded from its stream (with its version as
//! the `ETag`), a stream or the whole log page by page, and the log followed live as
//! Server-Sent Events.
//!
//! Reads of the store are synchronous; they run on tokio's blocking pool.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eventstore::{Aggregate, Direction, Loaded, Position, Repository, Subscription, Version};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::events::EventView;
use crate::extract::{
    CustomerPath, EventIdPath, OrderPath, QueryParams, SkuPath, StreamPath, etag, if_none_match,
};
use crate::problem::{ApiError, Problem};

/// A sku and its stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkuView {
    /// The sku.
    pub sku: String,
    /// Its display name.
    pub name: String,
    /// The price of one unit, in minor units.
    pub unit_price: u64,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: u64,
    /// Units held by open reservations.
    pub reserved: u64,
    /// Units that can still be reserved.
    pub available: u64,
    /// Open reservations by order id.
    pub reservations: BTreeMap<String, ReservationView>,
    /// The stream version this state is folded to (also the `ETag`).
    pub version: u64,
}

/// One order's hold on a sku.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    /// Units held.
    pub quantity: u64,
    /// The unit price when reserved, in minor units.
    pub unit_price: u64,
}

/// A customer's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// The customer.
    pub customer_id: String,
    /// The balance, in minor units.
    pub balance: u64,
    /// Charges by order id.
    pub charges: BTreeMap<String, ChargeView>,
    /// The stream version this state is folded to (also the `ETag`).
    pub version: u64,
}

/// One order's charge.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    /// The amount charged, in minor units.
    pub amount: u64,
    /// Whether it was refunded.
    pub refunded: bool,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    /// The order id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
    /// What was ordered.
    pub lines: Vec<orders::OrderLine>,
    /// The amount charged once confirmed, in minor units.
    pub total: Option<u64>,
    /// Why it was cancelled, once cancelled.
    pub cancel_reason: Option<String>,
    /// The stream version this state is folded to (also the `ETag`).
    pub version: u64,
}

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

/// The streams of the log, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    /// Each stream with its last version, sorted by name.
    pub streams: Vec<StreamHead>,
}

/// One stream and its last version.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamHead {
    /// The stream.
    pub stream: String,
    /// Its last version (its event count minus one).
    pub last_version: u64,
}

/// Which streams to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamsQuery {
    /// Only streams of this category (the part of the id before the first `-`).
    category: Option<String>,
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

/// Where to start following the log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveQuery {
    /// The first position to send; by default the end of the log (new events only).
    /// A `Last-Event-ID` header (a position) resumes after it instead.
    from: Option<u64>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, eventstore::Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(ApiError::from)
}

async fn load<A: Aggregate>(repository: &Repository<A>, id: String) -> Result<Loaded<A>, ApiError> {
    let repository = repository.clone();
    blocking(move || repository.load(&id)).await
}

/// A view with its version as the `ETag`; 304 if the client has that version.
fn entity_response<T: Serialize>(headers: &HeaderMap, version: Version, view: &T) -> Response {
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

/// One sku and its stock.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/skus/{sku}",
    tag = "inventory",
    params(("sku" = String, Path, description = "The sku")),
    responses(
        (status = 200, description = "The sku", body = SkuView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        (status = 304, description = "Unchanged since the If-None-Match version"),
        (status = 400, description = "Bad sku", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown sku", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_sku(
    State(state): State<AppState>,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let loaded = load(&state.inner.stock, sku.clone()).await?;
    let (stock, Some(version)) = (loaded.state, loaded.version) else {
        return Err(unknown_sku(&sku));
    };
    if !stock.is_registered() {
        return Err(unknown_sku(&sku));
    }
    let view = SkuView {
        sku: stock.sku().to_owned(),
        name: stock.name().to_owned(),
        unit_price: stock.unit_price(),
        on_hand: stock.on_hand(),
        reserved: stock.reserved(),
        available: stock.available(),
        reservations: stock
            .reservations()
            .iter()
            .map(|(order, held)| {
                let view = ReservationView {
                    quantity: held.quantity,
                    unit_price: held.unit_price,
                };
                (order.clone(), view)
            })
            .collect(),
        version: version.0,
    };
    Ok(entity_response(&headers, version, &view))
}

fn unknown_sku(sku: &str) -> ApiError {
    ApiError::not_found("unknown-sku", format!("sku {sku:?} is not registered"))
}

/// One customer's account.
#[utoipa::path(
    get,
    path = "/api/v1/payments/accounts/{customer_id}",
    tag = "payments",
    params(("customer_id" = String, Path, description = "The customer")),
    responses(
        (status = 200, description = "The account", body = AccountView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        (status = 304, description = "Unchanged since the If-None-Match version"),
        (status = 400, description = "Bad customer id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let loaded = load(&state.inner.accounts, customer_id.clone()).await?;
    let unknown = || {
        ApiError::not_found(
            "unknown-account",
            format!("customer {customer_id:?} has no account"),
        )
    };
    let (account, Some(version)) = (loaded.state, loaded.version) else {
        return Err(unknown());
    };
    if !account.is_open() {
        return Err(unknown());
    }
    let view = AccountView {
        customer_id: account.customer_id().to_owned(),
        balance: account.balance(),
        charges: account
            .charges()
            .iter()
            .map(|(order, charge)| {
                let view = ChargeView {
                    amount: charge.amount,
                    refunded: charge.refunded,
                };
                (order.clone(), view)
            })
            .collect(),
        version: version.0,
    };
    Ok(entity_response(&headers, version, &view))
}

/// One order.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "The order (a UUID)")),
    responses(
        (status = 200, description = "The order", body = OrderView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        (status = 304, description = "Unchanged since the If-None-Match version"),
        (status = 400, description = "Bad order id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    OrderPath(order_id): OrderPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let loaded = load(&state.inner.orders, order_id.clone()).await?;
    let unknown =
        || ApiError::not_found("unknown-order", format!("order {order_id} was not placed"));
    let (order, Some(version)) = (loaded.state, loaded.version) else {
        return Err(unknown());
    };
    if order.status() == orders::OrderStatus::None {
        return Err(unknown());
    }
    let view = OrderView {
        order_id: order.order_id().to_owned(),
        customer_id: order.customer_id().to_owned(),
        status: order.status().to_string(),
        lines: order.lines().to_vec(),
        total: order.total(),
        cancel_reason: order.cancel_reason().map(str::to_owned),
        version: version.0,
    };
    Ok(entity_response(&headers, version, &view))
}

/// The page length asked for, checked against the configured bound.
fn page_limit(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
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

/// Events of one stream, oldest first, from a version.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{stream_id}",
    tag = "log",
    params(("stream_id" = String, Path, description = "The stream, e.g. order-<uuid>"), PageQuery),
    responses(
        (status = 200, description = "A page of the stream", body = StreamPage),
        (status = 400, description = "Bad stream id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    let from = query.from.unwrap_or(0);
    let store = state.store().clone();
    let read_stream = stream.clone();
    let (head, events) = blocking(move || {
        let Some(head) = store.stream_head(&read_stream)? else {
            return Ok((None, Vec::new()));
        };
        let events = store.read_stream(&read_stream, Version(from), Direction::Forward, limit)?;
        Ok((Some(head), events))
    })
    .await?;
    let Some(head) = head else {
        return Err(ApiError::not_found(
            "unknown-stream",
            format!("stream {stream} has no events"),
        ));
    };
    let next_from = events.last().map_or(from, |event| event.version.0 + 1);
    Ok(axum::Json(StreamPage {
        stream: stream.to_string(),
        last_version: head.0,
        events: events.iter().map(EventView::of).collect(),
        next_from,
    })
    .into_response())
}

/// Every stream with its last version, optionally of one category only.
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "log",
    params(StreamsQuery),
    responses(
        (status = 200, description = "The streams, sorted by name", body = StreamList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_streams(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<StreamsQuery>,
) -> Result<Response, ApiError> {
    let store = state.store().clone();
    let heads = blocking(move || store.streams(query.category.as_deref())).await?;
    Ok(axum::Json(StreamList {
        streams: heads
            .into_iter()
            .map(|(stream, version)| StreamHead {
                stream: stream.to_string(),
                last_version: version.0,
            })
            .collect(),
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
        (status = 400, description = "Bad event id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_event(
    State(state): State<AppState>,
    EventIdPath(id): EventIdPath,
) -> Result<Response, ApiError> {
    let store = state.store().clone();
    match blocking(move || store.read_event(&id)).await? {
        Some(event) => Ok(axum::Json(EventView::of(&event)).into_response()),
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
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn read_log(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    let from = query.from.unwrap_or(0);
    let store = state.store().clone();
    let (events, next_position) = blocking(move || {
        let next_position = store.next_position();
        Ok((store.read_all(Position(from), limit)?, next_position))
    })
    .await?;
    let next_from = events.last().map_or(from, |event| event.position.0 + 1);
    Ok(axum::Json(LogPage {
        events: events.iter().map(EventView::of).collect(),
        next_from,
        next_position: next_position.0,
    })
    .into_response())
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
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn follow_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-header",
                        "Last-Event-ID must be a log position (a whole number)",
                    )
                })?,
        ),
    };
    let end = state.store().next_position();
    let from = match (last_event_id, query.from) {
        (Some(last), _) => last.saturating_add(1),
        (None, Some(from)) => from,
        (None, None) => end.0,
    };
    if from > end.0 {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("from {from} is beyond the end of the log ({end})"),
        ));
    }
    let follow = Follow {
        subscription: state.store().subscribe(Position(from)),
        shutdown: state.shutdown_token(),
        done: false,
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
                .json_data(EventView::of(&event))
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
}

fn error_event(error: ApiError) -> Event {
    Event::default()
        .event("error")
        .data(serde_json::to_string(&error.problem()).unwrap_or_default())
}

/// One order's fulfilment saga: its state, the steps it took (every recorded input,
/// in order), the commands and the deadline it waits for.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/fulfilment/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "The order (a UUID)")),
    responses(
        (status = 200, description = "The saga: saga, id, stream, version, finished, \
            state (phase, reserved, charged, cancel_reason, deadline, ...), \
            pending_commands, pending_deadlines, steps", body = Object,
            headers(("ETag" = String, description = "The saga stream's version, quoted"))),
        (status = 400, description = "Bad order id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No saga for this order (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_fulfilment(
    State(state): State<AppState>,
    OrderPath(order_id): OrderPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = state.store().clone();
    let id = order_id.clone();
    let view = blocking(move || sagas::view::load::<sagas::Fulfilment>(&store, &id)).await?;
    match view {
        Some(view) => {
            let version = view.version.unwrap_or(Version(0));
            Ok(entity_response(&headers, version, &view))
        }
        None => Err(ApiError::not_found(
            "unknown-saga",
            format!("no fulfilment saga has started for order {order_id}"),
        )),
    }
}
