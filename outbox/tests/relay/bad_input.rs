//! Bad input: each a clear, typed error, never a panic or a hang.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use outbox::{BreakerState, Error, Relay, RelayConfig, RestoreOptions, Storage};

use crate::common::{
    NatsServer, closed_port, open_store, relay_config, start_relay, within, workload,
};

const QUICK: Duration = Duration::from_secs(2);

async fn connect(url: &str) -> Result<async_nats::Client, Error> {
    within(
        Duration::from_secs(10),
        "connect",
        outbox::connect(url, &outbox::NatsTls::default(), QUICK, QUICK),
    )
    .await
}

async fn check(
    store: &eventstore::EventStore,
    config: RelayConfig,
) -> Result<outbox::CheckReport, Error> {
    let relay = Relay::new(store.clone(), config)?;
    within(Duration::from_secs(15), "the relay check", relay.check()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unreachable_urls_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    for url in [
        "",
        "http://127.0.0.1:4222",
        "nats://[::1",
        "nats://host:notaport",
    ] {
        assert!(
            matches!(
                Relay::new(store.clone(), RelayConfig::new(url)),
                Err(Error::InvalidUrl { .. })
            ),
            "{url:?}"
        );
        assert!(
            matches!(connect(url).await, Err(Error::InvalidUrl { .. })),
            "{url:?}"
        );
    }
    let nobody = format!("nats://127.0.0.1:{}", closed_port());
    let error = connect(&nobody).await.expect_err("nobody listens");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&nobody), "{error}");
    let error = check(&store, relay_config(&nobody, "NOBODY"))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");

    // Running against nobody: the relay keeps trying, says why, opens its breaker, and
    // still stops at once when asked.
    let mut relay = start_relay(&store, relay_config(&nobody, "NOBODY"));
    let status = within(Duration::from_secs(10), "the breaker to open", async {
        relay
            .status
            .wait_for(|status| status.breaker == BreakerState::Open)
            .await
            .unwrap()
    })
    .await;
    assert!(!status.connected);
    let last_error = status.last_error.expect("the failure is reported");
    assert!(last_error.contains("cannot connect"), "{last_error}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_a_typed_error() {
    let server = NatsServer::start_without_jetstream();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let error = check(&store, relay_config(&server.url(), "NOJS"))
        .await
        .expect_err("no JetStream");
    assert!(
        matches!(error, Error::JetStreamNotEnabled { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("-js"), "{error}");
    let client = connect(&server.url()).await.unwrap();
    let restored = outbox::restore(
        &client,
        "NOJS",
        &store,
        &RestoreOptions::default(),
        &mut |_, _| {},
    )
    .await;
    assert!(
        matches!(restored, Err(Error::JetStreamNotEnabled { .. })),
        "{restored:?}"
    );
    let audited = outbox::audit(&client, "NOJS", &store, &outbox::AuditOptions::default()).await;
    assert!(
        matches!(audited, Err(Error::JetStreamNotEnabled { .. })),
        "{audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_missing_and_foreign_streams_are_typed_errors() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    workload(&store, 2, 10).await;
    let client = connect(&url).await.unwrap();
    let jetstream = jetstream::new(client.clone());

    // Same name, other storage and a limit that would drop messages.
    jetstream
        .create_stream(stream::Config {
            name: "INCOMPATIBLE".into(),
            subjects: vec!["annals.events.>".into()],
            storage: stream::StorageType::Memory,
            max_messages: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let error = check(&store, relay_config(&url, "INCOMPATIBLE"))
        .await
        .expect_err("incompatible");
    match &error {
        Error::IncompatibleStream { stream, problems } => {
            assert_eq!(stream, "INCOMPATIBLE");
            assert!(
                problems.iter().any(|p| p.contains("storage")),
                "{problems:?}"
            );
            assert!(
                problems.iter().any(|p| p.contains("max_msgs")),
                "{problems:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_transient());
    // Another name over the same subjects: the server refuses to create it.
    let error = check(&store, relay_config(&url, "OVERLAPPING"))
        .await
        .expect_err("overlap");
    assert!(
        matches!(error, Error::IncompatibleStream { .. }),
        "{error:?}"
    );
    // Memory storage as configured: fine, and the check says where the relay would start.
    let config = RelayConfig {
        storage: Storage::Memory,
        subject_prefix: "memory.events".into(),
        ..relay_config(&url, "MEMORY")
    };
    let report = check(&store, config)
        .await
        .expect("a compatible memory stream");
    assert_eq!(report.resume_at, eventstore::Position(0));
    assert_eq!(report.log_head, store.next_position());

    // Restore and audit of a stream that does not exist.
    let restored = outbox::restore(
        &client,
        "MISSING",
        &store,
        &RestoreOptions::default(),
        &mut |_, _| {},
    )
    .await;
    assert!(
        matches!(restored, Err(Error::StreamNotFound { .. })),
        "{restored:?}"
    );
    let audited = outbox::audit(&client, "MISSING", &store, &outbox::AuditOptions::default()).await;
    assert!(
        matches!(audited, Err(Error::StreamNotFound { .. })),
        "{audited:?}"
    );

    // A stream holding something that is not an Annals event.
    jetstream
        .create_stream(stream::Config {
            name: "FOREIGN".into(),
            subjects: vec!["foreign.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream
        .publish("foreign.x", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = open_store(empty_dir.path());
    let restored = outbox::restore(
        &client,
        "FOREIGN",
        &empty,
        &RestoreOptions::default(),
        &mut |_, _| {},
    )
    .await;
    assert!(
        matches!(restored, Err(Error::MalformedMessage { sequence: 1, .. })),
        "{restored:?}"
    );
    let audited = outbox::audit(&client, "FOREIGN", &store, &outbox::AuditOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        audited.divergence,
        Some(outbox::Divergence::Malformed { sequence: 1, .. })
    ));
    let config = RelayConfig {
        subject_prefix: "foreign".into(),
        ..relay_config(&url, "FOREIGN")
    };
    let error = check(&store, config).await.expect_err("a foreign message");
    assert!(matches!(error, Error::MalformedMessage { .. }), "{error:?}");

    // A stream that holds another log's copy.
    let mine = RelayConfig {
        subject_prefix: "mine.events".into(),
        ..relay_config(&url, "MINE")
    };
    let mut relay = start_relay(&store, mine.clone());
    relay.wait_drained(&store, Duration::from_secs(20)).await;
    relay.stop().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_store(other_dir.path());
    workload(&other, 2, 20).await;
    let error = check(&other, mine.clone())
        .await
        .expect_err("another log's copy");
    assert!(matches!(error, Error::CopyDiverged { .. }), "{error:?}");
    let error = check(&empty, mine)
        .await
        .expect_err("a copy ahead of the log");
    assert!(matches!(error, Error::CopyDiverged { .. }), "{error:?}");
}
