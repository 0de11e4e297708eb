//! A counter aggregate through the `Repository`: commands, domain errors, idempotent
//! retries, snapshots and optimistic concurrency.

use eventstore::{
    Aggregate, CommandOptions, Direction, EventStore, ExecuteError, Repository, StoreConfig,
    Version,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{open, reopen};

/// A counter that only goes up.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counter {
    count: u64,
    /// Events folded since this value was loaded or made: not saved in snapshots, so it
    /// tells a load from a snapshot (few) from a full replay (all).
    #[serde(skip)]
    folded: u64,
}

#[derive(Debug)]
pub(crate) enum CounterCommand {
    Increment { by: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CounterEvent {
    Incremented { by: u64 },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CounterError {
    #[error("an increment must be positive")]
    ZeroIncrement,
}

impl Aggregate for Counter {
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    const CATEGORY: &'static str = "counter";

    fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match *command {
            CounterCommand::Increment { by: 0 } => Err(CounterError::ZeroIncrement),
            CounterCommand::Increment { by } => Ok(vec![CounterEvent::Incremented { by }]),
        }
    }

    fn evolve(self, event: &CounterEvent) -> Self {
        match *event {
            CounterEvent::Incremented { by } => Counter {
                count: self.count + by,
                folded: self.folded + 1,
            },
        }
    }

    fn event_type(event: &CounterEvent) -> &'static str {
        match event {
            CounterEvent::Incremented { .. } => "Incremented",
        }
    }
}

pub(crate) fn command(id: Uuid) -> CommandOptions {
    CommandOptions {
        command_id: id,
        ..CommandOptions::default()
    }
}

pub(crate) fn increment(by: u64) -> CounterCommand {
    CounterCommand::Increment { by }
}

/// The counter folded from every event of its stream, without snapshots.
fn replay(store: &EventStore, id: &str) -> (u64, Option<Version>) {
    let stream = Repository::<Counter>::stream_id(id).unwrap();
    let events = store
        .read_stream(&stream, Version(0), Direction::Forward, usize::MAX)
        .unwrap();
    let count = events
        .iter()
        .map(
            |event| match Counter::decode_event(event.schema_version, &event.payload).unwrap() {
                CounterEvent::Incremented { by } => by,
            },
        )
        .sum();
    (count, events.last().map(|event| event.version))
}

#[tokio::test]
async fn commands_commit_and_domain_errors_come_back_as_rejections() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let counters = Repository::<Counter>::new(store.clone());

    let first = counters
        .execute("a", &increment(3), &command(Uuid::now_v7()))
        .await
        .expect("increment by 3");
    assert_eq!(first.stream.as_str(), "counter-a");
    assert_eq!(first.outcome.first_version, Version(0));
    assert!(!first.outcome.duplicate);
    assert_eq!(first.state.count, 3);
    let second = counters
        .execute("a", &increment(4), &command(Uuid::now_v7()))
        .await
        .expect("increment by 4");
    assert_eq!(second.outcome.first_version, Version(1));
    assert_eq!(second.state.count, 7);

    let rejected = counters
        .execute("a", &increment(0), &command(Uuid::now_v7()))
        .await;
    assert!(
        matches!(
            rejected,
            Err(ExecuteError::Rejected(CounterError::ZeroIncrement))
        ),
        "{rejected:?}"
    );
    let loaded = counters.load("a").unwrap();
    assert_eq!(loaded.state.count, 7);
    assert_eq!(loaded.version, Some(Version(1)));
    assert_eq!(store.next_position().0, 2, "the rejection wrote nothing");
    assert_eq!(counters.load("b").unwrap().version, None);
}

#[tokio::test]
async fn a_retried_command_is_recorded_once() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let counters = Repository::<Counter>::new(store.clone());
    let retried = Uuid::now_v7();

    let original = counters
        .execute("a", &increment(5), &command(retried))
        .await
        .unwrap();
    counters
        .execute("a", &increment(1), &command(Uuid::now_v7()))
        .await
        .unwrap();
    let again = counters
        .execute("a", &increment(5), &command(retried))
        .await
        .expect("a retry succeeds");
    assert!(again.outcome.duplicate);
    assert_eq!(
        again.outcome.first_position,
        original.outcome.first_position
    );
    assert_eq!(again.outcome.first_version, original.outcome.first_version);
    assert_eq!(again.state.count, 6, "counted once");

    // Also after a restart, when only the durable index remembers the command.
    drop(counters);
    let store = reopen(store).await;
    let counters = Repository::<Counter>::new(store.clone());
    let again = counters
        .execute("a", &increment(5), &command(retried))
        .await
        .expect("a retry after restart succeeds");
    assert!(again.outcome.duplicate);
    assert_eq!(
        again.outcome.first_position,
        original.outcome.first_position
    );
    assert_eq!(counters.load("a").unwrap().state.count, 6);
    assert_eq!(replay(&store, "a"), (6, Some(Version(1))));
}

