//! The NATS side: connecting, creating or checking the stream, finding where the copy
//! ends, and reading the copy back in order. Errors are mapped to [`Error`] here, once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::ContextBuilder, stream};
use async_nats::{Client, ConnectErrorKind};
use eventstore::{Position, RecordedEvent};
use futures_util::StreamExt;

use crate::config::{RelayConfig, Storage, redact, validate_url};
use crate::error::Error;
use crate::message;
use crate::tls::NatsTls;

/// How many deleted messages at the end of the stream the relay steps back over, on
/// servers that cannot look up the last message under a wildcard.
const MAX_BACKWARD_STEPS: u64 = 100_000;

/// The JetStream error code for "stream not found".
const STREAM_NOT_FOUND: u64 = 10059;

/// Connects to NATS at `url` (one or more comma-separated addresses) with the TLS
/// settings `tls`. Fails at once if no server answers; once connected, the client
/// reconnects by itself after an outage.
pub async fn connect(
    url: &str,
    tls: &NatsTls,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Client, Error> {
    connect_with(url, tls, connect_timeout, request_timeout, |attempt| {
        // The client's own reconnect loop: quick at first, then every second, so that a
        // NATS that comes back is found within about a second.
        Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5)).min(1000))
    })
    .await
}

pub(crate) async fn connect_with(
    url: &str,
    tls: &NatsTls,
    connect_timeout: Duration,
    request_timeout: Duration,
    reconnect_delay: impl Fn(usize) -> Duration + Send + Sync + 'static,
) -> Result<Client, Error> {
    validate_url(url)?;
    tls.validate()?;
    let addresses: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|part| part.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|error: std::io::Error| Error::InvalidUrl {
            url: redact(url),
            reason: error.to_string(),
        })?;
    let options = tls.apply(
        async_nats::ConnectOptions::new()
            .name("annals-outbox")
            .connection_timeout(connect_timeout)
            .request_timeout(Some(request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay),
    );
    // The client's own timeout covers the TCP connect and the handshake; this one bounds
    // everything, DNS included.
    let connecting = tokio::time::timeout(
        connect_timeout + Duration::from_secs(1),
        options.connect(addresses),
    );
    match connecting.await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) if error.kind() == ConnectErrorKind::ServerParse => Err(Error::InvalidUrl {
            url: redact(url),
            reason: error.to_string(),
        }),
        Ok(Err(error)) => Err(Error::Connect {
            url: redact(url),
            reason: error.to_string(),
        }),
        Err(_) => Err(Error::Connect {
            url: redact(url),
            reason: format!("no answer within {connect_timeout:?}"),
        }),
    }
}

/// A JetStream context whose API requests and acknowledgements wait at most `timeout`,
/// with room for `max_acks_in_flight` pending acknowledgements.
pub(crate) fn context(
    client: Client,
    timeout: Duration,
    max_acks_in_flight: usize,
) -> jetstream::Context {
    ContextBuilder::new()
        .timeout(timeout)
        .ack_timeout(timeout)
        .max_ack_inflight(max_acks_in_flight)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Checks that the server offers JetStream, with a plain request to `$JS.API.INFO` (the
/// client's typed account info does not parse the answer of older servers such as
/// Debian's 2.9).
pub(crate) async fn check_jetstream(
    jetstream: &jetstream::Context,
    url: &str,
) -> Result<(), Error> {
    let not_enabled = || Error::JetStreamNotEnabled { url: redact(url) };
    let reply = jetstream
        .client()
        .request("$JS.API.INFO", bytes::Bytes::new())
        .await
        .map_err(|error| match error.kind() {
            async_nats::RequestErrorKind::NoResponders => not_enabled(),
            _ => Error::nats("account info request", error),
        })?;
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|error| Error::nats("account info request", error))?;
    match answer.get("error") {
        None => Ok(()),
        Some(error) if error.get("code").and_then(serde_json::Value::as_u64) == Some(503) => {
            Err(not_enabled())
        }
        Some(error) => Err(Error::nats("account info request", error)),
    }
}

/// The stream, or `None` if it does not exist.
pub(crate) async fn find_stream(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Stream>, Error> {
    use jetstream::context::GetStreamErrorKind;
    match jetstream.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error) => match error.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code().0 == STREAM_NOT_FOUND || inner.code() == 404 =>
            {
                Ok(None)
            }
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => Err(
                Error::InvalidConfig(format!("{name:?} is not a valid JetStream stream name")),
            ),
            _ => Err(Error::nats("stream info request", error)),
        },
    }
}

