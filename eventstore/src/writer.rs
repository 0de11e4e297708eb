//! The single writer: one thread owns the active segment and every append goes through
//! it. It takes every append waiting at that moment, checks and encodes them in order,
//! writes them with one `write` and one `fdatasync` (group commit), and only then answers
//! the callers. That one sync per batch, not per append, is where throughput comes from.
//!
//! Step by step, for one batch:
//! 1. Take the first waiting append (block until there is one), then every other waiting
//!    append until the batch reaches `max_batch_bytes`.
//! 2. For each append in order: validate it; if its event ids are already stored, answer
//!    with the original result (durable dedup); check the expected version against the
//!    writer's stream heads (which include the earlier appends of this batch; see
//!    `stream_heads` for what is kept in memory and what is read from the index);
//!    encode its records into the batch buffer, chaining hashes, the last record flagged
//!    as the end of the append.
//! 3. Roll to a new segment first if the active one is full.
//! 4. `write_all` the buffer and hand the batch to the syncer thread (`syncer`), which
//!    runs one `fdatasync` for every batch waiting, while the writer goes on with the
//!    next. On any I/O error the writer fails every append of the batch and stops: after
//!    a failed fsync the page cache cannot be trusted, so the store must be reopened (and
//!    recovery re-reads what is really on disk).
//! 5. The syncer publishes the new durable end (readers and subscribers may now see the
//!    batch), answers every caller, and hands the batch's index entries to the indexer
//!    thread (`indexer`).
//!
//! The segment files themselves are created, preallocated and synced in `segment_files`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chaos::Point::StoreWrite;

use tokio::sync::{mpsc, oneshot};

use crate::derived::index::{CommitLocation, HighWater, IndexBatch, IndexedCommit};
use crate::envelope::{NewEvent, StoredEvent};
use crate::error::Error;
use crate::ids::{EventId, ExpectedVersion, Position, StreamId, Version};
use crate::io::LogFile;
use crate::segment::{self, DurableEnd, FLAG_COMMIT_END};
use crate::segment_files::{create_segment, open_segment, sync_dir, zero_fill};
use crate::shared::Shared;
use crate::store::AppendOutcome;
use crate::stream_heads::StreamHeads;
use crate::syncer::{Answer, Handoff};

/// The name of the next segment while it is being zero-filled.
const SPARE: &str = "spare.tmp";

/// One append waiting for the writer.
#[derive(Debug)]
pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Where the append lands and when it was recorded, when not at the log's end now.
    pub original: Option<Placement>,
    pub reply: Reply,
    /// When the caller asked: the syncer reports the time to the acknowledgement
    /// (`annals_append_duration_seconds`, see `crate::metrics`).
    pub queued_at: std::time::Instant,
}

/// Where an append recorded elsewhere lands, and when it was recorded.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// An import: the position the append must land at and the original recorded-at
    /// time (microseconds), so the log is reproduced byte for byte.
    Imported(Position, i64),
    /// A commit of the replicated log (`crate::replicated`): at the log's end, with the
    /// time JetStream stored it (microseconds), so every node records the same time.
    Replicated(i64),
}

/// Where an append's answer goes, with how its time was spent.
pub type Reply = oneshot::Sender<(Result<AppendOutcome, Error>, Timing)>;

/// How an append's time was spent, for its `append` span (see `EventStore::append`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// From the call until the writer took it into a batch.
    pub queued: std::time::Duration,
    /// Bytes its records take in the log (none for a duplicate or a refusal).
    pub bytes: u64,
    /// The `fdatasync` that made it durable (`None`: nothing was synced).
    pub fsync: Option<std::time::Duration>,
}

/// A message to the writer.
#[derive(Debug)]
pub enum WriterMessage {
    /// Append events.
    Append(AppendRequest),
    /// Finish the current batch and stop.
    Close(oneshot::Sender<()>),
}

/// An event id the writer committed that the indexer may not have written yet.
#[derive(Debug, Clone)]
struct RecentEvent {
    position: u64,
    version: u64,
    stream: StreamId,
}

