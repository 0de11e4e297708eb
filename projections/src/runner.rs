//! The [`Runner`]: one task that keeps a set of projections up to date, and its
//! [`Handle`] for queries, status, read-your-writes waits, rebuilds and retries.
//!
//! How a projection moves:
//! - **catching up**: from its checkpoint to near the head of the log, on the fast path
//!   (a blocking job reading the log with `replay_from`, large batches);
//! - **live**: the runner follows the log with one [`Subscription`] and applies what
//!   arrives in batches (all that is ready, up to `live_batch_events`), one atomic write
//!   of changes and checkpoint per projection and batch;
//! - **retrying**: `apply` failed (or panicked) on an event; after a pause (doubling each
//!   time) the projection catches up from its checkpoint again, up to `poison_retries`
//!   times; then under the park policy it catches up once more, parking the event
//!   (`crate::poison`);
//! - **faulted**: the event still failed under the fault policy (or reading the log or
//!   writing the model failed); the projection stops there, its model stays at its last
//!   checkpoint, queries still answer from it, and [`Handle::retry`] starts it again
//!   from that checkpoint;
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
//!
//! The runner is split by concern: this module builds the runner and runs its loop and
//! its catch-up jobs; `handle` is the side everyone else holds ([`Handle`]); `live`
//! follows the log; `rebuild` starts, settles and switches rebuilds; `status` is what
//! the runner publishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use eventstore::{EventStore, Model, Position, ReadModels, Subscription};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catch_up::{Limits, Target, Until, catch_up};
use crate::error::{Error, Fault};
use crate::poison::{PoisonPolicy, Retried};
use crate::projection::Projection;

mod handle;
mod live;
mod rebuild;
mod status;

use handle::{Command, Shared, SlotShared};
pub use handle::{Handle, Rebuild};
use live::next_event;
pub(crate) use status::Progress;
pub use status::{RebuildStatus, State, Status};
use status::{publish, publish_target_progress, rebuild_status};

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
#[derive(Debug, Clone, PartialEq)]
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
    /// How many times a projection applies an event that failed again (from its
    /// checkpoint) before the poison policy decides (`crate::poison`).
    pub poison_retries: u32,
    /// The longest pause before the first of those retries; each next one may wait twice
    /// as long. Half of each pause is fixed and half drawn at random (jitter).
    pub poison_backoff: Duration,
    /// What happens to an event that still fails after the retries: fault (the default)
    /// or park. A projection may choose for itself ([`Projection::poison_policy`]).
    pub poison_policy: PoisonPolicy,
    /// The `projection.apply` fault point, inert unless the server runs with `--chaos`:
    /// an injected panic is a panic of the projection, met by the poison handling
    /// (`crate::poison`).
    pub chaos: chaos::Chaos,
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
            poison_retries: 3,
            poison_backoff: Duration::from_millis(50),
            poison_policy: PoisonPolicy::Fault,
            chaos: chaos::Chaos::inert(),
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

/// How the runner drives one projection's active model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Live,
    CatchingUp,
    Outdated,
    Faulted,
    /// Failed on an event; a catch-up from the checkpoint starts again after a pause.
    Retrying,
}

/// How often one model failed on one event, and what to do about it next.
#[derive(Debug, Default)]
struct Poison {
    /// The position it last failed on and how many times in a row.
    failures: Option<(u64, u32)>,
    /// The event to park on the next catch-up.
    park: Option<Fault>,
}

/// A model being built beside the active one.
#[derive(Debug)]
struct Build {
    model: Model,
    checkpoint: u64,
    running: bool,
    fault: Option<Fault>,
    poison: Poison,
}

struct Slot {
    projection: Arc<dyn Projection>,
    /// The runner's copy of the model answering queries.
    active: Model,
    checkpoint: u64,
    mode: Mode,
    build: Option<Build>,
    poison: Poison,
    /// Callers waiting for the build to take over.
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// Where the active model's worker status goes: `projection:<name>` in the workers
    /// given to [`Runner::report_to`], else a list of its own that nobody reads.
    reporter: supervisor::Reporter,
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
    /// Catch-ups to start again after a poison event's pause.
    delayed: JoinSet<(usize, Role)>,
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
            let projection = crate::poison::with_chaos(projection, &config.chaos);
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
                    poison: Poison::default(),
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
            let parked = crate::poison::count(&active);
            let progress = Progress {
                active: Some(active_version),
                checkpoint: Position(checkpoint),
                state: if mode == Mode::Outdated {
                    State::Outdated
                } else {
                    State::CatchingUp
                },
                rebuild: build.as_ref().map(rebuild_status),
                parked,
            };
            shared_slots.push(SlotShared {
                name,
                version,
                active: RwLock::new(Some(active.clone())),
                progress: watch::channel(progress).0,
            });
            let reporter = supervisor::Workers::default().report(projection.name());
            slots.push(Slot {
                projection,
                active,
                checkpoint,
                mode,
                build,
                poison: Poison::default(),
                waiters: Vec::new(),
                reporter,
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
            delayed: JoinSet::new(),
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
        for slot in &self.slots {
            slot.reporter.running();
        }
        self.launch(start);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    self.job_done(joined, &shutdown).await;
                }
                Some(Ok((index, role))) = self.delayed.join_next(), if !self.delayed.is_empty() => {
                    self.relaunch(index, role);
                }
                Some(command) = self.commands.recv() => self.command(command).await,
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
        self.delayed.abort_all();
        while self.jobs.join_next().await.is_some() {}
        while self.cleanups.join_next().await.is_some() {}
        for slot in &self.shared.slots {
            slot.progress.send_modify(|p| p.state = State::Stopped);
        }
        for slot in &self.slots {
            slot.reporter.stopped();
        }
    }

