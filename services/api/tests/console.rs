//! The routes a web console reads, over a real listening server with the read models
//! and the saga driver running: a stream's state at a version.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use eventstore::EventStore;
use repositories::Repositories;
use sagas::{Driver, DriverConfig, FulfilmentServices, SystemClock};
use security::Role;
use security::auth::{AuthConfig, Authenticator, MintClaims, mint};
use security::policy::Policy;
use security::rate_limit::{RateLimiter, RateLimits};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;

const SECRET: &[u8] = b"a development secret of at least thirty-two bytes";
const ISSUER: &str = "https://idp.test";
const TIMEOUT: Duration = Duration::from_secs(30);

/// A server with the read models and the fulfilment saga, with or without the gate.
struct Console {
    base: String,
    client: reqwest::Client,
    store: EventStore,
    serving: common::Serving,
    runner_stop: CancellationToken,
    runner: tokio::task::JoinHandle<()>,
    driver: Driver,
    /// The admin's token on a secured server (sent with every request but `as_`'s).
    admin: Option<String>,
}

fn token(sub: &str, roles: &[Role], customer_id: Option<&str>) -> String {
    let claims = MintClaims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        customer_id: customer_id.map(str::to_owned),
        issuer: Some(ISSUER.to_owned()),
        audience: None,
    };
    mint(SECRET, &claims, Duration::from_secs(600)).unwrap()
}

impl Console {
    async fn start(dir: &Path, secured: bool) -> Console {
        let store = common::open_store(&dir.join("data")).await;
        let repositories = Repositories::new(store.clone());
        let (read_side, runner) =
            read_models::ReadSide::start(&store, projections::RunnerConfig::default()).unwrap();
        let runner_stop = CancellationToken::new();
        let runner = tokio::spawn(runner.run(runner_stop.clone()));
        let services = FulfilmentServices::new(repositories.clone(), TIMEOUT);
        let driver = Driver::start(
            store.clone(),
            Arc::new(services),
            Arc::new(SystemClock),
            DriverConfig::default(),
        )
        .unwrap();
        let mut state = AppState::sharing(store.clone(), repositories, ApiConfig::default())
            .with_projections(read_side);
        let mut admin = None;
        if secured {
            let secret = dir.join("jwt-secret");
            std::fs::write(&secret, SECRET).unwrap();
            let authenticator = Authenticator::new(&AuthConfig {
                jwt_secret_file: Some(secret),
                issuer: Some(ISSUER.to_owned()),
                ..AuthConfig::default()
            })
            .await
            .unwrap();
            state = state.with_security(api::gate::Security::new(
                authenticator,
                Arc::new(Policy::default_policy().unwrap()),
                RateLimiter::new(RateLimits::default()),
            ));
            admin = Some(token("root", &[Role::Admin], None));
        }
        let serving = common::Serving::start(state).await;
        Console {
            base: serving.base.clone(),
            client: reqwest::Client::new(),
            store,
            serving,
            runner_stop,
            runner,
            driver,
            admin,
        }
    }

    async fn stop(self) {
        self.serving.drain().await;
        self.driver.stop().await;
        self.runner_stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.runner)
            .await
            .expect("the runner stops")
            .unwrap();
        self.store.close().await;
    }

    /// `GET path` with `token` (none: no `Authorization` header).
    async fn as_(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` as the admin (or anyone, on a server without the gate).
    async fn get(&self, path: &str) -> (u16, Value) {
        self.as_(self.admin.as_deref(), path).await
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn command(&self, path: &str, body: Value, status: u16) -> Value {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(admin) = &self.admin {
            request = request.bearer_auth(admin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
        response.json().await.unwrap()
    }

    /// A sku in stock and an account with `balance`.
    async fn shop(&self, customer: &str, balance: u64) {
        let body = json!({"sku": "apple", "name": "Apple", "unit_price": 100});
        self.command("/api/v1/inventory/skus", body, 201).await;
        self.command(
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 100}),
            200,
        )
        .await;
        let body = json!({ "customer_id": customer });
        self.command("/api/v1/payments/accounts", body, 201).await;
        let path = format!("/api/v1/payments/accounts/{customer}/deposits");
        self.command(&path, json!({ "amount": balance }), 200).await;
    }

    /// Places an order of `quantity` apples and waits until its saga has finished.
    async fn fulfilled_order(&self, customer: &str, quantity: u64) -> String {
        let lines = json!([{"sku": "apple", "quantity": quantity}]);
        let placed = self
            .command(
                "/api/v1/orders",
                json!({"customer_id": customer, "lines": lines}),
                201,
            )
            .await;
        let order = placed["order_id"].as_str().unwrap().to_owned();
        self.until(
            &format!("/api/v1/sagas/fulfilment/{order}"),
            "finished",
            |saga| saga["finished"] == true,
        )
        .await;
        order
    }

    /// The answer to `GET path` once `done` holds for it (polling, up to 20 s).
    async fn until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} never answered {what}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn problem_type(body: &Value) -> &str {
    body["type"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_s_state_is_folded_up_to_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), true).await;
    console.shop("c-1", 10_000).await;
    let order = console.fulfilled_order("c-1", 2).await;
    let stream = format!("order-{order}");

    let head = console
        .json(&format!("/api/v1/streams/{stream}/state"))
        .await;
    let read = console.json(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(head["stream"], stream.as_str());
    assert_eq!(head["category"], "order");
    assert_eq!(head["version"], read["version"], "{head} {read}");
    assert_eq!(head["state"]["status"], "Confirmed", "{head}");
    assert_eq!(head["state"]["customer_id"], "c-1", "{head}");

    let placed = console
        .json(&format!("/api/v1/streams/{stream}/state?version=0"))
        .await;
    assert_eq!(placed["version"], 0);
    assert_eq!(placed["state"]["status"], "Pending", "{placed}");

    let saga = console
        .json(&format!("/api/v1/streams/saga-fulfilment-{order}/state"))
        .await;
    assert_eq!(saga["category"], "saga-fulfilment");
    assert_eq!(saga["state"]["finished"], true, "{saga}");
    assert_eq!(saga["state"]["state"]["phase"], "confirmed", "{saga}");

    let account = console
        .json("/api/v1/streams/account-c-1/state?version=1")
        .await;
    assert_eq!(account["category"], "account");
    assert_eq!(account["state"]["balance"], 10_000, "{account}");

    let beyond = head["version"].as_u64().unwrap() + 1;
    let (status, problem) = console
        .get(&format!("/api/v1/streams/{stream}/state?version={beyond}"))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem_type(&problem),
        "urn:annals:problem:version-beyond-head"
    );
    let (status, problem) = console.get("/api/v1/streams/order-nothing/state").await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem_type(&problem), "urn:annals:problem:unknown-stream");
    // Cards have no aggregate to fold here.
    console
        .command(
            "/api/v1/payments/cards",
            json!({"customer_id": "c-1", "card": "tok_c1"}),
            200,
        )
        .await;
    let (status, problem) = console.get("/api/v1/streams/card-c-1/state").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem_type(&problem), "urn:annals:problem:no-aggregate");
    let (status, problem) = console
        .get(&format!("/api/v1/streams/{stream}/state?version=-1"))
        .await;
    assert_eq!(status, 400, "{problem}");
    console.stop().await;
}
