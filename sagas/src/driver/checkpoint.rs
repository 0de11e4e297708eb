//! The saga checkpoint derived again from the log (`annals rebuild` of a saga): where
//! the driver resumes, from the saga streams alone.

use eventstore::{Error, EventId, EventStore, Position};

use super::{checkpoint_name, load};
use crate::saga::Saga;

/// What [`rebuild_checkpoint`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointRebuild {
    /// Saga instances recorded.
    pub instances: u64,
    /// Of those, the ones not finished: they resume at the next start.
    pub unfinished: u64,
    /// Deadlines armed and not passed: re-armed at the next start.
    pub pending_deadlines: u64,
    /// The checkpoint saved: where the driver reads the log from at the next start.
    pub checkpoint: Position,
}

/// Derives saga `S`'s checkpoint from the log and saves it: the position of the event
/// that started the earliest unfinished instance, or the end of the log if all are
/// finished. The deadlines themselves live in the saga streams; the next start re-arms
/// them. Calls `progress` with each instance read.
pub fn rebuild_checkpoint<S: Saga>(
    store: &EventStore,
    progress: &dyn Fn(u64),
) -> Result<CheckpointRebuild, Error> {
    let prefix = format!("saga-{}-", S::NAME);
    let mut rebuild = CheckpointRebuild {
        checkpoint: store.next_position(),
        ..CheckpointRebuild::default()
    };
    for (stream, _) in store.streams(Some("saga"))? {
        let Some(id) = stream.as_str().strip_prefix(&prefix) else {
            continue;
        };
        let (instance, recorded) = load::<S>(store, id)?;
        rebuild.instances += 1;
        progress(rebuild.instances);
        if instance.is_done() {
            continue;
        }
        rebuild.unfinished += 1;
        rebuild.pending_deadlines += instance.deadlines.len() as u64;
        // The event that started it; without a recorded cause, from the beginning.
        let started = match recorded.first().and_then(|r| r.event.metadata.causation_id) {
            Some(cause) => match store.read_event(&EventId::from_uuid(cause)?)? {
                Some(event) => event.position,
                None => Position(0),
            },
            None => Position(0),
        };
        rebuild.checkpoint = rebuild.checkpoint.min(started);
    }
    store.save_checkpoint(&checkpoint_name::<S>(), rebuild.checkpoint)?;
    Ok(rebuild)
}
