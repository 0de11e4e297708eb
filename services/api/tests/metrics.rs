//! `GET /metrics` after a known workload, against a real listening server running the
//! read models, the fulfilment saga and an outbox relay (to an address where nothing
//! listens), parsed with a Prometheus text parser; and the service level objectives fed
//! as the server feeds them, in `/metrics` and `GET /api/v1/slo`.
//!
//! The metrics recorder is process-wide, so this binary holds one test only: the
//! counts it asserts are exact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use eventstore::EventStore;
use openmetrics_parser::{HistogramValue, MetricsExposition, PrometheusType, PrometheusValue};
use repositories::Repositories;
use sagas::{Driver, DriverConfig, FulfilmentServices, SystemClock};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;

const ORDERS: usize = 10;

struct Server {
    base: String,
    client: reqwest::Client,
    store: EventStore,
    serving: common::Serving,
    driver: Driver,
    runner: (CancellationToken, JoinHandle<()>),
    relay: (CancellationToken, JoinHandle<Result<(), outbox::Error>>),
}

impl Server {
    async fn start(dir: &std::path::Path) -> Server {
        let store = common::open_store(dir).await;
        let repositories = Repositories::new(store.clone());
        let (projections, runner) =
            read_models::ReadSide::start(&store, projections::RunnerConfig::default()).unwrap();
        let runner_stop = CancellationToken::new();
        let runner = tokio::spawn(runner.run(runner_stop.clone()));
        let services = FulfilmentServices::new(repositories.clone(), Duration::from_secs(30));
        // The objectives as `annals serve` feeds them: commands by the app, sagas by the
        // driver's hook.
        let slos = Arc::new(slo::Slos::new(slo::Objective::defaults()).unwrap());
        let driver = Driver::start(
            store.clone(),
            Arc::new(services),
            Arc::new(SystemClock),
            DriverConfig {
                on_finished: Some(api::slo::saga_completions(slos.clone())),
                ..DriverConfig::default()
            },
        )
        .unwrap();
        let relay_config = outbox::RelayConfig {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
            ack_timeout: Duration::from_millis(300),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            status_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
            ..outbox::RelayConfig::new("nats://127.0.0.1:1")
        };
        let relay = outbox::Relay::new(store.clone(), relay_config).unwrap();
        let state = AppState::sharing(store.clone(), repositories, ApiConfig::default())
            .with_projections(projections)
            .with_relay(relay.status())
            .with_saga(driver.watch())
            .with_slos(slos);
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(relay.run(relay_stop.clone()));
        let serving = common::Serving::start(state).await;
        Server {
            base: serving.base.clone(),
            client: reqwest::Client::new(),
            store,
            serving,
            driver,
            runner: (runner_stop, runner),
            relay: (relay_stop, relay),
        }
    }

    async fn stop(self) {
        self.serving.drain().await;
        self.driver.stop().await;
        let (stop, runner) = self.runner;
        stop.cancel();
        runner.await.unwrap();
        let (stop, relay) = self.relay;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), relay)
            .await
            .expect("the relay stops")
            .unwrap()
            .unwrap();
        self.store.close().await;
    }

    async fn post(&self, path: &str, body: serde_json::Value, status: u16) -> serde_json::Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
        response.json().await.unwrap()
    }

    /// `/metrics`, checked for its content type and parsed.
    async fn scrape(&self) -> Metrics {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let exposition = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|error| panic!("{error:?}\n{text}"));
        Metrics { exposition, text }
    }
}

/// One parsed scrape, and its text for messages.
struct Metrics {
    exposition: MetricsExposition<PrometheusType, PrometheusValue>,
    text: String,
}

/// A sample's labels and value.
type Found<'a> = (BTreeMap<String, String>, &'a PrometheusValue);

