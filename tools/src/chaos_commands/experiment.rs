//! A chaos experiment as its TOML file declares it ([`Experiment`]), checked before
//! anything runs ([`Experiment::parse`]: unknown keys, impossible values and faults that
//! would never end are refused, naming what is wrong), and its fault schedule
//! ([`Schedule`]: which fault is due, which is to be cleared, at a given second of the
//! run). Pure: no I/O beyond reading the file, so that it is unit-tested.
//!
//! The format is documented in docs/OPERATIONS.md, "Chaos experiments".

use std::path::Path;

use chaos::{EffectKind, FaultSpec, Point};
use serde::{Deserialize, Serialize};

/// One experiment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A short name, for the report.
    pub name: String,
    /// What the experiment expects to see: the steady state holds, or comes back.
    pub hypothesis: String,
    /// How long the load runs and the faults may be scheduled, in seconds.
    pub duration_secs: f64,
    /// How long after a fault is cleared the steady state may take to come back.
    pub heal_timeout_secs: f64,
    /// Whether a fault ends the server process (store.write or store.fsync errors): the
    /// runner then tolerates the server going away, waits for it to be back and ready,
    /// and checks that every acknowledged order is still there.
    #[serde(default)]
    pub expect_restart: bool,
    /// The error budgets the experiment may spend.
    #[serde(default)]
    pub budget: Budget,
    /// The load driven through the API while it runs.
    #[serde(default)]
    pub load: Load,
    /// What must hold before the faults, and again after each is cleared.
    #[serde(default)]
    pub steady_state: Checks,
    /// What must hold all along, faults active or not.
    #[serde(default)]
    pub during: Checks,
    /// The faults and when to inject them.
    #[serde(default)]
    pub faults: Vec<ScheduledFault>,
}

/// The error budget the experiment needs: it refuses to start when an objective's
/// remaining budget is below `min_remaining`, and stops early when one of them pages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The least share of an objective's error budget that must remain (0 to 1).
    #[serde(default = "half")]
    pub min_remaining: f64,
    /// The objectives considered (their names in `GET /api/v1/slo`); empty: all of them.
    #[serde(default)]
    pub objectives: Vec<String>,
}

fn half() -> f64 {
    0.5
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            min_remaining: half(),
            objectives: Vec::new(),
        }
    }
}

impl Budget {
    /// Whether the objective `name` is one the experiment considers.
    pub fn considers(&self, name: &str) -> bool {
        self.objectives.is_empty() || self.objectives.iter().any(|o| o == name)
    }
}

/// The orders placed through the API while the experiment runs (the requests of
/// `annals bench http`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Orders per second, in all (0: no load).
    #[serde(default = "ten")]
    pub rate: f64,
    /// Clients placing them at the same time.
    #[serde(default = "two")]
    pub concurrency: usize,
    /// Skus and customers seeded for the orders.
    #[serde(default = "ten_entities")]
    pub entities: usize,
}

fn ten() -> f64 {
    10.0
}

fn two() -> usize {
    2
}

fn ten_entities() -> usize {
    10
}

impl Default for Load {
    fn default() -> Self {
        Load {
            rate: ten(),
            concurrency: two(),
            entities: ten_entities(),
        }
    }
}

/// Checks of the server's state, each off unless set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// `/readyz` answers 200.
    #[serde(default)]
    pub ready: bool,
    /// The outbox relay is `healthy` (`GET /api/v1/outbox`).
    #[serde(default)]
    pub relay_healthy: bool,
    /// The relay's backlog is at most this many events.
    #[serde(default)]
    pub max_relay_backlog: Option<u64>,
    /// No read model is faulted (`GET /api/v1/projections`).
    #[serde(default)]
    pub no_faulted_read_models: bool,
    /// Every read model has caught up with the log (lag 0).
    #[serde(default)]
    pub read_models_caught_up: bool,
    /// No background worker is failed (`GET /api/v1/workers`).
    #[serde(default)]
    pub no_failed_workers: bool,
    /// Every order acknowledged during the run is confirmed or cancelled within this many
    /// seconds of its placing (checked at the end of the run).
    #[serde(default)]
    pub orders_settled_within_secs: Option<f64>,
    /// Objectives whose burn rate over a window must stay at or below a maximum.
    #[serde(default)]
    pub max_burn_rate: Vec<BurnLimit>,
}

impl Checks {
    /// Whether no check is set.
    pub fn is_empty(&self) -> bool {
        *self == Checks::default()
    }
}

/// An objective's burn rate over a window must stay at or below `max`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BurnLimit {
    /// The objective's name, e.g. `command-availability`.
    pub objective: String,
    /// The window: `5m`, `30m`, `1h`, `6h` or `3d`.
    pub window: String,
    /// The highest burn rate allowed.
    pub max: f64,
}

