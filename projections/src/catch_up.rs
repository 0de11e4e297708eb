//! The fast path: applying a stretch of the log to several read models in one pass,
//! with large in-memory batches.
//!
//! Rebuilds, start-up catch-up, retries and the last step before a switch all come here.
//! It reads the log with [`EventStore::replay_from`] (decoding in place, no allocation
//! per event), hands every event to each [`Target`] that has not applied it yet, and
//! writes a target's batch (its changes plus its checkpoint, atomically) every
//! `batch_events` events or once the batches hold `batch_entries` keys. One pass serves
//! every target, so rebuilding all read models reads the log once.
//!
//! A [`Target`] is also what the live path applies its batches with, so every batch of
//! every path runs in the projection's `project` span from its first event until it is
//! written, linked to its events' traces (`crate::trace`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventstore::{EventStore, Model, ModelBatch, Position, StoredEvent};

use crate::changes::Changes;
use crate::error::Fault;
use crate::projection::Projection;
use crate::trace::BatchSpan;

/// How large the batches of a catch-up grow before they are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub batch_events: u64,
    pub batch_entries: usize,
}

/// When a catch-up may stop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    /// Once every target is within this many events of the head of the log.
    Lag(u64),
    /// Once every target has applied everything before this position.
    Position(u64),
}

/// One read model being brought forward.
pub(crate) struct Target {
    pub projection: Arc<dyn Projection>,
    pub model: Model,
    /// Everything before it is in the model.
    pub checkpoint: u64,
    /// Set when the projection failed on an event or its batch could not be written;
    /// the target then takes no more events.
    pub fault: Option<Fault>,
    /// The poison event to park instead of applying it, when the runner's policy says so
    /// (`crate::poison`).
    pub park: Option<Fault>,
    /// Events parked since the target was made.
    pub parked: u64,
    changes: Option<Changes>,
    /// The span of the pending batch, from its first event until it is written.
    span: Option<BatchSpan>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("model", &(self.model.name(), self.model.version()))
            .field("checkpoint", &self.checkpoint)
            .field("fault", &self.fault)
            .finish()
    }
}

impl Target {
    /// A target whose model has applied everything before `checkpoint`.
    pub fn at(projection: Arc<dyn Projection>, model: Model, checkpoint: u64) -> Self {
        Target {
            projection,
            model,
            checkpoint,
            fault: None,
            park: None,
            parked: 0,
            changes: None,
            span: None,
        }
    }

    /// Whether the event at `position` is still to be applied.
    pub fn wants(&self, position: u64) -> bool {
        self.fault.is_none() && position >= self.checkpoint
    }

    /// Applies one event to the pending batch; on an error (or a panic of the
    /// projection) the batch is discarded and the target is faulted at this event. The
    /// event to park (`park`) is recorded as parked in the batch instead of applied.
    pub fn apply(&mut self, event: &StoredEvent<'_>) {
        let changes = self
            .changes
            .get_or_insert_with(|| Changes::new(self.model.clone()));
        let span = self
            .span
            .get_or_insert_with(|| BatchSpan::begin(self.projection.name()));
        span.event(event);
        let outcome = match self.park.take() {
            Some(fault) if fault.position.0 == event.position => {
                tracing::warn!(projection = %self.projection.name(), %fault, "parking a poison event");
                self.parked += 1;
                crate::poison::park(changes, &fault).map_err(|error| error.to_string())
            }
            park => {
                self.park = park;
                crate::poison::apply_caught(&*self.projection, event, changes)
            }
        };
        if let Err(error) = outcome {
            self.changes = None;
            let fault = Fault::on_event(event, error);
            if let Some(span) = self.span.take() {
                span.fault(&fault.to_string());
                span.end();
            }
            self.fault = Some(fault);
        }
    }

    /// Keys held by the pending batch.
    pub fn entries(&self) -> usize {
        self.changes.as_ref().map_or(0, Changes::entries)
    }

    /// Writes the pending batch with the checkpoint `next`, atomically, if `next` moves
    /// the checkpoint forward.
    pub fn flush(&mut self, next: u64) {
        if self.fault.is_some() || next <= self.checkpoint {
            return;
        }
        // Closed once the batch is written (or failed to be).
        let span = self.span.take();
        let mut batch = ModelBatch::default();
        let written = match self.changes.take() {
            None => Ok(()),
            Some(changes) => {
                let encoded = changes.write(&mut batch);
                if changes.entries() >= DROP_ASIDE_ENTRIES {
                    // Freeing a large batch takes a while: let another thread do it
                    // while this one writes.
                    std::thread::spawn(move || drop(changes));
                }
                encoded
            }
        };
        let written = written.map_err(|error| error.to_string()).and_then(|()| {
            self.model
                .apply(batch, Position(next))
                .map_err(|error| error.to_string())
        });
        match written {
            Ok(()) => self.checkpoint = next,
            Err(error) => {
                let fault = Fault::new(
                    Position(self.checkpoint),
                    format!("writing the batch failed: {error}"),
                );
                if let Some(span) = &span {
                    span.fault(&fault.to_string());
                }
                self.fault = Some(fault);
            }
        }
        if let Some(span) = span {
            span.end();
        }
    }
}

