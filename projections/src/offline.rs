//! Projections without a runner, for the command line on a stopped store: status (with
//! a dry run that finds a poison event at the checkpoint) and blue-green rebuilds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use eventstore::{EventStore, Position};
use serde::Serialize;

use crate::catch_up::{Target, Until, catch_up};
use crate::changes::Changes;
use crate::error::{Error, Fault};
use crate::projection::Projection;
use crate::runner::{
    BUILDS, Progress, RebuildStatus, RunnerConfig, State, Status, next_build, stored_version,
};

/// The status of each projection in a store that no runner is running on.
///
/// The state is `outdated` when the active model was built by another version of the
/// code, `faulted` when a dry run of the next `probe_events` events after the checkpoint
/// (nothing is written) fails on one of them, else `stopped`. A stored build that is
/// not active shows as an interrupted rebuild.
pub fn statuses(
    store: &EventStore,
    projections: &[Arc<dyn Projection>],
    probe_events: u64,
) -> Result<Vec<Status>, Error> {
    let models = store.read_models()?;
    let stored = models.stored_models();
    let head = store.next_position();
    let mut statuses = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        let version = projection.version();
        let active = models.active_version(name)?;
        let (checkpoint, state, parked) = match active {
            None => (Position(0), State::Stopped, 0),
            Some(active) => {
                let model = models.model(name, active)?;
                let checkpoint = model.checkpoint()?;
                let parked = crate::poison::count(&model);
                let state = if active / BUILDS != version {
                    State::Outdated
                } else {
                    match probe(store, projection, model, checkpoint, probe_events)? {
                        Some(fault) => State::faulted(fault),
                        None => State::Stopped,
                    }
                };
                (checkpoint, state, parked)
            }
        };
        let rebuild = match stored.iter().find(|(n, v)| n == name && Some(*v) != active) {
            Some((_, build)) => Some(RebuildStatus {
                version: build / BUILDS,
                build: build % BUILDS,
                checkpoint: models.model(name, *build)?.checkpoint()?,
                fault: None,
            }),
            None => None,
        };
        let progress = Progress {
            active,
            checkpoint,
            state,
            rebuild,
            parked,
        };
        statuses.push(progress.status(name, version, head));
    }
    Ok(statuses)
}

/// Applies up to `events` events from `checkpoint` to a throwaway batch; the first
/// failure, if any.
fn probe(
    store: &EventStore,
    projection: &Arc<dyn Projection>,
    model: eventstore::Model,
    checkpoint: Position,
    events: u64,
) -> Result<Option<Fault>, Error> {
    let mut changes = Changes::new(model);
    let mut fault = None;
    let mut seen = 0u64;
    let result = store.replay_from(checkpoint, |event| {
        if seen >= events || fault.is_some() {
            return Err(eventstore::Error::WriterStopped("probe done".into()));
        }
        seen += 1;
        if let Err(error) = projection.apply(event, &mut changes) {
            fault = Some(Fault::on_event(event, error.to_string()));
        }
        Ok(())
    });
    match result {
        Err(error) if seen < events && fault.is_none() => Err(error.into()),
        _ => Ok(fault),
    }
}

/// One projection rebuilt by [`rebuild`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    /// The projection.
    pub name: String,
    /// The version now active.
    pub version: u32,
    /// Its build number.
    pub build: u32,
    /// The position up to which (exclusive) it applied the log.
    pub checkpoint: Position,
    /// The stored version it replaced (`version * 1000 + build`), if any.
    pub replaced: Option<u32>,
}

/// The outcome of an offline rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    /// The projections rebuilt and switched in.
    pub rebuilt: Vec<Rebuilt>,
    /// Events read from the log (once for all projections).
    pub events: u64,
    /// Seconds from the first event read to the last switch.
    pub seconds: f64,
}

/// Rebuilds `projections` on a store no runner is running on: for each, a new model
/// beside the active one, all built in one pass over the log from position 0 (the fast
/// path, with large batches, on `config.catch_up_threads` threads), then each switched in atomically and the old one dropped.
/// `progress(position, head)` is called as the pass goes. If a projection faults, its
/// new model is dropped (the active one stays) and, after the others are switched in,
/// [`Error::Faulted`] names it.
pub fn rebuild(
    store: &EventStore,
    projections: &[Arc<dyn Projection>],
    config: &RunnerConfig,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RebuildReport, Error> {
    let models = store.read_models()?;
    let stored = models.stored_models();
    let mut targets = Vec::with_capacity(projections.len());
    let mut actives = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        let version = projection.version();
        if version > crate::MAX_VERSION {
            return Err(Error::VersionTooLarge {
                name: name.to_owned(),
                version,
                max: crate::MAX_VERSION,
            });
        }
        let active = models.active_version(name)?;
        // Builds a crash left behind are of no use to a rebuild from zero.
        for (_, stale) in stored
            .iter()
            .filter(|(n, v)| n == name && Some(*v) != active)
        {
            models.drop_model(name, *stale)?;
        }
        let build = stored_version(version, next_build(active, version));
        let model = models.model(name, build)?;
        model.clear()?;
        targets.push(Target::at(projection.clone(), model, 0));
        actives.push(active);
    }
    let head = store.next_position().0;
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let progress = |_: usize, _: &Target, position: u64| progress(position, head);
    catch_up(
        store,
        &mut targets,
        config.limits(),
        Until::Position(head),
        &stop,
        config.catch_up_threads,
        &progress,
    )?;
    let mut rebuilt = Vec::new();
    let mut first_fault = None;
    for (target, active) in targets.into_iter().zip(actives) {
        let name = target.projection.name().to_owned();
        let stored = target.model.version();
        if let Some(fault) = target.fault {
            models.drop_model(&name, stored)?;
            first_fault.get_or_insert(Error::Faulted { name, fault });
            continue;
        }
        models.activate(&name, stored)?;
        if let Some(old) = active {
            models.drop_model(&name, old)?;
        }
        rebuilt.push(Rebuilt {
            name,
            version: stored / BUILDS,
            build: stored % BUILDS,
            checkpoint: Position(target.checkpoint),
            replaced: active,
        });
    }
    if let Some(fault) = first_fault {
        return Err(fault);
    }
    Ok(RebuildReport {
        rebuilt,
        events: head,
        seconds: started.elapsed().as_secs_f64(),
    })
}
