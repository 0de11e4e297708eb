//! [`EventStore`]: opening a data directory (lock, recovery, index catch-up), appending
//! through the writer, reading, subscribing and verifying.
//!
//! A data directory holds:
//! - `LOCK`: held with an OS file lock while a process has the store open; holds its pid;
//! - `log/`: the segment files, the source of truth;
//! - `index/`: the sled database, derived from the log and rebuilt from it when missing.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, PositionText};
use crate::ids::{EventId, ExpectedVersion, Position, StreamId, Version};
use crate::index::{CommitLocation, HighWater, Index, IndexBatch, IndexedCommit};
use crate::segment::{self, DurableEnd, LogCursor};
use crate::writer::{self, AppendRequest, Writer, WriterMessage};

/// The store's limits and sizes. Every limit is here, with the reason it exists.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Create the data directory if it does not exist (`annals serve` does; offline
    /// tools do not, so a typo in a path is an error rather than an empty store).
    pub create_if_missing: bool,
    /// Largest encoded record (event plus envelope). Bounds memory per event and the
    /// damage a corrupt length field can claim.
    pub max_event_bytes: usize,
    /// Largest encoded append. An append is written in one batch, so this also bounds
    /// how much can be written but not yet synced.
    pub max_append_bytes: usize,
    /// A group commit stops taking appends past this many bytes, which bounds the latency
    /// one batch adds and the size of a torn tail.
    pub max_batch_bytes: usize,
    /// A segment is closed once it reaches this size; the next append starts a new one.
    pub segment_bytes: u64,
    /// Fill each segment with zeros to `segment_bytes` before writing into it (the next
    /// one in the background). Overwriting allocated blocks lets `fdatasync` skip the
    /// file-size journal commit, which about halves its latency on ext4.
    pub preallocate_segments: bool,
    /// Appends waiting for the writer; callers wait (backpressure) beyond it.
    pub append_queue: usize,
    /// Events durable but not yet indexed. The index is written off the acknowledgement
    /// path and may lag; past this many events the writer waits for it, which bounds the
    /// memory held for the lag and how long a read may wait for the index.
    pub max_index_lag: u64,
    /// How long the indexer may gather group commits into one round while no reader is
    /// waiting for it. Larger rounds write far fewer sled keys per event.
    pub index_linger: std::time::Duration,
    /// sled's page cache. sled's memory use is reported at several times this figure.
    pub index_cache_bytes: u64,
    /// Events buffered per subscriber; a slow subscriber waits, alone, beyond it.
    pub subscription_buffer: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            create_if_missing: true,
            max_event_bytes: 1 << 20,
            max_append_bytes: 4 << 20,
            max_batch_bytes: 4 << 20,
            segment_bytes: 64 << 20,
            preallocate_segments: true,
            append_queue: 8192,
            max_index_lag: 500_000,
            index_linger: std::time::Duration::from_millis(5),
            index_cache_bytes: 64 << 20,
            subscription_buffer: 1024,
        }
    }
}

impl StoreConfig {
    /// The most bytes that can be written but not synced: one batch plus its last append.
    pub fn max_unsynced_bytes(&self) -> usize {
        self.max_batch_bytes + self.max_append_bytes
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Position of the first event written.
    pub first_position: Position,
    /// Position of the last event written.
    pub last_position: Position,
    /// Stream version of the first event written.
    pub first_version: Version,
    /// Stream version of the last event: the stream's version after the append.
    pub last_version: Version,
    /// True when every event id was already stored: nothing was written and this is the
    /// original outcome.
    pub duplicate: bool,
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from the given version up.
    Forward,
    /// Newest first, from the given version down.
    Backward,
}

/// What [`EventStore::verify`] found in a sound log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Segment files checked.
    pub segments: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// The hash of the last record (hex), which commits to the whole log.
    pub head_hash: String,
}

/// State shared by the handles, the writer, the indexer and the subscriptions.
#[derive(Debug)]
pub struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) config: StoreConfig,
    pub(crate) index: Index,
    durable: watch::Sender<DurableEnd>,
    /// The next position the index has not written, with a condvar for readers waiting.
    indexed: Mutex<u64>,
    indexed_changed: Condvar,
    segments: RwLock<Vec<u64>>,
    /// Durable commits the indexer has not written yet, by stream.
    recent_commits: Mutex<RecentCommits>,
    /// Readers blocked until the index catches up; while there are none the indexer
    /// gathers larger rounds, which cost sled far less per event.
    readers_waiting: AtomicUsize,
    pub(crate) writer_failure: Mutex<Option<String>>,
    closed: CancellationToken,
    /// The data directory's lock, released by `close` (or when the last handle goes).
    lock: Mutex<Option<File>>,
}

impl Shared {
    pub(crate) fn publish_durable(&self, end: DurableEnd) {
        self.durable.send_replace(end);
    }

    pub(crate) fn durable_end(&self) -> DurableEnd {
        *self.durable.borrow()
    }

    pub(crate) fn add_segment(&self, first: u64) {
        self.segments.write().expect("not poisoned").push(first);
    }

