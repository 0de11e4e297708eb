//! Read-your-writes: after a write, waiting for its position always shows the write;
//! a wait that runs out names the checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstore::Position;
use projections::Error;

use crate::common::{PATIENCE, Random, Running, append, open, small_batches, within, workload};
use crate::tally::{self, Open, Sale, Totals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_writes_position_always_shows_the_write() {
    let mut random = Random::seeded("read your writes");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    let writing = Arc::new(AtomicBool::new(true));
    let others: Vec<_> = (0..3)
        .map(|writer| {
            let (store, writing) = (store.clone(), writing.clone());
            let handle = running.handle.clone();
            let mut random = random.split();
            tokio::spawn(async move {
                let mut round = 0;
                while writing.load(Ordering::Relaxed) {
                    workload(&store, &mut random, &format!("o{writer}-{round}"), 10, 5).await;
                    round += 1;
                    // Writers that never wait can outrun the projection on a loaded
                    // machine, and then no wait is long enough: let it catch up with
                    // this round before the next (the loop below still races them).
                    let written = Position(store.next_position().0.saturating_sub(1));
                    let _ = handle.wait_for(tally::NAME, written, PATIENCE).await;
                }
            })
        })
        .collect();

    // Sku 9 is this loop's alone: its totals are known exactly.
    let mut sold: Totals = (0, 0, 0);
    for number in 0..150u64 {
        let order = format!("mine-{number}");
        let (quantity, unit_price) = (1 + random.below(5), 1 + random.below(100));
        let reserved = Sale::Reserved {
            order: order.clone(),
            quantity,
            unit_price,
        };
        let written = append(&store, 9, &reserved).await;
        running
            .handle
            .wait_for(tally::NAME, written.last_position, PATIENCE)
            .await
            .expect("the tally applies the reservation");
        let open: Option<Open> = running
            .handle
            .read(tally::NAME, |model| {
                projections::read(model, tally::OPEN, b"9")
            })
            .unwrap();
        assert_eq!(
            open.and_then(|open| open.get(&order).copied()),
            Some((quantity, unit_price)),
            "the reservation at {} is not visible after waiting for it",
            written.last_position
        );

        let written = append(&store, 9, &Sale::Confirmed { order }).await;
        running
            .handle
            .wait_for(tally::NAME, written.last_position, PATIENCE)
            .await
            .expect("the tally applies the confirmation");
        sold = (
            sold.0 + quantity,
            sold.1 + quantity * unit_price,
            sold.2 + 1,
        );
        let totals: Option<Totals> = running
            .handle
            .read(tally::NAME, |model| {
                projections::read(model, tally::TOTALS, b"9")
            })
            .unwrap();
        assert_eq!(
            totals,
            Some(sold),
            "after waiting for {}",
            written.last_position
        );
    }
    writing.store(false, Ordering::Relaxed);
    for writer in others {
        within("a writer", writer).await.unwrap();
    }
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_names_the_checkpoint() {
    let mut random = Random::seeded("timeout");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let running = Running::start(&store, 1, small_batches());
    workload(&store, &mut random, "t", 20, 3).await;
    running.settle(&store).await;
    let head = store.next_position();
    match running
        .handle
        .wait_for(
            tally::NAME,
            Position(head.0 + 10),
            Duration::from_millis(50),
        )
        .await
    {
        Err(Error::Timeout {
            wanted, checkpoint, ..
        }) => {
            assert_eq!(wanted, Position(head.0 + 10));
            assert_eq!(checkpoint, head);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let handle = running.handle.clone();
    running.stop().await;
    assert!(matches!(
        handle
            .wait_for(tally::NAME, head, Duration::from_secs(5))
            .await,
        Err(Error::Stopped)
    ));
    assert!(matches!(
        handle.rebuild(tally::NAME).await,
        Err(Error::Stopped)
    ));
    assert!(matches!(
        handle
            .wait_for("nothing", head, Duration::from_secs(5))
            .await,
        Err(Error::UnknownProjection(_))
    ));
    store.close().await;
}
