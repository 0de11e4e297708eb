//! The fulfilment saga end to end over HTTP, against a real listening server running
//! the saga driver: success, insufficient stock, insufficient funds, a customer cancel
//! during the saga, and the deadline (on a manual clock, while the charge is held up).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use eventstore::EventStore;
use repositories::Repositories;
use sagas::{Driver, DriverConfig, Faults, FulfilmentServices, ManualClock};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

mod common;

struct TestServer {
    base: String,
    client: reqwest::Client,
    store: EventStore,
    clock: ManualClock,
    driver: Driver,
    serving: common::Serving,
}

impl TestServer {
    async fn start(dir: &Path, faults: Faults) -> Self {
        let store = common::open_store(dir).await;
        let repositories = Repositories::new(store.clone());
        let state = AppState::sharing(store.clone(), repositories.clone(), ApiConfig::default());
        let clock = ManualClock::new(chrono::Utc::now());
        let services = FulfilmentServices::new(repositories, TIMEOUT).with_faults(faults);
        let driver = Driver::start(
            store.clone(),
            Arc::new(services),
            Arc::new(clock.clone()),
            DriverConfig::default(),
        )
        .unwrap();
        let serving = common::Serving::start(state).await;
        TestServer {
            base: serving.base.clone(),
            client: reqwest::Client::new(),
            store,
            clock,
            driver,
            serving,
        }
    }

    async fn stop(self) {
        self.serving.drain().await;
        self.driver.stop().await;
        self.store.close().await;
    }

    async fn command(&self, path: &str, body: Value, status: u16) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn sku(&self, sku: &str, unit_price: u64, quantity: u64) {
        let body = json!({"sku": sku, "name": "Thing", "unit_price": unit_price});
        self.command("/api/v1/inventory/skus", body, 201).await;
        let path = format!("/api/v1/inventory/skus/{sku}/restock");
        self.command(&path, json!({ "quantity": quantity }), 200)
            .await;
    }

    async fn account(&self, customer: &str, balance: u64) {
        let body = json!({ "customer_id": customer });
        self.command("/api/v1/payments/accounts", body, 201).await;
        let path = format!("/api/v1/payments/accounts/{customer}/deposits");
        self.command(&path, json!({ "amount": balance }), 200).await;
    }

    async fn order(&self, customer: &str, lines: &[(&str, u64)]) -> String {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
            .collect();
        let placed = self
            .command(
                "/api/v1/orders",
                json!({"customer_id": customer, "lines": lines}),
                201,
            )
            .await;
        placed["order_id"].as_str().unwrap().to_owned()
    }

