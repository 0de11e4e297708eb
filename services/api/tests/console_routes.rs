//! The routes a web console reads, over a real listening server with the read models
//! and the saga driver running: who am I (`/api/v1/me`, with and without
//! authentication), a correlation's events, a stream's state at a version, and the
//! fulfilment sagas page by page.

use std::path::Path;
use std::time::Duration;

use api::ApiConfig;
use security::Role;
use security::rate_limit::RateLimits;
use serde_json::{Value, json};

mod common;

use common::token;

/// The actions `/api/v1/me` answers for.
const ASKED: [&str; 15] = [
    "log.read",
    "log.follow",
    "streams.list",
    "streams.read",
    "events.read",
    "projections.read",
    "projections.rebuild",
    "sagas.read",
    "sagas.list",
    "outbox.read",
    "operations.dependencies",
    "operations.slo",
    "operations.workers",
    "operations.metrics",
    "correlations.read",
];

/// A server with the read models and the fulfilment saga, with or without the gate.
struct Console {
    base: String,
    client: reqwest::Client,
    platform: common::PlatformServing,
    /// The admin's token on a secured server (sent with every request but `as_`'s).
    admin: Option<String>,
}

impl Console {
    /// A console over the default read models (no `correlations`, as `annals serve`
    /// without `--correlations`).
    async fn start(dir: &Path, secured: bool) -> Console {
        Console::start_with(dir, secured, false).await
    }

    /// With `correlations`, the read side keeps the correlation index too (as
    /// `annals serve --correlations`).
    async fn start_with(dir: &Path, secured: bool, correlations: bool) -> Console {
        let mut security = None;
        let mut admin = None;
        if secured {
            security = Some(common::security(dir, RateLimits::default()).await);
            admin = Some(token("root", &[Role::Admin], None));
        }
        let platform =
            common::PlatformServing::start(dir, correlations, ApiConfig::default(), |state| {
                match security {
                    Some(security) => state.with_security(security),
                    None => state,
                }
            })
            .await;
        Console {
            base: platform.base.clone(),
            client: reqwest::Client::new(),
            platform,
            admin,
        }
    }

    async fn stop(self) {
        self.platform.stop().await;
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
async fn without_authentication_me_is_anonymous_and_may_do_everything() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), false).await;
    let me = console.json("/api/v1/me").await;
    assert_eq!(me["authenticated"], false, "{me}");
    assert_eq!(me["subject"], Value::Null);
    assert_eq!(me["roles"], json!([]));
    assert_eq!(me["customer_id"], Value::Null);
    let allowed = me["allowed"].as_object().unwrap();
    assert_eq!(allowed.len(), ASKED.len(), "{me}");
    for action in ASKED {
        assert_eq!(allowed[action], true, "{action}: {me}");
    }
    console.stop().await;
}

