//! The service level objectives of a real listening server: commands counted for
//! availability and latency, reads not, read-model freshness sampled, and
//! `GET /api/v1/slo` in the documented shape.

use std::sync::Arc;
use std::time::Duration;

use api::ApiConfig;
use serde_json::{Value, json};
use slo::{Objective, Sli, Slos};
use tokio_util::sync::CancellationToken;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_count_for_the_command_objectives_and_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        common::ReadSideServing::start(dir.path(), ApiConfig::default(), |state| state).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", server.base))
            .json(&body)
            .send()
    };
    let statuses = [
        post(
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 120}),
        )
        .await
        .unwrap()
        .status(),
        post("/api/v1/payments/accounts", json!({"customer_id": "alice"}))
            .await
            .unwrap()
            .status(),
        // A refused command is an answered one: good for availability.
        post("/api/v1/inventory/skus", json!({"sku": ""}))
            .await
            .unwrap()
            .status(),
    ];
    assert_eq!(statuses.map(|status| status.as_u16()), [201, 201, 400]);
    for _ in 0..5 {
        let read = client
            .get(format!("{}/api/v1/inventory/skus/apple", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
    let report = common::get_json(&client, &format!("{}/api/v1/slo", server.base)).await;
    let availability = common::objective(&report, "command-availability");
    assert_eq!(
        (
            availability["good"].as_u64(),
            availability["total"].as_u64()
        ),
        (Some(3), Some(3)),
        "{report}"
    );
    assert_eq!(availability["error_budget_remaining"], 1.0);
    assert_eq!(availability["alert"], "none");
    assert_eq!(availability["target"], 0.999);
    let latency = common::objective(&report, "command-latency");
    assert_eq!(latency["total"].as_u64(), Some(3), "{report}");
    for window in ["5m", "30m", "1h", "6h", "3d"] {
        assert!(
            availability["burn_rates"][window].is_number(),
            "{window}: {report}"
        );
    }
    // Freshness and sagas are not fed by requests.
    assert_eq!(common::objective(&report, "saga-completion")["total"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_freshness_is_sampled_against_the_head_of_a_threshold_ago() {
    let dir = tempfile::tempdir().unwrap();
    let slos = Arc::new(
        Slos::new(vec![Objective {
            name: "fresh".to_owned(),
            sli: Sli::ReadModelFreshness,
            target: 0.99,
            threshold_ms: Some(200),
        }])
        .unwrap(),
    );
    let shared = slos.clone();
    let server = common::ReadSideServing::start(dir.path(), ApiConfig::default(), move |state| {
        state.with_slos(shared)
    })
    .await;
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(api::slo::sample_freshness(
        server.state.clone(),
        slos.clone(),
        Duration::from_millis(50),
        stop.clone(),
    ));
    // Idle read models are fresh: every sample once a head 200 ms old exists is good.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.cancel();
    sampler.await.unwrap();
    let report = slos.report(api::slo::unix_now());
    let fresh = &report.objectives[0];
    assert!(fresh.total >= 5, "{fresh:?}");
    assert_eq!(fresh.good, fresh.total, "{fresh:?}");
    server.stop().await;
}
