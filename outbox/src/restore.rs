//! Restore: rebuild a node's log from the JetStream copy.
//!
//! The copy is read in stream order with an ordered consumer; every message must be an
//! Annals event whose position continues the one before (no gap, no repeat); events are
//! imported with [`EventStore::import`], which writes them exactly as they were (ids,
//! positions, versions, times, append boundaries), so the rebuilt log has the same hash
//! chain. A restore that stopped half way can be run again on the same directory: what is
//! already there is checked and skipped.
//!
//! The copy verifies itself on the way: the restore computes every event's chain hash
//! from the one before, and a message carrying `Annals-Prev-Hash`/`Annals-Hash` must
//! carry exactly those ([`Error::ChainBroken`] names the first that does not: an altered
//! event, a wrong hash, or a removed or altered message before it). Messages without
//! them (a copy made before the headers existed) are accepted and counted
//! ([`RestoreReport::unhashed_messages`]), but not after a hashed one. With
//! [`RestoreOptions::expect_head`] the restore stops at that position and fails unless
//! the copy reaches it with that hash. At the end the whole log is verified.

use std::time::Duration;

use async_nats::Client;
use eventstore::{ChainHash, EventStore, Position, RecordedEvent};
use serde::Serialize;

use crate::error::Error;
use crate::nats::{self, CopyReader};

/// The limits of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// How long a JetStream API request may take.
    pub request_timeout: Duration,
    /// How long to wait for the next message of the copy before giving up (the copy's
    /// length is known, so a wait means NATS is stuck).
    pub idle_timeout: Duration,
    /// Events imported per batch (a batch ends at an append boundary, so it may be a
    /// little larger). Bounds the memory held between reading and writing.
    pub batch_events: usize,
    /// Stop at this position and require this chain hash there (the original log's head
    /// as `annals verify` reports it): a copy that ends before it, or holds another
    /// history, fails with [`Error::ExpectedHeadNotMet`].
    pub expect_head: Option<(Position, ChainHash)>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            batch_events: 8192,
            expect_head: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// The JetStream stream read.
    pub stream: String,
    /// Messages read from the copy.
    pub messages: u64,
    /// Events written to the store by this restore.
    pub imported: u64,
    /// Events already in the store (a resumed restore), checked and skipped.
    pub skipped: u64,
    /// Events at the end of the copy whose append is not complete there (the relay was
    /// still publishing it), left out so the log ends at an append boundary.
    pub incomplete_tail: u64,
    /// Messages without chain headers (published by a release before them): their
    /// events were checked by position and by the final verification only.
    pub unhashed_messages: u64,
    /// The next position of the restored log.
    pub next_position: Position,
    /// Events checked by the final verification.
    pub verified_events: u64,
    /// The hash of the last record of the restored log, which commits to all of it.
    pub head_hash: String,
}

/// The URL of the server `client` is connected to, for error messages.
pub(crate) fn server_url(client: &Client) -> String {
    let info = client.server_info();
    format!("nats://{}:{}", info.host, info.port)
}

