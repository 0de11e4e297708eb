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
//!   nothing a client sends makes a 500 or a panic; the document declares the problem
//!   responses once ([`responses`]) and every handler names the ones it answers;
//! - after the store's writer failed ([`eventstore::EventStore::failure`]) every command
//!   answers 503 `store-failed` and both probes fail naming the failure; reads go on.
//!
//! The handlers live in `src/routes/`, one module per tag of the OpenAPI document
//! (`inventory`, `payments`, `orders`, `log`, `read_models`, `operations`); what they
//! share lives beside it: `commands` (If-Match, Idempotency-Key, the repository, the
//! answer), `queries` (blocking reads, ETags, page lengths), `extract` (input checks),
//! [`problem`] (the one error type). The OpenAPI document is generated from the
//! handlers ([`openapi`]) and served at `/api/v1/openapi.json`; the JSON Schemas of the
//! event payloads ([`event_types`]) at `/api/v1/schemas/events` (docs/EVENTS.md).
//! What may change within `/api/v1` and how a route is retired: docs/API.md; a
//! deprecated route says so on every answer and in the document ([`deprecation`]).
//!
//! A console reads four routes more: `GET /api/v1/me` (the caller and what the policy
//! allows it), a correlation's events (from the `correlations` read model, kept only by
//! a read side started with it: `annals serve --correlations`), a stream's
//! state at a version (folded by [`replay`], as `annals replay stream` folds it) and the
//! fulfilment saga's instances, paged.
//!
//! When the server runs the outbox relay ([`AppState::with_relay`]), `GET /api/v1/outbox`
//! reports it and `/readyz` says whether it is healthy or degraded; a degraded relay
//! (NATS away) never makes the server unready.
//!
//! When the server runs its background workers under a supervisor
//! ([`AppState::with_workers`]), `GET /api/v1/workers` lists them, `/readyz` answers 503
//! naming every worker marked failed, and `/metrics` counts their restarts.
//!
//! `GET /metrics` answers the Prometheus text format ([`metrics`]): every request is
//! counted and timed by its route template, and the gauges are read at scrape time from
//! the store, the read models, the relay and the saga driver ([`AppState::with_saga`]).
//!
//! Every request runs inside an `http.request` span and answers `X-Request-Id`
//! ([`telemetry`]).
//!
//! `GET /console` serves the web console (`routes::console`: three files embedded in the
//! binary, public, with a Content-Security-Policy allowing only this origin), and `GET /`
//! redirects to it.
//!
//! Every routed request but the probes, `/metrics`, the document, the live log and the
//! console's files waits
//! its turn in an intent lane (`interactive`, `operator`, `bulk`: [`lanes`]), each with its
//! own concurrency limit, queue and deadline; a full lane sheds with 503 `overloaded` and
//! `Retry-After`, bulk first, and every admitted request runs within the request timeout.
//!
//! A server started with `--chaos` ([`AppState::with_chaos`]) answers
//! `GET/POST/DELETE /api/v1/chaos/faults` (tag `chaos`) and passes its command and query
//! routes through the `http.handler` fault point (a delay, or a 500 `chaos-injected`);
//! without it the chaos routes answer 404 like an unknown path, and no layer is added.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use eventstore::{EventStore, Repository};
use repositories::Repositories;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod commands;
mod contract;
pub mod deprecation;
pub mod event_types;
pub mod events;
mod extract;
pub mod gate;
pub mod idempotency;
pub mod lanes;
pub mod metrics;
pub mod personal_data;
pub mod problem;
mod queries;
pub mod replay;
pub mod responses;
mod routes;
pub mod slo;
pub mod telemetry;

pub use problem::{ApiError, Problem};
pub use routes::operations::{
    Health, OutboxHealth, OutboxStatus, Readiness, RelayReport, WorkerReport, liveness, readiness,
};