impl Metrics {
    /// The samples of the family `family` whose labels include `labels`.
    fn samples(&self, family: &str, labels: &[(&str, &str)]) -> Vec<Found<'_>> {
        let Some(family) = self.exposition.families.get(family) else {
            return Vec::new();
        };
        family
            .iter_samples()
            .filter_map(|sample| {
                let set = sample.get_labelset().unwrap();
                let all: BTreeMap<String, String> = set
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                let matches = labels
                    .iter()
                    .all(|(name, value)| all.get(*name).map(String::as_str) == Some(*value));
                matches.then_some((all, &sample.value))
            })
            .collect()
    }

    /// The one sample of `family` with `labels`, if there is one.
    fn one(&self, family: &str, labels: &[(&str, &str)]) -> Option<&PrometheusValue> {
        let found = self.samples(family, labels);
        assert!(
            found.len() <= 1,
            "{family} {labels:?}: {} samples",
            found.len()
        );
        found.first().map(|(_, value)| *value)
    }

    /// The value of the one counter or gauge sample of `family` with `labels`, if any.
    fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.one(family, labels).map(|value| match value {
            PrometheusValue::Counter(counter) => counter.value.as_f64(),
            PrometheusValue::Gauge(value) | PrometheusValue::Unknown(value) => value.as_f64(),
            other => panic!("{family} is not a number: {other:?}"),
        })
    }

    fn expect(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, labels)
            .unwrap_or_else(|| panic!("no {family} {labels:?} in\n{}", self.text))
    }

    /// The one histogram sample of `family` with `labels`, if any.
    fn histogram(&self, family: &str, labels: &[(&str, &str)]) -> Option<&HistogramValue> {
        self.one(family, labels).map(|value| match value {
            PrometheusValue::Histogram(histogram) => histogram,
            other => panic!("{family} is not a histogram: {other:?}"),
        })
    }

    /// `_count` of the histogram `family` with `labels` (0 if absent).
    fn count(&self, family: &str, labels: &[(&str, &str)]) -> u64 {
        self.histogram(family, labels)
            .map_or(0, |histogram| histogram.count.expect("a _count"))
    }

    /// `_sum` of the histogram `family` with `labels`, if present.
    fn sum(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.histogram(family, labels)
            .and_then(|histogram| histogram.sum.as_ref().map(|sum| sum.as_f64()))
    }

    fn has_family(&self, family: &str) -> bool {
        self.exposition.families.contains_key(family)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_workload_are_exact_and_sane() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;

    // The workload: a sku with stock, an account with money, ten orders, one stray path.
    server
        .post(
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 100}),
            201,
        )
        .await;
    server
        .post(
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 1000}),
            200,
        )
        .await;
    server
        .post(
            "/api/v1/payments/accounts",
            json!({"customer_id": "c-1"}),
            201,
        )
        .await;
    server
        .post(
            "/api/v1/payments/accounts/c-1/deposits",
            json!({"amount": 1_000_000}),
            200,
        )
        .await;
    for _ in 0..ORDERS {
        server
            .post(
                "/api/v1/orders",
                json!({"customer_id": "c-1", "lines": [{"sku": "apple", "quantity": 2}]}),
                201,
            )
            .await;
    }
    let stray = server
        .client
        .get(format!("{}/api/v1/no/such/route", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status().as_u16(), 404);

    // Every saga confirmed and every read model caught up (polling).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let confirmed = [("saga", "fulfilment"), ("outcome", "confirmed")];
    let metrics = loop {
        let metrics = server.scrape().await;
        let sagas = metrics.count("annals_saga_duration_seconds", &confirmed);
        let lagging = metrics
            .samples("annals_projection_lag_events", &[])
            .iter()
            .any(|(_, lag)| !matches!(lag, PrometheusValue::Gauge(lag) if lag.as_f64() == 0.0));
        let head = server.store.next_position().0 as f64;
        let settled = metrics.value("annals_log_next_position", &[]) == Some(head)
            && metrics.sum("annals_append_batch_events", &[]) == Some(head);
        if sagas == ORDERS as u64 && !lagging && settled {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled within 30 s: {sagas} sagas confirmed, lagging {lagging}, settled {settled}\n{}",
            metrics.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // HTTP: counted by route template, method and status; the raw path is never a label.
    let placed = [
        ("route", "/api/v1/orders"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(metrics.expect("annals_http_requests_total", &placed), 10.0);
    let restocked = [
        ("route", "/api/v1/inventory/skus/{sku}/restock"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(
        metrics.expect("annals_http_requests_total", &restocked),
        1.0
    );
    let stray = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(metrics.expect("annals_http_requests_total", &stray), 1.0);
    for (labels, _) in metrics.samples("annals_http_requests_total", &[]) {
        let route = &labels["route"];
        assert!(
            route == "unmatched" || !route.contains("apple") && !route.contains("c-1"),
            "a raw path as a route: {route}"
        );
    }
    let orders_route = [("route", "/api/v1/orders"), ("method", "POST")];
    assert_eq!(
        metrics.count("annals_http_request_duration_seconds", &orders_route),
        10
    );

    // Sagas: ten confirmed, none cancelled, none running.
    let cancelled = [("saga", "fulfilment"), ("outcome", "cancelled")];
    assert_eq!(metrics.count("annals_saga_duration_seconds", &cancelled), 0);
    let phases: BTreeMap<String, f64> = metrics
        .samples("annals_saga_instances", &[("saga", "fulfilment")])
        .into_iter()
        .map(|(labels, value)| {
            let PrometheusValue::Gauge(count) = value else {
                panic!("annals_saga_instances is a gauge: {value:?}");
            };
            (labels["phase"].clone(), count.as_f64())
        })
        .collect();
    assert_eq!(phases.len(), 8, "every phase of the saga: {phases:?}");
    assert!(phases.values().all(|count| *count == 0.0), "{phases:?}");
    assert!(phases.contains_key("reserving") && phases.contains_key("confirmed"));

    // The store: the log's end, the events of every group commit, acknowledgements.
    let head = server.store.next_position().0 as f64;
    assert_eq!(metrics.expect("annals_log_next_position", &[]), head);
    assert_eq!(metrics.sum("annals_append_batch_events", &[]), Some(head));
    assert!(metrics.expect("annals_index_lag_events", &[]) >= 0.0);
    let appends = metrics.count("annals_append_duration_seconds", &[]);
    // At least one append per command (sku, restock, account, deposit, orders) and per
    // saga record.
    assert!(appends >= (4 + ORDERS) as u64, "{appends} appends");
    assert!(metrics.count("annals_fsync_duration_seconds", &[]) >= 1);

    // Read models: live, one state each.
    let projections: Vec<String> = metrics
        .samples("annals_projection_lag_events", &[])
        .into_iter()
        .map(|(labels, _)| labels["projection"].clone())
        .collect();
    assert!(
        projections.contains(&read_models::ORDERS.to_owned()),
        "{projections:?}"
    );
    for projection in &projections {
        let states: Vec<(String, f64)> = metrics
            .samples("annals_projection_state", &[("projection", projection)])
            .into_iter()
            .map(|(labels, value)| match value {
                PrometheusValue::Gauge(value) => (labels["state"].clone(), value.as_f64()),
                _ => panic!("annals_projection_state is a gauge"),
            })
            .collect();
        assert_eq!(states.len(), 5, "{projection}: {states:?}");
        let current: Vec<&(String, f64)> = states.iter().filter(|(_, v)| *v == 1.0).collect();
        assert_eq!(current.len(), 1, "{projection}: {states:?}");
        assert_eq!(current[0].0, "live", "{projection}: {states:?}");
    }

    // The relay (NATS away): nothing published, the whole log waiting, one breaker state.
    assert_eq!(metrics.expect("annals_relay_published_total", &[]), 0.0);
    let backlog = metrics.expect("annals_relay_backlog_events", &[]);
    assert!(backlog > 0.0 && backlog <= head, "backlog {backlog}");
    let breaker: f64 = ["closed", "open", "half_open"]
        .iter()
        .map(|state| metrics.expect("annals_relay_breaker_state", &[("state", state)]))
        .sum();
    assert_eq!(breaker, 1.0);

    // The objectives: every one with its full budget (nothing failed), a burn rate of 0
    // over each window; `/api/v1/slo` counts the same commands and sagas.
    let objectives = [
        "command-availability",
        "command-latency",
        "read-model-freshness",
        "saga-completion",
    ];
    for slo in objectives {
        assert_eq!(
            metrics.expect("annals_slo_error_budget_remaining_ratio", &[("slo", slo)]),
            1.0,
            "{slo}"
        );
        for window in ["5m", "30m", "1h", "6h", "3d"] {
            let labels = [("slo", slo), ("window", window)];
            assert_eq!(
                metrics.expect("annals_slo_burn_rate", &labels),
                0.0,
                "{slo}"
            );
        }
    }
    let report = common::get_json(&server.client, &format!("{}/api/v1/slo", server.base)).await;
    let counts = |name: &str| {
        let objective = common::objective(&report, name);
        (objective["good"].as_u64(), objective["total"].as_u64())
    };
    // Commands: sku, restock, account, deposit and the orders; the reads count not.
    let commands = (4 + ORDERS) as u64;
    assert_eq!(
        counts("command-availability"),
        (Some(commands), Some(commands))
    );
    assert_eq!(counts("command-latency").1, Some(commands));
    // Sagas: each confirmed order, through the driver's hook.
    let sagas = ORDERS as u64;
    assert_eq!(counts("saga-completion"), (Some(sagas), Some(sagas)));

    // Histograms are histograms: buckets ascending and cumulative, `+Inf` = `_count`.
    let families = [
        "annals_http_request_duration_seconds",
        "annals_append_duration_seconds",
        "annals_fsync_duration_seconds",
        "annals_append_batch_events",
        "annals_saga_duration_seconds",
    ];
    for family in families {
        let found = metrics.samples(family, &[]);
        assert!(!found.is_empty(), "no {family}\n{}", metrics.text);
        for (labels, value) in found {
            let PrometheusValue::Histogram(histogram) = value else {
                panic!("{family} is not a histogram: {value:?}");
            };
            let buckets = &histogram.buckets;
            assert!(buckets.len() >= 2, "{family} {labels:?}: {buckets:?}");
            for pair in buckets.windows(2) {
                assert!(
                    pair[0].upper_bound < pair[1].upper_bound,
                    "{family}: {buckets:?}"
                );
                assert!(
                    pair[0].count.as_f64() <= pair[1].count.as_f64(),
                    "{family}: {buckets:?}"
                );
            }
            let last = buckets.last().unwrap();
            assert!(last.upper_bound.is_infinite(), "{family}: {buckets:?}");
            assert_eq!(
                Some(last.count.as_f64() as u64),
                histogram.count,
                "{family} {labels:?}"
            );
        }
    }

    // The process.
    assert!(metrics.expect("process_resident_memory_bytes", &[]) > 0.0);
    assert!(metrics.expect("process_open_fds", &[]) > 0.0);
    assert!(metrics.has_family("process_cpu_seconds_total"));
    assert!(metrics.has_family("process_max_fds"));
    assert!(metrics.has_family("process_start_time_seconds"));

    server.stop().await;
}