    /// Why the writer stopped, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.writer_failure.lock().expect("not poisoned").clone()
    }

    /// Records why the writer stopped and wakes everyone waiting on it.
    pub(crate) fn fail(&self, reason: String) {
        self.writer_failure
            .lock()
            .expect("not poisoned")
            .get_or_insert(reason);
        self.indexed_changed.notify_all();
    }

    /// The error for an append that can no longer be written.
    pub(crate) fn stopped_error(&self) -> Error {
        Error::WriterStopped(
            self.failure()
                .unwrap_or_else(|| "the store was closed".into()),
        )
    }

    /// Blocks while more than `max_index_lag` events before `next_position` are not yet
    /// indexed (returns at once if the store has failed).
    pub(crate) fn wait_index_lag(&self, next_position: u64) {
        let mut indexed = self.indexed.lock().expect("not poisoned");
        while next_position.saturating_sub(*indexed) > self.config.max_index_lag
            && self.failure().is_none()
        {
            indexed = self
                .indexed_changed
                .wait_timeout(indexed, std::time::Duration::from_millis(100))
                .expect("not poisoned")
                .0;
        }
    }

    pub(crate) fn indexed_position(&self) -> u64 {
        *self.indexed.lock().expect("not poisoned")
    }

    fn set_indexed(&self, next_position: u64) {
        *self.indexed.lock().expect("not poisoned") = next_position;
        self.indexed_changed.notify_all();
    }

    /// Records commits that are about to become durable, for stream reads until the
    /// indexer has written them (called by the syncer before it publishes them).
    pub(crate) fn remember_commits(&self, commits: &[IndexedCommit]) {
        let mut recent = self.recent_commits.lock().expect("not poisoned");
        for commit in commits {
            let end = commit.location.first_position + u64::from(commit.location.count);
            recent
                .by_stream
                .entry(commit.stream.clone())
                .or_default()
                .push((commit.first_version, commit.location));
            recent.order.push_back((end, commit.stream.clone()));
        }
    }

    /// Forgets remembered commits the index now holds.
    fn forget_commits(&self, indexed: u64) {
        let mut recent = self.recent_commits.lock().expect("not poisoned");
        while let Some((end, _)) = recent.order.front() {
            if *end > indexed {
                break;
            }
            let (_, stream) = recent.order.pop_front().expect("peeked");
            if let Some(commits) = recent.by_stream.get_mut(&stream) {
                commits.remove(0);
                if commits.is_empty() {
                    recent.by_stream.remove(&stream);
                }
            }
        }
    }

    /// The last durable version of `stream`: the index's head, or a later commit not
    /// indexed yet. Cheaper than [`Shared::stream_commits`], which also scans runs. The
    /// remembered commits are read before the index: the indexer forgets them only
    /// after writing them.
    fn stream_head(
        &self,
        stream: &StreamId,
        durable: &DurableEnd,
    ) -> Result<Option<Version>, Error> {
        let remembered = self
            .recent_commits
            .lock()
            .expect("not poisoned")
            .by_stream
            .get(stream)
            .and_then(|commits| {
                commits
                    .iter()
                    .filter(|(_, location)| {
                        location.first_position + u64::from(location.count) <= durable.next_position
                    })
                    .map(|(first_version, location)| first_version + u64::from(location.count) - 1)
                    .max()
            });
        let head = self.index.head(stream)?.map(|v| v.0);
        Ok(match (head, remembered) {
            (Some(head), Some(last)) => Some(Version(head.max(last))),
            (head, last) => head.or(last).map(Version),
        })
    }

    /// The head of `stream` and its commits holding versions `low..=high`, oldest
    /// first, as of `durable`: from the index plus the commits it has not written yet,
    /// so stream reads never wait for the indexer. The remembered commits are read
    /// before the index: the indexer forgets them only after writing them.
    fn stream_commits(
        &self,
        stream: &StreamId,
        low: u64,
        high: u64,
        durable: &DurableEnd,
    ) -> Result<(Option<Version>, Vec<CommitLocation>), Error> {
        let remembered: Vec<(u64, CommitLocation)> = self
            .recent_commits
            .lock()
            .expect("not poisoned")
            .by_stream
            .get(stream)
            .map(|commits| {
                commits
                    .iter()
                    .filter(|(_, location)| {
                        location.first_position + u64::from(location.count) <= durable.next_position
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut head = self.index.head(stream)?.map(|v| v.0);
        if let Some((first_version, location)) = remembered.last() {
            let last = first_version + u64::from(location.count) - 1;
            head = Some(head.map_or(last, |h| h.max(last)));
        }
        let mut commits: std::collections::BTreeMap<u64, CommitLocation> =
            self.index.commits(stream, low, high)?.into_iter().collect();
        for (first_version, location) in remembered {
            let last = first_version + u64::from(location.count) - 1;
            if first_version <= high && last >= low {
                commits.insert(first_version, location);
            }
        }
        Ok((head.map(Version), commits.into_values().collect()))
    }

    /// Blocks until the index covers every position before `position`.
    fn wait_indexed(&self, position: u64) -> Result<(), Error> {
        let mut indexed = self.indexed.lock().expect("not poisoned");
        if *indexed >= position {
            return Ok(());
        }
        // Tell the indexer someone waits, so it stops gathering and writes now.
        self.readers_waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = scopeguard(|| {
            self.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        });
        while *indexed < position {
            if let Some(reason) = self.failure() {
                return Err(Error::WriterStopped(reason));
            }
            indexed = self
                .indexed_changed
                .wait_timeout(indexed, std::time::Duration::from_millis(100))
                .expect("not poisoned")
                .0;
        }
        Ok(())
    }

    /// A cursor placed at `position`, which must be durable.
    fn cursor_at(&self, position: u64) -> Result<LogCursor, Error> {
        let segment = {
            let segments = self.segments.read().expect("not poisoned");
            let at = segments.partition_point(|&first| first <= position);
            segments[at.saturating_sub(1)]
        };
        let (mut start_position, mut offset) = (segment, 0);
        if let Some((batch_position, batch_segment, batch_offset)) =
            self.index.batch_start_before(position)?
            && batch_segment == segment
        {
            (start_position, offset) = (batch_position, batch_offset);
        }
        let mut cursor = LogCursor::at(
            self.log_dir.clone(),
            segment,
            offset,
            start_position,
            self.config.max_event_bytes,
        );
        let durable = self.durable_end();
        let skip = (position - start_position) as usize;
        if skip > 0 {
            cursor.read_with(&durable, skip, |_, _, _| Ok(()))?;
        }
        Ok(cursor)
    }

    /// The durable event at `position`.
    pub(crate) fn read_at_position(&self, position: u64) -> Result<RecordedEvent, Error> {
        let durable = self.durable_end();
        if position >= durable.next_position {
            return Err(Error::PositionOutOfRange(Position(position)));
        }
        let mut cursor = self.cursor_at(position)?;
        read_events(&mut cursor, &durable, 1)?
            .pop()
            .ok_or(Error::PositionOutOfRange(Position(position)))
    }
}

fn read_events(
    cursor: &mut LogCursor,
    durable: &DurableEnd,
    max: usize,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut events = Vec::with_capacity(max.min(1024));
    cursor.read_with(durable, max, |record, _, _| {
        events.push(record.event.to_recorded(record.ends_commit())?);
        Ok(())
    })?;
    Ok(events)
}

/// Commits made durable but not yet indexed.
#[derive(Debug, Default)]
struct RecentCommits {
    by_stream: std::collections::HashMap<StreamId, Vec<(u64, CommitLocation)>>,
    /// (end position, stream) in log order, for forgetting.
    order: std::collections::VecDeque<(u64, StreamId)>,
}

/// The handles to the background threads, for [`EventStore::close`].
#[derive(Debug, Default)]
struct Threads {
    writer: Option<std::thread::JoinHandle<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
    indexer: Option<std::thread::JoinHandle<()>>,
}

/// An open event store. Cheap to clone: clones share one writer.
#[derive(Debug, Clone)]
pub struct EventStore {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<WriterMessage>,
    threads: Arc<Mutex<Threads>>,
}

impl EventStore {
    /// Opens (or creates) the store in `dir`: takes the lock, recovers the log (cutting a
    /// torn tail, refusing corruption), brings the index up to the end of the log, and
    /// starts the writer and indexer threads.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<EventStore, Error> {
        Self::open_with_progress(dir, config, &mut |_, _| {})
    }

    /// [`EventStore::open`], calling `progress(bytes_done, bytes_total)` while the index
    /// catches up with the log (which, for a missing index, is a rebuild of all of it).
    pub fn open_with_progress(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, false, progress)
    }

    /// [`EventStore::open_with_progress`], but the derived index is deleted first (the
    /// whole `index/` sled database: stream and id indexes, heads, checkpoints, snapshots,
    /// read models), so it is rebuilt from the whole log while
    /// `progress(bytes_done, bytes_total)` is called. The lock is taken before anything
    /// is deleted and held throughout, so no other process sees the index half rebuilt.
    /// Nothing in the log changes.
    pub fn open_rebuilding_index(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, true, progress)
    }

    fn open_inner(
        dir: &Path,
        config: StoreConfig,
        rebuild_index: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        let dir = dir.to_path_buf();
        if !dir.is_dir() {
            if !config.create_if_missing {
                return Err(Error::MissingDataDir(dir));
            }
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        let lock = lock_dir(&dir)?;
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir).map_err(Error::io(&log_dir))?;
        let mut segments = segment::list_segments(&log_dir)?;
        if segments.is_empty() {
            writer::create_segment(&log_dir, 0)?;
            segments.push(0);
        }
        if segments[0] != 0 {
            return Err(Error::Corrupt {
                segment: log_dir.join(segment::segment_file_name(segments[0])),
                offset: 0,
                after: PositionText(None),
                reason: "the first segment does not start at position 0".into(),
            });
        }
        let index_dir = dir.join("index");
        if rebuild_index && index_dir.exists() {
            // Deleting the files is much faster than emptying sled's trees key by key,
            // and safe under the lock: a crash now leaves a missing or partial index,
            // which the next open rebuilds anyway.
            std::fs::remove_dir_all(&index_dir).map_err(Error::io(&index_dir))?;
        }
        let index = Index::open(&index_dir, config.index_cache_bytes)?;
        let recovered = recover(&log_dir, &segments, &index, &config, progress)?;
        let heads = index.all_heads()?;
        let stored_ids = index.all_event_ids()?;
        let mut seen = fastbloom::BloomFilter::with_false_pos(0.001)
            .expected_items((stored_ids.len() * 2).max(4_000_000));
        for id in &stored_ids {
            seen.insert(id);
        }

        let last_segment = *segments.last().expect("at least one segment");
        let durable_end = DurableEnd {
            next_position: recovered.next_position,
            active_segment: last_segment,
            active_len: recovered.end_offset,
        };
        let (durable, _) = watch::channel(durable_end);
        let shared = Arc::new(Shared {
            dir,
            log_dir: log_dir.clone(),
            index,
            durable,
            indexed: Mutex::new(recovered.next_position),
            indexed_changed: Condvar::new(),
            segments: RwLock::new(segments),
            readers_waiting: AtomicUsize::new(0),
            recent_commits: Mutex::new(RecentCommits::default()),
            writer_failure: Mutex::new(None),
            closed: CancellationToken::new(),
            lock: Mutex::new(Some(lock)),
            config,
        });

        let segment_path = log_dir.join(segment::segment_file_name(last_segment));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment_path)
            .map_err(Error::io(&segment_path))?;
        if shared.config.preallocate_segments {
            writer::zero_fill(&file, &segment_path, shared.config.segment_bytes)?;
        }
        let writer = Writer::new(
            shared.clone(),
            Arc::new(file),
            writer::LogEnd {
                segment: last_segment,
                segment_len: recovered.end_offset,
                next_position: recovered.next_position,
                last_hash: recovered.last_hash,
            },
            heads,
            seen,
        );
        let (inbox, inbox_rx) = mpsc::channel(shared.config.append_queue);
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(64);
        let indexer_shared = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("annals-indexer".into())
            .spawn(move || run_indexer(indexer_shared, index_rx))
            .map_err(Error::io(&log_dir))?;
        let syncer_shared = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("annals-syncer".into())
            .spawn(move || writer::run_syncer(syncer_shared, sync_rx, index_tx))
            .map_err(Error::io(&log_dir))?;
        let writer = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || writer.run(inbox_rx, sync_tx))
            .map_err(Error::io(&log_dir))?;
        Ok(EventStore {
            shared,
            inbox,
            threads: Arc::new(Mutex::new(Threads {
                writer: Some(writer),
                syncer: Some(syncer),
                indexer: Some(indexer),
            })),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Appends `events` to `stream` atomically, if the stream is at `expected`. Returns
    /// once the events are durable (fsync'd). Re-sending the same event ids returns the
    /// original outcome (with `duplicate: true`) and writes nothing.
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            original: None,
            reply,
        };
        if self
            .inbox
            .send(WriterMessage::Append(request))
            .await
            .is_err()
        {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Appends events recorded elsewhere (an export, the NATS copy) exactly as they were:
    /// same ids, positions, versions, times and append boundaries, so the hash chain comes
    /// out identical. The events must continue this log at its end, in position order;
    /// each append (a run ending with `last_in_commit`) is written atomically. Events
    /// already stored (a resumed import) are recognised and skipped. Returns the next
    /// position after the import.
    pub async fn import(&self, events: Vec<RecordedEvent>) -> Result<Position, Error> {
        let mut answers = Vec::new();
        let mut commit: Vec<RecordedEvent> = Vec::new();
        for event in events {
            if let Some(first) = commit.first()
                && (first.stream_id != event.stream_id
                    || first.version.0 + commit.len() as u64 != event.version.0
                    || first.position.0 + commit.len() as u64 != event.position.0)
            {
                return Err(Error::InvalidAppend(
                    "an imported append mixes streams or skips a version or position",
                ));
            }
            let last = event.last_in_commit;
            commit.push(event);
            if last {
                answers.push(self.send_import(std::mem::take(&mut commit)).await?);
            }
        }
        if !commit.is_empty() {
            return Err(Error::InvalidAppend(
                "the imported events end inside an append",
            ));
        }
        let mut next = self.next_position();
        for answer in answers {
            let outcome = answer.await.unwrap_or_else(|_| Err(self.stopped()))?;
            next = outcome.last_position.next();
        }
        Ok(next)
    }

    async fn send_import(
        &self,
        commit: Vec<RecordedEvent>,
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, Error>>, Error> {
        let first = &commit[0];
        let (stream, position, recorded_at) = (
            first.stream_id.clone(),
            first.position,
            first.recorded_at.timestamp_micros(),
        );
        let expected = match first.version.0 {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(Version(version - 1)),
        };
        let events = commit
            .into_iter()
            .map(|event| NewEvent {
                id: event.id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                metadata: event.metadata,
                payload: event.payload,
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream,
            expected,
            events,
            original: Some((position, recorded_at)),
            reply,
        };
        self.inbox
            .send(WriterMessage::Append(request))
            .await
            .map_err(|_| self.stopped())?;
        Ok(answer)
    }

    /// The read-model storage of this store (see [`crate::readmodel`]).
    pub fn read_models(&self) -> Result<crate::ReadModels, Error> {
        crate::ReadModels::new(self.shared.index.db().clone())
    }

    /// The checkpoint saved under `name` (a relay's or a job's progress), if any.
    /// Checkpoints live in the index: like everything there, losing one costs rework
    /// (re-reading from an earlier position), never correctness.
    pub fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, Error> {
        self.shared.index.load_checkpoint(name)
    }

    /// Saves `position` as the checkpoint `name`.
    pub fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), Error> {
        self.shared.index.save_checkpoint(name, position)
    }

    fn stopped(&self) -> Error {
        let reason = self
            .shared
            .writer_failure
            .lock()
            .expect("not poisoned")
            .clone();
        Error::WriterStopped(reason.unwrap_or_else(|| "the store was closed".into()))
    }

    /// Whether the writer is running (false after an I/O failure or close).
    pub fn writer_alive(&self) -> bool {
        !self.inbox.is_closed()
            && self
                .shared
                .writer_failure
                .lock()
                .expect("not poisoned")
                .is_none()
    }

    /// The position the next append will get: every position before it is durable.
    pub fn next_position(&self) -> Position {
        Position(self.shared.durable_end().next_position)
    }

    /// The next position the index has not covered (for readiness and lag reports).
    pub fn indexed_position(&self) -> Position {
        Position(self.shared.indexed_position())
    }

    /// Blocks until the index covers everything durable now, so index reads see every
    /// acknowledged append. Every index read calls this first.
    pub fn wait_for_index(&self) -> Result<(), Error> {
        self.shared
            .wait_indexed(self.shared.durable_end().next_position)
    }

    /// The last version of `stream`, or `None` if it has no events.
    pub fn stream_head(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        let durable = self.shared.durable_end();
        self.shared.stream_head(stream, &durable)
    }

    /// Up to `limit` events of `stream`, from version `from` on (forward) or down
    /// (backward).
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let durable = self.shared.durable_end();
        let Some(head) = self.shared.stream_head(stream, &durable)? else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (low, high) = match direction {
            Direction::Forward => {
                if from > head {
                    return Ok(Vec::new());
                }
                (from.0, head.0.min(from.0.saturating_add(limit as u64 - 1)))
            }
            Direction::Backward => {
                let high = from.min(head).0;
                (high.saturating_sub(limit as u64 - 1), high)
            }
        };
        let mut events = Vec::with_capacity((high - low + 1) as usize);
        let (_, commits) = self.shared.stream_commits(stream, low, high, &durable)?;
        for location in commits {
            let mut cursor = self.cursor_at_commit(&location);
            for event in read_events(&mut cursor, &durable, location.count as usize)? {
                if (low..=high).contains(&event.version.0) {
                    events.push(event);
                }
            }
        }
        if direction == Direction::Backward {
            events.reverse();
        }
        Ok(events)
    }

    fn cursor_at_commit(&self, location: &CommitLocation) -> LogCursor {
        LogCursor::at(
            self.shared.log_dir.clone(),
            location.segment,
            location.offset,
            location.first_position,
            self.shared.config.max_event_bytes,
        )
    }

    /// Up to `limit` events of the whole log from position `from`.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        let durable = self.shared.durable_end();
        if from.0 >= durable.next_position || limit == 0 {
            return Ok(Vec::new());
        }
        let mut cursor = self.shared.cursor_at(from.0)?;
        read_events(&mut cursor, &durable, limit)
    }

    /// Calls `visit` on every durable event from `from`, decoded in place without
    /// allocating (the fast path for replays and rebuilds). Returns how many it visited.
    pub fn replay_from(
        &self,
        from: Position,
        mut visit: impl FnMut(&crate::envelope::StoredEvent<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let durable = self.shared.durable_end();
        if from.0 >= durable.next_position {
            return Ok(0);
        }
        let mut cursor = self.shared.cursor_at(from.0)?;
        let mut total = 0u64;
        loop {
            let read = cursor.read_with(&durable, 1 << 16, |record, _, _| visit(&record.event))?;
            if read == 0 {
                return Ok(total);
            }
            total += read as u64;
        }
    }

    /// The event with this id, if stored.
    pub fn read_event(&self, id: &EventId) -> Result<Option<RecordedEvent>, Error> {
        self.wait_for_index()?;
        match self.shared.index.event_position(id)? {
            Some(position) => self.shared.read_at_position(position).map(Some),
            None => Ok(None),
        }
    }

    /// Streams whose category is `category` (all streams for `None`), with their heads.
    pub fn streams(&self, category: Option<&str>) -> Result<Vec<(StreamId, Version)>, Error> {
        self.wait_for_index()?;
        match category {
            None => self.shared.index.heads_with_prefix(""),
            Some(category) => Ok(self
                .shared
                .index
                .heads_with_prefix(category)?
                .into_iter()
                .filter(|(stream, _)| stream.category() == category)
                .collect()),
        }
    }

    /// Follows the log from `from`: first the events already stored, then new ones as
    /// they become durable, in position order, with no gap or duplicate at the switch.
    /// Each subscription has its own bounded buffer: a slow subscriber slows only itself.
    /// Must be called within a tokio runtime.
    pub fn subscribe(&self, from: Position) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.shared.config.subscription_buffer);
        let shared = self.shared.clone();
        tokio::spawn(follow(shared, from.0, sender));
        Subscription { receiver }
    }

    /// Walks the whole durable log and checks every record: checksum, decoding,
    /// contiguous positions, hash chain, appends complete within their segment. Returns
    /// the first damage as [`Error::Corrupt`].
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        self.verify_with_progress(&mut |_, _| {})
    }

    /// [`EventStore::verify`], calling `progress(events_done, events_total)`.
    pub fn verify_with_progress(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport, Error> {
        let durable = self.shared.durable_end();
        let mut cursor = LogCursor::at(
            self.shared.log_dir.clone(),
            0,
            0,
            0,
            self.shared.config.max_event_bytes,
        );
        let mut last_hash = segment::GENESIS_HASH;
        let mut report = VerifyReport {
            events: 0,
            segments: self.shared.segments.read().expect("not poisoned").len() as u64,
            bytes: 0,
            head_hash: String::new(),
        };
        let mut commit_open = false;
        loop {
            let read = cursor.read_with(&durable, 1 << 16, |record, segment, offset| {
                if record.prev_hash != &last_hash {
                    return Err(Error::Corrupt {
                        segment: segment.to_path_buf(),
                        offset,
                        after: PositionText(record.event.position.checked_sub(1).map(Position)),
                        reason: "hash chain broken: a record before this one was changed, removed or reordered".into(),
                    });
                }
                last_hash = record.hash();
                commit_open = !record.ends_commit();
                report.bytes += record.len as u64;
                Ok(())
            })?;
            if read == 0 {
                break;
            }
            report.events += read as u64;
            progress(report.events, durable.next_position);
        }
        if commit_open {
            let (segment, offset) = cursor.place();
            return Err(Error::Corrupt {
                segment: self
                    .shared
                    .log_dir
                    .join(segment::segment_file_name(segment)),
                offset,
                after: PositionText(report.events.checked_sub(1).map(Position)),
                reason: "the log ends inside an append".into(),
            });
        }
        report.head_hash = last_hash.iter().map(|b| format!("{b:02x}")).collect();
        Ok(report)
    }

    /// The latest snapshot of `stream`, as `(version, state bytes)`. A snapshot is
    /// derived data: it is ignored if the stream is not at least at its version.
    pub fn load_snapshot(&self, stream: &StreamId) -> Result<Option<(Version, Vec<u8>)>, Error> {
        crate::snapshot::load(&self.shared.index, stream, self.stream_head(stream)?)
    }

    /// Stores `state` as the snapshot of `stream` at `version`.
    pub fn save_snapshot(
        &self,
        stream: &StreamId,
        version: Version,
        state: &[u8],
    ) -> Result<(), Error> {
        crate::snapshot::save(&self.shared.index, stream, version, state)
    }

    /// Stops the writer after the batch in progress, lets the indexer finish, flushes the
    /// index and releases the lock once every handle is dropped. Appends after this fail
    /// with [`Error::WriterStopped`].
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.inbox.send(WriterMessage::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
        self.shared.closed.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().expect("not poisoned"));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in [threads.writer, threads.syncer, threads.indexer]
                .into_iter()
                .flatten()
            {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
        if let Err(error) = self.shared.index.flush() {
            tracing::warn!(%error, "index flush on close failed; it will catch up on open");
        }
        // Release the directory now, not when the last handle or subscription goes.
        drop(self.shared.lock.lock().expect("not poisoned").take());
    }
}