/// The stream that must exist (restore, audit).
pub(crate) async fn existing_stream(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<stream::Stream, Error> {
    find_stream(jetstream, name)
        .await?
        .ok_or_else(|| Error::StreamNotFound {
            stream: name.to_owned(),
        })
}

/// The copy's stream, which must exist, and its state now: how restore, audit and repair
/// start reading the copy.
pub(crate) async fn open_copy(
    client: &Client,
    name: &str,
    request_timeout: Duration,
) -> Result<(stream::Stream, stream::State), Error> {
    let jetstream = context(client.clone(), request_timeout, 1024);
    check_jetstream(&jetstream, &crate::restore::server_url(client)).await?;
    let mut nats_stream = existing_stream(&jetstream, name).await?;
    let state = nats_stream
        .info()
        .await
        .map_err(|error| Error::nats("stream info request", error))?
        .state
        .clone();
    Ok((nats_stream, state))
}

/// The stream configuration the relay creates.
pub(crate) fn stream_config(config: &RelayConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some(
            "Annals: the copy of the event log, published by the outbox relay".into(),
        ),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: match config.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_message_size: -1,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or checks that the existing one can hold the copy.
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: &RelayConfig,
) -> Result<stream::Stream, Error> {
    if let Some(mut stream) = find_stream(jetstream, &config.stream).await? {
        let problems = compatibility_problems(config, &stream.cached_info().config);
        if !problems.is_empty() {
            return Err(Error::IncompatibleStream {
                stream: config.stream.clone(),
                problems,
            });
        }
        let actual = stream.cached_info().config.duplicate_window;
        if actual != config.duplicate_window {
            tracing::info!(
                stream = %config.stream,
                configured = ?config.duplicate_window,
                ?actual,
                "the stream's duplicate window differs from the configured one; keeping the stream's"
            );
        }
        stream
            .info()
            .await
            .map_err(|error| Error::nats("stream info request", error))?;
        return Ok(stream);
    }
    tracing::info!(stream = %config.stream, "creating the JetStream stream");
    match jetstream.create_stream(stream_config(config)).await {
        Ok(stream) => Ok(stream),
        Err(error) => {
            use jetstream::context::CreateStreamErrorKind;
            Err(match error.kind() {
                CreateStreamErrorKind::JetStreamUnavailable => Error::JetStreamNotEnabled {
                    url: redact(&config.nats_url),
                },
                CreateStreamErrorKind::JetStream(inner) => Error::IncompatibleStream {
                    stream: config.stream.clone(),
                    problems: vec![format!("the server refused to create it: {inner}")],
                },
                _ => Error::nats("stream create request", error),
            })
        }
    }
}

/// Whether the subject pattern `pattern` matches every subject under `prefix`.
fn covers(pattern: &str, prefix: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    for token in prefix.split('.') {
        match pattern_tokens.next() {
            Some(">") => return true,
            Some("*") => {}
            Some(p) if p == token => {}
            _ => return false,
        }
    }
    pattern_tokens.next() == Some(">") && pattern_tokens.next().is_none()
}

/// Everything about `actual` that keeps it from holding a complete, ordered copy as
/// `config` wants it, one sentence each.
pub fn compatibility_problems(config: &RelayConfig, actual: &stream::Config) -> Vec<String> {
    let wanted = stream_config(config);
    let mut problems = Vec::new();
    if !actual
        .subjects
        .iter()
        .any(|pattern| covers(pattern, &config.subject_prefix))
    {
        problems.push(format!(
            "its subjects {:?} do not cover {}.>",
            actual.subjects, config.subject_prefix
        ));
    }
    if actual.retention != stream::RetentionPolicy::Limits {
        problems.push(format!(
            "its retention is {:?}, which deletes consumed messages; the copy needs limits retention",
            actual.retention
        ));
    }
    if actual.storage != wanted.storage {
        problems.push(format!(
            "its storage is {:?}, the configuration asks for {:?}",
            actual.storage, wanted.storage
        ));
    }
    if actual.num_replicas.max(1) != wanted.num_replicas {
        problems.push(format!(
            "it has {} replicas, the configuration asks for {}",
            actual.num_replicas, wanted.num_replicas
        ));
    }
    for (name, limit) in [
        ("max_msgs", actual.max_messages),
        ("max_bytes", actual.max_bytes),
        ("max_msgs_per_subject", actual.max_messages_per_subject),
    ] {
        if limit > 0 {
            problems.push(format!(
                "its {name} limit of {limit} would drop messages from the copy"
            ));
        }
    }
    if !actual.max_age.is_zero() {
        problems.push(format!(
            "its max_age of {:?} would drop messages from the copy",
            actual.max_age
        ));
    }
    if actual.no_ack {
        problems.push("it does not acknowledge publishes (no_ack)".into());
    }
    if actual.sealed {
        problems.push("it is sealed".into());
    }
    if actual.mirror.is_some() {
        problems.push("it is a mirror, which takes no publishes".into());
    }
    problems
}

/// Where the copy in `stream` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyEnd {
    /// The stream's last sequence (0: it never held a message). The relay's next publish
    /// expects exactly this (`Nats-Expected-Last-Sequence`).
    pub last_sequence: u64,
    /// The event in the last message the stream still holds, if it holds any.
    pub last_event: Option<RecordedEvent>,
    /// That message's place in the hash chain (`None`: no message, or one published by a
    /// release before the chain headers).
    pub last_chain: Option<message::Chain>,
}

