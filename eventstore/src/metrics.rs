//! The store's metrics, recorded through the `metrics` facade: a no-op until the
//! process installs a recorder (the API's `/metrics` does, see `api::metrics`).
//!
//! Only the write path records, and only once per group commit (one `fdatasync`), from
//! the syncer thread: a histogram handle is looked up once per group, and each append
//! of the group adds one sample to it. Nothing is allocated or locked per event. The
//! gauges (`annals_log_next_position`, `annals_index_lag_events`) are not recorded here:
//! whoever exposes them reads [`crate::EventStore::next_position`] and
//! [`crate::EventStore::indexed_position`] when scraped.

use std::time::{Duration, Instant};

/// Histogram: seconds from an append's call to its acknowledgement (queued, written,
/// synced, answered).
pub const APPEND_DURATION: &str = "annals_append_duration_seconds";
/// Histogram: seconds of each group's `fdatasync` (of every file the group wrote).
pub const FSYNC_DURATION: &str = "annals_fsync_duration_seconds";
/// Histogram: events made durable by each group commit (one `fdatasync`).
pub const APPEND_BATCH_EVENTS: &str = "annals_append_batch_events";

/// Counter: store IO run on the bounded blocking pool ([`crate::EventStore::blocking`]),
/// by `cause`: `call` (IO that always runs there: a snapshot write, a read by event id
/// that must wait for the index), `disk` and `index` (a read first tried on the async
/// worker that would have waited for the disk, or for a lagging index). Reads answered
/// on the worker are not counted.
pub const BLOCKING_IO: &str = "annals_store_blocking_io_total";

/// The metrics of one group commit, recorded as the syncer answers its callers.
pub(crate) struct GroupCommit {
    acknowledgements: metrics::Histogram,
}

impl GroupCommit {
    /// Records the group's sync time (`None`: nothing was written, every append was
    /// answered from what was stored) and the events it made durable.
    pub(crate) fn start(sync_time: Option<Duration>, events: u64) -> GroupCommit {
        if let Some(sync_time) = sync_time {
            metrics::histogram!(FSYNC_DURATION).record(sync_time);
            metrics::histogram!(APPEND_BATCH_EVENTS).record(events as f64);
        }
        GroupCommit {
            acknowledgements: metrics::histogram!(APPEND_DURATION),
        }
    }

    /// Records one append acknowledged now, asked for at `queued_at`.
    pub(crate) fn acknowledged(&mut self, queued_at: Instant) {
        self.acknowledgements.record(queued_at.elapsed());
    }
}
