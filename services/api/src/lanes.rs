//! Intent lanes: every request waits its turn in one of three lanes, each with its own
//! concurrency limit, queue and queue-time deadline, so that a flood of one kind of work
//! cannot starve another.
//!
//! - `interactive`: customer commands and the reads that go with them (skus, accounts,
//!   orders, the customer's read models), and who the caller is (`/api/v1/me`, which
//!   any caller's console asks first).
//! - `operator`: the log, streams, a correlation's events and the fulfilment sagas in
//!   pages of at most [`LARGE_PAGE`], events by id, a stream's folded state, the read
//!   models' status and parked events, workers, the dependencies, the relay, SLOs and
//!   the chaos routes.
//! - `bulk`: rebuilds and pages of more than [`LARGE_PAGE`] events (or saga instances).
//!
//! A caller may move its own request to a lane of lower priority with the
//! `Annals-Intent` header (`operator` or `bulk`: a batch job marking its traffic as
//! such); a header naming a lane of higher priority than the route's is ignored unless
//! the policy grants it to the caller (its `raise_intent` rule, asked by the gate, which
//! marks the request with [`GrantedIntent`]), and an unknown value is a 400. The probes (`/healthz`, `/readyz`), `/metrics`, the OpenAPI
//! document, the live log (a stream held open for as long as the client likes, bounded
//! by the connection limit instead) and the console's files (static text from memory)
//! pass no lane.
//!
//! A request that finds its lane's queue full, or waits longer than the lane's deadline,
//! is shed: 503 `overloaded` with `Retry-After`. Bulk is shed first: while interactive
//! requests wait for a slot, a bulk request that cannot start at once is shed instead of
//! queueing. A bulk request shed without waiting is answered only after the lane's
//! deadline, as if it had waited: a client that ignores `Retry-After` cannot make
//! thousands of shed answers a second. Every admitted request runs within the server's
//! request timeout (503 `request-timeout` after it); a command that timed out may still
//! have been appended, and an `Idempotency-Key` makes its retry safe.
//!
//! A rebuild holds its request's bulk slot until the new model has taken over (or the
//! rebuild faulted): the lane bounds the rebuilds running, not only the requests that
//! start them. A request joining a rebuild already running holds nothing.
//!
//! Bulk work also gives way for the CPU: the store reads and encoding of a bulk request
//! ([`crate::queries::blocking`] while [`current`] is `bulk`) and the replay of a rebuild
//! run on low-priority threads ([`eventstore::low_priority`]), so that what is admitted
//! to the bulk lane takes little from the commands on a busy machine. And while an
//! interactive request runs (its [`Admitted`] marks it as foreground work), a rebuild's
//! replay rests between slices of a few milliseconds as long as it ran.
//!
//! `/metrics`: `annals_lane_in_flight{lane}`, `annals_lane_queued{lane}` and
//! `annals_lane_shed_total{lane,reason}` (`queue_full`, `deadline`, `bulk_first`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Exposition, Kind};
use crate::problem::ApiError;

/// The counter of shed requests.
pub const SHED: &str = "annals_lane_shed_total";

/// A page of more than this many events is bulk work.
pub const LARGE_PAGE: usize = 100;

/// The header by which a caller names its request's intent: it lowers the request's
/// lane, or raises it where the policy grants that; the policy sees it as
/// `input.request.intent`.
pub const INTENT_HEADER: &str = "annals-intent";

tokio::task_local! {
    /// The lane of the request this task answers, set while it runs.
    static CURRENT: Lane;
}

/// The lane of the request the calling task answers, if it runs in one.
pub fn current() -> Option<Lane> {
    CURRENT.try_with(|lane| *lane).ok()
}

/// A lane of requests, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Customer commands and their reads.
    Interactive,
    /// Operators' reads.
    Operator,
    /// Rebuilds and large pages.
    Bulk,
}

impl Lane {
    /// Every lane, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Interactive, Lane::Operator, Lane::Bulk];

