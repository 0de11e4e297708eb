//! A JetStream copy that lost its last messages (a nats-server without
//! `sync_interval: always` loses its last seconds of acknowledged messages on power loss):
//! audit names the first missing position, and a restarted relay republishes the lost
//! range from the log, with no gap and no duplicate, so that audit is clean afterwards.
//!
//! The loss is reproduced as a power loss leaves it: the stream is recreated holding only
//! its first messages (same headers, same bodies, same order), so its last sequence, its
//! last message and its duplicate window all end below the relay's checkpoint.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use eventstore::Position;
use futures_util::StreamExt;
use outbox::Divergence;

use crate::common::{
    NatsServer, assert_exact_copy, audit, open_store, read_copy, relay_config, start_relay,
    whole_log, within, workload,
};

/// Recreates the stream `name` with its configuration and only its first `keep` messages,
/// byte for byte: what a nats-server that lost the rest on power loss holds.
async fn lose_tail(url: &str, name: &str, keep: u64) {
    within(Duration::from_secs(30), "cutting the copy's tail", async {
        let client = async_nats::connect(url).await.expect("connect");
        let jetstream = jetstream::new(client);
        let mut old = jetstream.get_stream(name).await.expect("the stream");
        let config = old.info().await.expect("stream info").config.clone();
        let consumer = old
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut kept: Vec<(String, HeaderMap, Bytes)> = Vec::new();
        while (kept.len() as u64) < keep {
            let message = messages
                .next()
                .await
                .expect("more messages")
                .expect("a message");
            let headers = message.headers.clone().expect("headers");
            kept.push((
                message.subject.to_string(),
                headers,
                message.payload.clone(),
            ));
        }
        drop(messages);
        jetstream.delete_stream(name).await.expect("delete");
        jetstream
            .create_stream(stream::Config { ..config })
            .await
            .expect("recreate");
        for (subject, headers, payload) in kept {
            jetstream
                .publish_with_headers(subject, headers, payload)
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_names_the_first_position_a_copy_lost_at_its_end() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    workload(&store, 4, 150).await;
    let mut relay = start_relay(&store, relay_config(&url, "ANNALS"));
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    let head = store.next_position().0;
    assert!(head > 400, "the workload writes enough events");

    lose_tail(&url, "ANNALS", head - 201).await;
    let report = audit(&url, "ANNALS", &store).await;
    assert!(
        !report.is_consistent(),
        "a copy without the log's last 201 events passed the audit: {}",
        report.summary()
    );
    assert_eq!(
        report.divergence,
        Some(Divergence::Lost {
            position: Position(head - 201),
            checkpoint: Position(head),
        }),
        "{}",
        report.summary()
    );
    assert_eq!(report.identical_through, Some(Position(head - 202)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_republishes_the_tail_the_copy_lost() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    workload(&store, 4, 100).await;
    let mut relay = start_relay(&store, relay_config(&url, "ANNALS"));
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    let checkpoint = store.next_position().0;

    // NATS loses the last 57 acknowledged messages; the relay's checkpoint is past them.
    lose_tail(&url, "ANNALS", checkpoint - 57).await;
    assert_eq!(
        read_copy(&url, "ANNALS").await.len() as u64,
        checkpoint - 57
    );
    // More events while the relay is down, so that a relay resuming at its checkpoint
    // would leave a hole in the middle of the copy.
    workload(&store, 2, 10).await;

    let mut relay = start_relay(&store, relay_config(&url, "ANNALS"));
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    assert_exact_copy(&read_copy(&url, "ANNALS").await, &whole_log(&store));
    let report = audit(&url, "ANNALS", &store).await;
    assert_eq!(report.divergence, None, "{}", report.summary());
    assert_eq!(report.copy_behind, 0, "{}", report.summary());
    assert_eq!(
        report.identical_through,
        Some(Position(store.next_position().0 - 1))
    );
}