    /// The saga of `order`, once `done` holds for it (polling, up to 20 s).
    async fn saga_when(&self, order: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/sagas/fulfilment/{order}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(&path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the saga of {order} never got {what}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finished(&self, order: &str) -> Value {
        self.saga_when(order, "finished", |saga| saga["finished"] == true)
            .await
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

fn phase(saga: &Value) -> &str {
    saga["state"]["phase"].as_str().unwrap()
}

fn step_types(saga: &Value) -> Vec<String> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_stock_and_funds_is_confirmed_at_the_reserved_prices() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Faults::default()).await;
    server.sku("apple", 120, 10).await;
    server.sku("pear", 75, 5).await;
    server.account("alice", 1_000).await;
    let order = server.order("alice", &[("apple", 2), ("pear", 1)]).await;

    let saga = server.finished(&order).await;
    assert_eq!(phase(&saga), "confirmed", "{saga}");
    assert!(saga["pending_commands"].as_array().unwrap().is_empty());
    assert!(saga["pending_deadlines"].as_array().unwrap().is_empty());
    // Started, two reservations, the charge, the confirmation, two shipped reservations.
    assert_eq!(step_types(&saga).len(), 7, "{saga}");
    assert_eq!(step_types(&saga)[0], "FulfilmentStarted");

    let placed = server.json(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(placed["status"], "confirmed");
    assert_eq!(placed["total"], 315);
    let account = server.json("/api/v1/payments/accounts/alice").await;
    assert_eq!(account["balance"], 1_000 - 315);
    let apple = server.json("/api/v1/inventory/skus/apple").await;
    assert_eq!(
        (&apple["on_hand"], &apple["reserved"], &apple["available"]),
        (&json!(8), &json!(0), &json!(8))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_stock_releases_what_was_reserved_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Faults::default()).await;
    server.sku("apple", 120, 10).await;
    server.sku("pear", 75, 1).await;
    server.account("alice", 1_000).await;
    let order = server.order("alice", &[("apple", 2), ("pear", 3)]).await;

    let saga = server.finished(&order).await;
    assert_eq!(phase(&saga), "cancelled", "{saga}");
    let placed = server.json(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(placed["status"], "cancelled");
    assert_eq!(
        placed["cancel_reason"],
        "sku pear: insufficient stock: 3 requested, 1 available"
    );
    for (sku, stock) in [("apple", 10), ("pear", 1)] {
        let level = server.json(&format!("/api/v1/inventory/skus/{sku}")).await;
        assert_eq!(level["available"], stock, "{sku}: {level}");
        assert_eq!(level["reserved"], 0, "{sku}: {level}");
    }
    let account = server.json("/api/v1/payments/accounts/alice").await;
    assert_eq!(account["balance"], 1_000, "never charged");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_or_no_account_releases_everything_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Faults::default()).await;
    server.sku("apple", 120, 10).await;
    server.account("bob", 100).await;
    let poor = server.order("bob", &[("apple", 2)]).await;
    let nobody = server.order("nobody", &[("apple", 1)]).await;

    let saga = server.finished(&poor).await;
    assert_eq!(phase(&saga), "cancelled", "{saga}");
    let placed = server.json(&format!("/api/v1/orders/{poor}")).await;
    let reason = placed["cancel_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("payment refused: insufficient funds"),
        "{reason}"
    );
    let saga = server.finished(&nobody).await;
    assert_eq!(phase(&saga), "cancelled", "{saga}");
    let placed = server.json(&format!("/api/v1/orders/{nobody}")).await;
    assert!(
        placed["cancel_reason"]
            .as_str()
            .unwrap()
            .starts_with("payment refused:"),
        "{placed}"
    );
    let apple = server.json("/api/v1/inventory/skus/apple").await;
    assert_eq!(
        (&apple["available"], &apple["reserved"]),
        (&json!(10), &json!(0))
    );
    let account = server.json("/api/v1/payments/accounts/bob").await;
    assert_eq!(account["balance"], 100);
    server.stop().await;
}

/// Every charge is held up for a while, so the saga sits in `charging`.
fn slow_charges() -> Faults {
    Faults {
        charge_delay: Duration::from_millis(800),
        charge_delay_percent: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cancel_during_the_saga_releases_and_refunds_the_late_charge() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), slow_charges()).await;
    server.sku("apple", 120, 10).await;
    server.account("alice", 1_000).await;
    let order = server.order("alice", &[("apple", 2)]).await;
    server
        .saga_when(&order, "charging", |saga| phase(saga) == "charging")
        .await;

    server
        .command(
            &format!("/api/v1/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
            200,
        )
        .await;
    let saga = server.finished(&order).await;
    assert_eq!(phase(&saga), "cancelled", "{saga}");
    assert_eq!(
        saga["state"]["cancel_reason"],
        "cancelled by the customer: changed my mind"
    );
    let placed = server.json(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(placed["status"], "cancelled");
    assert_eq!(placed["cancel_reason"], "changed my mind");
    // The charge went through after the cancel: it was refunded.
    let account = server.json("/api/v1/payments/accounts/alice").await;
    assert_eq!(account["balance"], 1_000);
    assert_eq!(account["charges"][&order]["refunded"], true, "{account}");
    let apple = server.json("/api/v1/inventory/skus/apple").await;
    assert_eq!(
        (&apple["available"], &apple["reserved"]),
        (&json!(10), &json!(0))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_passing_during_a_pending_charge_cancels_and_refunds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), slow_charges()).await;
    server.sku("apple", 120, 10).await;
    server.account("alice", 1_000).await;
    let order = server.order("alice", &[("apple", 2)]).await;
    let saga = server
        .saga_when(&order, "charging", |saga| phase(saga) == "charging")
        .await;
    assert_eq!(saga["pending_deadlines"][0]["key"], "fulfilment", "{saga}");

    // Not yet: a second before the deadline nothing happens.
    server.clock.advance(chrono::Duration::seconds(29));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, saga) = server
        .get(&format!("/api/v1/sagas/fulfilment/{order}"))
        .await;
    assert_eq!(phase(&saga), "charging", "{saga}");
    server.clock.advance(chrono::Duration::seconds(2));

    let saga = server.finished(&order).await;
    assert_eq!(phase(&saga), "cancelled", "{saga}");
    let fired = step_types(&saga)
        .iter()
        .filter(|t| *t == "FulfilmentDeadlinePassed")
        .count();
    assert_eq!(fired, 1, "the deadline fires once: {saga}");
    let placed = server.json(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(placed["status"], "cancelled");
    assert_eq!(
        placed["cancel_reason"],
        "the order was not fulfilled before its deadline"
    );
    let account = server.json("/api/v1/payments/accounts/alice").await;
    assert_eq!(account["balance"], 1_000, "{account}");
    assert_eq!(account["charges"][&order]["refunded"], true, "{account}");
    let apple = server.json("/api/v1/inventory/skus/apple").await;
    assert_eq!(
        (&apple["available"], &apple["reserved"]),
        (&json!(10), &json!(0))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_a_saga_is_a_404_and_a_bad_id_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Faults::default()).await;
    let (status, body) = server
        .get("/api/v1/sagas/fulfilment/01a2088c-5fbe-70d5-8f3d-b9400544c67e")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("unknown-saga"),
        "{body}"
    );
    let (status, _) = server.get("/api/v1/sagas/fulfilment/not-a-uuid").await;
    assert_eq!(status, 400);
    server.stop().await;
}
