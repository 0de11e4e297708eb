//! The HTTP command and query API of Annals: one axum [`Router`] built by [`app`].
//!
//! Commands (`POST`) load an aggregate, decide in the pure domain crates (`inventory`,
//! `payments`, `orders`) and append the events through the [`eventstore::Repository`];
//! queries (`GET`) fold one aggregate from its stream or page through streams and the
//! log. The conventions of `shared/DESIGN.md` ("HTTP conventions") hold for every route:
//!
//! - every command answers `{stream, version, position}` and `ETag: "<version>"`;
//! - `If-Match: "<version>"` makes a command conditional: 412 when the aggregate moved on;
//!   without it a version conflict is retried a bounded number of times, then it is a 409;
//! - `Idempotency-Key` makes any `POST` safe to retry ([`idempotency`]);
//! - every error is `application/problem+json` ([`problem`]), and bad input is a 4xx:
//!   nothing a client sends makes a 500 or a panic.
//!
//! The OpenAPI document is generated from the handlers ([`openapi`]) and served at
//! `/api/v1/openapi.json`.
//!
//! When the server runs the outbox relay ([`AppState::with_relay`]), `GET /api/v1/outbox`
//! reports it and `/readyz` says whether it is healthy or degraded; a degraded relay
//! (NATS away) never makes the server unready.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use eventstore::{EventStore, Repository};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod commands;
pub mod events;
mod extract;
mod health;
pub mod idempotency;
pub mod problem;
mod projection_routes;
mod queries;
mod relay;

pub use problem::{ApiError, Problem};
pub use relay::{OutboxHealth, OutboxStatus, RelayReport};

/// The limits of the API. Every limit is here, with the reason it exists.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The largest request body accepted (a 413 above it). Commands are small; the
    /// bound keeps one request from holding much memory.
    pub max_body_bytes: usize,
    /// Events per page of `/streams/{id}` and `/log` when the client gives no `limit`.
    pub default_page_events: usize,
    /// The largest `limit` a page may ask for (a 400 above it): one page is read into
    /// memory at once.
    pub max_page_events: usize,
    /// `/readyz` answers 503 when the index lags the durable log by more events than
    /// this: reads would wait for the index to catch up.
    pub max_ready_index_lag: u64,
    /// How many times a command is decided again after a version conflict with a
    /// writer outside this API (commands of this API on one aggregate queue up instead).
    pub conflict_retries: u32,
    /// How long a read-model query with `min_position` waits for the projection to
    /// apply it before answering 503 with the checkpoint.
    pub projection_wait_timeout: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 * 1024,
            default_page_events: 100,
            max_page_events: 1000,
            max_ready_index_lag: 100_000,
            conflict_retries: 8,
            projection_wait_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
    /// The outbox relay running in this server, if any ([`AppState::with_relay`]).
    relay: Option<Arc<outbox::StatusHandle>>,
    /// The read models running in this server, if any ([`AppState::with_projections`]).
    projections: Option<read_models::ReadSide>,
}

#[derive(Debug)]
struct Shared {
    store: EventStore,
    stock: Repository<inventory::Stock>,
    accounts: Repository<payments::Account>,
    orders: Repository<orders::Order>,
    config: ApiConfig,
    /// Commands of this API on one stream run one at a time, so concurrent clients of
    /// one aggregate queue up instead of spending their conflict retries.
    stream_locks: Arc<eventstore::KeyedLocks>,
    /// Requests with one idempotency key run one at a time, so the second sees the
    /// first's record.
    key_locks: eventstore::KeyedLocks,
    /// Cancelled when the server begins to shut down: live streams end, `/readyz`
    /// answers 503.
    shutdown: CancellationToken,
}

impl AppState {
    /// The state of an API over `store`.
    pub fn new(store: EventStore, config: ApiConfig) -> Self {
        AppState {
            inner: Arc::new(Shared {
                stock: Repository::new(store.clone())
                    .with_conflict_retries(config.conflict_retries),
                accounts: Repository::new(store.clone())
                    .with_conflict_retries(config.conflict_retries),
                orders: Repository::new(store.clone())
                    .with_conflict_retries(config.conflict_retries),
                store,
                config,
                stream_locks: Arc::default(),
                key_locks: eventstore::KeyedLocks::default(),
                shutdown: CancellationToken::new(),
            }),
            relay: None,
            projections: None,
        }
    }

