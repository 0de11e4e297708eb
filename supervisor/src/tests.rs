//! The supervisor on tokio's paused clock: restarts after a panic and after an error,
//! the backoff's growth and jitter, the restart budget, and a shutdown that drains
//! without restarting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// Waits (on the paused clock) until `ready` holds, for at most ten minutes of it.
async fn until(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready() {
        assert!(Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run of a test worker.
type Run = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A factory whose first `failures` runs fail (panicking if `panic`, else returning an
/// error), then runs until cancelled; with the count of runs.
fn failing_first(
    failures: u32,
    panic: bool,
) -> (
    Arc<AtomicU32>,
    impl FnMut(CancellationToken) -> Run + Send + 'static,
) {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let factory = move |stop: CancellationToken| -> Run {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if run < failures {
                if panic {
                    panic!("boom {run}");
                }
                return Err(format!("failure {run}"));
            }
            stop.cancelled().await;
            Ok(())
        })
    };
    (runs, factory)
}

#[tokio::test(start_paused = true)]
async fn a_panicked_worker_is_restarted() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let (runs, factory) = failing_first(1, true);
    supervisor.spawn("panicky", factory);
    let workers = supervisor.workers();
    until(|| {
        let status = workers.get("panicky").unwrap();
        status.restarts == 1 && status.state == WorkerState::Running
    })
    .await;
    let status = workers.get("panicky").unwrap();
    assert_eq!(status.last_error.as_deref(), Some("panicked: boom 0"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(supervisor.shutdown(Duration::from_secs(5)).await.is_empty());
    assert_eq!(workers.get("panicky").unwrap().state, WorkerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_worker_returning_an_error_is_restarted() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let (runs, factory) = failing_first(2, false);
    supervisor.spawn("erring", factory);
    let workers = supervisor.workers();
    until(|| workers.get("erring").unwrap().restarts == 2).await;
    until(|| workers.get("erring").unwrap().state == WorkerState::Running).await;
    let status = workers.get("erring").unwrap();
    assert_eq!(status.last_error.as_deref(), Some("failure 1"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(workers.failed().is_empty());
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn the_backoff_grows_is_jittered_and_capped() {
    let config = SupervisorConfig::default();
    let randoms = [0, 1 << 20, u64::MAX / 3, u64::MAX / 2, u64::MAX];
    for attempt in 0..30 {
        let ceiling = (config.backoff_base * 2u32.pow(attempt.min(20))).min(config.backoff_cap);
        for random in randoms {
            let wait = backoff(&config, attempt, random);
            assert!(wait >= ceiling / 2, "{wait:?} below half of {ceiling:?}");
            assert!(wait <= ceiling, "{wait:?} above {ceiling:?}");
        }
    }
    assert_eq!(backoff(&config, 0, 0), Duration::from_millis(50));
    assert!(backoff(&config, 3, u64::MAX) > Duration::from_millis(799));
    assert!(backoff(&config, 40, u64::MAX) <= Duration::from_secs(30));
    // Different draws give different waits.
    let draws: std::collections::BTreeSet<Duration> = (0..20)
        .map(|_| backoff(&config, 4, fastrand::u64(..)))
        .collect();
    assert!(draws.len() > 10, "{draws:?}");
}

#[tokio::test(start_paused = true)]
async fn restarts_wait_longer_each_time() {
    let mut supervisor = Supervisor::new(SupervisorConfig {
        max_restarts: 10,
        ..SupervisorConfig::default()
    });
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    supervisor.spawn("erring", move |_stop| {
        seen.lock().unwrap().push(Instant::now());
        async { Err::<(), _>("always") }
    });
    until(|| starts.lock().unwrap().len() == 5).await;
    let starts = starts.lock().unwrap().clone();
    for (attempt, pair) in starts.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        let ceiling = Duration::from_millis(100) * 2u32.pow(attempt as u32);
        assert!(
            waited >= ceiling / 2 && waited <= ceiling + Duration::from_millis(10),
            "restart {attempt} after {waited:?}, expected up to {ceiling:?}"
        );
    }
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_failing_too_often_is_marked_failed() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let (runs, factory) = failing_first(u32::MAX, false);
    supervisor.spawn("doomed", factory);
    let (_, healthy) = failing_first(0, false);
    supervisor.spawn("healthy", healthy);
    let workers = supervisor.workers();
    until(|| workers.get("doomed").unwrap().state == WorkerState::Failed).await;
    let status = workers.get("doomed").unwrap();
    // Five restarts, and the sixth failure in the minute marks it failed.
    assert_eq!(status.restarts, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    assert_eq!(status.last_error.as_deref(), Some("failure 5"));
    assert_eq!(workers.failed(), vec!["doomed".to_owned()]);
    // It stays failed.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    assert_eq!(workers.get("healthy").unwrap().state, WorkerState::Running);
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn failures_outside_the_window_do_not_count() {
    let mut supervisor = Supervisor::new(SupervisorConfig {
        max_restarts: 1,
        window: Duration::from_secs(10),
        ..SupervisorConfig::default()
    });
    // Fails every 20 s: never twice in a window of 10 s.
    supervisor.spawn("slow", |_stop| async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Err::<(), _>("late failure")
    });
    let workers = supervisor.workers();
    until(|| workers.get("slow").unwrap().restarts == 4).await;
    assert!(workers.failed().is_empty());
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_restart_fails_at_once() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let (runs, factory) = failing_first(1, true);
    supervisor.spawn_with("once", Restart::Never, factory);
    let workers = supervisor.workers();
    until(|| workers.get("once").unwrap().state == WorkerState::Failed).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(workers.get("once").unwrap().restarts, 0);
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_ending_on_its_own_is_stopped_and_not_restarted() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    supervisor.spawn("brief", move |_stop| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), String>(()) }
    });
    let workers = supervisor.workers();
    until(|| workers.get("brief").unwrap().state == WorkerState::Stopped).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(workers.failed().is_empty());
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_every_worker_and_restarts_none() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    // Takes a while to stop, and fails as it stops: not restarted.
    let runs = Arc::new(AtomicU32::new(0));
    let drained = Arc::new(AtomicU32::new(0));
    let (counted, finished) = (runs.clone(), drained.clone());
    supervisor.spawn("slow-stop", move |stop: CancellationToken| {
        counted.fetch_add(1, Ordering::SeqCst);
        let finished = finished.clone();
        async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("failed while stopping")
        }
    });
    // In its backoff when the shutdown begins: stops at once.
    let (backoff_runs, factory) = failing_first(u32::MAX, false);
    supervisor.spawn("in-backoff", factory);
    let workers = supervisor.workers();
    until(|| workers.get("in-backoff").unwrap().state == WorkerState::Backoff).await;
    let before = backoff_runs.load(Ordering::SeqCst);
    let began = Instant::now();
    assert!(
        supervisor
            .shutdown(Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "it waited for the slow worker"
    );
    assert_eq!(drained.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(backoff_runs.load(Ordering::SeqCst), before);
    for status in workers.statuses() {
        assert_eq!(status.state, WorkerState::Stopped, "{status:?}");
    }
    assert_eq!(
        workers.get("slow-stop").unwrap().last_error.as_deref(),
        Some("failed while stopping")
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_will_not_stop_is_aborted_after_the_timeout() {
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    supervisor.spawn("stubborn", |_stop| async {
        std::future::pending::<()>().await;
        Ok::<(), String>(())
    });
    let workers = supervisor.workers();
    until(|| workers.get("stubborn").unwrap().state == WorkerState::Running).await;
    let late = supervisor.shutdown(Duration::from_secs(3)).await;
    assert_eq!(late, vec!["stubborn".to_owned()]);
    assert_eq!(workers.get("stubborn").unwrap().state, WorkerState::Stopped);
}

#[test]
fn a_reported_worker_is_listed_counted_and_named_when_failed() {
    let workers = Workers::default();
    let reporter = workers.report("projection:orders");
    assert_eq!(reporter.status().state, WorkerState::Starting);
    reporter.running();
    reporter.backoff("the projection panicked at 7");
    let status = workers.get("projection:orders").unwrap();
    assert_eq!(
        (status.state, status.restarts, status.last_error.as_deref()),
        (
            WorkerState::Backoff,
            0,
            Some("the projection panicked at 7")
        )
    );
    reporter.restarted();
    reporter.failed("gave up at 7");
    let status = reporter.status();
    assert_eq!(
        (status.state, status.restarts, status.last_error.as_deref()),
        (WorkerState::Failed, 1, Some("gave up at 7"))
    );
    assert_eq!(workers.failed(), vec!["projection:orders".to_owned()]);
    reporter.running();
    assert!(workers.failed().is_empty());
    assert_eq!(reporter.status().restarts, 1, "a restart stays counted");
}
