//! One saga instance's task: it loads the instance from its stream, issues again the
//! commands that have no recorded answer and re-arms its deadlines, then takes its inputs
//! (from the log, its commands' answers, its passed deadlines) one at a time: records
//! each in its stream (expected version, an id derived from the input), handles it,
//! issues the step's commands and arms its deadlines.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{Error, EventId, EventStore, ExpectedVersion, Metadata, NewEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{
    ANSWER_BUFFER, Dispatcher, DriverStatus, Recorded, Routed, SAGA_DURATION, Shared, load,
};
use crate::saga::{self, Deadline, Instance, Issued, Saga};

/// [`load`] for async code: on the worker if the instance's records are in the page
/// cache (a new instance has none), else on the store's bounded blocking pool
/// ([`EventStore::read_cached_or_blocking`]): the worker never waits for the disk.
async fn load_async<S: Saga>(
    store: &EventStore,
    id: &str,
) -> Result<(Instance<S>, Vec<Recorded<S>>), Error> {
    let id = id.to_owned();
    store
        .read_cached_or_blocking(move |store| load::<S>(store, &id))
        .await
}

pub(super) async fn run<S: Saga, D: Dispatcher<S>>(
    shared: Arc<Shared<S, D>>,
    id: String,
    mut inputs: mpsc::Receiver<Routed<S::Input>>,
    (done, generation): (mpsc::Sender<(String, u64)>, u64),
) {
    let (answers_tx, mut answers) = mpsc::channel::<S::Input>(ANSWER_BUFFER);
    // Commands and timers of this instance; dropped (aborted) when it stops.
    let mut work = JoinSet::new();
    let Some((mut instance, began)) = resume(&shared, &id, &answers_tx, &mut work).await else {
        return;
    };
    let mut phase = PhaseCount::enter(&shared.status, instance.state.phase());
    // Only an instance that finishes in this run reports its duration.
    let mut progressed = false;
    // The trace of the last event routed from the log: every step continues it.
    let mut traceparent: Option<String> = None;
    // An input to take again after the instance was loaded again, and how many loads in
    // a row found the stream moved.
    let mut again: Option<(S::Input, Option<EventId>)> = None;
    let mut reloads = 0;
    while !instance.is_done() {
        let (input, cause) = match again.take() {
            Some(input) => input,
            None => tokio::select! {
                () = shared.shutdown.cancelled() => return,
                Some(joined) = work.join_next() => {
                    // A command task that panicked panics its instance: the driver runs
                    // again and the command is issued again (same id, no second effect).
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        std::panic::resume_unwind(error.into_panic());
                    }
                    continue;
                }
                Some(input) = answers.recv() => (input, None),
                input = inputs.recv() => match input {
                    Some((input, cause, trace)) => {
                        if trace.is_some() {
                            traceparent = trace;
                        }
                        (input, Some(cause))
                    }
                    // The follower stopped.
                    None => return,
                },
            },
        };
        if instance.is_stale_deadline(&input) {
            continue;
        }
        let step = crate::trace::step_span(S::NAME, &id, traceparent.as_deref());
        let recorded = record(&shared, &instance, &input, cause)
            .instrument(step.clone())
            .await;
        let recorded = match recorded {
            Recording::Stopped => return,
            // Recorded before, and loaded: nothing new.
            Recording::Stored(outcome)
                if outcome.duplicate
                    && instance
                        .version
                        .is_some_and(|loaded| outcome.last_version <= loaded) =>
            {
                continue;
            }
            Recording::Stored(outcome) if !outcome.duplicate => outcome,
            // Recorded, but not in what this instance loaded; or the stream moved past
            // the version it loaded. Another driver recorded inputs of this instance:
            // a former holder of the saga (on another node, its lease lost or the node
            // dead), whose last records this node's copy had not applied yet when the
            // instance loaded. Load the stream again, with every command and deadline
            // it has open, and take this input again.
            Recording::Stored(_) | Recording::Moved(_) => {
                if let Recording::Moved(error) = &recorded
                    && reloads > 0
                    && !pause(&shared, error, reloads - 1).await
                {
                    return;
                }
                reloads += 1;
                tracing::info!(saga = S::NAME, instance = %id, "the instance's stream holds inputs it had not loaded: it loads again");
                work = JoinSet::new();
                let Some((reloaded, _)) = resume(&shared, &id, &answers_tx, &mut work).await else {
                    return;
                };
                instance = reloaded;
                phase.set(instance.state.phase());
                again = Some((input, cause));
                continue;
            }
        };
        reloads = 0;
        let (commands, deadlines) = instance.apply(&input);
        instance.version = Some(recorded.last_version);
        phase.set(instance.state.phase());
        progressed = true;
        step.in_scope(|| {
            for issued in commands {
                issue(&shared, &instance, issued, &answers_tx, &mut work);
            }
        });
        for deadline in deadlines {
            arm(&shared, deadline, &answers_tx, &mut work);
        }
    }
    if progressed {
        let took = (chrono::Utc::now() - began).to_std().unwrap_or_default();
        metrics::histogram!(SAGA_DURATION, "saga" => S::NAME, "outcome" => instance.state.phase())
            .record(took);
        if let Some(on_finished) = &shared.config.on_finished {
            (on_finished.0)(instance.state.phase(), took);
        }
    }
    drop(phase);
    // No more inputs: the follower sending one sees the instance ended at once.
    drop(inputs);
    tokio::select! {
        _ = done.send((id, generation)) => {}
        () = shared.shutdown.cancelled() => {}
    }
}

