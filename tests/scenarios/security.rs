//! Security end to end, with the real `annals` binary: a server that demands tokens,
//! tokens minted by `annals token mint`, the principal carried from the request into the
//! order's events, into the saga's commands (`on_behalf_of`) and through NATS (the
//! relay's headers, read back by `annals restore`), the CLI's 401 and 403 messages, and
//! the refusal to serve a network address without authentication.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{AnnalsServer, NatsServer, free_port};

use crate::support::{annals_fails, annals_ok};

const ISSUER: &str = "https://idp.scenario";

/// Writes a development secret into `dir` and returns its path.
fn secret_file(dir: &Path) -> String {
    let path = dir.join("jwt-secret");
    std::fs::write(&path, "scenario secret: thirty-two bytes or more, surely\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// `annals token mint` with `args` after the secret and issuer.
fn mint(dir: &Path, secret: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "mint", "--secret-file", secret, "--issuer", ISSUER];
    all.extend_from_slice(args);
    annals_ok(&all, dir).trim().to_owned()
}

#[test]
fn serve_refuses_a_network_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("0.0.0.0:{}", free_port());
    let message = annals_fails(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        dir.path(),
        2,
        &[
            "without authentication",
            "--auth-jwt-secret-file",
            "--insecure-no-auth",
        ],
    );
    assert!(message.contains(&listen), "{message}");
    assert!(!data.exists(), "nothing is created before the refusal");
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_travels_from_the_request_to_the_events_the_saga_and_nats() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let nats = NatsServer::start();
    let server = tokio::task::block_in_place(|| {
        AnnalsServer::start(&[
            "--auth-jwt-secret-file",
            &secret,
            "--auth-issuer",
            ISSUER,
            "--nats-url",
            &nats.url(),
        ])
    });
    let base = server.url();
    let admin = mint(dir.path(), &secret, &["--sub", "root", "--role", "admin"]);
    let alice = mint(
        dir.path(),
        &secret,
        &[
            "--sub",
            "alice",
            "--role",
            "customer",
            "--customer-id",
            "c-alice",
        ],
    );
    let operator = mint(
        dir.path(),
        &secret,
        &["--sub", "oscar", "--role", "operator"],
    );
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 120}),
        ),
        (
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 10}),
        ),
        (
            "/api/v1/payments/accounts",
            json!({"customer_id": "c-alice"}),
        ),
    ] {
        let (status, answer) =
            send(&client, "POST", format!("{base}{path}"), &admin, Some(body)).await;
        assert!(status < 300, "{path}: {status} {answer}");
    }
    let (status, _) = send(
        &client,
        "POST",
        format!("{base}/api/v1/payments/accounts/c-alice/deposits"),
        &alice,
        Some(json!({"amount": 1000})),
    )
    .await;
    assert_eq!(status, 200);
    // Alice may not order for someone else; she may for herself.
    let (status, problem) = send(
        &client,
        "POST",
        format!("{base}/api/v1/orders"),
        &alice,
        Some(json!({"customer_id": "c-bob", "lines": [{"sku": "apple", "quantity": 1}]})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let (status, placed) = send(
        &client,
        "POST",
        format!("{base}/api/v1/orders"),
        &alice,
        Some(json!({"customer_id": "c-alice", "lines": [{"sku": "apple", "quantity": 2}]})),
    )
    .await;
    assert_eq!(status, 201, "{placed}");
    let order_id = placed["order_id"].as_str().unwrap().to_owned();

    // The saga confirms it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, order) = send(
            &client,
            "GET",
            format!("{base}/api/v1/orders/{order_id}"),
            &alice,
            None,
        )
        .await;
        if order["status"] == "confirmed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the order was not confirmed: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The order's events: placed by alice, confirmed by the saga on her behalf.
    let (status, page) = send(
        &client,
        "GET",
        format!("{base}/api/v1/streams/order-{order_id}"),
        &operator,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    let placed_event = &events[0]["metadata"];
    assert_eq!(placed_event["principal"], "alice");
    assert_eq!(placed_event["issuer"], ISSUER);
    assert_eq!(placed_event["action"], "orders.place");
    let confirmed = &events.last().unwrap()["metadata"];
    assert_eq!(events.last().unwrap()["type"], "OrderConfirmed");
    assert_eq!(confirmed["on_behalf_of"], "alice", "{confirmed}");
    assert_ne!(confirmed["principal"], "alice");
    assert!(confirmed["principal"].as_str().is_some(), "{confirmed}");
    // So are the saga's commands on the stock and the account.
    for stream in ["stock-apple", "account-c-alice"] {
        let (_, page) = send(
            &client,
            "GET",
            format!("{base}/api/v1/streams/{stream}"),
            &operator,
            None,
        )
        .await;
        let by_saga: Vec<&Value> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["metadata"]["on_behalf_of"] == "alice")
            .collect();
        assert!(!by_saga.is_empty(), "{stream}: {page}");
    }

    // The CLI through the server: no token, a token the policy denies, a good one.
    let url = base.as_str();
    let message = annals_fails(
        &["inspect", "log", "--server", url],
        dir.path(),
        8,
        &["requires a token", "ANNALS_TOKEN"],
    );
    assert!(message.contains("--token"), "{message}");
    let message = annals_fails(
        &["inspect", "log", "--server", url, "--token", &alice],
        dir.path(),
        8,
        &["policy denies", "log.read"],
    );
    assert!(
        !message.contains(&alice),
        "the token is never printed: {message}"
    );
    let log = annals_ok(
        &[
            "inspect", "log", "--server", url, "--token", &operator, "--json",
        ],
        dir.path(),
    );
    assert!(log.contains("\"alice\""), "{log}");

    // NATS carries the principal: a copy restored from JetStream alone has it.
    let published = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, outbox) = send(
            &client,
            "GET",
            format!("{base}/api/v1/outbox"),
            &operator,
            None,
        )
        .await;
        if outbox["relay"]["backlog"] == 0 && outbox["relay"]["published"].as_u64() > Some(0) {
            break;
        }
        assert!(
            Instant::now() < published,
            "the relay did not catch up: {outbox}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restored = dir.path().join("restored");
    annals_ok(
        &[
            "restore",
            "--nats-url",
            &nats.url(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        dir.path(),
    );
    let stream = format!("order-{order_id}");
    let copy = annals_ok(
        &[
            "inspect",
            "stream",
            &stream,
            "--data-dir",
            restored.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    let first: Value = serde_json::from_str(copy.lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"]["principal"], "alice", "{first}");
    assert_eq!(first["metadata"]["action"], "orders.place", "{first}");
    let last: Value = serde_json::from_str(copy.lines().last().unwrap()).unwrap();
    assert_eq!(last["metadata"]["on_behalf_of"], "alice", "{last}");
    drop(server);
}
