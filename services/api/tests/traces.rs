//! Traces against a real listening server running the saga, with an in-memory span
//! exporter: a command sent with a client `traceparent` continues the client's trace
//! (the request's span, the command's), the response carries the request span's
//! `traceparent`, and the events it wrote store the trace context in their metadata;
//! an order's saga steps and their commands go on in the same trace, and the saga's
//! command events carry it. The outbox relay runs in-process against a real nats-server:
//! its `publish` spans join the order's trace and the NATS messages of the order's events
//! carry that trace in `traceparent` (naming the publish span). The read models run too:
//! the `project orders` span of the batch that applied the order links to its trace.
//!
//! Subscribers are global per process: this test binary owns its set-up, once
//! ([`trace_to`]); a test fn that needs the spans asks it for the shared `MemoryTraces`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::{ApiConfig, AppState};
use async_nats::jetstream::consumer;
use eventstore::Position;
use futures_util::StreamExt;
use opentelemetry_sdk::trace::SpanData;
use repositories::Repositories;
use sagas::{Driver, DriverConfig, FulfilmentServices, ManualClock};
use serde_json::{Value, json};
use test_support::traces::MemoryTraces;
use tokio_util::sync::CancellationToken;

mod common;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// The process's subscriber, set up once: every span to memory, at once.
fn trace_to() -> &'static MemoryTraces {
    static TRACES: OnceLock<MemoryTraces> = OnceLock::new();
    TRACES.get_or_init(|| {
        let traces = MemoryTraces::new();
        traces.install_globally();
        traces
    })
}

