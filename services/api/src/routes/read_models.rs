//! The `read models` routes: queries of the read models of [`read_models`]
//! (a customer's orders, stock per sku, the sales report), the projections' status,
//! rebuilds, and poison events (`projections::poison`): the events a projection parked,
//! and retries of them and of a faulted projection.
//!
//! Every query is read-your-writes on request: `?min_position=N` (or the header
//! `Annals-Min-Position: N`), with `N` the `position` a command answered, waits until the
//! read model has applied that event. If it has not within
//! [`crate::ApiConfig::projection_wait_timeout`], the answer is a 503 problem carrying the
//! read model's `checkpoint` (also in the `Annals-Checkpoint` header): retry later.
//!
//! The routes answer 503 when the server runs no projections.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventstore::Position;
use projections::{Error, ParkedEvent, Retried, State as RunState, Status};
use read_models::{
    CustomerOrders, INVENTORY, ORDERS, OrderSummary, ReadSide, SALES, SalesReport, SkuPage,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{
    CustomerPath, MAX_ID_BYTES, QueryParams, check_entity_id, check_position, parse_whole_number,
    position_header,
};
use crate::lanes::HeldSlot;
use crate::problem::{ApiError, projections_not_running};
use crate::queries::page_limit;
use crate::responses::{
    BadRequest, ProjectionsUnavailable, ReadModelUnavailable, UnknownProjection,
};

/// The read-your-writes header: the position a query must see.
pub const MIN_POSITION_HEADER: &str = "annals-min-position";

/// A page of a read model, read-your-writes on request.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadModelQuery {
    /// Start after this key (the `next_after` of the previous page).
    after: Option<String>,
    /// How many items at most: 1 to 1000, 100 by default.
    limit: Option<usize>,
    /// Wait until the read model has applied the event at this position (the `position`
    /// a command answered). Same as the `Annals-Min-Position` header.
    min_position: Option<u64>,
}

/// One projection's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    /// The projection.
    pub name: String,
    /// The version of its code.
    pub version: u32,
    /// The version that built the model answering queries (absent: none yet).
    pub active_version: Option<u32>,
    /// The build number of that model; a rebuild makes a new one.
    pub active_build: Option<u32>,
    /// The active model has applied every event before this position.
    pub checkpoint: u64,
    /// The next position of the log.
    pub head: u64,
    /// Events not yet applied.
    pub lag: u64,
    /// `catching_up`, `live`, `outdated`, `faulted` or `stopped`.
    pub state: String,
    /// Where it stopped, when faulted.
    pub fault_position: Option<u64>,
    /// Why it stopped, when faulted.
    pub fault_error: Option<String>,
    /// The stream of the event it stopped on, when an event caused the fault.
    pub fault_stream: Option<String>,
    /// The type of that event.
    pub fault_event_type: Option<String>,
    /// Events it parked (see `GET /api/v1/projections/{name}/parked`).
    pub parked: u64,
    /// The rebuild in progress, if any.
    pub rebuild: Option<RebuildView>,
}

/// A rebuild in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildView {
    /// The version being built.
    pub version: u32,
    /// Its build number.
    pub build: u32,
    /// How far it has come (exclusive).
    pub checkpoint: u64,
    /// Where it stopped, if it faulted.
    pub fault_position: Option<u64>,
}

/// Every projection's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionList {
    /// The projections, by name.
    pub projections: Vec<ProjectionView>,
}

/// A rebuild started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    /// The projection.
    pub name: String,
    /// The version being built.
    pub version: u32,
    /// Its build number: the `active_build` once it has taken over.
    pub build: u32,
}

/// An event a projection could not apply and parked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedView {
    /// Its position in the log.
    pub position: u64,
    /// Its stream.
    pub stream: String,
    /// Its type.
    pub event_type: String,
    /// Why it could not be applied (the last attempt's error).
    pub error: String,
    /// When it was parked (or last retried), RFC 3339, UTC.
    pub parked_at: String,
}

