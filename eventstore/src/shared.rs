//! [`Shared`]: the state the store's handles, the writer, the syncer, the indexer and the
//! subscriptions share: the durable end of the log, the segment list, how far the index
//! has caught up, why the writer stopped, and the data directory's lock.
//!
//! A failure of the writer, the syncer or the indexer goes through [`Shared::fail`]: it
//! keeps the first reason, wakes the threads and readers waiting on the store, tells the
//! watchers of [`EventStore::failed`](crate::EventStore::failed) (a server stops taking
//! commands and exits), and records the data directory as failed in this process
//! (`failed_dirs`), so that only a fresh process reopens it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Condvar, Mutex, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::StoreConfig;
use crate::derived::index::Index;
use crate::error::Error;
use crate::io::LogFs;
use crate::reads::RecentCommits;
use crate::segment::DurableEnd;

/// State shared by the handles, the writer, the indexer and the subscriptions.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// The log directory's files, through the IO seam.
    pub(crate) fs: Arc<dyn LogFs>,
    pub(crate) config: StoreConfig,
    pub(crate) index: Index,
    pub(crate) durable: watch::Sender<DurableEnd>,
    /// The next position the index has not written, with a condvar for readers waiting.
    pub(crate) indexed: Mutex<u64>,
    pub(crate) indexed_changed: Condvar,
    /// The same position for async waiters ([`crate::EventStore::index_caught_up`]).
    pub(crate) indexed_watch: watch::Sender<u64>,
    pub(crate) segments: RwLock<Vec<u64>>,
    /// Every event id appended, approximately (a filter the writer fills as it stages
    /// appends): a miss proves an id is new, so the writer consults the index only for
    /// the rare possible duplicate, and a refused command asks the index whether it ran
    /// before only when it may have ([`crate::EventStore::may_hold_event`]). It grows
    /// with the log.
    pub(crate) seen: RwLock<crate::id_filter::IdFilter>,
    /// Durable commits the indexer has not written yet, by stream.
    pub(crate) recent_commits: Mutex<RecentCommits>,
    /// Readers blocked until the index catches up; while there are none the indexer
    /// gathers larger rounds, which cost sled far less per event.
    pub(crate) readers_waiting: AtomicUsize,
    /// Why the writer stopped after a failure (`None` while it runs, and after a plain
    /// close). A watch, so a server can await it ([`crate::EventStore::failed`]).
    pub(crate) writer_failure: watch::Sender<Option<String>>,
    pub(crate) closed: CancellationToken,
    /// Turns on the blocking pool for store IO ([`crate::EventStore::blocking`]),
    /// `config.blocking_io` of them.
    pub(crate) blocking_io: Arc<tokio::sync::Semaphore>,
    /// The data directory's lock, released by `close` (or when the last handle goes).
    pub(crate) lock: Mutex<Option<File>>,
    /// For a store whose log is on JetStream: the link to it (`crate::replicated`).
    pub(crate) replica: std::sync::OnceLock<Arc<crate::replicated::Link>>,
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
        self.writer_failure.borrow().clone()
    }

    /// Records why the writer stopped (the first reason wins), marks the data directory
    /// as failed in this process, and wakes everyone waiting on the store.
    pub(crate) fn fail(&self, reason: String) {
        // The directory first: whoever sees the failure finds it refused already.
        crate::failed_dirs::record(&self.dir, &reason);
        self.writer_failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            *failure = Some(reason);
            true
        });
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

    pub(crate) fn set_indexed(&self, next_position: u64) {
        *self.indexed.lock().expect("not poisoned") = next_position;
        self.indexed_changed.notify_all();
        self.indexed_watch.send_replace(next_position);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.index.flush();
    }
}