/// Whether a caller may take an action, as a test case expects it.
type MayDo = fn(&str) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_answers_the_policy_s_decisions_for_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), true).await;
    let cases: [(&str, String, MayDo); 5] = [
        ("admin", token("root", &[Role::Admin], None), |_| true),
        (
            "operator",
            token("oscar", &[Role::Operator], None),
            // Every action the console offers is an operator's.
            |_| true,
        ),
        (
            "customer",
            token("alice", &[Role::Customer], Some("c-1")),
            // Its own sagas (the resource is its own customer), nothing of the operators'.
            |action| action == "sagas.read",
        ),
        ("clerk", token("carol", &[Role::Clerk], None), |_| false),
        ("roleless", token("rex", &[], None), |_| false),
    ];
    for (who, token, may) in cases {
        let (status, me) = console.as_(Some(&token), "/api/v1/me").await;
        assert_eq!(status, 200, "{who}: {me}");
        assert_eq!(me["authenticated"], true, "{who}: {me}");
        let allowed = me["allowed"].as_object().unwrap();
        assert_eq!(allowed.len(), ASKED.len(), "{who}: {me}");
        for action in ASKED {
            assert_eq!(allowed[action], may(action), "{who}, {action}: {me}");
        }
    }
    let (_, alice) = console
        .as_(
            Some(&token("alice", &[Role::Customer], Some("c-1"))),
            "/api/v1/me",
        )
        .await;
    assert_eq!(
        (&alice["subject"], &alice["roles"], &alice["customer_id"]),
        (&json!("alice"), &json!(["customer"]), &json!("c-1"))
    );
    // Without a token it answers for nobody, who may do nothing here.
    let (status, nobody) = console.as_(None, "/api/v1/me").await;
    assert_eq!(status, 200, "{nobody}");
    assert_eq!(nobody["authenticated"], false, "{nobody}");
    assert!(
        nobody["allowed"]
            .as_object()
            .unwrap()
            .values()
            .all(|allowed| allowed == false),
        "{nobody}"
    );
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_lists_the_events_of_one_order_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start_with(dir.path(), true, true).await;
    console.shop("c-1", 10_000).await;
    let order = console.fulfilled_order("c-1", 2).await;
    let other = console.fulfilled_order("c-1", 1).await;
    let first = console
        .json(&format!("/api/v1/streams/order-{order}?limit=1"))
        .await;
    let correlation = first["events"][0]["metadata"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // What a scan of the log finds, for comparison.
    let log = console.json("/api/v1/log?limit=1000").await;
    let expected: Vec<&Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["metadata"]["correlation_id"] == correlation.as_str())
        .collect();
    assert!(
        expected.len() > 3,
        "the order, its saga and what it did: {expected:?}"
    );
    let streams: std::collections::BTreeSet<&str> = expected
        .iter()
        .map(|event| event["stream"].as_str().unwrap())
        .collect();
    assert!(
        streams.contains(format!("order-{order}").as_str()),
        "{streams:?}"
    );
    assert!(
        !streams.contains(format!("order-{other}").as_str()),
        "{streams:?}"
    );

    let path = format!("/api/v1/correlations/{correlation}");
    let answer = console
        .until(&path, "every event of the order", |answer| {
            answer["events"].as_array().unwrap().len() == expected.len()
        })
        .await;
    assert_eq!(answer["correlation_id"], correlation.as_str());
    assert_eq!(answer["more"], false);
    let events = answer["events"].as_array().unwrap();
    for (event, wanted) in events.iter().zip(&expected) {
        // The same view as GET /api/v1/events/{id}, and the log's order.
        assert_eq!(event, *wanted);
    }
    let by_id = console
        .json(&format!(
            "/api/v1/events/{}",
            events[1]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_id, events[1]);

    let page = console.json(&format!("{path}?limit=2")).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);
    assert_eq!(page["events"][1], events[1]);

    let unknown = console
        .json("/api/v1/correlations/0190a4c4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(unknown["events"], json!([]));
    assert_eq!(unknown["more"], false);
    for bad in [
        "/api/v1/correlations/not-a-uuid",
        &format!("{path}?limit=0"),
        &format!("{path}?limit=1001"),
        &format!("{path}?from=3"),
    ] {
        let (status, problem) = console.get(bad).await;
        assert_eq!(status, 400, "{bad}: {problem}");
    }
    // Operators and admins only.
    let alice = token("alice", &[Role::Customer], Some("c-1"));
    assert_eq!(console.as_(Some(&alice), &path).await.0, 403);
    let oscar = token("oscar", &[Role::Operator], None);
    assert_eq!(console.as_(Some(&oscar), &path).await.0, 200);
    console.stop().await;
}

