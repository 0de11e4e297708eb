//! Reads: streams, the whole log, single events and stream lists, as of the durable end.
//!
//! Stream reads never wait for the indexer. The syncer remembers every commit it makes
//! durable ([`RecentCommits`], the overlay) until the indexer has written it to sled, and a
//! stream read merges the index with that overlay: the overlay is read before the index,
//! and forgotten only after the index holds it, so no commit falls between the two.
//! Reads by event id or of stream lists do wait until the index covers the durable end.

use std::sync::atomic::Ordering;

use crate::derived::index::{CommitLocation, IndexedCommit};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::ids::{EventId, Position, StreamId, Version};
use crate::segment::{DurableEnd, LogCursor};
use crate::shared::Shared;
use crate::store::{Direction, EventStore};

impl Shared {
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
    pub(crate) fn forget_commits(&self, indexed: u64) {
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
    pub(crate) fn stream_head(
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
    pub(crate) fn stream_commits(
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
    pub(crate) fn wait_indexed(&self, position: u64) -> Result<(), Error> {
        let position = INDEX_AS_OF
            .get()
            .map_or(position, |as_of| as_of.min(position));
        let mut indexed = self.indexed.lock().expect("not poisoned");
        if *indexed >= position {
            return Ok(());
        }
        if !crate::io::real::may_wait() {
            return Err(Error::Io {
                path: INDEX_WAIT.into(),
                source: std::io::ErrorKind::WouldBlock.into(),
            });
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
    pub(crate) fn cursor_at(&self, position: u64) -> Result<LogCursor, Error> {
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
            self.fs.clone(),
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

pub(crate) fn read_events(
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

/// The path of the `WouldBlock` error a wait for the index answers on a thread whose
/// reads may not wait ([`crate::io::real::without_waiting`]).
pub(crate) const INDEX_WAIT: &str = "the index";

thread_local! {
    /// Reads on this thread take the index as current once it covers this position
    /// ([`index_as_of`]).
    static INDEX_AS_OF: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `read` with reads that wait for the index (by event id, stream lists) content
/// with an index covering the log up to `position` (the log's end when the read was
/// asked for), instead of the end of the log when they run: a read that waited for the
/// index asynchronously is not sent waiting again by appends made since.
pub(crate) fn index_as_of<T>(position: Position, read: impl FnOnce() -> T) -> T {
    /// Restores the thread's setting however `read` ends.
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            INDEX_AS_OF.set(self.0);
        }
    }
    let _restore = Restore(INDEX_AS_OF.replace(Some(position.0)));
    read()
}

/// Commits made durable but not yet indexed.
#[derive(Debug, Default)]
pub(crate) struct RecentCommits {
    by_stream: std::collections::HashMap<StreamId, Vec<(u64, CommitLocation)>>,
    /// (end position, stream) in log order, for forgetting.
    order: std::collections::VecDeque<(u64, StreamId)>,
}

impl EventStore {
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
            self.shared.fs.clone(),
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

    /// Streams whose category is `category` (all streams for `None`), with their heads,
    /// in id order. Every one of them: a list that may be long is better read by
    /// [`EventStore::streams_page`].
    pub fn streams(&self, category: Option<&str>) -> Result<Vec<(StreamId, Version)>, Error> {
        self.wait_for_index()?;
        self.stream_heads_after(category, None).collect()
    }

    /// One page of [`EventStore::streams`]: up to `limit` streams of `category` whose ids
    /// sort after `after` (from the first for `None`), in id order, and whether more
    /// follow. Pass the last stream of a page as `after` for the next one.
    pub fn streams_page(
        &self,
        category: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(StreamId, Version)>, bool), Error> {
        self.wait_for_index()?;
        let mut page = self
            .stream_heads_after(category, after)
            .take(limit.saturating_add(1))
            .collect::<Result<Vec<_>, Error>>()?;
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    fn stream_heads_after<'a>(
        &'a self,
        category: Option<&'a str>,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(StreamId, Version), Error>> + 'a {
        self.shared
            .index
            .heads_after(category.unwrap_or(""), after)
            .filter(move |entry| match (entry, category) {
                (Ok((stream, _)), Some(category)) => stream.category() == category,
                _ => true,
            })
    }
}

/// Runs `f` when dropped.
pub(crate) fn scopeguard(f: impl FnOnce()) -> impl Drop {
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