#[tokio::test]
async fn loads_start_from_the_latest_snapshot() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let counters = Repository::<Counter>::new(store.clone()).with_snapshot_every(5);
    for by in 1..=12 {
        counters
            .execute("s", &increment(by), &command(Uuid::now_v7()))
            .await
            .unwrap();
    }
    let stream = Repository::<Counter>::stream_id("s").unwrap();
    let (snapshot_version, _) = store
        .load_snapshot(&stream)
        .unwrap()
        .expect("a snapshot was saved");
    assert_eq!(snapshot_version, Version(9), "the snapshot after 10 events");

    let loaded = counters.load("s").unwrap();
    assert_eq!(
        (loaded.state.count, loaded.version),
        replay(&store, "s"),
        "a load from the snapshot equals a full replay"
    );
    assert_eq!(loaded.state.count, 78);
    assert_eq!(loaded.version, Some(Version(11)));
    assert_eq!(
        loaded.state.folded, 2,
        "only the events after the snapshot were folded"
    );

    // Without the snapshot (an index rebuild drops it), the same state by full replay.
    drop(counters);
    let config = store.config().clone();
    store.close().await;
    drop(store);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let store = open(dir.path(), config);
    let counters = Repository::<Counter>::new(store.clone()).with_snapshot_every(5);
    let rebuilt = counters.load("s").unwrap();
    assert_eq!(
        (rebuilt.state.count, rebuilt.version),
        (78, Some(Version(11)))
    );
    assert_eq!(rebuilt.state.folded, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_aggregate_all_commit() {
    const TASKS: u64 = 16;
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    // Each conflict means another command committed, so with 16 contenders 15 retries
    // always suffice (the default bound of 8 need not). One repository per task: each
    // has its own queue, so the commands really race and conflict.
    let counters = Repository::<Counter>::new(store.clone()).with_conflict_retries(TASKS as u32);
    let mut tasks = Vec::new();
    for by in 1..=TASKS {
        let counters =
            Repository::<Counter>::new(store.clone()).with_conflict_retries(TASKS as u32);
        tasks.push(tokio::spawn(async move {
            counters
                .execute("hot", &increment(by), &command(Uuid::now_v7()))
                .await
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        let committed = task
            .await
            .unwrap()
            .expect("every command commits after retrying its conflicts");
        assert!(!committed.outcome.duplicate);
        versions.push(committed.outcome.first_version.0);
    }
    versions.sort_unstable();
    assert_eq!(versions, (0..TASKS).collect::<Vec<_>>());
    let loaded = counters.load("hot").unwrap();
    assert_eq!(loaded.state.count, TASKS * (TASKS + 1) / 2);
    assert_eq!(loaded.version, Some(Version(TASKS - 1)));
    assert_eq!(
        replay(&store, "hot"),
        (TASKS * (TASKS + 1) / 2, Some(Version(TASKS - 1)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_one_repository_queue_on_their_stream() {
    const TASKS: u64 = 16;
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    // No conflict retries: commands through clones of one repository take turns on the
    // stream's queue, so none of them may meet a conflict.
    let counters = Repository::<Counter>::new(store.clone()).with_conflict_retries(0);
    let mut tasks = Vec::new();
    for by in 1..=TASKS {
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            counters
                .execute("queued", &increment(by), &command(Uuid::now_v7()))
                .await
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("a queued command never conflicts with its own repository");
    }
    assert_eq!(
        replay(&store, "queued"),
        (TASKS * (TASKS + 1) / 2, Some(Version(TASKS - 1)))
    );
    store.close().await;
}

#[tokio::test]
async fn a_cached_state_is_never_used_once_the_stream_moved() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    // No conflict retries: a stale cached state would show as a conflict.
    let cached = Repository::<Counter>::new(store.clone())
        .with_cache(16)
        .with_conflict_retries(0);
    let other = Repository::<Counter>::new(store.clone());
    let first = cached
        .execute("c", &increment(1), &command(Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(first.state.count, 1);
    // Another writer moves the stream behind the cache's back.
    other
        .execute("c", &increment(10), &command(Uuid::now_v7()))
        .await
        .unwrap();
    let third = cached
        .execute("c", &increment(100), &command(Uuid::now_v7()))
        .await
        .expect("the moved stream is loaded again, not decided on the cached state");
    assert_eq!(third.state.count, 111);
    assert_eq!(third.outcome.last_version, Version(2));
    // And the cached state that follows is used: it is the head now.
    let fourth = cached
        .execute("c", &increment(1000), &command(Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(fourth.state.count, 1111);
    assert_eq!(replay(&store, "c"), (1111, Some(Version(3))));
    store.close().await;
}
