//! What a saga is, and how its recorded inputs fold back into its state.
//!
//! A saga is pure: [`Saga::handle`] takes the state and one input and returns the new
//! state, the commands to issue and the deadlines to arm ([`Step`]). Every input is
//! recorded in the saga's own stream (`saga-<name>-<id>`) before it is handled, so the
//! state after a crash is the fold of the recorded inputs ([`Instance::replay`]), and
//! the commands issued but not yet answered are known ([`Instance::outstanding`]): the
//! driver issues them again, under the same deterministic command ids, which the store
//! recognises, so a re-issued command has no second effect.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventstore::{EventId, StreamId, Version};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A process manager: pure logic from inputs to commands.
pub trait Saga: Default + Clone + std::fmt::Debug + Serialize + Send + Sync + 'static {
    /// Its name: the instance `id` of the saga lives in the stream `saga-<NAME>-<id>`.
    const NAME: &'static str;
    /// What it reacts to: events of the log, the outcomes of its commands, deadlines.
    /// Recorded in the saga's stream with postcard: append variants, never reorder.
    type Input: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What it asks of other aggregates.
    type Command: Clone + std::fmt::Debug + Serialize + Send + Sync + 'static;

    /// Takes one input: the new state, the commands to issue, the deadlines to arm.
    fn handle(self, input: &Self::Input) -> Step<Self>;

    /// Names `input` uniquely within one instance: the id of its record derives from it,
    /// so an input delivered twice (after a crash) is recorded once.
    fn input_key(input: &Self::Input) -> String;

    /// The record's event type, e.g. `FulfilmentStarted`.
    fn input_type(input: &Self::Input) -> &'static str;

    /// Which command or deadline `input` answers, if any.
    fn answers(input: &Self::Input) -> Answers<'_>;

    /// The input that tells the saga `deadline` has passed.
    fn deadline_passed(deadline: &Deadline) -> Self::Input;

    /// True once the saga has nothing left to do: the driver lets it go.
    fn is_finished(&self) -> bool;

    /// Whether the deadline `key`, once armed, still matters. One that no longer does
    /// is disarmed: it will not be told.
    fn awaits_deadline(&self, key: &str) -> bool {
        let _ = key;
        true
    }

    /// The names of the phases an instance goes through, for the driver's status
    /// ([`crate::DriverStatus::phases`], metric `annals_saga_instances{phase}`): each is
    /// reported from the start, at zero while no instance is in it.
    const PHASES: &'static [&'static str] = &[];

    /// The phase this state is in (one of [`Saga::PHASES`]); once finished, the name of
    /// its outcome (the `outcome` label of `annals_saga_duration_seconds`).
    fn phase(&self) -> &'static str {
        if self.is_finished() {
            "finished"
        } else {
            "running"
        }
    }
}

/// What one input did: the new state, commands to issue, deadlines to arm.
#[derive(Debug, Clone)]
pub struct Step<S: Saga> {
    /// The state after the input.
    pub state: S,
    /// Commands to issue now.
    pub commands: Vec<Issued<S::Command>>,
    /// Deadlines to arm now.
    pub deadlines: Vec<Deadline>,
}

impl<S: Saga> Step<S> {
    /// The state, and nothing to do.
    pub fn idle(state: S) -> Self {
        Step {
            state,
            commands: Vec::new(),
            deadlines: Vec::new(),
        }
    }
}

/// A command and its key, unique within one saga instance: the command id derives from
/// the key ([`command_id`]), so the command issued again after a crash is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued<C> {
    /// E.g. `reserve:apple`.
    pub key: String,
    /// What is asked.
    pub command: C,
}

/// A moment after which the saga is told, once, that time is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// Unique within the instance, e.g. `fulfilment`.
    pub key: String,
    /// When it passes.
    pub at: DateTime<Utc>,
}

/// What an input answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers<'a> {
    /// The outcome of the command with this key.
    Command(&'a str),
    /// The deadline with this key has passed.
    Deadline(&'a str),
    /// Nothing: an event from outside.
    Nothing,
}

/// The stream of the instance `id` of saga `S`: `saga-<name>-<id>`.
pub fn stream_id<S: Saga>(id: &str) -> Result<StreamId, eventstore::Error> {
    StreamId::new(format!("saga-{}-{id}", S::NAME))
}

/// The deterministic id of the command `key` of instance `id`.
pub fn command_id<S: Saga>(id: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("annals:saga/{}/{id}/command/{key}", S::NAME).as_bytes(),
    )
}

/// The deterministic id of the record of `input` in instance `id`.
pub fn input_id<S: Saga>(id: &str, input: &S::Input) -> EventId {
    let name = format!("annals:saga/{}/{id}/input/{}", S::NAME, S::input_key(input));
    EventId::derived(Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()), 0)
}