/// The writer's state: the active segment and what it must know to check appends.
#[derive(Debug)]
pub struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: Arc<dyn LogFile>,
    pub(crate) segment: u64,
    pub(crate) segment_len: u64,
    pub(crate) next_position: u64,
    pub(crate) last_hash: [u8; 32],
    /// Stream heads for the version check: every one not yet indexed, a bounded cache
    /// of the others, the rest read from the index on demand.
    pub(crate) heads: StreamHeads,
    /// Event ids committed but perhaps not yet in the index, and when they leave.
    recent: HashMap<EventId, RecentEvent>,
    recent_order: VecDeque<(u64, EventId)>,
    /// The next segment, being zero-filled in the background.
    spare: Option<std::thread::JoinHandle<Result<(), Error>>>,
    buffer: Vec<u8>,
    /// What the active segment needs before the next batch: a roll (it is format 1), or
    /// its format-2 header.
    prepare: Prepare,
    /// The `synced_to` mark of the records being staged.
    synced_to: u32,
}

/// What the active segment needs before the writer appends to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepare {
    Nothing,
    /// Write the segment header first (with the batch, synced by the same `fdatasync`).
    Header,
    /// The segment is format 1: seal it and start a format-2 segment.
    Roll,
}

/// What staging one append produced.
enum Staged {
    /// Records were added to the buffer; the outcome holds once the batch is durable.
    Written(AppendOutcome, IndexedCommit),
    /// Nothing to write: the answer (a duplicate's original result, or an error).
    Answered(Result<AppendOutcome, Error>),
}

