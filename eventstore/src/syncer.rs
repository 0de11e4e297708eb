//! The syncer thread, the second half of the write pipeline: while the writer encodes and
//! writes the next batch, the syncer makes the batches written so far durable with one
//! `fdatasync`, then publishes the new durable end, answers the callers and hands the
//! index entries to the indexer. It also records the write path's metrics, once per
//! group (`crate::metrics`): the time of the sync, the events it made durable, and each
//! caller's time to its acknowledgement. Each caller's answer comes with its `Timing`
//! (time queued, bytes, the sync's time) for its `append` span.

use std::sync::Arc;
use std::time::Instant;

use crate::derived::index::IndexBatch;
use crate::error::Error;
use crate::io::LogFile;
use crate::segment::DurableEnd;
use crate::shared::Shared;
use crate::store::AppendOutcome;
use crate::writer::{Reply, Timing};

/// The log's `fdatasync`, through the `store.fsync` fault point: an injected delay sleeps
/// first (this is the syncer's own thread), an injected error is a failed sync and takes
/// the real fsync-failure path.
fn sync_data(chaos: &chaos::Chaos, file: &dyn LogFile) -> std::io::Result<()> {
    match chaos.check(chaos::Point::StoreFsync) {
        Some(chaos::Effect::Error) => Err(chaos::Injected(chaos::Point::StoreFsync).io()),
        Some(chaos::Effect::Delay(delay)) => {
            std::thread::sleep(delay);
            file.sync_data()
        }
        _ => file.sync_data(),
    }
}

/// A caller waiting for its answer, the answer it gets once the batch is durable, when
/// it asked, how long it waited for the writer and the bytes its records take.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) reply: Reply,
    pub(crate) answer: Result<AppendOutcome, Error>,
    pub(crate) queued_at: Instant,
    pub(crate) queued: std::time::Duration,
    pub(crate) bytes: u64,
}

impl Answer {
    /// Answers with the writer's failure instead.
    fn fail(self, reason: &str) {
        let _ = self.reply.send((
            Err(Error::WriterStopped(reason.to_owned())),
            Timing::default(),
        ));
    }
}

/// One written batch on its way to durability: the file to sync, where the log will end
/// once synced, the answers to send then, and the index entries to hand on.
#[derive(Debug)]
pub struct Handoff {
    pub(crate) file: Option<(Arc<dyn LogFile>, std::path::PathBuf)>,
    pub(crate) end: DurableEnd,
    pub(crate) answers: Vec<Answer>,
    pub(crate) index: Option<IndexBatch>,
}

/// The second half of the pipeline: while the writer encodes and writes the next batch,
/// this thread makes the previous ones durable with one `fdatasync` for all the batches
/// waiting, then publishes the new durable end, answers the callers and feeds the
/// indexer. Nobody hears of an append before the sync that covers it returns.
pub(crate) fn run_syncer(
    shared: Arc<Shared>,
    inbox: std::sync::mpsc::Receiver<Handoff>,
    indexer: std::sync::mpsc::Sender<IndexBatch>,
) {
    while let Ok(first) = inbox.recv() {
        let mut group = vec![first];
        while let Ok(next) = inbox.try_recv() {
            group.push(next);
        }
        // Sync each file written (two only when the writer rolled to a new segment).
        let mut synced: Vec<&std::path::Path> = Vec::new();
        let mut failure = None;
        let sync_started = Instant::now();
        for (file, path) in group
            .iter()
            .rev()
            .filter_map(|handoff| handoff.file.as_ref())
        {
            if synced.contains(&path.as_path()) {
                continue;
            }
            if let Err(error) = sync_data(&shared.config.chaos, file.as_ref()) {
                failure = Some(Error::io(path)(error));
                break;
            }
            synced.push(path);
        }
        if let Some(error) = failure {
            let reason = error.to_string();
            tracing::error!(%error, "fdatasync failed; the writer stops and the store must be reopened");
            shared.fail(reason.clone());
            for handoff in group.into_iter().chain(inbox.iter()) {
                for answer in handoff.answers {
                    answer.fail(&reason);
                }
            }
            return;
        }
        for batch in group.iter().filter_map(|handoff| handoff.index.as_ref()) {
            shared.remember_commits(&batch.commits);
        }
        let sync_time = (!synced.is_empty()).then(|| sync_started.elapsed());
        let end = group.last().expect("one handoff at least").end;
        let made_durable = end
            .next_position
            .saturating_sub(shared.durable_end().next_position);
        shared.publish_durable(end);
        let mut metrics = crate::metrics::GroupCommit::start(sync_time, made_durable);
        for handoff in group {
            for answer in handoff.answers {
                let acknowledged = answer.answer.is_ok();
                let timing = Timing {
                    queued: answer.queued,
                    bytes: answer.bytes,
                    fsync: sync_time,
                };
                let _ = answer.reply.send((answer.answer, timing));
                if acknowledged {
                    metrics.acknowledged(answer.queued_at);
                }
            }
            if let Some(batch) = handoff.index {
                let _ = indexer.send(batch);
            }
        }
    }
}
