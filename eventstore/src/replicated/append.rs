//! An append to the log on JetStream: checked against this node's copy, published as one
//! message, acknowledged once JetStream has it replicated and this node's copy applied
//! it (see the module above for what each step guarantees).

use std::collections::HashSet;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::{Link, wire};
use crate::envelope::NewEvent;
use crate::error::Error;
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::store::{AppendOutcome, EventStore};

/// How often an append that expects a version publishes again after JetStream refused
/// it because the stream moved, while this node's copy still admits it (a copy that
/// was behind). Past this, another node keeps winning: a conflict.
const ATTEMPTS: usize = 8;
/// Room left in a message for its headers (message id, expected sequence).
const HEADROOM: usize = 512;

pub(crate) async fn append(
    store: &EventStore,
    link: &Link,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, Error> {
    if events.is_empty() {
        return Err(Error::InvalidAppend("an append needs at least one event"));
    }
    let mut ids = HashSet::with_capacity(events.len());
    if !events.iter().all(|event| ids.insert(event.id)) {
        return Err(Error::InvalidAppend(
            "the same event id appears twice in one append",
        ));
    }
    // The store's own dedup, for a re-send older than JetStream's duplicate window.
    if events.iter().any(|event| store.may_hold_event(&event.id))
        && let Some(original) = original(store, stream, &events).await?
    {
        return Ok(original);
    }
    let body = wire::encode(expected, &events)?;
    // One commit is one message: the servers' `max_payload` bounds it too.
    let limit = store
        .config()
        .max_append_bytes
        .min(link.max_payload.saturating_sub(HEADROOM));
    if body.len() > limit {
        return Err(Error::AppendTooLarge {
            size: body.len(),
            limit,
        });
    }
    let body = bytes::Bytes::from(body);
    let subject = link.subject(stream);
    let message_id = wire::message_id(&events);
    for _ in 0..ATTEMPTS {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
        if expected != ExpectedVersion::Any {
            let last = last_on_subject(link, stream, &subject).await?;
            // An earlier send of this append (its acknowledgement lost) may be what moved
            // the stream: the copy, caught up to the subject, knows.
            if events.iter().any(|event| store.may_hold_event(&event.id))
                && let Some(original) = original(store, stream, &events).await?
            {
                return Ok(original);
            }
            // The node's copy has applied the subject's last message: its version is
            // the stream's, and a conflict is answered without publishing.
            let current = {
                let stream = stream.clone();
                store
                    .blocking(move |store| store.stream_head(&stream))
                    .await?
            };
            if !expected.admits(current) {
                return Err(Error::VersionConflict {
                    stream: stream.clone(),
                    expected: crate::writer::describe_expected(expected),
                    actual: current,
                });
            }
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last.to_string().as_str(),
            );
        }
        let published = async {
            link.js
                .publish_with_headers(subject.clone(), headers, body.clone())
                .await?
                .await
        };
        let ack = match tokio::time::timeout(link.config.timeout, published).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(error)) if stream_moved(&error) => {
                // Another node appended to the stream since: look again.
                link.forget(stream);
                continue;
            }
            Ok(Err(error)) => {
                return Err(Error::cluster(
                    "publishing the append",
                    format!(
                        "{error}; the append may or may not be stored: re-send it with the same event ids to learn which"
                    ),
                ));
            }
            Err(_) => {
                return Err(Error::cluster(
                    "publishing the append",
                    format!(
                        "no acknowledgement within {:?}; the append may or may not be stored: re-send it with the same event ids to learn which",
                        link.config.timeout
                    ),
                ));
            }
        };
        link.saw(stream.clone(), ack.sequence);
        return outcome_of(store, link, stream, &events, ack.sequence, ack.duplicate).await;
    }
    Err(Error::VersionConflict {
        stream: stream.clone(),
        expected: crate::writer::describe_expected(expected),
        actual: store
            .blocking({
                let stream = stream.clone();
                move |store| store.stream_head(&stream)
            })
            .await?,
    })
}