/// A live feed of the log from some position. Ends (returns `None`) when the store closes.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Result<RecordedEvent, Error>>,
}

impl Subscription {
    /// The next event, in position order; `None` when the store has closed.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, Error>> {
        self.receiver.recv().await
    }
}

/// Reads from the log as it grows and feeds one subscriber.
async fn follow(
    shared: Arc<Shared>,
    from: u64,
    sender: mpsc::Sender<Result<RecordedEvent, Error>>,
) {
    let mut durable_rx = shared.durable.subscribe();
    let mut cursor: Option<LogCursor> = None;
    let mut position = from;
    loop {
        let durable = *durable_rx.borrow_and_update();
        if position < durable.next_position {
            let reader_shared = shared.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let mut cursor = match cursor {
                    Some(cursor) => cursor,
                    None => reader_shared.cursor_at(position)?,
                };
                let events = read_events(&mut cursor, &durable, 512)?;
                Ok::<_, Error>((cursor, events))
            })
            .await;
            let (next_cursor, events) = match chunk {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(error)) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                Err(_) => return,
            };
            cursor = Some(next_cursor);
            for event in events {
                position = event.position.0 + 1;
                tokio::select! {
                    sent = sender.send(Ok(event)) => if sent.is_err() {
                        return; // The subscriber went away.
                    },
                    () = shared.closed.cancelled() => return,
                }
            }
            continue;
        }
        tokio::select! {
            changed = durable_rx.changed() => if changed.is_err() { return },
            () = shared.closed.cancelled() => return,
            () = sender.closed() => return,
        }
    }
}

