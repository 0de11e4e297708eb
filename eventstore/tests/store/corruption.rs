//! Damaged logs and bad input: corruption is reported as `Error::Corrupt` (never a
//! panic, never silently fewer events), a torn or zero-padded tail is cut cleanly, and
//! malformed appends get typed errors and write nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use eventstore::segment::{detect_format, parse_record};
use eventstore::{
    Direction, Error, EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreConfig, StreamId, Version,
};
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{
    assert_log_is_contiguous, event, open, read_everything, reopen, segment_files, segments_of,
    try_open,
};

fn config() -> StoreConfig {
    segments_of(64 << 10)
}

/// A closed store of a few hundred events over several 64 KiB segments, and its log.
async fn filled_store() -> (TempDir, Vec<RecordedEvent>) {
    let filling = crate::common::Filling {
        prefix: "damage",
        tag: "",
        appends: 400,
        streams: 5,
        max_events: 4,
        pad: 200,
        min_segments: 3,
    };
    crate::common::filled_store(config(), filling).await
}

/// The byte offset and length of every record of a segment file, up to its end or the
/// first bytes that are no record (the zeros of a preallocated segment).
fn records(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let format = detect_format(&data).unwrap();
    let mut offset = format.data_start();
    let mut found = Vec::new();
    while let Ok(record) = parse_record(&data[offset..], 1 << 20, format) {
        found.push((offset, record.len));
        offset += record.len;
    }
    found
}

/// Where the records of a segment file end.
fn data_end(path: &Path) -> usize {
    records(path).last().map_or(0, |(offset, len)| offset + len)
}

