//! The arithmetic of budgets, burn rates and alerts, on a manual clock.

use super::*;

const HOUR: u64 = 60 * 60;
const DAY: u64 = 24 * HOUR;
/// A start time well past the epoch, on a minute boundary (1,800,000,000 = 60 x 30,000,000).
const T0: u64 = 1_800_000_000;

fn availability(target: f64) -> Slos {
    Slos::new(vec![Objective {
        name: "availability".to_owned(),
        sli: Sli::CommandAvailability,
        target,
        threshold_ms: None,
    }])
    .unwrap()
}

/// Records, every minute from `from` for `seconds`, `per_minute` events of which `bad`
/// are bad.
fn steady(slos: &Slos, from: u64, seconds: u64, per_minute: u64, bad: u64) {
    let mut now = from;
    while now < from + seconds {
        slos.record(Sli::CommandAvailability, now, per_minute - bad, per_minute);
        now += 60;
    }
}

fn only(report: &SloReport) -> &ObjectiveReport {
    assert_eq!(report.objectives.len(), 1);
    &report.objectives[0]
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-9
}

#[test]
fn nothing_recorded_spends_nothing_and_alerts_nobody() {
    let slos = availability(0.999);
    let report = slos.report(T0);
    let objective = only(&report);
    assert_eq!((objective.good, objective.total), (0, 0));
    assert!(close(objective.error_budget_remaining, 1.0));
    assert!(objective.burn_rates.values().all(|rate| *rate == 0.0));
    assert_eq!(objective.burn_rates.len(), WINDOWS.len());
    assert_eq!(objective.alert, Alert::None);
}

#[test]
fn half_the_budget_spent_is_half_remaining_at_burn_rate_one_half() {
    let slos = availability(0.999);
    // 10,000 commands in one minute, 5 of them failed: 0.05% bad of a 0.1% budget.
    slos.record(Sli::CommandAvailability, T0, 9_995, 10_000);
    let report = slos.report(T0 + 30);
    let objective = only(&report);
    assert_eq!((objective.good, objective.total), (9_995, 10_000));
    assert!(
        close(objective.error_budget_remaining, 0.5),
        "{objective:?}"
    );
    for window in ["5m", "30m", "1h", "6h", "3d"] {
        assert!(
            close(objective.burn_rates[window], 0.5),
            "{window}: {objective:?}"
        );
    }
    assert_eq!(objective.alert, Alert::None);
}

#[test]
fn an_overspent_budget_goes_below_zero() {
    let slos = availability(0.99);
    slos.record(Sli::CommandAvailability, T0, 970, 1_000);
    let objective = only(&slos.report(T0)).clone();
    // 3% bad of a 1% budget: three budgets spent, two more than there was.
    assert!(
        close(objective.error_budget_remaining, -2.0),
        "{objective:?}"
    );
}

#[test]
fn a_fast_burn_over_the_hour_and_the_last_five_minutes_pages() {
    let slos = availability(0.999);
    // Two hours of calm, then an hour at 2% failed: burn rate 20.
    steady(&slos, T0, 2 * HOUR, 1_000, 0);
    steady(&slos, T0 + 2 * HOUR, HOUR, 1_000, 20);
    let now = T0 + 3 * HOUR - 60;
    let report = slos.report(now);
    let objective = only(&report);
    assert!(close(objective.burn_rates["5m"], 20.0), "{objective:?}");
    assert!(close(objective.burn_rates["1h"], 20.0), "{objective:?}");
    assert_eq!(objective.alert, Alert::Page);

    // The failures stop. Ten clean minutes later the 5 min window is clean, so the fast
    // rule no longer holds, but the 6 h and 30 min windows still burn above 6: paging.
    steady(&slos, T0 + 3 * HOUR, HOUR, 1_000, 0);
    let report = slos.report(T0 + 3 * HOUR + 9 * 60);
    let objective = only(&report);
    assert_eq!(objective.burn_rates["5m"], 0.0);
    assert!(objective.burn_rates["1h"] > 14.4, "{objective:?}");
    assert!(objective.burn_rates["30m"] > 6.0 && objective.burn_rates["6h"] > 6.0);
    assert_eq!(objective.alert, Alert::Page);
    // Forty clean minutes later the 30 min window is clean too: no page, but the 6 h
    // and 3 d windows still spend the budget too fast for 30 days: a ticket.
    let report = slos.report(T0 + 3 * HOUR + 40 * 60);
    let objective = only(&report);
    assert_eq!(objective.burn_rates["30m"], 0.0);
    assert!(objective.burn_rates["6h"] > 1.0 && objective.burn_rates["3d"] > 1.0);
    assert_eq!(objective.alert, Alert::Ticket, "{objective:?}");
}

#[test]
fn a_sustained_burn_over_six_hours_and_thirty_minutes_pages() {
    let slos = availability(0.999);
    // Six hours at 0.8% failed: burn rate 8, above 6 but below 14.4.
    steady(&slos, T0, 6 * HOUR, 1_000, 8);
    let report = slos.report(T0 + 6 * HOUR - 60);
    let objective = only(&report);
    assert!(close(objective.burn_rates["6h"], 8.0), "{objective:?}");
    assert!(close(objective.burn_rates["30m"], 8.0), "{objective:?}");
    assert!(objective.burn_rates["1h"] < 14.4);
    assert_eq!(objective.alert, Alert::Page);
}

