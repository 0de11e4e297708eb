//! The thin async driver around a pure [`Saga`].
//!
//! One task follows the log from the saga's checkpoint and routes events to instances
//! ([`Dispatcher::route`]). Each instance is a task that owns its state: for every
//! input it first **records** it in the saga's stream (an append with the expected
//! version and an id derived from the input, so an input delivered twice is recorded
//! once), then handles it, then issues the step's commands ([`Dispatcher::execute`], one
//! task each, retried while the store fails) and arms its deadlines. Answers and passed
//! deadlines come back to the instance as inputs and are recorded the same way.
//!
//! After a crash nothing is lost: an instance starts by replaying its stream, issues
//! again the commands that have no recorded answer (their ids are derived from the
//! instance and the command key, so a command that had taken effect is recognised by the
//! store and answered with its first outcome), and re-arms its deadlines.
//!
//! An instance never assumes it is the only writer of its stream: when the saga moves to
//! another node (the log on JetStream, the saga's lease taken over), the former holder's
//! last records may reach the stream after, or be missing from this node's copy when,
//! the instance loads. It catches the copy up with its stream before loading, and when a
//! record meets a moved stream (a version conflict) or an input recorded past the version
//! it loaded (a duplicate it never applied), it loads again and takes the input again
//! (`driver/instance.rs`).
//!
//! The checkpoint is a low-water mark: the position of the first log event routed to
//! an instance that has not finished yet (or the end of what was read, if none is
//! running). On start the driver reads the log again from there; instances that
//! finished meanwhile load, see they are done, and stop at once.
//!
//! A panicked instance does not wait for the next start of the process: the follower
//! sees it, stops every other instance where it is, saves the low-water mark (which has
//! not passed the panicked instance's first event) and ends with
//! [`DriverError::InstancePanicked`]. Whoever runs the driver starts it again
//! ([`DriverWorker::run`] under the server's supervisor, or the loop of
//! [`Driver::start`]): it reads the log again from the checkpoint and every unfinished
//! instance resumes from its stream, as after a crash. A command task that panics
//! panics its instance, so it is handled the same way. This was chosen over restarting
//! the one instance inside the driver because it needs no second recovery path: the
//! inputs routed to the instance but not yet recorded are routed again from the log
//! (restarting only the instance would lose them), commands are deduplicated by their
//! deterministic ids, and an instance that panics every time makes the whole driver
//! fail often enough for the supervisor to mark it failed and `/readyz` to name it,
//! instead of retrying it forever out of sight.
//!
//! Work is bounded: at most [`DriverConfig::max_instances`] instances run at once. While
//! that many run, the follower reads no further in the log, so a backlog (10,000 orders
//! placed at once) waits in the log, where it is durable anyway, not in memory; the
//! running instances still finish (their answers and deadlines do not come through the
//! follower) and free their places. Every channel is bounded: an instance's inputs from
//! the log and its commands' answers wait for the instance once their buffer is full.
//!
//! Metrics: the status counts the running instances by phase ([`DriverStatus::phases`],
//! read when `/metrics` is scraped), and every instance that finishes in this process
//! records its duration, from its first record to its end, in the histogram
//! [`SAGA_DURATION`] through the `metrics` facade (a no-op without a recorder).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{Direction, Error, EventId, EventStore, Position, RecordedEvent, Version};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::saga::{self, Instance, Issued, Saga};

mod checkpoint;
mod instance;

pub use checkpoint::{CheckpointRebuild, rebuild_checkpoint};

/// What a saga needs from the world: which events are its inputs, and how its
/// commands are run.
pub trait Dispatcher<S: Saga>: Send + Sync + 'static {
    /// The instance and input an event of the log is for, if any.
    fn route(&self, event: &RecordedEvent, clock: &dyn Clock) -> Option<(String, S::Input)>;

    /// Runs one command of the instance whose state is `state`, with the deterministic
    /// command id `command_id`, and returns its answer as an input. An error is taken as
    /// passing (the store failed): the command is tried again later.
    fn execute(
        &self,
        state: &S,
        command_id: uuid::Uuid,
        issued: &Issued<S::Command>,
    ) -> impl Future<Output = Result<S::Input, Error>> + Send;
}