/// Loads the instance `id` from its stream (retrying while the store fails), issues
/// again its commands without a recorded answer and re-arms its deadlines into `work`.
/// With the log on JetStream, this node's copy first applies the stream's last record,
/// so the instance starts from every input recorded so far, wherever it was recorded.
/// The instance and when its first input was recorded (now, for a new one); `None` when
/// the driver stops first.
async fn resume<S: Saga, D: Dispatcher<S>>(
    shared: &Arc<Shared<S, D>>,
    id: &str,
    answers: &mpsc::Sender<S::Input>,
    work: &mut JoinSet<()>,
) -> Option<(Instance<S>, chrono::DateTime<chrono::Utc>)> {
    let mut attempt = 0;
    let (instance, began) = loop {
        let loaded = match saga::stream_id::<S>(id) {
            Ok(stream) => match shared.store.catch_up_stream(&stream).await {
                Ok(_) => load_async::<S>(&shared.store, id).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match loaded {
            Ok((instance, recorded)) => {
                let began = recorded.first().map(|first| first.event.recorded_at);
                break (instance, began.unwrap_or_else(chrono::Utc::now));
            }
            Err(error) => {
                if !pause(shared, &error, attempt).await {
                    return None;
                }
                attempt += 1;
            }
        }
    };
    for (key, command) in instance.outstanding.clone() {
        issue(shared, &instance, Issued { key, command }, answers, work);
    }
    for deadline in instance.deadlines.values() {
        arm(shared, deadline.clone(), answers, work);
    }
    Some((instance, began))
}

/// A running instance's place in [`DriverStatus::phases`]: counted in its phase until it
/// stops (finished, or the driver stopping).
struct PhaseCount<'a> {
    status: &'a watch::Sender<DriverStatus>,
    phase: &'static str,
}

impl<'a> PhaseCount<'a> {
    fn enter(status: &'a watch::Sender<DriverStatus>, phase: &'static str) -> Self {
        status.send_modify(|s| *s.phases.entry(phase).or_default() += 1);
        PhaseCount { status, phase }
    }

    /// Moves the instance to `phase`.
    fn set(&mut self, phase: &'static str) {
        if phase == self.phase {
            return;
        }
        let old = std::mem::replace(&mut self.phase, phase);
        self.status.send_modify(|s| {
            leave(s, old);
            *s.phases.entry(phase).or_default() += 1;
        });
    }
}

impl Drop for PhaseCount<'_> {
    fn drop(&mut self) {
        self.status.send_modify(|s| leave(s, self.phase));
    }
}

fn leave(status: &mut DriverStatus, phase: &'static str) {
    if let Some(count) = status.phases.get_mut(phase) {
        *count = count.saturating_sub(1);
    }
}

/// What recording an input came to.
enum Recording {
    /// Stored now, or found stored before (`duplicate`).
    Stored(eventstore::AppendOutcome),
    /// The stream is not at the version the instance loaded (another driver recorded
    /// since): the error the store gave.
    Moved(Error),
    /// The driver stopped first.
    Stopped,
}