/// A fault and when to inject it: seconds after the load started, and the fields of
/// `POST /api/v1/chaos/faults`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// When to inject it, in seconds after the run started.
    pub at_secs: f64,
    /// The fault point, e.g. `relay.publish`.
    pub point: String,
    /// What it does.
    pub effect: EffectKind,
    /// For `delay`: how long, in milliseconds.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The chance that a pass through the point is injected.
    #[serde(default = "always")]
    pub probability: f64,
    /// It ends after this many injections.
    #[serde(default)]
    pub count: Option<u64>,
    /// It ends this long after its injection (the runner clears it then).
    #[serde(default)]
    pub duration_secs: Option<f64>,
}

fn always() -> f64 {
    1.0
}

impl ScheduledFault {
    /// The body of its `POST /api/v1/chaos/faults`.
    pub fn spec(&self) -> FaultSpec {
        FaultSpec {
            point: self.point.clone(),
            effect: self.effect,
            delay_ms: self.delay_ms,
            probability: self.probability,
            count: self.count,
            duration_secs: self.duration_secs,
        }
    }

    /// How it is described in the report, e.g. `relay.publish error p=0.5 for 10 s`.
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.point, self.effect);
        if let Some(delay) = self.delay_ms {
            text.push_str(&format!(" {delay} ms"));
        }
        if self.probability < 1.0 {
            text.push_str(&format!(" p={}", self.probability));
        }
        if let Some(count) = self.count {
            text.push_str(&format!(" x{count}"));
        }
        if let Some(duration) = self.duration_secs {
            text.push_str(&format!(" for {duration} s"));
        }
        text
    }
}

impl Experiment {
    /// Reads and checks the experiment in `path`.
    pub fn read(path: &Path) -> Result<Experiment, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the experiment {}: {error}", path.display()))?;
        Experiment::parse(&text)
            .map_err(|error| format!("the experiment {}: {error}", path.display()))
    }

    /// Parses and checks an experiment: unknown keys and impossible values are refused,
    /// naming the key.
    pub fn parse(text: &str) -> Result<Experiment, String> {
        let experiment: Experiment =
            toml::from_str(text).map_err(|error| error.message().to_owned())?;
        experiment.validate()?;
        Ok(experiment)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        positive("duration_secs", self.duration_secs)?;
        positive("heal_timeout_secs", self.heal_timeout_secs)?;
        if !(0.0..=1.0).contains(&self.budget.min_remaining) {
            return Err(format!(
                "budget.min_remaining must be between 0 and 1, not {}",
                self.budget.min_remaining
            ));
        }
        if !(self.load.rate.is_finite() && self.load.rate >= 0.0) {
            return Err(format!(
                "load.rate must be 0 or more, not {}",
                self.load.rate
            ));
        }
        if self.load.rate > 0.0 && (self.load.concurrency == 0 || self.load.entities == 0) {
            return Err("load.concurrency and load.entities must be at least 1".into());
        }
        for checks in [&self.steady_state, &self.during] {
            if let Some(within) = checks.orders_settled_within_secs {
                positive("orders_settled_within_secs", within)?;
            }
            for limit in &checks.max_burn_rate {
                if !slo::WINDOWS
                    .iter()
                    .any(|(window, _)| *window == limit.window)
                {
                    return Err(format!(
                        "max_burn_rate of {}: there is no window {:?}; the windows are {}",
                        limit.objective,
                        limit.window,
                        slo::WINDOWS.map(|(window, _)| window).join(", ")
                    ));
                }
            }
        }
        if self.steady_state.is_empty() {
            return Err("steady_state sets no check: the experiment could show nothing".into());
        }
        if self.during.orders_settled_within_secs.is_some() {
            return Err(
                "orders_settled_within_secs belongs in steady_state (it is checked at the end)"
                    .into(),
            );
        }
        if self.faults.is_empty() {
            return Err("no [[faults]]: nothing to inject".into());
        }
        for (i, fault) in self.faults.iter().enumerate() {
            let at = |message: String| format!("faults[{i}] ({}): {message}", fault.point);
            let point = Point::parse(&fault.point).ok_or_else(|| {
                at(format!(
                    "there is no fault point {:?}; the points are: {}",
                    fault.point,
                    Point::ALL.map(Point::name).join(", ")
                ))
            })?;
            if !point.effects().contains(&fault.effect) {
                return Err(at(format!(
                    "{point} has no {} effect; it has: {}",
                    fault.effect,
                    point
                        .effects()
                        .iter()
                        .map(|effect| effect.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if !(fault.at_secs.is_finite() && fault.at_secs >= 0.0)
                || fault.at_secs >= self.duration_secs
            {
                return Err(at(format!(
                    "at_secs must be at least 0 and before duration_secs ({}), not {}",
                    self.duration_secs, fault.at_secs
                )));
            }
            if !(fault.probability > 0.0 && fault.probability <= 1.0) {
                return Err(at(format!(
                    "probability must be above 0 and at most 1, not {}",
                    fault.probability
                )));
            }
            match (fault.count, fault.duration_secs) {
                (None, None) => {
                    return Err(at(
                        "a fault needs a count or a duration_secs: it must end by itself".into(),
                    ));
                }
                (Some(0), _) => return Err(at("count must be at least 1".into())),
                (_, Some(duration)) => positive("duration_secs", duration).map_err(at)?,
                _ => {}
            }
            match (fault.effect, fault.delay_ms) {
                (EffectKind::Delay, None) => return Err(at("a delay needs delay_ms".into())),
                (EffectKind::Delay, Some(ms)) if ms > chaos::MAX_DELAY.as_millis() as u64 => {
                    return Err(at(format!(
                        "delay_ms must be at most {}",
                        chaos::MAX_DELAY.as_millis()
                    )));
                }
                (EffectKind::Delay, _) => {}
                (_, Some(_)) => return Err(at("delay_ms is only for the delay effect".into())),
                (_, None) => {}
            }
        }
        Ok(())
    }
}

fn positive(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(())
    } else {
        Err(format!(
            "{key} must be above 0 and at most 86400 seconds, not {value}"
        ))
    }
}

/// Where a scheduled fault stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultState {
    /// Not injected yet.
    Waiting,
    /// Injected at this second of the run, with this id.
    Active {
        /// Its id on the server.
        id: u64,
        /// When it was injected, in seconds of the run.
        since: f64,
    },
    /// Cleared (or ended by itself) at this second of the run.
    Cleared {
        /// When.
        at: f64,
    },
    /// Its injection failed (the report says why).
    Failed,
    /// Never injected: the run stopped before its time.
    Skipped,
}

/// What the schedule asks for at a second of the run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Due {
    /// The faults to inject now (indexes into the experiment's faults).
    pub inject: Vec<usize>,
    /// The faults to clear now, with their ids.
    pub clear: Vec<(usize, u64)>,
}

/// The faults' states over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    faults: Vec<ScheduledFault>,
    states: Vec<FaultState>,
}

