//! Service level objectives: what Annals promises, measured as it runs.
//!
//! An [`Objective`] is a target share of good events over a 30-day window: commands that
//! did not fail with a 5xx (availability), commands answered within 50 ms (latency),
//! seconds in which every read model was less than 1 s behind the log (freshness), sagas
//! completed within 5 s (completion). The server counts good and total events of each
//! objective's SLI ([`Slos::record`]) into one-minute buckets, and answers from them
//! ([`Slos::report`]):
//!
//! - the **error budget remaining**: the share of the budget (`1 - target` of the 30 days'
//!   events may be bad) not yet spent; 1 when nothing was bad, 0 or below when overspent;
//! - the **burn rate** over 5 min, 30 min, 1 h, 6 h and 3 d: the bad share of that window's
//!   events divided by the budget share (`1 - target`); 1 spends the budget exactly in
//!   30 days, 14.4 spends 2% of it in an hour;
//! - the **alert**, by the multiwindow, multi-burn-rate rules of Google's SRE workbook:
//!   `page` when the 1 h and 5 min burn rates are both above 14.4, or the 6 h and 30 min
//!   ones both above 6; else `ticket` when the 3 d and 6 h ones are both above 1; else
//!   `none`. A window with no events burns nothing.
//!
//! Time is passed in (seconds since the Unix epoch), so the arithmetic runs on a manual
//! clock in tests; the server passes the wall clock. deploy/prometheus has the same rules
//! over the `annals_slo_*` series, for a Prometheus that alerts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The burn-rate windows reported, shortest first, with their names.
pub const WINDOWS: [(&str, u64); 5] = [
    ("5m", 5 * 60),
    ("30m", 30 * 60),
    ("1h", 60 * 60),
    ("6h", 6 * 60 * 60),
    ("3d", 3 * 24 * 60 * 60),
];

/// The window of the error budget: 30 days.
pub const BUDGET_WINDOW_SECONDS: u64 = 30 * 24 * 60 * 60;

/// The width of one bucket of counts.
const BUCKET_SECONDS: u64 = 60;

/// How many buckets cover the budget window.
const BUCKETS: usize = (BUDGET_WINDOW_SECONDS / BUCKET_SECONDS) as usize;

/// What an objective's SLI counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Commands (POST requests of the API) not answered with a 5xx.
    CommandAvailability,
    /// Commands answered within the threshold.
    CommandLatency,
    /// Seconds in which every read model was within the threshold of the log.
    ReadModelFreshness,
    /// Sagas completed (confirmed or cancelled) within the threshold of their start.
    SagaCompletion,
}

impl Sli {
    /// How the SLI is described in `GET /api/v1/slo`.
    fn describe(self, threshold_ms: Option<u64>) -> String {
        let within = threshold_ms.map_or_else(String::new, |ms| format!(" within {ms} ms"));
        match self {
            Sli::CommandAvailability => "commands answered without a 5xx".to_owned(),
            Sli::CommandLatency => format!("commands answered{within}"),
            Sli::ReadModelFreshness => {
                format!("seconds in which every read model was{within} of the log")
            }
            Sli::SagaCompletion => format!("sagas completed{within} of their start"),
        }
    }
}

/// One objective, as configured (`[[slo.objectives]]` in the server's TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// A short name, e.g. `command-availability`: the `slo` label of the metrics.
    pub name: String,
    /// What is counted.
    pub sli: Sli,
    /// The share of good events promised, e.g. 0.999. Between 0 and 1, exclusive.
    pub target: f64,
    /// The threshold of a latency, freshness or completion SLI, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<u64>,
}

