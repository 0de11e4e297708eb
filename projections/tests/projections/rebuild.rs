//! Blue-green rebuilds: a rebuild reproduces the live model byte for byte; under write
//! load the old model keeps answering and the switch loses nothing; a version bump in
//! code rebuilds beside the old version at start.

use eventstore::Position;
use projections::{RunnerConfig, State, offline};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{
    Random, Running, assert_exact, open, read_log, small_batches, within, workload,
};
use crate::tally::{self, Tally};

fn digest(running: &Running) -> String {
    running
        .handle
        .read(tally::NAME, |model| Ok(model.digest()?))
        .expect("a digest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reproduces_the_live_model_byte_for_byte() {
    let mut random = Random::seeded("live vs rebuilt");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    workload(&store, &mut random, "a", 400, 7).await;
    running.settle(&store).await;
    let log = read_log(&store);
    let live = digest(&running);
    running
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the live model");
            Ok(())
        })
        .unwrap();

    // Online: a new build beside the live one takes over.
    let rebuild = within("the rebuild request", running.handle.rebuild(tally::NAME))
        .await
        .expect("a rebuild starts");
    assert_eq!((rebuild.version, rebuild.build), (1, 1));
    within("the rebuild", rebuild.finished())
        .await
        .expect("the rebuild succeeds");
    let status = running.handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        (status.active_version, status.active_build),
        (Some(1), Some(1))
    );
    assert_eq!(status.state, State::Live);
    assert_eq!(
        digest(&running),
        live,
        "the rebuilt model differs from the live one"
    );
    running.stop().await;
    let models = store.read_models().unwrap();
    assert_eq!(
        models.stored_models(),
        vec![(tally::NAME.to_owned(), 1001)],
        "the old tree is dropped"
    );

    // Offline, with large batches: the same bytes again.
    let projections: Vec<Arc<dyn projections::Projection>> = vec![Arc::new(Tally { version: 1 })];
    let report = offline::rebuild(&store, &projections, &RunnerConfig::default(), &|_, _| {})
        .expect("the offline rebuild succeeds");
    assert_eq!(report.rebuilt[0].build, 2);
    let model = models.model(tally::NAME, 1002).unwrap();
    assert_eq!(
        model.digest().unwrap(),
        live,
        "the offline rebuild differs from the live model"
    );
    assert_eq!(models.active_version(tally::NAME).unwrap(), Some(1002));
    assert_eq!(models.stored_models(), vec![(tally::NAME.to_owned(), 1002)]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_write_load_serves_the_old_model_and_loses_no_event() {
    let mut random = Random::seeded("rebuild under load");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let config = RunnerConfig {
        catch_up_threads: 1,
        ..small_batches()
    };
    let running = Running::start(&store, 1, config);
    workload(&store, &mut random, "seed", 1_500, 11).await;
    running.settle(&store).await;

    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, writing) = (store.clone(), writing.clone());
            let mut random = random.split();
            tokio::spawn(async move {
                let mut round = 0;
                while writing.load(Ordering::Relaxed) {
                    workload(&store, &mut random, &format!("w{writer}-{round}"), 20, 11).await;
                    round += 1;
                }
            })
        })
        .collect();

    let rebuild = running
        .handle
        .rebuild(tally::NAME)
        .await
        .expect("a rebuild starts");
    let mut finished = std::pin::pin!(rebuild.finished());
    let mut served = 0;
    let mut live_checkpoints = Vec::new();
    loop {
        tokio::select! {
            result = &mut finished => {
                result.expect("the rebuild succeeds");
                break;
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {
                let status = running.handle.status_of(tally::NAME).unwrap();
                if status.rebuild.is_some() {
                    // The old build answers while the new one builds.
                    assert_eq!(status.active_build, Some(0), "switched before the rebuild finished");
                    let (build, answered) = running
                        .handle
                        .read(tally::NAME, |model| {
                            Ok((model.version(), model.scan(tally::TOTALS, b"", None, 100)?.len()))
                        })
                        .expect("the old model answers");
                    if build == 1000 {
                        assert!(answered > 0);
                        served += 1;
                        live_checkpoints.push(status.checkpoint);
                    } else {
                        // The switch fell between the status and the read: the new build
                        // must now be the active one, never a half-built model.
                        assert_eq!(build, 1001, "an unknown build answered");
                        let after = running.handle.status_of(tally::NAME).unwrap();
                        assert_eq!(after.active_build, Some(1), "a half-built model answered");
                    }
                }
            }
        }
        assert!(served < 1_000_000);
    }
    assert!(served > 0, "no query ran while the rebuild was under way");
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        within("a writer", writer).await.unwrap();
    }
    running.settle(&store).await;

    let log = read_log(&store);
    let status = running.handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        (status.active_build, status.state.clone()),
        (Some(1), State::Live)
    );
    assert_eq!(status.checkpoint, Position(log.len() as u64));
    running
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the model after the switch");
            Ok(())
        })
        .unwrap();
    let switched = digest(&running);
    // A fresh rebuild of the same log gives the same bytes.
    let again = running.handle.rebuild(tally::NAME).await.unwrap();
    within("the second rebuild", again.finished())
        .await
        .unwrap();
    assert_eq!(digest(&running), switched);
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_beside_the_old_version_at_start() {
    let mut random = Random::seeded("version bump");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    workload(&store, &mut random, "v1", 300, 5).await;
    running.settle(&store).await;
    running.stop().await;
    workload(&store, &mut random, "between", 100, 5).await;

    // The status before the runner runs: on a fast machine the rebuild can finish before a
    // status read after the start.
    let (runner, handle) = projections::Runner::new(
        &store,
        vec![Arc::new(Tally { version: 2 })],
        small_batches(),
    )
    .expect("the runner is made");
    let status = handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        status.active_version,
        Some(1),
        "the old version serves at first"
    );
    assert_eq!(status.rebuild.as_ref().map(|r| r.version), Some(2));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = Running {
        task: tokio::spawn(runner.run(shutdown.clone())),
        handle,
        shutdown,
    };
    // The rebuild planned at start takes over by itself. Its progress is read from the
    // status: a `rebuild()` call here would join it only if it were still running, and on
    // a loaded machine it can finish first (the call then starts a second build).
    within("the rebuild planned at start", async {
        loop {
            let status = running.handle.status_of(tally::NAME).unwrap();
            if status.active_version == Some(2) && status.rebuild.is_none() {
                break;
            }
            assert!(
                !matches!(status.state, State::Faulted { .. }),
                "the rebuild faulted: {status:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    running.settle(&store).await;
    let status = running.handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        (status.active_version, status.active_build, status.state),
        (Some(2), Some(0), State::Live),
        "the build planned at start (build 0) serves"
    );
    let log = read_log(&store);
    running
        .handle
        .read(tally::NAME, |model| {
            assert_eq!(model.version(), 2000);
            assert_exact(model, &log, "the rebuilt version");
            Ok(())
        })
        .unwrap();
    running.stop().await;
    assert_eq!(
        store.read_models().unwrap().stored_models(),
        vec![(tally::NAME.to_owned(), 2000)]
    );
    store.close().await;
}