/// Applies group commits to the index as the writer hands them over, several at a time
/// when it lags, then lets waiting readers go.
fn run_indexer(shared: Arc<Shared>, inbox: std::sync::mpsc::Receiver<IndexBatch>) {
    let linger = shared.config.index_linger;
    while let Ok(first) = inbox.recv() {
        let gathering_since = std::time::Instant::now();
        let mut batches = vec![first];
        let mut events: usize = 0;
        // Gather what is queued; while no reader waits, linger a little for more, since
        // one round of many events writes far fewer sled keys than many small rounds.
        loop {
            match inbox.try_recv() {
                Ok(batch) => {
                    events += batch
                        .commits
                        .iter()
                        .map(|c| c.event_ids.len())
                        .sum::<usize>();
                    batches.push(batch);
                    if events >= 65_536 {
                        break;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    let waited = gathering_since.elapsed();
                    if waited >= linger || shared.readers_waiting.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    std::thread::sleep(
                        (linger - waited).min(std::time::Duration::from_micros(500)),
                    );
                }
            }
        }
        if let Err(error) = shared.index.apply(&batches) {
            // The log is intact; reads that need the index will wait, and the next open
            // rebuilds it from the high-water mark.
            tracing::error!(%error, "indexing failed; reopen the store to rebuild the index");
            shared.fail(format!("indexing failed: {error}"));
            return;
        }
        let end = batches
            .last()
            .expect("one batch at least")
            .end
            .next_position;
        shared.set_indexed(end);
        shared.forget_commits(end);
    }
}

/// Takes the data directory's lock, writing our pid into it; names the holder's pid if
/// another process has it.
fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(Error::io(&path)(error)),
    }
    file.set_len(0).map_err(Error::io(&path))?;
    file.rewind().map_err(Error::io(&path))?;
    write!(file, "{}", std::process::id()).map_err(Error::io(&path))?;
    Ok(file)
}

