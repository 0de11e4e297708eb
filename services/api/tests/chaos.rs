//! Fault injection through a real listening server: without `--chaos` the chaos routes
//! answer 404 and nothing can be injected; with it, faults are injected, listed, ended
//! one by one and cleared, refused faults are 422s, the `http.handler` point answers a
//! real command with a 500 or delays a query (never the operator's routes), and every
//! injection is counted in `/metrics`. The store's points are below: a `store.write`
//! error takes the writer's real failure path (503 `store-failed`, and every event
//! acknowledged before is read back after reopening), a `store.fsync` delay slows
//! appends.

use std::time::{Duration, Instant};

use api::{ApiConfig, AppState};
use serde_json::{Value, json};

mod common;

/// A server over a fresh store in `dir`, with fault injection on or off.
async fn serve(dir: &std::path::Path, chaos: chaos::Chaos) -> (common::Serving, AppState) {
    let store = common::open_store(dir).await;
    let state = AppState::new(store, ApiConfig::default()).with_chaos(chaos);
    (common::Serving::start(state.clone()).await, state)
}

/// Sends `method path` with an optional JSON body; the status and the JSON body (null if
/// none).
async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chaos_the_routes_are_unknown_and_nothing_injects() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve(dir.path(), chaos::Chaos::inert()).await;
    let client = reqwest::Client::new();
    let spec = json!({"point": "http.handler", "effect": "status_500", "count": 1});
    for (method, path, body) in [
        ("GET", "/api/v1/chaos/faults", None),
        ("POST", "/api/v1/chaos/faults", Some(spec.clone())),
        ("DELETE", "/api/v1/chaos/faults", None),
        ("DELETE", "/api/v1/chaos/faults/1", None),
    ] {
        let (status, problem) = send(&client, &server.base, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:annals:problem:no-route", "{problem}");
    }
    // The switch itself refuses, and a command goes through untouched.
    let spec: chaos::FaultSpec = serde_json::from_value(spec).unwrap();
    assert_eq!(
        state.chaos().inject(&spec),
        Err(chaos::InvalidFault::Disabled)
    );
    let (status, _) = send(
        &client,
        &server.base,
        "POST",
        "/api/v1/inventory/skus",
        Some(json!({"sku": "apple", "name": "Apple", "unit_price": 100})),
    )
    .await;
    assert_eq!(status, 201);
    // Documented either way.
    let document = serde_json::to_value(api::openapi()).unwrap();
    let faults = &document["paths"]["/api/v1/chaos/faults"];
    for method in ["get", "post", "delete"] {
        assert_eq!(faults[method]["tags"][0], "chaos", "{method}: {faults}");
    }
    assert!(document["paths"]["/api/v1/chaos/faults/{id}"]["delete"].is_object());
    server.drain().await;
    state.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_listed_ended_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve(dir.path(), chaos::Chaos::enabled()).await;
    let client = reqwest::Client::new();
    let base = &server.base;
    let (status, report) = send(&client, base, "GET", "/api/v1/chaos/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(report["faults"], json!([]));
    let points: Vec<&str> = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["point"].as_str().unwrap())
        .collect();
    assert_eq!(points, chaos::Point::ALL.map(chaos::Point::name));
    assert_eq!(report["points"][0]["effects"], json!(["error", "delay"]));
    assert_eq!(report["points"][0]["injections"], 0);

    let specs = [
        json!({"point": "store.fsync", "effect": "delay", "delay_ms": 5, "duration_secs": 60}),
        json!({"point": "relay.publish", "effect": "lost_ack", "probability": 0.5, "count": 3}),
        json!({"point": "saga.command", "effect": "panic", "count": 1}),
    ];
    let mut ids = Vec::new();
    for spec in &specs {
        let (status, fault) = send(
            &client,
            base,
            "POST",
            "/api/v1/chaos/faults",
            Some(spec.clone()),
        )
        .await;
        assert_eq!(status, 201, "{spec}: {fault}");
        assert_eq!(fault["point"], spec["point"]);
        assert_eq!(fault["effect"], spec["effect"]);
        assert_eq!(fault["injected"], 0);
        ids.push(fault["id"].as_u64().unwrap());
    }
    let (_, report) = send(&client, base, "GET", "/api/v1/chaos/faults", None).await;
    let listed: Vec<u64> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fault| fault["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(report["faults"][0]["delay_ms"], 5);
    assert!(report["faults"][0]["expires_at"].is_string());
    assert_eq!(report["faults"][1]["probability"], 0.5);
    assert_eq!(report["faults"][1]["count"], 3);

    // One ended; again, it is not there any more.
    let path = format!("/api/v1/chaos/faults/{}", ids[1]);
    let (status, _) = send(&client, base, "DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, problem) = send(&client, base, "DELETE", &path, None).await;
    assert_eq!(status, 404);
    assert_eq!(problem["type"], "urn:annals:problem:unknown-fault");
    let (status, _) = send(&client, base, "DELETE", "/api/v1/chaos/faults/nine", None).await;
    assert_eq!(status, 404);
    assert_eq!(state.chaos().faults().len(), 2);

    // The rest cleared at once.
    let (status, cleared) = send(&client, base, "DELETE", "/api/v1/chaos/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(cleared, json!({"cleared": 2}));
    let (_, cleared) = send(&client, base, "DELETE", "/api/v1/chaos/faults", None).await;
    assert_eq!(cleared, json!({"cleared": 0}));
    assert!(state.chaos().faults().is_empty());
    server.drain().await;
    state.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_fault_is_a_422_saying_why_and_malformed_json_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve(dir.path(), chaos::Chaos::enabled()).await;
    let client = reqwest::Client::new();
    let invalid = [
        (
            json!({"point": "disk.melt", "effect": "error", "count": 1}),
            "no fault point",
        ),
        (
            json!({"point": "store.write", "effect": "delay", "delay_ms": 5, "count": 1}),
            "has no delay effect",
        ),
        (
            json!({"point": "store.write", "effect": "error", "probability": 0.0, "count": 1}),
            "probability",
        ),
        (
            json!({"point": "store.write", "effect": "error", "probability": 1.5, "count": 1}),
            "probability",
        ),
        (
            json!({"point": "store.write", "effect": "error"}),
            "must end by itself",
        ),
        (
            json!({"point": "store.write", "effect": "error", "count": 0}),
            "count must be at least 1",
        ),
        (
            json!({"point": "store.write", "effect": "error", "duration_secs": -1.0}),
            "duration_secs",
        ),
        (
            json!({"point": "store.write", "effect": "error", "duration_secs": 100000.0}),
            "duration_secs",
        ),
        (
            json!({"point": "store.fsync", "effect": "delay", "count": 1}),
            "needs delay_ms",
        ),
        (
            json!({"point": "store.fsync", "effect": "delay", "delay_ms": 60001, "count": 1}),
            "at most 60000",
        ),
        (
            json!({"point": "store.fsync", "effect": "error", "delay_ms": 5, "count": 1}),
            "delay_ms is for the delay effect",
        ),
    ];
    for (spec, why) in invalid {
        let (status, problem) = send(
            &client,
            &server.base,
            "POST",
            "/api/v1/chaos/faults",
            Some(spec.clone()),
        )
        .await;
        assert_eq!(status, 422, "{spec}: {problem}");
        assert_eq!(
            problem["type"], "urn:annals:problem:chaos-fault-invalid",
            "{problem}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{spec}: {detail}");
    }
    for body in [
        json!({"point": "store.write", "effect": "explode", "count": 1}),
        json!({"point": "store.write", "effect": "error", "count": 1, "colour": "red"}),
        json!(["store.write"]),
    ] {
        let (status, problem) = send(
            &client,
            &server.base,
            "POST",
            "/api/v1/chaos/faults",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {problem}");
    }
    let response = client
        .post(format!("{}/api/v1/chaos/faults", server.base))
        .header("content-type", "application/json")
        .body("{\"point\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(state.chaos().faults().is_empty(), "nothing was injected");
    server.drain().await;
    state.store().close().await;
}

/// The value of `annals_chaos_injections_total{point="<point>"}` in a `/metrics` answer.
fn injections(metrics: &str, point: &str) -> Option<f64> {
    let series = format!("annals_chaos_injections_total{{point=\"{point}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_answers_a_command_with_a_500_or_delays_a_query_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve(dir.path(), chaos::Chaos::enabled()).await;
    let client = reqwest::Client::new();
    let base = &server.base;
    let metrics = common::metrics_text(&client, base).await;
    for point in chaos::Point::ALL {
        assert!(
            injections(&metrics, point.name()).is_some(),
            "{point} has a series before any injection"
        );
    }
    let before = injections(&metrics, "http.handler").unwrap();

    let spec = json!({"point": "http.handler", "effect": "status_500", "count": 1});
    let (status, _) = send(&client, base, "POST", "/api/v1/chaos/faults", Some(spec)).await;
    assert_eq!(status, 201);
    // The operator's routes pass untouched while the fault is active.
    for path in ["/healthz", "/readyz", "/api/v1/chaos/faults", "/api/v1/slo"] {
        let (status, _) = send(&client, base, "GET", path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let sku = json!({"sku": "apple", "name": "Apple", "unit_price": 100});
    let (status, problem) = send(
        &client,
        base,
        "POST",
        "/api/v1/inventory/skus",
        Some(sku.clone()),
    )
    .await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["type"], "urn:annals:problem:chaos-injected");
    // The command was not handled: the same command now succeeds (the fault's one
    // injection is used up).
    let (status, _) = send(&client, base, "POST", "/api/v1/inventory/skus", Some(sku)).await;
    assert_eq!(status, 201);
    assert!(state.chaos().faults().is_empty());

    // A delay on a query: measured.
    let spec = json!({"point": "http.handler", "effect": "delay", "delay_ms": 400, "count": 1});
    let (status, _) = send(&client, base, "POST", "/api/v1/chaos/faults", Some(spec)).await;
    assert_eq!(status, 201);
    let started = Instant::now();
    let (status, _) = send(&client, base, "GET", "/api/v1/inventory/skus/apple", None).await;
    let delayed = started.elapsed();
    assert_eq!(status, 200);
    assert!(delayed >= Duration::from_millis(400), "{delayed:?}");
    let started = Instant::now();
    let (status, _) = send(&client, base, "GET", "/api/v1/inventory/skus/apple", None).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(400));

    let (_, report) = send(&client, base, "GET", "/api/v1/chaos/faults", None).await;
    let point = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|point| point["point"] == "http.handler")
        .unwrap();
    assert_eq!(point["injections"], 2);
    let metrics = common::metrics_text(&client, base).await;
    // Other tests of this binary share the process's recorder: at least these two.
    assert!(injections(&metrics, "http.handler").unwrap() >= before + 2.0);
    server.drain().await;
    state.store().close().await;
}

/// A server over the store in `dir` whose store, like the API, holds the switch `chaos`
/// (as `annals serve` gives it through `StoreConfig::chaos`).
async fn serve_with_store_chaos(
    dir: &std::path::Path,
    chaos: chaos::Chaos,
) -> (common::Serving, AppState) {
    let config = eventstore::StoreConfig {
        chaos: chaos.clone(),
        ..common::store_config()
    };
    let path = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || eventstore::EventStore::open(path, config))
        .await
        .unwrap()
        .expect("the store opens");
    let state = AppState::new(store, ApiConfig::default()).with_chaos(chaos);
    (common::Serving::start(state.clone()).await, state)
}

/// Registers the sku `apple` and restocks it `restocks` times; the positions the
/// commands answered.
async fn acknowledged_writes(client: &reqwest::Client, base: &str, restocks: usize) -> Vec<u64> {
    let mut positions = Vec::new();
    let (status, answer) = send(
        client,
        base,
        "POST",
        "/api/v1/inventory/skus",
        Some(json!({"sku": "apple", "name": "Apple", "unit_price": 100})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    positions.push(answer["position"].as_u64().unwrap());
    for _ in 0..restocks {
        let (status, answer) = send(
            client,
            base,
            "POST",
            "/api/v1/inventory/skus/apple/restock",
            Some(json!({"quantity": 1})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        positions.push(answer["position"].as_u64().unwrap());
    }
    positions
}

/// An `error` fault at `point` (store.write or store.fsync) takes the writer's real
/// failure path: the command meeting it and every one after answer 503 `store-failed`,
/// both probes fail, the operator's chaos routes still answer; and every event
/// acknowledged before is read back after the directory is reopened.
async fn store_error_is_the_real_failure(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve_with_store_chaos(dir.path(), chaos::Chaos::enabled()).await;
    let client = reqwest::Client::new();
    let base = &server.base;
    let acknowledged = acknowledged_writes(&client, base, 20).await;
    let spec = json!({"point": point, "effect": "error", "count": 1});
    let (status, _) = send(&client, base, "POST", "/api/v1/chaos/faults", Some(spec)).await;
    assert_eq!(status, 201);
    for _ in 0..2 {
        let (status, problem) = send(
            &client,
            base,
            "POST",
            "/api/v1/inventory/skus/apple/restock",
            Some(json!({"quantity": 1})),
        )
        .await;
        assert_eq!(status, 503, "{point}: {problem}");
        assert_eq!(problem["type"], "urn:annals:problem:store-failed");
    }
    let reason = state.store().failure().expect("the store failed");
    assert!(
        reason.contains(&format!("a fault injected at {point}")),
        "{reason}"
    );
    for probe in ["/healthz", "/readyz"] {
        let (status, problem) = send(&client, base, "GET", probe, None).await;
        assert_eq!(status, 503, "{probe}: {problem}");
        assert_eq!(problem["type"], "urn:annals:problem:store-failed");
    }
    let (status, report) = send(&client, base, "GET", "/api/v1/chaos/faults", None).await;
    assert_eq!(status, 200);
    let injected = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|report| report["point"] == point)
        .unwrap();
    assert_eq!(injected["injections"], 1, "{report}");
    server.drain().await;
    state.store().close().await;

    // This process may not reopen the directory (its page cache may hold what the disk
    // never got): that is the restart. A fresh process would read what the files hold: a
    // copy of them, opened here, has everything acknowledged.
    let path = dir.path().to_path_buf();
    let reopened = tokio::task::spawn_blocking(move || {
        eventstore::EventStore::open(path, common::store_config())
    })
    .await
    .unwrap();
    assert!(
        matches!(reopened, Err(eventstore::Error::RestartRequired { .. })),
        "{reopened:?}"
    );
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let store = common::open_store(copy.path()).await;
    let events = store.read_all(eventstore::Position(0), 1000).unwrap();
    let read: Vec<u64> = events.iter().map(|event| event.position.0).collect();
    for position in &acknowledged {
        assert!(
            read.contains(position),
            "{point}: {position} lost: {read:?}"
        );
    }
    store.close().await;
}

/// Copies the directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_write_error_fails_the_store_and_loses_nothing_acknowledged() {
    store_error_is_the_real_failure("store.write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fsync_error_fails_the_store_and_loses_nothing_acknowledged() {
    store_error_is_the_real_failure("store.fsync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fsync_delay_slows_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state) = serve_with_store_chaos(dir.path(), chaos::Chaos::enabled()).await;
    let client = reqwest::Client::new();
    let base = &server.base;
    acknowledged_writes(&client, base, 1).await;
    let spec = json!({"point": "store.fsync", "effect": "delay", "delay_ms": 500, "count": 1});
    let (status, _) = send(&client, base, "POST", "/api/v1/chaos/faults", Some(spec)).await;
    assert_eq!(status, 201);
    let restock = || {
        send(
            &client,
            base,
            "POST",
            "/api/v1/inventory/skus/apple/restock",
            Some(json!({"quantity": 1})),
        )
    };
    let started = Instant::now();
    let (status, _) = restock().await;
    let slowed = started.elapsed();
    assert_eq!(status, 200);
    assert!(slowed >= Duration::from_millis(500), "{slowed:?}");
    let started = Instant::now();
    let (status, _) = restock().await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(state.store().failure().is_none());
    server.drain().await;
    state.store().close().await;
}