/// Flips one bit of the payload of the record at `offset` in `path`.
fn flip_payload_byte(path: &Path, offset: usize, len: usize) {
    let mut data = std::fs::read(path).unwrap();
    // The payload is the last field of the record body.
    data[offset + len - 3] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, segment: &Path, offset: usize) {
    match result {
        Err(Error::Corrupt {
            segment: found,
            offset: at,
            ..
        }) => {
            assert_eq!(found, segment, "the error names the damaged segment");
            assert_eq!(at, offset as u64, "the error names the damaged record");
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// Damage in the record at `offset` of `segment`, with the index kept: opening may
/// succeed (it only reads the log past the index's high-water mark), but nothing may
/// read through the damage as if it were not there.
fn assert_damage_never_read_silently(
    dir: &Path,
    segment: &Path,
    offset: usize,
    log: &[RecordedEvent],
) -> Option<EventStore> {
    let store = match try_open(dir, config()) {
        Ok(store) => store,
        Err(error) => {
            assert_corrupt::<()>(Err(error), segment, offset);
            return None;
        }
    };
    assert_corrupt(store.verify(), segment, offset);
    assert_corrupt(store.read_all(Position(0), usize::MAX), segment, offset);
    let damaged = log
        .iter()
        .find(|event| {
            store
                .read_event(&event.id)
                .is_err_and(|error| matches!(error, Error::Corrupt { .. }))
        })
        .expect("the damaged event cannot be read");
    let whole_stream = store.read_stream(
        &damaged.stream_id,
        Version(0),
        Direction::Forward,
        usize::MAX,
    );
    assert_corrupt(whole_stream, segment, offset);
    Some(store)
}

#[tokio::test]
async fn a_flipped_byte_in_a_sealed_segment_is_reported_as_corruption() {
    let (dir, log) = filled_store().await;
    let first = segment_files(dir.path())[0].clone();
    let records = records(&first);
    let (offset, len) = records[records.len() / 2];
    flip_payload_byte(&first, offset, len);

    // With the index kept: every read through the damage fails.
    if let Some(store) = assert_damage_never_read_silently(dir.path(), &first, offset, &log) {
        store.close().await;
    }
    // With the index rebuilt from the log: opening itself fails.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    assert_corrupt(try_open(dir.path(), config()), &first, offset);
    // And keeps failing: nothing was cut or repaired behind our back.
    assert_corrupt(try_open(dir.path(), config()), &first, offset);
}

#[tokio::test]
async fn a_flipped_byte_early_in_the_last_segment_is_reported_as_corruption() {
    let (dir, log) = filled_store().await;
    let last = segment_files(dir.path()).last().unwrap().clone();
    let records = records(&last);
    assert!(records.len() >= 8, "the last segment needs some records");
    let (offset, len) = records[1];
    flip_payload_byte(&last, offset, len);
    let damaged = std::fs::read(&last).unwrap();

    if let Some(store) = assert_damage_never_read_silently(dir.path(), &last, offset, &log) {
        store.close().await;
    }
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    assert_corrupt(try_open(dir.path(), config()), &last, offset);
    assert!(
        std::fs::read(&last).unwrap() == damaged,
        "acknowledged records must not be cut as if they were a torn tail"
    );
}

#[tokio::test]
async fn a_missing_segment_is_reported_as_corruption() {
    let (dir, _log) = filled_store().await;
    let segments = segment_files(dir.path());
    std::fs::remove_file(&segments[1]).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    match try_open(dir.path(), config()) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, segments[2]),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// A closed store whose last append (three events) is the last thing in the log, the
/// log before that append, the last segment and where its data ended before that append.
async fn store_ending_in_a_three_event_append(
    config: &StoreConfig,
) -> (TempDir, Vec<RecordedEvent>, PathBuf, usize) {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), config.clone());
    for i in 0..120usize {
        let stream = crate::common::stream(&format!("tail-{}", i % 3));
        store
            .append(&stream, ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
    let before = read_everything(&store);
    let last = segment_files(dir.path()).last().unwrap().clone();
    let end_before = data_end(&last);
    let outcome = store
        .append(
            &crate::common::stream("tail-0"),
            ExpectedVersion::Any,
            vec![event("cut a"), event("cut b"), event("cut c")],
        )
        .await
        .unwrap();
    assert_eq!(outcome.first_position, Position(120));
    assert_eq!(
        segment_files(dir.path()).last().unwrap(),
        &last,
        "the append went to the same segment"
    );
    store.close().await;
    drop(store);
    assert_eq!(records(&last).len() - records_before(&last, end_before), 3);
    (dir, before, last, end_before)
}

/// How many records of `path` end at or before `end`.
fn records_before(path: &Path, end: usize) -> usize {
    records(path)
        .iter()
        .filter(|(offset, len)| offset + len <= end)
        .count()
}

/// Opens the store and checks it holds exactly `before`, the last segment's records end
/// at `end`, and the log goes on from there.
async fn assert_recovered_to(
    dir: &Path,
    config: &StoreConfig,
    before: &[RecordedEvent],
    last: &Path,
    end: usize,
) {
    let store = open(dir, config.clone());
    assert_eq!(read_everything(&store), before);
    assert_eq!(store.next_position(), Position(before.len() as u64));
    let tail = crate::common::stream("tail-0");
    let head = before
        .iter()
        .rfind(|e| e.stream_id == tail)
        .unwrap()
        .version;
    assert_eq!(store.stream_head(&tail).unwrap(), Some(head));
    assert_eq!(
        data_end(last),
        end,
        "cut exactly at the end of the last whole append"
    );
    store.verify().expect("verify after the cut");

    // The log goes on from the cut, and survives another reopen.
    let outcome = store
        .append(
            &tail,
            ExpectedVersion::Exact(head),
            vec![event("after the cut")],
        )
        .await
        .unwrap();
    assert_eq!(outcome.first_position, Position(before.len() as u64));
    let store = reopen(store).await;
    let log = read_everything(&store);
    assert_eq!(log.len(), before.len() + 1);
    assert_eq!(&log[..before.len()], before);
    assert_log_is_contiguous(&log);
    store.verify().expect("verify");
}

/// Both ways segments are written: zero-filled ahead of time, or grown by each write.
fn both_layouts() -> [StoreConfig; 2] {
    [true, false].map(|preallocate_segments| StoreConfig {
        preallocate_segments,
        ..config()
    })
}

#[tokio::test]
async fn a_last_append_cut_short_is_cut_whole() {
    for config in both_layouts() {
        let (dir, before, last, end_before) = store_ending_in_a_three_event_append(&config).await;
        // The file ends inside the last record: the first two records of the append are
        // whole, but the append is not, so all three go.
        let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        file.set_len(data_end(&last) as u64 - 5).unwrap();
        drop(file);
        assert_recovered_to(dir.path(), &config, &before, &last, end_before).await;
    }
}

#[tokio::test]
async fn a_last_append_whose_tail_never_reached_the_disk_is_cut_whole() {
    for config in both_layouts() {
        let (dir, before, last, end_before) = store_ending_in_a_three_event_append(&config).await;
        // The append's last bytes are zeros, as when the file's blocks were allocated
        // (preallocated, or grown by the write) but the write's last page never landed.
        let records = records(&last);
        let (second_last, _) = records[records.len() - 2];
        let end = data_end(&last);
        let mut data = std::fs::read(&last).unwrap();
        data[second_last + 40..end].fill(0);
        std::fs::write(&last, data).unwrap();
        // A write that never fully landed was never acknowledged, so never indexed: the
        // index is rebuilt from the log, as after a crash that lost its last writes.
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        assert_recovered_to(dir.path(), &config, &before, &last, end_before).await;
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_corruption_not_a_torn_tail() {
    for config in both_layouts() {
        let (dir, _, last, _) = store_ending_in_a_three_event_append(&config).await;
        let (offset, len) = *records(&last).last().unwrap();
        flip_payload_byte(&last, offset, len);
        let damaged = std::fs::read(&last).unwrap();
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        assert_corrupt(try_open(dir.path(), config.clone()), &last, offset);
        assert!(std::fs::read(&last).unwrap() == damaged, "nothing was cut");
    }
}

#[tokio::test]
async fn zeros_after_the_last_record_are_cut() {
    for config in both_layouts() {
        let (dir, _, last, _) = store_ending_in_a_three_event_append(&config).await;
        let end = data_end(&last);
        let before = {
            let store = open(dir.path(), config.clone());
            let before = read_everything(&store);
            assert_eq!(before.len(), 123);
            store.close().await;
            before
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        file.write_all(&[0; 4096]).unwrap();
        drop(file);
        assert_recovered_to(dir.path(), &config, &before, &last, end).await;
    }
}

#[tokio::test]
async fn a_missing_data_dir_is_an_error_when_not_to_be_created() {
    let parent = TempDir::new().unwrap();
    let missing = parent.path().join("no-such-dir");
    let config = StoreConfig {
        create_if_missing: false,
        ..StoreConfig::default()
    };
    match try_open(&missing, config) {
        Err(Error::MissingDataDir(path)) => assert_eq!(path, missing),
        other => panic!("expected Error::MissingDataDir, got {other:?}"),
    }
    assert!(!missing.exists(), "nothing was created");
}

#[tokio::test]
async fn a_second_open_of_an_open_store_is_locked_naming_the_pid() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    match try_open(dir.path(), StoreConfig::default()) {
        Err(error @ Error::Locked { .. }) => {
            let Error::Locked { ref pid, .. } = error else {
                unreachable!()
            };
            assert_eq!(pid, &std::process::id().to_string());
            assert!(error.to_string().contains(&format!("pid {pid}")));
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    // The failed open did not disturb the open store.
    store
        .append(
            &crate::common::stream("lock-1"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .expect("the first store still works");
    let store = reopen(store).await;
    assert_eq!(read_everything(&store).len(), 1);
}

#[tokio::test]
async fn malformed_appends_get_typed_errors_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig {
        max_event_bytes: 1024,
        max_append_bytes: 4096,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);

    for bad in ["", " order-1", "order-1 ", "a\nb", "a\0b", &"x".repeat(257)] {
        match StreamId::new(bad) {
            Err(Error::InvalidStreamId { .. }) => {}
            other => panic!("{bad:?} should be refused, got {other:?}"),
        }
    }
    assert!(matches!(
        EventId::from_uuid(Uuid::nil()),
        Err(Error::InvalidEventId { .. })
    ));

    let target = crate::common::stream("order-1");
    let oversize = store
        .append(
            &target,
            ExpectedVersion::Any,
            vec![NewEvent::new("Big", vec![1; 2000])],
        )
        .await;
    assert!(
        matches!(oversize, Err(Error::EventTooLarge { size, limit: 1024 }) if size > 2000),
        "{oversize:?}"
    );
    let too_much = store
        .append(
            &target,
            ExpectedVersion::Any,
            (0..10)
                .map(|_| NewEvent::new("Mid", vec![1; 600]))
                .collect(),
        )
        .await;
    assert!(
        matches!(too_much, Err(Error::AppendTooLarge { limit: 4096, .. })),
        "{too_much:?}"
    );
    let empty = store.append(&target, ExpectedVersion::Any, vec![]).await;
    assert!(matches!(empty, Err(Error::InvalidAppend(_))), "{empty:?}");
    let twice = event("twice");
    let repeated = store
        .append(&target, ExpectedVersion::Any, vec![twice.clone(), twice])
        .await;
    assert!(
        matches!(repeated, Err(Error::InvalidAppend(_))),
        "{repeated:?}"
    );

    let check_empty = |store: &EventStore| {
        assert_eq!(store.next_position(), Position(0));
        assert_eq!(store.stream_head(&target).unwrap(), None);
        assert!(read_everything(store).is_empty());
        assert!(store.streams(None).unwrap().is_empty());
    };
    check_empty(&store);
    let store = reopen(store).await;
    check_empty(&store);
    assert_eq!(data_end(&segment_files(dir.path())[0]), 0);

    // A good append still goes through afterwards.
    store
        .append(&target, ExpectedVersion::NoStream, vec![event("fine")])
        .await
        .expect("a valid append");
    assert_eq!(store.next_position(), Position(1));
}

/// A closed store releases its directory at once, but its index stays open until the
/// last handle (a subscription, a task finishing) drops. An open in that moment waits
/// for the index: before, sled's "could not acquire lock" was taken for a broken index,
/// which was moved aside with the checkpoints, read models and, for a copy of a log on
/// JetStream, its follower's mark (the copy then refused to open: "a log but no mark").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_while_a_closed_stores_handle_lives_waits_for_its_index() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    store
        .append(
            &crate::common::stream("lock-2"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap();
    store.save_checkpoint("projection", Position(1)).unwrap();
    let lingering = store.clone();
    store.close().await;
    drop(store);
    let released = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(lingering);
    });
    let reopened = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || open(&dir, StoreConfig::default())
    })
    .await
    .unwrap();
    released.join().unwrap();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("index.broken"))
        .collect();
    assert!(aside.is_empty(), "the index was moved aside: {aside:?}");
    assert_eq!(
        reopened.load_checkpoint("projection").unwrap(),
        Some(Position(1)),
        "the index kept what it held"
    );
    reopened.close().await;
}