/// Where the log ends after recovery.
struct Recovered {
    next_position: u64,
    end_offset: u64,
    last_hash: [u8; 32],
}

/// Appends recovery puts in one index batch (one entry of the sparse position map): about
/// what a busy group commit holds, so a read from any position skips as few records as
/// after normal operation.
const RECOVERY_COMMITS_PER_BATCH: usize = 64;

/// Appends recovery indexes per sled round. sled costs microseconds per key written and a
/// stream gets one run (one key) per round, so larger rounds write far fewer keys; this
/// bounds the memory a round holds.
const RECOVERY_COMMITS_PER_ROUND: usize = 1 << 16;

/// Brings the index up to the end of the log, starting from its high-water mark (or from
/// scratch if it has none or it does not match the log), and cuts a torn tail.
fn recover(
    log_dir: &Path,
    segments: &[u64],
    index: &Index,
    config: &StoreConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Recovered, Error> {
    let mut start = index.high_water()?.unwrap_or(HighWater::START);
    if !high_water_matches_log(log_dir, segments, &start, config)? {
        tracing::warn!("the index does not match the log; rebuilding it from the start");
        index.clear()?;
        start = HighWater::START;
    }
    let total_bytes: u64 = segments
        .iter()
        .filter(|&&first| first >= start.segment)
        .map(|first| {
            std::fs::metadata(log_dir.join(segment::segment_file_name(*first)))
                .map_or(0, |m| m.len())
        })
        .sum::<u64>()
        .saturating_sub(start.offset);
    let mut done_bytes = 0u64;

    let mut next_position = start.next_position;
    let mut last_hash = start.last_hash;
    let mut end_offset = start.offset;
    let first_segment_index = segments.partition_point(|&first| first < start.segment);
    for (i, &first) in segments.iter().enumerate().skip(first_segment_index) {
        let path = log_dir.join(segment::segment_file_name(first));
        let is_last = i + 1 == segments.len();
        if first != start.segment && first != next_position {
            return Err(Error::Corrupt {
                segment: path,
                offset: 0,
                after: PositionText(next_position.checked_sub(1).map(Position)),
                reason: format!(
                    "segment starts at position {first}, but the log continues at {next_position}: a segment is missing or misnamed"
                ),
            });
        }
        let data = segment::read_segment(&path)?;
        let mut offset = if first == start.segment {
            start.offset as usize
        } else {
            0
        };
        let mut committed_offset = offset;
        let mut committed_position = next_position;
        let mut committed_hash = last_hash;
        let mut batches: Vec<IndexBatch> = Vec::new();
        let mut pending_commits = 0usize;
        let mut commit: Option<IndexedCommit> = None;
        let mut damage = None;
        while offset < data.len() {
            let record = match segment::parse_record(&data[offset..], config.max_event_bytes) {
                Ok(record) => record,
                Err(found) => {
                    damage = Some(found);
                    break;
                }
            };
            let event = &record.event;
            let corrupt = |reason: String| Error::Corrupt {
                segment: path.clone(),
                offset: offset as u64,
                after: PositionText(next_position.checked_sub(1).map(Position)),
                reason,
            };
            if event.position != next_position {
                return Err(corrupt(format!(
                    "expected position {next_position}, found {}",
                    event.position
                )));
            }
            if record.prev_hash != &last_hash {
                return Err(corrupt("hash chain broken".into()));
            }
            let stream = StreamId::new(event.stream_id).map_err(|e| corrupt(e.to_string()))?;
            let id = EventId::from_uuid(uuid::Uuid::from_bytes(event.id))
                .map_err(|e| corrupt(e.to_string()))?;
            let entry = commit.get_or_insert_with(|| IndexedCommit {
                stream: stream.clone(),
                first_version: event.version,
                location: CommitLocation {
                    first_position: event.position,
                    count: 0,
                    segment: first,
                    offset: offset as u64,
                },
                event_ids: Vec::new(),
            });
            if entry.stream != stream
                || entry.first_version + entry.event_ids.len() as u64 != event.version
            {
                return Err(corrupt("an append mixes streams or skips a version".into()));
            }
            entry.event_ids.push(id);
            entry.location.count += 1;
            last_hash = record.hash();
            next_position += 1;
            offset += record.len;
            if record.ends_commit() {
                let done = commit.take().expect("started above");
                let end = HighWater {
                    next_position,
                    segment: first,
                    offset: offset as u64,
                    last_hash,
                };
                // Consecutive appends share a batch, as a group commit's do: one entry of
                // the sparse position map per batch, not per append.
                match batches.last_mut() {
                    Some(batch) if batch.commits.len() < RECOVERY_COMMITS_PER_BATCH => {
                        batch.commits.push(done);
                        batch.end = end;
                    }
                    _ => batches.push(IndexBatch {
                        start: (done.location.first_position, first, done.location.offset),
                        commits: vec![done],
                        end,
                    }),
                }
                pending_commits += 1;
                committed_offset = offset;
                committed_position = next_position;
                committed_hash = last_hash;
                if pending_commits >= RECOVERY_COMMITS_PER_ROUND {
                    index.apply(&batches)?;
                    batches.clear();
                    pending_commits = 0;
                    progress(done_bytes + offset as u64, total_bytes);
                }
            }
        }
        index.apply(&batches)?;
        done_bytes += data.len() as u64;
        progress(done_bytes, total_bytes);

        // Zeros after the last record are unwritten preallocation, not data.
        let data_end = data
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |last| last + 1);
        if damage.is_some() && offset >= data_end {
            damage = None;
        }
        // A record that fails its checksum and runs on into those zeros is a write cut
        // short: in a preallocated file the last written byte, not the file's length,
        // shows where writing stopped, so this is the `PastEnd` of a short file.
        if let Some(segment::Damage::Checksum) = damage
            && let Some(header) = data.get(offset..offset + segment::HEADER_BYTES)
            && offset
                + segment::HEADER_BYTES
                + u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize
                > data_end
        {
            damage = Some(segment::Damage::PastEnd);
        }
        let tail_is_clean = damage.is_none() && committed_offset >= data_end;
        if !tail_is_clean {
            let reason = match &damage {
                Some(damage) => damage.to_string(),
                None => "the segment ends inside an append".into(),
            };
            let torn = is_last
                && segment::is_torn_tail(
                    &data[..data_end],
                    committed_offset,
                    offset,
                    damage.as_ref(),
                    config.max_unsynced_bytes(),
                );
            if !torn {
                return Err(Error::Corrupt {
                    segment: path,
                    offset: if damage.is_some() {
                        offset as u64
                    } else {
                        committed_offset as u64
                    },
                    after: PositionText(committed_position.checked_sub(1).map(Position)),
                    reason,
                });
            }
            tracing::warn!(
                segment = %path.display(),
                cut_bytes = data_end - committed_offset,
                %reason,
                "cutting a torn tail left by a crash (never acknowledged)"
            );
        }
        if is_last && config.preallocate_segments {
            // Keep the active segment's preallocated space: zero what was torn instead
            // of cutting the file.
            if committed_offset < data_end {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(Error::io(&path))?;
                let zeros = vec![0u8; data_end - committed_offset];
                std::os::unix::fs::FileExt::write_all_at(&file, &zeros, committed_offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io(&path))?;
            }
        } else if committed_offset < data.len() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io(&path))?;
            file.set_len(committed_offset as u64)
                .map_err(Error::io(&path))?;
            file.sync_all().map_err(Error::io(&path))?;
        }
        next_position = committed_position;
        last_hash = committed_hash;
        end_offset = committed_offset as u64;
    }
    Ok(Recovered {
        next_position,
        end_offset,
        last_hash,
    })
}

