//! The server's service level objectives ([`slo::Slos`]) fed from what it serves, and
//! `GET /api/v1/slo`.
//!
//! - Commands (POST requests) count for `command_availability` (good: not a 5xx) and
//!   `command_latency` (good: answered within the objective's threshold), recorded by
//!   the [`record_commands`] middleware around every route.
//! - Read-model freshness is sampled once a second by [`sample_freshness`]: a second is
//!   good when every read model has applied the log up to where its head was one
//!   threshold ago (so that a model less than the threshold behind is fresh).
//! - Saga completion is recorded when the saga driver reports a finished saga and its
//!   duration, through the hook [`saga_completions`] gives the driver.
//!
//! The counts live in memory: a restarted server starts its budgets afresh. Prometheus's
//! rules in `deploy/prometheus` compute the command objectives from `/metrics` across
//! restarts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use eventstore::Position;
use serde::Serialize;
use slo::{Sli, Slos};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::AppState;

/// Seconds since the Unix epoch, the clock of [`Slos`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The saga driver's hook that counts every finished saga for the saga-completion
/// objective (good: finished within its threshold), for `DriverConfig::on_finished`.
pub fn saga_completions(slos: Arc<Slos>) -> sagas::OnFinished {
    sagas::OnFinished(Arc::new(move |_outcome, took: Duration| {
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        slos.record_duration(Sli::SagaCompletion, unix_now(), millis);
    }))
}

/// Counts every command (POST) for the command objectives: good availability unless a
/// 5xx, its latency against each latency objective's threshold.
pub(crate) async fn record_commands(
    State(slos): State<Arc<Slos>>,
    request: Request,
    next: Next,
) -> Response {
    let command = request.method() == Method::POST;
    let started = Instant::now();
    let response = next.run(request).await;
    if command {
        let now = unix_now();
        let available = !response.status().is_server_error();
        slos.record(Sli::CommandAvailability, now, u64::from(available), 1);
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        slos.record_duration(Sli::CommandLatency, now, millis);
    }
    response
}

/// Samples read-model freshness every `every` until `shutdown`: each sample is one event
/// of the freshness SLI, good when every read model's checkpoint has reached the log's
/// head of one freshness threshold ago (the smallest threshold configured, 1 s by
/// default). A server without read models records nothing.
pub async fn sample_freshness(
    state: AppState,
    slos: Arc<Slos>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let Some(threshold) = slos
        .objectives()
        .filter(|objective| objective.sli == Sli::ReadModelFreshness)
        .filter_map(|objective| objective.threshold_ms)
        .min()
        .map(Duration::from_millis)
    else {
        return;
    };
    let mut heads = Heads::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(projections) = state.projections() else {
            return;
        };
        let now = Instant::now();
        heads.push(now, state.store().next_position());
        let Some(due) = heads.head_before(now, threshold) else {
            continue;
        };
        let checkpoints: Vec<Position> = projections
            .status()
            .iter()
            .map(|status| status.checkpoint)
            .collect();
        let fresh = checkpoints.iter().all(|checkpoint| *checkpoint >= due);
        slos.record(Sli::ReadModelFreshness, unix_now(), u64::from(fresh), 1);
    }
}

/// The log's head as it was, sampled over the last while.
#[derive(Debug, Default)]
struct Heads(VecDeque<(Instant, Position)>);

impl Heads {
    fn push(&mut self, at: Instant, head: Position) {
        self.0.push_back((at, head));
        // A minute of samples is plenty for any threshold worth having.
        while self
            .0
            .front()
            .is_some_and(|(then, _)| at.duration_since(*then) > Duration::from_secs(60))
        {
            self.0.pop_front();
        }
    }

    /// The newest head sampled at least `ago` before `now`; `None` until there is one.
    fn head_before(&self, now: Instant, ago: Duration) -> Option<Position> {
        self.0
            .iter()
            .rev()
            .find(|(then, _)| now.duration_since(*then) >= ago)
            .map(|(_, head)| *head)
    }
}

/// Every service level objective: its error budget remaining, its burn rates over 5 min,
/// 30 min, 1 h, 6 h and 3 d, and the alert they call for.
#[utoipa::path(
    get,
    path = "/api/v1/slo",
    tag = "operations",
    responses((status = 200, description = "The objectives", body = SloList))
)]
pub(crate) async fn slo_report(State(state): State<AppState>) -> Json<SloList> {
    Json(SloList::of(state.slos(), unix_now()))
}

