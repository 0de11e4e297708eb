//! What the relay tests share: a real nats-server per test (free port, own store
//! directory, killed on drop), stores, relay configurations, a workload, reading the
//! JetStream copy back, and the exactly-once check.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use eventstore::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StoreConfig, StreamId,
};
use futures_util::StreamExt;
use outbox::{AuditOptions, Relay, RelayConfig, StatusHandle, Storage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The shared harnesses: a real nats-server per test (free port, own store directory,
/// killed on drop, a failing test with an install hint when there is no binary), the lock
/// that keeps a spawned child from inheriting a store's lock, and `within(limit, what,
/// future)`, a time limit that each relay test sets itself.
pub use test_support::{NatsServer, SPAWNING, within_limit as within};

/// A port where nothing listens (bound and released; good enough for a refused connect).
pub fn closed_port() -> u16 {
    test_support::free_port()
}

/// The store configuration of these tests (and of `relay-child`).
pub fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 1 << 20,
        ..StoreConfig::default()
    }
}

/// Opens a store, never while a child process is being spawned.
pub fn open_store(dir: &Path) -> EventStore {
    let _not_spawning = test_support::not_spawning();
    EventStore::open(dir, store_config())
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()))
}

/// A relay configuration with quick timeouts and retries, for tests.
pub fn relay_config(url: &str, stream: &str) -> RelayConfig {
    RelayConfig {
        stream: stream.to_owned(),
        storage: Storage::File,
        max_acks_in_flight: 256,
        connect_timeout: Duration::from_millis(1000),
        request_timeout: Duration::from_millis(1000),
        ack_timeout: Duration::from_millis(1000),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        breaker_failure_threshold: 3,
        breaker_cool_down: Duration::from_millis(700),
        checkpoint_interval: Duration::from_millis(100),
        status_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        ..RelayConfig::new(url)
    }
}

/// A running relay.
pub struct Running {
    pub status: StatusHandle,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), outbox::Error>>,
}

/// Starts a relay for `store`.
pub fn start_relay(store: &EventStore, config: RelayConfig) -> Running {
    let relay = Relay::new(store.clone(), config).expect("a valid relay configuration");
    let status = relay.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    Running {
        status,
        shutdown,
        task,
    }
}

impl Running {
    /// Waits until the relay has published everything durable now.
    pub async fn wait_drained(&mut self, store: &EventStore, limit: Duration) {
        let head = store.next_position();
        let status = within(limit, "the relay to publish the backlog", async {
            self.status
                .wait_for(|status| status.checkpoint >= head)
                .await
                .expect("the relay is running")
        })
        .await;
        assert_eq!(status.checkpoint, head);
    }

    /// Stops the relay and checks it stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within(Duration::from_secs(10), "the relay to stop", self.task)
            .await
            .expect("the relay task")
            .expect("the relay stopped without error");
    }
}