impl ParkedView {
    fn of(parked: ParkedEvent) -> Self {
        ParkedView {
            position: parked.position.0,
            stream: parked.stream,
            event_type: parked.event_type,
            error: parked.error,
            parked_at: chrono::DateTime::from_timestamp_micros(parked.parked_at_micros)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

/// The events one projection parked, in position order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedList {
    /// The projection.
    pub name: String,
    /// Its parked events.
    pub parked: Vec<ParkedView>,
}

/// What a retry did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryOutcome {
    /// The projection.
    pub name: String,
    /// Whether a faulted projection (or faulted rebuild) started again from the event it
    /// had failed on.
    pub resumed: bool,
    /// Parked events applied again (only while the projection is live or faulted).
    pub retried: u64,
    /// Of those, how many were applied and left the list.
    pub applied: u64,
    /// Parked events still on the list.
    pub parked: u64,
}

impl ProjectionView {
    fn of(status: Status) -> Self {
        let fault = status.state.fault();
        let state = match status.state {
            RunState::CatchingUp => "catching_up",
            RunState::Live => "live",
            RunState::Outdated => "outdated",
            RunState::Faulted { .. } => "faulted",
            RunState::Stopped => "stopped",
        };
        let (fault_position, fault_error, fault_stream, fault_event_type) = match fault {
            Some(fault) => (
                Some(fault.position.0),
                Some(fault.error),
                fault.stream,
                fault.event_type,
            ),
            None => (None, None, None, None),
        };
        ProjectionView {
            name: status.name,
            version: status.version,
            active_version: status.active_version,
            active_build: status.active_build,
            checkpoint: status.checkpoint.0,
            head: status.head.0,
            lag: status.lag,
            state: state.to_owned(),
            fault_position,
            fault_error,
            fault_stream,
            fault_event_type,
            parked: status.parked,
            rebuild: status.rebuild.map(|rebuild| RebuildView {
                version: rebuild.version,
                build: rebuild.build,
                checkpoint: rebuild.checkpoint.0,
                fault_position: rebuild.fault.map(|fault| fault.position.0),
            }),
        }
    }
}

fn projections(state: &AppState) -> Result<ReadSide, ApiError> {
    state
        .projections()
        .cloned()
        .ok_or_else(projections_not_running)
}

/// The position to wait for: the query's `min_position`, else the header's.
pub(crate) fn min_position(
    query: Option<u64>,
    headers: &HeaderMap,
) -> Result<Option<u64>, ApiError> {
    let header = position_header(headers, MIN_POSITION_HEADER, "Annals-Min-Position")?;
    match query {
        Some(position) => check_position("min_position", position).map(Some),
        None => Ok(header),
    }
}

/// Checks the query, waits for `min_position` on `model`, then runs `read` on the
/// blocking pool.
async fn query<T: Serialize + Send + 'static>(
    state: &AppState,
    model: &'static str,
    headers: &HeaderMap,
    wanted: Option<u64>,
    read: impl FnOnce(&ReadSide) -> Result<T, Error> + Send + 'static,
) -> Result<Response, ApiError> {
    let wanted = min_position(wanted, headers)?;
    let projections = projections(state)?;
    if let Some(wanted) = wanted {
        let timeout = state.config().projection_wait_timeout;
        projections
            .wait_for_model(model, Position(wanted), timeout)
            .await?;
    }
    let answer = tokio::task::spawn_blocking(move || read(&projections))
        .await
        .map_err(|error| ApiError::internal(&error))?;
    Ok(Json(answer?).into_response())
}

/// One customer's orders, oldest first, from the `orders` read model.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customer_id}/orders",
    tag = "read models",
    params(
        ("customer_id" = String, Path, description = "The customer"),
        ReadModelQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this position is applied"),
    ),
    responses(
        (status = 200, description = "A page of the customer's orders; `after` is an order number", body = CustomerOrdersView),
        BadRequest, ReadModelUnavailable,
    )
)]
pub(crate) async fn customer_orders(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    headers: HeaderMap,
    QueryParams(params): QueryParams<ReadModelQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, params.limit)?;
    let after = match params.after.as_deref() {
        None => None,
        Some(after) => Some(parse_whole_number(after).ok_or_else(|| {
            ApiError::bad_request(
                "invalid-query",
                "after must be an order number (1 to 19 digits)",
            )
        })?),
    };
    let key_store = state.key_store().cloned();
    query(&state, ORDERS, &headers, params.min_position, move |p| {
        let page = p.customer_orders(&customer_id, after, limit)?;
        Ok(CustomerOrdersView::open(page, key_store.as_ref()))
    })
    .await
}

/// One page of a customer's orders as the API serves it: the read model's page, each
/// order's shipping address opened (the read model keeps it sealed).
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerOrdersView {
    /// The customer.
    pub customer_id: String,
    /// How many orders the customer has placed in all.
    pub total_orders: u64,
    /// The orders of this page.
    pub orders: Vec<OrderSummaryView>,
    /// Pass as `after` for the next page; absent on the last page. Orders are numbered
    /// from 0 in the order they were placed.
    pub next_after: Option<u64>,
}

/// One order of [`CustomerOrdersView`]: the read model's summary and its shipping
/// address.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderSummaryView {
    #[serde(flatten)]
    #[schema(inline)]
    summary: OrderSummary,
    /// Where to ship: null without one, once erased, or if it cannot be read (reported).
    shipping_address: Option<String>,
    /// Whether the shipping address was erased (the customer's keys destroyed).
    erased: bool,
}

impl CustomerOrdersView {
    fn open(page: CustomerOrders, key_store: Option<&privacy::KeyStore>) -> Self {
        let orders = page
            .orders
            .into_iter()
            .map(|summary| {
                let opened = match (&summary.shipping_address, key_store) {
                    (Some(field), Some(key_store)) => Some(crate::personal_data::open(
                        key_store,
                        &field.sealed,
                        &field.binding(),
                    )),
                    _ => None,
                };
                OrderSummaryView {
                    shipping_address: opened.as_ref().and_then(|opened| opened.value.clone()),
                    erased: opened.is_some_and(|opened| opened.erased_at.is_some()),
                    summary,
                }
            })
            .collect();
        CustomerOrdersView {
            customer_id: page.customer_id,
            total_orders: page.total_orders,
            orders,
            next_after: page.next_after,
        }
    }
}

