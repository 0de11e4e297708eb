//! The gate over a real listening server: every route × every role against the default
//! policy, the 401s of bad tokens, the principal in the events, the rate limit per
//! principal.
//!
//! The route × role table is generated from the OpenAPI document: a route whose action
//! has no row in [`EXPECTED`] fails the test, so a new route cannot ship without a
//! decision for every role.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use api::ApiConfig;
use eventstore::EventStore;
use security::Role;
use security::auth::{MintClaims, mint};
use security::rate_limit::RateLimits;
use serde_json::{Value, json};

mod common;

use common::{ISSUER, token};

/// Who calls, in the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// No `Authorization` header.
    Nobody,
    /// A customer acting for the customer the resources belong to (`c-1`).
    Owner,
    /// A customer acting for another customer (`c-2`).
    OtherCustomer,
    Clerk,
    Operator,
    Admin,
}

const EVERYONE: [Who; 6] = [
    Who::Nobody,
    Who::Owner,
    Who::OtherCustomer,
    Who::Clerk,
    Who::Operator,
    Who::Admin,
];

/// `A` allowed, `D` denied (403), `U` unauthenticated (401): one letter per column of
/// [`EVERYONE`] (nobody, owner, other customer, clerk, operator, admin).
const EXPECTED: &[(&str, &str)] = &[
    ("inventory.register", "UDDADA"),
    ("inventory.restock", "UDDADA"),
    ("inventory.read", "UAAAAA"),
    ("inventory.list", "UAAAAA"),
    ("payments.open", "UADDDA"),
    ("payments.deposit", "UADDDA"),
    ("payments.read", "UADDDA"),
    ("payments.card", "UADDDA"),
    ("customers.register", "UADDAA"),
    ("customers.read", "UADDAA"),
    ("customers.personal_data.read", "UADDAA"),
    ("customers.personal_data.erase", "UADDAA"),
    ("orders.place", "UADDDA"),
    ("orders.cancel", "UADDDA"),
    ("orders.read", "UADDAA"),
    ("orders.list", "UADDDA"),
    ("sagas.read", "UADDAA"),
    ("sagas.list", "UDDDAA"),
    ("streams.read", "UDDDAA"),
    ("streams.list", "UDDDAA"),
    ("events.read", "UDDDAA"),
    ("log.read", "UDDDAA"),
    ("log.follow", "UDDDAA"),
    ("reports.sales", "UDDAAA"),
    ("projections.read", "UDDDAA"),
    ("projections.rebuild", "UDDDAA"),
    ("projections.retry", "UDDDAA"),
    ("outbox.read", "UDDDAA"),
    ("operations.slo", "UDDDAA"),
    ("operations.health", "AAAAAA"),
    ("operations.ready", "AAAAAA"),
    ("operations.openapi", "AAAAAA"),
    ("operations.console", "AAAAAA"),
    ("operations.metrics", "UDDDAA"),
    ("operations.workers", "UDDDAA"),
    ("operations.dependencies", "UDDDAA"),
    ("operations.me", "AAAAAA"),
    ("correlations.read", "UDDDAA"),
    ("chaos.list", "UDDDAA"),
    ("chaos.inject", "UDDDAA"),
    ("chaos.clear", "UDDDAA"),
];

struct Secured {
    base: String,
    client: reqwest::Client,
    store: EventStore,
    server: common::ReadSideServing,
    tokens: BTreeMap<Who, String>,
}