    /// `interactive`, `operator` or `bulk`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Operator => "operator",
            Lane::Bulk => "bulk",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lane {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Lane::ALL
            .into_iter()
            .find(|lane| lane.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| format!("{text:?} is not a lane: interactive, operator or bulk"))
    }
}

/// One lane's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    /// Requests running at once.
    pub concurrency: usize,
    /// Requests waiting for a slot; one more is shed.
    pub queue: usize,
    /// The longest wait for a slot; a request waiting longer is shed.
    pub max_wait: Duration,
}

impl FromStr for LaneLimits {
    type Err = String;

    /// `CONCURRENCY:QUEUE:WAIT_MS`, e.g. `256:1024:2000`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("{what} in {text:?} is not a whole number"))
        };
        match parts.as_slice() {
            [concurrency, queue, wait] => {
                let limits = LaneLimits {
                    concurrency: usize::try_from(number(concurrency, "the concurrency")?)
                        .map_err(|_| format!("the concurrency in {text:?} is too large"))?,
                    queue: usize::try_from(number(queue, "the queue")?)
                        .map_err(|_| format!("the queue in {text:?} is too large"))?,
                    max_wait: Duration::from_millis(number(wait, "the wait")?),
                };
                if limits.concurrency == 0 {
                    return Err(format!("the concurrency in {text:?} must be at least 1"));
                }
                Ok(limits)
            }
            _ => Err(format!(
                "{text:?} is not CONCURRENCY:QUEUE:WAIT_MS (e.g. 256:1024:2000)"
            )),
        }
    }
}

/// The limits of every lane and the request timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanesConfig {
    /// Customer commands and their reads.
    pub interactive: LaneLimits,
    /// Operators' reads.
    pub operator: LaneLimits,
    /// Rebuilds and large pages.
    pub bulk: LaneLimits,
    /// The longest an admitted request may run (not the live log).
    pub request_timeout: Duration,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            interactive: LaneLimits {
                concurrency: 512,
                queue: 2048,
                max_wait: Duration::from_secs(2),
            },
            operator: LaneLimits {
                concurrency: 16,
                queue: 64,
                max_wait: Duration::from_secs(2),
            },
            bulk: LaneLimits {
                concurrency: 2,
                queue: 8,
                max_wait: Duration::from_secs(1),
            },
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl LanesConfig {
    /// The limits of `lane`.
    pub fn limits(&self, lane: Lane) -> LaneLimits {
        match lane {
            Lane::Interactive => self.interactive,
            Lane::Operator => self.operator,
            Lane::Bulk => self.bulk,
        }
    }

    /// Sets the limits of `lane`.
    pub fn set(&mut self, lane: Lane, limits: LaneLimits) {
        match lane {
            Lane::Interactive => self.interactive = limits,
            Lane::Operator => self.operator = limits,
            Lane::Bulk => self.bulk = limits,
        }
    }
}

/// A request's lane raised by the policy: the gate grants the lane its `Annals-Intent`
/// header names although it is above the route's (the policy's `raise_intent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedIntent(pub Lane);

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The lane's queue was full.
    QueueFull,
    /// It waited longer than the lane's deadline.
    Deadline,
    /// A bulk request that could not start at once while interactive requests waited.
    BulkFirst,
}

impl Shed {
    /// The reason's label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::Deadline => "deadline",
            Shed::BulkFirst => "bulk_first",
        }
    }
}

struct Gate {
    limits: LaneLimits,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
}

impl Gate {
    fn new(limits: LaneLimits) -> Self {
        Gate {
            limits,
            slots: Arc::new(Semaphore::new(limits.concurrency)),
            queued: AtomicUsize::new(0),
        }
    }

    fn in_flight(&self) -> usize {
        self.limits
            .concurrency
            .saturating_sub(self.slots.available_permits())
    }
}

/// The lanes of one server. Cheap to clone.
#[derive(Clone)]
pub struct Lanes {
    gates: Arc<[Gate; 3]>,
    request_timeout: Duration,
}

