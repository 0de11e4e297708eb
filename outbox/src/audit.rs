//! Audit: compare the local log with the JetStream copy, event by event, and report the
//! first divergence or how far the two are identical.
//!
//! Besides every field of every event, the audit checks the copy's hash chain (each
//! message's `Annals-Prev-Hash` and `Annals-Hash` against the log's chain; messages of an
//! older release without them are counted) and its end: a copy that ends before the
//! relay's checkpoint lost acknowledged messages ([`Divergence::Lost`]); one that ends
//! after it only lags ([`AuditReport::copy_behind`]).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::Client;
use eventstore::{EventStore, Position, RecordedEvent};
use serde::Serialize;

use crate::error::Error;
use crate::nats::{self, CopyReader};
use crate::restore::CopyChain;

/// The limits of an audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// How long a JetStream API request may take.
    pub request_timeout: Duration,
    /// How long to wait for the next message of the copy before giving up.
    pub idle_timeout: Duration,
    /// Local events read at a time.
    pub read_batch: usize,
    /// The relay's checkpoint name in the store: the copy must reach the checkpoint.
    pub checkpoint_name: String,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            read_batch: 4096,
            checkpoint_name: crate::RelayConfig::new("nats://127.0.0.1").checkpoint_name,
        }
    }
}

/// Where the copy and the log first part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Divergence {
    /// The log's event at `position` is not in the copy (removed, or never published
    /// while later ones were). `sequence` is the message found in its place, if any.
    Missing {
        /// The position missing from the copy.
        position: Position,
        /// The copy's message found where it should be.
        sequence: Option<u64>,
    },
    /// The copy holds an event the log does not have there: a repeat, an event out of
    /// order, or a position beyond the end of the log.
    Extra {
        /// The position the message carries.
        position: Position,
        /// The message's stream sequence.
        sequence: u64,
    },
    /// The copy's event at `position` differs from the log's.
    Different {
        /// The position.
        position: Position,
        /// The message's stream sequence.
        sequence: u64,
        /// The fields that differ (`id`, `stream_id`, `version`, `event_type`,
        /// `schema_version`, `recorded_at`, `metadata`, `payload`, `last_in_commit`).
        fields: Vec<&'static str>,
    },
    /// The copy's message at `position` carries a chain hash other than the log's there:
    /// its `Annals-Hash`/`Annals-Prev-Hash` header was altered, or it lacks them after
    /// messages that have them.
    BrokenChain {
        /// The position.
        position: Position,
        /// The message's stream sequence.
        sequence: u64,
        /// How the chain breaks.
        reason: String,
    },
    /// The copy ends at `position` (it holds everything before, identical), below the
    /// relay's checkpoint: JetStream acknowledged the events from `position` on and no
    /// longer holds them (a nats-server that lost its last messages, or messages deleted
    /// at its end). A relay started on this log republishes them.
    Lost {
        /// The first position missing from the end of the copy.
        position: Position,
        /// The relay's checkpoint: every position before it was acknowledged.
        checkpoint: Position,
    },
    /// A message of the copy is not an Annals event.
    Malformed {
        /// The message's stream sequence.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Divergence::Missing {
                position,
                sequence: Some(sequence),
            } => write!(
                f,
                "position {position} is missing from the copy (message {sequence} holds a later one)"
            ),
            Divergence::Missing {
                position,
                sequence: None,
            } => write!(
                f,
                "position {position} is missing from the copy (messages after the last one were removed)"
            ),
            Divergence::Extra { position, sequence } => write!(
                f,
                "the copy holds an extra event for position {position} (message {sequence}): a repeat, out of order, or beyond the log"
            ),
            Divergence::Different {
                position,
                sequence,
                fields,
            } => write!(
                f,
                "the event at position {position} differs in the copy (message {sequence}): {}",
                fields.join(", ")
            ),
            Divergence::BrokenChain {
                position,
                sequence,
                reason,
            } => write!(
                f,
                "the hash chain of the copy breaks at position {position} (message {sequence}): {reason}"
            ),
            Divergence::Lost {
                position,
                checkpoint,
            } => write!(
                f,
                "positions {position} to {} are missing from the end of the copy, though JetStream acknowledged them (relay checkpoint {checkpoint}): NATS lost them or they were deleted; a relay started on this log republishes them",
                checkpoint.0.saturating_sub(1)
            ),
            Divergence::Malformed { sequence, reason } => {
                write!(
                    f,
                    "message {sequence} of the copy is not an Annals event: {reason}"
                )
            }
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The JetStream stream audited.
    pub stream: String,
    /// The next position of the local log.
    pub log_head: Position,
    /// Messages of the copy read.
    pub copy_messages: u64,
    /// Every position up to this one is identical in the log and the copy.
    pub identical_through: Option<Position>,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
    /// With no divergence: log events the copy does not hold yet (the relay's backlog).
    pub copy_behind: u64,
    /// The relay's checkpoint saved in the store, if any.
    pub relay_checkpoint: Option<Position>,
    /// Messages without chain headers (published by a release before them), checked
    /// field by field only.
    pub unhashed_messages: u64,
}

impl AuditReport {
    /// Whether the copy matches the log as far as it goes.
    pub fn is_consistent(&self) -> bool {
        self.divergence.is_none()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let through = match self.identical_through {
            Some(position) => format!("identical up to position {position}"),
            None => "nothing in common yet".to_owned(),
        };
        match &self.divergence {
            Some(divergence) => format!("diverged: {divergence}; {through}"),
            None if self.copy_behind > 0 => format!(
                "{through}; the copy lacks the log's last {} events, from position {} (the relay has not published them yet; log head {})",
                self.copy_behind,
                self.log_head.0 - self.copy_behind,
                self.log_head
            ),
            None => format!("{through}; the copy holds the whole log"),
        }
    }
}