/// A server started without `--correlations` keeps no correlation index: the route
/// answers 404 `correlations-not-kept`, telling the operator how to keep one, for a
/// correlation with events as for any other (a malformed id is still a 400, and the
/// gate still decides first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_correlations_kept_the_route_says_how_to_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), true).await;
    console.shop("c-1", 10_000).await;
    let order = console.fulfilled_order("c-1", 1).await;
    let first = console
        .json(&format!("/api/v1/streams/order-{order}?limit=1"))
        .await;
    let correlation = first["events"][0]["metadata"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/correlations/{correlation}");
    let (status, problem) = console.get(&path).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["type"], "urn:annals:problem:correlations-not-kept");
    assert_eq!(problem["status"], 404);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("--correlations"), "{detail}");
    let (status, _) = console.get("/api/v1/correlations/not-a-uuid").await;
    assert_eq!(status, 400);
    let alice = token("alice", &[Role::Customer], Some("c-1"));
    assert_eq!(console.as_(Some(&alice), &path).await.0, 403);
    // The read models listed are the four every server keeps.
    let list = console.json("/api/v1/projections").await;
    let mut names: Vec<&str> = list["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accounts",
            "customers",
            "inventory",
            "orders",
            "personal_data",
            "sales"
        ],
        "{list}"
    );
    console.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fulfilment_sagas_are_listed_page_by_page_and_by_phase() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), true).await;
    console.shop("c-1", 500).await;
    let mut confirmed = Vec::new();
    for _ in 0..3 {
        confirmed.push(console.fulfilled_order("c-1", 1).await);
    }
    // 300 taken, 200 left: an order of 3 apples cannot be paid.
    let cancelled = console.fulfilled_order("c-1", 3).await;
    let mut all = confirmed.clone();
    all.push(cancelled.clone());
    all.sort();

    let list = console.json("/api/v1/sagas/fulfilment").await;
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, all, "{list}");
    assert_eq!(list["next_after"], Value::Null);
    let first = &list["instances"][0];
    assert_eq!(first["stream"], format!("saga-fulfilment-{}", all[0]));
    assert_eq!(first["finished"], true);
    assert!(first["version"].as_u64().unwrap() > 0, "{first}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(first["updated_at"].as_str().unwrap()).is_ok(),
        "{first}"
    );

    // Pages of three: the next page starts after the last id.
    let page = console.json("/api/v1/sagas/fulfilment?limit=3").await;
    assert_eq!(page["instances"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_after"], all[2].as_str());
    let rest = console
        .json(&format!(
            "/api/v1/sagas/fulfilment?limit=3&after={}",
            all[2]
        ))
        .await;
    assert_eq!(rest["instances"][0]["id"], all[3].as_str());
    assert_eq!(rest["instances"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_after"], Value::Null);

    let phase = console
        .json("/api/v1/sagas/fulfilment?phase=cancelled")
        .await;
    assert_eq!(phase["instances"].as_array().unwrap().len(), 1, "{phase}");
    assert_eq!(phase["instances"][0]["id"], cancelled.as_str());
    assert_eq!(phase["instances"][0]["phase"], "cancelled");
    let confirmed_page = console
        .json("/api/v1/sagas/fulfilment?phase=confirmed&limit=2")
        .await;
    // A page loads two instances, and answers those confirmed among them.
    assert!(
        confirmed_page["instances"].as_array().unwrap().len() <= 2,
        "{confirmed_page}"
    );
    assert_eq!(confirmed_page["next_after"], all[1].as_str());
    let charging = console
        .json("/api/v1/sagas/fulfilment?phase=charging")
        .await;
    assert_eq!(charging["instances"], json!([]));

    for bad in [
        "/api/v1/sagas/fulfilment?phase=shipping",
        "/api/v1/sagas/fulfilment?limit=0",
        "/api/v1/sagas/fulfilment?limit=501",
        "/api/v1/sagas/fulfilment?sort=id",
    ] {
        let (status, problem) = console.get(bad).await;
        assert_eq!(status, 400, "{bad}: {problem}");
    }
    let alice = token("alice", &[Role::Customer], Some("c-1"));
    let (status, _) = console.as_(Some(&alice), "/api/v1/sagas/fulfilment").await;
    assert_eq!(status, 403);
    console.stop().await;
}
