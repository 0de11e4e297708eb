//! Live following: the runner's one subscription to the log, applied in batches to
//! every live projection, and what happens when reading the log fails.

use eventstore::{Position, RecordedEvent, Subscription};

use super::{Mode, Runner};
use crate::catch_up::Target;
use crate::error::Fault;

impl Runner {
    /// Applies a batch of live events (the first one and whatever else is ready).
    pub(super) async fn live(&mut self, first: RecordedEvent) {
        let mut events = vec![first];
        let mut failed = None;
        while events.len() < self.config.live_batch_events {
            match ready_event(&mut self.subscription).await {
                Some(Some(Ok(event))) => events.push(event),
                Some(Some(Err(error))) => {
                    failed = Some(error);
                    break;
                }
                Some(None) | None => break,
            }
        }
        let next = events.last().expect("one event at least").position.0 + 1;
        let members: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].mode == Mode::Live && self.slots[i].checkpoint < next)
            .collect();
        if !members.is_empty() {
            let targets: Vec<Target> = members
                .iter()
                .map(|&i| {
                    let slot = &self.slots[i];
                    Target::at(
                        slot.projection.clone(),
                        slot.active.clone(),
                        slot.checkpoint,
                    )
                })
                .collect();
            let applied = tokio::task::spawn_blocking(move || {
                let mut targets = targets;
                for event in &events {
                    let stored = event.to_stored();
                    for target in &mut targets {
                        if target.wants(stored.position) {
                            target.apply(&stored);
                        }
                    }
                }
                for target in &mut targets {
                    target.flush(next);
                }
                targets
            })
            .await;
            match applied {
                Ok(targets) => {
                    for (target, index) in targets.into_iter().zip(members) {
                        self.settle_active(index, target);
                    }
                }
                Err(error) => {
                    for index in members {
                        let slot = &self.slots[index];
                        let mut target = Target::at(
                            slot.projection.clone(),
                            slot.active.clone(),
                            slot.checkpoint,
                        );
                        target.fault = Some(Fault::new(
                            Position(slot.checkpoint),
                            format!("the projection panicked: {error}"),
                        ));
                        self.settle_active(index, target);
                    }
                }
            }
        }
        self.position = next;
        if let Some(error) = failed {
            self.subscription_failed(&error);
        }
    }

    /// The subscription reported an error reading the log: every live projection stops
    /// where it is (nothing skipped); a retry subscribes again.
    pub(super) fn subscription_failed(&mut self, error: &eventstore::Error) {
        tracing::error!(%error, "the projections' subscription failed");
        self.subscription = None;
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.mode == Mode::Live {
                let mut target = Target::at(
                    slot.projection.clone(),
                    slot.active.clone(),
                    slot.checkpoint,
                );
                target.fault = Some(Fault::new(
                    Position(slot.checkpoint),
                    format!("reading the log failed: {error}"),
                ));
                self.settle_active(index, target);
            }
        }
    }

    /// Subscribes (again) so that the subscription starts at or before every live
    /// projection's checkpoint: no live projection can miss an event.
    pub(super) fn ensure_subscription(&mut self) {
        let Some(lowest) = self
            .slots
            .iter()
            .filter(|slot| slot.mode == Mode::Live)
            .map(|slot| slot.checkpoint)
            .min()
        else {
            return;
        };
        if self.subscription.is_none() || lowest < self.position {
            self.subscription = Some(self.store.subscribe(Position(lowest)));
            self.position = lowest;
        }
    }
}

/// The next event of the subscription; never resolves without one.
pub(super) async fn next_event(
    subscription: &mut Option<Subscription>,
) -> Option<Result<RecordedEvent, eventstore::Error>> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// The next event if one is ready now (`None`: nothing ready; `Some(None)`: the
/// subscription ended).
async fn ready_event(
    subscription: &mut Option<Subscription>,
) -> Option<Option<Result<RecordedEvent, eventstore::Error>>> {
    let subscription = subscription.as_mut()?;
    tokio::select! {
        biased;
        next = subscription.next() => Some(next),
        () = std::future::ready(()) => None,
    }
}