/// Writes `annals_slo_error_budget_remaining_ratio{slo}` and
/// `annals_slo_burn_rate{slo,window}` of `slos`, now, into a scrape of `/metrics`.
pub(crate) fn write(slos: &Slos, exposition: &mut crate::metrics::Exposition) {
    use crate::metrics::Kind;
    let report = slos.report(unix_now());
    exposition.family(
        "annals_slo_error_budget_remaining_ratio",
        Kind::Gauge,
        "The share of each objective's 30-day error budget not yet spent (1: none spent).",
    );
    for objective in &report.objectives {
        exposition.sample(
            "annals_slo_error_budget_remaining_ratio",
            &[("slo", &objective.name)],
            objective.error_budget_remaining,
        );
    }
    exposition.family(
        "annals_slo_burn_rate",
        Kind::Gauge,
        "Each objective's error budget burn rate over a window (1: spent in exactly 30 days).",
    );
    for objective in &report.objectives {
        for (window, rate) in &objective.burn_rates {
            exposition.sample(
                "annals_slo_burn_rate",
                &[("slo", &objective.name), ("window", window)],
                *rate,
            );
        }
    }
}

/// Every objective of the server, as `GET /api/v1/slo` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SloList {
    /// The objectives, in configured order.
    pub objectives: Vec<ObjectiveView>,
}

/// One objective's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectiveView {
    /// The objective's name, e.g. `command-availability`.
    pub name: String,
    /// The share of good events promised, e.g. 0.999.
    pub target: f64,
    /// What is counted, in words.
    pub sli: String,
    /// Good events over the last 30 days (since the server started, if later).
    pub good: u64,
    /// All events over the same window.
    pub total: u64,
    /// The share of the error budget not yet spent: 1 when nothing was bad, 0 or below
    /// when it is spent.
    pub error_budget_remaining: f64,
    /// The burn rate by window: `5m`, `30m`, `1h`, `6h`, `3d`. 1 spends the budget in
    /// exactly 30 days.
    pub burn_rates: BTreeMap<String, f64>,
    /// `none`, `ticket` or `page`, by the multiwindow rules (docs/OPERATIONS.md).
    #[schema(example = "none")]
    pub alert: String,
}

impl SloList {
    /// The report of `slos` at `now`.
    pub fn of(slos: &Slos, now: u64) -> Self {
        let report = slos.report(now);
        SloList {
            objectives: report
                .objectives
                .into_iter()
                .map(|objective| ObjectiveView {
                    name: objective.name,
                    target: objective.target,
                    sli: objective.sli,
                    good: objective.good,
                    total: objective.total,
                    error_budget_remaining: objective.error_budget_remaining,
                    burn_rates: objective
                        .burn_rates
                        .into_iter()
                        .map(|(window, rate)| (window.to_owned(), rate))
                        .collect(),
                    alert: match objective.alert {
                        slo::Alert::None => "none",
                        slo::Alert::Ticket => "ticket",
                        slo::Alert::Page => "page",
                    }
                    .to_owned(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_a_threshold_ago_is_the_newest_old_enough() {
        let start = Instant::now();
        let mut heads = Heads::default();
        assert_eq!(heads.head_before(start, Duration::from_secs(1)), None);
        heads.push(start, Position(10));
        heads.push(start + Duration::from_millis(500), Position(20));
        heads.push(start + Duration::from_millis(1_000), Position(30));
        heads.push(start + Duration::from_millis(1_500), Position(40));
        let now = start + Duration::from_millis(1_600);
        // 1 s before 1.6 s is 0.6 s: the newest sample at or before it is at 0.5 s.
        assert_eq!(
            heads.head_before(now, Duration::from_secs(1)),
            Some(Position(20))
        );
        assert_eq!(heads.head_before(now, Duration::ZERO), Some(Position(40)));
        assert_eq!(heads.head_before(now, Duration::from_secs(2)), None);
    }

    #[test]
    fn samples_older_than_a_minute_are_dropped() {
        let start = Instant::now();
        let mut heads = Heads::default();
        heads.push(start, Position(1));
        heads.push(start + Duration::from_secs(61), Position(2));
        assert_eq!(heads.0.len(), 1);
    }
}
