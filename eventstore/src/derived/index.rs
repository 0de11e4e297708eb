//! The derived indexes in sled. Everything here can be rebuilt from the log, and is:
//! on open the indexes catch up from their high-water mark to the end of the log, and a
//! missing, broken or mismatched index is rebuilt from position 0.
//!
//! sled costs several microseconds of CPU per key written, so the hot trees hold one key
//! per *group* of entries, written once per indexing round, not one key per event:
//! - `events`: the 48-bit millisecond timestamp of a UUID v7 event id (6 bytes) -> a sorted
//!   run of (the id's other 10 bytes, position (8)). Ids made at about the same time share
//!   a key, so a round of thousands of events writes a handful of keys.
//! - `streams`: stream id, 0x00, first version (8) -> a run of (first version (8),
//!   [`CommitLocation`] (28)), one per append of that stream in one round; an append's
//!   events are contiguous in both stream and log. After a crash, re-indexing may write
//!   runs that overlap older ones; they agree (the log is immutable) and readers merge them.
//! - `heads`: stream id -> last version (8), one write per stream per round
//! - `positions`: first position of a group commit (8) -> segment (8), offset (8): a
//!   sparse map for reading the log from any position
//! - `meta`: `hwm` -> [`HighWater`], the end of what the other trees cover
//! - `snapshots`: stream id -> snapshot (see `snapshot.rs`)
//! - `checkpoints`: name -> position (8), the progress of relays and jobs
//! - `readmodels` and `readmodel/<name>/<version>`: read models (see `readmodel.rs`)
//!
//! All integers are big-endian, so keys sort numerically.

use std::collections::HashMap;
use std::path::Path;

use crate::error::Error;
use crate::ids::{EventId, StreamId, Version};

/// Where the index stops: the next position it has not indexed, and where in the log that
/// position's record starts, with the hash of the record before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HighWater {
    /// The next position not indexed.
    pub next_position: u64,
    /// The segment of that position's record.
    pub segment: u64,
    /// The byte offset of that record in its segment.
    pub offset: u64,
    /// The hash of the record before it.
    pub last_hash: [u8; 32],
}

impl HighWater {
    /// The start of an empty log.
    pub const START: HighWater = HighWater {
        next_position: 0,
        segment: 0,
        offset: 0,
        last_hash: crate::segment::GENESIS_HASH,
    };

    fn encode(&self) -> [u8; 56] {
        let mut bytes = [0u8; 56];
        bytes[..8].copy_from_slice(&self.next_position.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.segment.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.offset.to_be_bytes());
        bytes[24..].copy_from_slice(&self.last_hash);
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<HighWater> {
        if bytes.len() != 56 {
            return None;
        }
        Some(HighWater {
            next_position: be_u64(&bytes[..8]),
            segment: be_u64(&bytes[8..16]),
            offset: be_u64(&bytes[16..24]),
            last_hash: bytes[24..].try_into().ok()?,
        })
    }
}

/// Where one append's events are: their first position, how many, and the byte place of
/// the first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitLocation {
    /// Position of the first event.
    pub first_position: u64,
    /// Number of events.
    pub count: u32,
    /// Segment of the first record.
    pub segment: u64,
    /// Byte offset of the first record.
    pub offset: u64,
}

