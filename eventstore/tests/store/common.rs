//! Helpers shared by the test modules: ids, events, opening and reopening stores, and a
//! time limit for awaits that must finish (a safety net that turns a hang into a failure,
//! never a way to wait for something to happen).

use std::path::{Path, PathBuf};

use eventstore::{Error, EventStore, NewEvent, Position, RecordedEvent, StoreConfig, StreamId};
pub use test_support::{SPAWNING, within};

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

/// `EventStore::open`, never while a child process is being spawned (see
/// `test_support::SPAWNING`).
///
/// A lock held by this very process (its pid in the lock file) after the store was closed
/// is a child of another test still between its fork and its `exec`, holding a copy of
/// the closed lock for a moment: the open is tried again for up to 2 s. A store that did
/// not release its lock at close would hold it longer, and still fail.
pub fn try_open(dir: &Path, config: StoreConfig) -> Result<EventStore, Error> {
    let own = std::process::id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let opened = {
            let _not_spawning = test_support::not_spawning();
            EventStore::open(dir, config.clone())
        };
        match opened {
            Err(Error::Locked { ref pid, .. })
                if *pid == own && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
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

/// What [`filled_store`] writes: `appends` appends of 1 to `max_events` events each, over
/// `streams` streams named `{prefix}-{n}`, each event's payload `{tag} {i}/{j}` padded with
/// `pad` bytes; the store must then have at least `min_segments` segment files.
pub struct Filling<'a> {
    pub prefix: &'a str,
    pub tag: &'a str,
    pub appends: usize,
    pub streams: usize,
    pub max_events: usize,
    pub pad: usize,
    pub min_segments: usize,
}

/// A closed store filled as `filling` says, and its log.
pub async fn filled_store(
    config: StoreConfig,
    filling: Filling<'_>,
) -> (tempfile::TempDir, Vec<RecordedEvent>) {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), config);
    for i in 0..filling.appends {
        let stream = stream(&format!("{}-{}", filling.prefix, i % filling.streams));
        let batch = (0..1 + i % filling.max_events)
            .map(|j| {
                event(format!(
                    "{} {i}/{j} {}",
                    filling.tag,
                    "x".repeat(filling.pad)
                ))
            })
            .collect();
        store
            .append(&stream, eventstore::ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let log = read_everything(&store);
    store.close().await;
    drop(store);
    assert!(
        segment_files(dir.path()).len() >= filling.min_segments,
        "the test needs sealed segments"
    );
    (dir, log)
}

/// A [`eventstore::ReplicatedConfig`] for a stream of its own on the servers at `urls`
/// (a fresh name and subject prefix, so tests sharing servers never meet), with
/// `replicas` copies.
pub fn replicated(urls: &str, replicas: usize) -> eventstore::ReplicatedConfig {
    let name = format!("T{}", uuid::Uuid::now_v7().simple());
    eventstore::ReplicatedConfig {
        urls: urls.to_owned(),
        subject_prefix: format!("annals.{}", name.to_lowercase()),
        stream: name,
        replicas,
        ..eventstore::ReplicatedConfig::default()
    }
}

/// `EventStore::open_replicated` that must open.
pub async fn open_replicated(
    dir: &Path,
    config: StoreConfig,
    replicated: &eventstore::ReplicatedConfig,
) -> EventStore {
    EventStore::open_replicated(dir, config, replicated.clone())
        .await
        .unwrap_or_else(|error| panic!("opening {} on JetStream failed: {error}", dir.display()))
}
