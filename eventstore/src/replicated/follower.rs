//! The follower: this node's copy of the log, applied from the JetStream stream in
//! sequence order.
//!
//! Two tasks. The reader takes the messages from an ordered consumer and hands each
//! commit to the store's own writer (at the log's end, with the expected version it was
//! published with and the time JetStream stored it), without waiting: the writer groups
//! them into few `fdatasync`s. The collector takes the writer's answers in the same order,
//! records each for the appender waiting on it, and moves `applied`. A refusal (a version
//! conflict, ids stored earlier, a body that is not a commit) depends only on the
//! messages before it, so every node refuses the same messages and derives the same log.
//!
//! Where to resume is the replica mark in the index: (last sequence applied, the log's
//! next position then), saved after the writer acknowledged. A crash can leave the mark
//! behind the copy; the messages between are then neither applied again nor judged again
//! (the copy's state is later than when they were judged): the reader skips them until
//! it passes the message holding the copy's last event. An empty copy has the mark
//! (0, 0), saved and flushed when the follower starts: a copy that holds events always
//! has a mark. The store's close stops both tasks and awaits them before its writer
//! closes (`Link::stop`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{Link, subject, wire};
use crate::error::Error;
use crate::ids::Position;
use crate::store::{AppendOutcome, EventStore};
use crate::writer::{AppendRequest, Placement, Timing, WriterMessage};

/// Commits handed to the writer and not yet answered, at most.
const IN_FLIGHT: usize = 4_096;

/// What the collector gets for one message, in sequence order.
enum Handed {
    /// Given to the writer: its answer comes here.
    Writing(oneshot::Receiver<(Result<AppendOutcome, Error>, Timing)>),
    /// Judged without the writer.
    Judged(Result<AppendOutcome, Error>),
}

/// Starts following the stream, whose last sequence is `last` now.
pub(crate) async fn start(store: &EventStore, link: &Arc<Link>, last: u64) -> Result<(), Error> {
    let mark = store.shared.index.load_replica_mark()?;
    let next = store.next_position().0;
    let (from, catching_up_to) = match mark {
        None if next == 0 => {
            // An empty copy gets its mark at once, flushed: its first commits are synced
            // before the index's writes are, and a copy holding events without a mark
            // would be taken for a log of its own at the next open.
            store.shared.index.save_replica_mark(0, 0)?;
            store.shared.index.flush()?;
            (1, None)
        }
        None => {
            return Err(Error::cluster(
                "the node's copy of the log",
                format!(
                    "{} holds a log but no mark of a copy of stream {} (a log of its own, or a copy whose index was deleted): give the node an empty --data-dir, and it copies the stream again",
                    store.dir().display(),
                    link.config.stream
                ),
            ));
        }
        Some((sequence, position)) if position == next => (sequence + 1, None),
        Some((sequence, _)) => (sequence + 1, Some(Position(next))),
    };
    if from > last + 1 {
        return Err(Error::cluster(
            "the node's copy of the log",
            format!(
                "it has applied sequence {} but stream {} ends at {last}: the copy belongs to another stream; give the node an empty --data-dir",
                from - 1,
                link.config.stream
            ),
        ));
    }
    link.applied.send_replace(from - 1);
    let (handed, collected) = mpsc::channel(IN_FLIGHT);
    let reader = tokio::spawn(read(
        store.clone(),
        link.clone(),
        from,
        catching_up_to,
        handed,
    ));
    let collector = tokio::spawn(collect(store.clone(), link.clone(), next, collected));
    // Awaited by `Link::stop` at close, before the writer closes.
    link.tasks
        .lock()
        .expect("not poisoned")
        .extend([reader, collector]);
    Ok(())
}