/// A batch holding this many keys is freed on another thread.
const DROP_ASIDE_ENTRIES: usize = 5_000;

/// Batches holding this many keys are written on threads of their own when several
/// are due at once (sled writes of separate trees go on in parallel).
const PARALLEL_FLUSH_ENTRIES: usize = 1_000;

/// Writes every target's batch with the checkpoint `position`.
fn flush_all(targets: &mut [(usize, Target)], position: u64) {
    let large = targets
        .iter()
        .filter(|(_, target)| target.entries() >= PARALLEL_FLUSH_ENTRIES)
        .count();
    if large < 2 {
        for (_, target) in targets.iter_mut() {
            target.flush(position);
        }
        return;
    }
    std::thread::scope(|scope| {
        for (_, target) in targets.iter_mut() {
            scope.spawn(move || target.flush(position));
        }
    });
}

/// Brings `targets` forward from their checkpoints until `until` holds, `stop` is set,
/// or every target has faulted, on up to `threads` threads (each reads the log and
/// serves a share of the targets). Calls `progress(index, target, position)` for each
/// target after each write and every 65,536 events. Returns whether it finished (false:
/// stopped). A target that faults keeps its fault; the others go on. An error reading
/// the log is returned as is (nothing was skipped: the targets stay at their
/// checkpoints, which are written for what was applied).
pub(crate) fn catch_up(
    store: &EventStore,
    targets: &mut Vec<Target>,
    limits: Limits,
    until: Until,
    stop: &AtomicBool,
    threads: usize,
    progress: &(dyn Fn(usize, &Target, u64) + Sync),
) -> Result<bool, eventstore::Error> {
    let threads = threads.clamp(1, targets.len().max(1));
    // Heaviest first, each to the least loaded thread.
    let mut by_weight: Vec<(usize, Target)> =
        std::mem::take(targets).into_iter().enumerate().collect();
    by_weight
        .sort_by_key(|(index, target)| (std::cmp::Reverse(target.projection.weight()), *index));
    let mut groups: Vec<Vec<(usize, Target)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut loads = vec![0u64; threads];
    for (index, target) in by_weight {
        let lightest = (0..threads)
            .min_by_key(|&t| loads[t])
            .expect("one thread at least");
        loads[lightest] += u64::from(target.projection.weight().max(1));
        groups[lightest].push((index, target));
    }
    let results: Vec<Result<bool, eventstore::Error>> = if threads == 1 {
        vec![pass(store, &mut groups[0], limits, until, stop, progress)]
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = groups
                .iter_mut()
                .map(|group| scope.spawn(move || pass(store, group, limits, until, stop, progress)))
                .collect();
            running
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };
    let mut all: Vec<(usize, Target)> = groups.into_iter().flatten().collect();
    all.sort_by_key(|(index, _)| *index);
    targets.extend(all.into_iter().map(|(_, target)| target));
    let mut finished = true;
    for result in results {
        finished &= result?;
    }
    Ok(finished)
}

/// One thread's share of [`catch_up`]: one pass over the log for its targets.
fn pass(
    store: &EventStore,
    targets: &mut [(usize, Target)],
    limits: Limits,
    until: Until,
    stop: &AtomicBool,
    progress: &(dyn Fn(usize, &Target, u64) + Sync),
) -> Result<bool, eventstore::Error> {
    let report = |targets: &[(usize, Target)], position: u64| {
        for (index, target) in targets {
            progress(*index, target, position);
        }
    };
    loop {
        let Some(from) = targets
            .iter()
            .filter(|(_, target)| target.fault.is_none())
            .map(|(_, target)| target.checkpoint)
            .min()
        else {
            return Ok(true);
        };
        let done = match until {
            Until::Lag(lag) => store.next_position().0.saturating_sub(from) <= lag,
            Until::Position(position) => from >= position,
        };
        if done {
            return Ok(true);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut in_batch = 0u64;
        let mut position = from;
        let mut stopped = false;
        let replayed = store.replay_from(Position(from), |event| {
            if in_batch.is_multiple_of(256) {
                // A rebuild, on a low-priority thread, rests while commands run.
                eventstore::low_priority::pace();
            }
            if in_batch.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
                stopped = true;
                // Any error ends the replay; this one is recognised by `stopped`.
                return Err(eventstore::Error::WriterStopped(
                    "projection catch-up stopped".into(),
                ));
            }
            for (_, target) in targets.iter_mut() {
                if target.wants(event.position) {
                    target.apply(event);
                }
            }
            position = event.position + 1;
            in_batch += 1;
            if in_batch >= limits.batch_events
                || (in_batch.is_multiple_of(1024)
                    && targets.iter().map(|(_, t)| t.entries()).sum::<usize>()
                        >= limits.batch_entries)
            {
                flush_all(targets, position);
                report(targets, position);
                in_batch = 0;
            } else if in_batch.is_multiple_of(65_536) {
                report(targets, position);
            }
            Ok(())
        });
        // What was applied is written even when stopped: the checkpoints say where.
        flush_all(targets, position);
        report(targets, position);
        match replayed {
            _ if stopped => return Ok(false),
            Err(error) => return Err(error),
            // Nothing more is durable: the bound lies beyond the log.
            Ok(0) => return Ok(true),
            Ok(_) => {}
        }
    }
}