/// Rebuilds `store` from the copy in the JetStream stream `stream`, calling
/// `progress(messages_read, messages_total)` as it goes, then verifies the whole log.
pub async fn restore(
    client: &Client,
    stream: &str,
    store: &EventStore,
    options: &RestoreOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RestoreReport, Error> {
    let (nats_stream, state) = nats::open_copy(client, stream, options.request_timeout).await?;
    let total = state.messages;
    let local_next = store.next_position();
    let mut report = RestoreReport {
        stream: stream.to_owned(),
        messages: 0,
        imported: 0,
        skipped: 0,
        incomplete_tail: 0,
        unhashed_messages: 0,
        next_position: local_next,
        verified_events: 0,
        head_hash: String::new(),
    };
    let batch_events = options.batch_events.max(1);
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(batch_events.min(1 << 16));
    let mut chain = CopyChain::default();
    let mut reached = None;
    if total > 0 {
        let mut reader = CopyReader::open(&nats_stream, options.idle_timeout).await?;
        let mut expected = Position(0);
        loop {
            let message = reader.next().await?;
            report.messages += 1;
            let malformed = |error: crate::message::DecodeError| Error::MalformedMessage {
                sequence: message.sequence,
                reason: error.to_string(),
            };
            let event = message.event.map_err(malformed)?;
            if event.position != expected {
                return Err(Error::NotContiguous {
                    expected,
                    found: event.position,
                    sequence: message.sequence,
                });
            }
            expected = expected.next();
            let carried = message.chain.map_err(malformed)?;
            let hash = chain.check(&event, carried, message.sequence)?;
            let position = event.position;
            if event.position < local_next {
                // Already there from an earlier run: the last one must be the same event,
                // or this directory holds another log.
                if event.position.next() == local_next {
                    check_same(store, &event)?;
                }
                report.skipped += 1;
            } else {
                let ends_append = event.last_in_commit;
                batch.push(event);
                if ends_append && batch.len() >= batch_events {
                    report.imported += batch.len() as u64;
                    store.import(std::mem::take(&mut batch)).await?;
                }
            }
            if report.messages.is_multiple_of(1024) {
                progress(report.messages, total.max(report.messages));
            }
            if let Some((head, _)) = options.expect_head
                && head == position
            {
                reached = Some(hash);
                break;
            }
            if message.pending == 0 {
                break;
            }
        }
    }
    report.unhashed_messages = chain.unhashed;
    if let Some((position, hash)) = options.expect_head {
        let not_met = |reason: String| Error::ExpectedHeadNotMet {
            position,
            hash,
            reason,
        };
        match reached {
            None => {
                return Err(not_met(match chain.last {
                    Some((last, _)) => format!("the copy ends at position {last}"),
                    None => "the copy is empty".to_owned(),
                }));
            }
            Some(found) if found != hash => {
                return Err(not_met(format!(
                    "the copy's chain hash there is {found}: another history"
                )));
            }
            Some(_) if batch.last().is_some_and(|event| !event.last_in_commit) => {
                return Err(not_met(
                    "that position is inside an append, not the head of a log".into(),
                ));
            }
            Some(_) => {}
        }
    }
    let complete = batch
        .iter()
        .rposition(|event| event.last_in_commit)
        .map_or(0, |last| last + 1);
    report.incomplete_tail = (batch.len() - complete) as u64;
    batch.truncate(complete);
    if !batch.is_empty() {
        report.imported += batch.len() as u64;
        store.import(batch).await?;
    }
    progress(report.messages, total.max(report.messages));
    report.next_position = store.next_position();
    let verifier = store.clone();
    let verified = tokio::task::spawn_blocking(move || verifier.verify())
        .await
        .map_err(|error| Error::nats("verification task", error))??;
    report.verified_events = verified.events;
    report.head_hash = verified.head_hash;
    if let Some((position, hash)) = options.expect_head
        && (report.next_position != position.next() || report.head_hash != hash.to_string())
    {
        return Err(Error::ExpectedHeadNotMet {
            position,
            hash,
            reason: format!(
                "the restored log ends at {} with head hash {}",
                report.next_position, report.head_hash
            ),
        });
    }
    Ok(report)
}

/// The hash chain of the copy as it is read: computed from the events, compared with the
/// chain headers the messages carry.
#[derive(Debug, Default)]
pub(crate) struct CopyChain {
    /// The last event's position and chain hash.
    pub last: Option<(Position, ChainHash)>,
    /// Messages read without chain headers.
    pub unhashed: u64,
    /// Whether a message with chain headers was read.
    hashed: bool,
}

impl CopyChain {
    /// A chain that continues after the record at `last` with that chain hash (`None`:
    /// from the start of the log).
    pub fn continuing(last: Option<(Position, ChainHash)>) -> CopyChain {
        CopyChain {
            last,
            ..CopyChain::default()
        }
    }

    /// Takes the next event of the copy (positions already checked to follow on) with the
    /// chain headers its message carried; returns its chain hash, or the first break.
    pub fn check(
        &mut self,
        event: &RecordedEvent,
        carried: Option<crate::message::Chain>,
        sequence: u64,
    ) -> Result<ChainHash, Error> {
        let prev = self.last.map_or(ChainHash::GENESIS, |(_, hash)| hash);
        let hash = ChainHash::of_record(&prev, event)?;
        let broken = |reason: String| Error::ChainBroken {
            position: event.position,
            sequence,
            reason,
        };
        match carried {
            None if self.hashed => {
                return Err(broken(
                    "the message carries no chain hash, though the messages before it do".into(),
                ));
            }
            None => self.unhashed += 1,
            Some(carried) => {
                self.hashed = true;
                if carried.prev != prev {
                    return Err(broken(format!(
                        "its Annals-Prev-Hash is {}, the chain of the events before it gives {prev} (a message before it was altered or removed, or the header is wrong)",
                        carried.prev
                    )));
                }
                if carried.hash != hash {
                    return Err(broken(format!(
                        "its Annals-Hash is {}, its event gives {hash} (the event or the header was altered)",
                        carried.hash
                    )));
                }
            }
        }
        self.last = Some((event.position, hash));
        Ok(hash)
    }
}

/// Checks that the store holds `event` at its position.
fn check_same(store: &EventStore, event: &RecordedEvent) -> Result<(), Error> {
    match store.read_all(event.position, 1)?.pop() {
        Some(local) if local == *event => Ok(()),
        _ => Err(Error::CopyDiverged {
            position: event.position,
            reason: "the data directory already holds a different event there; restore into an empty directory".into(),
        }),
    }
}
