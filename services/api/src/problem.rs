//! Errors as `application/problem+json` (RFC 9457): one [`ApiError`] type that every
//! handler and extractor returns, and the mapping of store and domain errors onto it.
//!
//! A problem's `type` is `urn:annals:problem:<slug>`, one slug per kind of failure
//! (`insufficient-stock`, `version-conflict`, ...), so clients can branch on it without
//! parsing `detail`. A 500 says little to the client and everything to the log.
//!
//! Store errors ([`eventstore::Error`]), read-model errors ([`projections::Error`]) and
//! domain errors map onto [`ApiError`] here, so every handler returns
//! `Result<_, ApiError>`.

use std::any::Any;
use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:annals:problem:";

/// The header of a read-model query that waited in vain: the read model's checkpoint.
pub const CHECKPOINT_HEADER: &str = "annals-checkpoint";

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:annals:problem:<slug>`: what kind of failure, for programs.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of failure, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for people.
    pub detail: String,
}

/// The problem of a read-your-writes wait that ran out (a 503): a [`Problem`] with the
/// read model's checkpoint as an extension member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointProblem {
    /// `urn:annals:problem:projection-lagging`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary.
    pub title: String,
    /// 503.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// The read model has applied every event before this position.
    pub checkpoint: u64,
}

/// An error answer: a status, a problem body and, rarely, extra headers. Boxed, so
/// that `Result<_, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<Details>);

#[derive(Debug)]
struct Details {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    /// Extension members (RFC 9457 section 3.2): `checkpoint` of a read-your-writes
    /// wait that ran out, `action` of a request the policy denied.
    members: serde_json::Map<String, serde_json::Value>,
    headers: HeaderMap,
}

impl ApiError {
    /// The problem's type, the last part of its URN (`version-conflict`).
    pub(crate) fn slug(&self) -> &'static str {
        self.0.slug
    }

    /// A problem with this status, slug (the end of its `type`), title and detail.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError(Box::new(Details {
            status,
            slug,
            title,
            detail: detail.into(),
            members: serde_json::Map::new(),
            headers: HeaderMap::new(),
        }))
    }

    /// 400: the request is malformed.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    /// 404: the entity does not exist.
    pub fn not_found(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, "Not found", detail)
    }

    /// 500: a failure of the server. The error goes to the log in full; the client
    /// learns only that something failed.
    pub fn internal(error: &dyn fmt::Display) -> Self {
        tracing::error!(%error, "request failed with an internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; the failure has been logged",
        )
    }

    /// The same error with one more response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// The same error with the `checkpoint` extension member: the read model has applied
    /// every event before this position.
    pub fn with_checkpoint(mut self, checkpoint: u64) -> Self {
        self.0
            .members
            .insert("checkpoint".to_owned(), checkpoint.into());
        self
    }

    /// The same error with the `action` extension member: the policy action (one of
    /// `security::policy::ACTIONS`) that was denied.
    pub fn with_action(mut self, action: &str) -> Self {
        self.0.members.insert("action".to_owned(), action.into());
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let details = &self.0;
        Problem {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{}", details.slug),
            title: details.title.to_owned(),
            status: details.status.as_u16(),
            detail: details.detail.clone(),
        }
    }

    /// The body as JSON: the problem, with its extension members.
    pub(crate) fn body(&self) -> Vec<u8> {
        let problem = self.problem();
        if self.0.members.is_empty() {
            return serde_json::to_vec(&problem).unwrap_or_default();
        }
        let mut body = match serde_json::to_value(&problem) {
            Ok(serde_json::Value::Object(body)) => body,
            _ => serde_json::Map::new(),
        };
        body.extend(self.0.members.clone());
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details = &self.0;
        write!(
            f,
            "{} {}: {}",
            details.status.as_u16(),
            details.slug,
            details.detail
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.0.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.extend(self.0.headers);
        response
    }
}

