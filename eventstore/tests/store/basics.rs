//! The append and read contract, one rule per test.

use std::collections::HashSet;

use eventstore::{
    AppendOutcome, Direction, Error, EventId, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StoreConfig, Version,
};
use tempfile::TempDir;

use crate::common::{
    assert_log_is_contiguous, event, open, read_everything, reopen, segment_files, segments_of,
    stream,
};

fn fresh() -> (TempDir, EventStore) {
    let dir = TempDir::new().expect("temp dir");
    let store = open(dir.path(), StoreConfig::default());
    (dir, store)
}

fn events(tag: &str, count: usize) -> Vec<NewEvent> {
    (0..count).map(|i| event(format!("{tag}-{i}"))).collect()
}

#[track_caller]
fn assert_conflict(result: Result<AppendOutcome, Error>, actual: Option<Version>) {
    match result {
        Err(Error::VersionConflict {
            actual: found,
            ref stream,
            ..
        }) => {
            assert_eq!(found, actual, "the conflict must name the actual version");
            let message = result.as_ref().unwrap_err().to_string();
            let named = match actual {
                Some(version) => format!("actual version {version}"),
                None => "actual no stream".to_owned(),
            };
            assert!(
                message.contains(&named) && message.contains(stream.as_str()),
                "{message:?} should name the stream and {named:?}"
            );
        }
        other => panic!("expected a version conflict (actual {actual:?}), got {other:?}"),
    }
}

#[tokio::test]
async fn expected_versions_are_enforced_and_conflicts_name_the_actual_version() {
    let (_dir, store) = fresh();
    let order = stream("order-1");

    assert_conflict(
        store
            .append(&order, ExpectedVersion::StreamExists, vec![event("a")])
            .await,
        None,
    );
    assert_conflict(
        store
            .append(&order, ExpectedVersion::Exact(Version(0)), vec![event("a")])
            .await,
        None,
    );
    let first = store
        .append(&order, ExpectedVersion::NoStream, vec![event("a")])
        .await
        .expect("NoStream on a new stream");
    assert_eq!(
        (first.first_version, first.last_version, first.duplicate),
        (Version(0), Version(0), false)
    );

    assert_conflict(
        store
            .append(&order, ExpectedVersion::NoStream, vec![event("b")])
            .await,
        Some(Version(0)),
    );
    assert_conflict(
        store
            .append(&order, ExpectedVersion::Exact(Version(5)), vec![event("b")])
            .await,
        Some(Version(0)),
    );
    let second = store
        .append(&order, ExpectedVersion::Exact(Version(0)), vec![event("b")])
        .await
        .expect("Exact(current)");
    assert_eq!(second.first_version, Version(1));
    let third = store
        .append(&order, ExpectedVersion::StreamExists, vec![event("c")])
        .await
        .expect("StreamExists on an existing stream");
    assert_eq!(third.first_version, Version(2));
    let fourth = store
        .append(&order, ExpectedVersion::Any, vec![event("d")])
        .await
        .expect("Any");
    assert_eq!(fourth.first_version, Version(3));
    assert_conflict(
        store
            .append(&order, ExpectedVersion::Exact(Version(2)), vec![event("e")])
            .await,
        Some(Version(3)),
    );

    // Refused appends wrote nothing.
    assert_eq!(store.next_position(), Position(4));
    assert_eq!(store.stream_head(&order).unwrap(), Some(Version(3)));
    assert_eq!(read_everything(&store).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_event_appends_are_contiguous_and_all_or_nothing() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig {
        max_event_bytes: 1024,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);

    // Concurrent multi-event appends land in the same group commits; each stays whole.
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for round in 0..10 {
                let batch = events(&format!("w{writer}r{round}"), 1 + (writer + round) % 5);
                let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
                let outcome = store
                    .append(
                        &stream(&format!("multi-{writer}")),
                        ExpectedVersion::Any,
                        batch,
                    )
                    .await
                    .expect("append");
                appended.push((ids, outcome));
            }
            appended
        }));
    }
    let log_before_refusal = {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("writer task"));
        }
        let log = read_everything(&store);
        assert_log_is_contiguous(&log);
        for (ids, outcome) in &all {
            assert_eq!(
                outcome.last_position.0 - outcome.first_position.0 + 1,
                ids.len() as u64
            );
            assert_eq!(
                outcome.last_version.0 - outcome.first_version.0 + 1,
                ids.len() as u64
            );
            let slice = &log[outcome.first_position.0 as usize..=outcome.last_position.0 as usize];
            for (i, (event, id)) in slice.iter().zip(ids).enumerate() {
                assert_eq!(event.id, *id);
                assert_eq!(event.version.0, outcome.first_version.0 + i as u64);
            }
        }
        log
    };

    // One oversize event refuses the whole append, including the events before it.
    let mut batch = events("refused", 3);
    batch.push(NewEvent::new("Huge", vec![7; 4096]));
    let refused = store
        .append(&stream("multi-0"), ExpectedVersion::Any, batch)
        .await;
    assert!(
        matches!(refused, Err(Error::EventTooLarge { limit: 1024, .. })),
        "{refused:?}"
    );
    let store = reopen(store).await;
    assert_eq!(read_everything(&store), log_before_refusal);
    store.verify().expect("verify");
}

