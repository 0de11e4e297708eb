//! Keeps the background workers of a server running: each worker is made by a factory,
//! so that it can be started again after it fails.
//!
//! A worker that panics or returns an error is logged (an error line naming the worker
//! and the error or panic message), counted ([`WorkerStatus::restarts`]) and started
//! again after an exponential backoff with jitter ([`backoff`]: from
//! [`SupervisorConfig::backoff_base`], doubling, up to [`SupervisorConfig::backoff_cap`],
//! each wait drawn between half of that and all of it). A worker that fails more than
//! [`SupervisorConfig::max_restarts`] times within [`SupervisorConfig::window`] is marked
//! [`WorkerState::Failed`] and left alone: a fault that keeps coming back is not healed by
//! restarting, and the server says so (its `/readyz` names the failed workers). A worker
//! spawned with [`Restart::Never`] (one that cannot be made again in the same process) is
//! marked failed at its first failure.
//!
//! A worker that restarts itself (each read model inside the projection runner, which
//! retries a failed event after a backoff) reports its own status through
//! [`Workers::report`], so that it is listed, counted and named by `/readyz` like the
//! workers a supervisor spawns.
//!
//! A worker that returns `Ok(())` while the supervisor is not shutting down has ended on
//! its own (e.g. the store it follows closed): it is marked [`WorkerState::Stopped`] and
//! not restarted, with a warning in the log; it does not count as a failure.
//!
//! [`Supervisor::shutdown`] cancels the token every worker was given, then awaits every
//! worker (drains); nothing is restarted once the shutdown has begun, and a worker in its
//! backoff stops at once. The statuses stay readable through [`Workers`], which the HTTP
//! API holds (`GET /api/v1/workers`, `/readyz`, `/metrics`).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How workers are restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// A worker that fails more than this many times within [`Self::window`] is marked
    /// failed and not restarted.
    pub max_restarts: u32,
    /// The window the failures are counted in.
    pub window: Duration,
    /// The wait before the first restart (before jitter); it doubles with each failure
    /// in the window.
    pub backoff_base: Duration,
    /// The longest wait before a restart.
    pub backoff_cap: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Registered, not started yet.
    Starting,
    /// Running.
    Running,
    /// Failed, waiting to be restarted.
    Backoff,
    /// Failed too often (or cannot be restarted): not restarted any more.
    Failed,
    /// Ended: the supervisor shut down, or the worker returned on its own.
    Stopped,
}

impl WorkerState {
    /// Every state, in the order the API and the metrics list them.
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Starting,
        WorkerState::Running,
        WorkerState::Backoff,
        WorkerState::Failed,
        WorkerState::Stopped,
    ];

    /// The state's name: `starting`, `running`, `backoff`, `failed` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Backoff => "backoff",
            WorkerState::Failed => "failed",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a failed worker is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// After a backoff, within the restart budget.
    OnFailure,
    /// Never: its first failure marks it failed (for a worker that cannot be made again
    /// in the same process).
    Never,
}

/// One worker's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The worker's name (e.g. `relay`, `saga:fulfilment`).
    pub name: String,
    /// What it is doing.
    pub state: WorkerState,
    /// How many times it was restarted.
    pub restarts: u64,
    /// Its last failure (the error, or `panicked: <message>`), kept after a restart.
    pub last_error: Option<String>,
    /// When it entered its state.
    pub since: SystemTime,
}

/// The statuses of a supervisor's workers, readable while they run and after. Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    statuses: Arc<Mutex<Vec<WorkerStatus>>>,
}