impl From<eventstore::Error> for ApiError {
    fn from(error: eventstore::Error) -> Self {
        use eventstore::Error as E;
        match &error {
            E::InvalidStreamId { .. } => {
                ApiError::bad_request("invalid-stream-id", error.to_string())
            }
            E::EventTooLarge { .. } | E::AppendTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event-too-large",
                "Payload too large",
                error.to_string(),
            ),
            E::VersionConflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "Version conflict",
                format!("{error}; other writers kept changing it, try again"),
            ),
            E::IdempotencyMismatch { .. } => idempotency_key_reused(),
            E::WriterStopped(_) => {
                tracing::error!(%error, "a command found the store's writer stopped");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Service unavailable",
                    "the event store is not accepting writes",
                )
            }
            E::Cluster { .. } => {
                // NATS unreachable or electing a leader, or this node's copy behind: the
                // append may or may not have been stored, and a retry with the same
                // idempotency key answers either way.
                tracing::warn!(%error, "a command could not reach the log on JetStream");
                unavailable(
                    "store-unavailable",
                    "the log on JetStream did not answer; try again",
                )
            }
            _ => ApiError::internal(&error),
        }
    }
}

impl From<projections::Error> for ApiError {
    fn from(error: projections::Error) -> Self {
        use projections::Error as E;
        match error {
            E::Timeout { checkpoint, .. } => unavailable("projection-lagging", error.to_string())
                .with_checkpoint(checkpoint.0)
                .with_header(
                    HeaderName::from_static(CHECKPOINT_HEADER),
                    HeaderValue::from(checkpoint.0),
                ),
            E::Faulted { .. } => unavailable("projection-faulted", error.to_string()),
            E::NotBuilt(_) => unavailable("projection-not-built", error.to_string()),
            E::Stopped => unavailable("projections-stopped", error.to_string()),
            E::UnknownProjection(_) => ApiError::not_found("unknown-projection", error.to_string()),
            other => ApiError::internal(&other),
        }
    }
}

/// 503: the server runs no read models.
pub(crate) fn projections_not_running() -> ApiError {
    unavailable("projections-not-running", "this server runs no read models")
}

/// 503 `slug` with `Retry-After: 1`: a refusal that a retry a moment later may not meet
/// (a read model catching up, the log on JetStream electing a leader).
fn unavailable(slug: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        slug,
        "Service unavailable",
        detail,
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// 404 `correlations-not-kept`: the server keeps no `correlations` read model (it was
/// started without `--correlations`), so it cannot list a correlation's events.
pub(crate) fn correlations_not_kept() -> ApiError {
    ApiError::not_found(
        "correlations-not-kept",
        "this server keeps no correlation index: start it with --correlations (or \
         ANNALS_CORRELATIONS=true, or correlations = true in its config file), and the \
         index is then built from the start of the log",
    )
}

/// How long a client should wait before retrying a command refused after a writer
/// failure: about how long a supervisor takes to restart the server.
const STORE_FAILED_RETRY_AFTER_SECS: &str = "5";

/// 503 `store-failed`: the event store's writer failed (a write or an `fdatasync` of the
/// log failed), so this server takes no more commands; `annals serve` exits (code 75) for
/// its supervisor to restart it, and the restarted server re-reads the disk. `detail`
/// says what failed.
pub fn store_failed(detail: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-failed",
        "Service unavailable",
        detail,
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from_static(STORE_FAILED_RETRY_AFTER_SECS),
    )
}

/// 422 `too-many-lines`: an order with more lines than the server takes
/// (`--max-order-lines`).
pub(crate) fn too_many_lines(lines: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "too-many-lines",
        "Too many order lines",
        format!(
            "the order has {lines} lines; this server takes at most {max} per order \
             (--max-order-lines): split it into several orders"
        ),
    )
}

/// The slug of [`idempotency_key_reused`].
pub(crate) const IDEMPOTENCY_KEY_REUSED: &str = "idempotency-key-reused";

/// 422: an idempotency key came back with another request.
pub(crate) fn idempotency_key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        IDEMPOTENCY_KEY_REUSED,
        "Idempotency key reused",
        "this Idempotency-Key was used for a different request (another route or body); \
         use a new key for a new request",
    )
}

/// A domain error's HTTP face: its status and its problem slug.
pub(crate) trait DomainError: std::error::Error {
    /// The status and slug of this error.
    fn classify(&self) -> (StatusCode, &'static str);
}

impl<E: DomainError> From<&E> for ApiError {
    fn from(error: &E) -> Self {
        let (status, slug) = error.classify();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            _ => "Domain rule violated",
        };
        ApiError::new(status, slug, title, error.to_string())
    }
}

const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