impl Schedule {
    /// Every fault of `experiment` waiting.
    pub fn new(experiment: &Experiment) -> Schedule {
        Schedule {
            faults: experiment.faults.clone(),
            states: vec![FaultState::Waiting; experiment.faults.len()],
        }
    }

    /// What to do at `now` seconds into the run: the waiting faults whose time has come,
    /// and the active ones whose duration has passed.
    pub fn due(&self, now: f64) -> Due {
        let mut due = Due::default();
        for (i, (fault, state)) in self.faults.iter().zip(&self.states).enumerate() {
            match *state {
                FaultState::Waiting if now >= fault.at_secs => due.inject.push(i),
                FaultState::Active { id, since }
                    if fault
                        .duration_secs
                        .is_some_and(|duration| now >= since + duration) =>
                {
                    due.clear.push((i, id));
                }
                _ => {}
            }
        }
        due
    }

    /// Fault `i` was injected at `now` with `id`.
    pub fn injected(&mut self, i: usize, id: u64, now: f64) {
        self.states[i] = FaultState::Active { id, since: now };
    }

    /// Fault `i` could not be injected.
    pub fn failed(&mut self, i: usize) {
        self.states[i] = FaultState::Failed;
    }

    /// Fault `i` was cleared at `now` (by the runner, or it ended by itself: it is no
    /// longer in the server's list).
    pub fn cleared(&mut self, i: usize, now: f64) {
        if matches!(self.states[i], FaultState::Active { .. }) {
            self.states[i] = FaultState::Cleared { at: now };
        }
    }

    /// The active faults: index and id.
    pub fn active(&self) -> Vec<(usize, u64)> {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, state)| match state {
                FaultState::Active { id, .. } => Some((i, *id)),
                _ => None,
            })
            .collect()
    }

    /// The run stopped early: the faults not injected yet never will be.
    pub fn skip_waiting(&mut self) {
        for state in &mut self.states {
            if *state == FaultState::Waiting {
                *state = FaultState::Skipped;
            }
        }
    }

    /// Whether no fault is waiting or active any more.
    pub fn done(&self) -> bool {
        self.states.iter().all(|state| {
            matches!(
                state,
                FaultState::Cleared { .. } | FaultState::Failed | FaultState::Skipped
            )
        })
    }

    /// Fault `i`'s state.
    pub fn state(&self, i: usize) -> FaultState {
        self.states[i]
    }
}

#[cfg(test)]
mod tests;
