//! Poison events over HTTP, against a real listening server running the read models:
//! a read model that parks an event lists it at `GET /api/v1/projections/{name}/parked`
//! and `POST /api/v1/projections/{name}/retry` tries it again; under the default policy
//! the read model faults naming the event and a retry resumes it; both routes answer
//! 404 problems for an unknown read model.

use std::path::Path;
use std::time::Duration;

use api::{ApiConfig, AppState};
use eventstore::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use projections::{PoisonPolicy, RunnerConfig};
use read_models::{ORDERS, ReadSide};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;

/// A server over a store in `dir`, its read models run with `policy`.
struct PoisonServer {
    base: String,
    client: reqwest::Client,
    store: EventStore,
    serving: common::Serving,
    runner_stop: CancellationToken,
    runner: JoinHandle<()>,
}

impl PoisonServer {
    async fn start(dir: &Path, policy: PoisonPolicy) -> Self {
        let store = common::open_store(dir).await;
        let config = RunnerConfig {
            poison_policy: policy,
            poison_retries: 1,
            poison_backoff: Duration::from_millis(5),
            ..RunnerConfig::default()
        };
        let (projections, runner) = ReadSide::start(&store, config).unwrap();
        let runner_stop = CancellationToken::new();
        let runner = tokio::spawn(runner.run(runner_stop.clone()));
        let state =
            AppState::new(store.clone(), ApiConfig::default()).with_projections(projections);
        let serving = common::Serving::start(state).await;
        PoisonServer {
            base: serving.base.clone(),
            client: reqwest::Client::new(),
            store,
            serving,
            runner_stop,
            runner,
        }
    }

    async fn stop(self) {
        self.serving.drain().await;
        self.runner_stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.runner)
            .await
            .expect("the runner stops")
            .unwrap();
        self.store.close().await;
    }

    async fn send(&self, method: &str, path: &str) -> (u16, String, Value) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.json().await.unwrap())
    }

    async fn ok(&self, method: &str, path: &str) -> Value {
        let (status, _, body) = self.send(method, path).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    }

    /// The `orders` entry of `GET /api/v1/projections` once `settled` holds for it.
    async fn orders_when(&self, settled: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.ok("GET", "/api/v1/projections").await;
            let orders = list["projections"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == ORDERS)
                .cloned()
                .unwrap();
            if settled(&orders) {
                return orders;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the orders model did not settle: {orders}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Appends an order event that does not decode; returns its position.
    async fn append_poison(&self) -> Position {
        self.store
            .append(
                &StreamId::new("order-poison").unwrap(),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("OrderPlaced", vec![0xff, 0xff, 0xff, 0xff])],
            )
            .await
            .unwrap()
            .first_position
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_is_listed_and_retried_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = PoisonServer::start(dir.path(), PoisonPolicy::Park).await;
    let (empty, _, _) = server
        .send("GET", "/api/v1/projections/orders/parked")
        .await;
    assert_eq!(empty, 200);
    let poison = server.append_poison().await;
    let head = server.store.next_position().0;
    let orders = server
        .orders_when(|p| p["parked"] == 1 && p["checkpoint"] == head)
        .await;
    assert_eq!(orders["state"], "live", "{orders}");

    let parked = server.ok("GET", "/api/v1/projections/orders/parked").await;
    assert_eq!(parked["name"], ORDERS);
    let events = parked["parked"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{parked}");
    assert_eq!(events[0]["position"], poison.0);
    assert_eq!(events[0]["stream"], "order-poison");
    assert_eq!(events[0]["event_type"], "OrderPlaced");
    assert!(
        events[0]["error"].as_str().unwrap().contains("decode"),
        "{parked}"
    );
    assert!(
        events[0]["parked_at"].as_str().unwrap().ends_with('Z'),
        "{parked}"
    );

    // The payload still does not decode: the retry says so and the event stays.
    let retried = server.ok("POST", "/api/v1/projections/orders/retry").await;
    assert_eq!(retried["name"], ORDERS);
    assert_eq!(retried["resumed"], false);
    assert_eq!(retried["retried"], 1);
    assert_eq!(retried["applied"], 0);
    assert_eq!(retried["parked"], 1);
    let parked = server.ok("GET", "/api/v1/projections/orders/parked").await;
    assert_eq!(parked["parked"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulted_read_model_names_the_event_and_a_retry_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = PoisonServer::start(dir.path(), PoisonPolicy::Fault).await;
    let poison = server.append_poison().await;
    let orders = server.orders_when(|p| p["state"] == "faulted").await;
    assert_eq!(orders["fault_position"], poison.0, "{orders}");
    assert_eq!(orders["fault_stream"], "order-poison", "{orders}");
    assert_eq!(orders["fault_event_type"], "OrderPlaced", "{orders}");
    assert_eq!(orders["parked"], 0, "{orders}");

    let retried = server.ok("POST", "/api/v1/projections/orders/retry").await;
    assert_eq!(retried["resumed"], true, "{retried}");
    assert_eq!(retried["retried"], 0, "{retried}");
    // It meets the same event again, retries it, and faults there again.
    let orders = server
        .orders_when(|p| p["state"] == "faulted" && p["fault_position"] == poison.0)
        .await;
    assert_eq!(orders["checkpoint"], poison.0, "{orders}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poison_routes_answer_404_for_an_unknown_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = PoisonServer::start(dir.path(), PoisonPolicy::Park).await;
    for (method, path) in [
        ("GET", "/api/v1/projections/nothing/parked"),
        ("POST", "/api/v1/projections/nothing/retry"),
    ] {
        let (status, content_type, problem) = server.send(method, path).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            problem["type"], "urn:annals:problem:unknown-projection",
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("nothing"),
            "{problem}"
        );
    }
    server.stop().await;
}

#[test]
fn the_poison_routes_are_documented() {
    let document = api::openapi();
    let parked = &document.paths.paths["/api/v1/projections/{name}/parked"];
    assert!(parked.get.is_some());
    let retry = &document.paths.paths["/api/v1/projections/{name}/retry"];
    assert!(retry.post.is_some());
}