/// Reads the stream's state and the position of its last message.
pub(crate) async fn copy_end(stream: &mut stream::Stream) -> Result<CopyEnd, Error> {
    let state = stream
        .info()
        .await
        .map_err(|error| Error::nats("stream info request", error))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(CopyEnd {
            last_sequence: state.last_sequence,
            last_event: None,
            last_chain: None,
        });
    }
    let last = match stream.get_raw_message(state.last_sequence).await {
        Ok(message) => message,
        Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
            // The last message was deleted: ask for the last one under the relay's subjects.
            let subjects = stream.cached_info().config.subjects.clone();
            let mut found = None;
            for subject in subjects {
                if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await
                    && found
                        .as_ref()
                        .is_none_or(|seen: &jetstream::message::StreamMessage| {
                            seen.sequence < message.sequence
                        })
                {
                    found = Some(message);
                }
            }
            if found.is_none() {
                // Older servers (2.9) take no wildcard there: step back over the deleted
                // messages at the end, one get each, up to a bound.
                let mut sequence = state.last_sequence;
                while found.is_none() && sequence > state.first_sequence {
                    if state.last_sequence - sequence >= MAX_BACKWARD_STEPS {
                        return Err(Error::nats(
                            "search for the stream's last message",
                            format!("more than {MAX_BACKWARD_STEPS} deleted messages at its end"),
                        ));
                    }
                    sequence -= 1;
                    match stream.get_raw_message(sequence).await {
                        Ok(message) => found = Some(message),
                        Err(error)
                            if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                        Err(error) => {
                            return Err(Error::nats("get of the stream's last message", error));
                        }
                    }
                }
            }
            match found {
                Some(message) => message,
                None => {
                    return Ok(CopyEnd {
                        last_sequence: state.last_sequence,
                        last_event: None,
                        last_chain: None,
                    });
                }
            }
        }
        Err(error) => return Err(Error::nats("get of the stream's last message", error)),
    };
    let malformed = |error: message::DecodeError| Error::MalformedMessage {
        sequence: last.sequence,
        reason: error.to_string(),
    };
    let event = message::decode(Some(&last.headers), &last.payload).map_err(malformed)?;
    let chain = message::chain(Some(&last.headers)).map_err(malformed)?;
    Ok(CopyEnd {
        last_sequence: state.last_sequence,
        last_event: Some(event),
        last_chain: chain,
    })
}

/// Where the relay resumes: right after the last event the stream holds, whatever the
/// checkpoint says. So a crash between publish and checkpoint never duplicates, however
/// long the relay was down, and a copy that lost its tail (a nats-server that lost
/// acknowledged messages, or messages deleted at its end) gets the missing events again:
/// the relay never leaves a gap. A stream that holds no message (new, wiped or purged)
/// gets the whole log, so the copy always starts at position 0.
pub fn resume_position(last_position: Option<Position>) -> Position {
    last_position.map_or(Position(0), Position::next)
}