impl Workers {
    /// Every worker's status, in the order they were spawned.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.lock().clone()
    }

    /// The names of the workers marked failed.
    pub fn failed(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|status| status.state == WorkerState::Failed)
            .map(|status| status.name.clone())
            .collect()
    }

    /// The status of the worker `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<WorkerStatus> {
        self.lock()
            .iter()
            .find(|status| status.name == name)
            .cloned()
    }

    /// Adds the worker `name`, whose status its owner keeps through the returned
    /// [`Reporter`]: for a worker that restarts itself (a read model that retries a
    /// failed event after a backoff, inside the projection runner) and so is not spawned
    /// by a supervisor. Its status is listed, counted and named by `/readyz` like the
    /// others. It starts [`WorkerState::Starting`].
    pub fn report(&self, name: impl Into<String>) -> Reporter {
        Reporter {
            workers: self.clone(),
            index: self.add(name.into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerStatus>> {
        // A status is plain data: one half-written by a panicking thread is still usable.
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, name: String) -> usize {
        let mut statuses = self.lock();
        statuses.push(WorkerStatus {
            name,
            state: WorkerState::Starting,
            restarts: 0,
            last_error: None,
            since: SystemTime::now(),
        });
        statuses.len() - 1
    }

    fn enter(&self, index: usize, state: WorkerState) {
        let mut statuses = self.lock();
        let status = &mut statuses[index];
        if status.state != state {
            status.state = state;
            status.since = SystemTime::now();
        }
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut WorkerStatus)) {
        change(&mut self.lock()[index]);
    }
}

/// The status of one worker kept by the worker's owner ([`Workers::report`]).
#[derive(Debug, Clone)]
pub struct Reporter {
    workers: Workers,
    index: usize,
}

impl Reporter {
    /// It runs (again).
    pub fn running(&self) {
        self.workers.enter(self.index, WorkerState::Running);
    }

    /// It failed with `error` and waits to be started again.
    pub fn backoff(&self, error: impl fmt::Display) {
        self.workers.update(self.index, |status| {
            status.last_error = Some(error.to_string());
        });
        self.workers.enter(self.index, WorkerState::Backoff);
    }

    /// It was started again after a failure: counted in [`WorkerStatus::restarts`].
    pub fn restarted(&self) {
        self.workers
            .update(self.index, |status| status.restarts += 1);
        self.workers.enter(self.index, WorkerState::Running);
    }

    /// It failed with `error` and is not started again by itself.
    pub fn failed(&self, error: impl fmt::Display) {
        self.workers.update(self.index, |status| {
            status.last_error = Some(error.to_string());
        });
        self.workers.enter(self.index, WorkerState::Failed);
    }

    /// It ended.
    pub fn stopped(&self) {
        self.workers.enter(self.index, WorkerState::Stopped);
    }

    /// Its status now.
    pub fn status(&self) -> WorkerStatus {
        self.workers.lock()[self.index].clone()
    }
}

/// Runs named workers and restarts the ones that fail. See the module documentation.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    workers: Workers,
    shutdown: CancellationToken,
    keepers: JoinSet<()>,
}

impl Supervisor {
    /// A supervisor with no workers yet.
    pub fn new(config: SupervisorConfig) -> Self {
        Supervisor {
            config,
            workers: Workers::default(),
            shutdown: CancellationToken::new(),
            keepers: JoinSet::new(),
        }
    }

    /// The statuses of the workers.
    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }

    /// How workers are restarted.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Starts the worker `name`, restarted on failure: `factory` is called for each run
    /// with a token cancelled at shutdown, and the future it returns is spawned.
    pub fn spawn<F, Fut, E>(&mut self, name: impl Into<String>, factory: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        self.spawn_with(name, Restart::OnFailure, factory);
    }

    /// Starts the worker `name` with the restart policy `restart`.
    pub fn spawn_with<F, Fut, E>(&mut self, name: impl Into<String>, restart: Restart, factory: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let name = name.into();
        let index = self.workers.add(name.clone());
        let keeper = Keeper {
            name,
            index,
            restart,
            config: self.config.clone(),
            workers: self.workers.clone(),
            shutdown: self.shutdown.clone(),
        };
        self.keepers.spawn(keeper.keep(factory));
    }

    /// Cancels every worker's token and waits for every worker to end, within `timeout`;
    /// nothing is restarted meanwhile. Returns the names of the workers still running
    /// after `timeout` (they are aborted).
    pub async fn shutdown(mut self, timeout: Duration) -> Vec<String> {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(timeout, async {
            while self.keepers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return Vec::new();
        }
        let late: Vec<String> = self
            .workers
            .statuses()
            .into_iter()
            .filter(|status| !matches!(status.state, WorkerState::Stopped | WorkerState::Failed))
            .map(|status| status.name)
            .collect();
        tracing::warn!(
            workers = ?late,
            ?timeout,
            "workers still running after the shutdown timeout; they are aborted"
        );
        // Aborting a keeper aborts its worker's task too (see `AbortOnDrop`).
        self.keepers.shutdown().await;
        for name in &late {
            if let Some(index) = self
                .workers
                .statuses()
                .iter()
                .position(|status| &status.name == name)
            {
                self.workers.enter(index, WorkerState::Stopped);
            }
        }
        late
    }
}

