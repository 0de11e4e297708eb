//! A server with metrics off (`ApiConfig::metrics = false`, `annals serve --no-metrics`)
//! records nothing: it installs no metrics recorder, and `/metrics` answers 404
//! `metrics-off`, while commands are served as usual.
//!
//! Whether a recorder is installed is process-wide, so this binary holds one test only.

use api::{ApiConfig, AppState};
use repositories::Repositories;
use serde_json::{Value, json};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_metrics_off_installs_no_recorder_and_answers_404() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let config = ApiConfig {
        metrics: false,
        ..ApiConfig::default()
    };
    let state = AppState::sharing(store.clone(), Repositories::new(store.clone()), config);
    let serving = common::Serving::start(state).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/v1/inventory/skus", serving.base))
        .json(&json!({"sku": "apple", "name": "Apple", "unit_price": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let scraped = client
        .get(format!("{}/metrics", serving.base))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 404);
    let problem: Value = scraped.json().await.unwrap();
    assert_eq!(problem["type"], "urn:annals:problem:metrics-off");
    assert!(
        problem["detail"].as_str().unwrap().contains("--no-metrics"),
        "{problem}"
    );

    // Nothing installed a recorder: this one is the first.
    assert!(
        metrics::set_global_recorder(metrics::NoopRecorder).is_ok(),
        "a server with metrics off installed a metrics recorder"
    );
    serving.drain().await;
    store.close().await;
}
