//! The [`Runner`]: one task that keeps a set of projections up to date, and its
//! [`Handle`] for queries, status, read-your-writes waits, rebuilds and retries.
//!
//! How a projection moves:
//! - **catching up**: from its checkpoint to near the head of the log, on the fast path
//!   (a blocking job reading the log with `replay_from`, large batches);
//! - **live**: the runner follows the log with one [`Subscription`] and applies what
//!   arrives in batches (all that is ready, up to `live_batch_events`), one atomic write
//!   of changes and checkpoint per projection and batch;
//! - **faulted**: `apply` failed on an event; the projection stops there, its model stays
//!   at its last checkpoint, queries still answer from it, and [`Handle::retry`] starts
//!   it again from that checkpoint;
//! - **outdated**: its active read model was built by another version of its code; it
//!   keeps answering queries (without following the log) while the new version builds.
//!
//! A **rebuild** (at start when the code's version differs from the active model's, or
//! on [`Handle::rebuild`]) builds a new model beside the active one, from position 0, on
//! the fast path, while the active one keeps serving and following the log. Once the new
//! model is within `switch_lag` events of the head, the runner pauses its live batches,
//! brings the new model to the head, switches the active version atomically (sled) and
//! under the query lock (so no query straddles the switch), drops the old model's tree
//! and goes on live with the new one. The switch loses no event: every live projection's
//! checkpoint is at or past the runner's subscription, and each projection takes from the
//! subscription only the events at or past its own checkpoint.
//!
//! Stored model versions carry a build number: `version * 1000 + build`, so a rebuild of
//! an unchanged version gets a tree of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use eventstore::{EventStore, Model, Position, ReadModels, RecordedEvent, Subscription};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catch_up::{Limits, Target, Until, catch_up};
use crate::error::{Error, Fault};
use crate::projection::Projection;

/// Builds per projection version: stored model versions are `version * BUILDS + build`.
pub(crate) const BUILDS: u32 = 1000;

/// The largest projection version that can be stored with a build number.
pub const MAX_VERSION: u32 = u32::MAX / BUILDS - 1;

/// The stored version of build `build` of `version`.
pub(crate) fn stored_version(version: u32, build: u32) -> u32 {
    version * BUILDS + build
}

/// The build number that a new build of `version` gets beside the `active` one.
pub(crate) fn next_build(active: Option<u32>, version: u32) -> u32 {
    match active {
        Some(active) if active / BUILDS == version => (active % BUILDS + 1) % BUILDS,
        _ => 0,
    }
}

/// The runner's limits. Every one bounds memory or latency; the defaults suit the
/// reference domain on a small machine.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most events applied in one live batch. Live batches take whatever the
    /// subscription has ready, so under light load they are small and lag stays low;
    /// under heavy load they grow to this, which bounds the work between checkpoints.
    pub live_batch_events: usize,
    /// Most events in one batch of a catch-up or rebuild. Larger batches write each
    /// changed key less often (sled costs microseconds per key written).
    pub catch_up_batch_events: u64,
    /// A catch-up batch is written once the projections hold this many keys in memory:
    /// the bound on a rebuild's memory (each key holds one value of the read model).
    pub catch_up_batch_entries: usize,
    /// A catch-up or rebuild running beside the live projections hands over once it is
    /// this close to the head of the log; the runner then pauses its live batches while
    /// it applies the rest. Smaller pauses, more laps.
    pub switch_lag: u64,
    /// Threads a catch-up or rebuild of several projections uses: each reads the log
    /// and applies it to its share of the projections. Rebuilds are CPU-bound; the
    /// default is one per core.
    pub catch_up_threads: usize,
    /// Requests (rebuild, retry) queued for the runner; callers wait beyond it.
    pub command_queue: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            live_batch_events: 4096,
            catch_up_batch_events: 2_000_000,
            catch_up_batch_entries: 250_000,
            switch_lag: 20_000,
            catch_up_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            command_queue: 64,
        }
    }
}

impl RunnerConfig {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            batch_events: self.catch_up_batch_events,
            batch_entries: self.catch_up_batch_entries,
        }
    }
}

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
    },
    /// Not running (the runner stopped, or the status was read offline).
    Stopped,
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
}