/// Appends from `writers` concurrent tasks, `commits` commits each, of 1 to 5 events, to
/// their own streams and (every fifth commit) a shared one, with varied metadata.
pub async fn workload(store: &EventStore, writers: u64, commits: u64) {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let own = StreamId::new(format!("order-{writer}")).unwrap();
            let shared = StreamId::new("ledger-shared").unwrap();
            for commit in 0..commits {
                let count = 1 + (writer * 7 + commit * 13) % 5;
                let command = Uuid::now_v7();
                let events = (0..count)
                    .map(|i| {
                        NewEvent::new(
                            if i % 2 == 0 {
                                "OrderPlaced"
                            } else {
                                "Stock Reserved.v2"
                            },
                            format!("{writer}/{commit}/{i}").into_bytes(),
                        )
                        .with_metadata(Metadata {
                            correlation_id: Some(command),
                            causation_id: (i > 0).then(Uuid::now_v7),
                            traceparent: Some(format!(
                                "00-{:032x}-{:016x}-01",
                                command.as_u128(),
                                commit + 1
                            )),
                            principal: (commit % 3 != 0).then(|| format!("user {writer}\n")),
                            command_id: Some(command),
                            issuer: (commit % 3 != 0).then(|| "https://issuer.example".into()),
                            action: (i % 2 == 0).then(|| "orders.place".into()),
                            on_behalf_of: (commit % 4 == 1).then(|| format!("customer {writer}")),
                        })
                    })
                    .collect();
                let stream = if commit % 5 == 0 { &shared } else { &own };
                store
                    .append(stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
}

/// Every message of the JetStream stream, in stream order, as (sequence, event), read
/// with an ordered consumer.
pub async fn read_copy(url: &str, stream: &str) -> Vec<(u64, RecordedEvent)> {
    within(Duration::from_secs(30), "reading the copy", async {
        let client = async_nats::connect(url).await.expect("connect");
        let jetstream = jetstream::new(client);
        let mut stream = jetstream.get_stream(stream).await.expect("the stream");
        let messages = stream.info().await.expect("stream info").state.messages;
        let mut copy = Vec::new();
        if messages == 0 {
            return copy;
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut stream = consumer.messages().await.expect("messages");
        loop {
            let message = stream
                .next()
                .await
                .expect("more messages")
                .expect("a message");
            let info = message.info().expect("message info");
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let event = outbox::message::decode(message.headers.as_ref(), &message.payload)
                .unwrap_or_else(|error| panic!("message {sequence}: {error}"));
            copy.push((sequence, event));
            if pending == 0 {
                return copy;
            }
        }
    })
    .await
}

/// Asserts that the copy holds every event of the log exactly once, in position order,
/// identical to the log's.
pub fn assert_exact_copy(copy: &[(u64, RecordedEvent)], log: &[RecordedEvent]) {
    for (i, (sequence, event)) in copy.iter().enumerate() {
        assert_eq!(
            event.position,
            Position(i as u64),
            "message {sequence} holds position {} where {i} was due: a duplicate, a gap or a reordering",
            event.position
        );
    }
    assert_eq!(
        copy.len(),
        log.len(),
        "the copy holds {} events, the log {}",
        copy.len(),
        log.len()
    );
    for ((sequence, copied), local) in copy.iter().zip(log) {
        assert_eq!(copied, local, "message {sequence} differs from the log");
    }
}

/// The whole log of `store`.
pub fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position(0), usize::MAX)
        .expect("read the log")
}

/// A client of the plain (no TLS) test server at `url`, for restore and audit.
pub async fn connect(url: &str) -> async_nats::Client {
    outbox::connect(
        url,
        &outbox::NatsTls::default(),
        Duration::from_secs(2),
        Duration::from_secs(2),
    )
    .await
    .unwrap()
}

/// Audits the JetStream copy `stream` against `store` with the default options.
pub async fn audit(url: &str, stream: &str, store: &EventStore) -> outbox::AuditReport {
    let client = connect(url).await;
    within(
        Duration::from_secs(30),
        "the audit",
        outbox::audit(&client, stream, store, &AuditOptions::default()),
    )
    .await
    .expect("the audit runs")
}

/// Every message of `stream` as published: (sequence, subject, headers, body).
pub async fn raw_copy(url: &str, stream: &str) -> Vec<(u64, String, HeaderMap, Bytes)> {
    within(Duration::from_secs(30), "reading the copy", async {
        let client = async_nats::connect(url).await.expect("connect");
        let jetstream = jetstream::new(client);
        let mut stream = jetstream.get_stream(stream).await.expect("the stream");
        let total = stream.info().await.expect("stream info").state.messages;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut copy = Vec::new();
        while (copy.len() as u64) < total {
            let message = messages.next().await.expect("more").expect("a message");
            let sequence = message.info().expect("info").stream_sequence;
            copy.push((
                sequence,
                message.subject.to_string(),
                message.headers.clone().expect("headers"),
                message.payload.clone(),
            ));
        }
        copy
    })
    .await
}

/// Publishes the messages `edit` makes of the copy in `from` into a new stream `to`.
pub async fn copy_edited(
    url: &str,
    from: &str,
    to: &str,
    mut edit: impl FnMut(Vec<(u64, String, HeaderMap, Bytes)>) -> Vec<(HeaderMap, Bytes)>,
) {
    let messages = edit(raw_copy(url, from).await);
    let client = async_nats::connect(url).await.expect("connect");
    let jetstream = jetstream::new(client);
    jetstream
        .create_stream(stream::Config {
            name: to.to_owned(),
            subjects: vec![format!("{}.>", to.to_lowercase())],
            ..Default::default()
        })
        .await
        .expect("a stream");
    let subject = format!("{}.copied", to.to_lowercase());
    for (headers, payload) in messages {
        // The copy is published in another order here: without the relay's expectation.
        let mut plain = HeaderMap::new();
        for (name, values) in headers.iter() {
            if name.to_string() != "Nats-Expected-Last-Sequence" {
                for value in values {
                    plain.append(name.clone(), value.clone());
                }
            }
        }
        let headers = plain;
        jetstream
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}
