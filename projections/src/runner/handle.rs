//! The [`Handle`]: the runner's side for everyone else (queries, status, read-your-writes
//! waits, rebuilds and retries), and the state it shares with the runner.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use eventstore::{EventStore, Model, Position};
use tokio::sync::{mpsc, oneshot, watch};

use super::status::{Progress, State, Status};
use crate::error::Error;
use crate::poison::{ParkedEvent, Retried};

/// What the runner shares with the handles about one projection.
#[derive(Debug)]
pub(super) struct SlotShared {
    pub(super) name: String,
    pub(super) version: u32,
    /// The model answering queries. Queries hold the read lock while they read; the
    /// switch takes the write lock, so it waits for them and no query sees two models.
    pub(super) active: RwLock<Option<Model>>,
    pub(super) progress: watch::Sender<Progress>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) slots: Vec<SlotShared>,
    pub(super) by_name: HashMap<String, usize>,
}

/// What a handle asks of the runner.
#[derive(Debug)]
pub(super) enum Command {
    Rebuild {
        slot: usize,
        reply: oneshot::Sender<Result<Rebuild, Error>>,
    },
    Retry {
        slot: usize,
        reply: oneshot::Sender<Result<Retried, Error>>,
    },
}

/// A rebuild that was started (or joined, if one was running): await
/// [`Rebuild::finished`] for its end.
#[derive(Debug)]
pub struct Rebuild {
    /// The projection.
    pub name: String,
    /// The version being built.
    pub version: u32,
    /// Its build number.
    pub build: u32,
    /// Whether this request set it running (`false`: it joined one already running).
    pub started: bool,
    pub(super) done: oneshot::Receiver<Result<(), Error>>,
}

impl Rebuild {
    /// Resolves once the new model has taken over, or with the fault that stopped it
    /// ([`Error::Stopped`] if the runner stopped first).
    pub async fn finished(self) -> Result<(), Error> {
        self.done.await.unwrap_or(Err(Error::Stopped))
    }
}

/// The runner's side of the projections: queries, status, waits, rebuilds. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) store: EventStore,
}

impl Handle {
    /// The projections' names, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.shared.slots.iter().map(|s| s.name.clone()).collect()
    }

    fn slot(&self, name: &str) -> Result<(usize, &SlotShared), Error> {
        let index = *self
            .shared
            .by_name
            .get(name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
        Ok((index, &self.shared.slots[index]))
    }

    /// Every projection's status, in registration order.
    pub fn status(&self) -> Vec<Status> {
        let head = self.store.next_position();
        self.shared
            .slots
            .iter()
            .map(|slot| {
                slot.progress
                    .borrow()
                    .status(&slot.name, slot.version, head)
            })
            .collect()
    }

    /// One projection's status.
    pub fn status_of(&self, name: &str) -> Result<Status, Error> {
        let (_, slot) = self.slot(name)?;
        let head = self.store.next_position();
        Ok(slot
            .progress
            .borrow()
            .status(&slot.name, slot.version, head))
    }

    /// Runs `query` on the model that answers queries for `name`. The model cannot be
    /// switched while the query runs, so keep it short and do not keep the model.
    pub fn read<R>(
        &self,
        name: &str,
        query: impl FnOnce(&Model) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let (_, slot) = self.slot(name)?;
        let active = slot.active.read().unwrap_or_else(PoisonError::into_inner);
        let model = active
            .as_ref()
            .ok_or_else(|| Error::NotBuilt(name.to_owned()))?;
        query(model)
    }

    /// Read-your-writes: resolves with the checkpoint once `name` has applied the event
    /// at `position` (its checkpoint is past it), or fails after `timeout` with
    /// [`Error::Timeout`] naming the checkpoint, or at once with [`Error::Faulted`] if the
    /// projection stopped before it.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position, Error> {
        let (_, slot) = self.slot(name)?;
        let mut progress = slot.progress.subscribe();
        let settled = |p: &Progress| {
            p.checkpoint > position || matches!(p.state, State::Faulted { .. } | State::Stopped)
        };
        let waited = tokio::time::timeout(timeout, async {
            progress.wait_for(settled).await.map(|p| p.clone())
        })
        .await;
        match waited {
            Ok(Ok(p)) if p.checkpoint > position => Ok(p.checkpoint),
            Ok(Ok(Progress {
                state: state @ State::Faulted { .. },
                ..
            })) => Err(Error::Faulted {
                name: name.to_owned(),
                fault: state.fault().expect("a faulted state"),
            }),
            Ok(_) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout {
                name: name.to_owned(),
                wanted: position,
                checkpoint: progress.borrow().checkpoint,
            }),
        }
    }

    /// [`Handle::wait_for`] for every projection, within one `timeout` overall.
    pub async fn wait_for_all(&self, position: Position, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        for slot in &self.shared.slots {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.wait_for(&slot.name, position, left).await?;
        }
        Ok(())
    }

    /// The events `name` has parked (`crate::poison`), in position order.
    pub fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.read(name, crate::poison::parked)
    }

    /// Starts a blue-green rebuild of `name` (or joins the one running).
    pub async fn rebuild(&self, name: &str) -> Result<Rebuild, Error> {
        let (slot, _) = self.slot(name)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Rebuild { slot, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.unwrap_or(Err(Error::Stopped))
    }

    /// Retries `name`: applies its parked events again in position order (those that
    /// succeed leave the list, those that fail stay), then starts it again from its
    /// checkpoint if it (or its rebuild) is faulted, with its retries counted afresh.
    /// Says what it did. Parked events are retried only while the projection is live or
    /// faulted (not while it catches up).
    pub async fn retry(&self, name: &str) -> Result<Retried, Error> {
        let (slot, _) = self.slot(name)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Retry { slot, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.unwrap_or(Err(Error::Stopped))
    }
}
