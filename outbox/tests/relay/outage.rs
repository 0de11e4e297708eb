//! Outage: NATS is killed for a few seconds while writers append. Appends keep
//! succeeding, the backlog grows in the log, the relay reports itself degraded and its
//! breaker opens; once NATS is back (same port, same store directory) the backlog drains
//! without anyone's help and the copy is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventstore::{EventStore, ExpectedVersion, NewEvent, StreamId};
use outbox::{BreakerState, Health};

use crate::common::{
    NatsServer, assert_exact_copy, open_store, read_copy, relay_config, start_relay, whole_log,
    within,
};

/// Appends one event every couple of milliseconds until told to stop; counts them.
fn steady_writer(
    store: EventStore,
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = StreamId::new("meter-1").unwrap();
        while !stop.load(Ordering::Relaxed) {
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Ticked", b"tick".to_vec())],
                )
                .await
                .expect("appends succeed while NATS is down");
            appended.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_under_load_is_ridden_out_and_the_backlog_drains_by_itself() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut relay = start_relay(&store, relay_config(&server.url(), "OUTAGE"));
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = steady_writer(store.clone(), stop.clone(), appended.clone());

    within(Duration::from_secs(10), "the relay to publish", async {
        relay
            .status
            .wait_for(|status| status.checkpoint.0 >= 100)
            .await
            .unwrap()
    })
    .await;

    server.stop();
    let appended_at_stop = appended.load(Ordering::Relaxed);
    let down_since = Instant::now();
    let (mut saw_open, mut saw_degraded, mut max_backlog, mut last_error) = (false, false, 0, None);
    // Down for at least 3.5 s, and until the breaker has opened (at most 15 s).
    while down_since.elapsed() < Duration::from_millis(3500)
        || (!saw_open && down_since.elapsed() < Duration::from_secs(15))
    {
        let status = relay.status.current();
        saw_open |= status.breaker == BreakerState::Open;
        saw_degraded |= matches!(status.health(), Health::Degraded { .. });
        max_backlog = max_backlog.max(status.backlog);
        last_error = status.last_error.clone().or(last_error);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let appended_while_down = appended.load(Ordering::Relaxed) - appended_at_stop;
    assert!(
        appended_while_down > 200,
        "appends went on while NATS was down ({appended_while_down})"
    );
    assert!(
        max_backlog > 200,
        "the backlog grew in the log ({max_backlog})"
    );
    assert!(saw_open, "the breaker opened while NATS was down");
    assert!(saw_degraded, "the relay reported itself degraded");
    assert!(last_error.is_some(), "the status named the failure");
    assert!(!relay.status.current().connected);

    server.restart();
    // The writers go on; the relay catches up with them by itself.
    within(
        Duration::from_secs(30),
        "the backlog to drain after NATS came back",
        async {
            relay
                .status
                .wait_for(|status| {
                    status.backlog < 50
                        && status.breaker == BreakerState::Closed
                        && status.connected
                })
                .await
                .unwrap()
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    assert_eq!(relay.status.health(), Health::Healthy);
    relay.stop().await;
    assert_exact_copy(
        &read_copy(&server.url(), "OUTAGE").await,
        &whole_log(&store),
    );
}