/// Histogram (labels `saga`, `outcome`): seconds from an instance's first record to its
/// end; the outcome is its final [`Saga::phase`] (`confirmed`, `cancelled`).
pub const SAGA_DURATION: &str = "annals_saga_duration_seconds";

/// What the driver is doing, for `/readyz`, the API, `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStatus {
    /// The saga ([`Saga::NAME`]).
    pub saga: &'static str,
    /// Instances running now, by phase ([`Saga::phase`]): every phase of
    /// [`Saga::PHASES`] from the start, and a phase once seen stays (at zero), so a
    /// monitor's series do not come and go.
    pub phases: BTreeMap<&'static str, u64>,
    /// The position the driver has read the log up to (exclusive).
    pub read_to: Position,
    /// The saved low-water mark: the driver restarts from here.
    pub checkpoint: Position,
    /// Instances running now (not finished); never above
    /// [`DriverConfig::max_instances`].
    pub active: usize,
    /// The most instances that ran at once since start.
    pub peak_active: usize,
    /// Instances finished since start.
    pub finished: u64,
    /// The last error met (a failed record or command, retried), if any.
    pub last_error: Option<String>,
}

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// How often the checkpoint is saved.
    pub checkpoint_every: Duration,
    /// The first wait before a failed record or command is tried again (it doubles, up
    /// to a second).
    pub retry_after: Duration,
    /// Told of every instance that finishes in this process: its outcome (the final
    /// [`Saga::phase`]) and how long it took from its first record (the server counts
    /// it for the saga-completion objective).
    pub on_finished: Option<OnFinished>,
    /// The most instances running at once. Each holds its state, its command tasks and
    /// their buffers; beyond this the driver stops reading the log until one finishes,
    /// so a burst of orders waits in the log instead of in memory. Orders run
    /// concurrently up to this bound, so it is also the saga's parallelism: 1,024 keeps
    /// the machine busy with a few megabytes of instances.
    pub max_instances: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            checkpoint_every: Duration::from_millis(200),
            retry_after: Duration::from_millis(10),
            on_finished: None,
            max_instances: 1024,
        }
    }
}

/// A function told of each finished saga instance: `(outcome, duration)`.
#[derive(Clone)]
pub struct OnFinished(pub Arc<dyn Fn(&'static str, Duration) + Send + Sync>);

impl std::fmt::Debug for OnFinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnFinished")
    }
}

/// Why a run of the driver ended early.
#[derive(Debug)]
pub enum DriverError {
    /// The log could not be read (the store failed).
    Log(Error),
    /// An instance (or one of its commands) panicked; every instance was stopped and the
    /// checkpoint saved, so a new run resumes them all.
    InstancePanicked {
        /// The instance.
        instance: String,
        /// The panic's message.
        message: String,
    },
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Log(error) => write!(f, "the saga driver cannot read the log: {error}"),
            DriverError::InstancePanicked { instance, message } => {
                write!(f, "saga instance {instance} panicked: {message}")
            }
        }
    }
}

impl std::error::Error for DriverError {}

/// The driver of saga `S`, ready to be run, and run again after a failure: each
/// [`DriverWorker::run`] reads its checkpoint from the store and resumes the unfinished
/// instances. The status it reports lives across runs. Cheap to clone.
pub struct DriverWorker<S: Saga, D> {
    store: EventStore,
    dispatcher: Arc<D>,
    clock: Arc<dyn Clock>,
    config: DriverConfig,
    status: watch::Sender<DriverStatus>,
    _saga: std::marker::PhantomData<fn() -> S>,
}

impl<S: Saga, D> Clone for DriverWorker<S, D> {
    fn clone(&self) -> Self {
        DriverWorker {
            store: self.store.clone(),
            dispatcher: self.dispatcher.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            status: self.status.clone(),
            _saga: std::marker::PhantomData,
        }
    }
}

