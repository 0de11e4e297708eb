//! The index and the log agree, and `verify` proves the log's own invariants: an index
//! ahead of its log (a `log/` restored from an older backup beside a newer `index/`) is
//! rebuilt from the log, and `verify` refuses stream versions that skip or repeat.

use std::path::Path;

use eventstore::segment;
use eventstore::{
    Direction, Error, ExpectedVersion, Position, RecordedEvent, StoreConfig, StoredEvent, Version,
};
use tempfile::TempDir;

use crate::common::{assert_log_is_contiguous, event, open, read_everything, reopen, stream};

/// Copies the flat directory `from` (the segment files of a `log/`) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Appends `count` events, one append each, over three streams, numbered from `from`.
async fn append_events(store: &eventstore::EventStore, from: usize, count: usize) {
    for i in from..from + count {
        let name = format!("restored-{}", i % 3);
        store
            .append(
                &stream(&name),
                ExpectedVersion::Any,
                vec![event(format!("{i} {}", "r".repeat(300)))],
            )
            .await
            .unwrap();
    }
}

/// The two layouts whose old-log shapes differ: one preallocated segment (the index's
/// mark then lies in zeros inside the old log's last segment) and many small segments
/// without preallocation (the mark then lies in a segment the old log lacks).
fn layouts() -> [StoreConfig; 2] {
    [
        StoreConfig::default(),
        StoreConfig {
            segment_bytes: 8 << 10,
            preallocate_segments: false,
            ..StoreConfig::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_ahead_of_a_restored_older_log_is_rebuilt_from_the_log() {
    const OLD: usize = 60;
    const NEWER: usize = 25;
    for config in layouts() {
        let dir = TempDir::new().unwrap();
        let backup = TempDir::new().unwrap();
        let store = open(dir.path(), config.clone());
        append_events(&store, 0, OLD).await;
        let old: Vec<RecordedEvent> = read_everything(&store);
        store.close().await;
        drop(store);
        copy_dir(&dir.path().join("log"), &backup.path().join("log"));

        let store = open(dir.path(), config.clone());
        append_events(&store, OLD, NEWER).await;
        assert_eq!(read_everything(&store).len(), OLD + NEWER);
        store.close().await;
        drop(store);

        // Put the older log back, keeping the newer index.
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        copy_dir(&backup.path().join("log"), &dir.path().join("log"));

        let store = open(dir.path(), config.clone());
        let events = read_everything(&store);
        assert_eq!(
            events.len(),
            OLD,
            "the store must open at the restored log's end ({:?})",
            config.preallocate_segments
        );
        assert_eq!(events, old, "reads show exactly the restored events");
        store.verify().unwrap();
        for name in ["restored-0", "restored-1", "restored-2"] {
            let expected = old.iter().filter(|e| e.stream_id.as_str() == name).count();
            assert_eq!(
                store
                    .read_stream(&stream(name), Version(0), Direction::Forward, usize::MAX)
                    .unwrap()
                    .len(),
                expected,
                "the rebuilt index reads {name} as the log holds it"
            );
        }
        let outcome = store
            .append(
                &stream("restored-0"),
                ExpectedVersion::Any,
                vec![event("after the restore")],
            )
            .await
            .unwrap();
        assert_eq!(outcome.first_position, Position(OLD as u64));
        let expected_version = old
            .iter()
            .filter(|e| e.stream_id.as_str() == "restored-0")
            .count() as u64;
        assert_eq!(outcome.first_version.0, expected_version);
        store.verify().unwrap();

        let store = reopen(store).await;
        let events = read_everything(&store);
        assert_eq!(events.len(), OLD + 1);
        assert_log_is_contiguous(&events);
        store.verify().unwrap();
        store.close().await;
    }
}

/// Writes a log of one segment whose appends (one event each) carry these stream
/// versions, chained and checksummed as the writer would write them.
fn write_log(dir: &Path, versions: &[(&str, u64)]) {
    let log_dir = dir.join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut bytes = segment::segment_header().to_vec();
    let mut prev_hash = segment::GENESIS_HASH;
    for (position, (name, version)) in versions.iter().enumerate() {
        let new = event(format!("crafted {position}"));
        let id = stream(name);
        let stored = StoredEvent::of(&new, &id, Version(*version), Position(position as u64), 0);
        prev_hash =
            segment::encode_record(&mut bytes, segment::FLAG_COMMIT_END, &prev_hash, &stored, 0)
                .unwrap();
    }
    std::fs::write(log_dir.join(segment::segment_file_name(0)), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_a_log_whose_versions_are_contiguous() {
    let dir = TempDir::new().unwrap();
    write_log(
        dir.path(),
        &[
            ("even-a", 0),
            ("even-b", 0),
            ("even-a", 1),
            ("even-a", 2),
            ("even-b", 1),
        ],
    );
    let store = open(dir.path(), StoreConfig::default());
    let report = store.verify().unwrap();
    assert_eq!(report.events, 5);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_stream_and_position_of_a_skipped_or_reused_version() {
    let cases: [(&[(&str, u64)], &str); 2] = [
        (
            &[("gap-a", 0), ("gap-b", 0), ("gap-a", 1), ("gap-a", 3)],
            "skipped",
        ),
        (
            &[("gap-a", 0), ("gap-a", 1), ("gap-b", 0), ("gap-a", 1)],
            "reused",
        ),
    ];
    for (versions, what) in cases {
        let dir = TempDir::new().unwrap();
        write_log(dir.path(), versions);
        let store = open(dir.path(), StoreConfig::default());
        match store.verify() {
            Err(Error::Corrupt {
                segment: path,
                after,
                reason,
                ..
            }) => {
                assert!(path.ends_with(segment::segment_file_name(0)), "{path:?}");
                assert_eq!(after.0, Some(Position(2)), "{reason}");
                assert!(reason.contains("stream gap-a"), "{reason}");
                assert!(reason.contains("position 3"), "{reason}");
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("verify must refuse a {what} version, got {other:?}"),
        }
        store.close().await;
    }
}

/// sled is flushed without fsync: a power loss may leave its high-water mark while the
/// last round's stream heads are lost. The writer would then reuse versions. Opening
/// checks the heads and ids of the last round against the log, and rebuilds on a mismatch.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_whose_heads_lag_its_high_water_mark_is_rebuilt() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    for i in 0..20 {
        store
            .append(&stream("lagging"), ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
    store.close().await;
    drop(store);
    {
        let db = open_sled_once_released(&dir.path().join("index"));
        let heads = db.open_tree("heads").unwrap();
        heads.insert("lagging", &5u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path(), StoreConfig::default());
    assert_eq!(
        store.stream_head(&stream("lagging")).unwrap(),
        Some(Version(19))
    );
    let conflict = store
        .append(
            &stream("lagging"),
            ExpectedVersion::Exact(Version(5)),
            vec![event("reused")],
        )
        .await;
    assert!(
        matches!(conflict, Err(Error::VersionConflict { .. })),
        "{conflict:?}"
    );
    let next = store
        .append(
            &stream("lagging"),
            ExpectedVersion::Exact(Version(19)),
            vec![event("next")],
        )
        .await
        .unwrap();
    assert_eq!(next.first_version, Version(20));
    store.verify().unwrap();
    store.close().await;
}

/// Opens the sled database at `path` behind the store's back. sled releases its file
/// lock from a background thread a moment after the last handle goes (spacejam/sled#1234),
/// so a test that opens it right after closing the store waits for that, as
/// `Index::open` does.
fn open_sled_once_released(path: &std::path::Path) -> sled::Db {
    for _ in 0..100 {
        match sled::open(path) {
            Err(sled::Error::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            opened => return opened.unwrap(),
        }
    }
    panic!(
        "sled still locked {} two seconds after the store closed",
        path.display()
    );
}