/// The default of [`ApiConfig::max_order_lines`], also the `maxItems` of an order's
/// lines in the OpenAPI document.
pub const DEFAULT_MAX_ORDER_LINES: usize = 100;

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
    /// How long a read-model query with `min_position` waits for the projection to
    /// apply it before answering 503 with the checkpoint.
    pub projection_wait_timeout: std::time::Duration,
    /// The most lines an order may have (a 422 `too-many-lines` beyond). The saga
    /// issues a reservation per line and a release per line when it compensates, so
    /// the lines bound the work one request can start: 100 lines is about 200 appends,
    /// where a 64 KiB body could otherwise hold some 2,400 lines (nearly 10,000).
    pub max_order_lines: usize,
    /// Whether the process records metrics and serves them at `/metrics` (else no
    /// recorder is installed, so recording costs nothing, and `/metrics` answers 404).
    pub metrics: bool,
    /// The intent lanes' limits and the request timeout ([`lanes`]): a flood of one kind
    /// of work is shed (503 `overloaded`) before it starves the others.
    pub lanes: lanes::LanesConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 * 1024,
            max_order_lines: DEFAULT_MAX_ORDER_LINES,
            default_page_events: 100,
            max_page_events: 1000,
            max_ready_index_lag: 100_000,
            projection_wait_timeout: std::time::Duration::from_secs(5),
            metrics: true,
            lanes: lanes::LanesConfig::default(),
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
    /// Authentication, policy and rate limits, if configured ([`AppState::with_security`]).
    security: Option<gate::Security>,
    /// The service level objectives and their counts ([`AppState::with_slos`]).
    slos: Arc<::slo::Slos>,
    /// The status of the saga driver running in this server, if any
    /// ([`AppState::with_saga`]), for `/metrics`.
    saga: Option<tokio::sync::watch::Receiver<sagas::DriverStatus>>,
    /// More families for every scrape of `/metrics` ([`AppState::with_scrape_hook`]).
    scrape_hook: Option<metrics::ScrapeHook>,
    /// The statuses of the server's supervised workers, if any
    /// ([`AppState::with_workers`]).
    workers: Option<supervisor::Workers>,
    /// The fault points' switch, inert unless the server runs with `--chaos`
    /// ([`AppState::with_chaos`]).
    chaos: chaos::Chaos,
    /// The payment providers the saga charges cards through, if any
    /// ([`AppState::with_payment_providers`]).
    payment_providers: Option<psp::Chain>,
    /// The key store personal data is sealed and opened with, if the server has a
    /// master key ([`AppState::with_key_store`]).
    key_store: Option<privacy::KeyStore>,
}

#[derive(Debug)]
struct Shared {
    store: EventStore,
    stock: Repository<inventory::Stock>,
    accounts: Repository<payments::Account>,
    orders: Repository<orders::Order>,
    cards: Repository<payments::card::Card>,
    customers: Repository<customers::Customer>,
    config: ApiConfig,
    /// Requests with one idempotency key run one at a time, so the second sees the
    /// first's record.
    key_locks: eventstore::KeyedLocks,
    /// Cancelled when the server begins to shut down: live streams end, `/readyz`
    /// answers 503.
    shutdown: CancellationToken,
    /// The intent lanes every request waits in.
    lanes: lanes::Lanes,
}

impl AppState {
    /// The state of an API over `store`, with repositories of its own.
    pub fn new(store: EventStore, config: ApiConfig) -> Self {
        Self::sharing(store.clone(), Repositories::new(store), config)
    }

