//! Subscriptions: catch-up then live with no gap and no duplicate, from any position,
//! and a slow subscriber holds back only itself.

use eventstore::{
    AppendOutcome, EventId, EventStore, ExpectedVersion, Position, RecordedEvent, StoreConfig,
    Subscription,
};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::common::{event, open, read_everything, within};

/// Reads `count` events from `subscription`.
async fn take(subscription: &mut Subscription, count: usize) -> Vec<RecordedEvent> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        match subscription.next().await {
            Some(Ok(event)) => events.push(event),
            Some(Err(error)) => panic!("subscription failed: {error}"),
            None => panic!("subscription ended after {} events", events.len()),
        }
    }
    events
}

/// Reports the position after a writer's `nth` acknowledged append.
struct Signal {
    nth: usize,
    sender: oneshot::Sender<Position>,
}

type Acknowledged = Vec<(Vec<EventId>, AppendOutcome)>;

/// Spawns `writers` tasks, each appending `events_each` events to its own stream in
/// appends of up to `max_batch` events; writer 0 fires the signals.
fn spawn_writers(
    store: &EventStore,
    writers: usize,
    events_each: usize,
    max_batch: usize,
    mut signals: Vec<Signal>,
) -> Vec<tokio::task::JoinHandle<Acknowledged>> {
    (0..writers)
        .map(|writer| {
            let store = store.clone();
            let mut signals = if writer == 0 {
                std::mem::take(&mut signals)
            } else {
                Vec::new()
            };
            tokio::spawn(async move {
                let stream = crate::common::stream(&format!("sub-{writer}"));
                let mut acknowledged = Vec::new();
                let mut written = 0;
                while written < events_each {
                    let size =
                        (1 + (writer + acknowledged.len()) % max_batch).min(events_each - written);
                    let batch: Vec<_> = (0..size)
                        .map(|i| event(format!("{writer}/{}", written + i)))
                        .collect();
                    let ids = batch.iter().map(|e| e.id).collect();
                    let outcome = store
                        .append(&stream, ExpectedVersion::Any, batch)
                        .await
                        .expect("append");
                    written += size;
                    acknowledged.push((ids, outcome));
                    if let Some(at) = signals.iter().position(|s| s.nth == acknowledged.len()) {
                        let _ = signals.remove(at).sender.send(outcome.last_position.next());
                    }
                }
                acknowledged
            })
        })
        .collect()
}

async fn join_writers(writers: Vec<tokio::task::JoinHandle<Acknowledged>>) -> Acknowledged {
    let mut all = Vec::new();
    for writer in writers {
        all.extend(within("a writer", writer).await.expect("writer task"));
    }
    all
}

/// Every acknowledged event is at its acknowledged position in `events`, which is the
/// log from position 0.
fn assert_acknowledged_in(events: &[RecordedEvent], acknowledged: &Acknowledged) {
    let total: usize = acknowledged.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(
        events.len(),
        total,
        "the subscriber saw exactly what was acknowledged"
    );
    for (ids, outcome) in acknowledged {
        for (i, id) in ids.iter().enumerate() {
            let event = &events[outcome.first_position.0 as usize + i];
            assert_eq!(event.id, *id);
            assert_eq!(event.version.0, outcome.first_version.0 + i as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_event_once_in_order_while_writers_append() {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let (early_tx, early) = oneshot::channel();
    let (midway_tx, midway) = oneshot::channel();
    let writers = spawn_writers(
        &store,
        WRITERS,
        EACH,
        4,
        vec![
            Signal {
                nth: 20,
                sender: early_tx,
            },
            Signal {
                nth: 120,
                sender: midway_tx,
            },
        ],
    );

    // One subscriber from the start, joining while the writers are busy: it catches up,
    // then follows live.
    within("writer 0's 20th append", early).await.unwrap();
    let mut from_start = store.subscribe(Position(0));
    let reader = tokio::spawn(async move {
        let events = take(&mut from_start, WRITERS * EACH).await;
        (events, from_start)
    });
    // One from a position in the middle, also while the writers are busy.
    let middle = within("writer 0's 120th append", midway).await.unwrap();
    assert!(
        middle.0 > 0 && middle.0 < (WRITERS * EACH) as u64,
        "{middle:?}"
    );
    let mut from_middle = store.subscribe(middle);
    let middle_reader =
        tokio::spawn(
            async move { take(&mut from_middle, WRITERS * EACH - middle.0 as usize).await },
        );

    let acknowledged = join_writers(writers).await;
    let (seen, mut from_start) = within("the first subscriber", reader).await.unwrap();
    let seen_from_middle = within("the second subscriber", middle_reader)
        .await
        .unwrap();

    let positions: Vec<u64> = seen.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (0..(WRITERS * EACH) as u64).collect::<Vec<_>>(),
        "in position order, no gap, no duplicate"
    );
    assert_acknowledged_in(&seen, &acknowledged);
    assert_eq!(seen, read_everything(&store));
    assert_eq!(seen_from_middle, seen[middle.0 as usize..]);

    // Nothing more arrives: the subscription ends when the store closes.
    store.close().await;
    assert!(
        within("the end of the subscription", from_start.next())
            .await
            .is_none(),
        "no event after the last acknowledged one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_hold_back_appends_or_other_subscribers() {
    const WRITERS: usize = 4;
    const EACH: usize = 500;
    const TOTAL: usize = WRITERS * EACH;
    let dir = TempDir::new().unwrap();
    let config = StoreConfig {
        subscription_buffer: 16,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);

    // The slow subscriber takes one event, then stops reading until told to go on.
    let mut slow = store.subscribe(Position(0));
    let (took_one_tx, took_one) = oneshot::channel();
    let (go_on, go_on_rx) = oneshot::channel::<()>();
    let slow_reader = tokio::spawn(async move {
        let mut events = take(&mut slow, 1).await;
        took_one_tx.send(()).unwrap();
        go_on_rx.await.unwrap();
        events.extend(take(&mut slow, TOTAL - 1).await);
        events
    });
    let mut fast = store.subscribe(Position(0));
    let fast_reader = tokio::spawn(async move { take(&mut fast, TOTAL).await });

    let writers = spawn_writers(&store, WRITERS, EACH, 5, Vec::new());
    within("the slow subscriber's first event", took_one)
        .await
        .unwrap();
    // Every append completes and the fast subscriber sees everything, while the slow one
    // has read one event and holds at most its buffer (far fewer than written).
    let acknowledged = join_writers(writers).await;
    let fast_seen = within("the fast subscriber", fast_reader).await.unwrap();
    assert_acknowledged_in(&fast_seen, &acknowledged);
    assert_eq!(store.next_position(), Position(TOTAL as u64));

    go_on.send(()).unwrap();
    let slow_seen = within("the slow subscriber", slow_reader).await.unwrap();
    assert_eq!(slow_seen, fast_seen);
    assert_eq!(slow_seen, read_everything(&store));
}

#[tokio::test]
async fn a_subscription_from_the_end_waits_for_new_events() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let target = crate::common::stream("live-1");
    for i in 0..5 {
        store
            .append(&target, ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
    let mut live = store.subscribe(store.next_position());
    let later = event("later");
    let id = later.id;
    store
        .append(&target, ExpectedVersion::Any, vec![later])
        .await
        .unwrap();
    let seen = within("the live event", take(&mut live, 1)).await;
    assert_eq!(seen[0].id, id);
    assert_eq!(seen[0].position, Position(5));
}