impl CommitLocation {
    fn encode(&self) -> [u8; 28] {
        let mut bytes = [0u8; 28];
        bytes[..8].copy_from_slice(&self.first_position.to_be_bytes());
        bytes[8..12].copy_from_slice(&self.count.to_be_bytes());
        bytes[12..20].copy_from_slice(&self.segment.to_be_bytes());
        bytes[20..].copy_from_slice(&self.offset.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<CommitLocation> {
        (bytes.len() == 28).then(|| CommitLocation {
            first_position: be_u64(&bytes[..8]),
            count: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
            segment: be_u64(&bytes[12..20]),
            offset: be_u64(&bytes[20..]),
        })
    }
}

/// One committed append, as the index needs it.
#[derive(Debug, Clone)]
pub struct IndexedCommit {
    /// The stream.
    pub stream: StreamId,
    /// The version of its first event.
    pub first_version: u64,
    /// Where its events are.
    pub location: CommitLocation,
    /// The ids of its events, in order.
    pub event_ids: Vec<EventId>,
}

/// What one group commit adds to the index.
#[derive(Debug, Clone)]
pub struct IndexBatch {
    /// Position, segment and offset of the batch's first record.
    pub start: (u64, u64, u64),
    /// The appends it committed.
    pub commits: Vec<IndexedCommit>,
    /// The high-water mark after it.
    pub end: HighWater,
}

/// One entry of an `events` run: the id's last 10 bytes and the position.
type IdEntry = ([u8; 10], u64);
const ID_ENTRY_BYTES: usize = 18;

/// An event id split into its `events` key (the 48-bit timestamp) and the rest.
fn split_id(id: &EventId) -> ([u8; 6], [u8; 10]) {
    let bytes = id.as_uuid().into_bytes();
    (
        bytes[..6].try_into().expect("6 bytes"),
        bytes[6..].try_into().expect("10 bytes"),
    )
}

/// Merges `new` entries into a stored run, keeping it sorted and free of duplicates (an
/// id already present keeps its stored position).
fn merge_id_run(existing: &[u8], new: &mut [IdEntry]) -> Vec<u8> {
    new.sort_unstable();
    let mut merged = Vec::with_capacity(existing.len() + new.len() * ID_ENTRY_BYTES);
    let mut old = existing.chunks_exact(ID_ENTRY_BYTES).peekable();
    let mut fresh = new.iter().peekable();
    let mut last: Option<[u8; 10]> = None;
    loop {
        let take_old = match (old.peek(), fresh.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(stored), Some((suffix, _))) => stored[..10] <= suffix[..],
        };
        let (suffix, position): ([u8; 10], u64) = if take_old {
            let stored = old.next().expect("peeked");
            (
                stored[..10].try_into().expect("10 bytes"),
                be_u64(&stored[10..]),
            )
        } else {
            *fresh.next().expect("peeked")
        };
        if last == Some(suffix) {
            continue;
        }
        last = Some(suffix);
        merged.extend_from_slice(&suffix);
        merged.extend_from_slice(&position.to_be_bytes());
    }
    merged
}

pub(crate) fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// The key of a stream's commit starting at `version` in the `streams` tree.
pub fn stream_key(stream: &StreamId, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.as_str().len() + 9);
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The sled database and its trees.
#[derive(Debug, Clone)]
pub struct Index {
    db: sled::Db,
    pub(crate) events: sled::Tree,
    pub(crate) streams: sled::Tree,
    pub(crate) heads: sled::Tree,
    pub(crate) positions: sled::Tree,
    meta: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    checkpoints: sled::Tree,
}

/// Whether sled refused to open an index because another handle holds its file lock.
/// sled 0.34 reports that as `ErrorKind::Other` ("could not acquire lock on ..."), not as
/// `WouldBlock`.
fn held_by_another_handle(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || (error.kind() == std::io::ErrorKind::Other
            && error.to_string().starts_with("could not acquire lock"))
}

const HWM_KEY: &[u8] = b"hwm";
/// The follower's mark of a store on JetStream: (sequence, next position).
const REPLICA_MARK: &[u8] = b"replica-mark";

impl Index {
    /// Opens the index at `path`. If another handle of this process still holds it (a
    /// closed store's last handle), waits up to 2 s for it to drop; if sled still will not
    /// open it, it is moved aside (to `index.broken-<unix nanoseconds>`) and a fresh one is
    /// made, to be rebuilt from the log.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Index, Error> {
        let open = || {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(Some(5000))
                .open()
        };
        // sled locks its files too. The caller holds the data directory's lock, so only a
        // handle of this same process can still hold sled's: a closed store whose last
        // handle (a subscription, a task finishing) has not dropped yet. Wait up to 2 s for
        // it to go: only a handle kept longer gets the index moved aside and rebuilt.
        let mut attempt = 0;
        let opened = loop {
            match open() {
                Err(sled::Error::Io(error)) if held_by_another_handle(&error) && attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        let db = match opened {
            Ok(db) => db,
            Err(error) => {
                // Nanoseconds: two broken indexes within a second must not collide.
                let aside = path.with_extension(format!(
                    "broken-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ));
                tracing::warn!(%error, aside = %aside.display(), "index will not open; moving it aside and rebuilding from the log");
                std::fs::rename(path, &aside).map_err(Error::io(path))?;
                open()?
            }
        };
        Ok(Index {
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
            heads: db.open_tree("heads")?,
            positions: db.open_tree("positions")?,
            meta: db.open_tree("meta")?,
            snapshots: db.open_tree("snapshots")?,
            checkpoints: db.open_tree("checkpoints")?,
            db,
        })
    }

    /// The sled database, for the read models kept beside the index.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Empties every tree, read models included, for a rebuild from the start of the log.
    /// The follower's mark stays: it describes the log, not the index.
    pub fn clear(&self) -> Result<(), Error> {
        let mark = self.meta.get(REPLICA_MARK)?;
        for name in self.db.tree_names() {
            if name.starts_with(b"readmodel") {
                self.db.drop_tree(name)?;
            }
        }
        for tree in [
            &self.events,
            &self.streams,
            &self.heads,
            &self.positions,
            &self.meta,
            &self.snapshots,
            &self.checkpoints,
        ] {
            tree.clear()?;
        }
        if let Some(mark) = mark {
            self.meta.insert(REPLICA_MARK, mark)?;
        }
        Ok(())
    }

    /// The high-water mark, if the index has one.
    pub fn high_water(&self) -> Result<Option<HighWater>, Error> {
        Ok(self
            .meta
            .get(HWM_KEY)?
            .and_then(|bytes| HighWater::decode(&bytes)))
    }

    /// Adds the batches to the index, the high-water mark last. Re-applying a batch is
    /// harmless (runs are merged as sets, heads only move forward), which is what makes a
    /// crash between two tree writes safe.
    pub fn apply(&self, batches: &[IndexBatch]) -> Result<(), Error> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let mut new_ids: HashMap<[u8; 6], Vec<IdEntry>> = HashMap::new();
        let mut runs: HashMap<&StreamId, Vec<u8>> = HashMap::new();
        let mut run_starts: HashMap<&StreamId, u64> = HashMap::new();
        let mut latest_heads: HashMap<&StreamId, u64> = HashMap::new();
        let mut positions = sled::Batch::default();
        for batch in batches {
            let (position, segment, offset) = batch.start;
            let mut location = [0u8; 16];
            location[..8].copy_from_slice(&segment.to_be_bytes());
            location[8..].copy_from_slice(&offset.to_be_bytes());
            positions.insert(&position.to_be_bytes()[..], &location[..]);
            for commit in &batch.commits {
                for (i, id) in commit.event_ids.iter().enumerate() {
                    let (bucket, suffix) = split_id(id);
                    let position = commit.location.first_position + i as u64;
                    new_ids.entry(bucket).or_default().push((suffix, position));
                }
                run_starts
                    .entry(&commit.stream)
                    .or_insert(commit.first_version);
                let run = runs.entry(&commit.stream).or_default();
                run.extend_from_slice(&commit.first_version.to_be_bytes());
                run.extend_from_slice(&commit.location.encode());
                let last_version = commit.first_version + commit.event_ids.len() as u64 - 1;
                latest_heads.insert(&commit.stream, last_version);
            }
        }
        let mut events = sled::Batch::default();
        for (bucket, mut entries) in new_ids {
            let existing = self.events.get(bucket)?;
            let merged = merge_id_run(existing.as_deref().unwrap_or_default(), &mut entries);
            events.insert(&bucket[..], merged);
        }
        let mut streams = sled::Batch::default();
        for (stream, run) in runs {
            streams.insert(stream_key(stream, run_starts[stream]), run);
        }
        let mut heads = sled::Batch::default();
        for (stream, last_version) in latest_heads {
            heads.insert(stream.as_str().as_bytes(), &last_version.to_be_bytes()[..]);
        }
        self.events.apply_batch(events)?;
        self.streams.apply_batch(streams)?;
        self.heads.apply_batch(heads)?;
        self.positions.apply_batch(positions)?;
        self.meta.insert(HWM_KEY, &last.end.encode()[..])?;
        Ok(())
    }

    /// The position of the event with this id.
    pub fn event_position(&self, id: &EventId) -> Result<Option<u64>, Error> {
        let (bucket, suffix) = split_id(id);
        let Some(run) = self.events.get(bucket)? else {
            return Ok(None);
        };
        let entries: Vec<&[u8]> = run.chunks_exact(ID_ENTRY_BYTES).collect();
        Ok(entries
            .binary_search_by(|entry| entry[..10].cmp(&suffix[..]))
            .ok()
            .map(|at| be_u64(&entries[at][10..])))
    }

    /// The checkpoint saved under `name`.
    pub fn load_checkpoint(&self, name: &str) -> Result<Option<crate::Position>, Error> {
        Ok(self
            .checkpoints
            .get(name.as_bytes())?
            .filter(|value| value.len() == 8)
            .map(|value| crate::Position(be_u64(&value))))
    }

    /// Saves a checkpoint.
    pub fn save_checkpoint(&self, name: &str, position: crate::Position) -> Result<(), Error> {
        self.checkpoints
            .insert(name.as_bytes(), &position.0.to_be_bytes()[..])?;
        Ok(())
    }

    /// Where the follower of a store on JetStream resumes (`crate::replicated`): the last
    /// sequence applied and the log's next position then, saved together.
    pub fn load_replica_mark(&self) -> Result<Option<(u64, u64)>, Error> {
        Ok(self
            .meta
            .get(REPLICA_MARK)?
            .filter(|value| value.len() == 16)
            .map(|value| (be_u64(&value[..8]), be_u64(&value[8..]))))
    }

    /// Saves the follower's mark (see [`Index::load_replica_mark`]).
    pub fn save_replica_mark(&self, sequence: u64, next_position: u64) -> Result<(), Error> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&sequence.to_be_bytes());
        value[8..].copy_from_slice(&next_position.to_be_bytes());
        self.meta.insert(REPLICA_MARK, &value[..])?;
        Ok(())
    }