    /// The state of an API over `store` whose commands run through `repositories`: hand
    /// the same repositories to the other writers of the process (the saga), so that
    /// commands on one aggregate queue on its stream instead of racing.
    pub fn sharing(store: EventStore, repositories: Repositories, config: ApiConfig) -> Self {
        AppState {
            inner: Arc::new(Shared {
                stock: repositories.stock,
                accounts: repositories.accounts,
                orders: repositories.orders,
                cards: repositories.cards,
                customers: repositories.customers,
                store,
                lanes: lanes::Lanes::new(&config.lanes),
                config,
                key_locks: eventstore::KeyedLocks::default(),
                shutdown: CancellationToken::new(),
            }),
            relay: None,
            projections: None,
            security: None,
            slos: Arc::new(
                ::slo::Slos::new(::slo::Objective::defaults())
                    .expect("the default objectives are valid"),
            ),
            saga: None,
            scrape_hook: None,
            workers: None,
            chaos: chaos::Chaos::inert(),
            payment_providers: None,
            key_store: None,
        }
    }

    /// The same state, sealing and opening personal data with `key_store` (a server
    /// started with a master key). Without one the personal-data routes answer 503
    /// `personal-data-disabled` ([`personal_data`]).
    pub fn with_key_store(mut self, key_store: privacy::KeyStore) -> Self {
        self.key_store = Some(key_store);
        self
    }

    /// The key store of this server, if it has a master key.
    pub fn key_store(&self) -> Option<&privacy::KeyStore> {
        self.key_store.as_ref()
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

    /// The same state, with every request passing the [`gate`]: a verified token, the
    /// policy's allow, the principal's rate limit.
    pub fn with_security(mut self, security: gate::Security) -> Self {
        self.security = Some(security);
        self
    }

    /// The same state, measuring `slos` (the server's configured objectives) instead of
    /// the default ones.
    pub fn with_slos(mut self, slos: Arc<::slo::Slos>) -> Self {
        self.slos = slos;
        self
    }

    /// The service level objectives measured by this server.
    pub fn slos(&self) -> &Arc<::slo::Slos> {
        &self.slos
    }

    /// The same state, reporting the saga driver whose status `saga` receives
    /// ([`sagas::Driver::watch`]) in `/metrics` (`annals_saga_instances`). The driver runs
    /// elsewhere (a task of the server).
    pub fn with_saga(mut self, saga: tokio::sync::watch::Receiver<sagas::DriverStatus>) -> Self {
        self.saga = Some(saga);
        self
    }

    /// The same state, reporting the supervised workers behind `workers` at
    /// `GET /api/v1/workers`, in `/readyz` (503 naming every failed one) and in
    /// `/metrics`. The workers run elsewhere (under the server's supervisor).
    pub fn with_workers(mut self, workers: supervisor::Workers) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The same state, with the fault points' switch `chaos` (the handle the rest of the
    /// server shares): when it is enabled, `/api/v1/chaos/faults` injects, lists and
    /// clears faults, and the command and query routes pass the `http.handler` point.
    pub fn with_chaos(mut self, chaos: chaos::Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// The same state, reporting the breakers of `chain` (the payment providers the
    /// fulfilment saga charges cards through) at `GET /api/v1/dependencies` and in
    /// `/metrics`.
    pub fn with_payment_providers(mut self, chain: psp::Chain) -> Self {
        self.payment_providers = Some(chain);
        self
    }

    /// The payment providers of this server, if any.
    pub fn payment_providers(&self) -> Option<&psp::Chain> {
        self.payment_providers.as_ref()
    }

    /// The fault points' switch of this server (inert without `--chaos`).
    pub fn chaos(&self) -> &chaos::Chaos {
        &self.chaos
    }

    /// The statuses of the server's supervised workers, if any.
    pub fn workers(&self) -> Option<&supervisor::Workers> {
        self.workers.as_ref()
    }

    /// The same state, with `hook` adding families to every scrape of `/metrics` (values
    /// computed when scraped, such as objectives over the recorded counters).
    pub fn with_scrape_hook(
        mut self,
        hook: impl Fn(&mut metrics::Exposition) + Send + Sync + 'static,
    ) -> Self {
        self.scrape_hook = Some(metrics::ScrapeHook(Arc::new(hook)));
        self
    }

    /// The status of the saga driver running in this server, if any.
    pub fn saga(&self) -> Option<&tokio::sync::watch::Receiver<sagas::DriverStatus>> {
        self.saga.as_ref()
    }

    /// The hook adding families to `/metrics`, if any.
    pub fn scrape_hook(&self) -> Option<&metrics::ScrapeHook> {
        self.scrape_hook.as_ref()
    }

    /// The gate's settings, if requests are authenticated.
    pub fn security(&self) -> Option<&gate::Security> {
        self.security.as_ref()
    }

    /// The read models of this server, if any.
    pub fn projections(&self) -> Option<&read_models::ReadSide> {
        self.projections.as_ref()
    }

    /// The status of the outbox relay running in this server, if any.
    pub fn relay(&self) -> Option<&outbox::StatusHandle> {
        self.relay.as_deref()
    }

    /// The store behind the API.
    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    /// The intent lanes of this server.
    pub fn lanes(&self) -> &lanes::Lanes {
        &self.inner.lanes
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

/// The whole HTTP API over `state`. Installs the process's metrics recorder
/// ([`metrics::install`]) if no app did before, unless metrics are off
/// ([`ApiConfig::metrics`]).
pub fn app(state: AppState) -> Router {
    let metrics_on = state.config().metrics;
    if metrics_on {
        metrics::install();
        personal_data::register_metrics();
    }
    let max_body_bytes = state.config().max_body_bytes;
    let chaos_on = state.chaos().is_enabled();
    if chaos_on && metrics_on {
        routes::chaos::register_metrics();
    }
    let (mut router, _) = routes(chaos_on).split_for_parts();
    if chaos_on {
        // Innermost, after the gate: a fault hits requests the policy let through, and a
        // 500 it answers counts for the command objectives like a real one.
        router = router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::chaos::http_handler,
        ));
    }
    // Inside the gate: a request is authenticated and allowed before it takes a slot
    // in its lane, and a shed request still counts as an answered command.
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.lanes().clone(),
        lanes::admit,
    ));
    if state.security().is_some() {
        // A route layer runs only for matched routes, after routing, so the gate sees the
        // route's template and parameters.
        router = router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::check,
        ));
    }
    // Outside the gate, so that its refusals (401, 403, 429) count as answered commands.
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.slos().clone(),
        slo::record_commands,
    ));
    // Outermost of the route layers: a deprecated route says so on every answer, its
    // refusals included.
    router = deprecation::apply(router, deprecation::DEPRECATED);
    router = router
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(problem::panicked));
    if metrics_on {
        router = router.layer(axum::middleware::from_fn(metrics::track));
    }
    router
        .layer(axum::middleware::from_fn(telemetry::observe))
        .with_state(state)
}