impl Objective {
    /// The objectives of a server that configures none: command availability 99.9%,
    /// command latency 99% within 50 ms, read-model freshness 99% within 1 s, saga
    /// completion 99% within 5 s.
    pub fn defaults() -> Vec<Objective> {
        let objective = |name: &str, sli, target, threshold_ms| Objective {
            name: name.to_owned(),
            sli,
            target,
            threshold_ms,
        };
        vec![
            objective(
                "command-availability",
                Sli::CommandAvailability,
                0.999,
                None,
            ),
            objective("command-latency", Sli::CommandLatency, 0.99, Some(50)),
            objective(
                "read-model-freshness",
                Sli::ReadModelFreshness,
                0.99,
                Some(1_000),
            ),
            objective("saga-completion", Sli::SagaCompletion, 0.99, Some(5_000)),
        ]
    }

    /// Checks a configured objective: a name, a target strictly between 0 and 1, and a
    /// threshold exactly where the SLI has one.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("an objective needs a name".to_owned());
        }
        if !(self.target > 0.0 && self.target < 1.0) {
            return Err(format!(
                "objective {}: target {} is not between 0 and 1 (e.g. 0.999)",
                self.name, self.target
            ));
        }
        let needs_threshold = self.sli != Sli::CommandAvailability;
        match (needs_threshold, self.threshold_ms) {
            (true, None) => Err(format!(
                "objective {}: the {:?} SLI needs threshold_ms",
                self.name, self.sli
            )),
            (false, Some(_)) => Err(format!(
                "objective {}: the {:?} SLI has no threshold",
                self.name, self.sli
            )),
            _ => Ok(()),
        }
    }

    /// Whether an event of this objective's SLI that took `millis` is good (for the
    /// SLIs with a threshold; availability has none and is decided by the caller).
    pub fn within(&self, millis: u64) -> bool {
        self.threshold_ms
            .is_none_or(|threshold| millis <= threshold)
    }
}

/// The alert an objective's burn rates call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    /// Burning slowly enough (or not at all).
    None,
    /// The 3 d and 6 h burn rates are above 1: the budget will run out before the 30 days.
    Ticket,
    /// Burning fast: 1 h and 5 min above 14.4, or 6 h and 30 min above 6.
    Page,
}

/// One objective's state, as `GET /api/v1/slo` answers it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectiveReport {
    pub name: String,
    pub target: f64,
    /// What the SLI counts, in words.
    pub sli: String,
    /// Good and total events over the budget window.
    pub good: u64,
    pub total: u64,
    /// The share of the error budget not yet spent (1 when nothing was bad; below 0 when
    /// overspent).
    pub error_budget_remaining: f64,
    /// Burn rate by window name (`5m`, `30m`, `1h`, `6h`, `3d`).
    pub burn_rates: BTreeMap<&'static str, f64>,
    pub alert: Alert,
}

/// Every objective's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SloReport {
    pub objectives: Vec<ObjectiveReport>,
}

/// The counts of one objective: good and total per one-minute bucket, over 30 days.
#[derive(Debug)]
struct Counts {
    /// `(minute, good, total)`, indexed by minute modulo the ring's length; a slot whose
    /// minute is not the one asked for is empty (it belongs to an older turn).
    ring: Vec<(u64, u64, u64)>,
}