impl<S: Saga, D> std::fmt::Debug for DriverWorker<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverWorker")
            .field("saga", &S::NAME)
            .finish_non_exhaustive()
    }
}

impl<S: Saga, D: Dispatcher<S>> DriverWorker<S, D> {
    /// The driver of saga `S` over `store` (reads its checkpoint for the first status).
    pub fn new(
        store: EventStore,
        dispatcher: Arc<D>,
        clock: Arc<dyn Clock>,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let checkpoint = store
            .load_checkpoint(&checkpoint_name::<S>())?
            .unwrap_or(Position(0));
        let (status, _) = watch::channel(DriverStatus {
            saga: S::NAME,
            phases: S::PHASES.iter().map(|phase| (*phase, 0)).collect(),
            read_to: checkpoint,
            checkpoint,
            ..DriverStatus::default()
        });
        Ok(DriverWorker {
            store,
            dispatcher,
            clock,
            config,
            status,
            _saga: std::marker::PhantomData,
        })
    }

    /// A receiver of the driver's status, to watch it change.
    pub fn watch(&self) -> watch::Receiver<DriverStatus> {
        self.status.subscribe()
    }

    /// Runs the driver from its saved checkpoint until `stop` is cancelled (then
    /// instances stop where they are and the checkpoint is saved: `Ok`), the store
    /// closes (`Ok`), the log cannot be read, or an instance panics. The future borrows
    /// nothing: a supervisor's factory may return it.
    pub fn run(
        &self,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), DriverError>> + Send + use<S, D> {
        let worker = self.clone();
        async move {
            let checkpoint = worker
                .store
                .load_checkpoint(&checkpoint_name::<S>())
                .map_err(DriverError::Log)?
                .unwrap_or(Position(0));
            worker.status.send_modify(|s| {
                s.read_to = checkpoint;
                s.checkpoint = checkpoint;
                s.active = 0;
            });
            let shared = Arc::new(Shared {
                store: worker.store,
                dispatcher: worker.dispatcher,
                clock: worker.clock,
                config: worker.config,
                status: worker.status,
                // Of its own, so that a failed run stops its instances and no more.
                shutdown: stop.child_token(),
                _saga: std::marker::PhantomData,
            });
            follow(shared, checkpoint).await
        }
    }
}

/// A running driver.
#[derive(Debug)]
pub struct Driver {
    status: watch::Receiver<DriverStatus>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Starts the driver of saga `S` over `store`, in a task of its own that runs it
    /// again after an instance panicked (after a short pause: [`DriverConfig::retry_after`],
    /// doubling, up to a second). A server runs [`DriverWorker::run`] under its
    /// supervisor instead.
    pub fn start<S: Saga, D: Dispatcher<S>>(
        store: EventStore,
        dispatcher: Arc<D>,
        clock: Arc<dyn Clock>,
        config: DriverConfig,
    ) -> Result<Driver, Error> {
        let worker = DriverWorker::<S, D>::new(store, dispatcher, clock, config)?;
        let status = worker.watch();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(keep(worker, shutdown.clone()));
        Ok(Driver {
            status,
            shutdown,
            task,
        })
    }

    /// What the driver is doing now.
    pub fn status(&self) -> DriverStatus {
        self.status.borrow().clone()
    }

    /// A receiver of the driver's status, to watch it change.
    pub fn watch(&self) -> watch::Receiver<DriverStatus> {
        self.status.clone()
    }

