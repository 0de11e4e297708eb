//! How a rebuild runs: started (or joined) on request, settled when it faults, and
//! switched in atomically once it has reached the head of the log.

use std::sync::PoisonError;

use eventstore::Position;
use tokio::sync::oneshot;

use super::handle::Rebuild;
use super::status::{State, publish, rebuild_status};
use super::{BUILDS, Build, Mode, Role, Runner, next_build, stored_version};
use crate::catch_up::Target;
use crate::error::{Error, Fault};

impl Runner {
    /// Records a build that faulted; its waiters learn why.
    pub(super) fn settle_build(&mut self, index: usize, target: Target) {
        let slot = &mut self.slots[index];
        let Some(build) = slot.build.as_mut() else {
            return;
        };
        build.checkpoint = target.checkpoint;
        build.running = false;
        build.fault = target.fault.clone();
        let status = rebuild_status(build);
        // Status first, then the waiters: what they see next is the outcome.
        publish(&self.shared, index, |p| p.rebuild = Some(status));
        if let Some(fault) = target.fault {
            tracing::error!(projection = %slot.projection.name(), %fault, "rebuild faulted");
            for waiter in slot.waiters.drain(..) {
                let _ = waiter.send(Err(Error::Faulted {
                    name: slot.projection.name().to_owned(),
                    fault: fault.clone(),
                }));
            }
        }
    }

    /// The new model, at the head of the log, takes over from the active one.
    pub(super) fn switch(&mut self, index: usize, target: Target) {
        let name = self.slots[index].projection.name().to_owned();
        let new_version = target.model.version();
        {
            let shared_slot = &self.shared.slots[index];
            let mut active = shared_slot
                .active
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Err(error) = self.models.activate(&name, new_version) {
                drop(active);
                let mut target = target;
                target.fault = Some(Fault::new(
                    Position(target.checkpoint),
                    format!("activating the new model failed: {error}"),
                ));
                self.settle_build(index, target);
                return;
            }
            *active = Some(target.model.clone());
            // Published while the lock is held: a query that sees the new model then
            // sees the new status too.
            let parked = crate::poison::count(&target.model);
            publish(&self.shared, index, |p| {
                p.parked = parked;
                p.active = Some(new_version);
                p.checkpoint = Position(target.checkpoint);
                p.state = State::Live;
                p.rebuild = None;
            });
        }
        let slot = &mut self.slots[index];
        let old = std::mem::replace(&mut slot.active, target.model);
        slot.checkpoint = target.checkpoint;
        slot.mode = Mode::Live;
        slot.poison = super::Poison::default();
        slot.build = None;
        let checkpoint = Position(target.checkpoint);
        for waiter in slot.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        tracing::info!(projection = %name, version = new_version, %checkpoint, "rebuilt read model took over");
        if old.version() != new_version {
            // No query holds the old model any more (they all went through the lock).
            // Dropping a large tree takes a while: live batches go on meanwhile, and if
            // the process stops first, the next start drops it.
            let models = self.models.clone();
            while self.cleanups.try_join_next().is_some() {}
            self.cleanups.spawn_blocking(move || {
                if let Err(error) = models.drop_model(&name, old.version()) {
                    tracing::warn!(%error, "dropping the old read model failed; it is dropped at the next start");
                }
            });
        }
    }

    pub(super) fn start_rebuild(&mut self, index: usize) -> Result<Rebuild, Error> {
        let slot = &mut self.slots[index];
        let name = slot.projection.name().to_owned();
        let version = slot.projection.version();
        let (done_tx, done) = oneshot::channel();
        if let Some(build) = &slot.build
            && build.fault.is_none()
        {
            // One is under way: join it.
            let (stored, running) = (build.model.version(), build.running);
            slot.waiters.push(done_tx);
            if !running {
                self.launch(vec![(index, Role::Build)]);
            }
            return Ok(Rebuild {
                name,
                version: stored / BUILDS,
                build: stored % BUILDS,
                // A build that had stopped (not faulted) runs again for this request.
                started: !running,
                done,
            });
        }
        if let Some(faulted) = slot.build.take() {
            self.models.drop_model(&name, faulted.model.version())?;
        }
        let stored = stored_version(version, next_build(Some(slot.active.version()), version));
        let model = self.models.model(&name, stored)?;
        model.clear()?;
        slot.build = Some(Build {
            model,
            checkpoint: 0,
            running: false,
            fault: None,
            poison: super::Poison::default(),
        });
        slot.waiters.push(done_tx);
        tracing::info!(projection = %name, version = stored, "rebuild started");
        self.launch(vec![(index, Role::Build)]);
        Ok(Rebuild {
            name,
            version,
            build: stored % BUILDS,
            started: true,
            done,
        })
    }
}
