//! Poison events under the runner's policy: a projection that fails (an error or a
//! panic) on one chosen event retries it, then faults naming it (the default) or parks
//! it and goes on; once the cause is fixed a retry applies the parked event exactly
//! once; parked events and the checkpoint survive a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use eventstore::{EventStore, Position, RecordedEvent, StoredEvent};
use projections::{
    ApplyError, Changes, Error, Handle, PoisonPolicy, Projection, Retried, Runner, RunnerConfig,
    State,
};
use tokio_util::sync::CancellationToken;

use crate::common::{
    PATIENCE, Random, actual, assert_exact, expected, open, read_log, small_batches, within,
    workload,
};
use crate::tally::{self, Sale, Tally};

/// The stream whose `Confirmed` event the flaky projection fails on.
const POISON_STREAM: &str = "sale-poison";

/// How the flaky projection fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Error,
    Panic,
}

/// The tally, failing on the `Confirmed` event of [`POISON_STREAM`] until `fixed` is set.
struct Flaky {
    failure: Failure,
    fixed: Arc<AtomicBool>,
    /// How many times it failed.
    failures: Arc<AtomicU32>,
}

impl Projection for Flaky {
    fn name(&self) -> &str {
        tally::NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let poison = event.stream_id == POISON_STREAM && event.event_type == "Confirmed";
        if poison && !self.fixed.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            match self.failure {
                Failure::Error => return Err(ApplyError::Inconsistent("flaky says no".into())),
                Failure::Panic => panic!("flaky panics"),
            }
        }
        Tally { version: 1 }.apply(event, changes)
    }
}

struct Flaked {
    handle: Handle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    fixed: Arc<AtomicBool>,
    failures: Arc<AtomicU32>,
}

impl Flaked {
    fn start(store: &EventStore, failure: Failure, policy: PoisonPolicy) -> Flaked {
        let fixed = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU32::new(0));
        let flaky = Flaky {
            failure,
            fixed: fixed.clone(),
            failures: failures.clone(),
        };
        let config = RunnerConfig {
            poison_policy: policy,
            poison_retries: 2,
            poison_backoff: Duration::from_millis(5),
            ..small_batches()
        };
        let (runner, handle) = Runner::new(store, vec![Arc::new(flaky)], config).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner.run(shutdown.clone()));
        Flaked {
            handle,
            shutdown,
            task,
            fixed,
            failures,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within("the runner's stop", self.task).await.unwrap();
    }

    async fn retry(&self) -> Retried {
        within("the retry", self.handle.retry(tally::NAME))
            .await
            .unwrap()
    }
}

/// Reserves an order on the poison stream (sku `poison`), for its confirmation.
async fn append_poison_reservation(store: &EventStore) {
    let reserved = Sale::Reserved {
        order: "poisoned".into(),
        quantity: 2,
        unit_price: 7,
    };
    let (event_type, payload) = reserved.encode();
    crate::common::append_raw(store, POISON_STREAM, event_type, payload).await;
}

/// A workload with one poison event in the middle (the confirmation on the poison
/// stream, which the flaky projection fails on). Returns the poison's position.
async fn log_with_poison(store: &EventStore) -> Position {
    let mut random = Random::seeded("parking");
    workload(store, &mut random, "before", 40, 4).await;
    append_poison_reservation(store).await;
    let confirmed = Sale::Confirmed {
        order: "poisoned".into(),
    };
    let (event_type, payload) = confirmed.encode();
    let poison = crate::common::append_raw(store, POISON_STREAM, event_type, payload).await;
    workload(store, &mut random, "after", 40, 4).await;
    poison.first_position
}