/// The fields in which `copy` differs from `local`.
pub fn differences(local: &RecordedEvent, copy: &RecordedEvent) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let checks: [(&'static str, bool); 10] = [
        ("id", local.id == copy.id),
        ("stream_id", local.stream_id == copy.stream_id),
        ("version", local.version == copy.version),
        ("position", local.position == copy.position),
        ("event_type", local.event_type == copy.event_type),
        (
            "schema_version",
            local.schema_version == copy.schema_version,
        ),
        ("recorded_at", local.recorded_at == copy.recorded_at),
        ("metadata", local.metadata == copy.metadata),
        ("payload", local.payload == copy.payload),
        (
            "last_in_commit",
            local.last_in_commit == copy.last_in_commit,
        ),
    ];
    for (name, same) in checks {
        if !same {
            fields.push(name);
        }
    }
    fields
}

/// Local events, read ahead in batches.
struct LocalReader<'a> {
    store: &'a EventStore,
    buffered: VecDeque<RecordedEvent>,
    next: Position,
    batch: usize,
}

impl LocalReader<'_> {
    async fn at(&mut self, position: Position) -> Result<Option<RecordedEvent>, Error> {
        debug_assert_eq!(position, self.next);
        if self.buffered.is_empty() {
            let store = self.store.clone();
            let (from, batch) = (self.next, self.batch);
            let events = tokio::task::spawn_blocking(move || store.read_all(from, batch))
                .await
                .map_err(|error| Error::nats("local read task", error))??;
            self.buffered = events.into();
        }
        let event = self.buffered.pop_front();
        if event.is_some() {
            self.next = self.next.next();
        }
        Ok(event)
    }
}

/// Compares `store` with the copy in the JetStream stream `stream`, event by event.
pub async fn audit(
    client: &Client,
    stream: &str,
    store: &EventStore,
    options: &AuditOptions,
) -> Result<AuditReport, Error> {
    let (nats_stream, state) = nats::open_copy(client, stream, options.request_timeout).await?;
    let log_head = store.next_position();
    let mut local = LocalReader {
        store,
        buffered: VecDeque::new(),
        next: Position(0),
        batch: options.read_batch.max(1),
    };
    let mut report = AuditReport {
        stream: stream.to_owned(),
        log_head,
        copy_messages: 0,
        identical_through: None,
        divergence: None,
        copy_behind: 0,
        relay_checkpoint: store.load_checkpoint(&options.checkpoint_name)?,
        unhashed_messages: 0,
    };
    let mut chain = CopyChain::default();
    let mut expected = Position(0);
    let mut last_sequence_seen = 0;
    if state.messages > 0 {
        let mut reader = CopyReader::open(&nats_stream, options.idle_timeout).await?;
        loop {
            let message = reader.next().await?;
            report.copy_messages += 1;
            last_sequence_seen = message.sequence;
            let divergence = match message.event {
                Err(error) => Some(Divergence::Malformed {
                    sequence: message.sequence,
                    reason: error.to_string(),
                }),
                Ok(copy) if copy.position < expected => Some(Divergence::Extra {
                    position: copy.position,
                    sequence: message.sequence,
                }),
                Ok(copy) if expected >= log_head => Some(Divergence::Extra {
                    position: copy.position,
                    sequence: message.sequence,
                }),
                Ok(copy) if copy.position > expected => Some(Divergence::Missing {
                    position: expected,
                    sequence: Some(message.sequence),
                }),
                Ok(copy) => match local.at(expected).await? {
                    None => Some(Divergence::Extra {
                        position: copy.position,
                        sequence: message.sequence,
                    }),
                    Some(local_event) => {
                        let fields = differences(&local_event, &copy);
                        if !fields.is_empty() {
                            Some(Divergence::Different {
                                position: copy.position,
                                sequence: message.sequence,
                                fields,
                            })
                        } else {
                            match message.chain {
                                Err(error) => Some(Divergence::Malformed {
                                    sequence: message.sequence,
                                    reason: error.to_string(),
                                }),
                                Ok(carried) => {
                                    match chain.check(&local_event, carried, message.sequence) {
                                        Ok(_) => None,
                                        Err(Error::ChainBroken {
                                            position,
                                            sequence,
                                            reason,
                                        }) => Some(Divergence::BrokenChain {
                                            position,
                                            sequence,
                                            reason,
                                        }),
                                        Err(other) => return Err(other),
                                    }
                                }
                            }
                        }
                    }
                },
            };
            if divergence.is_some() {
                report.divergence = divergence;
                break;
            }
            expected = expected.next();
            if message.pending == 0 {
                break;
            }
        }
    }
    report.unhashed_messages = chain.unhashed;
    if report.divergence.is_none() && expected < log_head {
        if last_sequence_seen < state.last_sequence {
            // The stream once held later messages, and they are gone.
            report.divergence = Some(Divergence::Missing {
                position: expected,
                sequence: None,
            });
        } else if let Some(checkpoint) = report.relay_checkpoint
            && checkpoint > expected
        {
            // JetStream acknowledged them, and the stream forgot them with their
            // sequences: what a nats-server that lost its last messages looks like.
            report.divergence = Some(Divergence::Lost {
                position: expected,
                checkpoint,
            });
        } else {
            report.copy_behind = log_head.0 - expected.0;
        }
    }
    report.identical_through = expected.0.checked_sub(1).map(Position);
    Ok(report)
}
