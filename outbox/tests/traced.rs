//! The relay with an OpenTelemetry layer installed: each message's `traceparent` names
//! the relay's `publish` span (a producer, in the event's trace), `Annals-Traceparent`
//! keeps what the event stores, and the copy is still the log exactly: it decodes to the
//! same events, audit finds it identical, and a restore reproduces the log and its head
//! hash.
//!
//! Subscribers are global per process: this test binary owns its set-up, and holds this
//! one test.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use opentelemetry::trace::SpanKind;
use outbox::RestoreOptions;
use test_support::traces::MemoryTraces;

#[allow(dead_code, unused_imports)]
#[path = "relay/common.rs"]
mod common;

use common::{
    NatsServer, assert_exact_copy, audit, connect, open_store, read_copy, relay_config,
    start_relay, whole_log, within, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_relay_names_its_publish_spans_and_the_copy_stays_exact() {
    let traces = MemoryTraces::new();
    traces.install_globally();

    let server = NatsServer::start();
    let url = server.url();
    let (original_dir, restored_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = open_store(original_dir.path());
    workload(&original, 2, 20).await;
    let mut relay = start_relay(&original, relay_config(&url, "TRACED"));
    relay.wait_drained(&original, Duration::from_secs(30)).await;
    relay.stop().await;
    let log = whole_log(&original);
    assert!(log.iter().all(|event| event.metadata.traceparent.is_some()));
    let spans = traces.spans();

    // Every message: `traceparent` names its publish span, a child of the stored context.
    let jetstream = jetstream::new(async_nats::connect(&url).await.unwrap());
    let copy = jetstream.get_stream("TRACED").await.unwrap();
    let mut messages = copy
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    for event in &log {
        let message = within(Duration::from_secs(10), "a message", messages.next())
            .await
            .unwrap()
            .unwrap();
        let headers = message.headers.as_ref().unwrap();
        let header = |name: &str| headers.get(name).map(|value| value.to_string());
        let stored = event.metadata.traceparent.clone().unwrap();
        assert_eq!(header("Annals-Traceparent"), Some(stored.clone()));
        let published = header("traceparent").unwrap();
        assert_ne!(published, stored);
        let (stored, published): (Vec<&str>, Vec<&str>) =
            (stored.split('-').collect(), published.split('-').collect());
        assert_eq!(published[1], stored[1], "the event's trace");
        let span = spans
            .iter()
            .find(|span| span.span_context.span_id().to_string() == published[2])
            .unwrap_or_else(|| panic!("no span {published:?}"));
        assert!(span.name.starts_with("publish "), "{}", span.name);
        assert_eq!(span.span_kind, SpanKind::Producer);
        assert_eq!(span.parent_span_id.to_string(), stored[2]);
        let position = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "position")
            .map(|kv| kv.value.to_string());
        assert_eq!(position, Some(event.position.0.to_string()));
    }

    // The copy decodes to the log, audits identical and restores it exactly.
    assert_exact_copy(&read_copy(&url, "TRACED").await, &log);
    let report = audit(&url, "TRACED", &original).await;
    assert_eq!(report.divergence, None, "{}", report.summary());
    assert_eq!(report.unhashed_messages, 0);
    let restored = open_store(restored_dir.path());
    let client = connect(&url).await;
    let restore_report = within(
        Duration::from_secs(30),
        "the restore",
        outbox::restore(
            &client,
            "TRACED",
            &restored,
            &RestoreOptions::default(),
            &mut |_, _| {},
        ),
    )
    .await
    .expect("the restore");
    assert_eq!(restore_report.imported, log.len() as u64);
    assert_eq!(whole_log(&restored), log);
    assert_eq!(
        restored.verify().unwrap().head_hash,
        original.verify().unwrap().head_hash
    );
}