impl Secured {
    async fn start(dir: &Path, limits: RateLimits) -> Self {
        let security = common::security(dir, limits).await;
        let key_store = common::key_store(&dir.join("data"));
        let server =
            common::ReadSideServing::start(&dir.join("data"), ApiConfig::default(), |state| {
                // With fault injection on, so that the chaos routes are served (and gated),
                // and a key store, so that the customers' routes are.
                state
                    .with_security(security)
                    .with_chaos(chaos::Chaos::enabled())
                    .with_key_store(key_store)
            })
            .await;
        let tokens = BTreeMap::from([
            (Who::Owner, token("alice", &[Role::Customer], Some("c-1"))),
            (
                Who::OtherCustomer,
                token("bob", &[Role::Customer], Some("c-2")),
            ),
            (Who::Clerk, token("carol", &[Role::Clerk], None)),
            (Who::Operator, token("oscar", &[Role::Operator], None)),
            (Who::Admin, token("root", &[Role::Admin], None)),
        ]);
        Secured {
            base: server.base.clone(),
            client: reqwest::Client::new(),
            store: server.store.clone(),
            server,
            tokens,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    async fn send(&self, who: Who, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "DELETE" => self.client.delete(url),
            other => panic!("no requests with {other} in this test"),
        };
        if let Some(token) = self.tokens.get(&who) {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .expect("the server answers")
            .unwrap();
        let status = response.status().as_u16();
        // Only the head of a live stream: its body never ends.
        if (path.starts_with("/api/v1/log/live") && status == 200) || !(400..500).contains(&status)
        {
            return (status, Value::Null);
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends as the admin and expects `status`.
    async fn admin(&self, method: &str, path: &str, body: Value, status: u16) -> Value {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(&self.tokens[&Who::Admin])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path} {body}");
        response.json().await.unwrap()
    }
}

/// The documented routes, as `(method, path template)`.
fn documented_routes() -> Vec<(String, String)> {
    let document = api::openapi();
    let mut routes = Vec::new();
    for (path, item) in &document.paths.paths {
        if item.get.is_some() {
            routes.push(("GET".to_owned(), path.clone()));
        }
        if item.post.is_some() {
            routes.push(("POST".to_owned(), path.clone()));
        }
        if item.delete.is_some() {
            routes.push(("DELETE".to_owned(), path.clone()));
        }
        assert!(
            item.put.is_none() && item.patch.is_none(),
            "{path}: extend this test to the new method"
        );
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_role_meets_the_default_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Secured::start(dir.path(), RateLimits::default()).await;
    // What the routes act on: a sku, the accounts of c-1 and c-2, an order of c-1.
    server
        .admin(
            "POST",
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 100}),
            201,
        )
        .await;
    server
        .admin(
            "POST",
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 1000}),
            200,
        )
        .await;
    for customer in ["c-1", "c-2"] {
        server
            .admin(
                "POST",
                "/api/v1/payments/accounts",
                json!({"customer_id": customer}),
                201,
            )
            .await;
        server
            .admin(
                "POST",
                &format!("/api/v1/payments/accounts/{customer}/deposits"),
                json!({"amount": 100_000}),
                200,
            )
            .await;
    }
    let order = server
        .admin(
            "POST",
            "/api/v1/orders",
            json!({"customer_id": "c-1", "lines": [{"sku": "apple", "quantity": 1}]}),
            201,
        )
        .await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let first_event = {
        let store = server.store.clone();
        let stream = eventstore::StreamId::new(format!("order-{order_id}")).unwrap();
        tokio::task::spawn_blocking(move || {
            store.read_stream(
                &stream,
                eventstore::Version(0),
                eventstore::Direction::Forward,
                1,
            )
        })
        .await
        .unwrap()
        .unwrap()[0]
            .id
            .to_string()
    };

