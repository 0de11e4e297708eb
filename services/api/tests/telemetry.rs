//! Request ids and the request's span against a real listening server: `X-Request-Id`
//! kept or made and returned on every answer, and on the request's log lines; a request
//! shed by its lane logged as shed, not as a failure.
//!
//! Subscribers are global per process: this test binary owns its set-up.

use std::sync::{Arc, Mutex};

use api::{ApiConfig, AppState};

mod common;

/// A log writer that keeps every line, for the assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_returned_on_every_answer() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let serving = common::Serving::start(AppState::new(store.clone(), ApiConfig::default())).await;
    let client = reqwest::Client::new();

    // A sane id is kept, on a route and on a 404 alike, and is on the request's lines.
    for path in ["/healthz", "/no/such/route"] {
        let response = client
            .get(format!("{}{path}", serving.base))
            .header("x-request-id", "client-id-42")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "client-id-42", "{path}");
    }
    // None, or an insane one: the server makes a UUID v7.
    let too_long = "a".repeat(129);
    for sent in [None, Some("has space"), Some(too_long.as_str())] {
        let mut request = client.get(format!("{}/healthz", serving.base));
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let response = request.send().await.unwrap();
        let made = response.headers()["x-request-id"].to_str().unwrap();
        let made = uuid::Uuid::parse_str(made).expect("a UUID");
        assert_eq!(made.get_version_num(), 7);
    }
    serving.drain().await;
    store.close().await;

    // A request shed by its lane is logged as shed (debug), not as a failure (error): a
    // flood of them would flood the log. The bulk lane takes one request, queues none.
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let config = ApiConfig {
        lanes: api::lanes::LanesConfig {
            bulk: api::lanes::LaneLimits {
                concurrency: 1,
                queue: 0,
                max_wait: std::time::Duration::from_millis(100),
            },
            ..api::lanes::LanesConfig::default()
        },
        ..ApiConfig::default()
    };
    let state = AppState::new(store.clone(), config).with_chaos(chaos::Chaos::enabled());
    let serving = common::Serving::start(state).await;
    let fault = serde_json::json!({
        "point": "http.handler", "effect": "delay", "delay_ms": 1500, "count": 1,
    });
    let response = client
        .post(format!("{}/api/v1/chaos/faults", serving.base))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let page = format!("{}/api/v1/log?limit=1000", serving.base);
    let holding = tokio::spawn(client.get(page.clone()).send());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let shed = client
        .get(&page)
        .header("x-request-id", "shed-1")
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().contains_key("retry-after"));
    assert_eq!(holding.await.unwrap().unwrap().status(), 200);
    serving.drain().await;
    store.close().await;
    let logs = captured.text();
    let shed_lines: Vec<&str> = logs.lines().filter(|l| l.contains("shed-1")).collect();
    assert!(
        shed_lines
            .iter()
            .any(|l| l.contains("request shed") && l.contains("queue_full")),
        "{shed_lines:?}"
    );
    assert!(
        shed_lines.iter().all(|l| !l.contains("response failed")),
        "{shed_lines:?}"
    );

    let line = logs
        .lines()
        .find(|line| line.contains("finished processing request") && line.contains("/healthz"))
        .unwrap_or_else(|| panic!("no request line in {logs}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["request_id"], "client-id-42", "{line}");
    assert_eq!(line["span"]["http.route"], "/healthz", "{line}");
}