/// What the runner publishes about one projection.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub active: Option<u32>,
    pub checkpoint: Position,
    pub state: State,
    pub rebuild: Option<RebuildStatus>,
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
        }
    }
}

/// What the runner shares with the handles about one projection.
#[derive(Debug)]
struct SlotShared {
    name: String,
    version: u32,
    /// The model answering queries. Queries hold the read lock while they read; the
    /// switch takes the write lock, so it waits for them and no query sees two models.
    active: RwLock<Option<Model>>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug)]
struct Shared {
    slots: Vec<SlotShared>,
    by_name: HashMap<String, usize>,
}

/// What a handle asks of the runner.
#[derive(Debug)]
enum Command {
    Rebuild {
        slot: usize,
        reply: oneshot::Sender<Result<Rebuild, Error>>,
    },
    Retry {
        slot: usize,
        reply: oneshot::Sender<Result<(), Error>>,
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
    done: oneshot::Receiver<Result<(), Error>>,
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
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    store: EventStore,
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
                state: State::Faulted { position, error },
                ..
            })) => Err(Error::Faulted {
                name: name.to_owned(),
                fault: Fault { position, error },
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

    /// Starts a faulted projection (or its faulted rebuild) again from its checkpoint.
    /// Does nothing to a projection that is not faulted.
    pub async fn retry(&self, name: &str) -> Result<(), Error> {
        let (slot, _) = self.slot(name)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Retry { slot, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.unwrap_or(Err(Error::Stopped))
    }
}

/// How the runner drives one projection's active model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Live,
    CatchingUp,
    Outdated,
    Faulted,
}

/// A model being built beside the active one.
#[derive(Debug)]
struct Build {
    model: Model,
    checkpoint: u64,
    running: bool,
    fault: Option<Fault>,
}

struct Slot {
    projection: Arc<dyn Projection>,
    /// The runner's copy of the model answering queries.
    active: Model,
    checkpoint: u64,
    mode: Mode,
    build: Option<Build>,
    /// Callers waiting for the build to take over.
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
}

/// Which model of a slot a job target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Active,
    Build,
}

/// What a catch-up job hands back: its targets and whose they are.
type JobOutput = (Vec<Target>, Vec<(usize, Role)>);

/// The task that keeps the projections up to date. Make it with [`Runner::new`], spawn
/// [`Runner::run`], and use the [`Handle`].
pub struct Runner {
    store: EventStore,
    models: ReadModels,
    config: RunnerConfig,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    commands: mpsc::Receiver<Command>,
    jobs: JoinSet<JobOutput>,
    job_members: HashMap<tokio::task::Id, Vec<(usize, Role)>>,
    /// Old models being dropped after a switch; awaited at shutdown.
    cleanups: JoinSet<()>,
    /// Set at shutdown: running jobs stop at their next check.
    stop: Arc<AtomicBool>,
    subscription: Option<Subscription>,
    /// The position of the next event the subscription delivers.
    position: u64,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field(
                "projections",
                &self.shared.by_name.keys().collect::<Vec<_>>(),
            )
            .field("position", &self.position)
            .finish()
    }
}