    let expected: BTreeMap<&str, &str> = EXPECTED.iter().copied().collect();
    let actions: BTreeMap<(String, String), (&str, bool)> = api::gate::route_actions()
        .map(|(method, path, action, public)| {
            ((method.to_owned(), path.to_owned()), (action, public))
        })
        .collect();
    let mut table = String::new();
    let mut wrong = Vec::new();
    for (method, template) in documented_routes() {
        let Some(&(action, _public)) = actions.get(&(method.clone(), template.clone())) else {
            panic!("{method} {template} has no action in the gate's table");
        };
        let Some(row) = expected.get(action) else {
            panic!("{action} ({method} {template}) has no row in this test's EXPECTED");
        };
        let path = template
            .replace("{sku}", "apple")
            .replace("{customer_id}", "c-1")
            .replace("{order_id}", &order_id)
            .replace("{stream_id}", &format!("order-{order_id}"))
            .replace("{event_id}", &first_event)
            .replace("{name}", read_models::ORDERS)
            .replace("{correlation_id}", "0190a4c4-0000-7000-8000-000000000000")
            .replace("{id}", "1")
            .replace("{type}", "OrderPlaced")
            .replace("{version}", "2");
        let body = match (method.as_str(), template.as_str()) {
            ("POST", "/api/v1/inventory/skus") => {
                Some(json!({"sku": "pear", "name": "Pear", "unit_price": 50}))
            }
            ("POST", "/api/v1/inventory/skus/{sku}/restock") => Some(json!({"quantity": 1})),
            ("POST", "/api/v1/payments/accounts") => Some(json!({"customer_id": "c-1"})),
            ("POST", "/api/v1/payments/cards") => {
                Some(json!({"customer_id": "c-1", "card": "tok_c1"}))
            }
            ("POST", "/api/v1/payments/accounts/{customer_id}/deposits") => {
                Some(json!({"amount": 1}))
            }
            ("POST", "/api/v1/orders") => {
                Some(json!({"customer_id": "c-1", "lines": [{"sku": "apple", "quantity": 1}]}))
            }
            ("POST", "/api/v1/orders/{order_id}/cancel") => Some(json!({"reason": "table test"})),
            ("POST", "/api/v1/customers") => Some(json!({
                "customer_id": "c-1", "name": "C One", "email": "c1@example.com",
                "address": "1 Table Street"
            })),
            ("POST", _) => Some(json!({})),
            _ => None,
        };
        table.push_str(&format!("{action:22} {method:4} {template}\n"));
        for (who, letter) in EVERYONE.iter().zip(row.chars()) {
            let (status, problem) = server.send(*who, &method, &path, body.as_ref()).await;
            let good = match letter {
                'U' => status == 401,
                'D' => status == 403,
                'A' => status != 401 && status != 403 && status < 500,
                other => panic!("{action}: unknown letter {other}"),
            };
            table.push_str(&format!("    {who:?}: {status}\n"));
            if !good {
                wrong.push(format!(
                    "{action} ({method} {path}) as {who:?}: expected {letter}, got {status} {problem}"
                ));
            }
            if letter == 'D' && status == 403 {
                let detail = problem["detail"].as_str().unwrap_or_default();
                assert!(detail.contains(action), "a 403 names the action: {detail}");
                assert_eq!(problem["type"], "urn:annals:problem:forbidden", "{problem}");
                assert_eq!(problem["action"], *action, "{problem}");
            }
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_with_a_bearer_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Secured::start(dir.path(), RateLimits::default()).await;
    let url = format!("{}/api/v1/log", server.base);
    let good = server.tokens[&Who::Admin].clone();
    let mut tampered = good.clone();
    // Flip one character of the payload: the signature no longer matches.
    let payload_at = tampered.find('.').unwrap() + 5;
    let flipped = if &tampered[payload_at..=payload_at] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(payload_at..=payload_at, flipped);
    let foreign = {
        let claims = MintClaims {
            sub: "mallory".into(),
            roles: vec![Role::Admin],
            customer_id: None,
            issuer: Some(ISSUER.into()),
            audience: None,
        };
        mint(
            b"another secret of at least thirty-two bytes!!",
            &claims,
            Duration::from_secs(60),
        )
        .unwrap()
    };
    let cases: [(&str, Option<String>); 5] = [
        ("no token", None),
        ("not bearer", Some(format!("Basic {good}"))),
        ("garbage", Some("Bearer not.a.token".into())),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("signed by another key", Some(format!("Bearer {foreign}"))),
    ];
    for (case, header) in cases {
        let mut request = server.client.get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{case}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:annals:problem:unauthenticated",
            "{case}"
        );
        assert!(
            !problem["detail"].as_str().unwrap().contains(&good[..20]),
            "{case}: the token is never echoed"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_record_who_caused_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Secured::start(dir.path(), RateLimits::default()).await;
    server
        .admin(
            "POST",
            "/api/v1/payments/accounts",
            json!({"customer_id": "c-1"}),
            201,
        )
        .await;
    let url = format!("{}/api/v1/payments/accounts/c-1/deposits", server.base);
    let response = server
        .client
        .post(&url)
        .bearer_auth(&server.tokens[&Who::Owner])
        .json(&json!({"amount": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let events = {
        let store = server.store.clone();
        let stream = eventstore::StreamId::new("account-c-1").unwrap();
        tokio::task::spawn_blocking(move || {
            store.read_stream(
                &stream,
                eventstore::Version(0),
                eventstore::Direction::Forward,
                10,
            )
        })
        .await
        .unwrap()
        .unwrap()
    };
    let opened = &events[0].metadata;
    assert_eq!(opened.principal.as_deref(), Some("root"));
    assert_eq!(opened.action.as_deref(), Some("payments.open"));
    let deposited = &events.last().unwrap().metadata;
    assert_eq!(deposited.principal.as_deref(), Some("alice"));
    assert_eq!(deposited.issuer.as_deref(), Some(ISSUER));
    assert_eq!(deposited.action.as_deref(), Some("payments.deposit"));
    // The event JSON shows it too.
    let id = events.last().unwrap().id.to_string();
    let event: Value = server
        .client
        .get(format!("{}/api/v1/events/{id}", server.base))
        .bearer_auth(&server.tokens[&Who::Operator])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(event["metadata"]["principal"], "alice");
    assert_eq!(event["metadata"]["issuer"], ISSUER);
    assert_eq!(event["metadata"]["action"], "payments.deposit");
    // No token anywhere in the stored metadata.
    let stored = format!("{:?}", events);
    assert!(!stored.contains(&server.tokens[&Who::Owner][..20]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_principal() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RateLimits {
        default_per_second: NonZeroU32::new(2),
        ..RateLimits::default()
    };
    let server = Secured::start(dir.path(), limits).await;
    let url = format!("{}/api/v1/inventory/skus", server.base);
    let get = |who: Who| {
        server
            .client
            .get(&url)
            .bearer_auth(&server.tokens[&who])
            .send()
    };
    // Well over two a second: the bucket (a burst of two) runs dry.
    let mut limited = None;
    for _ in 0..20 {
        let response = get(Who::Clerk).await.unwrap();
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the clerk is limited");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["type"], "urn:annals:problem:rate-limited");
    // Another principal has a bucket of its own.
    assert_eq!(get(Who::Operator).await.unwrap().status().as_u16(), 200);
    server.stop().await;
}
