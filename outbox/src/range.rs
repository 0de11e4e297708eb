//! Reading a range of positions from the JetStream copy: what `annals repair` replaces a
//! damaged range of the log with.
//!
//! Position `p` sits at stream sequence `p + 1` unless messages were deleted or the
//! stream was purged and filled again, and never at a lower sequence (every position is
//! published once, in order, after the ones before it). So the read starts at sequence
//! `first + 1`, steps forward by the difference while the message there holds an earlier
//! position, and then reads in stream order with an ordered consumer. Every event must
//! continue the one before, and the chain headers must hold from the hash of the log's
//! record before the range ([`crate::restore`]'s check): a copy of another log breaks the
//! first link, an altered event its own.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::stream;
use eventstore::{ChainHash, Position, RecordedEvent};

use crate::error::Error;
use crate::message;
use crate::nats::{self, CopyReader};
use crate::restore::CopyChain;

/// The limits of a range read.
#[derive(Debug, Clone)]
pub struct RangeOptions {
    /// How long a JetStream API request may take.
    pub request_timeout: Duration,
    /// How long to wait for the next message of the copy before giving up.
    pub idle_timeout: Duration,
}

impl Default for RangeOptions {
    fn default() -> Self {
        RangeOptions {
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How a range read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRead {
    /// The visitor had every event it wanted.
    Done,
    /// The copy ended first; it holds positions up to `last` (`None`: none from `first`).
    CopyEnded {
        /// The last position read from the copy.
        last: Option<Position>,
    },
}

/// Reads the copy in the JetStream stream `stream` from position `first`, whose record
/// before it has chain hash `prev`, and hands each event to `visit` in order until it
/// answers [`ControlFlow::Break`]. Messages whose chain headers do not continue from
/// `prev` are [`Error::ChainBroken`]; a copy without position `first` is
/// [`Error::CopyDiverged`].
pub async fn read_range(
    client: &Client,
    stream: &str,
    first: Position,
    prev: ChainHash,
    options: &RangeOptions,
    visit: &mut (dyn FnMut(RecordedEvent) -> ControlFlow<()> + Send),
) -> Result<RangeRead, Error> {
    let (nats_stream, state) = nats::open_copy(client, stream, options.request_timeout).await?;
    let Some(start) = start_sequence(&nats_stream, &state, first).await? else {
        return Ok(RangeRead::CopyEnded { last: None });
    };
    let mut reader = CopyReader::open_at(&nats_stream, start, options.idle_timeout).await?;
    let mut chain =
        CopyChain::continuing(first.0.checked_sub(1).map(|last| (Position(last), prev)));
    let mut expected = first;
    loop {
        let message = reader.next().await?;
        let malformed = |error: message::DecodeError| Error::MalformedMessage {
            sequence: message.sequence,
            reason: error.to_string(),
        };
        let event = message.event.map_err(malformed)?;
        if event.position < first && expected == first {
            // Messages before the range (the start was a guess): step over them.
        } else if event.position != expected {
            return Err(Error::CopyDiverged {
                position: expected,
                reason: format!(
                    "the copy holds position {} at message {} where position {expected} should follow",
                    event.position, message.sequence
                ),
            });
        } else {
            chain.check(&event, message.chain.map_err(malformed)?, message.sequence)?;
            expected = expected.next();
            if visit(event).is_break() {
                return Ok(RangeRead::Done);
            }
        }
        if message.pending == 0 {
            return Ok(RangeRead::CopyEnded {
                last: expected
                    .0
                    .checked_sub(1)
                    .map(Position)
                    .filter(|_| expected > first),
            });
        }
    }
}

/// The stream sequence to start reading position `first` at, or `None` if the copy ends
/// before it.
async fn start_sequence(
    nats_stream: &stream::Stream,
    state: &stream::State,
    first: Position,
) -> Result<Option<u64>, Error> {
    if state.messages == 0 {
        return Ok(None);
    }
    let mut sequence = (first.0 + 1).max(state.first_sequence);
    // A few direct gets skip the bulk of a gap; the ordered read steps over the rest.
    for _ in 0..8 {
        if sequence > state.last_sequence {
            return Ok(None);
        }
        let found = match nats_stream.get_raw_message(sequence).await {
            Ok(found) => found,
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                break;
            }
            Err(error) => return Err(Error::nats("get of a message of the copy", error)),
        };
        let position =
            message::position(Some(&found.headers)).map_err(|error| Error::MalformedMessage {
                sequence,
                reason: error.to_string(),
            })?;
        if position >= first {
            if position > first {
                return Err(Error::CopyDiverged {
                    position: first,
                    reason: format!(
                        "the copy lacks position {first}: message {sequence} already holds position {position}"
                    ),
                });
            }
            break;
        }
        sequence += first.0 - position.0;
    }
    Ok(Some(sequence))
}
