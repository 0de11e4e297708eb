//! Restore and audit: the copy rebuilds a node whose log verifies and equals the original
//! (same events, same head hash); audit says "identical" for a good copy and names the
//! first divergence of an altered, a removed and a repeated message. Who caused each
//! event (principal, issuer, action, on behalf of) travels in the headers and comes back.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use outbox::{Divergence, RestoreOptions};

use crate::common::{
    NatsServer, audit, connect, open_store, read_copy, relay_config, start_relay, whole_log,
    within, workload,
};

async fn restore(
    url: &str,
    stream: &str,
    store: &EventStore,
) -> Result<outbox::RestoreReport, outbox::Error> {
    let client = connect(url).await;
    let mut calls = 0u64;
    let options = RestoreOptions {
        batch_events: 500,
        ..RestoreOptions::default()
    };
    within(
        Duration::from_secs(30),
        "the restore",
        outbox::restore(&client, stream, store, &options, &mut |_, _| calls += 1),
    )
    .await
}

/// Copies stream `from` into a new stream `to` (subjects `to.>`), letting `edit` change,
/// drop (`None`) or repeat (two items) each message.
async fn copy_stream(
    jetstream: &jetstream::Context,
    url: &str,
    from: &str,
    to: &str,
    mut edit: impl FnMut(u64, HeaderMap, Vec<u8>) -> Vec<(HeaderMap, Vec<u8>)>,
) {
    jetstream
        .create_stream(stream::Config {
            name: to.to_owned(),
            subjects: vec![format!("{}.>", to.to_lowercase())],
            // Short, so that a repeat (same Nats-Msg-Id) published a little later is
            // stored: a repeat from outside the window.
            duplicate_window: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let subject = format!("{}.copied", to.to_lowercase());
    for (sequence, event) in read_copy(url, from).await {
        let headers = outbox::message::headers(&event);
        for (i, (headers, payload)) in edit(sequence, headers, event.payload.clone())
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            jetstream
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_rebuilds_the_log_and_audit_finds_every_kind_of_divergence() {
    let server = NatsServer::start();
    let url = server.url();
    let (original_dir, restored_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = open_store(original_dir.path());
    workload(&original, 4, 200).await;
    let mut relay = start_relay(&original, relay_config(&url, "COPY"));
    relay.wait_drained(&original, Duration::from_secs(30)).await;
    relay.stop().await;
    let log = whole_log(&original);

    // A good copy: identical, and it restores to the same log.
    let report = audit(&url, "COPY", &original).await;
    assert_eq!(report.divergence, None, "{}", report.summary());
    assert_eq!(
        report.identical_through,
        Some(Position(log.len() as u64 - 1))
    );
    assert_eq!(report.copy_behind, 0);
    let restored = open_store(restored_dir.path());
    let restore_report = restore(&url, "COPY", &restored).await.expect("the restore");
    assert_eq!(restore_report.imported, log.len() as u64);
    assert_eq!(restore_report.incomplete_tail, 0);
    assert_eq!(
        whole_log(&restored),
        log,
        "the restored events equal the original's"
    );
    let original_hash = original.verify().unwrap().head_hash;
    assert_eq!(restore_report.head_hash, original_hash);
    assert_eq!(restored.verify().unwrap().head_hash, original_hash);
    // Run again on the same directory (a resumed restore): nothing twice.
    let again = restore(&url, "COPY", &restored)
        .await
        .expect("a resumed restore");
    assert_eq!((again.imported, again.skipped), (0, log.len() as u64));
    // A log ahead of its copy is only behind, not divergent.
    workload(&original, 1, 3).await;
    let behind = audit(&url, "COPY", &original).await;
    assert!(
        behind.is_consistent() && behind.copy_behind > 0,
        "{}",
        behind.summary()
    );

    let client = async_nats::connect(&url).await.unwrap();
    let jetstream = jetstream::new(client);

    // An altered payload.
    copy_stream(
        &jetstream,
        &url,
        "COPY",
        "ALTERED",
        |sequence, headers, mut payload| {
            if sequence == 101 {
                payload.push(b'!');
            }
            vec![(headers, payload)]
        },
    )
    .await;
    let altered = audit(&url, "ALTERED", &original).await;
    assert_eq!(
        altered.divergence,
        Some(Divergence::Different {
            position: Position(100),
            sequence: 101,
            fields: vec!["payload"],
        }),
        "{}",
        altered.summary()
    );
    assert_eq!(altered.identical_through, Some(Position(99)));

    // A repeated message.
    copy_stream(
        &jetstream,
        &url,
        "COPY",
        "REPEATED",
        |sequence, headers, payload| {
            let times = if sequence == 51 { 2 } else { 1 };
            vec![(headers, payload); times]
        },
    )
    .await;
    let repeated = audit(&url, "REPEATED", &original).await;
    assert_eq!(
        repeated.divergence,
        Some(Divergence::Extra {
            position: Position(50),
            sequence: 52,
        }),
        "{}",
        repeated.summary()
    );

    // An intact copy, for the removal of its last message below.
    copy_stream(
        &jetstream,
        &url,
        "COPY",
        "TRUNCATED",
        |_, headers, payload| vec![(headers, payload)],
    )
    .await;

    // A removed message: audit names it, and restore refuses the gap.
    let stream = jetstream.get_stream("COPY").await.unwrap();
    assert!(stream.delete_message(201).await.unwrap());
    let removed = audit(&url, "COPY", &original).await;
    assert_eq!(
        removed.divergence,
        Some(Divergence::Missing {
            position: Position(200),
            sequence: Some(202),
        }),
        "{}",
        removed.summary()
    );
    let gap_dir = tempfile::tempdir().unwrap();
    let gap_store = open_store(gap_dir.path());
    match restore(&url, "COPY", &gap_store).await {
        Err(outbox::Error::NotContiguous {
            expected, found, ..
        }) => assert_eq!((expected, found), (Position(200), Position(201))),
        other => panic!("restore over a gap: {other:?}"),
    }
    // The last message removed: a divergence, not a copy that merely lags.
    let truncated = jetstream.get_stream("TRUNCATED").await.unwrap();
    let last = truncated.cached_info().state.last_sequence;
    assert!(truncated.delete_message(last).await.unwrap());
    let report = audit(&url, "TRUNCATED", &original).await;
    assert_eq!(
        report.divergence,
        Some(Divergence::Missing {
            position: Position(last - 1),
            sequence: None,
        }),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_travels_in_the_headers_and_restores_exactly() {
    let server = NatsServer::start();
    let url = server.url();
    let (original_dir, restored_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = open_store(original_dir.path());
    let stream = StreamId::new("stock-apple").unwrap();
    let by_the_saga = NewEvent::new("StockReserved", vec![1, 2, 3]).with_metadata(Metadata {
        principal: Some("annals-fulfilment".into()),
        issuer: Some("annals".into()),
        action: Some("fulfilment.reserve".into()),
        on_behalf_of: Some("alice".into()),
        ..Metadata::default()
    });
    let by_a_clerk = NewEvent::new("StockRestocked", vec![4]).with_metadata(Metadata {
        principal: Some("clerk 7".into()),
        issuer: Some("https://id.example/realms/annals".into()),
        action: Some("inventory.restock".into()),
        ..Metadata::default()
    });
    original
        .append(&stream, ExpectedVersion::Any, vec![by_the_saga, by_a_clerk])
        .await
        .unwrap();
    let mut relay = start_relay(&original, relay_config(&url, "WHO"));
    relay.wait_drained(&original, Duration::from_secs(30)).await;
    relay.stop().await;

    let client = async_nats::connect(&url).await.unwrap();
    let copy = jetstream::new(client).get_stream("WHO").await.unwrap();
    let first = copy.get_raw_message(1).await.unwrap();
    let header = |name| {
        first
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(
        header(outbox::message::PRINCIPAL).as_deref(),
        Some("annals-fulfilment")
    );
    assert_eq!(header(outbox::message::ISSUER).as_deref(), Some("annals"));
    assert_eq!(
        header(outbox::message::ACTION).as_deref(),
        Some("fulfilment.reserve")
    );
    assert_eq!(
        header(outbox::message::ON_BEHALF_OF).as_deref(),
        Some("alice")
    );
    let second = copy.get_raw_message(2).await.unwrap();
    assert_eq!(
        second
            .headers
            .get(outbox::message::ISSUER)
            .map(|value| value.as_str()),
        Some("https://id.example/realms/annals")
    );
    assert_eq!(second.headers.get(outbox::message::ON_BEHALF_OF), None);

    let log = whole_log(&original);
    let restored = open_store(restored_dir.path());
    let report = restore(&url, "WHO", &restored).await.expect("the restore");
    assert_eq!(report.imported, 2);
    assert_eq!(
        whole_log(&restored),
        log,
        "the same events, metadata included"
    );
    assert_eq!(
        restored.verify().unwrap().head_hash,
        original.verify().unwrap().head_hash
    );
    let audit = audit(&url, "WHO", &original).await;
    assert_eq!(audit.divergence, None, "{}", audit.summary());
}
