//! The indexer thread: writes durable group commits to the sled index off the
//! acknowledgement path, gathering several into one round while no reader waits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::derived::index::IndexBatch;
use crate::shared::Shared;

/// Applies group commits to the index as the writer hands them over, several at a time
/// when it lags, then lets waiting readers go.
pub(crate) fn run_indexer(shared: Arc<Shared>, inbox: std::sync::mpsc::Receiver<IndexBatch>) {
    let linger = shared.config.index_linger;
    while let Ok(first) = inbox.recv() {
        let gathering_since = std::time::Instant::now();
        let mut batches = vec![first];
        let mut events: usize = 0;
        // Gather what is queued; while no reader waits, linger a little for more, since
        // one round of many events writes far fewer sled keys than many small rounds.
        loop {
            match inbox.try_recv() {
                Ok(batch) => {
                    events += batch
                        .commits
                        .iter()
                        .map(|c| c.event_ids.len())
                        .sum::<usize>();
                    batches.push(batch);
                    if events >= 65_536 {
                        break;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    let waited = gathering_since.elapsed();
                    if waited >= linger || shared.readers_waiting.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    std::thread::sleep(
                        (linger - waited).min(std::time::Duration::from_micros(500)),
                    );
                }
            }
        }
        if let Some(chaos::Effect::Delay(delay)) =
            shared.config.chaos.check(chaos::Point::StoreIndex)
        {
            std::thread::sleep(delay);
        }
        if let Err(error) = shared.index.apply(&batches) {
            // The log is intact; reads that need the index will wait, and the next open
            // rebuilds it from the high-water mark.
            tracing::error!(%error, "indexing failed; reopen the store to rebuild the index");
            shared.fail(format!("indexing failed: {error}"));
            return;
        }
        let end = batches
            .last()
            .expect("one batch at least")
            .end
            .next_position;
        shared.set_indexed(end);
        shared.forget_commits(end);
    }
}
