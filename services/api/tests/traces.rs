//! Traces against a real listening server running the saga, with an in-memory span
//! exporter: a command sent with a client `traceparent` continues the client's trace
//! (the request's span, the command's), the response carries the request span's
//! `traceparent`, and the events it wrote store the trace context in their metadata;
//! an order's saga steps and their commands go on in the same trace, and the saga's
//! command events carry it.
//!
//! Subscribers are global per process: this test binary owns its set-up.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use repositories::Repositories;
use sagas::{Driver, DriverConfig, FulfilmentServices, ManualClock};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

mod common;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// Sets up the process's subscriber: every span to `exporter`, at once.
fn trace_to(exporter: &InMemorySpanExporter) -> SdkTracerProvider {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    provider
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_continues_the_clients_trace() {
    let exporter = InMemorySpanExporter::default();
    let _provider = trace_to(&exporter);

    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let repositories = Repositories::new(store.clone());
    let state = AppState::sharing(store.clone(), repositories.clone(), ApiConfig::default());
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

    serving.drain().await;
    driver.stop().await;
    store.close().await;

    let spans = exporter.get_finished_spans().unwrap();
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
    ] {
        assert!(
            order_spans.iter().any(|span| span == name),
            "no {name} in {order_spans:?}"
        );
    }
}
