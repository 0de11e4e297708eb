//! Every event of a concurrent workload reaches JetStream exactly once, in position
//! order, and a consumer rebuilds each one exactly.

use std::time::Duration;

use outbox::{BreakerState, Health, RelayState};

use crate::common::{
    NatsServer, assert_exact_copy, open_store, read_copy, relay_config, start_relay, whole_log,
    within, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_workload_arrives_exactly_once_in_position_order() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // Some events before the relay starts (a backlog), the rest while it runs (live).
    workload(&store, 4, 50).await;
    let mut relay = start_relay(&store, relay_config(&server.url(), "DELIVERY"));
    workload(&store, 8, 150).await;
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    let status = relay.status.current();
    assert_eq!(status.backlog, 0);
    assert_eq!(status.published, store.next_position().0);
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!(status.state, RelayState::Publishing);
    assert!(status.connected);
    assert_eq!(relay.status.health(), Health::Healthy);
    relay.stop().await;
    let log = whole_log(&store);
    assert!(log.len() > 2000, "a workload of {} events", log.len());
    assert_exact_copy(&read_copy(&server.url(), "DELIVERY").await, &log);
    assert_eq!(
        store.load_checkpoint("outbox-relay").unwrap(),
        Some(store.next_position()),
        "the checkpoint covers every acknowledged event after a clean stop"
    );

    // A restarted relay (its checkpoint wiped, so only the stream can tell it where the
    // copy ends) adds nothing twice, then goes on with new events.
    store
        .save_checkpoint("outbox-relay", eventstore::Position(0))
        .unwrap();
    let mut relay = start_relay(&store, relay_config(&server.url(), "DELIVERY"));
    workload(&store, 2, 20).await;
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    within(Duration::from_secs(5), "the status to report", async {
        relay
            .status
            .wait_for(|status| status.backlog == 0)
            .await
            .unwrap()
    })
    .await;
    relay.stop().await;
    assert_exact_copy(
        &read_copy(&server.url(), "DELIVERY").await,
        &whole_log(&store),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_resumes_after_the_last_message_even_when_that_one_was_deleted() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    workload(&store, 2, 30).await;
    // A short duplicate window, so that NATS takes the deleted event again once it is
    // published again (within the window it would answer "duplicate").
    let config = outbox::RelayConfig {
        duplicate_window: Duration::from_millis(100),
        ..relay_config(&server.url(), "RESUME")
    };
    let mut relay = start_relay(&store, config.clone());
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    // The last message goes (so a get of the last sequence finds nothing), and so does
    // the checkpoint: only the last message still there says where to resume.
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("RESUME")
        .await
        .unwrap();
    let last = stream.cached_info().state.last_sequence;
    assert!(stream.delete_message(last).await.unwrap());
    store
        .save_checkpoint("outbox-relay", eventstore::Position(0))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut relay = start_relay(&store, config);
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    // The deleted event was published again, after the others; nothing else twice.
    assert_exact_copy(
        &read_copy(&server.url(), "RESUME").await,
        &whole_log(&store),
    );
}