impl fmt::Debug for Lanes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes::new(&LanesConfig::default())
    }
}

/// A request's slot in its lane, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    /// For an interactive request: low-priority work rests while it runs.
    _foreground: Option<eventstore::low_priority::Foreground>,
}

impl Admitted {
    fn new(lane: Lane, slot: OwnedSemaphorePermit) -> Self {
        Admitted {
            _slot: slot,
            _foreground: (lane == Lane::Interactive).then(eventstore::low_priority::foreground),
        }
    }
}

/// The slot of a bulk request being answered, in its extensions: a handler that starts
/// work going on after its answer (a rebuild) keeps the slot for that work with
/// [`HeldSlot::keep`], so that the lane counts the work, not only the request. A slot
/// not kept is given back when the answer is ready.
#[derive(Debug, Clone)]
pub struct HeldSlot(Arc<std::sync::Mutex<Option<Admitted>>>);

impl HeldSlot {
    /// Takes the slot (once): it is given back when what is returned is dropped.
    pub fn keep(&self) -> Option<Admitted> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Lanes {
    /// Lanes with these limits.
    pub fn new(config: &LanesConfig) -> Self {
        Lanes {
            gates: Arc::new(Lane::ALL.map(|lane| Gate::new(config.limits(lane)))),
            request_timeout: config.request_timeout,
        }
    }

    fn gate(&self, lane: Lane) -> &Gate {
        &self.gates[lane as usize]
    }

    /// Waits for a slot in `lane`, or says why the request is shed.
    pub async fn admit(&self, lane: Lane) -> Result<Admitted, Shed> {
        let gate = self.gate(lane);
        if let Ok(slot) = gate.slots.clone().try_acquire_owned() {
            return Ok(Admitted::new(lane, slot));
        }
        if lane == Lane::Bulk && self.gate(Lane::Interactive).queued.load(Ordering::Relaxed) > 0 {
            return Err(Shed::BulkFirst);
        }
        if gate.queued.fetch_add(1, Ordering::AcqRel) >= gate.limits.queue {
            gate.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::QueueFull);
        }
        let waited =
            tokio::time::timeout(gate.limits.max_wait, gate.slots.clone().acquire_owned()).await;
        gate.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(slot)) => Ok(Admitted::new(lane, slot)),
            // The semaphore is never closed; a closed one sheds like a deadline.
            Ok(Err(_)) | Err(_) => Err(Shed::Deadline),
        }
    }

    /// Requests running in `lane` now.
    pub fn in_flight(&self, lane: Lane) -> usize {
        self.gate(lane).in_flight()
    }

    /// Requests waiting in `lane` now.
    pub fn queued(&self, lane: Lane) -> usize {
        self.gate(lane).queued.load(Ordering::Relaxed)
    }

    /// How long a shed caller of `lane` should wait before trying again, in whole
    /// seconds (at least 1).
    fn retry_after(&self, lane: Lane) -> u64 {
        self.gate(lane).limits.max_wait.as_secs().max(1)
    }
}

/// The lane of a request to the route `route` (its template), before the
/// `Annals-Intent` header; `None` for the routes that pass no lane.
pub fn route_lane(method: &Method, route: &str, query: Option<&str>) -> Option<Lane> {
    const UNLANED: [&str; 8] = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/log/live",
        "/console",
        "/console/{asset}",
        "/",
    ];
    if UNLANED.contains(&route) {
        return None;
    }
    if route == "/api/v1/projections/{name}/rebuild" && method == Method::POST {
        return Some(Lane::Bulk);
    }
    let paged = [
        "/api/v1/log",
        "/api/v1/streams/{stream_id}",
        "/api/v1/correlations/{correlation_id}",
        "/api/v1/sagas/fulfilment",
    ]
    .contains(&route);
    if paged {
        let large = query
            .and_then(|query| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| *name == "limit")
                    .and_then(|(_, value)| value.parse::<usize>().ok())
            })
            .is_some_and(|limit| limit > LARGE_PAGE);
        return Some(if large { Lane::Bulk } else { Lane::Operator });
    }
    let operator = [
        "/api/v1/streams",
        "/api/v1/events/",
        "/api/v1/projections",
        "/api/v1/workers",
        "/api/v1/dependencies",
        "/api/v1/outbox",
        "/api/v1/slo",
        "/api/v1/chaos/",
    ];
    if operator
        .iter()
        .any(|prefix| route == prefix.trim_end_matches('/') || route.starts_with(prefix))
    {
        return Some(Lane::Operator);
    }
    Some(Lane::Interactive)
}