/// Whether the index's high-water mark points at a record boundary of this log with the
/// hash it remembers. An index from another log (or an older copy of this one that the
/// log has since lost) does not, and is rebuilt.
fn high_water_matches_log(
    log_dir: &Path,
    segments: &[u64],
    high_water: &HighWater,
    config: &StoreConfig,
) -> Result<bool, Error> {
    if *high_water == HighWater::START {
        return Ok(true);
    }
    if segments.binary_search(&high_water.segment).is_err() {
        return Ok(false);
    }
    let path = log_dir.join(segment::segment_file_name(high_water.segment));
    let data = segment::read_segment(&path)?;
    let offset = high_water.offset as usize;
    if offset > data.len() {
        return Ok(false);
    }
    if offset == data.len() {
        // The next record, if any, starts the next segment; recovery checks its link.
        return Ok(true);
    }
    Ok(
        match segment::parse_record(&data[offset..], config.max_event_bytes) {
            Ok(record) => {
                record.event.position == high_water.next_position
                    && record.prev_hash == &high_water.last_hash
            }
            Err(_) => true, // A torn tail right at the mark: recovery cuts it.
        },
    )
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.index.flush();
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StoreConfig {
        StoreConfig {
            segment_bytes: 8 * 1024,
            preallocate_segments: false,
            ..StoreConfig::default()
        }
    }

    #[tokio::test]
    async fn an_import_reproduces_the_log_and_its_hash_chain() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = EventStore::open(from.path(), config()).unwrap();
        for i in 0..60u64 {
            let stream = StreamId::new(format!("order-{}", i % 4)).unwrap();
            let events = (0..=i % 3)
                .map(|j| NewEvent::new("Happened", format!("{i}/{j}").into_bytes()))
                .collect();
            source
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        let events = source.read_all(Position(0), usize::MAX).unwrap();
        let copy = EventStore::open(to.path(), config()).unwrap();
        let next = copy.import(events.clone()).await.unwrap();
        assert_eq!(next, source.next_position());
        assert_eq!(copy.read_all(Position(0), usize::MAX).unwrap(), events);
        assert_eq!(
            copy.verify().unwrap().head_hash,
            source.verify().unwrap().head_hash
        );
        // A resumed import skips what is there; one that does not continue the log fails.
        let prefix = 1
            + (9..events.len())
                .find(|&i| events[i].last_in_commit)
                .unwrap();
        assert_eq!(
            copy.import(events[..prefix].to_vec()).await.unwrap().0,
            prefix as u64
        );
        let mut gap = events[20..].to_vec();
        for event in &mut gap {
            event.id = EventId::new();
        }
        assert!(copy.import(gap).await.is_err());
        assert_eq!(
            copy.next_position(),
            source.next_position(),
            "nothing written"
        );
    }

    #[tokio::test]
    async fn checkpoints_are_saved_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), config()).unwrap();
        assert_eq!(store.load_checkpoint("relay").unwrap(), None);
        store.save_checkpoint("relay", Position(42)).unwrap();
        assert_eq!(store.load_checkpoint("relay").unwrap(), Some(Position(42)));
    }
}
