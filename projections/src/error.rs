//! The errors of the crate: [`ApplyError`] is what a projection returns when it cannot
//! apply an event (the runner then stops it in the faulted state), [`Error`] is what the
//! runner, its handle and the offline functions return to their callers.

use eventstore::Position;
use serde::Serialize;

/// Why a projection could not apply an event. The runner never skips such an event: the
/// projection stops at it, faulted, until it is retried or rebuilt by code that can.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event's payload does not decode (a poison event, or a schema this code does not
    /// know). Deploy code that decodes it, then retry or rebuild.
    #[error("cannot decode the {event_type} event: {reason}")]
    Decode {
        /// The event's type name.
        event_type: String,
        /// What the decoder said.
        reason: String,
    },

    /// The event contradicts what the read model holds (say, a confirmation of an order
    /// it never saw placed): a gap in the log or a bug in the projection.
    #[error("the event does not fit the read model: {0}")]
    Inconsistent(String),

    /// A stored value of the read model does not decode: the model was written by other
    /// code under the same version. Rebuild it.
    #[error("cannot decode the stored value in table {table}: {source}")]
    Value {
        /// The table.
        table: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },

    /// A projection used one table with two value types: a bug in the projection.
    #[error("table {0} is used with two different value types")]
    TableType(&'static str),

    /// Reading or writing the read model failed (sled). Often transient: retry.
    #[error(transparent)]
    Store(#[from] eventstore::Error),
}

/// Where and why a projection stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// The position of the event it could not apply. Everything before its checkpoint is
    /// applied; nothing at or after this position is.
    pub position: Position,
    /// Why, for the operator.
    pub error: String,
    /// The stream of the event, when the projection failed on one (`None`: reading the
    /// log or writing the model failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The type of the event, when the projection failed on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

impl Fault {
    /// A fault at `position` that no event caused (reading the log or writing the
    /// model failed): retrying it is the operator's call, it is never parked.
    pub fn new(position: Position, error: impl Into<String>) -> Self {
        Fault {
            position,
            error: error.into(),
            stream: None,
            event_type: None,
        }
    }

    /// The projection failed (an error or a panic) on `event`: a poison event, retried
    /// and then faulted or parked by the runner's policy.
    pub fn on_event(event: &eventstore::StoredEvent<'_>, error: impl Into<String>) -> Self {
        Fault {
            position: Position(event.position),
            error: error.into(),
            stream: Some(event.stream_id.to_owned()),
            event_type: Some(event.event_type.to_owned()),
        }
    }

    /// Whether an event caused it (see [`Fault::on_event`]).
    pub fn is_poison(&self) -> bool {
        self.stream.is_some()
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "faulted at position {}", self.position)?;
        if let (Some(stream), Some(event_type)) = (&self.stream, &self.event_type) {
            write!(f, " (a {event_type} event of stream {stream})")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// What the runner's handle and the offline functions report to their callers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event store failed (reading the log, or the read-model storage).
    #[error(transparent)]
    Store(#[from] eventstore::Error),

    /// No projection of this name is registered. Over HTTP a 404.
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),

    /// Two projections were registered under one name: a wiring bug.
    #[error("two projections are named {0:?}")]
    DuplicateName(String),

    /// A projection's version is too large to be stored with its build number.
    #[error("projection {name:?} has version {version}, above the largest supported ({max})")]
    VersionTooLarge {
        /// The projection.
        name: String,
        /// Its version.
        version: u32,
        /// The largest supported.
        max: u32,
    },

    /// The projection (or its rebuild) stopped on an event it could not apply. Over HTTP
    /// a 503 naming the position; fix the cause, then retry or rebuild.
    #[error("projection {name:?} {fault}")]
    Faulted {
        /// The projection.
        name: String,
        /// Where and why.
        fault: Fault,
    },

    /// A read-your-writes wait ran out before the projection applied the position. Over
    /// HTTP a 503 with the checkpoint, so the client can retry later.
    #[error(
        "projection {name:?} has not applied position {wanted} yet (its checkpoint is {checkpoint})"
    )]
    Timeout {
        /// The projection.
        name: String,
        /// The position waited for.
        wanted: Position,
        /// The position up to which (exclusive) it has applied the log.
        checkpoint: Position,
    },

    /// The projection has no readable model yet (it was never built). Over HTTP a 503.
    #[error("projection {0:?} has no read model yet")]
    NotBuilt(String),

    /// The runner is not running (shut down, or the store closed). Over HTTP a 503.
    #[error("the projection runner has stopped")]
    Stopped,

    /// A stored value could not be decoded by a query: the active model was written by
    /// another version of the projection with another shape.
    #[error("cannot decode the stored value in table {table}: {source}")]
    Value {
        /// The table.
        table: String,
        /// The postcard error.
        source: postcard::Error,
    },
}
