//! The store with its log on JetStream (`EventStore::open_replicated`): appends and reads
//! through two nodes, expected versions across nodes, dedup inside and beyond JetStream's
//! window, a node that restarts or loses its whole copy, and stream ids that are not
//! subject tokens.

use std::time::Duration;

use eventstore::{Direction, Error, EventStore, ExpectedVersion, Position, StoreConfig, Version};
use tempfile::TempDir;
use test_support::NatsServer;

use crate::common::{event, open_replicated, replicated, stream};

fn config() -> StoreConfig {
    StoreConfig::default()
}

/// Both nodes' whole logs, compared event by event, chain included (through `verify`).
fn same_logs(a: &EventStore, b: &EventStore) -> usize {
    let (left, right) = (
        a.read_all(Position(0), usize::MAX).unwrap(),
        b.read_all(Position(0), usize::MAX).unwrap(),
    );
    assert_eq!(left, right, "the two nodes' copies differ");
    assert_eq!(
        a.verify().unwrap().head_hash,
        b.verify().unwrap().head_hash,
        "the two copies' hash chains differ"
    );
    left.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_log_with_versions_positions_and_chain() {
    let nats = NatsServer::start();
    let log = replicated(&nats.url(), 1);
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = open_replicated(dir_a.path(), config(), &log).await;
    let b = open_replicated(dir_b.path(), config(), &log).await;
    let order = stream("order-1");
    let first = a
        .append(&order, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(
        (first.first_position, first.last_position),
        (Position(0), Position(1))
    );
    assert_eq!(
        (first.first_version, first.last_version),
        (Version(0), Version(1))
    );
    // Node b appends after a's commit: it expects the version a made.
    let second = b
        .append(&order, ExpectedVersion::Exact(Version(1)), vec![event(3)])
        .await
        .unwrap();
    assert_eq!(
        (second.first_position, second.first_version),
        (Position(2), Version(2))
    );
    // Node a, behind or not, is refused when it expects an older version.
    let stale = a
        .append(&order, ExpectedVersion::Exact(Version(1)), vec![event(4)])
        .await;
    assert!(
        matches!(
            stale,
            Err(Error::VersionConflict {
                actual: Some(Version(2)),
                ..
            })
        ),
        "{stale:?}"
    );
    let read = a
        .read_stream(&order, Version(0), Direction::Forward, 10)
        .unwrap();
    assert_eq!(read.len(), 3, "a reads b's write once it expected it");
    // b's copy reaches a's position: the logs are the same.
    wait_for(&b, Position(3)).await;
    assert_eq!(same_logs(&a, &b), 3);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_answered_with_the_original_inside_and_beyond_the_window() {
    let nats = NatsServer::start();
    let mut log = replicated(&nats.url(), 1);
    log.duplicate_window = Duration::from_secs(1);
    let dir = TempDir::new().unwrap();
    let store = open_replicated(dir.path(), config(), &log).await;
    let events = vec![event("a"), event("b")];
    let original = store
        .append(&stream("s-1"), ExpectedVersion::Any, events.clone())
        .await
        .unwrap();
    let inside = store
        .append(&stream("s-1"), ExpectedVersion::Any, events.clone())
        .await
        .unwrap();
    assert_eq!(
        inside,
        eventstore::AppendOutcome {
            duplicate: true,
            ..original
        }
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let beyond = store
        .append(&stream("s-1"), ExpectedVersion::Any, events.clone())
        .await
        .unwrap();
    assert_eq!(
        beyond,
        eventstore::AppendOutcome {
            duplicate: true,
            ..original
        }
    );
    // Half of it again, with a new event: the same typed refusal as one machine gives.
    let partly = store
        .append(
            &stream("s-1"),
            ExpectedVersion::Any,
            vec![events[0].clone(), event("c")],
        )
        .await;
    assert!(
        matches!(partly, Err(Error::IdempotencyMismatch { .. })),
        "{partly:?}"
    );
    assert_eq!(store.read_all(Position(0), 10).unwrap().len(), 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_or_loses_its_copy_and_rebuilds_the_same_log() {
    let nats = NatsServer::start();
    let log = replicated(&nats.url(), 1);
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = open_replicated(dir_a.path(), config(), &log).await;
    for i in 0..50 {
        a.append(
            &stream(&format!("s-{}", i % 5)),
            ExpectedVersion::Any,
            vec![event(i)],
        )
        .await
        .unwrap();
    }
    let b = open_replicated(dir_b.path(), config(), &log).await;
    assert_eq!(
        b.next_position(),
        Position(50),
        "a new node catches up at open"
    );
    b.close().await;
    drop(b);
    for i in 50..80 {
        a.append(
            &stream(&format!("s-{}", i % 5)),
            ExpectedVersion::Any,
            vec![event(i)],
        )
        .await
        .unwrap();
    }
    let b = open_replicated(dir_b.path(), config(), &log).await;
    assert_eq!(b.next_position(), Position(80), "a restarted node resumes");
    assert_eq!(same_logs(&a, &b), 80);
    b.close().await;
    drop(b);
    std::fs::remove_dir_all(dir_b.path()).unwrap();
    let b = open_replicated(dir_b.path(), config(), &log).await;
    assert_eq!(
        same_logs(&a, &b),
        80,
        "a node that lost its copy rebuilds it"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ids_that_are_not_subject_tokens_are_kept_apart() {
    let nats = NatsServer::start();
    let log = replicated(&nats.url(), 1);
    let dir = TempDir::new().unwrap();
    let store = open_replicated(dir.path(), config(), &log).await;
    let ids = ["a.b", "a", "a.*", "a.>", "a b", "a=2Eb", "é"];
    for id in ids {
        store
            .append(&stream(id), ExpectedVersion::NoStream, vec![event(id)])
            .await
            .unwrap_or_else(|error| panic!("{id}: {error}"));
    }
    for id in ids {
        let read = store
            .read_stream(&stream(id), Version(0), Direction::Forward, 10)
            .unwrap();
        assert_eq!(read.len(), 1, "{id}");
        assert_eq!(read[0].payload, format!("payload {id}").into_bytes());
        let again = store
            .append(
                &stream(id),
                ExpectedVersion::Exact(Version(0)),
                vec![event(id)],
            )
            .await
            .unwrap();
        assert_eq!(again.last_version, Version(1), "{id}");
    }
    store.close().await;
}

/// Waits until `store`'s copy holds positions below `next`.
async fn wait_for(store: &EventStore, next: Position) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.next_position() < next {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy never reached {next:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_stream_at_once_lose_no_update() {
    let cluster = test_support::NatsCluster::start();
    let log = replicated(&cluster.urls(), 3);
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let nodes = [
        open_replicated(dir_a.path(), config(), &log).await,
        open_replicated(dir_b.path(), config(), &log).await,
    ];
    let counter = stream("counter-1");
    // Each writer reads the head on its node and appends expecting it, retrying on a
    // conflict: a read-decide-append loop, as a repository runs it.
    const WRITERS: usize = 4;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for node in &nodes {
        for writer in 0..WRITERS {
            let (node, counter) = (node.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for i in 0..EACH {
                    loop {
                        let head = node.stream_head(&counter).unwrap();
                        let expected =
                            head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                        match node
                            .append(&counter, expected, vec![event(format!("{writer}-{i}"))])
                            .await
                        {
                            Ok(_) => break,
                            Err(error) if error.is_conflict() => conflicts += 1,
                            Err(error) => panic!("an append failed: {error}"),
                        }
                    }
                }
                conflicts
            }));
        }
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let total = 2 * WRITERS * EACH;
    for node in &nodes {
        wait_for(node, Position(total as u64)).await;
        let events = node
            .read_stream(&counter, Version(0), Direction::Forward, usize::MAX)
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|event| event.version.0).collect();
        assert_eq!(versions, (0..total as u64).collect::<Vec<_>>());
    }
    assert_eq!(same_logs(&nodes[0], &nodes[1]), total);
    assert!(
        conflicts > 0,
        "the writers never met: the test tested nothing"
    );
    for node in &nodes {
        node.close().await;
    }
}

/// The same event ids sent to another stream through a node whose copy has not yet seen
/// the first send (a client retrying on another node, or a retry that named a new stream
/// because the copy did not show the first): JetStream answers the message id as a
/// duplicate of the first message, and the node must refuse as one machine does, not
/// report the first commit as this one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ids_on_another_stream_through_a_lagging_node_are_refused() {
    let nats = NatsServer::start();
    let log = replicated(&nats.url(), 1);
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = open_replicated(dir_a.path(), config(), &log).await;
    let b = open_replicated(dir_b.path(), config(), &log).await;
    const ROUNDS: usize = 40;
    let mut raced = 0;
    for round in 0..ROUNDS {
        let events = vec![event(format!("twice-{round}"))];
        a.append(
            &stream(&format!("first-{round}")),
            ExpectedVersion::Any,
            events.clone(),
        )
        .await
        .unwrap();
        // At once, before b's copy shows a's commit (most rounds).
        let behind = b.replicated_sequence() < a.replicated_sequence();
        raced += usize::from(behind);
        let again = b
            .append(
                &stream(&format!("second-{round}")),
                ExpectedVersion::Any,
                events,
            )
            .await;
        assert!(
            matches!(again, Err(Error::IdempotencyMismatch { .. })),
            "round {round} (b's copy behind: {behind}): {again:?}"
        );
    }
    assert!(
        raced > 0,
        "b's copy was never behind: the test tested nothing"
    );
    a.close().await;
    b.close().await;
}
