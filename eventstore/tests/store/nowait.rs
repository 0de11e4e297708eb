//! Reads from async code never hold the async worker: a read that needs a lagging index
//! awaits it without a thread ([`EventStore::read_cached_or_blocking`]). The index is
//! held up by the `store.index` fault point; the test runs on a current-thread runtime,
//! whose one worker would stop everything else if the read blocked it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventstore::{EventStore, ExpectedVersion, StoreConfig};

use crate::common::{event, open, stream};

const INDEX_DELAY: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "current_thread")]
async fn a_read_waiting_for_the_index_leaves_the_worker_free() {
    let dir = tempfile::tempdir().unwrap();
    let chaos = chaos::Chaos::enabled();
    let config = StoreConfig {
        chaos: chaos.clone(),
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);
    let orders = stream("order-1");
    store
        .append(&orders, ExpectedVersion::Any, vec![event("a")])
        .await
        .unwrap();
    store.index_caught_up().await.unwrap();

    // The next round of the indexer waits: the event appended now is durable, not
    // indexed, and a read by its id must wait for it.
    chaos
        .inject(&chaos::FaultSpec {
            point: "store.index".into(),
            effect: chaos::EffectKind::Delay,
            delay_ms: Some(INDEX_DELAY.as_millis() as u64),
            probability: 1.0,
            count: Some(1),
            duration_secs: None,
        })
        .unwrap();
    let b = event("b");
    let b_id = b.id;
    store
        .append(&orders, ExpectedVersion::Any, vec![b])
        .await
        .unwrap();

    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let started = Instant::now();
    let found = store
        .read_cached_or_blocking(move |store: &EventStore| store.read_event(&b_id))
        .await
        .unwrap()
        .expect("the acknowledged event is found");
    let waited = started.elapsed();
    ticker.abort();
    assert_eq!(found.id, b_id);
    assert!(
        waited >= INDEX_DELAY / 2,
        "the read waited for the index ({waited:?})"
    );
    // A worker blocked by the read would have ticked not at all while it waited.
    let ticked = ticks.load(Ordering::Relaxed);
    assert!(
        ticked >= 10,
        "the worker ran other tasks while the read waited: {ticked} ticks in {waited:?}"
    );
    store.close().await;
}