#[tokio::test]
async fn a_resent_append_is_answered_with_the_original_outcome_before_and_after_restart() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let order = stream("order-7");
    let other = stream("order-8");
    store
        .append(&other, ExpectedVersion::Any, vec![event("before")])
        .await
        .unwrap();
    let batch = events("retry", 3);
    let original = store
        .append(&order, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first send");
    assert!(!original.duplicate);
    store
        .append(&other, ExpectedVersion::Any, vec![event("after")])
        .await
        .unwrap();
    let expected_duplicate = AppendOutcome {
        duplicate: true,
        ..original
    };

    // Right away (the writer still remembers the ids), with an expected version that
    // would now conflict: a retry is recognised before the version check.
    let again = store
        .append(&order, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("re-send");
    assert_eq!(again, expected_duplicate);

    // After a restart the ids are found through the durable index.
    let store = reopen(store).await;
    let again = store
        .append(&order, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("re-send after restart");
    assert_eq!(again, expected_duplicate);

    // And after the index is rebuilt from the log.
    let config = store.config().clone();
    store.close().await;
    drop(store);
    std::fs::remove_dir_all(dir.path().join("index")).expect("delete the index");
    let store = open(dir.path(), config);
    let again = store
        .append(&order, ExpectedVersion::Any, batch)
        .await
        .expect("re-send after an index rebuild");
    assert_eq!(again, expected_duplicate);

    // Nothing was written by any of the re-sends.
    assert_eq!(store.next_position(), Position(5));
    assert_eq!(store.stream_head(&order).unwrap(), Some(Version(2)));
    let log = read_everything(&store);
    assert_eq!(log.len(), 5);
    assert_log_is_contiguous(&log);
    store.verify().expect("verify");
}

#[tokio::test]
async fn reusing_some_ids_in_a_different_append_is_an_idempotency_mismatch() {
    let (_dir, store) = fresh();
    let order = stream("order-1");
    let batch = events("original", 3);
    store
        .append(&order, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();

    let mismatches = [
        // Two stored ids and a new one.
        vec![batch[0].clone(), batch[1].clone(), event("new")],
        // A new id first, then a stored one.
        vec![event("new"), batch[2].clone()],
        // The same ids in another order.
        vec![batch[1].clone(), batch[0].clone(), batch[2].clone()],
    ];
    for attempt in mismatches {
        let result = store
            .append(&order, ExpectedVersion::Any, attempt.clone())
            .await;
        assert!(
            matches!(result, Err(Error::IdempotencyMismatch { .. })),
            "{result:?}"
        );
    }
    // The error names a stored id, also when the first id of the append is new.
    let result = store
        .append(
            &order,
            ExpectedVersion::Any,
            vec![event("new"), batch[1].clone()],
        )
        .await;
    assert!(
        matches!(result, Err(Error::IdempotencyMismatch { id }) if id == batch[1].id.as_uuid()),
        "{result:?}"
    );
    // The same ids on another stream.
    let result = store
        .append(&stream("order-2"), ExpectedVersion::Any, batch.clone())
        .await;
    assert!(
        matches!(result, Err(Error::IdempotencyMismatch { .. })),
        "{result:?}"
    );

    let store = reopen(store).await;
    let partial = vec![batch[2].clone(), event("new")];
    let result = store.append(&order, ExpectedVersion::Any, partial).await;
    assert!(
        matches!(result, Err(Error::IdempotencyMismatch { id }) if id == batch[2].id.as_uuid()),
        "{result:?}"
    );
    assert_eq!(store.next_position(), Position(3));
    assert_eq!(store.stream_head(&stream("order-2")).unwrap(), None);
}

#[tokio::test]
async fn streams_are_read_forward_and_backward_in_pages() {
    let (_dir, store) = fresh();
    let order = stream("order-1");
    let noise = stream("order-2");
    let mut ids = Vec::new();
    for size in [1, 4, 2, 5, 3, 1, 6, 3] {
        let batch = events("page", size);
        ids.extend(batch.iter().map(|e| e.id));
        store
            .append(&order, ExpectedVersion::Any, batch)
            .await
            .unwrap();
        store
            .append(&noise, ExpectedVersion::Any, vec![event("noise")])
            .await
            .unwrap();
    }
    assert_eq!(ids.len(), 25);

    for limit in [1, 2, 7, 25, 100] {
        let mut forward = Vec::new();
        let mut from = Version(0);
        loop {
            let page = store
                .read_stream(&order, from, Direction::Forward, limit)
                .unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            from = last.version.next();
            forward.extend(page);
        }
        let versions: Vec<u64> = forward.iter().map(|e| e.version.0).collect();
        assert_eq!(versions, (0..25).collect::<Vec<_>>(), "limit {limit}");
        assert_eq!(forward.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(forward.iter().all(|e| e.stream_id == order));

        let mut backward = Vec::new();
        let mut from = Version(u64::MAX);
        loop {
            let page = store
                .read_stream(&order, from, Direction::Backward, limit)
                .unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            backward.extend(page.iter().cloned());
            if last.version.0 == 0 {
                break;
            }
            from = Version(last.version.0 - 1);
        }
        backward.reverse();
        assert_eq!(backward, forward, "limit {limit}");
    }

    // Windows in the middle of an append.
    let middle = store
        .read_stream(&order, Version(6), Direction::Forward, 3)
        .unwrap();
    assert_eq!(
        middle.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        [6, 7, 8]
    );
    let middle = store
        .read_stream(&order, Version(6), Direction::Backward, 3)
        .unwrap();
    assert_eq!(
        middle.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        [6, 5, 4]
    );
    assert!(
        store
            .read_stream(&order, Version(25), Direction::Forward, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&stream("order-3"), Version(0), Direction::Forward, 10)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn streams_are_listed_by_category_and_events_found_by_id() {
    let (_dir, store) = fresh();
    let mut by_id = Vec::new();
    for (name, count) in [
        ("order-1", 2),
        ("order-2", 1),
        ("orders-1", 3),
        ("order", 1),
        ("stock-sku-1", 4),
        ("ledger", 1),
    ] {
        let batch = events(name, count);
        let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
        let outcome = store
            .append(&stream(name), ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
        by_id.push((name, ids, outcome));
    }

    let names = |category: Option<&str>| {
        let mut listed: Vec<(String, u64)> = store
            .streams(category)
            .unwrap()
            .into_iter()
            .map(|(stream, head)| (stream.as_str().to_owned(), head.0))
            .collect();
        listed.sort();
        listed
    };
    assert_eq!(
        names(Some("order")),
        [
            ("order".into(), 0),
            ("order-1".into(), 1),
            ("order-2".into(), 0)
        ]
    );
    assert_eq!(names(Some("orders")), [("orders-1".into(), 2)]);
    assert_eq!(names(Some("stock")), [("stock-sku-1".into(), 3)]);
    assert!(names(Some("ord")).is_empty());
    assert_eq!(names(None).len(), 6);

    for (name, ids, outcome) in &by_id {
        for (i, id) in ids.iter().enumerate() {
            let found = store.read_event(id).unwrap().expect("a stored id is found");
            assert_eq!(found.id, *id);
            assert_eq!(found.stream_id.as_str(), *name);
            assert_eq!(found.version, Version(i as u64));
            assert_eq!(found.position.0, outcome.first_position.0 + i as u64);
        }
    }
    assert_eq!(store.read_event(&EventId::new()).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_appenders_to_one_stream_get_contiguous_versions() {
    let (_dir, store) = fresh();
    let shared = stream("ledger-main");
    let mut tasks = Vec::new();
    for task in 0..64 {
        let store = store.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let event = event(format!("task {task}"));
            let id = event.id;
            let outcome = store
                .append(&shared, ExpectedVersion::Any, vec![event])
                .await
                .expect("append with Any never conflicts");
            (id, outcome)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes.sort_by_key(|(_, outcome)| outcome.first_version);
    let versions: Vec<u64> = outcomes.iter().map(|(_, o)| o.first_version.0).collect();
    assert_eq!(versions, (0..64).collect::<Vec<_>>());

    let read = store
        .read_stream(&shared, Version(0), Direction::Forward, 1000)
        .unwrap();
    assert_eq!(read.len(), 64);
    for ((id, outcome), event) in outcomes.iter().zip(&read) {
        assert_eq!(event.id, *id);
        assert_eq!(event.version, outcome.first_version);
        assert_eq!(event.position, outcome.first_position);
    }
    assert_eq!(store.stream_head(&shared).unwrap(), Some(Version(63)));
    assert_log_is_contiguous(&read_everything(&store));
}

#[tokio::test]
async fn many_small_segments_read_back_across_boundaries_and_after_reopen() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), segments_of(2048));
    let streams = [stream("seg-a"), stream("seg-b"), stream("seg-c")];
    let mut written = Vec::new();
    for i in 0..300usize {
        let batch = events(&format!("segment test {i:04}"), 1 + i % 3);
        written.extend(batch.iter().map(|e| e.id));
        store
            .append(&streams[i % 3], ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let segments = segment_files(dir.path());
    assert!(
        segments.len() >= 20,
        "expected many segments, found {}",
        segments.len()
    );

    let check = |store: &EventStore| {
        let log = read_everything(store);
        assert_log_is_contiguous(&log);
        assert_eq!(log.iter().map(|e| e.id).collect::<Vec<_>>(), written);
        // Reads that start anywhere, including at every segment's first position.
        for from in (0..log.len()).step_by(7) {
            let page = store.read_all(Position(from as u64), 13).unwrap();
            assert_eq!(page, log[from..(from + 13).min(log.len())]);
        }
        for segment in segment_files(store.dir()) {
            let first: usize = segment
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            if first < log.len() {
                assert_eq!(
                    store.read_all(Position(first as u64), 2).unwrap()[0],
                    log[first]
                );
            }
        }
        for stream in &streams {
            let expected: Vec<_> = log
                .iter()
                .filter(|e| &e.stream_id == stream)
                .cloned()
                .collect();
            let forward = store
                .read_stream(stream, Version(0), Direction::Forward, usize::MAX)
                .unwrap();
            assert_eq!(forward, expected);
            let mut backward = store
                .read_stream(stream, Version(u64::MAX), Direction::Backward, usize::MAX)
                .unwrap();
            backward.reverse();
            assert_eq!(backward, expected);
        }
        for id in written.iter().step_by(11) {
            assert_eq!(&store.read_event(id).unwrap().unwrap().id, id);
        }
        let report = store.verify().expect("verify");
        assert_eq!(report.events, log.len() as u64);
        assert_eq!(report.segments, segment_files(store.dir()).len() as u64);
        log
    };

    let log = check(&store);
    let store = reopen(store).await;
    assert_eq!(check(&store), log);
    let config = store.config().clone();
    store.close().await;
    drop(store);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let store = open(dir.path(), config);
    assert_eq!(check(&store), log);

    // Appends continue the chain after reopening.
    let more = events("after reopen", 2);
    let ids: HashSet<EventId> = more.iter().map(|e| e.id).collect();
    store
        .append(&streams[0], ExpectedVersion::Any, more)
        .await
        .unwrap();
    let log = read_everything(&store);
    assert!(log[log.len() - 2..].iter().all(|e| ids.contains(&e.id)));
    store.verify().expect("verify");
}

#[tokio::test]
async fn an_index_rebuilt_in_place_answers_every_read_as_before() {
    let dir = TempDir::new().expect("temp dir");
    // Small segments, so recovery crosses segment boundaries; more appends than one
    // recovery batch holds, in single- and multi-event appends over many streams.
    let store = open(dir.path(), segments_of(16 * 1024));
    for i in 0..400usize {
        let count = if i % 5 == 0 { 3 } else { 1 };
        store
            .append(
                &stream(&format!("order-{}", i % 23)),
                ExpectedVersion::Any,
                events(&format!("append-{i}"), count),
            )
            .await
            .unwrap();
    }
    store.save_checkpoint("relay", Position(7)).unwrap();
    let reads = |store: &EventStore| {
        let streams = store.streams(None).unwrap();
        let by_stream: Vec<Vec<RecordedEvent>> = streams
            .iter()
            .map(|(id, _)| {
                store
                    .read_stream(id, Version(0), Direction::Forward, usize::MAX)
                    .unwrap()
            })
            .collect();
        let pages: Vec<Vec<RecordedEvent>> = [0u64, 1, 63, 64, 65, 300, 559]
            .iter()
            .map(|&from| store.read_all(Position(from), 5).unwrap())
            .collect();
        let log = read_everything(store);
        let by_id: Vec<Option<RecordedEvent>> = log
            .iter()
            .step_by(37)
            .map(|event| store.read_event(&event.id).unwrap())
            .collect();
        (streams, by_stream, pages, log, by_id)
    };
    let before = reads(&store);
    assert_eq!(before.3.len(), 560);
    let config = store.config().clone();
    store.close().await;
    drop(store);

    assert!(segment_files(dir.path()).len() > 2, "several segments");
    let mut last = (0, 0);
    let _not_while_spawning = crate::common::SPAWNING.read();
    let store = EventStore::open_rebuilding_index(dir.path(), config, &mut |done, total| {
        last = (done, total);
    })
    .unwrap();
    assert!(
        last.1 > 0 && last.0 == last.1,
        "progress reaches the total: {last:?}"
    );
    assert_eq!(
        reads(&store),
        before,
        "every read answers as before the rebuild"
    );
    assert_eq!(
        store.load_checkpoint("relay").unwrap(),
        None,
        "checkpoints are derived and go with the index"
    );
    store.verify().expect("verify");
}