fn check_after(after: Option<&str>) -> Result<(), ApiError> {
    match after {
        Some(after) if after.len() > MAX_ID_BYTES => Err(ApiError::bad_request(
            "invalid-query",
            "after is longer than 64 bytes",
        )),
        Some(after) if !after.is_empty() => check_entity_id("after", after),
        _ => Ok(()),
    }
}

/// Stock per sku, in sku order, from the `inventory` read model.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/skus",
    tag = "read models",
    params(
        ReadModelQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this position is applied"),
    ),
    responses(
        (status = 200, description = "A page of skus", body = SkuPage),
        BadRequest, ReadModelUnavailable,
    )
)]
pub(crate) async fn list_skus(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<ReadModelQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, params.limit)?;
    check_after(params.after.as_deref())?;
    let after = params.after;
    query(&state, INVENTORY, &headers, params.min_position, move |p| {
        p.skus(after.as_deref(), limit)
    })
    .await
}

/// Sales of confirmed orders per sku, in sku order, and the grand totals.
#[utoipa::path(
    get,
    path = "/api/v1/reports/sales",
    tag = "read models",
    params(
        ReadModelQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this position is applied"),
    ),
    responses(
        (status = 200, description = "A page of the sales report", body = SalesReport),
        BadRequest, ReadModelUnavailable,
    )
)]
pub(crate) async fn sales_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<ReadModelQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(&state, params.limit)?;
    check_after(params.after.as_deref())?;
    let after = params.after;
    query(&state, SALES, &headers, params.min_position, move |p| {
        p.sales(after.as_deref(), limit)
    })
    .await
}

/// Every projection: active version and build, checkpoint, lag and state.
#[utoipa::path(
    get,
    path = "/api/v1/projections",
    tag = "read models",
    responses(
        (status = 200, description = "The projections", body = ProjectionList),
        ProjectionsUnavailable,
    )
)]
pub(crate) async fn list_projections(
    State(state): State<AppState>,
) -> Result<Json<ProjectionList>, ApiError> {
    let projections = projections(&state)?;
    Ok(Json(ProjectionList {
        projections: projections
            .status()
            .into_iter()
            .map(ProjectionView::of)
            .collect(),
    }))
}

/// Starts a blue-green rebuild of one projection (or joins the one running): the new
/// model is built beside the active one and takes over once caught up.
#[utoipa::path(
    post,
    path = "/api/v1/projections/{name}/rebuild",
    tag = "read models",
    params(("name" = String, Path, description = "The projection")),
    responses(
        (status = 202, description = "The rebuild started", body = RebuildStarted),
        UnknownProjection, ProjectionsUnavailable,
    )
)]
pub(crate) async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
    slot: Option<Extension<HeldSlot>>,
) -> Result<Response, ApiError> {
    let projections = projections(&state)?;
    let rebuild = projections.rebuild(&name).await?;
    let started = RebuildStarted {
        name: rebuild.name.clone(),
        version: rebuild.version,
        build: rebuild.build,
    };
    // The rebuild this request set running counts against the bulk lane until it ends.
    if rebuild.started
        && let Some(kept) = slot.and_then(|Extension(slot)| slot.keep())
    {
        tokio::spawn(async move {
            let _ = rebuild.finished().await;
            drop(kept);
        });
    }
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The events one projection parked (poison events it could not apply and went past,
/// under the `park` policy), in position order.
#[utoipa::path(
    get,
    path = "/api/v1/projections/{name}/parked",
    tag = "read models",
    params(("name" = String, Path, description = "The projection")),
    responses(
        (status = 200, description = "The parked events", body = ParkedList),
        UnknownProjection, ProjectionsUnavailable,
    )
)]
pub(crate) async fn parked(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ParkedList>, ApiError> {
    let projections = projections(&state)?;
    let read = name.clone();
    let parked = tokio::task::spawn_blocking(move || projections.parked(&read))
        .await
        .map_err(|error| ApiError::internal(&error))??;
    Ok(Json(ParkedList {
        name,
        parked: parked.into_iter().map(ParkedView::of).collect(),
    }))
}

/// Retries one projection: applies its parked events again in position order (those
/// that succeed leave the list, those that fail stay), then, if it is faulted, starts it
/// again from the event it failed on. Answers what it did.
#[utoipa::path(
    post,
    path = "/api/v1/projections/{name}/retry",
    tag = "read models",
    params(("name" = String, Path, description = "The projection")),
    responses(
        (status = 200, description = "What the retry did", body = RetryOutcome),
        UnknownProjection, ProjectionsUnavailable,
    )
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RetryOutcome>, ApiError> {
    let projections = projections(&state)?;
    let Retried {
        resumed,
        retried,
        applied,
        parked,
    } = projections.retry(&name).await?;
    Ok(Json(RetryOutcome {
        name,
        resumed,
        retried,
        applied,
        parked,
    }))
}
