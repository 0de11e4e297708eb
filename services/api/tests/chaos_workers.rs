//! The server's workers killed by fault points, through a real listening server wired as
//! `annals serve --chaos` wires it (one switch shared by the relay, the saga, the read
//! models and the API; the workers under a supervisor; a real nats-server for the
//! relay):
//!
//! - the relay killed by `relay.publish` panics is restarted (counted in
//!   `GET /api/v1/workers`), `/readyz` stays ready, and every event of the log reaches
//!   JetStream exactly once, in order; `lost_ack` leaves no duplicate either;
//! - the saga driver killed by `saga.command` panics (and slowed by errors) runs again,
//!   and every order ends confirmed with its stock taken once and its account charged
//!   once;
//! - a worker that keeps failing is reported `failed` and `/readyz` names it;
//! - a read model that panics once on an event applies it exactly once after the poison
//!   handling's retry.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use repositories::Repositories;
use sagas::{DriverConfig, DriverWorker, Fulfilment, FulfilmentServices, SystemClock};
use serde_json::{Value, json};
use supervisor::{Restart, Supervisor, SupervisorConfig};
use test_support::NatsServer;

mod common;

/// The server's parts, as `annals serve --chaos` runs them.
struct Server {
    base: String,
    client: reqwest::Client,
    store: eventstore::EventStore,
    chaos: chaos::Chaos,
    supervisor: Supervisor,
    serving: common::Serving,
}

impl Server {
    /// A server over a fresh store in `dir`; with a relay to `nats_url` if given. A
    /// worker failing more than `max_restarts` times in a minute is failed.
    async fn start(dir: &std::path::Path, nats_url: Option<String>, max_restarts: u32) -> Server {
        let chaos = chaos::Chaos::enabled();
        let store = common::open_store(dir).await;
        let repositories = Repositories::new(store.clone());
        let mut supervisor = Supervisor::new(SupervisorConfig {
            max_restarts,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(100),
        });
        let runner_config = projections::RunnerConfig {
            chaos: chaos.clone(),
            poison_backoff: Duration::from_millis(10),
            ..projections::RunnerConfig::default()
        };
        let (projections, mut runner) =
            read_models::ReadSide::start(&store, runner_config).unwrap();
        let services = FulfilmentServices::new(repositories.clone(), Duration::from_secs(30))
            .with_chaos(chaos.clone());
        let saga = DriverWorker::<Fulfilment, _>::new(
            store.clone(),
            Arc::new(services),
            Arc::new(SystemClock),
            DriverConfig {
                retry_after: Duration::from_millis(10),
                ..DriverConfig::default()
            },
        )
        .unwrap();
        let mut state = AppState::sharing(store.clone(), repositories, ApiConfig::default())
            .with_projections(projections)
            .with_saga(saga.watch())
            .with_workers(supervisor.workers())
            .with_chaos(chaos.clone());
        runner.report_to(&supervisor.workers());
        let mut runner = Some(runner);
        supervisor.spawn_with("projections", Restart::Never, move |stop| {
            let runner = runner.take();
            async move {
                let Some(runner) = runner else {
                    return Err("the runner runs once");
                };
                runner.run(stop).await;
                Ok(())
            }
        });
        supervisor.spawn("saga:fulfilment", move |stop| saga.run(stop));
        if let Some(url) = nats_url {
            let relay = outbox::Relay::new(
                store.clone(),
                outbox::RelayConfig {
                    connect_timeout: Duration::from_secs(2),
                    request_timeout: Duration::from_secs(2),
                    ack_timeout: Duration::from_secs(2),
                    backoff_min: Duration::from_millis(10),
                    backoff_max: Duration::from_millis(50),
                    breaker_cool_down: Duration::from_millis(100),
                    status_interval: Duration::from_millis(50),
                    shutdown_grace: Duration::from_millis(500),
                    chaos: chaos.clone(),
                    ..outbox::RelayConfig::new(url)
                },
            )
            .unwrap();
            state = state.with_relay(relay.status());
            supervisor.spawn("relay", move |stop| relay.clone().run(stop));
        }
        let serving = common::Serving::start(state).await;
        Server {
            base: serving.base.clone(),
            client: reqwest::Client::new(),
            store,
            chaos,
            supervisor,
            serving,
        }
    }