    /// The last version of a stream.
    pub fn head(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        Ok(self
            .heads
            .get(stream.as_str().as_bytes())?
            .map(|v| Version(be_u64(&v))))
    }

    /// The stream heads whose ids start with `prefix` and sort after `after` (all of
    /// them for `None`), in id order, read from sled as the iterator goes.
    pub fn heads_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(StreamId, Version), Error>> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.as_bytes().to_vec()),
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        self.heads
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(move |entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(prefix.as_bytes()))
            })
            .map(|entry| {
                let (key, value) = entry?;
                let id = std::str::from_utf8(&key).unwrap_or_default();
                Ok((StreamId::new(id)?, Version(be_u64(&value))))
            })
    }

    /// The commits of `stream` that hold versions `from..=to`, oldest first.
    pub fn commits(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, CommitLocation)>, Error> {
        // The run holding `from` is the last one starting at or before it.
        let start = match self
            .streams
            .range(stream_key(stream, 0)..=stream_key(stream, from))
            .next_back()
        {
            Some(entry) => entry?.0.to_vec(),
            None => stream_key(stream, 0),
        };
        let mut commits = std::collections::BTreeMap::new();
        for entry in self.streams.range(start..=stream_key(stream, to)) {
            let (_, run) = entry?;
            for record in run.chunks_exact(36) {
                let first_version = be_u64(&record[..8]);
                let location = CommitLocation::decode(&record[8..]).ok_or_else(|| {
                    Error::Index(sled::Error::Unsupported("bad commit location".into()))
                })?;
                let last_version = first_version + u64::from(location.count) - 1;
                if first_version <= to && last_version >= from {
                    commits.insert(first_version, location);
                }
            }
        }
        Ok(commits.into_iter().collect())
    }

    /// The latest indexed group-commit start at or before `position`.
    pub fn batch_start_before(&self, position: u64) -> Result<Option<(u64, u64, u64)>, Error> {
        Ok(
            match self.positions.range(..=position.to_be_bytes()).next_back() {
                Some(entry) => {
                    let (key, value) = entry?;
                    Some((be_u64(&key), be_u64(&value[..8]), be_u64(&value[8..])))
                }
                None => None,
            },
        )
    }

    /// Every event id in the index, in key order, for the writer's filter of ids it has
    /// seen. The ids are read from sled one run at a time as the iterator goes, so the
    /// whole set is never in memory.
    pub fn event_ids(&self) -> impl Iterator<Item = Result<[u8; 16], Error>> + '_ {
        self.events.iter().flat_map(|entry| {
            let ids: Vec<Result<[u8; 16], Error>> = match entry {
                Err(error) => vec![Err(error.into())],
                Ok((bucket, run)) => run
                    .chunks_exact(ID_ENTRY_BYTES)
                    .map(|record| {
                        let mut id = [0u8; 16];
                        id[..6].copy_from_slice(&bucket);
                        id[6..].copy_from_slice(&record[..10]);
                        Ok(id)
                    })
                    .collect(),
            };
            ids
        })
    }

    /// Writes sled's buffers to disk (sled's own flush: not an fsync; the log is the
    /// durable copy).
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(suffix: u8, position: u64) -> IdEntry {
        ([suffix; 10], position)
    }

    #[test]
    fn id_runs_merge_as_sorted_sets() {
        let first = merge_id_run(&[], &mut [entry(5, 50), entry(1, 10)]);
        let merged = merge_id_run(&first, &mut [entry(3, 30), entry(5, 99)]);
        let suffixes: Vec<(u8, u64)> = merged
            .chunks_exact(ID_ENTRY_BYTES)
            .map(|e| (e[0], be_u64(&e[10..])))
            .collect();
        // Sorted, and an id already stored keeps its stored position.
        assert_eq!(suffixes, vec![(1, 10), (3, 30), (5, 50)]);
        assert_eq!(merge_id_run(&merged, &mut []), merged);
    }
}