/// One message of the copy.
#[derive(Debug)]
pub(crate) struct CopiedMessage {
    /// Its stream sequence.
    pub sequence: u64,
    /// Messages after it that the stream held when it was delivered.
    pub pending: u64,
    /// The event, or why the message is not one.
    pub event: Result<RecordedEvent, message::DecodeError>,
    /// Its place in the hash chain (`None`: a message of a release before the chain
    /// headers), or why its chain headers are malformed.
    pub chain: Result<Option<message::Chain>, message::DecodeError>,
}

/// The copy, read in stream order with an ordered consumer (no acks, recreated by the
/// client on a gap).
pub(crate) struct CopyReader {
    messages: consumer::pull::Ordered,
    idle_timeout: Duration,
}

impl std::fmt::Debug for CopyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyReader").finish_non_exhaustive()
    }
}

impl CopyReader {
    /// Starts reading `stream` from its first message.
    pub async fn open(stream: &stream::Stream, idle_timeout: Duration) -> Result<Self, Error> {
        Self::open_with(stream, consumer::DeliverPolicy::All, idle_timeout).await
    }

    /// Starts reading `stream` at sequence `start_sequence` (or the first message after
    /// it, if that one was deleted).
    pub async fn open_at(
        stream: &stream::Stream,
        start_sequence: u64,
        idle_timeout: Duration,
    ) -> Result<Self, Error> {
        let policy = consumer::DeliverPolicy::ByStartSequence { start_sequence };
        Self::open_with(stream, policy, idle_timeout).await
    }

    async fn open_with(
        stream: &stream::Stream,
        deliver_policy: consumer::DeliverPolicy,
        idle_timeout: Duration,
    ) -> Result<Self, Error> {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                description: Some("annals restore/audit/repair reader".into()),
                ..Default::default()
            })
            .await
            .map_err(|error| Error::nats("consumer create request", error))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| Error::nats("consumer pull", error))?;
        Ok(CopyReader {
            messages,
            idle_timeout,
        })
    }

    /// The next message; an error if none comes within the idle timeout (the caller
    /// knows from `pending` when the copy ends, so a wait here means NATS is stuck).
    pub async fn next(&mut self) -> Result<CopiedMessage, Error> {
        let next = tokio::time::timeout(self.idle_timeout, self.messages.next())
            .await
            .map_err(|_| {
                Error::nats(
                    "read of the stream",
                    format!("no message within {:?}", self.idle_timeout),
                )
            })?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(Error::nats("read of the stream", error)),
            None => return Err(Error::nats("read of the stream", "the consumer ended")),
        };
        let info = message
            .info()
            .map_err(|error| Error::nats("read of the stream", error))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let event = message::decode(message.headers.as_ref(), &message.payload);
        let chain = message::chain(message.headers.as_ref());
        Ok(CopiedMessage {
            sequence,
            pending,
            event,
            chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_cover_the_prefix_or_not() {
        assert!(covers("annals.events.>", "annals.events"));
        assert!(covers(">", "annals.events"));
        assert!(covers("annals.>", "annals.events"));
        assert!(covers("*.events.>", "annals.events"));
        assert!(!covers("annals.events.*", "annals.events"));
        assert!(!covers("annals.events", "annals.events"));
        assert!(!covers("annals.other.>", "annals.events"));
        assert!(!covers("annals.events.x.>", "annals.events"));
    }

    #[test]
    fn the_relay_resumes_right_after_the_copy() {
        // A new, wiped or purged stream gets the whole log.
        assert_eq!(resume_position(None), Position(0));
        // Published but not checkpointed: resume after the copy, no duplicate.
        assert_eq!(resume_position(Some(Position(89))), Position(90));
        // The copy lost its tail below the checkpoint: republish from where it ends, no
        // gap.
        assert_eq!(resume_position(Some(Position(30))), Position(31));
    }

    #[test]
    fn the_created_stream_is_compatible_and_changes_are_named() {
        let config = RelayConfig::new("nats://127.0.0.1");
        assert!(compatibility_problems(&config, &stream_config(&config)).is_empty());
        let mut other = stream_config(&config);
        other.subjects = vec!["elsewhere.>".into()];
        other.storage = stream::StorageType::Memory;
        other.max_age = Duration::from_secs(60);
        other.retention = stream::RetentionPolicy::WorkQueue;
        let problems = compatibility_problems(&config, &other);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