/// The OpenAPI document of every route of [`app`], generated from the handlers and
/// completed with what they share ([`contract`]: parameter constraints, the bearer token
/// and the gate's refusals, the live log as an event stream).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = routes(true).into_openapi();
    lanes::document(&mut document);
    contract::complete(&mut document, ApiConfig::default().max_page_events);
    deprecation::mark_document(&mut document, deprecation::DEPRECATED);
    document
}

/// The document as served at `/api/v1/openapi.json`: [`openapi`], with the JSON Schema
/// keywords utoipa cannot state (the `contentSchema` of the live log's events).
pub fn openapi_json() -> serde_json::Value {
    let mut document =
        serde_json::to_value(openapi()).expect("the OpenAPI document encodes as JSON");
    contract::content_schemas(&mut document);
    document
}

/// Every route, registered once for both the router and the OpenAPI document, grouped
/// by tag (each group is one module of [`routes`]). The chaos routes are served only
/// with `chaos` (a server with `--chaos`; without, their paths fall to the 404 of an
/// unknown route), and always documented.
fn routes(chaos: bool) -> OpenApiRouter<AppState> {
    use routes::{
        console, correlations, customers, inventory, log, me, operations, orders, payments,
        read_models,
    };
    let router = OpenApiRouter::with_openapi(document())
        .routes(routes!(inventory::register_sku))
        .routes(routes!(inventory::get_sku))
        .routes(routes!(inventory::restock))
        .routes(routes!(payments::open_account))
        .routes(routes!(payments::get_account))
        .routes(routes!(payments::deposit))
        .routes(routes!(payments::register_card))
        .routes(routes!(customers::register_customer))
        .routes(routes!(customers::get_customer))
        .routes(routes!(
            customers::personal_data,
            customers::erase_personal_data
        ))
        .routes(routes!(orders::place_order))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::get_fulfilment))
        .routes(routes!(orders::list_fulfilments))
        .routes(routes!(log::read_stream))
        .routes(routes!(log::stream_state))
        .routes(routes!(log::list_streams))
        .routes(routes!(log::get_event))
        .routes(routes!(log::read_log))
        .routes(routes!(log::follow_log))
        .routes(routes!(correlations::correlated_events))
        .routes(routes!(read_models::customer_orders))
        .routes(routes!(read_models::list_skus))
        .routes(routes!(read_models::sales_report))
        .routes(routes!(read_models::list_projections))
        .routes(routes!(read_models::rebuild))
        .routes(routes!(read_models::parked))
        .routes(routes!(read_models::retry))
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::outbox_status))
        .routes(routes!(operations::list_workers))
        .routes(routes!(routes::dependencies::list_dependencies))
        .routes(routes!(slo::slo_report))
        .routes(routes!(me::me))
        .routes(routes!(operations::openapi_json))
        .routes(routes!(routes::schemas::list_event_schemas))
        .routes(routes!(routes::schemas::get_event_schema))
        .routes(routes!(operations::metrics))
        .routes(routes!(console::console_page))
        .routes(routes!(console::console_asset))
        .routes(routes!(console::root));
    if chaos {
        router
            .routes(routes!(
                routes::chaos::list_faults,
                routes::chaos::inject_fault,
                routes::chaos::clear_faults
            ))
            .routes(routes!(routes::chaos::remove_fault))
    } else {
        // The documented methods answer 404 as an unknown path does; any other method
        // is a 405 with `Allow`, as on every route of the document.
        use axum::routing::{delete, get};
        router
            .route(
                "/api/v1/chaos/faults",
                get(problem::no_route)
                    .post(problem::no_route)
                    .delete(problem::no_route),
            )
            .route("/api/v1/chaos/faults/{id}", delete(problem::no_route))
    }
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
        components(schemas(problem::Problem, problem::CheckpointProblem)),
        tags(
            (name = "inventory", description = "Skus and their stock (stream stock-<sku>)"),
            (name = "payments", description = "Customer accounts (stream account-<customer>) and cards on file (stream card-<customer>)"),
            (name = "customers", description = "Customers' profiles of personal data (stream customer-<id>), sealed under each customer's own key: registration, the profile, every personal field held about a customer (access) and its erasure (the customer's keys destroyed). A server without a master key answers 503 personal-data-disabled."),
            (name = "orders", description = "Orders (stream order-<uuid>)"),
            (name = "log", description = "Streams and the whole log, paged or live"),
            (name = "read models", description = "Projections: queries (read-your-writes with min_position), status, rebuilds, parked events and retries"),
            (name = "operations", description = "Health, readiness, metrics, the outbox relay, the background workers, the external dependencies and this document"),
            (name = "schemas", description = "The JSON Schema (draft 2020-12) of every event type and schema version: the JSON of event payloads in the API, the CLI and the NATS messages (public, like this document)"),
            (name = "console", description = "The web console: its page and files (public: they hold no data; the console sends the user's token with every API request), and / redirecting to it"),
            (name = "chaos", description = "Fault injection (a server started with --chaos; without it these answer 404): the fault points, the active faults, injecting and clearing them"),
        )
    )]
    struct Document;
    Document::openapi()
}
