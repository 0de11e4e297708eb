//! A saga instance as an operator reads it: its state, the steps it took, what it
//! waits for.

use chrono::{DateTime, Utc};
use eventstore::{Error, EventStore, Position, Version};
use serde::Serialize;

use crate::driver;
use crate::saga::{self, Deadline, Issued, Saga};

/// One instance, for `GET /api/v1/sagas/<name>/<id>` and the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct SagaView<S: Saga> {
    /// The saga's name.
    pub saga: &'static str,
    /// The instance id.
    pub id: String,
    /// The instance's stream.
    pub stream: String,
    /// The version of its last recorded input.
    pub version: Option<Version>,
    /// True once it has nothing left to do.
    pub finished: bool,
    /// The state after every recorded input.
    pub state: S,
    /// Commands issued and not answered yet.
    pub pending_commands: Vec<Issued<S::Command>>,
    /// Deadlines armed and not passed yet.
    pub pending_deadlines: Vec<Deadline>,
    /// Every recorded input, in order.
    pub steps: Vec<StepView<S>>,
}

/// One recorded input.
#[derive(Debug, Clone, Serialize)]
pub struct StepView<S: Saga> {
    /// Its version in the saga's stream.
    pub version: Version,
    /// Its position in the log.
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Its type, e.g. `FulfilmentCommandAnswered`.
    pub event_type: String,
    /// The input.
    pub input: S::Input,
}

/// The instance `id` of saga `S`, or `None` if nothing is recorded for it.
pub fn load<S: Saga>(store: &EventStore, id: &str) -> Result<Option<SagaView<S>>, Error> {
    let (instance, recorded) = driver::load::<S>(store, id)?;
    if recorded.is_empty() {
        return Ok(None);
    }
    Ok(Some(SagaView {
        saga: S::NAME,
        id: id.to_owned(),
        stream: saga::stream_id::<S>(id)?.as_str().to_owned(),
        version: instance.version,
        finished: instance.is_done(),
        pending_commands: instance
            .outstanding
            .iter()
            .map(|(key, command)| Issued {
                key: key.clone(),
                command: command.clone(),
            })
            .collect(),
        pending_deadlines: instance.deadlines.values().cloned().collect(),
        state: instance.state,
        steps: recorded
            .into_iter()
            .map(|r| StepView {
                version: r.event.version,
                position: r.event.position,
                recorded_at: r.event.recorded_at,
                event_type: r.event.event_type,
                input: r.input,
            })
            .collect(),
    }))
}