/// Where the log ends: what the writer continues from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogEnd {
    /// The last segment's first position.
    pub segment: u64,
    /// Its length up to the end of the last complete append.
    pub segment_len: u64,
    /// The position the next event gets.
    pub next_position: u64,
    /// The hash of the last record.
    pub last_hash: [u8; 32],
    /// The last segment's format: the writer appends only to format 2.
    pub format: segment::Format,
    /// Whether that segment's format-2 header is on disk already.
    pub header_on_disk: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        file: Arc<dyn LogFile>,
        end: LogEnd,
        heads: StreamHeads,
    ) -> Self {
        Writer {
            shared,
            file,
            segment: end.segment,
            segment_len: end.segment_len,
            next_position: end.next_position,
            last_hash: end.last_hash,
            heads,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            spare: None,
            buffer: Vec::with_capacity(1 << 20),
            prepare: match (end.format, end.header_on_disk) {
                (segment::Format::V1, _) if end.segment_len > 0 => Prepare::Roll,
                (_, false) => Prepare::Header,
                _ => Prepare::Nothing,
            },
            synced_to: 0,
        }
    }

    /// Runs until the store is closed or every handle is dropped, or an I/O error stops it.
    pub(crate) fn run(
        mut self,
        mut inbox: mpsc::Receiver<WriterMessage>,
        syncer: std::sync::mpsc::SyncSender<Handoff>,
    ) {
        let max_batch_bytes = self.shared.config.max_batch_bytes;
        self.spare = self.prepare_spare();
        let mut close_reply = None;
        let mut batch: Vec<AppendRequest> = Vec::new();
        while close_reply.is_none() && self.shared.failure().is_none() {
            // Bounded index lag: past it, wait for the indexer rather than let the
            // not-yet-indexed state grow without limit.
            self.shared.wait_index_lag(self.next_position);
            let Some(first) = inbox.blocking_recv() else {
                break;
            };
            let mut batch_bytes = 0usize;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    WriterMessage::Append(request) => {
                        batch_bytes += request
                            .events
                            .iter()
                            .map(|event| event.payload.len() + 128)
                            .sum::<usize>();
                        batch.push(request);
                    }
                    WriterMessage::Close(reply) => {
                        close_reply = Some(reply);
                        break;
                    }
                }
                if batch_bytes < max_batch_bytes {
                    next = inbox.try_recv().ok();
                }
            }
            if batch.is_empty() {
                continue;
            }
            match self.write_batch(&mut batch) {
                Ok(handoff) => {
                    if syncer.send(handoff).is_err() {
                        break; // The syncer stopped after a failure.
                    }
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::error!(%error, "the log writer failed and stops; reopen the store");
                    self.shared.fail(reason.clone());
                    for request in batch.drain(..) {
                        let _ = request
                            .reply
                            .send((Err(Error::WriterStopped(reason.clone())), Timing::default()));
                    }
                    break;
                }
            }
        }
        // Answer whatever is still queued: nothing more will be written. Until `None`,
        // not until the queue looks empty: a sender that took its slot before the close
        // (a `close` or an append racing a failure) puts its message in only after, and
        // one put in once this thread has gone would wait for its answer forever.
        inbox.close();
        while let Some(message) = inbox.blocking_recv() {
            match message {
                WriterMessage::Append(request) => {
                    let _ = request
                        .reply
                        .send((Err(self.shared.stopped_error()), Timing::default()));
                }
                WriterMessage::Close(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        // A spare still being zero-filled must be finished before the store can be
        // reopened, or it could write into a file the next writer has renamed into place.
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
        // The syncer finishes what it was handed, then the indexer; close waits for both.
        drop(syncer);
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    /// Stages and writes one batch (without syncing) and hands it to the syncer. An
    /// error here is an I/O error that stops the writer; the requests left in `batch`
    /// are then failed by the caller.
    fn write_batch(&mut self, batch: &mut Vec<AppendRequest>) -> Result<Handoff, Error> {
        let taken_at = std::time::Instant::now();
        if self.segment_len >= self.shared.config.segment_bytes || self.prepare == Prepare::Roll {
            self.roll_segment()?;
        }
        if self.prepare == Prepare::Header {
            let path = self.segment_path();
            self.file
                .write_all_at(&segment::segment_header(), 0)
                .map_err(Error::io(&path))?;
            self.segment_len = self.segment_len.max(segment::SEGMENT_HEADER_BYTES as u64);
            self.prepare = Prepare::Nothing;
        }
        // What this batch's records promise is durable: the syncer publishes the durable
        // end only after the fdatasync that covers it returns.
        let durable = self.shared.durable_end();
        self.synced_to = if durable.active_segment == self.segment {
            u32::try_from(durable.active_len).unwrap_or(u32::MAX)
        } else {
            0
        };
        self.buffer.clear();
        let start = (self.next_position, self.segment, self.segment_len);
        let staged: Vec<(Staged, u64)> = batch
            .iter()
            .map(|request| {
                let before = self.buffer.len();
                let staged = self.stage(request);
                (staged, (self.buffer.len() - before) as u64)
            })
            .collect();
        if !self.buffer.is_empty() {
            let path = self.segment_path();
            // The `store.write` fault point: an injected error is a failed write.
            if let Some(chaos::Effect::Error) = self.shared.config.chaos.check(StoreWrite) {
                return Err(Error::io(&path)(chaos::Injected(StoreWrite).io()));
            }
            self.file
                .write_all_at(&self.buffer, self.segment_len)
                .map_err(Error::io(&path))?;
            self.segment_len += self.buffer.len() as u64;
        }
        let mut commits = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for (request, (staged, bytes)) in batch.drain(..).zip(staged) {
            let answer = match staged {
                Staged::Written(outcome, commit) => {
                    commits.push(commit);
                    Ok(outcome)
                }
                Staged::Answered(answer) => answer,
            };
            answers.push(Answer {
                reply: request.reply,
                answer,
                queued_at: request.queued_at,
                queued: taken_at.saturating_duration_since(request.queued_at),
                bytes,
            });
        }
        self.forget_indexed();
        let wrote = !self.buffer.is_empty();
        Ok(Handoff {
            file: wrote.then(|| (self.file.clone(), self.segment_path())),
            end: DurableEnd {
                next_position: self.next_position,
                active_segment: self.segment,
                active_len: self.segment_len,
            },
            answers,
            index: wrote.then_some(IndexBatch {
                start,
                commits,
                end: HighWater {
                    next_position: self.next_position,
                    segment: self.segment,
                    offset: self.segment_len,
                    last_hash: self.last_hash,
                },
            }),
        })
    }

    fn segment_path(&self) -> std::path::PathBuf {
        self.shared
            .fs
            .path(&segment::segment_file_name(self.segment))
    }

    /// Starts a new segment named after the next position; the old one is already synced.
    fn roll_segment(&mut self) -> Result<(), Error> {
        // Everything written to the full segment must be durable before it is sealed:
        // recovery never looks at a sealed segment's tail again, and after a failed
        // fdatasync the kernel marks the failed pages clean, so the sealing fsync below
        // would return Ok without writing them. So wait for the syncer, and stop if it
        // failed.
        while self.shared.durable_end().next_position < self.next_position {
            if let Some(reason) = self.shared.failure() {
                return Err(Error::WriterStopped(reason));
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        if let Some(reason) = self.shared.failure() {
            return Err(Error::WriterStopped(reason));
        }
        let first = self.next_position;
        // Seal the full segment at its exact length (dropping preallocated zeros), so
        // that a sealed segment is all records.
        let path = self.segment_path();
        self.file
            .set_len(self.segment_len)
            .and_then(|()| self.file.sync_all())
            .map_err(Error::io(&path))?;
        let file = match self.spare.take() {
            Some(spare) if spare.is_finished() => match spare.join() {
                Ok(Ok(())) => {
                    let fs = self.shared.fs.as_ref();
                    let name = segment::segment_file_name(first);
                    fs.rename(SPARE, &name)
                        .map_err(Error::io(&fs.path(&name)))?;
                    sync_dir(fs)?;
                    open_segment(fs, first)?
                }
                _ => create_segment(self.shared.fs.as_ref(), first)?,
            },
            // Not ready (the writer outran it) or not wanted: a plain file will do.
            unfinished => {
                self.spare = unfinished;
                create_segment(self.shared.fs.as_ref(), first)?
            }
        };
        if self.spare.is_none() {
            self.spare = self.prepare_spare();
        }
        self.file = file;
        self.segment = first;
        self.segment_len = 0;
        self.prepare = Prepare::Header;
        self.shared.add_segment(first);
        tracing::debug!(segment = first, "rolled to a new segment");
        Ok(())
    }

    /// Starts zero-filling the next segment in the background, if preallocation is on.
    fn prepare_spare(&self) -> Option<std::thread::JoinHandle<Result<(), Error>>> {
        if !self.shared.config.preallocate_segments {
            return None;
        }
        let fs = self.shared.fs.clone();
        let bytes = self.shared.config.segment_bytes;
        std::thread::Builder::new()
            .name("annals-preallocate".into())
            .spawn(move || {
                let path = fs.path(SPARE);
                let file = fs.create(SPARE).map_err(Error::io(&path))?;
                // Start from nothing: a spare left by a crash may be partly filled.
                file.set_len(0).map_err(Error::io(&path))?;
                zero_fill(file.as_ref(), &path, bytes)
            })
            .ok()
    }

    /// Checks one append and, if it is to be written, encodes its records into the buffer.
    fn stage(&mut self, request: &AppendRequest) -> Staged {
        match self.try_stage(request) {
            Ok(staged) => staged,
            Err(error) => Staged::Answered(Err(error)),
        }
    }

    fn try_stage(&mut self, request: &AppendRequest) -> Result<Staged, Error> {
        let config = &self.shared.config;
        let events = &request.events;
        if events.is_empty() {
            return Err(Error::InvalidAppend("an append needs at least one event"));
        }
        let mut seen = HashSet::with_capacity(events.len());
        if !events.iter().all(|event| seen.insert(event.id)) {
            return Err(Error::InvalidAppend(
                "the same event id appears twice in one append",
            ));
        }
        let maybe_seen = {
            let seen = self.shared.seen.read().expect("not poisoned");
            events
                .iter()
                .any(|event| seen.contains(event.id.as_uuid().as_bytes()))
        };
        if maybe_seen && let Some(original) = self.find_original(request)? {
            return Ok(Staged::Answered(Ok(original)));
        }
        let current = self
            .heads
            .get(&request.stream, &self.shared.index)?
            .map(Version);
        if !request.expected.admits(current) {
            return Err(Error::VersionConflict {
                stream: request.stream.clone(),
                expected: describe_expected(request.expected),
                actual: current,
            });
        }

        // Encode; on any error restore the buffer and the chain as they were.
        let buffer_start = self.buffer.len();
        let first_version = current.map_or(0, |v| v.0 + 1);
        let recorded_at = match request.original {
            Some(Placement::Imported(position, _)) if position.0 != self.next_position => {
                return Err(Error::InvalidAppend(
                    "an imported append must continue the log exactly where it ends",
                ));
            }
            Some(Placement::Imported(_, recorded_at) | Placement::Replicated(recorded_at)) => {
                recorded_at
            }
            None => chrono::Utc::now().timestamp_micros(),
        };
        let mut hash = self.last_hash;
        for (i, event) in events.iter().enumerate() {
            let record_start = self.buffer.len();
            let flags = if i + 1 == events.len() {
                FLAG_COMMIT_END
            } else {
                0
            };
            let stored = StoredEvent::of(
                event,
                &request.stream,
                Version(first_version + i as u64),
                Position(self.next_position + i as u64),
                recorded_at,
            );
            let encoded =
                segment::encode_record(&mut self.buffer, flags, &hash, &stored, self.synced_to);
            let size = self.buffer.len() - record_start;
            let failure = match encoded {
                Err(error) => Some(error),
                Ok(_) if size > config.max_event_bytes => Some(Error::EventTooLarge {
                    size,
                    limit: config.max_event_bytes,
                }),
                Ok(_) if self.buffer.len() - buffer_start > config.max_append_bytes => {
                    Some(Error::AppendTooLarge {
                        size: self.buffer.len() - buffer_start,
                        limit: config.max_append_bytes,
                    })
                }
                Ok(record_hash) => {
                    hash = record_hash;
                    None
                }
            };
            if let Some(error) = failure {
                self.buffer.truncate(buffer_start);
                return Err(error);
            }
        }

        let count = events.len() as u64;
        let first_position = self.next_position;
        let location = CommitLocation {
            first_position,
            count: events.len() as u32,
            segment: self.segment,
            offset: self.segment_len + buffer_start as u64,
        };
        self.last_hash = hash;
        self.next_position += count;
        let last_version = first_version + count - 1;
        self.heads
            .set(&request.stream, last_version, first_position + count);
        let mut seen = self.shared.seen.write().expect("not poisoned");
        for (i, event) in events.iter().enumerate() {
            seen.insert(event.id.as_uuid().as_bytes());
            let position = first_position + i as u64;
            self.recent.insert(
                event.id,
                RecentEvent {
                    position,
                    version: first_version + i as u64,
                    stream: request.stream.clone(),
                },
            );
            self.recent_order.push_back((position, event.id));
        }
        Ok(Staged::Written(
            AppendOutcome {
                first_position: Position(first_position),
                last_position: Position(first_position + count - 1),
                first_version: Version(first_version),
                last_version: Version(last_version),
                duplicate: false,
            },
            IndexedCommit {
                stream: request.stream.clone(),
                first_version,
                location,
                event_ids: events.iter().map(|event| event.id).collect(),
            },
        ))
    }

    /// If the append's event ids are already stored as this same append (same stream,
    /// same order, consecutive), the original outcome; an error if only some are, or in
    /// another shape; `None` if none are.
    fn find_original(&self, request: &AppendRequest) -> Result<Option<AppendOutcome>, Error> {
        let mut found: Vec<Option<RecentEvent>> = Vec::with_capacity(request.events.len());
        for event in &request.events {
            found.push(self.lookup(&event.id)?);
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        let first = found[0].clone();
        for (i, (event, original)) in request.events.iter().zip(&found).enumerate() {
            let matches = match (&first, original) {
                (Some(first), Some(original)) => {
                    original.stream == request.stream
                        && original.position == first.position + i as u64
                        && original.version == first.version + i as u64
                }
                _ => false,
            };
            if !matches {
                // Name an id that is stored (the error says so): this one, or else the
                // first stored one, when this one is new.
                let stored = match original {
                    Some(_) => event.id,
                    None => request
                        .events
                        .iter()
                        .zip(&found)
                        .find_map(|(event, original)| original.as_ref().map(|_| event.id))
                        .expect("some id is stored"),
                };
                return Err(Error::IdempotencyMismatch {
                    id: stored.as_uuid(),
                });
            }
        }
        let first = first.expect("checked above");
        let count = request.events.len() as u64;
        Ok(Some(AppendOutcome {
            first_position: Position(first.position),
            last_position: Position(first.position + count - 1),
            first_version: Version(first.version),
            last_version: Version(first.version + count - 1),
            duplicate: true,
        }))
    }

    /// Where a stored event id is: from the recent map, or the index and then the log.
    fn lookup(&self, id: &EventId) -> Result<Option<RecentEvent>, Error> {
        if let Some(recent) = self.recent.get(id) {
            return Ok(Some(recent.clone()));
        }
        let Some(position) = self.shared.index.event_position(id)? else {
            return Ok(None);
        };
        let event = self.shared.read_at_position(position)?;
        Ok(Some(RecentEvent {
            position,
            version: event.version.0,
            stream: event.stream_id,
        }))
    }

    /// Drops recent ids the index now holds, and lets go of heads it holds.
    fn forget_indexed(&mut self) {
        let indexed = self.shared.indexed_position();
        self.heads.forget_indexed(indexed);
        while let Some(&(position, id)) = self.recent_order.front() {
            if position >= indexed {
                break;
            }
            self.recent.remove(&id);
            self.recent_order.pop_front();
        }
    }
}

pub(crate) fn describe_expected(expected: ExpectedVersion) -> String {
    match expected {
        ExpectedVersion::Any => "any version".into(),
        ExpectedVersion::NoStream => "no stream".into(),
        ExpectedVersion::StreamExists => "an existing stream".into(),
        ExpectedVersion::Exact(version) => format!("version {version}"),
    }
}