/// Whether JetStream refused a publish because the subject's last sequence was not the
/// one expected. Servers since 2.11 say so with error code 10164, which async-nats 0.51
/// does not map to `WrongLastSequence`.
fn stream_moved(error: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    error.kind() == PublishErrorKind::WrongLastSequence
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|source| {
                source.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    || source.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            })
}

/// The sequence of the last message on `stream`'s subject (0 for none), once this node's
/// copy has applied it.
async fn last_on_subject(link: &Link, stream: &StreamId, subject: &str) -> Result<u64, Error> {
    let known = link
        .subjects
        .lock()
        .expect("not poisoned")
        .get(stream)
        .copied();
    let last = match known {
        Some(sequence) => sequence,
        None => last_sequence(link, subject).await?,
    };
    link.applied_through(last).await?;
    if known.is_none() {
        link.saw(stream.clone(), last);
    }
    Ok(last)
}

/// The sequence of the last message JetStream holds on `subject` (0 for none), asked now.
pub(crate) async fn last_sequence(link: &Link, subject: &str) -> Result<u64, Error> {
    match link.stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(error) => Err(Error::cluster(
            "reading the stream's last message",
            error.to_string(),
        )),
    }
}

/// What applying the acknowledged `sequence` gave on this node.
async fn outcome_of(
    store: &EventStore,
    link: &Link,
    stream: &StreamId,
    events: &[NewEvent],
    sequence: u64,
    duplicate: bool,
) -> Result<AppendOutcome, Error> {
    link.applied_through(sequence).await?;
    let recorded = link
        .outcomes
        .lock()
        .expect("not poisoned")
        .remove(&sequence);
    // JetStream matched the message id with an earlier message: perhaps an earlier send
    // of this append, perhaps these ids sent to another stream through a node whose copy
    // had not shown it yet. The copy, past that message now, tells which, as one machine
    // would: the original outcome, or `IdempotencyMismatch`.
    if duplicate && let Some(original) = original(store, stream, events).await? {
        return Ok(original);
    }
    match recorded {
        Some(Ok(mut outcome)) => {
            outcome.duplicate |= duplicate;
            Ok(outcome)
        }
        Some(Err(error)) => Err(error),
        // Collected by an earlier send of the same append (JetStream answered this one
        // with the first one's sequence), or long ago: the copy knows the events.
        None => original(store, stream, events).await?.ok_or_else(|| {
            Error::cluster(
                "the append's outcome",
                format!(
                    "JetStream acknowledged it as sequence {sequence}, which this node's copy refused earlier"
                ),
            )
        }),
    }
}

/// The outcome of an earlier append of these same events, if this node's copy holds
/// them; an error if it holds only some, or holds them otherwise.
async fn original(
    store: &EventStore,
    stream: &StreamId,
    events: &[NewEvent],
) -> Result<Option<AppendOutcome>, Error> {
    let found = super::stored(store, events).await?;
    let Some(Some(first)) = found.first() else {
        return match found.iter().flatten().next() {
            Some(stored) => Err(Error::IdempotencyMismatch {
                id: stored.id.as_uuid(),
            }),
            None => Ok(None),
        };
    };
    for (i, stored) in found.iter().enumerate() {
        let matches = stored.as_ref().is_some_and(|stored| {
            stored.stream_id == *stream
                && stored.position.0 == first.position.0 + i as u64
                && stored.version.0 == first.version.0 + i as u64
        });
        if !matches {
            return Err(Error::IdempotencyMismatch {
                id: events[i].id.as_uuid(),
            });
        }
    }
    let count = events.len() as u64;
    Ok(Some(AppendOutcome {
        first_position: first.position,
        last_position: Position(first.position.0 + count - 1),
        first_version: first.version,
        last_version: Version(first.version.0 + count - 1),
        duplicate: true,
    }))
}
