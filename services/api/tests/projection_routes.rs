//! The read-model routes against a real listening server running the projections:
//! read-your-writes with `min_position`, paging, status and rebuilds, and the 503 of a
//! wait that runs out.

use std::path::Path;
use std::time::Duration;

use api::{ApiConfig, AppState};
use serde_json::{Value, json};

mod common;

/// A server on a free loopback port over a store in `dir`, with the read models.
struct TestServer {
    base: String,
    client: reqwest::Client,
    server: common::ReadSideServing,
}

impl TestServer {
    async fn start(dir: &Path, config: ApiConfig) -> Self {
        let server = common::ReadSideServing::start(dir, config, |state| state).await;
        TestServer {
            base: server.base.clone(),
            client: reqwest::Client::new(),
            server,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn command(&self, path: &str, body: Value, status: u16) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Registers `sku` with stock; returns the position of the last event.
    async fn sku(&self, sku: &str, quantity: u64) -> u64 {
        self.command(
            "/api/v1/inventory/skus",
            json!({"sku": sku, "name": "Thing", "unit_price": 120}),
            201,
        )
        .await;
        let body = self
            .command(
                &format!("/api/v1/inventory/skus/{sku}/restock"),
                json!({"quantity": quantity}),
                200,
            )
            .await;
        body["position"].as_u64().unwrap()
    }

    async fn account(&self, customer: &str, balance: u64) {
        self.command(
            "/api/v1/payments/accounts",
            json!({"customer_id": customer}),
            201,
        )
        .await;
        self.command(
            &format!("/api/v1/payments/accounts/{customer}/deposits"),
            json!({"amount": balance}),
            200,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_their_writes_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ApiConfig::default()).await;
    for sku in ["apple", "banana", "cherry"] {
        server.sku(sku, 10).await;
    }
    server.account("alice", 10_000).await;
    let placed = server
        .command(
            "/api/v1/orders",
            json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 2}]}),
            201,
        )
        .await;
    let position = placed["position"].as_u64().unwrap();
    let order_id = placed["order_id"].as_str().unwrap();

    // The query waits for the order's event, by query parameter...
    let orders = server
        .get_json(&format!(
            "/api/v1/customers/alice/orders?min_position={position}"
        ))
        .await;
    assert_eq!(orders["customer_id"], "alice");
    assert_eq!(orders["total_orders"], 1);
    assert_eq!(orders["orders"][0]["order_id"], order_id);
    assert_eq!(orders["orders"][0]["lines"][0]["sku"], "apple");

    // ... or by header.
    let second = server
        .command(
            "/api/v1/orders",
            json!({"customer_id": "alice", "lines": [{"sku": "banana", "quantity": 1}]}),
            201,
        )
        .await;
    let response = server
        .client
        .get(server.url("/api/v1/customers/alice/orders?limit=1&after=0"))
        .header("Annals-Min-Position", second["position"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["total_orders"], 2);
    assert_eq!(page["orders"][0]["order_id"], second["order_id"]);
    let last = second["position"].as_u64().unwrap();

    // Skus, two to a page.
    let first = server
        .get_json(&format!(
            "/api/v1/inventory/skus?limit=2&min_position={last}"
        ))
        .await;
    let names: Vec<&str> = first["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sku| sku["sku"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apple", "banana"]);
    assert_eq!(first["skus"][0]["on_hand"], 10);
    assert_eq!(first["next_after"], "banana");
    let rest = server
        .get_json(&format!(
            "/api/v1/inventory/skus?limit=2&after=banana&min_position={last}"
        ))
        .await;
    assert_eq!(rest["skus"][0]["sku"], "cherry");
    assert!(rest["next_after"].is_null());

    // The sales report answers (nothing confirmed yet).
    let sales = server
        .get_json(&format!("/api/v1/reports/sales?min_position={last}"))
        .await;
    assert!(sales["totals"].is_object(), "{sales}");
    assert!(sales["skus"].is_array(), "{sales}");

    // Bad queries are 400 problems.
    for path in [
        "/api/v1/inventory/skus?limit=0",
        "/api/v1/inventory/skus?min_position=x",
        "/api/v1/customers/alice/orders?after=x",
        "/api/v1/reports/sales?bogus=1",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status().as_u16(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_are_listed_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ApiConfig::default()).await;
    let position = server.sku("apple", 5).await;
    server
        .get_json(&format!("/api/v1/inventory/skus?min_position={position}"))
        .await;

    let list = server.get_json("/api/v1/projections").await;
    let projections = list["projections"].as_array().unwrap();
    let names: Vec<&str> = projections
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // The six every server keeps; `correlations` only with `--correlations`.
    for name in [
        "orders",
        "inventory",
        "accounts",
        "sales",
        "customers",
        "personal_data",
    ] {
        assert!(names.contains(&name), "{list}");
    }
    assert!(!names.contains(&"correlations"), "{list}");
    let inventory = projections
        .iter()
        .find(|p| p["name"] == "inventory")
        .unwrap();
    assert!(inventory["checkpoint"].as_u64().unwrap() > position);
    assert!(inventory["lag"].is_u64());
    assert!(inventory["state"].is_string());
    let build_before = inventory["active_build"].as_u64().unwrap();

    let response = server
        .client
        .post(server.url("/api/v1/projections/inventory/rebuild"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let started: Value = response.json().await.unwrap();
    let build = started["build"].as_u64().unwrap();
    assert_ne!(build, build_before);

    // The new build takes over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = server.get_json("/api/v1/projections").await;
        let inventory = list["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "inventory")
            .unwrap()
            .clone();
        if inventory["active_build"].as_u64() == Some(build) {
            assert_eq!(inventory["active_version"], started["version"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild never took over: {inventory}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rebuilt model answers.
    let skus = server.get_json("/api/v1/inventory/skus").await;
    assert_eq!(skus["skus"][0]["sku"], "apple");
    assert_eq!(skus["skus"][0]["on_hand"], 5);

    let response = server
        .client
        .post(server.url("/api/v1/projections/nope/rebuild"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_not_applied_in_time_is_a_503_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        projection_wait_timeout: Duration::from_millis(200),
        ..ApiConfig::default()
    };
    let server = TestServer::start(dir.path(), config).await;
    server.sku("apple", 1).await;
    for path in [
        "/api/v1/inventory/skus?min_position=1000000",
        "/api/v1/reports/sales?min_position=1000000",
        "/api/v1/customers/alice/orders?min_position=1000000",
        // The reads of one entity from the log wait for the log (a node's copy of it).
        "/api/v1/inventory/skus/apple?min_position=1000000",
        "/api/v1/orders/0193a4e2-7c1d-7b3e-9f00-000000000001?min_position=1000000",
        "/api/v1/payments/accounts/alice?min_position=1000000",
        "/api/v1/sagas/fulfilment/0193a4e2-7c1d-7b3e-9f00-000000000001?min_position=1000000",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status().as_u16(), 503, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let header: u64 = response.headers()["annals-checkpoint"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["type"], "urn:annals:problem:projection-lagging");
        assert_eq!(problem["checkpoint"].as_u64(), Some(header));
        assert!(header < 1_000_000);
    }
    // A position the log holds: at once.
    let sku = server
        .get("/api/v1/inventory/skus/apple?min_position=0")
        .await;
    assert_eq!(sku.status().as_u16(), 200);
    let header = server
        .client
        .get(server.url("/api/v1/inventory/skus/apple"))
        .header("annals-min-position", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(header.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_projections_the_routes_are_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let serving = common::Serving::start(AppState::new(store.clone(), ApiConfig::default())).await;
    let client = reqwest::Client::new();
    for path in ["/api/v1/projections", "/api/v1/inventory/skus"] {
        let response = client
            .get(format!("{}{path}", serving.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{path}");
    }
    serving.drain().await;
    store.close().await;
}
