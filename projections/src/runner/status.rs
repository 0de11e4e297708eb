//! What the runner reports about each projection: [`Status`] (with its [`State`] and
//! [`RebuildStatus`]) for the handles, and how the runner publishes its progress.

use eventstore::Position;
use serde::Serialize;

use super::{BUILDS, Build, Role, Shared};
use crate::catch_up::Target;
use crate::error::Fault;

/// Where a projection is, as status reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Applying the log from its checkpoint towards the head (at start, after a retry).
    CatchingUp,
    /// Following the log as it grows.
    Live,
    /// The active read model was built by another version of the code: it answers
    /// queries as it stands, without following the log, until its rebuild takes over.
    Outdated,
    /// Stopped on an event it could not apply; nothing at or after `position` is applied.
    Faulted {
        /// The event it could not apply.
        position: Position,
        /// Why.
        error: String,
        /// The event's stream (absent when no event caused it: reading the log or
        /// writing the model failed).
        #[serde(skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        /// The event's type.
        #[serde(skip_serializing_if = "Option::is_none")]
        event_type: Option<String>,
    },
    /// Not running (the runner stopped, or the status was read offline).
    Stopped,
}

impl State {
    /// The faulted state of `fault`.
    pub fn faulted(fault: Fault) -> Self {
        State::Faulted {
            position: fault.position,
            error: fault.error,
            stream: fault.stream,
            event_type: fault.event_type,
        }
    }

    /// The fault of a faulted state.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            State::Faulted {
                position,
                error,
                stream,
                event_type,
            } => Some(Fault {
                position: *position,
                error: error.clone(),
                stream: stream.clone(),
                event_type: event_type.clone(),
            }),
            _ => None,
        }
    }
}

/// A rebuild in progress (or one that faulted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildStatus {
    /// The version being built.
    pub version: u32,
    /// Its build number.
    pub build: u32,
    /// How far it has come (exclusive).
    pub checkpoint: Position,
    /// Where it stopped, if it faulted.
    pub fault: Option<Fault>,
}

/// One projection's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The projection.
    pub name: String,
    /// The version of its code.
    pub version: u32,
    /// The version that built the model answering queries (`None`: none yet).
    pub active_version: Option<u32>,
    /// The build number of that model.
    pub active_build: Option<u32>,
    /// The active model has applied every event before this position.
    pub checkpoint: Position,
    /// The next position of the log.
    pub head: Position,
    /// Events not yet applied: `head - checkpoint`.
    pub lag: u64,
    /// Where it is.
    #[serde(flatten)]
    pub state: State,
    /// The rebuild in progress, if any.
    pub rebuild: Option<RebuildStatus>,
    /// Events the active model has parked (`crate::poison`).
    pub parked: u64,
}

/// What the runner publishes about one projection.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub active: Option<u32>,
    pub checkpoint: Position,
    pub state: State,
    pub rebuild: Option<RebuildStatus>,
    pub parked: u64,
}

impl Progress {
    pub(crate) fn status(&self, name: &str, version: u32, head: Position) -> Status {
        Status {
            name: name.to_owned(),
            version,
            active_version: self.active.map(|v| v / BUILDS),
            active_build: self.active.map(|v| v % BUILDS),
            checkpoint: self.checkpoint,
            head,
            lag: head.0.saturating_sub(self.checkpoint.0),
            state: self.state.clone(),
            rebuild: self.rebuild.clone(),
            parked: self.parked,
        }
    }
}

pub(super) fn rebuild_status(build: &Build) -> RebuildStatus {
    let stored = build.model.version();
    RebuildStatus {
        version: stored / BUILDS,
        build: stored % BUILDS,
        checkpoint: Position(build.checkpoint),
        fault: build.fault.clone(),
    }
}

pub(super) fn publish(shared: &Shared, index: usize, change: impl FnOnce(&mut Progress)) {
    shared.slots[index].progress.send_modify(change);
}

/// Publishes a job's progress on one model: an active model's checkpoint (queries and
/// waits see it move) or a build's.
pub(super) fn publish_target_progress(
    shared: &Shared,
    (index, role): (usize, Role),
    target: &Target,
) {
    let checkpoint = Position(target.checkpoint);
    shared.slots[index]
        .progress
        .send_if_modified(|p| match role {
            Role::Active if p.checkpoint != checkpoint => {
                p.checkpoint = checkpoint;
                true
            }
            Role::Build => match &mut p.rebuild {
                Some(rebuild) if rebuild.checkpoint != checkpoint => {
                    rebuild.checkpoint = checkpoint;
                    true
                }
                _ => false,
            },
            Role::Active => false,
        });
}
