//! A poison event (a payload the projection cannot decode) stops the projection at its
//! position, live, at start and in a rebuild; nothing at or after it is applied, nothing
//! is skipped, and a retry stops at it again.

use std::sync::Arc;
use std::time::Duration;

use eventstore::Position;
use projections::{Error, Projection, State, offline};

use crate::common::{
    PATIENCE, Random, Running, append_raw, assert_exact, open, read_log, small_batches, within,
    workload,
};
use crate::tally::{self, Tally};

async fn wait_for_fault(running: &Running, head: Position) -> projections::Fault {
    match running
        .handle
        .wait_for(tally::NAME, Position(head.0 - 1), PATIENCE)
        .await
    {
        Err(Error::Faulted { fault, .. }) => fault,
        other => panic!("expected the tally to fault, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_faults_the_projection_at_its_position() {
    let mut random = Random::seeded("poison");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    workload(&store, &mut random, "before", 60, 4).await;
    let poison = append_raw(&store, "sale-2", "Reserved", vec![0xff, 0xfe, 0x00]).await;
    workload(&store, &mut random, "after", 60, 4).await;
    let head = store.next_position();

    let fault = wait_for_fault(&running, head).await;
    assert_eq!(fault.position, poison.first_position);
    assert!(fault.error.contains("cannot decode"), "{}", fault.error);
    let status = running.handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        status.state,
        State::Faulted {
            position: poison.first_position,
            error: fault.error.clone(),
            stream: Some("sale-2".to_owned()),
            event_type: Some("Reserved".to_owned()),
        }
    );
    assert!(
        status.checkpoint <= poison.first_position,
        "nothing at or after the poison is applied"
    );
    assert!(status.lag > 0);
    let log = read_log(&store);
    running
        .handle
        .read(tally::NAME, |model| {
            assert_exact(model, &log, "the faulted model");
            Ok(())
        })
        .unwrap();

    // A retry stops at the same event: it is never skipped.
    running.handle.retry(tally::NAME).await.unwrap();
    let again = wait_for_fault(&running, head).await;
    assert_eq!(again.position, poison.first_position);

    // A rebuild faults there too, and the faulted model keeps answering meanwhile.
    let rebuild = running.handle.rebuild(tally::NAME).await.unwrap();
    match within("the rebuild", rebuild.finished()).await {
        Err(Error::Faulted { fault, .. }) => assert_eq!(fault.position, poison.first_position),
        other => panic!("expected the rebuild to fault, got {other:?}"),
    }
    let status = running.handle.status_of(tally::NAME).unwrap();
    assert_eq!(
        status.active_build,
        Some(0),
        "the failed rebuild did not take over"
    );
    assert_eq!(
        status.rebuild.and_then(|r| r.fault).map(|f| f.position),
        Some(poison.first_position)
    );
    running.stop().await;

    // At start, the catch-up stops there as well; offline, the dry run finds it.
    let running = Running::start(&store, 1, small_batches());
    assert_eq!(
        wait_for_fault(&running, head).await.position,
        poison.first_position
    );
    running.stop().await;
    let projections: Vec<Arc<dyn Projection>> = vec![Arc::new(Tally { version: 1 })];
    let statuses = offline::statuses(&store, &projections, 10_000).unwrap();
    assert!(
        matches!(statuses[0].state, State::Faulted { position, .. } if position == poison.first_position),
        "{:?}",
        statuses[0]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_other_categories_are_not_poison() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    append_raw(&store, "audit-7", "Reserved", vec![0xff]).await;
    append_raw(&store, "sales-7", "Reserved", vec![0xff]).await;
    let last = append_raw(&store, "sale", "Reserved", vec![0xff]).await;
    let checkpoint = running
        .handle
        .wait_for(tally::NAME, last.last_position, Duration::from_secs(30))
        .await
        .expect("the tally passes over other categories");
    assert_eq!(checkpoint, last.last_position.next());
    running.stop().await;
    store.close().await;
}
