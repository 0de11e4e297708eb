//! The problem responses of the OpenAPI document, declared once. Each type here is one
//! response (a status, a description and a [`Problem`] body as
//! `application/problem+json`) or a set of them; a handler's
//! `#[utoipa::path(responses(...))]` lists its success response and then names the
//! problem responses it can answer, e.g. `responses((status = 200, ...), BadRequest,
//! UnknownSku)`.
//!
//! Each description names the problem `type`s (`urn:annals:problem:<slug>`) a client
//! can meet under that status, so a client can branch on them. The types describe the
//! document only: handlers answer with [`crate::ApiError`].

use utoipa::IntoResponses;

use crate::problem::{CheckpointProblem, Problem};

/// The refusals every command (`POST`) can answer.
#[derive(Debug, IntoResponses)]
pub enum CommandProblems {
    /// Malformed request: the body (`malformed-json`, `invalid-body`, `unreadable-body`),
    /// an id (`invalid-id`, `invalid-path`) or a header (`invalid-header`,
    /// `invalid-if-match`, `invalid-idempotency-key`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// If-Match does not match (`precondition-failed`); the `ETag` header carries the
    /// current version.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// Body too large (`body-too-large`, `event-too-large`).
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// Not JSON (`unsupported-media-type`).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A domain rule (its own `type`, e.g. `insufficient-funds`, `zero-quantity`) or a
    /// reused Idempotency-Key (`idempotency-key-reused`).
    #[response(status = 422, content_type = "application/problem+json")]
    UnprocessableEntity(Problem),
    /// The store takes no writes: its writer failed to write or sync the log
    /// (`store-failed`, with `Retry-After`: the command was not recorded, and the server
    /// exits to be restarted), or it is closing (`store-unavailable`); or, for a command
    /// with personal data, the server was started without a master key
    /// (`personal-data-disabled`).
    #[response(status = 503, content_type = "application/problem+json")]
    ServiceUnavailable(Problem),
}

/// Conflict: the entity exists already (`sku-already-registered`,
/// `account-already-open`, `customer-already-registered`), the customer's personal data
/// was erased (`personal-data-erased`: an erased id is not registered again), the order is not pending (`order-not-pending`), the command
/// would change nothing (`no-change`), or other writers kept changing the aggregate
/// past the retries (`version-conflict`).
#[derive(Debug, IntoResponses)]
#[response(status = 409, content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// Malformed request: an id in the path (`invalid-id`, `invalid-path`,
/// `invalid-stream-id`, `invalid-event-id`), a query parameter (`invalid-query`) or a
/// header (`invalid-header`).
#[derive(Debug, IntoResponses)]
#[response(status = 400, content_type = "application/problem+json")]
pub struct BadRequest(pub Problem);

/// Unchanged since the If-None-Match version.
#[derive(Debug, IntoResponses)]
#[response(status = 304)]
pub struct NotModified;

/// Unknown sku (`unknown-sku`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownSku(pub Problem);

/// No such account (`unknown-account`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownAccount(pub Problem);

/// Unknown order (`unknown-order`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownOrder(pub Problem);

/// No fulfilment saga for this order (yet) (`unknown-saga`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownSaga(pub Problem);

/// The console has no such file (`unknown-asset`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownAsset(pub Problem);

/// The stream has no events (`unknown-stream`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownStream(pub Problem);

/// No such event (`unknown-event`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownEvent(pub Problem);

/// No such projection (`unknown-projection`).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownProjection(pub Problem);

/// A read-model query that cannot be answered now (with `Retry-After`): the position
/// was not applied in time (`projection-lagging`, with the `checkpoint` member and the
/// `Annals-Checkpoint` header), the read model faulted (`projection-faulted`) or is not
/// built (`projection-not-built`), or the server runs no read models
/// (`projections-not-running`, `projections-stopped`).
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct ReadModelUnavailable(pub CheckpointProblem);

/// A read of one entity with `min_position` whose position this node's log did not hold
/// in time (`projection-lagging`, with the log's `checkpoint` member and `Retry-After`):
/// on a node of a cluster, its copy of the log trails the node that took the command.
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct LogLagging(pub CheckpointProblem);

/// The server runs no read models (`projections-not-running`), or they have stopped
/// (`projections-stopped`).
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct ProjectionsUnavailable(pub Problem);

/// The server keeps no correlation index (`correlations-not-kept`): it was started
/// without `--correlations`.
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct CorrelationsNotKept(pub Problem);

/// Metrics are off (`metrics-off`): the server was started with `--no-metrics`.
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct MetricsOff(pub Problem);

/// Not ready, and why: `not-ready` (shutting down, the writer stopped, the index
/// lagging), or `store-failed` (a write or sync of the log failed; `detail` names it, and
/// the server is about to exit to be restarted).
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct NotReady(pub Problem);

/// Not alive: the store's writer failed (`store-failed`, `detail` names it); the server
/// is about to exit, and if it does not, it should be restarted.
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct StoreFailed(pub Problem);

/// The fault is refused (`chaos-fault-invalid`): an unknown point, an effect the point
/// does not have, a probability outside (0, 1], no end, a bad delay; `detail` says which.
#[derive(Debug, IntoResponses)]
#[response(status = 422, content_type = "application/problem+json")]
pub struct InvalidFault(pub Problem);

/// 404: no active fault with this id (`unknown-fault`), or the server runs without
/// `--chaos` (the problem of an unknown path).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownFault(pub Problem);

/// The stream's state cannot be folded as asked: no aggregate owns its category
/// (`no-aggregate`), or the version asked for is beyond the stream's head
/// (`version-beyond-head`).
#[derive(Debug, IntoResponses)]
#[response(status = 422, content_type = "application/problem+json")]
pub struct UnfoldableStream(pub Problem);

/// The live log cannot start there (`position-beyond-end`): `from` (or the position
/// after `Last-Event-ID`) is beyond the end of the log.
#[derive(Debug, IntoResponses)]
#[response(status = 422, content_type = "application/problem+json")]
pub struct PositionBeyondEnd(pub Problem);

/// No such customer (`unknown-customer`): never registered (and, for its personal
/// data, holding no key either).
#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct UnknownCustomer(pub Problem);

/// Personal data cannot be answered now (with `Retry-After`): the server was started
/// without a master key (`personal-data-disabled`), or the position asked for was not
/// applied in time (`projection-lagging`, with the `checkpoint` member), or the read
/// models do not run (`projections-not-running`, `projections-stopped`).
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct PersonalDataUnavailable(pub Problem);
