//! The outbox's one error type. Each variant says who should handle it and how.

use eventstore::Position;

/// Everything that can go wrong in the relay, restore and audit.
///
/// The relay's [`run`](crate::Relay::run) never gives up on NATS: it retries every
/// NATS-side error below with backoff and a circuit breaker (reporting it in
/// [`RelayStatus::last_error`](crate::RelayStatus::last_error)) and returns only on
/// shutdown or when the local store fails. One-shot calls (`Relay::check`, `restore`,
/// `audit`) return these errors to their caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NATS URL does not parse. A configuration error: fix `--nats-url` /
    /// `ANNALS_NATS_URL` (e.g. `nats://127.0.0.1:4222`).
    #[error("invalid NATS URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A setting of [`RelayConfig`](crate::RelayConfig) is invalid (a stream name with a
    /// dot, an empty subject prefix, a zero limit, ...). A configuration error: fix it.
    #[error("invalid outbox configuration: {0}")]
    InvalidConfig(String),

    /// No NATS server could be reached at the URL (refused, timed out, DNS, TLS,
    /// authentication). Transient for the relay, which retries; for a one-shot command,
    /// check the URL and that nats-server runs, then run it again.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's reason.
        reason: String,
    },

    /// The server answers but does not run JetStream (started without `-js`, or the
    /// account has no JetStream). Enable JetStream on the server. A restarting server may
    /// answer this briefly, so the relay retries it.
    #[error(
        "the NATS server at {url} does not offer JetStream; start it with -js (or enable JetStream for the account)"
    )]
    JetStreamNotEnabled {
        /// The URL of the server.
        url: String,
    },

    /// The JetStream stream exists with a configuration the relay cannot keep a complete,
    /// ordered copy in (other subjects, other storage, limits that drop messages, ...).
    /// Fix the stream (`nats stream edit`), delete it, or configure another stream name.
    #[error("the JetStream stream {stream} is incompatible with the relay's configuration: {}", problems.join("; "))]
    IncompatibleStream {
        /// The stream name.
        stream: String,
        /// Every difference found, one sentence each.
        problems: Vec<String>,
    },

    /// The stream does not exist (restore, audit). Check `--stream`.
    #[error("the JetStream stream {stream} does not exist")]
    StreamNotFound {
        /// The stream name.
        stream: String,
    },

    /// A NATS request or publish failed or timed out: NATS is down, restarting or
    /// overloaded, or the stream changed under the relay. Transient: the relay retries
    /// with backoff; a one-shot command can be run again.
    #[error("NATS {operation} failed: {reason}")]
    Nats {
        /// What was being done.
        operation: &'static str,
        /// The client's or server's reason.
        reason: String,
    },

    /// An event is larger than the server's `max_payload` (1 MiB by default) allows.
    /// Raise `max_payload` in the server configuration to at least the store's
    /// `max_event_bytes` plus 4 KiB of headers; the relay retries until then.
    #[error(
        "the event at position {position} makes a message of {size} bytes, over the NATS server's max_payload"
    )]
    MessageTooLarge {
        /// The event's position.
        position: Position,
        /// The payload size plus headers, roughly.
        size: usize,
    },

    /// A message of the stream is not a well-formed Annals event: the stream holds
    /// messages from another publisher, or was tampered with. Run `annals audit`.
    #[error("message {sequence} of the JetStream stream is not an Annals event: {reason}")]
    MalformedMessage {
        /// The message's stream sequence.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },

    /// The JetStream copy does not continue the local log: its last event is not the
    /// local event at that position, or it holds positions the log does not. The stream
    /// belongs to another log (or the log was restored from an older backup). Point the
    /// relay at the right stream; `annals audit` shows where the two part.
    #[error("the JetStream copy does not match the local log at position {position}: {reason}")]
    CopyDiverged {
        /// Where the two part.
        position: Position,
        /// How.
        reason: String,
    },

    /// Restore found the copy's positions not contiguous (a message removed, repeated or
    /// out of order). The copy cannot rebuild a node as it is: audit it against a
    /// healthy node, and restore from another copy.
    #[error(
        "the JetStream copy is not contiguous: expected position {expected}, found {found} (message {sequence})"
    )]
    NotContiguous {
        /// The position that should come next.
        expected: Position,
        /// The position found instead.
        found: Position,
        /// The message's stream sequence.
        sequence: u64,
    },

    /// A message of the copy does not carry the chain hash its place in the log gives
    /// (restore, audit): its event was altered after publishing, its `Annals-Hash` or
    /// `Annals-Prev-Hash` is wrong, or a message before it was altered or removed. The
    /// copy cannot rebuild a node as it is: audit it against a healthy node, and restore
    /// from another copy.
    #[error(
        "the JetStream copy's hash chain breaks at position {position} (message {sequence}): {reason}"
    )]
    ChainBroken {
        /// The first position whose message fails the check.
        position: Position,
        /// The message's stream sequence.
        sequence: u64,
        /// How it fails.
        reason: String,
    },

    /// `restore --expect-head` was not met: the copy ends before the expected position,
    /// or the chain hash there is another. The data directory holds the events read so
    /// far and must not be used: restore into a new directory from a complete copy.
    #[error("the restore did not reach the expected head {position}:{hash}: {reason}")]
    ExpectedHeadNotMet {
        /// The expected head position.
        position: Position,
        /// The expected chain hash there.
        hash: eventstore::ChainHash,
        /// What the copy holds instead.
        reason: String,
    },

    /// The local store failed (I/O, corruption, a version conflict on import, closed).
    /// See the inner error; it says how to handle it.
    #[error(transparent)]
    Store(#[from] eventstore::Error),

    /// The store was closed while the relay was reading from it. Shut the relay down
    /// before closing the store.
    #[error("the event store was closed under the relay")]
    StoreClosed,
}

impl Error {
    /// Whether the error comes from the NATS side and may go away by itself (the relay
    /// retries these; the others need the caller or an operator).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::JetStreamNotEnabled { .. }
                | Error::Nats { .. }
                | Error::StreamNotFound { .. }
        )
    }

    /// Whether the error comes from the local store rather than from NATS.
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store(_) | Error::StoreClosed)
    }

    pub(crate) fn nats(operation: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Nats {
            operation,
            reason: reason.to_string(),
        }
    }
}