/// Appends `input` to the instance's stream at the version the instance loaded,
/// retrying while the store fails.
async fn record<S: Saga, D: Dispatcher<S>>(
    shared: &Shared<S, D>,
    instance: &Instance<S>,
    input: &S::Input,
    cause: Option<EventId>,
) -> Recording {
    let mut attempt = 0;
    loop {
        let result = encode::<S>(instance, input, cause);
        let result = match result {
            Ok((stream, event)) => {
                let expected = match instance.version {
                    Some(version) => ExpectedVersion::Exact(version),
                    None => ExpectedVersion::NoStream,
                };
                shared.store.append(&stream, expected, vec![event]).await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(outcome) => return Recording::Stored(outcome),
            Err(error @ Error::VersionConflict { .. }) => return Recording::Moved(error),
            Err(error) => {
                if !pause(shared, &error, attempt).await {
                    return Recording::Stopped;
                }
                attempt += 1;
            }
        }
    }
}

/// The record of `input`; an input routed from the log names that event as its cause
/// (which is how [`rebuild_checkpoint`] finds where an unfinished instance began).
fn encode<S: Saga>(
    instance: &Instance<S>,
    input: &S::Input,
    cause: Option<EventId>,
) -> Result<(eventstore::StreamId, NewEvent), Error> {
    let stream = saga::stream_id::<S>(&instance.id)?;
    let payload = postcard::to_allocvec(input).map_err(|source| Error::Codec {
        what: "saga input",
        source,
    })?;
    let event = NewEvent::new(S::input_type(input), payload)
        .with_id(saga::input_id::<S>(&instance.id, input))
        .with_metadata(Metadata {
            causation_id: cause.map(|id| id.as_uuid()),
            traceparent: trace_context::current(),
            ..Metadata::default()
        });
    Ok((stream, event))
}

/// Runs one command in its own task; its answer comes back as an input.
fn issue<S: Saga, D: Dispatcher<S>>(
    shared: &Arc<Shared<S, D>>,
    instance: &Instance<S>,
    issued: Issued<S::Command>,
    answers: &mpsc::Sender<S::Input>,
    work: &mut JoinSet<()>,
) {
    let (shared, answers) = (shared.clone(), answers.clone());
    let state = instance.state.clone();
    let command_id = saga::command_id::<S>(&instance.id, &issued.key);
    // A child of the current span: the step that issued the command. In a trace that is
    // not sampled (nobody would see it), the step's own span, so that the command's
    // events still store the trace.
    let span = if trace_context::in_unsampled_trace() {
        tracing::Span::current()
    } else {
        tracing::info_span!(
            "saga command",
            otel.name = %format_args!("saga {} command", S::NAME),
            saga = S::NAME,
            key = %issued.key,
            retries = 0u32,
        )
    };
    let run = async move {
        let mut attempt = 0;
        loop {
            match shared.dispatcher.execute(&state, command_id, &issued).await {
                Ok(answer) => {
                    let _ = answers.send(answer).await;
                    return;
                }
                Err(error) => {
                    if !pause(&shared, &error, attempt).await {
                        return;
                    }
                    attempt += 1;
                }
            }
        }
    };
    work.spawn(run.instrument(span));
}

/// Arms a deadline: once the clock reaches it, the saga is told.
fn arm<S: Saga, D: Dispatcher<S>>(
    shared: &Arc<Shared<S, D>>,
    deadline: Deadline,
    answers: &mpsc::Sender<S::Input>,
    work: &mut JoinSet<()>,
) {
    let sleep = shared.clock.sleep_until(deadline.at);
    let answers = answers.clone();
    work.spawn(async move {
        sleep.await;
        let _ = answers.send(S::deadline_passed(&deadline)).await;
    });
}

/// Waits before a retry (doubling, up to a second), noting the error. False if the
/// driver stops meanwhile.
async fn pause<S: Saga, D>(shared: &Shared<S, D>, error: &Error, attempt: u32) -> bool {
    tracing::warn!(%error, saga = S::NAME, attempt, "a saga step failed; it is tried again");
    shared
        .status
        .send_modify(|s| s.last_error = Some(error.to_string()));
    let wait = shared
        .config
        .retry_after
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(1));
    tokio::select! {
        () = shared.shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