impl Runner {
    /// Prepares the runner for `projections` over `store`: finds each one's active model
    /// (activating an empty one for a projection never built), plans a rebuild for each
    /// whose active model another version built (resuming one a crash interrupted), and
    /// drops stale builds. Queries work on the handle at once; the work starts with
    /// [`Runner::run`].
    pub fn new(
        store: &EventStore,
        projections: Vec<Arc<dyn Projection>>,
        config: RunnerConfig,
    ) -> Result<(Runner, Handle), Error> {
        let models = store.read_models()?;
        let stored = models.stored_models();
        let mut slots = Vec::new();
        let mut shared_slots = Vec::new();
        let mut by_name = HashMap::new();
        for projection in projections {
            let name = projection.name().to_owned();
            let version = projection.version();
            if version > MAX_VERSION {
                return Err(Error::VersionTooLarge {
                    name,
                    version,
                    max: MAX_VERSION,
                });
            }
            if by_name.insert(name.clone(), slots.len()).is_some() {
                return Err(Error::DuplicateName(name));
            }
            let active_version = match models.active_version(&name)? {
                Some(active) => active,
                None => {
                    // Nothing serves yet: the first build is active from the start.
                    let first = stored_version(version, 0);
                    models.activate(&name, first)?;
                    first
                }
            };
            let active = models.model(&name, active_version)?;
            let (mode, build) = if active_version / BUILDS == version {
                (Mode::CatchingUp, None)
            } else {
                // Resume a build of this version that a crash interrupted, if any.
                let resumed = stored
                    .iter()
                    .find(|(n, v)| *n == name && *v != active_version && v / BUILDS == version)
                    .map(|(_, v)| *v);
                let model = models.model(&name, resumed.unwrap_or(stored_version(version, 0)))?;
                let checkpoint = model.checkpoint()?.0;
                let build = Build {
                    model,
                    checkpoint,
                    running: false,
                    fault: None,
                };
                (Mode::Outdated, Some(build))
            };
            for (stale_name, stale) in &stored {
                let keep = *stale == active_version
                    || build.as_ref().is_some_and(|b| b.model.version() == *stale);
                if *stale_name == name && !keep {
                    tracing::info!(projection = %name, version = stale, "dropping a stale read model");
                    models.drop_model(&name, *stale)?;
                }
            }
            let checkpoint = active.checkpoint()?.0;
            let progress = Progress {
                active: Some(active_version),
                checkpoint: Position(checkpoint),
                state: if mode == Mode::Outdated {
                    State::Outdated
                } else {
                    State::CatchingUp
                },
                rebuild: build.as_ref().map(rebuild_status),
            };
            shared_slots.push(SlotShared {
                name,
                version,
                active: RwLock::new(Some(active.clone())),
                progress: watch::channel(progress).0,
            });
            slots.push(Slot {
                projection,
                active,
                checkpoint,
                mode,
                build,
                waiters: Vec::new(),
            });
        }
        let shared = Arc::new(Shared {
            slots: shared_slots,
            by_name,
        });
        let (commands_tx, commands) = mpsc::channel(config.command_queue.max(1));
        let handle = Handle {
            shared: shared.clone(),
            commands: commands_tx,
            store: store.clone(),
        };
        let runner = Runner {
            store: store.clone(),
            models,
            config,
            shared,
            slots,
            commands,
            jobs: JoinSet::new(),
            job_members: HashMap::new(),
            cleanups: JoinSet::new(),
            stop: Arc::new(AtomicBool::new(false)),
            subscription: None,
            position: 0,
        };
        Ok((runner, handle))
    }

