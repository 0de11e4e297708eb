//! Named fault points: the places where an Annals server can be made to fail on purpose,
//! so that its operators can watch it heal (or see clearly that it cannot).
//!
//! A [`Chaos`] handle is cloned into every part of the server that has a fault point
//! (the store's writer and syncer, the relay, the saga, the read models, the HTTP layer).
//! The handle of a server started without `--chaos` is [`Chaos::inert`]: every
//! [`Chaos::check`] answers `None` after one branch on an `Option`, and no fault can be
//! injected. With `--chaos` ([`Chaos::enabled`]) faults are injected at run time
//! ([`Chaos::inject`], through `POST /api/v1/chaos/faults` or `annals chaos inject`);
//! while none is active, a check costs one relaxed atomic load.
//!
//! A fault names its [`Point`], its [`EffectKind`] (each point allows some: see
//! [`Point::effects`]), a probability, and when it ends: after `count` injections, after
//! `duration_secs`, or whichever comes first. Every injection is logged (a `warn` event
//! with target `annals::chaos`) and counted, per point, in
//! `annals_chaos_injections_total{point}`.
//!
//! What an effect does is the fault point's business: `error` makes the operation fail as
//! the real failure would (an fsync error takes the store's real fsync-failure path),
//! `delay` sleeps before it, `panic` panics in the worker, `lost_ack` does the operation
//! but reports its acknowledgement lost, `status_500` answers a request with a 500.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest delay a fault may inject: longer would look like a hang, not a slow part.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A place in the server where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Point {
    /// The store's fdatasync of the log (error, delay).
    #[serde(rename = "store.fsync")]
    StoreFsync,
    /// The store's write of a batch of records to the log (error).
    #[serde(rename = "store.write")]
    StoreWrite,
    /// The relay's publish of an event to NATS JetStream, the server's external message
    /// broker (error, delay, lost acknowledgement, panic).
    #[serde(rename = "relay.publish")]
    RelayPublish,
    /// A command the fulfilment saga issues (error, delay, panic).
    #[serde(rename = "saga.command")]
    SagaCommand,
    /// Every HTTP request, before its handler (delay, a 500).
    #[serde(rename = "http.handler")]
    HttpHandler,
    /// A read model's application of an event (panic).
    #[serde(rename = "projection.apply")]
    ProjectionApply,
    /// A fetch of the JSON Web Key Set from its URL, the other external dependency
    /// (error, delay).
    #[serde(rename = "security.jwks")]
    SecurityJwks,
    /// A call to a payment provider for a card charge, the external payment service
    /// (error: the provider answers unavailable, retried and counted by its breaker;
    /// delay).
    #[serde(rename = "psp.charge")]
    PspCharge,
    /// The store's write of a round of commits to its index (delay): the index lags the
    /// log, and reads that need it (by event id, stream lists) wait.
    #[serde(rename = "store.index")]
    StoreIndex,
}

impl Point {
    /// Every fault point, in the order they are listed.
    pub const ALL: [Point; 9] = [
        Point::StoreFsync,
        Point::StoreWrite,
        Point::RelayPublish,
        Point::SagaCommand,
        Point::HttpHandler,
        Point::ProjectionApply,
        Point::SecurityJwks,
        Point::PspCharge,
        Point::StoreIndex,
    ];

