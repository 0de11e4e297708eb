//! [`StoreConfig`]: every limit and size of the store in one place, each with the reason
//! it exists.

/// The store's limits and sizes. Every limit is here, with the reason it exists.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Create the data directory if it does not exist (`annals serve` does; offline
    /// tools do not, so a typo in a path is an error rather than an empty store).
    pub create_if_missing: bool,
    /// Largest encoded record (event plus envelope). Bounds memory per event and the
    /// damage a corrupt length field can claim.
    pub max_event_bytes: usize,
    /// Largest encoded append. An append is written in one batch, in one segment.
    pub max_append_bytes: usize,
    /// A group commit stops taking appends past this many bytes, which bounds the latency
    /// one batch adds. (It does not bound what a crash can leave unsynced: the writer runs
    /// up to 64 batches ahead of the syncer. Recovery needs no such bound; see
    /// `segment::judge_tail`.)
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
    /// Stream heads the writer caches beyond those not yet indexed (which it always
    /// keeps); a head not cached is read from the index. Bounds the writer's memory
    /// whatever the number of streams.
    pub stream_head_cache: usize,
    /// Ids the writer's id filter has room for at open, at least: it is sized for twice
    /// the log's events, never less than this, and grows as the log does.
    pub id_filter_floor: u64,
    /// Blocking store IO (a command's load, an index lookup, a wait for the indexer)
    /// running at once on tokio's blocking pool through
    /// [`EventStore::blocking`](crate::EventStore::blocking); more wait, asynchronously, for a turn. The IO never
    /// runs on the async workers, and this bound keeps a burst of slow reads (each
    /// refused command waits for the indexer) from growing the blocking pool toward
    /// tokio's 512 threads.
    pub blocking_io: usize,
    /// The fault points `store.write` (before a batch is written) and `store.fsync`
    /// (before the log's `fdatasync`): inert unless the server runs with `--chaos`. An
    /// injected error takes the real failure path (the writer stops, the store fails).
    pub chaos: chaos::Chaos,
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
            stream_head_cache: 100_000,
            id_filter_floor: 1_000_000,
            blocking_io: 64,
            chaos: chaos::Chaos::inert(),
        }
    }
}