    /// The same state, reporting the outbox relay behind `status` at `GET /api/v1/outbox`
    /// and in `/readyz`. The relay runs elsewhere (a task of the server); the API only
    /// reads its status.
    pub fn with_relay(mut self, status: outbox::StatusHandle) -> Self {
        self.relay = Some(Arc::new(status));
        self
    }

    /// The same state, answering the read-model routes (`/api/v1/customers/{id}/orders`,
    /// `/api/v1/inventory/skus`, `/api/v1/reports/sales`, `/api/v1/projections`) from
    /// `projections`, whose runner runs elsewhere (a task of the server).
    pub fn with_projections(mut self, projections: read_models::ReadSide) -> Self {
        self.projections = Some(projections);
        self
    }

    /// The read models of this server, if any.
    pub fn projections(&self) -> Option<&read_models::ReadSide> {
        self.projections.as_ref()
    }

    /// The status of the outbox relay running in this server, if any.
    pub fn relay(&self) -> Option<&outbox::StatusHandle> {
        self.relay.as_deref()
    }

    /// The per-stream command queues of this API; a saga driver in the same process
    /// queues its commands on them too, so the two never race on one aggregate.
    pub fn stream_locks(&self) -> Arc<eventstore::KeyedLocks> {
        self.inner.stream_locks.clone()
    }

    /// The store behind the API.
    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    /// The API's limits.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// Cancel this token when the server begins to shut down: live event streams end
    /// (so a graceful shutdown does not wait on them forever) and `/readyz` turns 503.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
}

/// The whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let max_body_bytes = state.config().max_body_bytes;
    let (router, _) = routes().split_for_parts();
    router
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(problem::panicked))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The OpenAPI document of every route of [`app`], generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Every route, registered once for both the router and the OpenAPI document.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(document())
        .routes(routes!(commands::register_sku))
        .routes(routes!(queries::get_sku))
        .routes(routes!(commands::restock))
        .routes(routes!(commands::open_account))
        .routes(routes!(queries::get_account))
        .routes(routes!(commands::deposit))
        .routes(routes!(commands::place_order))
        .routes(routes!(queries::get_order))
        .routes(routes!(commands::cancel_order))
        .routes(routes!(queries::get_fulfilment))
        .routes(routes!(queries::read_stream))
        .routes(routes!(queries::list_streams))
        .routes(routes!(queries::get_event))
        .routes(routes!(queries::read_log))
        .routes(routes!(queries::follow_log))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(relay::outbox_status))
        .routes(routes!(projection_routes::customer_orders))
        .routes(routes!(projection_routes::list_skus))
        .routes(routes!(projection_routes::sales_report))
        .routes(routes!(projection_routes::list_projections))
        .routes(routes!(projection_routes::rebuild))
        .routes(routes!(health::openapi_json))
}

/// The document's header: title, version, description, tags.
fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Annals",
            description = "The command and query API of Annals, an event-sourced platform. \
                Commands answer {stream, version, position} with ETag \"<version>\"; \
                If-Match makes a command conditional (412); Idempotency-Key makes a POST \
                safe to retry. Errors are application/problem+json (RFC 9457)."
        ),
        tags(
            (name = "inventory", description = "Skus and their stock (stream stock-<sku>)"),
            (name = "payments", description = "Customer accounts (stream account-<customer>)"),
            (name = "orders", description = "Orders (stream order-<uuid>)"),
            (name = "log", description = "Streams and the whole log, paged or live"),
            (name = "read models", description = "Projections: queries (read-your-writes with min_position), status and rebuilds"),
            (name = "operations", description = "Health, readiness, the outbox relay and this document"),
        )
    )]
    struct Document;
    Document::openapi()
}