    /// Lists each projection's active model as a worker, `projection:<name>`, in
    /// `workers` (`GET /api/v1/workers`, `annals_worker_restarts_total`, `/readyz`): it is
    /// `running` while it follows the log, in `backoff` while it waits to retry an event it
    /// failed on (each retry counts as a restart), and `failed` once it stops faulted,
    /// until a retry starts it again.
    pub fn report_to(&mut self, workers: &supervisor::Workers) {
        for slot in &mut self.slots {
            let name = format!("projection:{}", slot.projection.name());
            slot.reporter = workers.report(name);
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
                    slot.reporter.running();
                    publish(&self.shared, index, |p| p.state = State::CatchingUp);
                    let mut target = Target::at(
                        slot.projection.clone(),
                        slot.active.clone(),
                        slot.checkpoint,
                    );
                    target.park = slot.poison.park.take();
                    target
                }
                Role::Build => {
                    let build = slot.build.as_mut().expect("a build to run");
                    build.running = true;
                    build.fault = None;
                    let status = rebuild_status(build);
                    publish(&self.shared, index, |p| p.rebuild = Some(status));
                    let mut target = Target::at(
                        slot.projection.clone(),
                        build.model.clone(),
                        build.checkpoint,
                    );
                    target.park = build.poison.park.take();
                    target
                }
            });
        }
        let (store, shared, stop) = (self.store.clone(), self.shared.clone(), self.stop.clone());
        let (limits, lag) = (self.config.limits(), self.config.switch_lag);
        let threads = self.config.catch_up_threads;
        let job_members = members.clone();
        let work = move || {
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
        };
        // A rebuild runs beside the live models and nothing waits for it: it gives way
        // to commands on low-priority threads. A catch-up of live models (reads wait
        // for them) runs at the normal priority.
        let job = if members.iter().all(|&(_, role)| role == Role::Build) {
            let running = eventstore::low_priority::spawn_blocking(work);
            self.jobs.spawn(async move {
                match running.await {
                    Ok(output) => output,
                    // The job's panic faults its models as a panic on the blocking pool
                    // does (the low-priority runtime is never shut down).
                    Err(error) => std::panic::resume_unwind(error.into_panic()),
                }
            })
        } else {
            self.jobs.spawn_blocking(work)
        };
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
                        target.fault = Some(Fault::new(
                            Position(target.checkpoint),
                            format!("the projection panicked: {error}"),
                        ));
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
                Role::Build if target.fault.is_some() => {
                    if let Some(build) = self.slots[index].build.as_mut() {
                        build.checkpoint = target.checkpoint;
                    }
                    if !self.poisoned(index, Role::Build, target.fault.as_ref()) {
                        self.settle_build(index, target);
                    }
                }
                Role::Build => self.switch(index, target),
            }
        }
        self.ensure_subscription();
    }

    /// Records where an active model's job or live batch left it: live, retrying or
    /// parking a poison event (`crate::poison`), or faulted.
    fn settle_active(&mut self, index: usize, target: Target) {
        let slot = &mut self.slots[index];
        slot.checkpoint = target.checkpoint;
        let checkpoint = Position(target.checkpoint);
        let parked = (target.parked > 0).then(|| crate::poison::count(&slot.active));
        if let Some(parked) = parked {
            publish(&self.shared, index, |p| p.parked = parked);
        }
        if self.poisoned(index, Role::Active, target.fault.as_ref()) {
            publish(&self.shared, index, |p| p.checkpoint = checkpoint);
            return;
        }
        let slot = &mut self.slots[index];
        match target.fault {
            Some(fault) => {
                if slot.mode != Mode::Faulted {
                    tracing::error!(projection = %slot.projection.name(), %fault, "projection faulted");
                }
                slot.reporter.failed(&fault);
                slot.mode = Mode::Faulted;
                publish(&self.shared, index, |p| {
                    p.checkpoint = checkpoint;
                    p.state = State::faulted(fault);
                });
            }
            None => {
                slot.mode = Mode::Live;
                slot.poison.failures = None;
                slot.reporter.running();
                publish(&self.shared, index, |p| {
                    p.checkpoint = checkpoint;
                    p.state = State::Live;
                });
            }
        }
    }

    /// Decides what a model that failed on an event does next: applies the stretch from
    /// its checkpoint again after a pause (up to `poison_retries` times), or, under the
    /// park policy, once more parking the event. Returns whether it took charge (false:
    /// no poison event, or the projection faults).
    fn poisoned(&mut self, index: usize, role: Role, fault: Option<&Fault>) -> bool {
        let Some(fault) = fault.filter(|f| f.is_poison()) else {
            return false;
        };
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let (retries, backoff) = (self.config.poison_retries, self.config.poison_backoff);
        let slot = &mut self.slots[index];
        let policy = slot
            .projection
            .poison_policy()
            .unwrap_or(self.config.poison_policy);
        let name = slot.projection.name().to_owned();
        let poison = match role {
            Role::Active => &mut slot.poison,
            Role::Build => match slot.build.as_mut() {
                Some(build) => &mut build.poison,
                None => return false,
            },
        };
        let failures = match poison.failures {
            Some((position, n)) if position == fault.position.0 => n + 1,
            _ => 1,
        };
        poison.failures = Some((fault.position.0, failures));
        if failures <= retries {
            // Doubling, the second half of each pause drawn at random, so that models
            // failing together do not retry in step.
            let ceiling = backoff.saturating_mul(1 << (failures - 1).min(16));
            let pause = ceiling / 2 + (ceiling / 2).mul_f64(fastrand::f64());
            tracing::warn!(projection = %name, %fault, attempt = failures, ?pause, "a projection failed on an event; retrying");
            self.delayed.spawn(async move {
                tokio::time::sleep(pause).await;
                (index, role)
            });
        } else if policy == PoisonPolicy::Park {
            poison.failures = None;
            poison.park = Some(fault.clone());
            self.launch(vec![(index, role)]);
            return true;
        } else {
            return false;
        }
        if role == Role::Active {
            slot.mode = Mode::Retrying;
            slot.reporter.backoff(fault);
            publish(&self.shared, index, |p| p.state = State::CatchingUp);
        }
        true
    }

    /// A poison event's pause is over: the model catches up again from its checkpoint,
    /// unless something else (a retry request) already started it.
    fn relaunch(&mut self, index: usize, role: Role) {
        let slot = &self.slots[index];
        let waiting = match role {
            Role::Active => slot.mode == Mode::Retrying,
            Role::Build => slot.build.as_ref().is_some_and(|b| b.running),
        };
        if waiting {
            if role == Role::Active {
                slot.reporter.restarted();
            }
            self.launch(vec![(index, role)]);
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Rebuild { slot, reply } => {
                let _ = reply.send(self.start_rebuild(slot));
            }
            Command::Retry { slot, reply } => {
                let _ = reply.send(self.retry(slot).await);
            }
        }
    }

    /// Retries a projection: its parked events first (only while no job writes its
    /// model: live or faulted), then a faulted model (or faulted rebuild) starts again
    /// from its checkpoint, with its retries counted afresh.
    async fn retry(&mut self, index: usize) -> Result<Retried, Error> {
        let slot = &mut self.slots[index];
        let mut retried = Retried::default();
        if matches!(slot.mode, Mode::Live | Mode::Faulted) {
            let (store, projection) = (self.store.clone(), slot.projection.clone());
            let model = slot.active.clone();
            let (done, parked) = tokio::task::spawn_blocking(move || {
                let done = crate::poison::retry_parked(&store, &*projection, &model);
                (done, crate::poison::count(&model))
            })
            .await
            .map_err(|_| Error::Stopped)?;
            (retried.retried, retried.applied) = done?;
            publish(&self.shared, index, |p| p.parked = parked);
        }
        let slot = &mut self.slots[index];
        let mut members = Vec::new();
        if matches!(slot.mode, Mode::Faulted | Mode::Retrying) {
            slot.poison = Poison::default();
            members.push((index, Role::Active));
        }
        if let Some(build) = slot
            .build
            .as_mut()
            .filter(|b| b.fault.is_some() && !b.running)
        {
            build.poison = Poison::default();
            members.push((index, Role::Build));
        }
        retried.resumed = !members.is_empty();
        self.launch(members);
        retried.parked = self.shared.slots[index].progress.borrow().parked;
        Ok(retried)
    }
}

fn fault_unfaulted(targets: &mut [Target], error: &str) {
    for target in targets.iter_mut().filter(|t| t.fault.is_none()) {
        target.fault = Some(Fault::new(Position(target.checkpoint), error));
    }
}
