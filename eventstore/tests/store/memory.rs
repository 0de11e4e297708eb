//! What the writer keeps in bounded memory still gives exact answers: the id filter that
//! grows with the log (re-sent ids are recognised far beyond its initial capacity, across
//! reopens), the bounded cache of stream heads (evicted heads still enforce expected
//! versions), and the stream list read page by page.

use std::collections::HashSet;

use eventstore::{
    AppendOutcome, Error, EventStore, ExpectedVersion, NewEvent, StoreConfig, StreamId, Version,
};
use tempfile::TempDir;

use crate::common::{assert_log_is_contiguous, event, open, read_everything, reopen, stream};

/// One append as it was first sent, and what the store answered.
struct Sent {
    stream: StreamId,
    events: Vec<NewEvent>,
    outcome: AppendOutcome,
}

/// `appends` appends of `per_append` fresh events each, from 8 concurrent writers, each
/// on its own streams.
async fn append_many(
    store: &EventStore,
    tag: &str,
    appends: usize,
    per_append: usize,
) -> Vec<Sent> {
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in (writer..appends).step_by(8) {
                let stream = stream(&format!("dedup-{tag}{}", i % 40));
                let events: Vec<NewEvent> = (0..per_append)
                    .map(|n| event(format!("{tag}-{i}-{n}")))
                    .collect();
                let outcome = store
                    .append(&stream, ExpectedVersion::Any, events.clone())
                    .await
                    .expect("append");
                assert!(!outcome.duplicate, "fresh ids are not duplicates");
                sent.push(Sent {
                    stream,
                    events,
                    outcome,
                });
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

/// Sends every append again: each is answered with its original outcome, nothing is written.
async fn resend_all(store: &EventStore, sent: &[Sent]) {
    let end = store.next_position();
    for original in sent {
        let again = store
            .append(
                &original.stream,
                ExpectedVersion::Any,
                original.events.clone(),
            )
            .await
            .expect("a re-send is answered");
        assert_eq!(
            again,
            AppendOutcome {
                duplicate: true,
                ..original.outcome
            },
            "a re-send of {} is answered with the original outcome",
            original.stream
        );
    }
    assert_eq!(store.next_position(), end, "the re-sends wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_ids_are_recognised_far_beyond_the_id_filters_initial_capacity() {
    let dir = TempDir::new().unwrap();
    // A filter sized for 50 ids at first: everything below is far past it.
    let config = StoreConfig {
        id_filter_floor: 50,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);
    let mut sent = append_many(&store, "a", 300, 5).await;
    resend_all(&store, &sent).await;

    // After a reopen the filter is filled from the index (room for twice the 1,500 ids);
    // 4,000 more ids take it beyond that.
    let store = reopen(store).await;
    resend_all(&store, &sent).await;
    sent.extend(append_many(&store, "b", 800, 5).await);
    resend_all(&store, &sent).await;

    let store = reopen(store).await;
    resend_all(&store, &sent).await;
    let log = read_everything(&store);
    assert_eq!(log.len(), 5_500);
    assert_log_is_contiguous(&log);
    let ids: HashSet<_> = log.iter().map(|event| event.id).collect();
    assert_eq!(ids.len(), log.len(), "no id is stored twice");
    store.close().await;
}

#[track_caller]
fn assert_conflict(result: Result<AppendOutcome, Error>, actual: Option<Version>) {
    match result {
        Err(Error::VersionConflict { actual: found, .. }) => assert_eq!(found, actual),
        other => panic!("expected a version conflict naming {actual:?}, got {other:?}"),
    }
}

/// Checks every stream's head against expected versions: a wrong `Exact`, `NoStream` on
/// an existing stream and `StreamExists` on a missing one are refused naming the actual
/// version, and the right `Exact` is accepted. Returns the new heads.
async fn check_heads(store: &EventStore, heads: &mut [u64], tag: &str) {
    for (n, head) in heads.iter_mut().enumerate() {
        let name = stream(&format!("head-{n}"));
        let actual = Some(Version(*head));
        for wrong in [*head + 1, head.saturating_sub(1)] {
            if wrong != *head {
                assert_conflict(
                    store
                        .append(
                            &name,
                            ExpectedVersion::Exact(Version(wrong)),
                            vec![event(tag)],
                        )
                        .await,
                    actual,
                );
            }
        }
        assert_conflict(
            store
                .append(&name, ExpectedVersion::NoStream, vec![event(tag)])
                .await,
            actual,
        );
        let outcome = store
            .append(
                &name,
                ExpectedVersion::Exact(Version(*head)),
                vec![event(tag)],
            )
            .await
            .expect("the right expected version is accepted");
        assert_eq!(outcome.first_version, Version(*head + 1));
        *head += 1;
    }
    assert_conflict(
        store
            .append(
                &stream("head-missing"),
                ExpectedVersion::StreamExists,
                vec![event(tag)],
            )
            .await,
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_stream_heads_still_enforce_expected_versions() {
    let dir = TempDir::new().unwrap();
    // Two cached heads for 30 streams: almost every check below reads an evicted head
    // from the index, or one the index does not hold yet.
    let config = StoreConfig {
        stream_head_cache: 2,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);
    let mut heads = vec![0u64; 30];
    for (n, head) in heads.iter_mut().enumerate() {
        let name = stream(&format!("head-{n}"));
        let events: Vec<NewEvent> = (0..=n % 4).map(|i| event(format!("{n}-{i}"))).collect();
        let outcome = store
            .append(&name, ExpectedVersion::NoStream, events)
            .await
            .expect("a new stream");
        *head = outcome.last_version.0;
    }
    // Straight after the writes (heads not indexed yet), then once the index holds them.
    check_heads(&store, &mut heads, "unindexed").await;
    store.wait_for_index().unwrap();
    check_heads(&store, &mut heads, "indexed").await;
    // After a reopen the writer holds no head at all.
    let store = reopen(store).await;
    check_heads(&store, &mut heads, "reopened").await;
    let log = read_everything(&store);
    assert_log_is_contiguous(&log);
    for (n, head) in heads.iter().enumerate() {
        assert_eq!(
            store.stream_head(&stream(&format!("head-{n}"))).unwrap(),
            Some(Version(*head))
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_list_pages_through_every_stream_exactly_once() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let mut names = Vec::new();
    for category in ["alpha", "alphabet", "beta"] {
        for n in 0..7 {
            let name = stream(&format!("{category}-{n}"));
            store
                .append(&name, ExpectedVersion::Any, vec![event(n)])
                .await
                .unwrap();
            names.push(name);
        }
    }
    // A stream named like the category alone belongs to it too.
    store
        .append(&stream("alpha"), ExpectedVersion::Any, vec![event("bare")])
        .await
        .unwrap();
    names.push(stream("alpha"));
    for (category, limit) in [(None, 1), (None, 4), (Some("alpha"), 3), (Some("beta"), 7)] {
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = store
                .streams_page(category, after.as_deref(), limit)
                .unwrap();
            assert!(page.len() <= limit);
            listed.extend(page.iter().map(|(name, _)| name.clone()));
            if !more {
                break;
            }
            after = Some(page.last().expect("a page before more").0.to_string());
        }
        let mut expected: Vec<StreamId> = names
            .iter()
            .filter(|name| category.is_none_or(|category| name.category() == category))
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "category {category:?}, pages of {limit}");
        assert_eq!(
            store.streams(category).unwrap().len(),
            expected.len(),
            "the whole list agrees"
        );
    }
    store.close().await;
}
