//! The families read at scrape time from the status each part of the server keeps: the
//! store's positions, the read models' status, the outbox relay's status and the saga
//! driver's status, the supervised workers' statuses and the payment providers'
//! breakers. A part this server does not run (no relay, no saga, no supervisor, no
//! provider) writes no family.

use outbox::BreakerState;
use projections::State;

use super::exposition::{Exposition, Kind};
use crate::AppState;

/// Every state a projection reports, as the `state` label says it.
const PROJECTION_STATES: [&str; 5] = ["catching_up", "live", "outdated", "faulted", "stopped"];

/// Writes every family this server's state has.
pub(super) fn write(state: &AppState, out: &mut Exposition) {
    store(state, out);
    read_models(state, out);
    relay(state, out);
    saga(state, out);
    workers(state, out);
    dependencies(state, out);
}

/// The payment providers' circuit breakers, one series per provider (its base URL).
fn dependencies(state: &AppState, out: &mut Exposition) {
    let Some(chain) = state.payment_providers() else {
        return;
    };
    let statuses = chain.dependencies();
    out.family(
        "annals_dependency_breaker_state",
        Kind::Gauge,
        "1 for the dependency's circuit breaker state (closed, open, half_open), 0 for the others.",
    );
    for status in &statuses {
        for breaker in BreakerState::ALL {
            let value = if breaker == status.state { 1.0 } else { 0.0 };
            out.sample(
                "annals_dependency_breaker_state",
                &[("dependency", &status.name), ("state", breaker.name())],
                value,
            );
        }
    }
    out.family(
        "annals_dependency_breaker_transitions_total",
        Kind::Counter,
        "Times the dependency's circuit breaker entered the state since the server started.",
    );
    for status in &statuses {
        for breaker in BreakerState::ALL {
            out.sample(
                "annals_dependency_breaker_transitions_total",
                &[("dependency", &status.name), ("to", breaker.name())],
                status.transitions.into_state(breaker) as f64,
            );
        }
    }
    out.family(
        "annals_dependency_failures_total",
        Kind::Counter,
        "Calls to the dependency that failed (after their retries) since the server started.",
    );
    for status in &statuses {
        out.sample(
            "annals_dependency_failures_total",
            &[("dependency", &status.name)],
            status.failures_total as f64,
        );
    }
}

fn workers(state: &AppState, out: &mut Exposition) {
    let Some(workers) = state.workers() else {
        return;
    };
    let statuses = workers.statuses();
    out.family(
        "annals_worker_restarts_total",
        Kind::Counter,
        "Times the supervisor restarted the background worker since the server started.",
    );
    for status in &statuses {
        out.sample(
            "annals_worker_restarts_total",
            &[("worker", &status.name)],
            status.restarts as f64,
        );
    }
    out.family(
        "annals_worker_state",
        Kind::Gauge,
        "1 for the background worker's current state (starting, running, backoff, failed, stopped), 0 for the others.",
    );
    for status in &statuses {
        for candidate in supervisor::WorkerState::ALL {
            let value = if candidate == status.state { 1.0 } else { 0.0 };
            out.sample(
                "annals_worker_state",
                &[("worker", &status.name), ("state", candidate.as_str())],
                value,
            );
        }
    }
}

fn store(state: &AppState, out: &mut Exposition) {
    let store = state.store();
    let next = store.next_position().0;
    let indexed = store.indexed_position().0;
    out.single(
        "annals_log_next_position",
        Kind::Gauge,
        "The position the next appended event will get: durable events in the log.",
        next as f64,
    );
    out.single(
        "annals_index_lag_events",
        Kind::Gauge,
        "Durable events the index does not cover yet.",
        next.saturating_sub(indexed) as f64,
    );
}

fn read_models(state: &AppState, out: &mut Exposition) {
    let Some(read_side) = state.projections() else {
        return;
    };
    let statuses = read_side.status();
    out.family(
        "annals_projection_lag_events",
        Kind::Gauge,
        "Events of the log the projection's active read model has not applied yet.",
    );
    for status in &statuses {
        out.sample(
            "annals_projection_lag_events",
            &[("projection", &status.name)],
            status.lag as f64,
        );
    }
    out.family(
        "annals_projection_state",
        Kind::Gauge,
        "1 for the projection's current state (catching_up, live, outdated, faulted, stopped), 0 for the others.",
    );
    for status in &statuses {
        let current = state_name(&status.state);
        for name in PROJECTION_STATES {
            let value = if name == current { 1.0 } else { 0.0 };
            out.sample(
                "annals_projection_state",
                &[("projection", &status.name), ("state", name)],
                value,
            );
        }
    }
}

/// A projection state's label (the `state` member of its JSON status).
fn state_name(state: &State) -> &'static str {
    match state {
        State::CatchingUp => "catching_up",
        State::Live => "live",
        State::Outdated => "outdated",
        State::Faulted { .. } => "faulted",
        State::Stopped => "stopped",
    }
}

fn relay(state: &AppState, out: &mut Exposition) {
    let Some(relay) = state.relay() else {
        return;
    };
    let status = relay.current();
    out.single(
        "annals_relay_backlog_events",
        Kind::Gauge,
        "Events durable in the log and not yet acknowledged by JetStream.",
        status.backlog as f64,
    );
    out.single(
        "annals_relay_published_total",
        Kind::Counter,
        "Events the relay has published and JetStream acknowledged since the relay started.",
        status.published as f64,
    );
    out.family(
        "annals_relay_breaker_state",
        Kind::Gauge,
        "1 for the relay's circuit breaker state (closed, open, half_open), 0 for the others.",
    );
    for breaker in BreakerState::ALL {
        let value = if breaker == status.breaker { 1.0 } else { 0.0 };
        out.sample(
            "annals_relay_breaker_state",
            &[("state", breaker.name())],
            value,
        );
    }
}

fn saga(state: &AppState, out: &mut Exposition) {
    let Some(saga) = state.saga() else {
        return;
    };
    let status = saga.borrow().clone();
    out.family(
        "annals_saga_instances",
        Kind::Gauge,
        "Saga instances running now in this process, by phase (finished ones are counted by annals_saga_duration_seconds).",
    );
    for (phase, count) in &status.phases {
        out.sample(
            "annals_saga_instances",
            &[("saga", status.saga), ("phase", phase)],
            *count as f64,
        );
    }
    out.family(
        "annals_saga_instances_peak",
        Kind::Gauge,
        "The most saga instances that ran at once in this process (at most --saga-max-instances).",
    );
    out.sample(
        "annals_saga_instances_peak",
        &[("saga", status.saga)],
        status.peak_active as f64,
    );
}