    /// The point's name, as the API, the CLI, the logs and the metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Point::StoreFsync => "store.fsync",
            Point::StoreWrite => "store.write",
            Point::RelayPublish => "relay.publish",
            Point::SagaCommand => "saga.command",
            Point::HttpHandler => "http.handler",
            Point::ProjectionApply => "projection.apply",
            Point::SecurityJwks => "security.jwks",
            Point::PspCharge => "psp.charge",
            Point::StoreIndex => "store.index",
        }
    }

    /// The point named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|point| point.name() == name)
    }

    /// The effects a fault at this point may have.
    pub fn effects(self) -> &'static [EffectKind] {
        use EffectKind::*;
        match self {
            Point::StoreFsync => &[Error, Delay],
            Point::StoreWrite => &[Error],
            Point::RelayPublish => &[Error, Delay, LostAck, Panic],
            Point::SagaCommand => &[Error, Delay, Panic],
            Point::HttpHandler => &[Delay, Status500],
            Point::ProjectionApply => &[Panic],
            Point::SecurityJwks => &[Error, Delay],
            Point::PspCharge => &[Error, Delay],
            Point::StoreIndex => &[Delay],
        }
    }

    fn index(self) -> usize {
        Point::ALL
            .iter()
            .position(|point| *point == self)
            .expect("every point is in ALL")
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault does, as it is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EffectKind {
    /// The operation fails as the real failure would.
    Error,
    /// The operation waits `delay_ms` first.
    Delay,
    /// The worker running the operation panics.
    Panic,
    /// The operation is done, but its acknowledgement is reported lost.
    LostAck,
    /// The request is answered with a 500.
    #[serde(rename = "status_500")]
    Status500,
}

impl EffectKind {
    /// The effect's name, as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            EffectKind::Error => "error",
            EffectKind::Delay => "delay",
            EffectKind::Panic => "panic",
            EffectKind::LostAck => "lost_ack",
            EffectKind::Status500 => "status_500",
        }
    }
}

impl std::fmt::Display for EffectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault point is told to do by [`Chaos::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Fail the operation as the real failure would.
    Error,
    /// Wait this long, then go on.
    Delay(Duration),
    /// Panic (the supervisor or the poison handling sees a real panic).
    Panic,
    /// Do the operation, then report its acknowledgement lost.
    LostAck,
    /// Answer the request with a 500.
    Status500,
}

impl Effect {
    /// Panics with a message naming `point`, for the `panic` effect.
    pub fn panic_at(point: Point) -> ! {
        panic!("chaos: a fault injected at {point} panics")
    }
}

/// The error a fault point's operation fails with under the `error` effect: say where,
/// so that nobody mistakes it for a real failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chaos: a fault injected at {0} failed the operation")]
pub struct Injected(pub Point);

impl Injected {
    /// As an I/O error (for the store's write and fsync).
    pub fn io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

/// A fault to inject, as `POST /api/v1/chaos/faults` and the experiments declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaultSpec {
    /// The fault point's name (`store.fsync`, ...).
    pub point: String,
    /// What the fault does.
    pub effect: EffectKind,
    /// For `delay`: how long, in milliseconds (at most 60,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The chance that a pass through the point is injected, above 0 and at most 1.
    #[serde(default = "always")]
    pub probability: f64,
    /// How many injections, at most, before the fault ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// How long, at most, the fault lasts from its injection, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
}

fn always() -> f64 {
    1.0
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFault {
    /// The server was started without `--chaos`.
    #[error("fault injection is off: start the server with --chaos to inject faults")]
    Disabled,
    /// No point has that name.
    #[error("there is no fault point {point:?}; the points are: {}", Point::ALL.map(Point::name).join(", "))]
    UnknownPoint {
        /// The name given.
        point: String,
    },
    /// The point does not have that effect.
    #[error("{point} has no {effect} effect; it has: {}", point.effects().iter().map(|e| e.name()).collect::<Vec<_>>().join(", "))]
    EffectNotAtPoint {
        /// The point.
        point: Point,
        /// The effect asked for.
        effect: EffectKind,
    },
    /// The probability is not in (0, 1].
    #[error("the probability must be above 0 and at most 1, not {0}")]
    Probability(f64),
    /// Neither a count nor a duration: the fault would never end.
    #[error("a fault needs a count or a duration_secs (or both): it must end by itself")]
    Endless,
    /// A count of zero.
    #[error("count must be at least 1")]
    ZeroCount,
    /// A duration that is not a positive number of seconds, or longer than a day.
    #[error("duration_secs must be above 0 and at most 86400, not {0}")]
    Duration(f64),
    /// `delay` without `delay_ms`, or `delay_ms` with another effect, or too long.
    #[error("{0}")]
    Delay(String),
}

/// An active fault, as `GET /api/v1/chaos/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fault {
    /// The fault's id, for `DELETE /api/v1/chaos/faults/{id}`.
    pub id: u64,
    /// Where it is injected.
    pub point: Point,
    /// What it does.
    pub effect: EffectKind,
    /// For `delay`: how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The chance a pass through the point is injected.
    pub probability: f64,
    /// The injections it was given, if counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// When it ends by itself, if timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How many times it was injected so far.
    pub injected: u64,
    /// When it was injected.
    pub created_at: DateTime<Utc>,
}

/// How many times a point injected a fault since the server started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PointReport {
    /// The point.
    pub point: Point,
    /// The effects it allows.
    pub effects: Vec<EffectKind>,
    /// Injections so far.
    pub injections: u64,
}