impl Counts {
    fn new() -> Self {
        Counts {
            ring: vec![(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn add(&mut self, now: u64, good: u64, total: u64) {
        let minute = now / BUCKET_SECONDS;
        let slot = &mut self.ring[(minute % BUCKETS as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += good;
        slot.2 += total;
    }

    /// Good and total over the `seconds` up to `now` (whole minutes, the current one
    /// included).
    fn sum(&self, now: u64, seconds: u64) -> (u64, u64) {
        let current = now / BUCKET_SECONDS;
        let minutes = (seconds / BUCKET_SECONDS).clamp(1, BUCKETS as u64);
        let mut good = 0;
        let mut total = 0;
        for minute in current.saturating_sub(minutes - 1)..=current {
            let slot = &self.ring[(minute % BUCKETS as u64) as usize];
            if slot.0 == minute {
                good += slot.1;
                total += slot.2;
            }
        }
        (good, total)
    }
}

/// The objectives of a server and their counts; `Sync`, share it.
#[derive(Debug)]
pub struct Slos {
    objectives: Vec<(Objective, Mutex<Counts>)>,
}

impl Slos {
    /// Counts for `objectives` (each checked with [`Objective::validate`]; names must
    /// be unique).
    pub fn new(objectives: Vec<Objective>) -> Result<Self, String> {
        let mut names = std::collections::BTreeSet::new();
        for objective in &objectives {
            objective.validate()?;
            if !names.insert(objective.name.clone()) {
                return Err(format!("two objectives are named {}", objective.name));
            }
        }
        Ok(Slos {
            objectives: objectives
                .into_iter()
                .map(|objective| (objective, Mutex::new(Counts::new())))
                .collect(),
        })
    }

    /// The objectives, as configured.
    pub fn objectives(&self) -> impl Iterator<Item = &Objective> {
        self.objectives.iter().map(|(objective, _)| objective)
    }

    /// Counts `total` events of every objective whose SLI is `sli`, `good` of them good,
    /// at `now` (seconds since the epoch).
    pub fn record(&self, sli: Sli, now: u64, good: u64, total: u64) {
        for (objective, counts) in &self.objectives {
            if objective.sli == sli
                && let Ok(mut counts) = counts.lock()
            {
                counts.add(now, good.min(total), total);
            }
        }
    }

    /// Counts one event of every objective whose SLI is `sli` that took `millis`, good
    /// when within that objective's threshold, at `now`.
    pub fn record_duration(&self, sli: Sli, now: u64, millis: u64) {
        for (objective, counts) in &self.objectives {
            if objective.sli == sli
                && let Ok(mut counts) = counts.lock()
            {
                counts.add(now, u64::from(objective.within(millis)), 1);
            }
        }
    }

    /// Every objective's budget, burn rates and alert at `now`.
    pub fn report(&self, now: u64) -> SloReport {
        let objectives = self
            .objectives
            .iter()
            .map(|(objective, counts)| {
                let counts = counts.lock().map(|counts| {
                    let budget = counts.sum(now, BUDGET_WINDOW_SECONDS);
                    let windows = WINDOWS.map(|(name, seconds)| (name, counts.sum(now, seconds)));
                    (budget, windows)
                });
                let ((good, total), windows) =
                    counts.unwrap_or(((0, 0), WINDOWS.map(|(name, _)| (name, (0, 0)))));
                let allowed = 1.0 - objective.target;
                let bad_share = |good: u64, total: u64| {
                    if total == 0 {
                        0.0
                    } else {
                        (total - good) as f64 / total as f64
                    }
                };
                let burn_rates: BTreeMap<&'static str, f64> = windows
                    .iter()
                    .map(|&(name, (good, total))| (name, bad_share(good, total) / allowed))
                    .collect();
                ObjectiveReport {
                    name: objective.name.clone(),
                    target: objective.target,
                    sli: objective.sli.describe(objective.threshold_ms),
                    good,
                    total,
                    error_budget_remaining: 1.0 - bad_share(good, total) / allowed,
                    alert: alert(&burn_rates),
                    burn_rates,
                }
            })
            .collect();
        SloReport { objectives }
    }
}

/// The alert the multiwindow rules give for these burn rates (see the module doc).
pub fn alert(burn_rates: &BTreeMap<&'static str, f64>) -> Alert {
    let rate = |window: &str| burn_rates.get(window).copied().unwrap_or(0.0);
    if (rate("1h") > 14.4 && rate("5m") > 14.4) || (rate("6h") > 6.0 && rate("30m") > 6.0) {
        Alert::Page
    } else if rate("3d") > 1.0 && rate("6h") > 1.0 {
        Alert::Ticket
    } else {
        Alert::None
    }
}

#[cfg(test)]
mod tests;