/// Waits until the tally has passed the head of the log.
/// Waits until the tally has applied the whole log and the runner has left catching up:
/// the checkpoint reaches the head a moment before the runner turns live, and a retry
/// while it catches up leaves the parked events alone.
async fn settle(handle: &Handle, store: &EventStore) {
    let head = store.next_position();
    handle
        .wait_for(tally::NAME, Position(head.0 - 1), PATIENCE)
        .await
        .unwrap_or_else(|error| panic!("the tally did not reach {head}: {error}"));
    within("the tally leaving catching up", async {
        while handle.status_of(tally::NAME).unwrap().state == State::CatchingUp {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Checks the model holds the tally of the whole log but the event at `left_out`.
fn assert_exact_but(handle: &Handle, log: &[RecordedEvent], left_out: Position) {
    let without: Vec<RecordedEvent> = log
        .iter()
        .filter(|event| event.position != left_out)
        .cloned()
        .collect();
    handle
        .read(tally::NAME, |model| {
            assert_eq!(model.checkpoint().unwrap().0, log.len() as u64);
            assert_eq!(
                actual(model),
                expected(&without, Position(u64::MAX)),
                "the model holds every event but the parked one, once"
            );
            Ok(())
        })
        .unwrap();
}

async fn faults_by_default(failure: Failure) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let flaked = Flaked::start(&store, failure, PoisonPolicy::default());
    let poison = log_with_poison(&store).await;
    let head = store.next_position();
    let fault = match flaked
        .handle
        .wait_for(tally::NAME, Position(head.0 - 1), PATIENCE)
        .await
    {
        Err(Error::Faulted { fault, .. }) => fault,
        other => panic!("expected the tally to fault, got {other:?}"),
    };
    assert_eq!(fault.position, poison);
    assert_eq!(fault.stream.as_deref(), Some(POISON_STREAM));
    assert_eq!(fault.event_type.as_deref(), Some("Confirmed"));
    let said = match failure {
        Failure::Error => "flaky says no",
        Failure::Panic => "the projection panicked: flaky panics",
    };
    assert!(fault.error.contains(said), "{}", fault.error);
    assert_eq!(
        flaked.failures.load(Ordering::SeqCst),
        3,
        "the first attempt and two retries"
    );
    let status = flaked.handle.status_of(tally::NAME).unwrap();
    assert_eq!(status.state, State::faulted(fault.clone()));
    assert_eq!(status.parked, 0);
    assert!(flaked.handle.parked(tally::NAME).unwrap().is_empty());
    let log = read_log(&store);
    flaked
        .handle
        .read(tally::NAME, |model| {
            assert!(assert_exact(model, &log, "the faulted model") <= poison);
            Ok(())
        })
        .unwrap();

    // Fixed, a retry resumes from the event it failed on and applies the rest once.
    flaked.fixed.store(true, Ordering::SeqCst);
    let retried = flaked.retry().await;
    assert_eq!(
        retried,
        Retried {
            resumed: true,
            retried: 0,
            applied: 0,
            parked: 0
        }
    );
    settle(&flaked.handle, &store).await;
    flaked
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the resumed model");
            Ok(())
        })
        .unwrap();
    flaked.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_failing_faults_the_projection_by_default_naming_it() {
    faults_by_default(Failure::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_apply_is_caught_retried_and_faults_naming_the_event() {
    faults_by_default(Failure::Panic).await;
}

async fn parks_then_retries(failure: Failure) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let flaked = Flaked::start(&store, failure, PoisonPolicy::Park);
    let poison = log_with_poison(&store).await;
    settle(&flaked.handle, &store).await;
    let log = read_log(&store);

    // Parked: the events after it are applied, the event itself is not.
    let status = flaked.handle.status_of(tally::NAME).unwrap();
    assert_eq!(status.state, State::Live);
    assert_eq!(status.parked, 1);
    assert_eq!(flaked.failures.load(Ordering::SeqCst), 3);
    let parked = flaked.handle.parked(tally::NAME).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, poison);
    assert_eq!(parked[0].stream, POISON_STREAM);
    assert_eq!(parked[0].event_type, "Confirmed");
    assert!(parked[0].parked_at_micros > 0);
    assert_exact_but(&flaked.handle, &log, poison);

    // Not fixed yet: the retry fails again and the event stays parked.
    let retried = flaked.retry().await;
    assert_eq!(
        retried,
        Retried {
            resumed: false,
            retried: 1,
            applied: 0,
            parked: 1
        }
    );
    assert_eq!(flaked.handle.parked(tally::NAME).unwrap().len(), 1);
    assert_exact_but(&flaked.handle, &log, poison);

    // Fixed: the retry applies it once and the list empties.
    flaked.fixed.store(true, Ordering::SeqCst);
    let retried = flaked.retry().await;
    assert_eq!(
        retried,
        Retried {
            resumed: false,
            retried: 1,
            applied: 1,
            parked: 0
        }
    );
    assert!(flaked.handle.parked(tally::NAME).unwrap().is_empty());
    assert_eq!(flaked.handle.status_of(tally::NAME).unwrap().parked, 0);
    flaked
        .handle
        .read(tally::NAME, |model| {
            assert_eq!(
                assert_exact(model, &log, "the model after the retry").0,
                log.len() as u64
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(flaked.retry().await, Retried::default());

    // And it goes on live.
    workload(&store, &mut Random::seeded("later"), "later", 10, 4).await;
    settle(&flaked.handle, &store).await;
    let log = read_log(&store);
    flaked
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the model after more events");
            Ok(())
        })
        .unwrap();
    flaked.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_is_skipped_and_applied_once_when_retried() {
    parks_then_retries(Failure::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_event_is_parked_and_applied_once_when_retried() {
    parks_then_retries(Failure::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_and_the_checkpoint_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let flaked = Flaked::start(&store, Failure::Error, PoisonPolicy::Park);
    let poison = log_with_poison(&store).await;
    settle(&flaked.handle, &store).await;
    let before = flaked.handle.parked(tally::NAME).unwrap();
    assert_eq!(before.len(), 1);
    let checkpoint = flaked.handle.status_of(tally::NAME).unwrap().checkpoint;
    flaked.stop().await;

    // A new runner on the same data: the same parked event, the same checkpoint, and
    // nothing applied again (it fails only if it meets the poison again).
    let flaked = Flaked::start(&store, Failure::Error, PoisonPolicy::Park);
    assert_eq!(flaked.handle.parked(tally::NAME).unwrap(), before);
    let status = flaked.handle.status_of(tally::NAME).unwrap();
    assert_eq!(status.checkpoint, checkpoint);
    assert_eq!(status.parked, 1);
    settle(&flaked.handle, &store).await;
    assert_eq!(flaked.failures.load(Ordering::SeqCst), 0);
    let log = read_log(&store);
    assert_exact_but(&flaked.handle, &log, poison);

    flaked.fixed.store(true, Ordering::SeqCst);
    assert_eq!(flaked.retry().await.applied, 1);
    flaked
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the model after the retry");
            Ok(())
        })
        .unwrap();
    flaked.stop().await;
    store.close().await;
}