/// Adds what the lanes do to the OpenAPI document, on every operation of a route that
/// passes a lane: the `Annals-Intent` header, the 400 `invalid-intent` it can cause, and
/// the 503 of a request shed (`overloaded`, with `Retry-After`) or timed out
/// (`request-timeout`), each added to the status's description if the operation
/// declares that status already.
pub(crate) fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Required};

    for (route, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            if route_lane(&method, route, None).is_none() {
                continue;
            }
            let intent = ParameterBuilder::new()
                .name("Annals-Intent")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Moves the request to a lane of lower priority than its route's \
                     (`operator`, `bulk`; a higher one is ignored); an unknown value is a \
                     400 `invalid-intent`.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(Lane::ALL.map(Lane::as_str))),
                ))
                .build();
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::T(intent));
            crate::contract::problem_response(
                &mut operation.responses,
                "400",
                "An unknown `Annals-Intent` (`invalid-intent`).",
                None,
            );
            let retry_after =
                crate::contract::retry_after("Seconds to wait before retrying (a shed request).");
            crate::contract::problem_response(
                &mut operation.responses,
                "503",
                "Shed by its intent lane (`overloaded`: the lane's queue was full, its \
                 wait passed, or a bulk request gave way to interactive ones; \
                 `Retry-After` says when to retry), or not done within the request timeout \
                 (`request-timeout`).",
                Some(("Retry-After", retry_after)),
            );
        }
    }
}

/// The middleware: admits the request to its lane (or sheds it) and bounds its time.
pub(crate) async fn admit(State(lanes): State<Lanes>, request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let Some(mut lane) = route_lane(request.method(), &route, request.uri().query()) else {
        return next.run(request).await;
    };
    if let Some(intent) = request.headers().get(INTENT_HEADER) {
        match intent
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(str::parse)
        {
            // Only ever lower, unless the policy granted this caller the lane it asks.
            Ok(asked) => {
                let granted = request.extensions().get::<GrantedIntent>();
                lane = if granted == Some(&GrantedIntent(asked)) {
                    asked
                } else {
                    lane.max(asked)
                };
            }
            Err(reason) => {
                return ApiError::bad_request(
                    "invalid-intent",
                    format!("the Annals-Intent header: {reason}"),
                )
                .into_response();
            }
        }
    }
    let admitted = match lanes.admit(lane).await {
        Ok(admitted) => admitted,
        Err(shed) => {
            ::metrics::counter!(SHED, "lane" => lane.as_str(), "reason" => shed.as_str())
                .increment(1);
            if lane == Lane::Bulk && shed != Shed::Deadline {
                // Answered after the lane's deadline, as if it had waited its turn in the
                // queue: a batch client that ignores `Retry-After` then sends one request
                // per deadline and connection, not thousands a second that would each be
                // parsed, routed and answered on the commands' cores. It holds no slot,
                // only its connection (bounded by the connection limit).
                tokio::time::sleep(lanes.gate(lane).limits.max_wait).await;
            }
            let seconds = lanes.retry_after(lane);
            let why = match shed {
                Shed::QueueFull => "its queue is full",
                Shed::Deadline => "no slot freed up in time",
                Shed::BulkFirst => "interactive requests are waiting, and bulk work gives way",
            };
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                format!(
                    "the server sheds this request of the {lane} lane: {why}; retry in {seconds} s"
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
            .into_response();
            // Marked, so that the request log does not report it as a failure: a flood
            // of shed requests would otherwise flood the log at ERROR.
            response.extensions_mut().insert(shed);
            return response;
        }
    };
    // Only bulk work outlives its request (a rebuild): the other lanes' requests, the
    // commands among them, pay for no shared slot.
    let mut request = request;
    let (held, admitted) = if lane == Lane::Bulk {
        let slot = HeldSlot(Arc::new(std::sync::Mutex::new(Some(admitted))));
        request.extensions_mut().insert(slot.clone());
        (Some(slot), None)
    } else {
        (None, Some(admitted))
    };
    let answer = CURRENT
        .scope(
            lane,
            tokio::time::timeout(lanes.request_timeout, next.run(request)),
        )
        .await;
    drop(admitted);
    drop(held.and_then(|slot| slot.keep()));
    match answer {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "Request timeout",
            format!(
                "the request did not finish within {:?}; a command may still have taken \
                 effect: retry it with the same Idempotency-Key",
                lanes.request_timeout
            ),
        )
        .into_response(),
    }
}