    async fn stop(self) {
        self.serving.drain().await;
        assert!(
            self.supervisor
                .shutdown(Duration::from_secs(20))
                .await
                .is_empty(),
            "every worker stops"
        );
        self.store.close().await;
    }

    /// Injects the fault `spec` through the API.
    async fn inject(&self, spec: Value) {
        let (status, fault) = self.post("/api/v1/chaos/faults", spec.clone()).await;
        assert_eq!(status, 201, "{spec}: {fault}");
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `done` holds (up to 30 s); returns that answer.
    async fn when(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, answer) = self.get(path).await;
            if done(&answer) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {what}: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The sku `apple` (1,000 at 10) and the account of `c-1` (100,000).
    async fn seed(&self) {
        let calls = [
            (
                "/api/v1/inventory/skus",
                json!({"sku": "apple", "name": "Apple", "unit_price": 10}),
            ),
            (
                "/api/v1/inventory/skus/apple/restock",
                json!({"quantity": 1000}),
            ),
            ("/api/v1/payments/accounts", json!({"customer_id": "c-1"})),
            (
                "/api/v1/payments/accounts/c-1/deposits",
                json!({"amount": 100_000}),
            ),
        ];
        for (path, body) in calls {
            let (status, answer) = self.post(path, body).await;
            assert!(status == 200 || status == 201, "{path}: {answer}");
        }
    }

    /// Places `count` orders of `c-1` for 2 apples each; their ids.
    async fn place_orders(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let (status, order) = self
                .post(
                    "/api/v1/orders",
                    json!({"customer_id": "c-1", "lines": [{"sku": "apple", "quantity": 2}]}),
                )
                .await;
            assert_eq!(status, 201, "{order}");
            ids.push(order["order_id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Restocks `apple` by `quantity`; the log's next position after it.
    async fn restock(&self, quantity: u64) -> u64 {
        let (status, restocked) = self
            .post(
                "/api/v1/inventory/skus/apple/restock",
                json!({"quantity": quantity}),
            )
            .await;
        assert_eq!(status, 200, "{restocked}");
        self.store.next_position().0
    }

    /// Waits until every read model has applied the log before `head` and left catching
    /// up (the checkpoint reaches the head a moment before the runner turns live); the
    /// `GET /api/v1/projections` answer then.
    async fn read_models_at(&self, head: u64) -> Value {
        self.when(
            "/api/v1/projections",
            "every read model caught up",
            |report| {
                report["projections"].as_array().is_some_and(|models| {
                    models.iter().all(|model| {
                        model["checkpoint"].as_u64() == Some(head)
                            && model["state"] != "catching_up"
                    })
                })
            },
        )
        .await
    }

    /// The worker `name` of `GET /api/v1/workers`.
    async fn worker(&self, name: &str) -> Value {
        let (_, report) = self.get("/api/v1/workers").await;
        worker(&report, name)
    }
}

fn worker(report: &Value, name: &str) -> Value {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|worker| worker["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {report}"))
        .clone()
}

/// Every message of the relay's stream (`ANNALS`), in sequence order: its
/// `Annals-Position` header.
async fn stream_positions(url: &str) -> Vec<u64> {
    let client = async_nats::connect(url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("ANNALS").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut positions = Vec::new();
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let position = message
            .headers
            .get("Annals-Position")
            .expect("every message names its position")
            .as_str()
            .parse()
            .unwrap();
        positions.push(position);
    }
    positions
}

/// Waits until the relay has published the whole log; then checks that the stream holds
/// every event exactly once, in log order.
///
/// The log may still grow meanwhile (the sagas of orders just placed append their steps):
/// the relay has caught up when its checkpoint is the head at the moment it is read, and
/// the stream then holds at least that much of the log, and nothing else.
async fn assert_stream_is_the_log(server: &Server, url: &str) {
    let caught_up = server
        .when("/api/v1/outbox", "the relay caught up", |status| {
            status["relay"]["checkpoint"].as_u64() == Some(server.store.next_position().0)
        })
        .await;
    let head = caught_up["relay"]["checkpoint"].as_u64().unwrap();
    let positions = stream_positions(url).await;
    let log: Vec<u64> = (0..positions.len() as u64).collect();
    assert_eq!(positions, log, "the stream is the log, each event once");
    assert!(
        positions.len() as u64 >= head,
        "the stream holds {} events, the relay's checkpoint was {head}",
        positions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_killed_by_panics_restarts_and_publishes_every_event_once() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), Some(nats.url()), 5).await;
    server.seed().await;
    assert_stream_is_the_log(&server, &nats.url()).await;

    server
        .inject(json!({"point": "relay.publish", "effect": "panic", "count": 2}))
        .await;
    server.place_orders(5).await;
    let relay = server
        .when("/api/v1/workers", "the relay restarted twice", |report| {
            let relay = worker(report, "relay");
            relay["restarts"] == 2 && relay["state"] == "running"
        })
        .await;
    let last_error = worker(&relay, "relay")["last_error"].clone();
    assert!(
        last_error
            .as_str()
            .unwrap()
            .contains("a fault injected at relay.publish panics"),
        "{last_error}"
    );
    // The orders' sagas go on meanwhile; the relay publishes their events too.
    server
        .when("/api/v1/chaos/faults", "the panics used", |report| {
            report["faults"] == json!([])
        })
        .await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_stream_is_the_log(&server, &nats.url()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_leave_no_duplicate_in_the_stream() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), Some(nats.url()), 5).await;
    server.seed().await;
    server
        .inject(json!({"point": "relay.publish", "effect": "lost_ack", "count": 3}))
        .await;
    server.place_orders(5).await;
    server
        .when("/api/v1/chaos/faults", "the lost acks injected", |report| {
            report["faults"] == json!([])
        })
        .await;
    assert_stream_is_the_log(&server, &nats.url()).await;
    // Lost acknowledgements end sessions, not the worker.
    assert_eq!(server.worker("relay").await["restarts"], 0);
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_killed_by_panics_runs_again_and_every_order_is_settled_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, 5).await;
    server.seed().await;
    // Errors first (retried inside the run), then two panics (the run fails, the
    // supervisor runs it again from its checkpoint).
    server
        .inject(json!({"point": "saga.command", "effect": "error", "count": 3}))
        .await;
    server
        .inject(json!({"point": "saga.command", "effect": "panic", "count": 2}))
        .await;
    let orders = server.place_orders(6).await;
    for order in &orders {
        server
            .when(&format!("/api/v1/orders/{order}"), "confirmed", |order| {
                order["status"] == "confirmed"
            })
            .await;
    }
    // Two panics: two failed runs, or one if both met the same run.
    let saga = server.worker("saga:fulfilment").await;
    let restarts = saga["restarts"].as_u64().unwrap();
    assert!((1..=2).contains(&restarts), "{saga}");
    assert_eq!(saga["state"], "running", "{saga}");
    assert!(server.chaos.faults().is_empty());
    // Each order took its 2 apples once and was charged its 20 once (the reservations
    // are confirmed after the orders).
    let stock = server
        .when(
            "/api/v1/inventory/skus/apple",
            "every reservation confirmed",
            |stock| stock["reserved"] == 0,
        )
        .await;
    assert_eq!(stock["on_hand"], 1000 - 2 * orders.len() as u64, "{stock}");
    assert_eq!(
        stock["available"],
        1000 - 2 * orders.len() as u64,
        "{stock}"
    );
    assert_eq!(stock["reserved"], 0, "{stock}");
    let (_, account) = server.get("/api/v1/payments/accounts/c-1").await;
    assert_eq!(
        account["balance"],
        100_000 - 20 * orders.len() as u64,
        "{account}"
    );
    let charges = account["charges"].as_object().unwrap();
    assert_eq!(charges.len(), orders.len(), "{account}");
    for order in &orders {
        assert_eq!(charges[order]["amount"], 20, "{account}");
        assert_eq!(charges[order]["refunded"], false, "{account}");
    }
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_failing_is_failed_and_readyz_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, 2).await;
    server.seed().await;
    server
        .inject(json!({"point": "saga.command", "effect": "panic", "count": 100}))
        .await;
    server.place_orders(1).await;
    let report = server
        .when("/api/v1/workers", "the saga failed", |report| {
            worker(report, "saga:fulfilment")["state"] == "failed"
        })
        .await;
    assert_eq!(
        worker(&report, "saga:fulfilment")["restarts"],
        2,
        "{report}"
    );
    let (status, problem) = server.get("/readyz").await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:annals:problem:not-ready");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("saga:fulfilment"), "{detail}");
    // The operator can still look and clear the fault.
    let response = server
        .client
        .delete(format!("{}/api/v1/chaos/faults", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_panicking_once_applies_the_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, 5).await;
    server
        .inject(json!({"point": "projection.apply", "effect": "panic", "count": 1}))
        .await;
    server.seed().await;
    let head = server.restock(5).await;
    let report = server.read_models_at(head).await;
    for model in report["projections"].as_array().unwrap() {
        assert_eq!(model["state"], "live", "{report}");
        assert_eq!(model["parked"], 0, "{report}");
    }
    let point = server
        .chaos
        .points()
        .into_iter()
        .find(|point| point.point == chaos::Point::ProjectionApply)
        .unwrap();
    assert_eq!(point.injections, 1);
    // Applied once: the stock read model holds 1,000 + 5, not more.
    let (_, page) = server
        .get(&format!("/api/v1/inventory/skus?min_position={}", head - 1))
        .await;
    let apple = &page["skus"][0];
    assert_eq!(apple["sku"], "apple", "{page}");
    assert_eq!(apple["on_hand"], 1005, "{page}");
    assert_eq!(apple["available"], 1005, "{page}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_that_keeps_failing_is_failed_until_a_retry_heals_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, 5).await;
    server.seed().await;
    // Every read model has applied the seed: the fault meets the restock below.
    server.read_models_at(server.store.next_position().0).await;
    server
        .inject(json!({"point": "projection.apply", "effect": "panic", "duration_secs": 600}))
        .await;
    let head = server.restock(5).await;
    // Each read model retries the event (3 times by default, after a jittered backoff),
    // each retry a restart, then stops faulted: a failed worker. Every model meets the
    // fault; the wait is for all of them, so that the retries below reach each one (a
    // model still in its last backoff when the fault is cleared would fail after the
    // list of failed models was read, and never be retried).
    let report = server
        .when("/api/v1/workers", "every read model failed", |report| {
            report["workers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|worker| worker["name"].as_str().unwrap().starts_with("projection:"))
                .all(|worker| worker["state"] == "failed")
        })
        .await;
    let inventory = worker(&report, "projection:inventory");
    assert_eq!(inventory["restarts"], 3, "{report}");
    let last_error = inventory["last_error"].as_str().unwrap();
    assert!(
        last_error.contains(&format!("{}", head - 1)) && last_error.contains("panicked"),
        "the failure names the event: {last_error}"
    );
    let (status, problem) = server.get("/readyz").await;
    assert_eq!(status, 503, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("projection:inventory"), "{detail}");
    let metrics = common::metrics_text(&server.client, &server.base).await;
    assert!(
        metrics
            .lines()
            .any(|line| line == r#"annals_worker_restarts_total{worker="projection:inventory"} 3"#),
        "the restarts are counted"
    );

    // The fault cleared, a retry of each failed model heals it and readiness returns.
    let response = server
        .client
        .delete(format!("{}/api/v1/chaos/faults", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, report) = server.get("/api/v1/workers").await;
    for failed in report["workers"].as_array().unwrap() {
        if failed["state"] != "failed" {
            continue;
        }
        let name = failed["name"].as_str().unwrap();
        let model = name
            .strip_prefix("projection:")
            .expect("only read models fail");
        let (status, retried) = server
            .post(&format!("/api/v1/projections/{model}/retry"), json!({}))
            .await;
        assert_eq!(status, 200, "{model}: {retried}");
    }
    let report = server
        .when("/api/v1/workers", "every read model runs again", |report| {
            report["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|worker| worker["state"] == "running")
        })
        .await;
    assert_eq!(
        worker(&report, "projection:inventory")["restarts"],
        3,
        "a restart stays counted: {report}"
    );
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    // Applied once across the failures and the retry: 1,000 + 5.
    let (_, page) = server
        .get(&format!("/api/v1/inventory/skus?min_position={}", head - 1))
        .await;
    assert_eq!(page["skus"][0]["on_hand"], 1005, "{page}");
    server.stop().await;
}
