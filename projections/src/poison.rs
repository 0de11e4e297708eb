//! Poison events: what the runner does with an event a projection cannot apply.
//!
//! `apply` failing (an [`crate::ApplyError`], or a panic, caught with
//! [`std::panic::catch_unwind`] so it never takes the runner down) discards the batch
//! the event was in, so the model stays at its checkpoint. The runner then applies the
//! stretch from that checkpoint again, up to [`crate::RunnerConfig::poison_retries`]
//! times with a growing pause, and if the event still fails it follows the
//! [`PoisonPolicy`]:
//! - [`PoisonPolicy::Fault`] (the default): the projection stops, faulted, naming the
//!   event (position, stream, type, error); nothing at or after it is applied.
//! - [`PoisonPolicy::Park`]: the event is recorded as parked, in the model's own tree
//!   (table [`PARKED_TABLE`], keyed by position) in the same atomic write as the
//!   checkpoint that passes it, and the projection goes on with the next event. A parked
//!   event is never applied, so nothing of it is in the model, and the checkpoint never
//!   passes an event that was neither applied nor parked.
//!
//! [`crate::Handle::parked`] lists the parked events; [`crate::Handle::retry`] applies
//! them again in position order, each in a write of its own that also removes it from
//! the list: those that succeed leave the list, those that fail stay (with the new
//! error). Parked events belong to the model that parked them: a rebuild starts with an
//! empty list (and parks again what still fails).
//!
//! The `projection.apply` fault point ([`crate::RunnerConfig::chaos`]) sits inside the
//! same `catch_unwind`: with `--chaos`, the runner's projections are wrapped
//! ([`with_chaos`]) so that an injected `panic` is a panic of the projection's `apply`,
//! and meets the real poison path (the retries, then fault or park). Without it nothing
//! is wrapped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use eventstore::{EventStore, Model, ModelBatch, Position, StoredEvent};
use serde::{Deserialize, Serialize};

use crate::changes::Changes;
use crate::error::{ApplyError, Error, Fault};
use crate::projection::Projection;

/// The table of a read model that holds its parked events (a name no projection uses).
pub const PARKED_TABLE: &str = "$parked";

/// What happens to an event a projection still cannot apply after its retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoisonPolicy {
    /// Stop the projection faulted at the event (the default): nothing is skipped.
    #[default]
    Fault,
    /// Record the event as parked and go on with the next one.
    Park,
}

impl std::str::FromStr for PoisonPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fault" => Ok(PoisonPolicy::Fault),
            "park" => Ok(PoisonPolicy::Park),
            other => Err(format!(
                "unknown poison-event policy {other:?} (expected fault or park)"
            )),
        }
    }
}

impl std::fmt::Display for PoisonPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoisonPolicy::Fault => "fault",
            PoisonPolicy::Park => "park",
        })
    }
}

/// An event a projection could not apply and that was parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Its position in the log.
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its type.
    pub event_type: String,
    /// Why it could not be applied (the last attempt's error).
    pub error: String,
    /// When it was parked (or last retried), in microseconds since the Unix epoch, UTC.
    pub parked_at_micros: i64,
}

impl ParkedEvent {
    /// The record of `fault` (a fault on an event), parked now.
    pub(crate) fn of(fault: &Fault) -> Self {
        ParkedEvent {
            position: fault.position,
            stream: fault.stream.clone().unwrap_or_default(),
            event_type: fault.event_type.clone().unwrap_or_default(),
            error: fault.error.clone(),
            parked_at_micros: now_micros(),
        }
    }

    /// Its key in [`PARKED_TABLE`]: the position, big-endian, so the table is in
    /// position order.
    pub(crate) fn key(&self) -> [u8; 8] {
        self.position.0.to_be_bytes()
    }
}

/// What a retry did (see [`crate::Handle::retry`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// Whether a faulted projection (or its faulted rebuild) was started again from the
    /// event it had failed on.
    pub resumed: bool,
    /// Parked events applied again.
    pub retried: u64,
    /// Of those, how many were applied and left the list.
    pub applied: u64,
    /// Parked events still on the list.
    pub parked: u64,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `projection`, passing the `projection.apply` fault point of `chaos` before each
