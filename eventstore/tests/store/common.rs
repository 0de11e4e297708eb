//! Helpers shared by the test modules: ids, events, opening and reopening stores, and a
//! time limit for awaits that must finish (a safety net that turns a hang into a failure,
//! never a way to wait for something to happen).

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use eventstore::{Error, EventStore, NewEvent, Position, RecordedEvent, StoreConfig, StreamId};

/// How long an await that must finish may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A stream id the test knows to be valid.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap_or_else(|error| panic!("{name:?} should be valid: {error}"))
}

/// An event with a fresh id and a payload that names it (never all zeros, so a damaged
/// record can never pass for an unwritten block).
pub fn event(tag: impl std::fmt::Display) -> NewEvent {
    NewEvent::new("Tested", format!("payload {tag}").into_bytes())
}

/// The default configuration with segments of `bytes` bytes.
pub fn segments_of(bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes: bytes,
        ..StoreConfig::default()
    }
}

/// Taken exclusively while a test spawns a child process, shared while a test opens a
/// store. Spawning forks this process, and until the child's `exec` it holds a copy of
/// every file this process has open, locks included (an `flock` belongs to the open file,
/// not to the process): a store closed and reopened in that moment would find the lock
/// of its own closed self still held and fail with `Error::Locked`.
pub static SPAWNING: RwLock<()> = RwLock::new(());

/// `EventStore::open`, never while a child process is being spawned.
pub fn try_open(dir: &Path, config: StoreConfig) -> Result<EventStore, Error> {
    let _not_spawning = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    EventStore::open(dir, config)
}

/// Opens a store that must open.
pub fn open(dir: &Path, config: StoreConfig) -> EventStore {
    try_open(dir, config)
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()))
}

/// Closes `store`, drops it and opens its directory again.
pub async fn reopen(store: EventStore) -> EventStore {
    let dir = store.dir().to_path_buf();
    let config = store.config().clone();
    store.close().await;
    drop(store);
    open(&dir, config)
}

/// The whole durable log.
pub fn read_everything(store: &EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position(0), usize::MAX)
        .unwrap_or_else(|error| panic!("reading the whole log failed: {error}"))
}

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// The segment files of the store in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Checks the invariants every log must keep: positions 0.. without a gap, and every
/// stream's versions 0.. without a gap, in log order.
pub fn assert_log_is_contiguous(events: &[RecordedEvent]) {
    let mut heads = std::collections::HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.position,
            Position(i as u64),
            "positions must be gap-free"
        );
        let next = heads.entry(event.stream_id.clone()).or_insert(0u64);
        assert_eq!(
            event.version.0, *next,
            "versions of {} must be contiguous (at position {i})",
            event.stream_id
        );
        *next += 1;
    }
}