    /// Stops the driver: instances stop where they are (their next start goes on from
    /// their stream) and the checkpoint is saved.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Runs `worker` until `stop`, again after each instance panic.
async fn keep<S: Saga, D: Dispatcher<S>>(worker: DriverWorker<S, D>, stop: CancellationToken) {
    let mut attempt = 0u32;
    loop {
        let error = match worker.run(stop.clone()).await {
            Ok(()) => return,
            // As before the supervisor: a log that cannot be read stops the driver.
            Err(DriverError::Log(_)) => return,
            Err(error) => error,
        };
        if stop.is_cancelled() {
            return;
        }
        let wait = worker
            .config
            .retry_after
            .saturating_mul(1 << attempt.min(10))
            .min(Duration::from_secs(1));
        tracing::error!(%error, saga = S::NAME, restart_in = ?wait, "the saga driver failed; it runs again from its checkpoint");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
    }
}

/// The name of saga `S`'s checkpoint in the store.
pub fn checkpoint_name<S: Saga>() -> String {
    format!("saga-{}", S::NAME)
}

struct Shared<S: Saga, D> {
    store: EventStore,
    dispatcher: Arc<D>,
    clock: Arc<dyn Clock>,
    config: DriverConfig,
    status: watch::Sender<DriverStatus>,
    shutdown: CancellationToken,
    _saga: std::marker::PhantomData<fn() -> S>,
}

/// Inputs from the log buffered per instance; the follower waits beyond it (an
/// instance takes each input as soon as it has recorded the one before).
const INPUT_BUFFER: usize = 16;

/// Answers of an instance's commands buffered for it; a command task waits beyond it.
const ANSWER_BUFFER: usize = 64;

/// An input routed from the log: the input, the id of its event, the event's
/// `traceparent`.
type Routed<I> = (I, EventId, Option<String>);

struct Running<I> {
    /// Inputs routed from the log, with the id of the event each came from and its
    /// trace context.
    inputs: mpsc::Sender<Routed<I>>,
    /// The first position routed to it: the checkpoint may not pass it.
    first: Position,
    /// Tells this instance from an earlier one of the same id that just finished.
    generation: u64,
}

async fn follow<S: Saga, D: Dispatcher<S>>(
    shared: Arc<Shared<S, D>>,
    from: Position,
) -> Result<(), DriverError> {
    let mut subscription = shared.store.subscribe(from);
    let mut running: HashMap<String, Running<S::Input>> = HashMap::new();
    let mut low_water: BTreeMap<Position, usize> = BTreeMap::new();
    let max_instances = shared.config.max_instances.max(1);
    // Each instance sends one `done` and counts as running until it is received, so a
    // buffer of `max_instances` never makes an instance wait to end.
    let (done_tx, mut done_rx) = mpsc::channel::<(String, u64)>(max_instances);
    let mut generation = 0;
    let mut instances = JoinSet::new();
    // The instance each task runs, to name one that panicked.
    let mut tasks: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut failure = None;
    let mut read_to = from;
    let mut saved = from;
    let mut tick = tokio::time::interval(shared.config.checkpoint_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            Some((id, finished)) = done_rx.recv() => {
                if running.get(&id).is_some_and(|instance| instance.generation == finished) {
                    let instance = running.remove(&id).expect("just seen");
                    forget(&mut low_water, instance.first);
                }
                shared.status.send_modify(|s| {
                    s.active = running.len();
                    s.finished += 1;
                });
            }
            // At the bound, the log waits: the next event may start an instance.
            event = subscription.next(), if running.len() < max_instances => {
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => {
                        tracing::error!(%error, saga = S::NAME, "the saga driver cannot read the log; it stops");
                        shared.status.send_modify(|s| s.last_error = Some(error.to_string()));
                        failure = Some(DriverError::Log(error));
                        break;
                    }
                    None => break,
                };
                read_to = event.position.next();
                let Some((id, input)) = shared.dispatcher.route(&event, &*shared.clock) else {
                    continue;
                };
                let routed = (input, event.id, event.metadata.traceparent.clone());
                // A full buffer waits for the instance; a closed one (the instance
                // finished) gives the input back for a new instance.
                let undelivered = match running.get(&id) {
                    Some(instance) => instance.inputs.send(routed).await.err().map(|e| e.0),
                    None => Some(routed),
                };
                if let Some(routed) = undelivered {
                    let (inputs, receiver) = mpsc::channel(INPUT_BUFFER);
                    let _ = inputs.try_send(routed);
                    generation += 1;
                    let instance = Running { inputs, first: event.position, generation };
                    if let Some(old) = running.insert(id.clone(), instance) {
                        forget(&mut low_water, old.first);
                    }
                    *low_water.entry(event.position).or_default() += 1;
                    let done = (done_tx.clone(), generation);
                    let task = instances.spawn(instance::run(shared.clone(), id.clone(), receiver, done));
                    tasks.insert(task.id(), id);
                    shared.status.send_modify(|s| {
                        s.active = running.len();
                        s.peak_active = s.peak_active.max(running.len());
                    });
                }
            }
            _ = tick.tick() => {
                let mark = low_water.keys().next().copied().unwrap_or(read_to);
                if mark != saved {
                    let saving = shared
                        .store
                        .blocking(move |store| store.save_checkpoint(&checkpoint_name::<S>(), mark))
                        .await;
                    match saving {
                        Ok(()) => saved = mark,
                        Err(error) => tracing::warn!(%error, "saving the saga checkpoint failed"),
                    }
                }
                shared.status.send_modify(|s| {
                    s.read_to = read_to;
                    s.checkpoint = saved;
                });
            }
            Some(finished) = instances.join_next_with_id() => {
                let error = match finished {
                    Ok((task, ())) => {
                        tasks.remove(&task);
                        continue;
                    }
                    Err(error) => error,
                };
                let instance = tasks.remove(&error.id()).unwrap_or_default();
                if error.is_panic() {
                    let message = panic_message(error.into_panic());
                    tracing::error!(
                        %instance,
                        %message,
                        saga = S::NAME,
                        "a saga instance panicked; the driver stops its instances and runs again from its checkpoint"
                    );
                    shared.status.send_modify(|s| {
                        s.last_error = Some(format!("instance {instance} panicked: {message}"));
                    });
                    failure = Some(DriverError::InstancePanicked { instance, message });
                    break;
                }
            }
        }
    }
    shared.shutdown.cancel();
    while instances.join_next().await.is_some() {}
    let mark = low_water.keys().next().copied().unwrap_or(read_to);
    if let Err(error) = shared.store.save_checkpoint(&checkpoint_name::<S>(), mark) {
        tracing::warn!(%error, "saving the saga checkpoint failed");
    }
    shared.status.send_modify(|s| {
        s.checkpoint = mark;
        s.active = 0;
    });
    failure.map_or(Ok(()), Err)
}

