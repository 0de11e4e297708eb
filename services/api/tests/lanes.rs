//! Intent lanes through a real listening server: a bulk lane flooded with rebuilds,
//! exports and 1,000-event pages sheds with 503 `overloaded` and `Retry-After` while
//! interactive commands keep succeeding; a rebuild keeps its slot until it is done; the
//! `Annals-Intent` header moves a request to a lower lane, never a higher one.

mod common;

use std::time::Duration;

use api::lanes::{LaneLimits, LanesConfig};
use api::{ApiConfig, AppState};
use serde_json::{Value, json};

/// A server over a fresh store in `dir` whose bulk lane runs one request and queues
/// `bulk_queue`; with the fault points on (a slow handler holds a slot on demand).
async fn start(
    dir: &std::path::Path,
    bulk_queue: usize,
) -> (common::Serving, eventstore::EventStore) {
    let store = common::open_store(dir).await;
    let config = one_bulk_slot(bulk_queue);
    let state = AppState::new(store.clone(), config).with_chaos(chaos::Chaos::enabled());
    (common::Serving::start(state).await, store)
}

/// The server's configuration with a bulk lane of one slot, `queue` waiting places and a
/// 300 ms wait.
fn one_bulk_slot(queue: usize) -> ApiConfig {
    ApiConfig {
        lanes: LanesConfig {
            bulk: LaneLimits {
                concurrency: 1,
                queue,
                max_wait: Duration::from_millis(300),
            },
            ..LanesConfig::default()
        },
        ..ApiConfig::default()
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

/// Registers `apple` and appends `restocks` more events to its stream.
async fn seed(client: &reqwest::Client, base: &str, restocks: usize) {
    let response = post(
        client,
        format!("{base}/api/v1/inventory/skus"),
        json!({"sku": "apple", "name": "Apple", "unit_price": 10}),
    )
    .await;
    assert_eq!(response.status(), 201);
    for _ in 0..restocks {
        let response = post(
            client,
            format!("{base}/api/v1/inventory/skus/apple/restock"),
            json!({"quantity": 1}),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
}

/// Waits until a request runs in the bulk lane (its gauge at 1), reading `/metrics`
/// with `authorization` when the server demands a token.
async fn wait_for_a_bulk_request(
    client: &reqwest::Client,
    base: &str,
    authorization: Option<&str>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut request = client.get(format!("{base}/metrics"));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let metrics = request.send().await.unwrap().text().await.unwrap();
        if metrics.contains("annals_lane_in_flight{lane=\"bulk\"} 1") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the large page never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_shed(response: reqwest::Response, lane: &str) {
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:annals:problem:overloaded",
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("the {lane} lane")), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_commands_succeed_while_the_bulk_lane_is_flooded() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ReadSideServing::start(dir.path(), one_bulk_slot(2), |state| state).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    seed(&client, &base, 300).await;

    // Forty clients flooding the bulk lane for two seconds, each in turn asking for a
    // read model's rebuild, a 1,000-event page of a stream (an export) and one of the
    // log.
    let flood_until = tokio::time::Instant::now() + Duration::from_secs(2);
    let models: Vec<String> = read_models::projections()
        .iter()
        .map(|projection| projection.name().to_owned())
        .collect();
    let mut flood = tokio::task::JoinSet::new();
    for client_number in 0..40usize {
        let (client, base, models) = (client.clone(), base.clone(), models.clone());
        flood.spawn(async move {
            let (mut served, mut shed) = (0u32, 0u32);
            let mut turn = client_number;
            while tokio::time::Instant::now() < flood_until {
                let request = match turn % 3 {
                    0 => {
                        let model = &models[turn / 3 % models.len()];
                        client.post(format!("{base}/api/v1/projections/{model}/rebuild"))
                    }
                    1 => client.get(format!("{base}/api/v1/streams/stock-apple?limit=1000")),
                    _ => client.get(format!("{base}/api/v1/log?from=0&limit=1000")),
                };
                turn += 1;
                let response = request.send().await.unwrap();
                match response.status().as_u16() {
                    200 | 202 => served += 1,
                    503 => {
                        assert_shed(response, "bulk").await;
                        shed += 1;
                    }
                    other => panic!("a bulk request answered {other}"),
                }
            }
            (served, shed)
        });
    }
    // Meanwhile: interactive commands, every one answered 200.
    let mut commands = 0;
    while tokio::time::Instant::now() < flood_until {
        let response = post(
            &client,
            format!("{base}/api/v1/inventory/skus/apple/restock"),
            json!({"quantity": 1}),
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "an interactive command during the flood"
        );
        commands += 1;
    }
    let (mut served, mut shed) = (0, 0);
    while let Some(counts) = flood.join_next().await {
        let (s, d) = counts.unwrap();
        served += s;
        shed += d;
    }
    assert!(commands > 10, "only {commands} commands in two seconds");
    assert!(served > 0, "the bulk lane served nothing");
    assert!(shed > 0, "the bulk lane shed nothing: {served} served");
    let metrics = common::metrics_text(&client, &base).await;
    let counted: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("annals_lane_shed_total{") && line.contains("lane=\"bulk\"")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // The recorder is the process's: the other test of this file sheds a few too.
    assert!(
        counted as u32 >= shed,
        "every shed request is counted: {counted} < {shed}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intent_header_lowers_a_lane_and_never_raises_one() {
    let dir = tempfile::tempdir().unwrap();
    let (serving, store) = start(dir.path(), 0).await;
    let client = reqwest::Client::new();
    let base = serving.base.clone();
    seed(&client, &base, 0).await;
    let response = post(
        &client,
        format!("{base}/api/v1/chaos/faults"),
        json!({"point": "http.handler", "effect": "delay", "delay_ms": 3000, "count": 1}),
    )
    .await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    // One large page takes the bulk lane's only slot for three seconds.
    let holder = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            client
                .get(format!("{base}/api/v1/log?from=0&limit=500"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_for_a_bulk_request(&client, &base, None).await;
    let sku = format!("{base}/api/v1/inventory/skus/apple");
    // A read of the interactive lane, marked bulk by its caller: shed (no queue).
    let marked = client
        .get(&sku)
        .header("Annals-Intent", "bulk")
        .send()
        .await
        .unwrap();
    assert_shed(marked, "bulk").await;
    // The same read unmarked runs in its own lane.
    assert_eq!(client.get(&sku).send().await.unwrap().status(), 200);
    // A large page marked interactive stays bulk: a caller cannot raise its lane.
    let raised = client
        .get(format!("{base}/api/v1/log?from=0&limit=500"))
        .header("Annals-Intent", "interactive")
        .send()
        .await
        .unwrap();
    assert_shed(raised, "bulk").await;
    // An unknown intent is a 400 naming the lanes.
    let unknown = client
        .get(&sku)
        .header("Annals-Intent", "urgent")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let problem: Value = unknown.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:annals:problem:invalid-intent",
        "{problem}"
    );
    assert_eq!(holder.await.unwrap(), 200);
    serving.drain().await;
    store.close().await;
}

/// The policy decides who may raise a request's lane (`raise_intent`): with the bulk
/// lane's only slot held, a large page asked for as `interactive` is served to an admin
/// (raised to the interactive lane) and shed for an operator (the default policy grants
/// it only the operator lane), whose page asked for as `operator` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_who_may_raise_a_lane() {
    use security::Role;
    use security::auth::{AuthConfig, Authenticator, MintClaims, mint};

    const SECRET: &[u8] = b"a secret of thirty-two bytes or more, for tests";
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let authenticator = Authenticator::new(&AuthConfig {
        jwt_secret_file: Some(secret),
        ..AuthConfig::default()
    })
    .await
    .unwrap();
    let security = api::gate::Security::new(
        authenticator,
        std::sync::Arc::new(security::policy::Policy::default_policy().unwrap()),
        security::rate_limit::RateLimiter::new(security::rate_limit::RateLimits::default()),
    );
    let token = |sub: &str, role: Role| {
        let claims = MintClaims {
            sub: sub.to_owned(),
            roles: vec![role],
            customer_id: None,
            issuer: None,
            audience: None,
        };
        format!(
            "Bearer {}",
            mint(SECRET, &claims, Duration::from_secs(600)).unwrap()
        )
    };
    let (admin, operator) = (token("ada", Role::Admin), token("oscar", Role::Operator));
    let store = common::open_store(dir.path()).await;
    let config = one_bulk_slot(0);
    let state = AppState::new(store.clone(), config)
        .with_security(security)
        .with_chaos(chaos::Chaos::enabled());
    let serving = common::Serving::start(state).await;
    let (client, base) = (reqwest::Client::new(), serving.base.clone());
    let fault = json!({"point": "http.handler", "effect": "delay", "delay_ms": 3000, "count": 1});
    let response = client
        .post(format!("{base}/api/v1/chaos/faults"))
        .header("authorization", &admin)
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let page = format!("{base}/api/v1/log?from=0&limit=500");
    let holder = tokio::spawn(client.get(&page).header("authorization", &admin).send());
    wait_for_a_bulk_request(&client, &base, Some(&admin)).await;
    let ask = |who: &str, intent: &str| {
        client
            .get(&page)
            .header("authorization", who)
            .header("Annals-Intent", intent)
            .send()
    };
    assert_shed(ask(&operator, "interactive").await.unwrap(), "bulk").await;
    assert_eq!(ask(&operator, "operator").await.unwrap().status(), 200);
    assert_eq!(ask(&admin, "interactive").await.unwrap().status(), 200);
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
    serving.drain().await;
    store.close().await;
}

/// A rebuild keeps the bulk slot of the request that started it until the new model has
/// taken over: the lane bounds the rebuilds running, not only the requests starting
/// them. The rebuild is held on an injected `projection.apply` panic (retried after a
/// pause, so it runs on), then let go by clearing the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_its_bulk_slot_until_the_new_model_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let chaos = chaos::Chaos::enabled();
    let runner_config = projections::RunnerConfig {
        chaos: chaos.clone(),
        // The first retry of the failing event comes 1 to 2 s after the failure.
        poison_backoff: Duration::from_secs(2),
        poison_retries: 2,
        ..projections::RunnerConfig::default()
    };
    let server = common::ReadSideServing::start_with_runner(
        dir.path(),
        one_bulk_slot(0),
        runner_config,
        |state| state.with_chaos(chaos),
    )
    .await;
    let (store, handle) = (
        server.store.clone(),
        server.state.projections().unwrap().handle().clone(),
    );
    let (client, base) = (reqwest::Client::new(), server.base.clone());
    seed(&client, &base, 5).await;
    handle
        .wait_for_all(
            eventstore::Position(store.next_position().0 - 1),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let response = post(
        &client,
        format!("{base}/api/v1/chaos/faults"),
        json!({"point": "projection.apply", "effect": "panic", "duration_secs": 600}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let response = post(
        &client,
        format!("{base}/api/v1/projections/inventory/rebuild"),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 202);
    // Answered, and its slot still taken: by the rebuild, failing and waiting to retry.
    wait_for_a_bulk_request(&client, &base, None).await;
    let asked = tokio::time::Instant::now();
    let page = client
        .get(format!("{base}/api/v1/log?limit=1000"))
        .send()
        .await
        .unwrap();
    let answered_after = asked.elapsed();
    assert_shed(page, "bulk").await;
    // Shed at once (no queue), but answered only after the lane's 300 ms wait: a client
    // ignoring Retry-After cannot make thousands of shed answers a second.
    assert!(
        answered_after >= Duration::from_millis(300),
        "a bulk request shed without waiting was answered after {answered_after:?}"
    );

    // Let it go: the retry succeeds, the new model takes over, the slot is free again.
    let response = client
        .delete(format!("{base}/api/v1/chaos/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.status_of("inventory").unwrap().rebuild.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild never took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = common::metrics_text(&client, &base).await;
    assert!(
        metrics.contains("annals_lane_in_flight{lane=\"bulk\"} 0"),
        "the rebuild gave its slot back"
    );
    let page = client
        .get(format!("{base}/api/v1/log?limit=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    server.stop().await;
}