/// The fault points' switch: inert, or enabled with the active faults. Cheap to clone;
/// every clone shares the faults.
#[derive(Debug, Clone, Default)]
pub struct Chaos(Option<Arc<Registry>>);

#[derive(Debug, Default)]
struct Registry {
    /// Whether any fault is active: the one load a check does while none is.
    armed: AtomicBool,
    faults: Mutex<Vec<Active>>,
    next_id: AtomicU64,
    injections: [AtomicU64; Point::ALL.len()],
}

#[derive(Debug)]
struct Active {
    fault: Fault,
    ends: Option<Instant>,
}

impl Active {
    fn over(&self, now: Instant) -> bool {
        self.ends.is_some_and(|ends| now >= ends)
            || self
                .fault
                .count
                .is_some_and(|count| self.fault.injected >= count)
    }
}

/// Two handles are equal when they share their faults (clones of one handle), or are
/// both inert: so that settings holding a handle compare as settings do.
impl PartialEq for Chaos {
    fn eq(&self, other: &Chaos) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(one), Some(other)) => Arc::ptr_eq(one, other),
            _ => false,
        }
    }
}

impl Eq for Chaos {}

impl Chaos {
    /// The handle of a server without `--chaos`: no check ever injects anything.
    pub fn inert() -> Chaos {
        Chaos(None)
    }

    /// The handle of a server with `--chaos`: faults can be injected.
    pub fn enabled() -> Chaos {
        Chaos(Some(Arc::default()))
    }

    /// Whether faults can be injected.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Called by the fault point `point` each time it is passed: the effect to apply,
    /// if a fault is active there and the dice say so. Logs and counts the injection.
    #[inline]
    pub fn check(&self, point: Point) -> Option<Effect> {
        let registry = self.0.as_deref()?;
        if !registry.armed.load(Ordering::Relaxed) {
            return None;
        }
        registry.fire(point)
    }

    /// Injects the fault `spec` describes, answering it as listed.
    pub fn inject(&self, spec: &FaultSpec) -> Result<Fault, InvalidFault> {
        let registry = self.0.as_deref().ok_or(InvalidFault::Disabled)?;
        let point = Point::parse(&spec.point).ok_or_else(|| InvalidFault::UnknownPoint {
            point: spec.point.clone(),
        })?;
        if !point.effects().contains(&spec.effect) {
            return Err(InvalidFault::EffectNotAtPoint {
                point,
                effect: spec.effect,
            });
        }
        if !(spec.probability > 0.0 && spec.probability <= 1.0) {
            return Err(InvalidFault::Probability(spec.probability));
        }
        match (spec.effect, spec.delay_ms) {
            (EffectKind::Delay, None) => {
                return Err(InvalidFault::Delay(
                    "a delay needs delay_ms (milliseconds)".into(),
                ));
            }
            (EffectKind::Delay, Some(ms)) if Duration::from_millis(ms) > MAX_DELAY => {
                return Err(InvalidFault::Delay(format!(
                    "delay_ms must be at most {}, not {ms}",
                    MAX_DELAY.as_millis()
                )));
            }
            (EffectKind::Delay, Some(_)) | (_, None) => {}
            (effect, Some(_)) => {
                return Err(InvalidFault::Delay(format!(
                    "delay_ms is for the delay effect, not {effect}"
                )));
            }
        }
        if spec.count.is_none() && spec.duration_secs.is_none() {
            return Err(InvalidFault::Endless);
        }
        if spec.count == Some(0) {
            return Err(InvalidFault::ZeroCount);
        }
        let lasts = match spec.duration_secs {
            Some(secs) if !(secs > 0.0 && secs <= 86_400.0) => {
                return Err(InvalidFault::Duration(secs));
            }
            Some(secs) => Some(Duration::from_secs_f64(secs)),
            None => None,
        };
        let now = Utc::now();
        let fault = Fault {
            id: registry.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            point,
            effect: spec.effect,
            delay_ms: spec.delay_ms,
            probability: spec.probability,
            count: spec.count,
            expires_at: lasts.and_then(|lasts| {
                chrono::Duration::from_std(lasts)
                    .ok()
                    .map(|lasts| now + lasts)
            }),
            injected: 0,
            created_at: now,
        };
        tracing::warn!(
            target: "annals::chaos",
            fault = fault.id,
            point = point.name(),
            effect = spec.effect.name(),
            probability = spec.probability,
            count = spec.count,
            duration_secs = spec.duration_secs,
            "chaos: fault armed"
        );
        let mut faults = registry.lock();
        faults.push(Active {
            fault: fault.clone(),
            ends: lasts.map(|lasts| Instant::now() + lasts),
        });
        registry.armed.store(true, Ordering::Relaxed);
        Ok(fault)
    }

