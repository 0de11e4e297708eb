//! Card payments through a chain of two payment provider simulators (real
//! `annals-psp-sim` processes) and a real `annals serve --psp-url A --psp-url B`:
//!
//! - the primary failing: its breaker opens and charges go to the fallback; orders
//!   confirm; a declined card cancels its order;
//! - the primary recovering: its breaker half-opens and closes, charges go to it again;
//! - the primary timing out after it captured: the retry (same idempotency token) gets the
//!   first capture back, nothing is charged twice;
//! - the primary slow: the orders whose outcome there is unknown stay with it (never
//!   charged at the fallback too), the others go to the fallback; all confirm once it
//!   recovers;
//! - both failing: the saga's deadline cancels the order and releases its stock; a charge
//!   that gets through late is given back;
//!
//! and across it all, the simulators' ledgers hold at most one capture per order, exactly
//! one for each confirmed order. `/api/v1/dependencies` and `/metrics` show the breakers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{AnnalsServer, PATIENCE, PspSimulator};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &AnnalsServer) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.url(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A sku `apple` at 250 with 100 units.
    async fn stock_apples(&self) {
        self.post(
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 250}),
        )
        .await;
        self.post(
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 100}),
        )
        .await;
    }

    async fn register_card(&self, customer: &str, card: &str) {
        self.post(
            "/api/v1/payments/cards",
            json!({"customer_id": customer, "card": card}),
        )
        .await;
    }

    /// Places an order of two apples (500) and returns its id.
    async fn place(&self, customer: &str) -> String {
        let placed = self
            .post(
                "/api/v1/orders",
                json!({"customer_id": customer, "lines": [{"sku": "apple", "quantity": 2}]}),
            )
            .await;
        placed["order_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the order is no longer pending: its view.
    async fn settled(&self, order_id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let order = self.get(&format!("/api/v1/orders/{order_id}")).await;
            if order["status"] != "pending" {
                return order;
            }
            assert!(Instant::now() < deadline, "order {order_id} stayed pending");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn confirmed(&self, order_id: &str) {
        let order = self.settled(order_id).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        assert_eq!(order["total"], 500, "{order}");
    }

    /// The provider at `url` in `/api/v1/dependencies`.
    async fn dependency(&self, url: &str) -> Value {
        let report = self.get("/api/v1/dependencies").await;
        report["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|dependency| dependency["name"] == url)
            .unwrap_or_else(|| panic!("{url} is not in {report}"))
            .clone()
    }
}

/// Sets a simulator's behaviour.
async fn behave(simulator: &PspSimulator, behaviour: Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_sim/behaviour", simulator.url()))
        .json(&behaviour)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{behaviour}");
}

/// A simulator's ledger: `{"intents": [...], "requests": n}`.
async fn ledger(simulator: &PspSimulator) -> Value {
    reqwest::get(format!("{}/_sim/ledger", simulator.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The intents of `order_id` in a ledger.
fn intents_of(ledger: &Value, order_id: &str) -> Vec<Value> {
    ledger["intents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|intent| intent["reference"] == order_id)
        .cloned()
        .collect()
}

/// Checks that `order_id` was captured exactly `expected` times over both ledgers, and
/// returns the captures.
async fn captures(simulators: [&PspSimulator; 2], order_id: &str, expected: usize) -> Vec<Value> {
    let mut all = Vec::new();
    for simulator in simulators {
        all.extend(intents_of(&ledger(simulator).await, order_id));
    }
    assert_eq!(
        all.len(),
        expected,
        "order {order_id}: {expected} capture(s) expected over both providers, found {all:?}"
    );
    for intent in &all {
        assert_eq!(intent["amount"], "5.00", "{intent}");
        assert_eq!(intent["currency"], "EUR", "{intent}");
        assert_eq!(
            intent["tokens"][0],
            format!("annals-charge-{order_id}"),
            "{intent}"
        );
    }
    all
}

/// `annals serve --psp-url A --psp-url B` with short timeouts and a quick breaker.
fn serve(primary: &PspSimulator, fallback: &PspSimulator, saga_timeout: &str) -> AnnalsServer {
    AnnalsServer::start(&[
        "--psp-url",
        primary.url(),
        "--psp-url",
        fallback.url(),
        "--psp-timeout-ms",
        "300",
        "--psp-retries",
        "1",
        "--psp-breaker-failures",
        "2",
        "--psp-breaker-cool-down-ms",
        "1000",
        "--saga-timeout",
        saga_timeout,
    ])
}

/// Waits until the breaker of `url` lets a probe through (its next probe has passed).
async fn cool_down(api: &Api, url: &str) {
    let dependency = api.dependency(url).await;
    if let Some(next_probe) = dependency["next_probe"].as_str() {
        let at = chrono::DateTime::parse_from_rfc3339(next_probe).unwrap();
        let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_fall_through_to_the_fallback_and_never_twice() {
    let primary = PspSimulator::start();
    let fallback = PspSimulator::start();
    let both = [&primary, &fallback];
    let server = tokio::task::block_in_place(|| serve(&primary, &fallback, "30"));
    let api = Api::new(&server);
    api.stock_apples().await;
    api.register_card("alice", "tok_alice").await;

    // Both providers healthy: the primary takes the charge.
    let first = api.place("alice").await;
    api.confirmed(&first).await;
    assert_eq!(captures(both, &first, 1).await[0]["status"], "captured");
    assert_eq!(intents_of(&ledger(&primary).await, &first).len(), 1);

    // A declined card cancels its order, charged nowhere.
    api.register_card("dave", "tok_decline_dave").await;
    let declined = api.place("dave").await;
    let order = api.settled(&declined).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert!(
        order["cancel_reason"]
            .as_str()
            .unwrap()
            .contains("the card was declined"),
        "{order}"
    );
    captures(both, &declined, 0).await;

    // The primary failing: two charges fail there and go to the fallback; the breaker
    // opens; the next charge skips the primary.
    behave(&primary, json!({"error_rate": 1.0})).await;
    let mut fallen = Vec::new();
    for _ in 0..3 {
        let order_id = api.place("alice").await;
        api.confirmed(&order_id).await;
        fallen.push(order_id);
    }
    let requests_while_open = ledger(&primary).await["requests"].as_u64().unwrap();
    for order_id in &fallen {
        captures(both, order_id, 1).await;
        assert_eq!(intents_of(&ledger(&fallback).await, order_id).len(), 1);
    }
    let dependency = api.dependency(primary.url()).await;
    assert_eq!(dependency["state"], "open", "{dependency}");
    assert_eq!(dependency["rank"], 0, "{dependency}");
    assert!(
        dependency["failures_total"].as_u64().unwrap() >= 2,
        "{dependency}"
    );
    assert!(
        dependency["last_error"]
            .as_str()
            .unwrap()
            .contains("processor_unavailable"),
        "{dependency}"
    );
    assert!(dependency["next_probe"].is_string(), "{dependency}");
    assert_eq!(api.dependency(fallback.url()).await["state"], "closed");
    let metrics = api.text("/metrics").await;
    let open = format!(
        "annals_dependency_breaker_state{{dependency=\"{}\",state=\"open\"}} 1",
        primary.url()
    );
    assert!(metrics.contains(&open), "{open} not in /metrics");
    // The third charge did not ask the primary: its breaker was open (4 requests: two
    // charges, each tried twice).
    assert_eq!(
        requests_while_open,
        4 + 2,
        "the primary was asked while open"
    );

    // The primary recovering: after the cool-down one probe goes through, succeeds and
    // closes the breaker; charges go to the primary again.
    behave(&primary, json!({})).await;
    cool_down(&api, primary.url()).await;
    let recovered = api.place("alice").await;
    api.confirmed(&recovered).await;
    assert_eq!(intents_of(&ledger(&primary).await, &recovered).len(), 1);
    let dependency = api.dependency(primary.url()).await;
    assert_eq!(dependency["state"], "closed", "{dependency}");
    assert!(
        dependency["transitions"]["open"].as_u64().unwrap() >= 1,
        "{dependency}"
    );
    assert!(
        dependency["transitions"]["half_open"].as_u64().unwrap() >= 1,
        "{dependency}"
    );
    assert!(
        dependency["transitions"]["closed"].as_u64().unwrap() >= 1,
        "{dependency}"
    );
    let metrics = api.text("/metrics").await;
    let half_opened = format!(
        "annals_dependency_breaker_transitions_total{{dependency=\"{}\",to=\"half_open\"}}",
        primary.url()
    );
    assert!(
        metrics.contains(&half_opened),
        "{half_opened} not in /metrics"
    );

    // The primary captures, then its answer is lost (it hangs past the timeout): the retry
    // with the same token gets the first capture back. One capture.
    behave(&primary, json!({"timeout_rate": 1.0, "hang_ms": 1500})).await;
    let before = ledger(&primary).await["requests"].as_u64().unwrap();
    let timed_out = api.place("alice").await;
    api.confirmed(&timed_out).await;
    let after = ledger(&primary).await["requests"].as_u64().unwrap();
    assert!(
        after >= before + 2,
        "the charge was retried ({before} -> {after})"
    );
    assert_eq!(captures(both, &timed_out, 1).await[0]["status"], "captured");
    assert_eq!(intents_of(&ledger(&primary).await, &timed_out).len(), 1);

    // The primary slow (it answers after the timeout, processing nothing): the charges
    // whose outcome there is unknown stay with it, the breaker opens, and later charges
    // go to the fallback. Once the primary is quick again, the waiting ones are taken
    // there. Every order confirms, each charged once.
    behave(&primary, json!({"latency_ms": 1000})).await;
    let slow = [api.place("alice").await, api.place("alice").await];
    let deadline = Instant::now() + PATIENCE;
    while api.dependency(primary.url()).await["state"] != "open" {
        assert!(
            Instant::now() < deadline,
            "the slow primary's breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let around = api.place("alice").await;
    api.confirmed(&around).await;
    assert_eq!(intents_of(&ledger(&fallback).await, &around).len(), 1);
    behave(&primary, json!({})).await;
    for order_id in &slow {
        api.confirmed(order_id).await;
        captures(both, order_id, 1).await;
        assert_eq!(intents_of(&ledger(&primary).await, order_id).len(), 1);
    }
    assert_eq!(api.dependency(primary.url()).await["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_providers_failing_the_deadline_cancels_and_compensates() {
    let primary = PspSimulator::start_with(r#"{"error_rate": 1.0}"#);
    let fallback = PspSimulator::start_with(r#"{"error_rate": 1.0}"#);
    let both = [&primary, &fallback];
    let server = tokio::task::block_in_place(|| serve(&primary, &fallback, "2"));
    let api = Api::new(&server);
    api.stock_apples().await;
    api.register_card("carol", "tok_carol").await;
    // A prepaid customer on the same server pays from its account as before.
    api.post("/api/v1/payments/accounts", json!({"customer_id": "bob"}))
        .await;
    api.post(
        "/api/v1/payments/accounts/bob/deposits",
        json!({"amount": 1000}),
    )
    .await;
    let prepaid = api.place("bob").await;
    api.confirmed(&prepaid).await;
    captures(both, &prepaid, 0).await;

    let order_id = api.place("carol").await;
    let order = api.settled(&order_id).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    let sku = api.get("/api/v1/inventory/skus/apple").await;
    assert_eq!(sku["reserved"], 0, "the order's stock was released: {sku}");
    assert_eq!(sku["available"], 98, "{sku}");
    captures(both, &order_id, 0).await;
    for simulator in both {
        let dependency = api.dependency(simulator.url()).await;
        assert_eq!(dependency["state"], "open", "{dependency}");
    }

    // The providers come back: the charge still asked of them gets through late, and
    // the saga gives it back. The order stays cancelled, nothing is kept.
    behave(&primary, json!({})).await;
    behave(&fallback, json!({})).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let saga = api
            .get(&format!("/api/v1/sagas/fulfilment/{order_id}"))
            .await;
        if saga["finished"] == true {
            assert_eq!(saga["state"]["phase"], "cancelled", "{saga}");
            break;
        }
        assert!(Instant::now() < deadline, "the saga never finished: {saga}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = captures(both, &order_id, 1).await;
    assert_eq!(late[0]["status"], "reversed", "{late:?}");
    let order = api.get(&format!("/api/v1/orders/{order_id}")).await;
    assert_eq!(order["status"], "cancelled", "{order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_psp_charge_open_the_primary_breaker_and_the_fallback_charges() {
    let primary = PspSimulator::start();
    let fallback = PspSimulator::start();
    let server = AnnalsServer::start(&[
        "--chaos",
        "--psp-url",
        primary.url(),
        "--psp-url",
        fallback.url(),
        "--psp-retries",
        "0",
        "--psp-breaker-failures",
        "2",
        "--psp-breaker-cool-down-ms",
        "60000",
    ]);
    let api = Api::new(&server);
    api.stock_apples().await;
    api.register_card("c-1", "tok_visa").await;
    // Three injected failures, one per charge attempt at any provider: the first order's
    // attempts at the primary and the fallback (no provider could take it: the saga asks
    // again), then its second attempt at the primary, whose breaker opens (2 in a row)
    // before the provider was ever called; the fallback then takes it.
    api.post(
        "/api/v1/chaos/faults",
        json!({"point": "psp.charge", "effect": "error", "count": 3}),
    )
    .await;
    let first = api.place("c-1").await;
    api.confirmed(&first).await;
    let second = api.place("c-1").await;
    api.confirmed(&second).await;
    assert_eq!(api.dependency(primary.url()).await["state"], "open");
    assert_eq!(
        ledger(&primary).await["requests"],
        0,
        "an injected failure sends nothing to the provider"
    );
    captures([&primary, &fallback], &first, 1).await;
    captures([&primary, &fallback], &second, 1).await;
    let faults = api.get("/api/v1/chaos/faults").await;
    let point = faults["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|point| point["point"] == "psp.charge")
        .unwrap_or_else(|| panic!("no psp.charge in {faults}"))
        .clone();
    assert_eq!(point["injections"], 3, "{faults}");
}