/// Writes the lanes' gauges: requests running and waiting in each.
pub(crate) fn write(lanes: &Lanes, out: &mut Exposition) {
    out.family(
        "annals_lane_in_flight",
        Kind::Gauge,
        "Requests running in the intent lane now.",
    );
    for lane in Lane::ALL {
        out.sample(
            "annals_lane_in_flight",
            &[("lane", lane.as_str())],
            lanes.in_flight(lane) as f64,
        );
    }
    out.family(
        "annals_lane_queued",
        Kind::Gauge,
        "Requests waiting for a slot in the intent lane now.",
    );
    for lane in Lane::ALL {
        out.sample(
            "annals_lane_queued",
            &[("lane", lane.as_str())],
            lanes.queued(lane) as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight() -> LanesConfig {
        let one = LaneLimits {
            concurrency: 1,
            queue: 1,
            max_wait: Duration::from_millis(200),
        };
        LanesConfig {
            interactive: one,
            operator: one,
            bulk: one,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn routes_fall_in_their_lanes() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            route_lane(&post, "/api/v1/orders", None),
            Some(Lane::Interactive)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/customers/{id}/orders", None),
            Some(Lane::Interactive)
        );
        assert_eq!(route_lane(&get, "/api/v1/log", None), Some(Lane::Operator));
        assert_eq!(
            route_lane(&get, "/api/v1/log", Some("from=0&limit=100")),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/log", Some("from=0&limit=1000")),
            Some(Lane::Bulk)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/streams/{stream_id}", Some("limit=500")),
            Some(Lane::Bulk)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/streams", None),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&post, "/api/v1/projections/{name}/rebuild", None),
            Some(Lane::Bulk)
        );
        assert_eq!(
            route_lane(&post, "/api/v1/projections/{name}/retry", None),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/dependencies", None),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&post, "/api/v1/payments/cards", None),
            Some(Lane::Interactive)
        );
        assert_eq!(route_lane(&get, "/readyz", None), None);
        assert_eq!(route_lane(&get, "/api/v1/log/live", None), None);
        // The console's routes: who am I is any caller's; the rest are operators' reads,
        // large pages in bulk.
        assert_eq!(
            route_lane(&get, "/api/v1/me", None),
            Some(Lane::Interactive)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/correlations/{correlation_id}", None),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(
                &get,
                "/api/v1/correlations/{correlation_id}",
                Some("limit=1000")
            ),
            Some(Lane::Bulk)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/streams/{stream_id}/state", Some("version=3")),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/sagas/fulfilment", Some("phase=charging")),
            Some(Lane::Operator)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/sagas/fulfilment", Some("limit=500")),
            Some(Lane::Bulk)
        );
        assert_eq!(
            route_lane(&get, "/api/v1/sagas/fulfilment/{order_id}", None),
            Some(Lane::Interactive),
            "one order's saga is its customer's read"
        );
    }

    /// The document shows the lanes where they apply: the header, the 400 and the 503
    /// with `Retry-After` on a laned route (added to a 503 the route declared already),
    /// none of it on a probe.
    #[test]
    fn the_openapi_document_shows_the_lanes() {
        let document = serde_json::to_value(crate::openapi()).unwrap();
        let place = &document["paths"]["/api/v1/orders"]["post"];
        let parameters = place["parameters"].as_array().unwrap();
        let intent = parameters
            .iter()
            .find(|p| p["name"] == "Annals-Intent")
            .expect("the intent header");
        assert_eq!(intent["in"], "header");
        assert_eq!(
            intent["schema"]["enum"],
            serde_json::json!(["interactive", "operator", "bulk"])
        );
        let unavailable = &place["responses"]["503"];
        let description = unavailable["description"].as_str().unwrap();
        assert!(description.contains("store-failed"), "{description}");
        assert!(description.contains("overloaded"), "{description}");
        assert!(description.contains("request-timeout"), "{description}");
        assert!(unavailable["headers"]["Retry-After"].is_object());
        assert!(
            place["responses"]["400"]["description"]
                .as_str()
                .unwrap()
                .contains("invalid-intent")
        );

        let log = &document["paths"]["/api/v1/log"]["get"];
        assert!(log["responses"]["503"]["headers"]["Retry-After"].is_object());
        assert_eq!(
            log["responses"]["503"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );

        for probe in ["/healthz", "/api/v1/log/live"] {
            let operation = &document["paths"][probe]["get"];
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                parameters.iter().all(|p| p["name"] != "Annals-Intent"),
                "{probe}"
            );
            let unavailable = operation["responses"]["503"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(!unavailable.contains("overloaded"), "{probe}");
        }
    }

    #[test]
    fn limits_parse_and_refuse_nonsense() {
        assert_eq!(
            "4:8:1500".parse::<LaneLimits>(),
            Ok(LaneLimits {
                concurrency: 4,
                queue: 8,
                max_wait: Duration::from_millis(1500)
            })
        );
        assert!("0:8:1500".parse::<LaneLimits>().is_err());
        assert!("4:8".parse::<LaneLimits>().is_err());
        assert!("4:x:1".parse::<LaneLimits>().is_err());
        assert_eq!("Bulk".parse::<Lane>(), Ok(Lane::Bulk));
        assert!("urgent".parse::<Lane>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_and_a_long_wait_sheds() {
        let lanes = Lanes::new(&tight());
        let running = lanes.admit(Lane::Operator).await.unwrap();
        let waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.admit(Lane::Operator).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert_eq!(lanes.queued(Lane::Operator), 1);
        assert_eq!(
            lanes.admit(Lane::Operator).await.unwrap_err(),
            Shed::QueueFull
        );
        // The one waiting runs out of time while the first still runs.
        assert_eq!(waiting.await.unwrap().unwrap_err(), Shed::Deadline);
        assert_eq!(lanes.queued(Lane::Operator), 0);
        drop(running);
        assert_eq!(lanes.in_flight(Lane::Operator), 0);
        lanes.admit(Lane::Operator).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_that_frees_up() {
        let lanes = Lanes::new(&tight());
        let running = lanes.admit(Lane::Interactive).await.unwrap();
        let waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.admit(Lane::Interactive).await.map(drop) })
        };
        tokio::task::yield_now().await;
        drop(running);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_gives_way_while_interactive_requests_wait() {
        let lanes = Lanes::new(&tight());
        let _interactive = lanes.admit(Lane::Interactive).await.unwrap();
        let _bulk = lanes.admit(Lane::Bulk).await.unwrap();
        let _waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.admit(Lane::Interactive).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert_eq!(lanes.admit(Lane::Bulk).await.unwrap_err(), Shed::BulkFirst);
        // Other lanes still queue as usual.
        assert_eq!(lanes.queued(Lane::Interactive), 1);
    }
}
