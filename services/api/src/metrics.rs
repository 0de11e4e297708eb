//! `GET /metrics`: the Prometheus text exposition of the whole process.
//!
//! Two sources make one answer:
//!
//! - **Counters and histograms** are recorded where things happen, through the `metrics`
//!   facade, into the one process-wide Prometheus recorder that [`install`] sets up
//!   (once; every later call returns the same handle, so many apps in one process, as in
//!   tests, share it): the HTTP requests ([`track`], a layer of [`crate::app`]), the store's
//!   write path (`eventstore::metrics`: append acknowledgement, fsync, events per group
//!   commit) and the sagas (`sagas::driver::SAGA_DURATION`). Histograms have buckets
//!   ([`install`] sets them), so they are real Prometheus histograms, not summaries.
//! - **Gauges** are read when scraped, from the status each part already keeps
//!   ([`gauges`]): the store's positions, the read models' status, the relay's status,
//!   the saga driver's status, the supervised workers (`annals_worker_restarts_total`,
//!   `annals_worker_state`), and the process itself (`process_*`, from `/proc`).
//!   Nothing records them on a hot path, and they belong to this app's [`AppState`], so
//!   two apps in one process each report their own.
//!
//! The families and their meaning are listed in docs/OPERATIONS.md ("Metrics"). The
//! route is `operations.metrics` for the policy (operators and admins) when the gate is
//! on, and open like every route when it is off.
//!
//! **Adding families** (the SLO gauges, say): record through the facade after [`install`]
//! (`metrics::gauge!("annals_slo_burn_rate", "slo" => ..).set(..)`) and they appear in the
//! same answer; or, for values computed at scrape time, give the state a hook with
//! [`AppState::with_scrape_hook`], which writes into the [`Exposition`] of every scrape.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

mod exposition;
mod gauges;
mod process;

pub use exposition::{Exposition, Kind};

/// Counter (labels `route`, `method`, `status`): HTTP requests answered.
pub const HTTP_REQUESTS: &str = "annals_http_requests_total";
/// Histogram (labels `route`, `method`): seconds from a request's arrival to its
/// response's head (a live event stream counts until its head is sent).
pub const HTTP_DURATION: &str = "annals_http_request_duration_seconds";
/// The `route` of a request that matched no route (a 404 from the fallback): the raw
/// path never becomes a label, so clients cannot grow the series without bound.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How often the recorder's histograms are drained and idle series swept when nobody
/// scrapes: without it, samples would pile up between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Buckets of latency histograms, in seconds: from half a millisecond (an fsync on a
/// fast disk) to 10 s, with 50 ms (the command latency objective) as a bound.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of events per group commit: powers of two up to 8192.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
/// Buckets of saga durations, in seconds, with 5 s (the saga objective) as a bound.
const SAGA_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The Prometheus recorder of this process: installed as the `metrics` facade's global
/// recorder at the first call, the same handle after. If another recorder was installed
/// first (a program of its own), the facade's records go there, and this handle renders
/// only what reaches it; the failure is logged once.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "a metrics recorder was already installed; /metrics shows only its own families");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no metrics upkeep thread: histograms are drained at each scrape only");
        }
        handle
    })
}

/// The recorder's settings: buckets for every histogram family.
fn builder() -> PrometheusBuilder {
    let buckets: [(&str, &[f64]); 5] = [
        (HTTP_DURATION, LATENCY_BUCKETS),
        (eventstore::metrics::APPEND_DURATION, LATENCY_BUCKETS),
        (eventstore::metrics::FSYNC_DURATION, LATENCY_BUCKETS),
        (eventstore::metrics::APPEND_BATCH_EVENTS, BATCH_BUCKETS),
        (sagas::driver::SAGA_DURATION, SAGA_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
            .expect("the bucket lists are constants and not empty");
    }
    builder
}

/// The `# HELP` lines of the recorded families.
fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status."
    );
    metrics::describe_counter!(
        crate::lanes::SHED,
        "Requests shed by their intent lane (503 overloaded), by lane and reason (queue_full, deadline, bulk_first)."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Seconds from a request's arrival to its response's head, by route template and method."
    );
    metrics::describe_histogram!(
        eventstore::metrics::APPEND_DURATION,
        Unit::Seconds,
        "Seconds from an append's call to its acknowledgement (queued, written, fsynced)."
    );
    metrics::describe_histogram!(
        eventstore::metrics::FSYNC_DURATION,
        Unit::Seconds,
        "Seconds of each group commit's fdatasync of the log."
    );
    metrics::describe_histogram!(
        eventstore::metrics::APPEND_BATCH_EVENTS,
        "Events made durable by each group commit (one fdatasync)."
    );
    metrics::describe_histogram!(
        sagas::driver::SAGA_DURATION,
        Unit::Seconds,
        "Seconds from a saga instance's first record to its end, by saga and outcome."
    );
}

/// The whole exposition for `state`: the recorder's families, then the gauges read now,
/// then the state's scrape hook, if any.
pub fn render(state: &AppState) -> String {
    let mut exposition = Exposition::new(install().render());
    gauges::write(state, &mut exposition);
    process::write(&mut exposition);
    crate::slo::write(state.slos(), &mut exposition);
    crate::lanes::write(state.lanes(), &mut exposition);
    if let Some(hook) = state.scrape_hook() {
        (hook.0)(&mut exposition);
    }
    exposition.finish()
}

/// A function that adds families to every scrape of one app ([`AppState::with_scrape_hook`]).
#[derive(Clone)]
pub struct ScrapeHook(pub Arc<dyn Fn(&mut Exposition) + Send + Sync>);

impl std::fmt::Debug for ScrapeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeHook")
    }
}

/// The layer of [`crate::app`] that counts every request and times it, labelled by the
/// matched route template (never the raw path), the method and the status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => UNMATCHED_ROUTE.to_owned(),
    };
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed());
    response
}

/// The method as a label: the standard ones by name, anything else `OTHER` (a client
/// may send any token as a method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