    /// The active faults, oldest first (faults that ended are dropped first).
    pub fn faults(&self) -> Vec<Fault> {
        let Some(registry) = self.0.as_deref() else {
            return Vec::new();
        };
        let mut faults = registry.lock();
        registry.prune(&mut faults);
        faults.iter().map(|active| active.fault.clone()).collect()
    }

    /// Ends the fault `id`; whether it was active.
    pub fn remove(&self, id: u64) -> bool {
        let Some(registry) = self.0.as_deref() else {
            return false;
        };
        let mut faults = registry.lock();
        registry.prune(&mut faults);
        let before = faults.len();
        faults.retain(|active| active.fault.id != id);
        registry.rearm(&faults);
        let removed = faults.len() < before;
        if removed {
            tracing::warn!(target: "annals::chaos", fault = id, "chaos: fault cleared");
        }
        removed
    }

    /// Ends every fault; how many were active.
    pub fn clear(&self) -> usize {
        let Some(registry) = self.0.as_deref() else {
            return 0;
        };
        let mut faults = registry.lock();
        registry.prune(&mut faults);
        let cleared = faults.len();
        faults.clear();
        registry.rearm(&faults);
        if cleared > 0 {
            tracing::warn!(target: "annals::chaos", cleared, "chaos: every fault cleared");
        }
        cleared
    }

    /// Every point, with its effects and its injections so far.
    pub fn points(&self) -> Vec<PointReport> {
        Point::ALL
            .into_iter()
            .map(|point| PointReport {
                point,
                effects: point.effects().to_vec(),
                injections: self.0.as_deref().map_or(0, |registry| {
                    registry.injections[point.index()].load(Ordering::Relaxed)
                }),
            })
            .collect()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn prune(&self, faults: &mut Vec<Active>) {
        let now = Instant::now();
        faults.retain(|active| {
            let over = active.over(now);
            if over {
                tracing::warn!(
                    target: "annals::chaos",
                    fault = active.fault.id,
                    point = active.fault.point.name(),
                    injected = active.fault.injected,
                    "chaos: fault ended"
                );
            }
            !over
        });
        self.rearm(faults);
    }

    fn rearm(&self, faults: &[Active]) {
        self.armed.store(!faults.is_empty(), Ordering::Relaxed);
    }

    fn fire(&self, point: Point) -> Option<Effect> {
        let mut faults = self.lock();
        self.prune(&mut faults);
        let active = faults
            .iter_mut()
            .find(|active| active.fault.point == point)?;
        if active.fault.probability < 1.0 && fastrand::f64() >= active.fault.probability {
            return None;
        }
        active.fault.injected += 1;
        let fault = &active.fault;
        let effect = match fault.effect {
            EffectKind::Error => Effect::Error,
            EffectKind::Delay => Effect::Delay(Duration::from_millis(fault.delay_ms.unwrap_or(0))),
            EffectKind::Panic => Effect::Panic,
            EffectKind::LostAck => Effect::LostAck,
            EffectKind::Status500 => Effect::Status500,
        };
        tracing::warn!(
            target: "annals::chaos",
            fault = fault.id,
            point = point.name(),
            effect = fault.effect.name(),
            injected = fault.injected,
            "chaos: fault injected"
        );
        self.injections[point.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("annals_chaos_injections_total", "point" => point.name()).increment(1);
        // A counted fault that just used its last injection ends now.
        self.prune(&mut faults);
        Some(effect)
    }
}

#[cfg(test)]
mod tests;
