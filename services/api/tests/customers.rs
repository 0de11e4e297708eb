//! Personal data over a real listening server: a customer's profile sealed under its own
//! key, read back decrypted, every personal field found by the access endpoint, the
//! erasure (the keys destroyed, every view showing null and `erased`, log reads marking
//! the ciphertext `"erased": true`, a second erasure answering the first), a tampered
//! value reported and not shown, a server without a master key, the policy, and the
//! erasure enforcer catching up on an erasure whose keys were never destroyed.

use std::path::Path;
use std::time::Duration;

use api::ApiConfig;
use eventstore::{CommandOptions, EventId, Repository};
use privacy::{Binding, KeyStore};
use security::Role;
use security::rate_limit::RateLimits;
use serde_json::{Value, json};

mod common;

const NAME: &str = "Alice Liddell";
const EMAIL: &str = "alice@example.com";
const ADDRESS: &str = "1 Rabbit Hole, Oxford";

/// A secured platform with a key store.
struct Server {
    platform: common::PlatformServing,
    key_store: KeyStore,
    client: reqwest::Client,
    admin: String,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let security = common::security(dir, RateLimits::default()).await;
        let key_store = common::key_store(&dir.join("data"));
        let held = key_store.clone();
        let platform =
            common::PlatformServing::start(dir, false, ApiConfig::default(), move |state| {
                state.with_security(security).with_key_store(held)
            })
            .await;
        Server {
            platform,
            key_store,
            client: reqwest::Client::new(),
            admin: common::token("root", &[Role::Admin], None),
        }
    }

    /// `method path` with `body` as `token`: the status and the JSON answer.
    async fn send_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.platform.base),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(&self.admin.clone(), method, path, body).await
    }

    async fn register(&self, customer_id: &str) -> Value {
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/customers",
                Some(
                    json!({"customer_id": customer_id, "name": NAME, "email": EMAIL,
                            "address": ADDRESS}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Places an order of `customer_id` (with `shipping_address`); its id.
    async fn place_order(&self, customer_id: &str, shipping_address: Option<&str>) -> String {
        let mut body =
            json!({"customer_id": customer_id, "lines": [{"sku": "apple", "quantity": 1}]});
        if let Some(address) = shipping_address {
            body["shipping_address"] = json!(address);
        }
        let (status, placed) = self.send("POST", "/api/v1/orders", Some(body)).await;
        assert_eq!(status, 201, "{placed}");
        assert!(!placed.to_string().contains("Lane"), "{placed}");
        placed["order_id"].as_str().unwrap().to_owned()
    }

    async fn stop(self) {
        self.platform.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_sealed_read_back_and_erased_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;

    // Registered: the answer is the command's, with no personal data in it.
    let accepted = server.register("alice").await;
    assert_eq!(accepted["stream"], "customer-alice");
    assert_eq!(accepted["version"], 0);
    assert!(!accepted.to_string().contains("Alice"), "{accepted}");
    let (status, problem) = server
        .send(
            "POST",
            "/api/v1/customers",
            Some(json!({"customer_id": "alice", "name": "Other", "email": "o@x", "address": "A"})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:annals:problem:customer-already-registered"
    );

    // Bad fields: 422 before anything is sealed or written.
    for (body, slug) in [
        (
            json!({"customer_id": "bob", "name": " ", "email": "b@x", "address": "A"}),
            "blank-field",
        ),
        (
            json!({"customer_id": "bob", "name": "Bob", "email": "bob.example.com", "address": "A"}),
            "invalid-email",
        ),
        (
            json!({"customer_id": "bob", "name": "x".repeat(1025), "email": "b@x", "address": "A"}),
            "field-too-long",
        ),
        (
            json!({"customer_id": "bob", "name": "Bob", "email": "b@x", "address": "\t"}),
            "blank-field",
        ),
    ] {
        let (status, problem) = server
            .send("POST", "/api/v1/customers", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["type"], format!("urn:annals:problem:{slug}"));
    }
    assert!(
        server.key_store.keys_of("bob").is_empty(),
        "no key for a refused registration"
    );

    // The profile, decrypted.
    let (status, profile) = server.send("GET", "/api/v1/customers/alice", None).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile,
        json!({"customer_id": "alice", "name": NAME, "email": EMAIL, "address": ADDRESS,
               "erased": false, "erased_at": null})
    );
    let (status, _) = server.send("GET", "/api/v1/customers/nobody", None).await;
    assert_eq!(status, 404);

    // Orders: a shipping address given, or the profile's by default, sealed for the
    // order's own event; none for a customer without a profile.
    let given = server
        .place_order("alice", Some("2 Looking-Glass Lane"))
        .await;
    let defaulted = server.place_order("alice", None).await;
    let without = server.place_order("dodo", None).await;
    for (order_id, address) in [
        (&given, json!("2 Looking-Glass Lane")),
        (&defaulted, json!(ADDRESS)),
        (&without, Value::Null),
    ] {
        let (status, order) = server
            .send("GET", &format!("/api/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["shipping_address"], address, "{order}");
        assert_eq!(order["erased"], false, "{order}");
    }
    let (status, problem) = server
        .send(
            "POST",
            "/api/v1/orders",
            Some(
                json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 1}],
                        "shipping_address": " "}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (_, order_stream) = server
        .send("GET", &format!("/api/v1/streams/order-{defaulted}"), None)
        .await;
    let sealed = &order_stream["events"][0]["payload"]["shipping_address"];
    assert!(sealed["ciphertext"].is_string(), "{order_stream}");
    assert!(
        !order_stream.to_string().contains("Rabbit"),
        "{order_stream}"
    );

    // The log holds ciphertext only.
    let (status, stream) = server
        .send("GET", "/api/v1/streams/customer-alice", None)
        .await;
    assert_eq!(status, 200, "{stream}");
    let text = stream.to_string();
    for plaintext in [NAME, EMAIL, ADDRESS] {
        assert!(!text.contains(plaintext), "{plaintext} in {text}");
    }
    let name = &stream["events"][0]["payload"]["name"];
    assert!(name["ciphertext"].is_string(), "{stream}");
    assert!(name.get("erased").is_none(), "{stream}");

    // Erasure: a reason is needed.
    let (status, problem) = server
        .send(
            "DELETE",
            "/api/v1/customers/alice/personal-data",
            Some(json!({"reason": "  "})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = server
        .send(
            "DELETE",
            "/api/v1/customers/nobody/personal-data",
            Some(json!({"reason": "asked"})),
        )
        .await;
    assert_eq!(status, 404);
    let key = server.key_store.active_key("alice").expect("alice's key");
    let (status, erasure) = server
        .send(
            "DELETE",
            "/api/v1/customers/alice/personal-data",
            Some(json!({"reason": "the customer asked (ticket 1)"})),
        )
        .await;
    assert_eq!(status, 200, "{erasure}");
    assert_eq!(erasure["customer_id"], "alice");
    assert_eq!(erasure["stream"], "customer-alice");
    assert_eq!(erasure["version"], 1);
    assert_eq!(erasure["destroyed_keys"], json!([key.to_string()]));
    assert!(erasure["erased_at"].is_string());
    assert!(
        server.key_store.destroyed_at(key).is_some(),
        "the key is destroyed"
    );

    // Every view: null and erased.
    let (status, profile) = server.send("GET", "/api/v1/customers/alice", None).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["name"], Value::Null);
    assert_eq!(profile["email"], Value::Null);
    assert_eq!(profile["address"], Value::Null);
    assert_eq!(profile["erased"], true);
    assert_eq!(profile["erased_at"], erasure["erased_at"]);
    let (status, access) = server
        .send("GET", "/api/v1/customers/alice/personal-data", None)
        .await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(access["fields"], json!([]));
    assert_eq!(access["erased"], true);
    for order_id in [&given, &defaulted] {
        let (_, order) = server
            .send("GET", &format!("/api/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(order["shipping_address"], Value::Null, "{order}");
        assert_eq!(order["erased"], true, "{order}");
    }
    let (_, order_stream) = server
        .send("GET", &format!("/api/v1/streams/order-{given}"), None)
        .await;
    assert_eq!(
        order_stream["events"][0]["payload"]["shipping_address"]["erased"], true,
        "{order_stream}"
    );

    // Log reads: the ciphertext, marked erased, never opened.
    let (_, stream) = server
        .send("GET", "/api/v1/streams/customer-alice", None)
        .await;
    for field in ["name", "email", "address"] {
        let value = &stream["events"][0]["payload"][field];
        assert_eq!(value["erased"], true, "{field}: {stream}");
        assert!(value["ciphertext"].is_string(), "{stream}");
    }
    let (_, state) = server
        .send("GET", "/api/v1/streams/customer-alice/state", None)
        .await;
    assert!(!state.to_string().contains(NAME), "{state}");

    // Asked again: the first erasure's answer; registering again: refused.
    let (status, again) = server
        .send(
            "DELETE",
            "/api/v1/customers/alice/personal-data",
            Some(json!({"reason": "asked twice"})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, erasure);
    let (status, problem) = server
        .send(
            "POST",
            "/api/v1/customers",
            Some(json!({"customer_id": "alice", "name": NAME, "email": EMAIL, "address": ADDRESS})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        server.key_store.keys_of("alice").len(),
        1,
        "no new key for an erased customer"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_value_is_reported_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    // Mallory's name is sealed for another event than the one that holds it (a
    // ciphertext moved from elsewhere), straight into the store.
    let key_store = server.key_store.clone();
    let key = key_store.create_key("mallory").unwrap();
    let command_id = uuid::Uuid::now_v7();
    let event_id = EventId::derived(command_id, 0).as_uuid();
    let seal = |field: &str, event_id: uuid::Uuid, value: &str| {
        key_store
            .seal(
                key,
                &Binding {
                    stream: "customer-mallory",
                    event_id,
                    field,
                },
                value,
            )
            .unwrap()
    };
    let command = customers::Command::RegisterCustomer {
        customer_id: "mallory".into(),
        name: seal("name", uuid::Uuid::now_v7(), "Mallory"),
        email: seal("email", event_id, "mallory@example.com"),
        // The email's ciphertext under the address's name: moved to another field.
        address: seal("email", event_id, "mallory@example.com"),
    };
    Repository::<customers::Customer>::new(server.platform.store.clone())
        .execute(
            "mallory",
            &command,
            &CommandOptions {
                command_id,
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap();
    let (status, profile) = server.send("GET", "/api/v1/customers/mallory", None).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["name"], Value::Null);
    assert_eq!(profile["address"], Value::Null);
    assert_eq!(profile["email"], "mallory@example.com");
    assert_eq!(profile["erased"], false);
    let metrics = server
        .client
        .get(format!("{}/metrics", server.platform.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tampered = metrics
        .lines()
        .find(|line| {
            line.starts_with("annals_personal_data_unreadable_total")
                && line.contains("reason=\"tampered\"")
        })
        .unwrap_or_else(|| panic!("no unreadable counter in {metrics}"));
    let count: f64 = tampered.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{tampered}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reaches_its_own_personal_data_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.register("alice").await;
    server.register("bob").await;
    let alice = common::token("alice", &[Role::Customer], Some("alice"));
    for path in [
        "/api/v1/customers/alice",
        "/api/v1/customers/alice/personal-data",
    ] {
        let (status, body) = server.send_as(&alice, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in [
        "/api/v1/customers/bob",
        "/api/v1/customers/bob/personal-data",
    ] {
        let (status, problem) = server.send_as(&alice, "GET", path, None).await;
        assert_eq!(status, 403, "{path}: {problem}");
    }
    let (status, _) = server
        .send_as(
            &alice,
            "DELETE",
            "/api/v1/customers/bob/personal-data",
            Some(json!({"reason": "not mine"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .send_as(
            &alice,
            "POST",
            "/api/v1/customers",
            Some(json!({"customer_id": "carol", "name": "C", "email": "c@x", "address": "A"})),
        )
        .await;
    assert_eq!(status, 403);
    // Alice erases her own data; the event records who.
    let (status, erasure) = server
        .send_as(
            &alice,
            "DELETE",
            "/api/v1/customers/alice/personal-data",
            Some(json!({"reason": "forget me"})),
        )
        .await;
    assert_eq!(status, 200, "{erasure}");
    let (_, stream) = server
        .send("GET", "/api/v1/streams/customer-alice", None)
        .await;
    assert_eq!(
        stream["events"][1]["payload"]["erased_by"], "alice",
        "{stream}"
    );
    assert_eq!(stream["events"][1]["payload"]["reason"], "forget me");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_key_personal_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        common::ReadSideServing::start(dir.path(), ApiConfig::default(), |state| state).await;
    let client = reqwest::Client::new();
    let requests = [
        (
            "POST",
            "/api/v1/customers",
            Some(json!({"customer_id": "alice", "name": NAME, "email": EMAIL, "address": ADDRESS})),
        ),
        ("GET", "/api/v1/customers/alice", None),
        ("GET", "/api/v1/customers/alice/personal-data", None),
        (
            "DELETE",
            "/api/v1/customers/alice/personal-data",
            Some(json!({"reason": "asked"})),
        ),
    ];
    for (method, path, body) in requests {
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", server.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 503, "{method} {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:annals:problem:personal-data-disabled",
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("--master-key-file"),
            "{problem}"
        );
    }
    // Everything else works.
    let response = client
        .post(format!("{}/api/v1/payments/accounts", server.base))
        .json(&json!({"customer_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enforcer_destroys_the_keys_of_an_erasure_recorded_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let key_store = common::key_store(dir.path());
    // An erasure in the log whose keys were never destroyed (a crash in between, or an
    // imported log): registered and erased straight through the repository.
    let key = key_store.create_key("alice").unwrap();
    let repository = Repository::<customers::Customer>::new(store.clone());
    let command_id = uuid::Uuid::now_v7();
    let event_id = EventId::derived(command_id, 0).as_uuid();
    let seal = |field: &str| {
        key_store
            .seal(
                key,
                &Binding {
                    stream: "customer-alice",
                    event_id,
                    field,
                },
                "x",
            )
            .unwrap()
    };
    let options = |command_id| CommandOptions {
        command_id,
        ..CommandOptions::default()
    };
    let register = customers::Command::RegisterCustomer {
        customer_id: "alice".into(),
        name: seal("name"),
        email: seal("email"),
        address: seal("address"),
    };
    repository
        .execute("alice", &register, &options(command_id))
        .await
        .unwrap();
    let erase = customers::Command::ErasePersonalData {
        reason: "imported".into(),
        erased_by: "ops".into(),
        key_ids: vec![key],
    };
    repository
        .execute("alice", &erase, &options(uuid::Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(key_store.destroyed_at(key), None);

    // The enforcer, as `annals serve` runs it: it catches up from its checkpoint.
    let stop = tokio_util::sync::CancellationToken::new();
    let enforcer = api::personal_data::ErasureEnforcer::new(store.clone(), key_store.clone());
    let task = tokio::spawn(enforcer.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while key_store.destroyed_at(key).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the enforcer did not destroy the key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let checkpoint = store
        .load_checkpoint(api::personal_data::ENFORCER_CHECKPOINT)
        .unwrap();
    assert_eq!(
        checkpoint,
        Some(eventstore::Position(2)),
        "past the erasure"
    );
    store.close().await;
}