#[test]
fn a_slow_burn_over_three_days_opens_a_ticket() {
    let slos = availability(0.999);
    // Three days at 0.2% failed: burn rate 2, which would spend the budget in 15 days.
    steady(&slos, T0, 3 * DAY, 100, 0);
    // Bad events one minute in five: 1 of 100 every 5 minutes is 0.2% overall.
    let mut now = T0;
    while now < T0 + 3 * DAY {
        slos.record(Sli::CommandAvailability, now, 0, 1);
        now += 300;
    }
    let report = slos.report(T0 + 3 * DAY - 60);
    let objective = only(&report);
    let expected = (1.0 / 501.0) / 0.001;
    assert!(
        (objective.burn_rates["3d"] - expected).abs() < 0.01,
        "{objective:?}"
    );
    assert!(objective.burn_rates["6h"] > 1.0 && objective.burn_rates["6h"] < 6.0);
    assert_eq!(objective.alert, Alert::Ticket);
}

#[test]
fn events_older_than_the_window_no_longer_count() {
    let slos = availability(0.999);
    slos.record(Sli::CommandAvailability, T0, 0, 100);
    let fresh = only(&slos.report(T0)).clone();
    assert_eq!(fresh.total, 100);
    assert!(fresh.error_budget_remaining < 0.0);
    // 30 days and a minute later, the ring slot of T0 has been reused or is stale.
    let later = T0 + BUDGET_WINDOW_SECONDS + 60;
    slos.record(Sli::CommandAvailability, later, 10, 10);
    let report = slos.report(later);
    let objective = only(&report);
    assert_eq!((objective.good, objective.total), (10, 10));
    assert!(close(objective.error_budget_remaining, 1.0));
    // The burn-rate windows see only their own minutes: T0's failures are 30 days old.
    assert_eq!(objective.burn_rates["3d"], 0.0);
    // Within a window they count: two hours after T0, the 3 d window burns.
    let report = slos.report(T0 + 2 * HOUR);
    assert_eq!(only(&report).burn_rates["1h"], 0.0);
    assert!(only(&report).burn_rates["3d"] > 0.0);
}

#[test]
fn durations_are_good_within_each_objectives_threshold() {
    let slos = Slos::new(vec![
        Objective {
            name: "fast".to_owned(),
            sli: Sli::CommandLatency,
            target: 0.99,
            threshold_ms: Some(50),
        },
        Objective {
            name: "slow".to_owned(),
            sli: Sli::CommandLatency,
            target: 0.9,
            threshold_ms: Some(500),
        },
        Objective {
            name: "sagas".to_owned(),
            sli: Sli::SagaCompletion,
            target: 0.99,
            threshold_ms: Some(5_000),
        },
    ])
    .unwrap();
    for millis in [10, 50, 51, 400, 900] {
        slos.record_duration(Sli::CommandLatency, T0, millis);
    }
    let report = slos.report(T0);
    let counts: Vec<_> = report
        .objectives
        .iter()
        .map(|objective| (objective.name.as_str(), objective.good, objective.total))
        .collect();
    assert_eq!(
        counts,
        [("fast", 2, 5), ("slow", 4, 5), ("sagas", 0, 0)],
        "each objective judges by its own threshold; other SLIs are untouched"
    );
}

#[test]
fn the_defaults_are_the_documented_objectives() {
    let defaults = Objective::defaults();
    let summary: Vec<_> = defaults
        .iter()
        .map(|objective| {
            (
                objective.name.as_str(),
                objective.target,
                objective.threshold_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("command-availability", 0.999, None),
            ("command-latency", 0.99, Some(50)),
            ("read-model-freshness", 0.99, Some(1_000)),
            ("saga-completion", 0.99, Some(5_000)),
        ]
    );
    Slos::new(defaults).unwrap();
}

#[test]
fn bad_objectives_are_refused_with_their_name() {
    let objective = |name: &str, sli, target, threshold_ms| Objective {
        name: name.to_owned(),
        sli,
        target,
        threshold_ms,
    };
    let cases = [
        (
            vec![objective("a", Sli::CommandAvailability, 1.0, None)],
            "not between 0 and 1",
        ),
        (
            vec![objective("b", Sli::CommandAvailability, 0.0, None)],
            "not between 0 and 1",
        ),
        (
            vec![objective("c", Sli::CommandLatency, 0.99, None)],
            "needs threshold_ms",
        ),
        (
            vec![objective("d", Sli::CommandAvailability, 0.99, Some(5))],
            "has no threshold",
        ),
        (
            vec![
                objective("e", Sli::CommandAvailability, 0.99, None),
                objective("e", Sli::CommandAvailability, 0.9, None),
            ],
            "two objectives are named e",
        ),
        (
            vec![objective("", Sli::CommandAvailability, 0.99, None)],
            "needs a name",
        ),
    ];
    for (objectives, expected) in cases {
        let error = Slos::new(objectives).unwrap_err();
        assert!(error.contains(expected), "{error} lacks {expected}");
    }
}

#[test]
fn the_report_has_the_documented_shape() {
    let slos = availability(0.999);
    slos.record(Sli::CommandAvailability, T0, 1, 1);
    let json = serde_json::to_value(slos.report(T0)).unwrap();
    let objective = &json["objectives"][0];
    for member in [
        "name",
        "target",
        "sli",
        "error_budget_remaining",
        "burn_rates",
        "alert",
    ] {
        assert!(!objective[member].is_null(), "{member} missing: {json}");
    }
    for window in ["5m", "30m", "1h", "6h", "3d"] {
        assert!(objective["burn_rates"][window].is_number(), "{json}");
    }
    assert_eq!(objective["alert"], "none");
    assert_eq!(objective["sli"], "commands answered without a 5xx");
}