/// One saga instance as recorded: its state, the version of its stream, and what it is
/// still waiting for.
#[derive(Debug, Clone)]
pub struct Instance<S: Saga> {
    /// The instance id (for the fulfilment saga, the order id).
    pub id: String,
    /// The state after every recorded input.
    pub state: S,
    /// The version of the last recorded input; `None` before the first.
    pub version: Option<Version>,
    /// Commands issued and not answered yet, by key.
    pub outstanding: BTreeMap<String, S::Command>,
    /// Deadlines armed and not passed yet, by key.
    pub deadlines: BTreeMap<String, Deadline>,
}

impl<S: Saga> Instance<S> {
    /// An instance with nothing recorded.
    pub fn new(id: impl Into<String>) -> Self {
        Instance {
            id: id.into(),
            state: S::default(),
            version: None,
            outstanding: BTreeMap::new(),
            deadlines: BTreeMap::new(),
        }
    }

    /// Folds recorded inputs, in order, into a new instance.
    pub fn replay<'a>(
        id: impl Into<String>,
        inputs: impl IntoIterator<Item = (Version, &'a S::Input)>,
    ) -> Self {
        let mut instance = Instance::new(id);
        for (version, input) in inputs {
            instance.apply(input);
            instance.version = Some(version);
        }
        instance
    }

    /// Handles one (recorded) input: the commands to issue and the deadlines to arm,
    /// which are also remembered until an input answers them (a deadline only while the
    /// saga still awaits it).
    pub fn apply(&mut self, input: &S::Input) -> (Vec<Issued<S::Command>>, Vec<Deadline>) {
        match S::answers(input) {
            Answers::Command(key) => {
                self.outstanding.remove(key);
            }
            Answers::Deadline(key) => {
                self.deadlines.remove(key);
            }
            Answers::Nothing => {}
        }
        let Step {
            state,
            commands,
            mut deadlines,
        } = std::mem::take(&mut self.state).handle(input);
        self.state = state;
        for issued in &commands {
            self.outstanding
                .insert(issued.key.clone(), issued.command.clone());
        }
        for deadline in &deadlines {
            self.deadlines
                .insert(deadline.key.clone(), deadline.clone());
        }
        if self.state.is_finished() {
            self.deadlines.clear();
        }
        let state = &self.state;
        self.deadlines.retain(|key, _| state.awaits_deadline(key));
        deadlines.retain(|deadline| self.deadlines.contains_key(&deadline.key));
        (commands, deadlines)
    }

    /// Whether `input` is a deadline passing that this instance no longer awaits (it
    /// was disarmed, or it passed before): such an input is dropped, not recorded.
    pub fn is_stale_deadline(&self, input: &S::Input) -> bool {
        matches!(S::answers(input), Answers::Deadline(key) if !self.deadlines.contains_key(key))
    }

    /// True once the saga is finished and waits for no command.
    pub fn is_done(&self) -> bool {
        self.state.is_finished() && self.outstanding.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{command_id, input_id};
    use crate::fulfilment::{Fulfilment, Input};

    const ORDER: &str = "0193a4e2-7c1d-7b3e-9f00-0000000000c1";

    /// Golden values. Changing them breaks retries across an upgrade: a saga resumed by
    /// the new version would issue its unanswered commands with other ids (the store
    /// would not recognise them, and a charge could land twice) and record its inputs
    /// again under other ids.
    #[test]
    fn command_ids_are_pinned() {
        // UUID v5 in the URL namespace of "annals:saga/fulfilment/<order>/command/<key>".
        assert_eq!(
            command_id::<Fulfilment>(ORDER, "charge").to_string(),
            "c6bccc91-1783-51ea-88b7-828b7e3f8f7b"
        );
        assert_eq!(
            command_id::<Fulfilment>(ORDER, "reserve:apple").to_string(),
            "cd3a2bdd-90c0-5536-9073-ad4bcfb6e9f7"
        );
    }

    /// Golden values, for the same reason as [`command_ids_are_pinned`].
    #[test]
    fn input_ids_are_pinned() {
        let cancel = Input::CancelRequested {
            reason: "changed my mind".into(),
        };
        assert_eq!(
            input_id::<Fulfilment>(ORDER, &cancel).to_string(),
            "f878d3e6-0a9a-7f07-abbd-f6d925dfc67b"
        );
        let deadline = Input::DeadlinePassed {
            key: crate::fulfilment::DEADLINE.into(),
        };
        assert_eq!(
            input_id::<Fulfilment>(ORDER, &deadline).to_string(),
            "a433ad56-5fe2-71bc-a8fa-61fd9176eb35"
        );
    }
}