    /// Runs until `shutdown` is cancelled or the store closes: catches up, follows the
    /// log, runs rebuilds and answers requests. On the way out it stops running jobs
    /// (what they applied stays, with its checkpoint) and marks every projection stopped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let start: Vec<(usize, Role)> = self
            .slots
            .iter()
            .enumerate()
            .flat_map(|(index, slot)| {
                let active = (slot.mode == Mode::CatchingUp).then_some((index, Role::Active));
                let build = slot.build.as_ref().map(|_| (index, Role::Build));
                active.into_iter().chain(build)
            })
            .collect();
        self.launch(start);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    self.job_done(joined, &shutdown).await;
                }
                Some(command) = self.commands.recv() => self.command(command),
                next = next_event(&mut self.subscription) => match next {
                    Some(Ok(event)) => self.live(event).await,
                    Some(Err(error)) => self.subscription_failed(&error),
                    None => {
                        tracing::info!("the store closed; the projection runner stops");
                        break;
                    }
                },
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        while self.jobs.join_next().await.is_some() {}
        while self.cleanups.join_next().await.is_some() {}
        for slot in &self.shared.slots {
            slot.progress.send_modify(|p| p.state = State::Stopped);
        }
    }

    /// Starts one catch-up job (fast path) for these models.
    fn launch(&mut self, members: Vec<(usize, Role)>) {
        if members.is_empty() {
            return;
        }
        let mut targets = Vec::with_capacity(members.len());
        for &(index, role) in &members {
            let slot = &mut self.slots[index];
            targets.push(match role {
                Role::Active => {
                    slot.mode = Mode::CatchingUp;
                    publish(&self.shared, index, |p| p.state = State::CatchingUp);
                    Target::at(
                        slot.projection.clone(),
                        slot.active.clone(),
                        slot.checkpoint,
                    )
                }
                Role::Build => {
                    let build = slot.build.as_mut().expect("a build to run");
                    build.running = true;
                    build.fault = None;
                    let status = rebuild_status(build);
                    publish(&self.shared, index, |p| p.rebuild = Some(status));
                    Target::at(
                        slot.projection.clone(),
                        build.model.clone(),
                        build.checkpoint,
                    )
                }
            });
        }
        let (store, shared, stop) = (self.store.clone(), self.shared.clone(), self.stop.clone());
        let (limits, lag) = (self.config.limits(), self.config.switch_lag);
        let threads = self.config.catch_up_threads;
        let job_members = members.clone();
        let job = self.jobs.spawn_blocking(move || {
            let progress = |index: usize, target: &Target, _: u64| {
                publish_target_progress(&shared, job_members[index], target);
            };
            let read = catch_up(
                &store,
                &mut targets,
                limits,
                Until::Lag(lag),
                &stop,
                threads,
                &progress,
            );
            if let Err(error) = read {
                fault_unfaulted(&mut targets, &format!("reading the log failed: {error}"));
            }
            (targets, job_members)
        });
        self.job_members.insert(job.id(), members);
    }

    /// A job ended: bring its healthy targets to the head (live batches wait meanwhile),
    /// then put them live or switch them in.
    async fn job_done(
        &mut self,
        joined: Result<(tokio::task::Id, JobOutput), tokio::task::JoinError>,
        shutdown: &CancellationToken,
    ) {
        let (targets, members) = match joined {
            Ok((id, output)) => {
                self.job_members.remove(&id);
                output
            }
            Err(error) => {
                // A projection panicked: fault every model of the job where it stood.
                let members = self.job_members.remove(&error.id()).unwrap_or_default();
                let targets = members
                    .iter()
                    .map(|&(index, role)| {
                        let slot = &self.slots[index];
                        let (model, checkpoint) = match role {
                            Role::Active => (slot.active.clone(), slot.checkpoint),
                            Role::Build => {
                                let build = slot.build.as_ref().expect("a build");
                                (build.model.clone(), build.checkpoint)
                            }
                        };
                        let mut target = Target::at(slot.projection.clone(), model, checkpoint);
                        target.checkpoint = target.model.checkpoint().map_or(checkpoint, |c| c.0);
                        target.fault = Some(Fault {
                            position: Position(target.checkpoint),
                            error: format!("the projection panicked: {error}"),
                        });
                        target
                    })
                    .collect();
                (targets, members)
            }
        };
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let head = self.store.next_position().0;
        let (store, shared, stop) = (self.store.clone(), self.shared.clone(), self.stop.clone());
        let (limits, threads) = (self.config.limits(), self.config.catch_up_threads);
        let mut finishing = tokio::task::spawn_blocking(move || {
            let (mut targets, members) = (targets, members);
            let progress = |index: usize, target: &Target, _: u64| {
                publish_target_progress(&shared, members[index], target);
            };
            let read = catch_up(
                &store,
                &mut targets,
                limits,
                Until::Position(head),
                &stop,
                threads,
                &progress,
            );
            if let Err(error) = read {
                fault_unfaulted(&mut targets, &format!("reading the log failed: {error}"));
            }
            (targets, members)
        });
        let finished = tokio::select! {
            finished = &mut finishing => finished,
            () = shutdown.cancelled() => {
                // Stop it where it is (what it applied stays), and leave.
                self.stop.store(true, Ordering::Relaxed);
                let _ = finishing.await;
                return;
            }
        };
        let Ok((targets, members)) = finished else {
            tracing::error!("the final catch-up of a projection job panicked");
            return;
        };
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        for (target, (index, role)) in targets.into_iter().zip(members) {
            match role {
                Role::Active => self.settle_active(index, target),
                Role::Build if target.fault.is_some() => self.settle_build(index, target),
                Role::Build => self.switch(index, target),
            }
        }
        self.ensure_subscription();
    }

    /// Records where an active model's job or live batch left it.
    fn settle_active(&mut self, index: usize, target: Target) {
        let slot = &mut self.slots[index];
        slot.checkpoint = target.checkpoint;
        let checkpoint = Position(target.checkpoint);
        match target.fault {
            Some(fault) => {
                if slot.mode != Mode::Faulted {
                    tracing::error!(projection = %slot.projection.name(), %fault, "projection faulted");
                }
                slot.mode = Mode::Faulted;
                publish(&self.shared, index, |p| {
                    p.checkpoint = checkpoint;
                    p.state = State::Faulted {
                        position: fault.position,
                        error: fault.error,
                    };
                });
            }
            None => {
                slot.mode = Mode::Live;
                publish(&self.shared, index, |p| {
                    p.checkpoint = checkpoint;
                    p.state = State::Live;
                });
            }
        }
    }

    /// Records a build that faulted; its waiters learn why.
    fn settle_build(&mut self, index: usize, target: Target) {
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
    fn switch(&mut self, index: usize, target: Target) {
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
                target.fault = Some(Fault {
                    position: Position(target.checkpoint),
                    error: format!("activating the new model failed: {error}"),
                });
                self.settle_build(index, target);
                return;
            }
            *active = Some(target.model.clone());
            // Published while the lock is held: a query that sees the new model then
            // sees the new status too.
            publish(&self.shared, index, |p| {
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

    fn command(&mut self, command: Command) {
        match command {
            Command::Rebuild { slot, reply } => {
                let _ = reply.send(self.start_rebuild(slot));
            }
            Command::Retry { slot: index, reply } => {
                let slot = &self.slots[index];
                let mut members = Vec::new();
                if slot.mode == Mode::Faulted {
                    members.push((index, Role::Active));
                }
                if slot
                    .build
                    .as_ref()
                    .is_some_and(|b| b.fault.is_some() && !b.running)
                {
                    members.push((index, Role::Build));
                }
                self.launch(members);
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn start_rebuild(&mut self, index: usize) -> Result<Rebuild, Error> {
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
        });
        slot.waiters.push(done_tx);
        tracing::info!(projection = %name, version = stored, "rebuild started");
        self.launch(vec![(index, Role::Build)]);
        Ok(Rebuild {
            name,
            version,
            build: stored % BUILDS,
            done,
        })
    }

    /// Applies a batch of live events (the first one and whatever else is ready).
    async fn live(&mut self, first: RecordedEvent) {
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
                        target.fault = Some(Fault {
                            position: Position(slot.checkpoint),
                            error: format!("the projection panicked: {error}"),
                        });
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
    fn subscription_failed(&mut self, error: &eventstore::Error) {
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
                target.fault = Some(Fault {
                    position: Position(slot.checkpoint),
                    error: format!("reading the log failed: {error}"),
                });
                self.settle_active(index, target);
            }
        }
    }

    /// Subscribes (again) so that the subscription starts at or before every live
    /// projection's checkpoint: no live projection can miss an event.
    fn ensure_subscription(&mut self) {
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
async fn next_event(
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

fn rebuild_status(build: &Build) -> RebuildStatus {
    let stored = build.model.version();
    RebuildStatus {
        version: stored / BUILDS,
        build: stored % BUILDS,
        checkpoint: Position(build.checkpoint),
        fault: build.fault.clone(),
    }
}

fn publish(shared: &Shared, index: usize, change: impl FnOnce(&mut Progress)) {
    shared.slots[index].progress.send_modify(change);
}

/// Publishes a job's progress on one model: an active model's checkpoint (queries and
/// waits see it move) or a build's.
fn publish_target_progress(shared: &Shared, (index, role): (usize, Role), target: &Target) {
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

fn fault_unfaulted(targets: &mut [Target], error: &str) {
    for target in targets.iter_mut().filter(|t| t.fault.is_none()) {
        target.fault = Some(Fault {
            position: Position(target.checkpoint),
            error: error.to_owned(),
        });
    }
}