/// The value of the span attribute `key`, if it has one.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_continues_the_clients_trace() {
    let traces = trace_to();

    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let repositories = Repositories::new(store.clone());
    let (read_side, runner) =
        read_models::ReadSide::start(&store, projections::RunnerConfig::default()).unwrap();
    let runner_stop = CancellationToken::new();
    let runner = tokio::spawn(runner.run(runner_stop.clone()));
    let nats = test_support::NatsServer::start();
    let relay_config = outbox::RelayConfig {
        stream: "ANNALS_TRACES".into(),
        ..outbox::RelayConfig::new(nats.url())
    };
    let relay = outbox::Relay::new(store.clone(), relay_config.clone()).unwrap();
    let mut relay_status = relay.status();
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(relay.run(relay_stop.clone()));
    let state = AppState::sharing(store.clone(), repositories.clone(), ApiConfig::default())
        .with_projections(read_side.clone());
    let services = FulfilmentServices::new(repositories, Duration::from_secs(30));
    let driver = Driver::start(
        store.clone(),
        Arc::new(services),
        Arc::new(ManualClock::new(chrono::Utc::now())),
        DriverConfig::default(),
    )
    .unwrap();
    let serving = common::Serving::start(state).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", serving.base))
            .json(&body)
            .send()
    };
    let sku = json!({"sku": "apple", "name": "Thing", "unit_price": 5});
    assert_eq!(
        post("/api/v1/inventory/skus", sku).await.unwrap().status(),
        201
    );

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let response = client
        .post(format!("{}/api/v1/payments/accounts", serving.base))
        .header("traceparent", &traceparent)
        .json(&json!({"customer_id": "c-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The response names the request's span, in the client's trace.
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!(parts[1], CLIENT_TRACE);
    assert_ne!(parts[2], CLIENT_PARENT);

    // The events store the request's trace context.
    let stream: Value = client
        .get(format!("{}/api/v1/streams/account-c-1", serving.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = &stream["events"][0];
    assert_eq!(
        event["metadata"]["traceparent"],
        answered.as_str(),
        "{event}"
    );

    // An order: the saga's steps and commands continue the order request's trace.
    let restock = json!({"quantity": 10});
    let path = "/api/v1/inventory/skus/apple/restock";
    assert_eq!(post(path, restock).await.unwrap().status(), 200);
    let deposit = json!({"amount": 100});
    let path = "/api/v1/payments/accounts/c-1/deposits";
    assert_eq!(post(path, deposit).await.unwrap().status(), 200);
    let order_trace = "0af7651916cd43dd8448eb211c80319c";
    let response = client
        .post(format!("{}/api/v1/orders", serving.base))
        .header(
            "traceparent",
            format!("00-{order_trace}-b7ad6b7169203331-01"),
        )
        .json(&json!({"customer_id": "c-1", "lines": [{"sku": "apple", "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    let order = order["order_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saga: Value = client
            .get(format!("{}/api/v1/sagas/fulfilment/{order}", serving.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if saga["finished"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{saga}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log: Value = client
        .get(format!("{}/api/v1/log?limit=1000", serving.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let saga_commands: Vec<&Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| {
            event["metadata"]["action"]
                .as_str()
                .is_some_and(|action| action.starts_with("fulfilment."))
        })
        .collect();
    assert!(saga_commands.len() >= 3, "{log}");
    for event in saga_commands {
        let carried = event["metadata"]["traceparent"]
            .as_str()
            .unwrap_or_default();
        assert!(carried.contains(order_trace), "{event}");
    }

    // The relay publishes every event and the read models apply them all.
    let head = store.next_position();
    let published = tokio::time::timeout(
        Duration::from_secs(20),
        relay_status.wait_for(|status| status.checkpoint >= head),
    );
    published.await.expect("the relay catches up").unwrap();
    let last = Position(head.0 - 1);
    read_side
        .wait_for(last, Duration::from_secs(20))
        .await
        .unwrap();
    // The NATS messages of the order's events carry its trace, naming a publish span;
    // `Annals-Traceparent` keeps what the event stores.
    let order_stream = format!("order-{order}");
    let mut order_messages = Vec::new();
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let copy = jetstream.get_stream(&relay_config.stream).await.unwrap();
    let mut messages = copy
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    for _ in 0..head.0 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        let event = outbox::message::decode(message.headers.as_ref(), &message.payload).unwrap();
        if event.stream_id.as_str() == order_stream {
            let headers = message.headers.as_ref().unwrap();
            let header = |name: &str| headers.get(name).map(|value| value.to_string());
            order_messages.push((header("traceparent"), header("Annals-Traceparent"), event));
        }
    }
    assert!(!order_messages.is_empty());

    serving.drain().await;
    driver.stop().await;
    relay_stop.cancel();
    relay.await.unwrap().unwrap();
    runner_stop.cancel();
    runner.await.unwrap();
    store.close().await;

    let spans = traces.spans();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|span| span.span_context.trace_id().to_string() == CLIENT_TRACE)
        .collect();
    let request = in_trace
        .iter()
        .find(|span| span.name == "POST /api/v1/payments/accounts")
        .unwrap_or_else(|| panic!("no request span in {:?}", names(&spans)));
    assert_eq!(request.parent_span_id.to_string(), CLIENT_PARENT);
    assert_eq!(request.span_context.span_id().to_string(), parts[2]);
    let command = in_trace
        .iter()
        .find(|span| span.name == "command account")
        .unwrap_or_else(|| panic!("no command span in {:?}", names(&spans)));
    assert_eq!(command.parent_span_id, request.span_context.span_id());
    let outcome = command
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "outcome")
        .map(|kv| kv.value.to_string());
    assert_eq!(outcome.as_deref(), Some("committed"));
    // A request without a traceparent begins a trace of its own.
    let register = spans
        .iter()
        .find(|span| span.name == "POST /api/v1/inventory/skus")
        .unwrap_or_else(|| panic!("no request span in {:?}", names(&spans)));
    assert_ne!(register.span_context.trace_id().to_string(), CLIENT_TRACE);
    // The order's trace: the request, its command, each saga step and command (the
    // saga's commands run through the repositories, in their `saga command` span).
    let order_spans: Vec<String> = spans
        .iter()
        .filter(|span| span.span_context.trace_id().to_string() == order_trace)
        .map(|span| span.name.to_string())
        .collect();
    for name in [
        "POST /api/v1/orders",
        "command order",
        "saga fulfilment step",
        "saga fulfilment command",
        "append",
    ] {
        assert!(
            order_spans.iter().any(|span| span == name),
            "no {name} in {order_spans:?}"
        );
    }
    // The order's append, below its command: what it wrote and where its time went.
    let order_command = spans
        .iter()
        .find(|span| {
            span.name == "command order" && span.span_context.trace_id().to_string() == order_trace
        })
        .unwrap();
    let append = spans
        .iter()
        .find(|span| {
            span.name == "append" && span.parent_span_id == order_command.span_context.span_id()
        })
        .unwrap_or_else(|| panic!("no append below the order's command in {order_spans:?}"));
    assert_eq!(attribute(append, "events").as_deref(), Some("1"));
    let bytes: u64 = attribute(append, "bytes").unwrap().parse().unwrap();
    assert!(bytes > 0, "{bytes}");
    let fsync: u64 = attribute(append, "fsync_us").unwrap().parse().unwrap();
    assert!(fsync > 0, "{fsync}");
    assert!(attribute(append, "queued_us").is_some());
    assert_eq!(attribute(order_command, "retries").as_deref(), Some("0"));
    // The relay's publish of each of the order's events: a producer span in the order's
    // trace, child of the span the event stores, named by the message's `traceparent`.
    for (traceparent, stored, event) in &order_messages {
        let traceparent = traceparent.as_deref().unwrap_or_default();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1], order_trace, "{traceparent}");
        assert_eq!(stored, &event.metadata.traceparent);
        let publish = spans
            .iter()
            .find(|span| span.span_context.span_id().to_string() == parts[2])
            .unwrap_or_else(|| panic!("no span {traceparent} in {:?}", names(&spans)));
        assert!(publish.name.starts_with("publish "), "{}", publish.name);
        assert_eq!(publish.span_kind, opentelemetry::trace::SpanKind::Producer);
        assert_eq!(publish.span_context.trace_id().to_string(), order_trace);
        let parent = event.metadata.traceparent.as_deref().unwrap();
        assert_eq!(
            parent.split('-').nth(2),
            Some(publish.parent_span_id.to_string().as_str())
        );
        let position = event.position.0.to_string();
        assert_eq!(attribute(publish, "position"), Some(position));
        assert_eq!(attribute(publish, "stream"), Some(order_stream.clone()));
    }
    // The order summaries applied the order in a batch whose span links to its trace.
    let linked = spans.iter().any(|span| {
        span.name == "project orders"
            && span
                .links
                .iter()
                .any(|link| link.span_context.trace_id().to_string() == order_trace)
    });
    let batches: Vec<_> = spans
        .iter()
        .filter(|span| span.name.starts_with("project "))
        .map(|span| (span.name.to_string(), span.links.len()))
        .collect();
    assert!(
        linked,
        "no project orders span links the order: {batches:?}"
    );
}