/// The task that runs one worker and restarts it.
struct Keeper {
    name: String,
    index: usize,
    restart: Restart,
    config: SupervisorConfig,
    workers: Workers,
    shutdown: CancellationToken,
}

/// A worker's task, aborted if its keeper is dropped (aborted at a late shutdown).
struct AbortOnDrop(JoinHandle<Result<(), String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Keeper {
    async fn keep<F, Fut, E>(self, mut factory: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let name = self.name.as_str();
        let mut failures: VecDeque<Instant> = VecDeque::new();
        loop {
            if self.shutdown.is_cancelled() {
                self.workers.enter(self.index, WorkerState::Stopped);
                return;
            }
            self.workers.enter(self.index, WorkerState::Running);
            let run = factory(self.shutdown.child_token());
            let mut task = AbortOnDrop(tokio::spawn(async move {
                run.await.map_err(|error| error.to_string())
            }));
            let error = match (&mut task.0).await {
                Ok(Ok(())) => {
                    if !self.shutdown.is_cancelled() {
                        tracing::warn!(
                            worker = name,
                            "the worker ended on its own while the server is not stopping; \
                             it is not restarted"
                        );
                    }
                    self.workers.enter(self.index, WorkerState::Stopped);
                    return;
                }
                Ok(Err(error)) => error,
                Err(join) if join.is_panic() => {
                    format!("panicked: {}", panic_message(join.into_panic()))
                }
                Err(join) => {
                    // Cancelled: the runtime is shutting down.
                    tracing::warn!(worker = name, error = %join, "the worker was cancelled");
                    self.workers.enter(self.index, WorkerState::Stopped);
                    return;
                }
            };
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|at| now.duration_since(*at) > self.config.window)
            {
                failures.pop_front();
            }
            self.workers.update(self.index, |status| {
                status.last_error = Some(error.clone());
            });
            if self.shutdown.is_cancelled() {
                tracing::error!(worker = name, %error, "the worker failed while stopping");
                self.workers.enter(self.index, WorkerState::Stopped);
                return;
            }
            let too_many = failures.len() > self.config.max_restarts as usize;
            if self.restart == Restart::Never || too_many {
                tracing::error!(
                    worker = name,
                    %error,
                    failures = failures.len(),
                    window = ?self.config.window,
                    "the worker failed and is not restarted any more: it is marked failed"
                );
                self.workers.enter(self.index, WorkerState::Failed);
                return;
            }
            let attempt = u32::try_from(failures.len() - 1).unwrap_or(u32::MAX);
            let wait = backoff(&self.config, attempt, fastrand::u64(..));
            tracing::error!(
                worker = name,
                %error,
                failures = failures.len(),
                restart_in = ?wait,
                "the worker failed; it is restarted after a backoff"
            );
            self.workers.enter(self.index, WorkerState::Backoff);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => {
                    self.workers.enter(self.index, WorkerState::Stopped);
                    return;
                }
            }
            self.workers
                .update(self.index, |status| status.restarts += 1);
            tracing::info!(worker = name, "restarting the worker");
        }
    }
}

/// The wait before restart number `attempt + 1` of a worker that failed `attempt + 1`
/// times in the window: `backoff_base * 2^attempt`, at most `backoff_cap`, of which the
/// first half is fixed and the second half scaled by `random` (uniform over `u64`), so
/// that workers failing together do not restart in step.
pub fn backoff(config: &SupervisorConfig, attempt: u32, random: u64) -> Duration {
    let ceiling = config
        .backoff_base
        .saturating_mul(1u32 << attempt.min(20))
        .min(config.backoff_cap);
    let fixed = ceiling / 2;
    // The top 53 bits: a uniform fraction in [0, 1).
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    fixed + (ceiling - fixed).mul_f64(fraction)
}

/// The message of a panic, if it carries one.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests;