/// The reader: messages from `from` on, to the writer in order.
async fn read(
    store: EventStore,
    link: Arc<Link>,
    from: u64,
    mut catching_up_to: Option<Position>,
    handed: mpsc::Sender<(u64, Option<crate::ids::StreamId>, Handed)>,
) {
    let closed = link.stop.clone();
    let mut next_sequence = from;
    let mut backoff = Duration::from_millis(50);
    'consumer: loop {
        let messages = tokio::select! {
            () = closed.cancelled() => return,
            messages = messages_from(&link, next_sequence) => messages,
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "the log's follower cannot read the stream; retrying");
                tokio::select! {
                    () = closed.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                () = closed.cancelled() => return,
                message = messages.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "the log's follower lost the stream; resuming");
                    continue 'consumer;
                }
                None => continue 'consumer,
            };
            backoff = Duration::from_millis(50);
            let Ok(info) = message.info() else {
                continue;
            };
            let sequence = info.stream_sequence;
            if sequence < next_sequence {
                continue;
            }
            next_sequence = sequence + 1;
            let recorded_at = (info.published.unix_timestamp_nanos() / 1_000) as i64;
            let stream = message
                .subject
                .as_str()
                .strip_prefix(&link.config.subject_prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(subject::decode);
            let Some(stream) = stream else {
                let refused = Error::cluster("a message of the log", "its subject names no stream");
                if handed
                    .send((sequence, None, Handed::Judged(Err(refused))))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let item = match wire::decode(&message.payload) {
                Err(why) => Handed::Judged(Err(Error::cluster("a message of the log", why))),
                Ok((expected, events)) => {
                    if let Some(end) = catching_up_to {
                        let judged = judged_before(&store, &events, end).await;
                        if judged
                            .as_ref()
                            .is_ok_and(|outcome| outcome.last_position.next() == end)
                        {
                            catching_up_to = None;
                        }
                        Handed::Judged(judged)
                    } else {
                        let (reply, answer) = oneshot::channel();
                        let request = AppendRequest {
                            stream: stream.clone(),
                            expected,
                            events,
                            original: Some(Placement::Replicated(recorded_at)),
                            reply,
                            queued_at: std::time::Instant::now(),
                        };
                        if store
                            .inbox
                            .send(WriterMessage::Append(request))
                            .await
                            .is_err()
                        {
                            fail(&store, &link, "the store's writer stopped");
                            return;
                        }
                        Handed::Writing(answer)
                    }
                }
            };
            if handed.send((sequence, Some(stream), item)).await.is_err() {
                return;
            }
        }
    }
}

/// The collector: the writer's answers in sequence order.
async fn collect(
    store: EventStore,
    link: Arc<Link>,
    mut next: u64,
    mut collected: mpsc::Receiver<(u64, Option<crate::ids::StreamId>, Handed)>,
) {
    let mut unsaved = 0usize;
    while let Some((sequence, stream, item)) = collected.recv().await {
        let outcome = match item {
            Handed::Judged(outcome) => outcome,
            Handed::Writing(answer) => match answer.await {
                Ok((outcome, _)) => outcome,
                Err(_) => {
                    fail(&store, &link, "the store's writer stopped");
                    return;
                }
            },
        };
        if let Err(error) = &outcome
            && !refusal(error)
        {
            fail(
                &store,
                &link,
                &format!("applying sequence {sequence}: {error}"),
            );
            return;
        }
        if let Ok(applied) = &outcome
            && !applied.duplicate
        {
            next = applied.last_position.next().0;
        }
        if let Some(stream) = stream {
            link.saw(stream, sequence);
        }
        link.record(sequence, outcome);
        let last = sequence;
        unsaved += 1;
        if (unsaved >= 256 || collected.is_empty())
            && let Err(error) = store.shared.index.save_replica_mark(last, next)
        {
            fail(
                &store,
                &link,
                &format!("saving the follower's mark: {error}"),
            );
            return;
        }
        if collected.is_empty() {
            unsaved = 0;
        }
        link.applied.send_replace(last);
    }
}

/// For a message the copy judged before a crash: its events' outcome if the copy holds
/// them (applied then), else the refusal it got then.
async fn judged_before(
    store: &EventStore,
    events: &[crate::envelope::NewEvent],
    end: Position,
) -> Result<AppendOutcome, Error> {
    let found = super::stored(store, events).await?;
    match (found.first(), found.last()) {
        (Some(Some(first)), Some(Some(last))) if last.position < end => Ok(AppendOutcome {
            first_position: first.position,
            last_position: last.position,
            first_version: first.version,
            last_version: last.version,
            duplicate: false,
        }),
        _ => Err(Error::cluster(
            "a message of the log",
            "refused by this node's copy before a restart",
        )),
    }
}

/// Whether `error` is a judgement on the commit itself, the same on every node (the
/// message is refused and the log goes on), rather than a failure of this node.
fn refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::VersionConflict { .. }
            | Error::IdempotencyMismatch { .. }
            | Error::InvalidAppend(_)
            | Error::EventTooLarge { .. }
            | Error::AppendTooLarge { .. }
            | Error::Cluster { .. }
    )
}

/// Stops following: this node's copy cannot go on (its writer or index failed). The
/// store fails with it, as on a failed write: a server stops and exits, and a fresh
/// process resumes from the copy.
fn fail(store: &EventStore, link: &Link, why: &str) {
    tracing::error!(why, "the log's follower stopped");
    link.failure.send_replace(Some(why.to_owned()));
    store
        .shared
        .fail(format!("the log's follower stopped: {why}"));
}

async fn messages_from(link: &Link, from: u64) -> Result<consumer::pull::Ordered, Error> {
    let consumer = link
        .stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            description: Some("annals log follower".into()),
            ..Default::default()
        })
        .await
        .map_err(|error| Error::cluster("following the log", error.to_string()))?;
    consumer
        .messages()
        .await
        .map_err(|error| Error::cluster("following the log", error.to_string()))
}