/// The message of a panic, if it carries one.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

fn forget(low_water: &mut BTreeMap<Position, usize>, position: Position) {
    if let Some(count) = low_water.get_mut(&position) {
        *count -= 1;
        if *count == 0 {
            low_water.remove(&position);
        }
    }
}

/// Loads an instance from its stream: the recorded inputs folded, in order.
pub fn load<S: Saga>(
    store: &EventStore,
    id: &str,
) -> Result<(Instance<S>, Vec<Recorded<S>>), Error> {
    let stream = saga::stream_id::<S>(id)?;
    let mut recorded = Vec::new();
    let mut from = Version(0);
    loop {
        let events = store.read_stream(&stream, from, Direction::Forward, 1024)?;
        let Some(last) = events.last() else { break };
        from = last.version.next();
        for event in events {
            let input: S::Input =
                postcard::from_bytes(&event.payload).map_err(|source| Error::Codec {
                    what: "saga input",
                    source,
                })?;
            recorded.push(Recorded { event, input });
        }
    }
    let instance = Instance::replay(id, recorded.iter().map(|r| (r.event.version, &r.input)));
    Ok((instance, recorded))
}

/// One recorded input of a saga instance.
#[derive(Debug, Clone)]
pub struct Recorded<S: Saga> {
    /// The record in the saga's stream.
    pub event: RecordedEvent,
    /// The input it holds.
    pub input: S::Input,
}