impl DomainError for inventory::Error {
    fn classify(&self) -> (StatusCode, &'static str) {
        use inventory::Error as E;
        match self {
            E::UnknownSku => (StatusCode::NOT_FOUND, "unknown-sku"),
            E::AlreadyRegistered { .. } => (StatusCode::CONFLICT, "sku-already-registered"),
            E::BlankSku => (UNPROCESSABLE, "blank-sku"),
            E::BlankName => (UNPROCESSABLE, "blank-name"),
            E::BlankOrderId => (UNPROCESSABLE, "blank-order-id"),
            E::ZeroPrice => (UNPROCESSABLE, "zero-price"),
            E::ZeroQuantity => (UNPROCESSABLE, "zero-quantity"),
            E::StockOverflow { .. } => (UNPROCESSABLE, "stock-overflow"),
            E::InsufficientStock { .. } => (UNPROCESSABLE, "insufficient-stock"),
            E::AlreadyReserved { .. } => (StatusCode::CONFLICT, "already-reserved"),
            E::NoReservation { .. } => (StatusCode::NOT_FOUND, "no-reservation"),
        }
    }
}

impl DomainError for payments::Error {
    fn classify(&self) -> (StatusCode, &'static str) {
        use payments::Error as E;
        match self {
            E::NoAccount => (StatusCode::NOT_FOUND, "unknown-account"),
            E::AlreadyOpen { .. } => (StatusCode::CONFLICT, "account-already-open"),
            E::BlankCustomerId => (UNPROCESSABLE, "blank-customer-id"),
            E::BlankOrderId => (UNPROCESSABLE, "blank-order-id"),
            E::ZeroAmount => (UNPROCESSABLE, "zero-amount"),
            E::BalanceOverflow { .. } => (UNPROCESSABLE, "balance-overflow"),
            E::InsufficientFunds { .. } => (UNPROCESSABLE, "insufficient-funds"),
            E::AlreadyCharged { .. } => (StatusCode::CONFLICT, "already-charged"),
            E::NotCharged { .. } => (StatusCode::NOT_FOUND, "not-charged"),
            E::AlreadyRefunded { .. } => (StatusCode::CONFLICT, "already-refunded"),
        }
    }
}

impl DomainError for payments::card::Error {
    fn classify(&self) -> (StatusCode, &'static str) {
        use payments::card::Error as E;
        match self {
            E::BlankCustomerId => (UNPROCESSABLE, "blank-customer-id"),
            E::BadCardToken => (UNPROCESSABLE, "bad-card-token"),
        }
    }
}

impl DomainError for orders::Error {
    fn classify(&self) -> (StatusCode, &'static str) {
        use orders::Error as E;
        match self {
            E::AlreadyPlaced { .. } => (StatusCode::CONFLICT, "order-already-placed"),
            E::BlankOrderId => (UNPROCESSABLE, "blank-order-id"),
            E::BlankCustomerId => (UNPROCESSABLE, "blank-customer-id"),
            E::NoLines => (UNPROCESSABLE, "no-lines"),
            E::BlankSku { .. } => (UNPROCESSABLE, "blank-sku"),
            E::ZeroQuantity { .. } => (UNPROCESSABLE, "zero-quantity"),
            E::DuplicateSku { .. } => (UNPROCESSABLE, "duplicate-sku"),
            E::UnknownOrder => (StatusCode::NOT_FOUND, "unknown-order"),
            E::NotPending { .. } => (StatusCode::CONFLICT, "order-not-pending"),
            E::ZeroTotal => (UNPROCESSABLE, "zero-total"),
            E::BlankReason => (UNPROCESSABLE, "blank-reason"),
        }
    }
}

impl DomainError for customers::Error {
    fn classify(&self) -> (StatusCode, &'static str) {
        use customers::Error as E;
        match self {
            E::AlreadyRegistered { .. } => (StatusCode::CONFLICT, "customer-already-registered"),
            E::BlankCustomerId => (UNPROCESSABLE, "blank-customer-id"),
            E::UnknownCustomer => (StatusCode::NOT_FOUND, "unknown-customer"),
            E::AlreadyErased => (StatusCode::CONFLICT, "personal-data-erased"),
            E::BlankReason => (UNPROCESSABLE, "blank-reason"),
        }
    }
}

/// The fallback of the router: 404 for a path no route matches.
pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("no-route", format!("no route for {method} {}", uri.path()))
}

/// 405 for a path that exists with another method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

/// The answer to a handler that panicked: a 500, with the panic in the log.
pub(crate) fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(&format_args!("handler panicked: {message}")).into_response()
}
