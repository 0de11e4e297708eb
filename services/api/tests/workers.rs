//! The supervised workers through a real listening server: a worker that fails is
//! restarted (`GET /api/v1/workers` and `annals_worker_restarts_total` show it), one that
//! keeps failing is marked failed and `/readyz` answers 503 naming it, and after the
//! supervisor's shutdown nothing is restarted. The fulfilment saga's driver runs under
//! the same supervisor, as in `annals serve`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api::{ApiConfig, AppState};
use repositories::Repositories;
use sagas::{DriverConfig, DriverWorker, Fulfilment, FulfilmentServices, SystemClock};
use supervisor::{Supervisor, SupervisorConfig};
use tokio_util::sync::CancellationToken;

mod common;

/// Quick restarts, and a worker failing a third time within the minute is failed.
fn config() -> SupervisorConfig {
    SupervisorConfig {
        max_restarts: 2,
        window: Duration::from_secs(60),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
    }
}

/// Spawns `name`: its first `failures` runs fail (an error, or a panic every other
/// time), later ones run until stopped. Returns its count of runs.
fn flaky(supervisor: &mut Supervisor, name: &str, failures: u32) -> Arc<AtomicU32> {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    supervisor.spawn(name, move |stop: CancellationToken| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if run < failures {
                if run % 2 == 1 {
                    panic!("injected panic {run}");
                }
                return Err(format!("injected failure {run}"));
            }
            stop.cancelled().await;
            Ok(())
        }
    });
    runs
}

/// The worker `name` in a `GET /api/v1/workers` answer.
fn worker<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|worker| worker["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {report}"))
}

/// Polls `GET /api/v1/workers` until `done` holds (up to 20 s); returns that answer.
async fn workers_when(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report = common::get_json(client, &format!("{base}/api/v1/workers")).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `series` (name and labels, as written) in `/metrics`.
async fn sample(client: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let text = common::metrics_text(client, base).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_workers_are_restarted_reported_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let repositories = Repositories::new(store.clone());
    let mut supervisor = Supervisor::new(config());
    let saga = DriverWorker::<Fulfilment, _>::new(
        store.clone(),
        Arc::new(FulfilmentServices::new(
            repositories.clone(),
            Duration::from_secs(30),
        )),
        Arc::new(SystemClock),
        DriverConfig::default(),
    )
    .unwrap();
    let state = AppState::sharing(store.clone(), repositories, ApiConfig::default())
        .with_saga(saga.watch())
        .with_workers(supervisor.workers());
    supervisor.spawn("saga:fulfilment", move |stop| saga.run(stop));
    let healing = flaky(&mut supervisor, "healing", 2);
    let serving = common::Serving::start(state).await;
    let (client, base) = (reqwest::Client::new(), serving.base.clone());

    // Failed twice (an error, then a panic), restarted twice, running again.
    let report = workers_when(&client, &base, "healing restarted twice", |report| {
        let healing = worker(report, "healing");
        healing["restarts"] == 2 && healing["state"] == "running"
    })
    .await;
    let healed = worker(&report, "healing");
    assert_eq!(
        healed["last_error"], "panicked: injected panic 1",
        "{report}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(healed["since"].as_str().unwrap()).is_ok(),
        "{report}"
    );
    assert_eq!(worker(&report, "saga:fulfilment")["state"], "running");
    assert_eq!(worker(&report, "saga:fulfilment")["restarts"], 0);
    assert_eq!(healing.load(Ordering::SeqCst), 3);
    assert_eq!(
        sample(
            &client,
            &base,
            r#"annals_worker_restarts_total{worker="healing"}"#
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        sample(
            &client,
            &base,
            r#"annals_worker_state{worker="healing",state="running"}"#
        )
        .await,
        Some(1.0)
    );
    // Healed: the server is ready.
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // A worker that keeps failing: restarted twice, then failed, and /readyz names it.
    let doomed = flaky(&mut supervisor, "doomed", u32::MAX);
    let report = workers_when(&client, &base, "doomed failed", |report| {
        worker(report, "doomed")["state"] == "failed"
    })
    .await;
    assert_eq!(worker(&report, "doomed")["restarts"], 2, "{report}");
    assert_eq!(doomed.load(Ordering::SeqCst), 3);
    let not_ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let problem: serde_json::Value = not_ready.json().await.unwrap();
    assert_eq!(problem["type"], "urn:annals:problem:not-ready", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("doomed"), "{detail}");
    assert!(!detail.contains("healing"), "{detail}");
    assert_eq!(
        sample(
            &client,
            &base,
            r#"annals_worker_state{worker="doomed",state="failed"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        sample(
            &client,
            &base,
            r#"annals_worker_restarts_total{worker="doomed"}"#
        )
        .await,
        Some(2.0)
    );
    // It stays failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(doomed.load(Ordering::SeqCst), 3);

    // One more that is in its backoff when the shutdown begins.
    let stopping = flaky(&mut supervisor, "stopping", u32::MAX);
    workers_when(&client, &base, "stopping failed once", |report| {
        worker(report, "stopping")["last_error"].is_string()
    })
    .await;
    let workers = supervisor.workers();
    assert!(
        supervisor
            .shutdown(Duration::from_secs(10))
            .await
            .is_empty()
    );
    let runs = (
        healing.load(Ordering::SeqCst),
        stopping.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (
            healing.load(Ordering::SeqCst),
            stopping.load(Ordering::SeqCst)
        ),
        runs,
        "nothing is restarted after the shutdown"
    );
    let report = common::get_json(&client, &format!("{base}/api/v1/workers")).await;
    for name in ["healing", "saga:fulfilment"] {
        assert_eq!(worker(&report, name)["state"], "stopped", "{report}");
    }
    // Stopped in its backoff, or failed just before the shutdown.
    let stopping_state = &worker(&report, "stopping")["state"];
    assert!(
        stopping_state == "stopped" || stopping_state == "failed",
        "{report}"
    );
    assert_eq!(worker(&report, "doomed")["state"], "failed", "{report}");
    assert!(workers.failed().contains(&"doomed".to_owned()));
    serving.drain().await;
    store.close().await;
}

#[tokio::test]
async fn a_server_without_a_supervisor_lists_no_workers() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let serving = common::Serving::start(AppState::new(store.clone(), ApiConfig::default())).await;
    let client = reqwest::Client::new();
    let report = common::get_json(&client, &format!("{}/api/v1/workers", serving.base)).await;
    assert_eq!(report, serde_json::json!({"workers": []}));
    let ready = client
        .get(format!("{}/readyz", serving.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    serving.drain().await;
    store.close().await;
}
