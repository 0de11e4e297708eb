//! [`StreamHeads`]: the writer's stream heads for the expected-version check, in bounded
//! memory.
//!
//! The index's `heads` tree holds every stream's head, but it lags the writer: the
//! indexer writes a commit to sled only after the syncer made it durable, and the writer
//! has long gone on with the next batches. So the writer keeps two things:
//! - the heads it wrote that the index may not hold yet (`unindexed`), each with the end
//!   position of its last commit. These are never evicted: they leave only once the
//!   index's high-water mark has passed that end, and there are at most as many as the
//!   events the index may lag (`StoreConfig::max_index_lag`);
//! - a cache of heads the index does hold (`cached`), bounded by
//!   `StoreConfig::stream_head_cache` and evicted by the CLOCK rule (an approximation of
//!   least recently used: a slot used since the hand last passed gets a second chance).
//!
//! Anything else is read from the index. That is correct because a head that is not in
//! `unindexed` was either never written by this writer (the index held it at open:
//! recovery indexes the whole log before the writer starts) or left `unindexed` after
//! the index's high-water mark passed its commit; the indexer writes the heads tree
//! before it moves the mark. So a stream's head is never read from sled while a newer
//! head of that stream is unindexed.

use std::collections::{HashMap, VecDeque};

use crate::derived::index::Index;
use crate::error::Error;
use crate::ids::StreamId;

/// The writer's stream heads: every unindexed one, and a bounded cache of indexed ones.
#[derive(Debug)]
pub(crate) struct StreamHeads {
    /// Heads written but perhaps not indexed yet: (last version, end position of the
    /// commit that wrote it).
    unindexed: HashMap<StreamId, (u64, u64)>,
    /// (end position, stream) of every commit in `unindexed`, in log order.
    unindexed_order: VecDeque<(u64, StreamId)>,
    cached: ClockCache,
}

impl StreamHeads {
    /// No heads in memory; at most `capacity` indexed heads are cached.
    pub(crate) fn new(capacity: usize) -> StreamHeads {
        StreamHeads {
            unindexed: HashMap::new(),
            unindexed_order: VecDeque::new(),
            cached: ClockCache::new(capacity),
        }
    }

    /// The last version of `stream`: written by the writer and not yet indexed, cached,
    /// or else read from the index (and cached).
    pub(crate) fn get(&mut self, stream: &StreamId, index: &Index) -> Result<Option<u64>, Error> {
        if let Some(&(version, _)) = self.unindexed.get(stream) {
            return Ok(Some(version));
        }
        if let Some(version) = self.cached.get(stream) {
            return Ok(Some(version));
        }
        let head = index.head(stream)?.map(|version| version.0);
        if let Some(version) = head {
            self.cached.insert(stream.clone(), version);
        }
        Ok(head)
    }

    /// Records a commit of `stream` ending at version `version`, whose events end before
    /// position `end`.
    pub(crate) fn set(&mut self, stream: &StreamId, version: u64, end: u64) {
        self.unindexed.insert(stream.clone(), (version, end));
        self.unindexed_order.push_back((end, stream.clone()));
    }

    /// Moves the heads the index now holds (every commit ending at or before `indexed`)
    /// into the bounded cache.
    pub(crate) fn forget_indexed(&mut self, indexed: u64) {
        while let Some((end, _)) = self.unindexed_order.front() {
            if *end > indexed {
                break;
            }
            let (end, stream) = self.unindexed_order.pop_front().expect("peeked");
            // Only the stream's latest commit moves it; an earlier one is superseded.
            if let Some(&(version, latest_end)) = self.unindexed.get(&stream)
                && latest_end == end
            {
                self.unindexed.remove(&stream);
                self.cached.insert(stream, version);
            }
        }
    }

    /// How many heads are in memory: (unindexed, cached).
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.unindexed.len(), self.cached.slots.len())
    }
}

/// A fixed number of slots replaced by the CLOCK rule: a hand sweeps the slots, clearing
/// each slot's `used` mark, and replaces the first slot it finds unmarked.
#[derive(Debug)]
struct ClockCache {
    capacity: usize,
    slots: Vec<Slot>,
    by_stream: HashMap<StreamId, usize>,
    hand: usize,
}

#[derive(Debug)]
struct Slot {
    stream: StreamId,
    version: u64,
    used: bool,
}

impl ClockCache {
    fn new(capacity: usize) -> ClockCache {
        ClockCache {
            capacity: capacity.max(1),
            slots: Vec::new(),
            by_stream: HashMap::new(),
            hand: 0,
        }
    }

    fn get(&mut self, stream: &StreamId) -> Option<u64> {
        let slot = &mut self.slots[*self.by_stream.get(stream)?];
        slot.used = true;
        Some(slot.version)
    }

    fn insert(&mut self, stream: StreamId, version: u64) {
        if let Some(&at) = self.by_stream.get(&stream) {
            let slot = &mut self.slots[at];
            slot.version = version;
            slot.used = true;
            return;
        }
        let slot = Slot {
            stream: stream.clone(),
            version,
            used: false,
        };
        if self.slots.len() < self.capacity {
            self.by_stream.insert(stream, self.slots.len());
            self.slots.push(slot);
            return;
        }
        // Every slot is cleared at most once per sweep, so this ends within two.
        while self.slots[self.hand].used {
            self.slots[self.hand].used = false;
            self.hand = (self.hand + 1) % self.slots.len();
        }
        let evicted = std::mem::replace(&mut self.slots[self.hand], slot);
        self.by_stream.remove(&evicted.stream);
        self.by_stream.insert(stream, self.hand);
        self.hand = (self.hand + 1) % self.slots.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> StreamId {
        StreamId::new(format!("s-{n}")).unwrap()
    }

    #[test]
    fn the_cache_keeps_its_bound_and_the_heads_in_use() {
        let mut cache = ClockCache::new(3);
        for n in 0..3 {
            cache.insert(stream(n), n as u64);
        }
        // Stream 0 is used again, so the next insert evicts another one.
        assert_eq!(cache.get(&stream(0)), Some(0));
        cache.insert(stream(3), 3);
        assert_eq!(cache.slots.len(), 3);
        assert_eq!(cache.get(&stream(0)), Some(0));
        assert_eq!(cache.get(&stream(1)), None, "the least recently used went");
        assert_eq!(cache.get(&stream(3)), Some(3));
        for n in 10..1_000 {
            cache.insert(stream(n), n as u64);
        }
        assert_eq!((cache.slots.len(), cache.by_stream.len()), (3, 3));
        assert_eq!(cache.get(&stream(999)), Some(999));
    }

    #[test]
    fn unindexed_heads_stay_until_the_index_passes_their_last_commit() {
        let mut heads = StreamHeads::new(1);
        heads.set(&stream(1), 0, 10);
        heads.set(&stream(2), 0, 11);
        heads.set(&stream(1), 1, 12);
        heads.forget_indexed(11);
        // Stream 1's first commit is indexed, but its newer one is not: it stays.
        assert_eq!(heads.held(), (1, 1));
        assert_eq!(heads.unindexed.get(&stream(1)), Some(&(1, 12)));
        heads.forget_indexed(12);
        assert_eq!(heads.held(), (0, 1), "the cache holds one head");
        assert_eq!(heads.cached.get(&stream(1)), Some(1));
    }
}