/// event when fault injection is on (else `projection` itself, untouched).
pub(crate) fn with_chaos(
    projection: Arc<dyn Projection>,
    chaos: &chaos::Chaos,
) -> Arc<dyn Projection> {
    if !chaos.is_enabled() {
        return projection;
    }
    Arc::new(Chaotic {
        inner: projection,
        chaos: chaos.clone(),
    })
}

/// A projection behind the `projection.apply` fault point.
struct Chaotic {
    inner: Arc<dyn Projection>,
    chaos: chaos::Chaos,
}

impl Projection for Chaotic {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> u32 {
        self.inner.version()
    }

    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn poison_policy(&self) -> Option<PoisonPolicy> {
        self.inner.poison_policy()
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        if let Some(chaos::Effect::Panic) = self.chaos.check(chaos::Point::ProjectionApply) {
            chaos::Effect::panic_at(chaos::Point::ProjectionApply);
        }
        self.inner.apply(event, changes)
    }
}

/// Applies `event`, turning a panic of the projection into an error.
pub(crate) fn apply_caught(
    projection: &dyn Projection,
    event: &StoredEvent<'_>,
    changes: &mut Changes,
) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| projection.apply(event, changes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => Err(format!(
            "the projection panicked: {}",
            panic_message(&*panic)
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Adds the parked record of `fault` to a batch's changes.
pub(crate) fn park(changes: &mut Changes, fault: &Fault) -> Result<(), ApplyError> {
    let parked = ParkedEvent::of(fault);
    changes.put(PARKED_TABLE, &parked.key(), parked)
}

/// The parked events of `model`, in position order.
pub(crate) fn parked(model: &Model) -> Result<Vec<ParkedEvent>, Error> {
    crate::changes::scan::<ParkedEvent>(model, PARKED_TABLE, b"", None, usize::MAX)
        .map(|entries| entries.into_iter().map(|(_, parked)| parked).collect())
}

/// How many events `model` has parked.
pub(crate) fn count(model: &Model) -> u64 {
    parked(model).map_or(0, |parked| parked.len() as u64)
}

/// Applies the parked events of `model` again, in position order, each in an atomic
/// write of its own that keeps the checkpoint and removes the event from the list (or,
/// when it fails again, records the new error). The caller makes sure nothing else
/// writes the model meanwhile. Returns (retried, applied).
pub(crate) fn retry_parked(
    store: &EventStore,
    projection: &dyn Projection,
    model: &Model,
) -> Result<(u64, u64), Error> {
    let (mut retried, mut applied) = (0, 0);
    for mut parked in parked(model)? {
        let Some(event) = store.read_all(parked.position, 1)?.into_iter().next() else {
            continue;
        };
        let stored = event.to_stored();
        retried += 1;
        let mut changes = Changes::new(model.clone());
        let outcome = apply_caught(projection, &stored, &mut changes);
        let changes = match outcome {
            Ok(()) => {
                changes
                    .delete::<ParkedEvent>(PARKED_TABLE, &parked.key())
                    .map_err(|error| apply_failed(projection.name(), &parked, &error))?;
                applied += 1;
                changes
            }
            Err(error) => {
                tracing::warn!(projection = %projection.name(), position = %parked.position, %error, "a parked event failed again");
                parked.error = error;
                parked.parked_at_micros = now_micros();
                let mut changes = Changes::new(model.clone());
                changes
                    .put(PARKED_TABLE, &parked.key(), parked.clone())
                    .map_err(|error| apply_failed(projection.name(), &parked, &error))?;
                changes
            }
        };
        let mut batch = ModelBatch::default();
        changes
            .write(&mut batch)
            .map_err(|error| apply_failed(projection.name(), &parked, &error))?;
        model.apply(batch, model.checkpoint()?)?;
    }
    Ok((retried, applied))
}

/// A parked event's batch could not be encoded: a bug, reported as a fault at it.
fn apply_failed(name: &str, parked: &ParkedEvent, error: &ApplyError) -> Error {
    Error::Faulted {
        name: name.to_owned(),
        fault: Fault::new(parked.position, error.to_string()),
    }
}
