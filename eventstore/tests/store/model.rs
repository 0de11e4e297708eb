//! The store against a model: random sequences of appends (right and wrong expected
//! versions, re-sent and half re-sent appends, concurrent appends), reads, subscriptions,
//! restarts and index rebuilds, each checked against a plain `Vec` of events: on one
//! machine, and with the log on a JetStream stream of a real 3-node cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventstore::{
    AppendOutcome, Direction, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, ReplicatedConfig, StoreConfig, StreamId, Version,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use tempfile::TempDir;
use test_support::NatsCluster;

use crate::common::{event, open_replicated, replicated, try_open};

/// Streams in two categories and one without a category.
const STREAMS: [&str; 4] = ["alpha-1", "alpha-2", "beta-1", "gamma"];

/// An expected version, relative to the stream's state when the operation runs.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    /// `Exact(head + delta)` (a delta of 0 is right); on a missing stream, `Exact(delta)`
    /// with negative deltas as 0, which is always wrong.
    Exact(i64),
}

impl Expect {
    fn resolve(self, head: Option<u64>) -> ExpectedVersion {
        match self {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::StreamExists => ExpectedVersion::StreamExists,
            Expect::Exact(delta) => {
                let version = head.map_or(delta, |head| head as i64 + delta).max(0);
                ExpectedVersion::Exact(Version(version as u64))
            }
        }
    }
}

/// What the model says the store decides: the rule, written out independently.
fn admits(expected: ExpectedVersion, head: Option<u64>) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => head.is_none(),
        ExpectedVersion::StreamExists => head.is_some(),
        ExpectedVersion::Exact(Version(version)) => head == Some(version),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append events (payloads given) to one stream.
    Append {
        stream: usize,
        expect: Expect,
        payloads: Vec<Vec<u8>>,
        with_metadata: bool,
    },
    /// Send an earlier successful append again, exactly.
    Resend {
        which: Index,
        expect: Expect,
    },
    /// Send the first events of an earlier append with a new one after them.
    ResendPartly {
        which: Index,
        keep: Index,
    },
    /// Several appends at once with `Any`, so they share group commits.
    Concurrent {
        appends: Vec<(usize, usize)>,
    },
    ReadStream {
        stream: usize,
        backward: bool,
        from: Index,
        limit: usize,
    },
    ReadAll {
        from: Index,
        limit: usize,
    },
    /// Subscribe from some position and read up to the end of the log, after appending
    /// one more event to the stream given, if any, while subscribed.
    Subscribe {
        from: Index,
        live: Option<usize>,
    },
    /// Close and reopen.
    Restart,
    /// Close, delete the index, reopen: the index is rebuilt from the log.
    DropIndexes,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::StreamExists),
        3 => Just(Expect::Exact(0)),
        1 => (-2i64..=2).prop_map(Expect::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    prop_oneof![
        8 => (
            stream.clone(),
            expect(),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..=4),
            any::<bool>(),
        )
            .prop_map(|(stream, expect, payloads, with_metadata)| Op::Append {
                stream,
                expect,
                payloads,
                with_metadata,
            }),
        2 => (any::<Index>(), expect()).prop_map(|(which, expect)| Op::Resend { which, expect }),
        1 => (any::<Index>(), any::<Index>())
            .prop_map(|(which, keep)| Op::ResendPartly { which, keep }),
        2 => prop::collection::vec((stream.clone(), 1usize..=3), 2..=5)
            .prop_map(|appends| Op::Concurrent { appends }),
        3 => (stream, any::<bool>(), any::<Index>(), 1usize..8).prop_map(
            |(stream, backward, from, limit)| Op::ReadStream {
                stream,
                backward,
                from,
                limit
            }
        ),
        2 => (any::<Index>(), 1usize..30).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
        2 => (any::<Index>(), prop::option::of(0..STREAMS.len()))
            .prop_map(|(from, live)| Op::Subscribe { from, live }),
        1 => Just(Op::Restart),
        1 => Just(Op::DropIndexes),
    ]
}

/// One event as the model holds it; its position is its index in the model.
#[derive(Debug, Clone)]
struct ModelEvent {
    stream: usize,
    version: u64,
    event: NewEvent,
    /// The last event of its append.
    last_in_commit: bool,
}

#[derive(Debug, Default)]
struct Model {
    events: Vec<ModelEvent>,
    /// Every successful append: stream, events, outcome.
    appends: Vec<(usize, Vec<NewEvent>, AppendOutcome)>,
}

impl Model {
    fn head(&self, stream: usize) -> Option<u64> {
        self.events
            .iter()
            .rev()
            .find(|e| e.stream == stream)
            .map(|e| e.version)
    }

    /// Records an append the store is expected to make, and its outcome.
    fn append(&mut self, stream: usize, events: Vec<NewEvent>) -> AppendOutcome {
        let first_version = self.head(stream).map_or(0, |head| head + 1);
        let first_position = self.events.len() as u64;
        let count = events.len() as u64;
        for (i, event) in events.iter().enumerate() {
            self.events.push(ModelEvent {
                stream,
                version: first_version + i as u64,
                event: event.clone(),
                last_in_commit: i + 1 == events.len(),
            });
        }
        let outcome = AppendOutcome {
            first_position: Position(first_position),
            last_position: Position(first_position + count - 1),
            first_version: Version(first_version),
            last_version: Version(first_version + count - 1),
            duplicate: false,
        };
        self.appends.push((stream, events, outcome));
        outcome
    }

    fn stream_events(&self, stream: usize) -> Vec<(u64, &ModelEvent)> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.stream == stream)
            .map(|(position, e)| (position as u64, e))
            .collect()
    }
}

fn stream_id(stream: usize) -> StreamId {
    crate::common::stream(STREAMS[stream])
}

/// Whether `recorded` is the model's event at `position`, field by field.
fn check_event(
    recorded: &RecordedEvent,
    position: u64,
    expected: &ModelEvent,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(recorded.position, Position(position));
    prop_assert_eq!(recorded.id, expected.event.id);
    prop_assert_eq!(recorded.stream_id.as_str(), STREAMS[expected.stream]);
    prop_assert_eq!(recorded.version, Version(expected.version));
    prop_assert_eq!(&recorded.event_type, &expected.event.event_type);
    prop_assert_eq!(recorded.schema_version, expected.event.schema_version);
    prop_assert_eq!(&recorded.metadata, &expected.event.metadata);
    prop_assert_eq!(&recorded.payload, &expected.event.payload);
    prop_assert_eq!(recorded.last_in_commit, expected.last_in_commit);
    Ok(())
}

fn check_events<'a>(
    recorded: &[RecordedEvent],
    expected: impl IntoIterator<Item = (u64, &'a ModelEvent)>,
) -> Result<(), TestCaseError> {
    let expected: Vec<_> = expected.into_iter().collect();
    prop_assert_eq!(recorded.len(), expected.len(), "number of events");
    for (recorded, (position, event)) in recorded.iter().zip(expected) {
        check_event(recorded, position, event)?;
    }
    Ok(())
}

/// The checks that are cheap enough to run after every operation.
fn check_heads(store: &EventStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.next_position(), Position(model.events.len() as u64));
    for (stream, name) in STREAMS.iter().enumerate() {
        prop_assert_eq!(
            store.stream_head(&stream_id(stream)).unwrap(),
            model.head(stream).map(Version),
            "head of {}",
            name
        );
    }
    Ok(())
}

/// Everything: the whole log, every stream, every id, the category listing, verify.
fn check_all(store: &EventStore, model: &Model) -> Result<(), TestCaseError> {
    check_heads(store, model)?;
    let log = store.read_all(Position(0), usize::MAX).unwrap();
    check_events(
        &log,
        model.events.iter().enumerate().map(|(p, e)| (p as u64, e)),
    )?;
    for stream in 0..STREAMS.len() {
        let read = store
            .read_stream(
                &stream_id(stream),
                Version(0),
                Direction::Forward,
                usize::MAX,
            )
            .unwrap();
        check_events(&read, model.stream_events(stream))?;
    }
    for (position, event) in model.events.iter().enumerate() {
        let found = store.read_event(&event.event.id).unwrap();
        prop_assert!(found.is_some(), "event {position} found by id");
        check_event(&found.unwrap(), position as u64, event)?;
    }
    let mut alpha: Vec<_> = store
        .streams(Some("alpha"))
        .unwrap()
        .into_iter()
        .map(|(stream, head)| (stream.as_str().to_owned(), head.0))
        .collect();
    alpha.sort();
    let expected: Vec<_> = (0..2)
        .filter_map(|s| model.head(s).map(|head| (STREAMS[s].to_owned(), head)))
        .collect();
    prop_assert_eq!(alpha, expected);
    let existing = (0..STREAMS.len())
        .filter(|&s| model.head(s).is_some())
        .count();
    prop_assert_eq!(store.streams(None).unwrap().len(), existing);
    let report = store.verify().unwrap();
    prop_assert_eq!(report.events, model.events.len() as u64);
    Ok(())
}

fn new_events(payloads: &[Vec<u8>], with_metadata: bool) -> Vec<NewEvent> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let event = NewEvent::new(format!("Type{i}"), payload.clone());
            if with_metadata {
                event.with_metadata(Metadata {
                    correlation_id: Some(uuid::Uuid::now_v7()),
                    principal: Some(format!("user-{i}")),
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    ),
                    // Some with the identity block, some without: both record forms.
                    issuer: (i % 2 == 0).then(|| "https://issuer.example".into()),
                    action: (i % 3 == 0).then(|| "orders.place".into()),
                    on_behalf_of: (i % 4 == 1).then(|| format!("customer {i}\n")),
                    ..Metadata::default()
                })
            } else {
                event
            }
        })
        .collect()
}

/// Where the log under test lives.
#[derive(Debug, Clone)]
enum Backend {
    /// Segment files in the data directory.
    Embedded,
    /// A JetStream stream, the data directory holding the node's copy.
    JetStream(ReplicatedConfig),
}

impl Backend {
    async fn open(&self, dir: &Path, config: &StoreConfig) -> EventStore {
        match self {
            Backend::Embedded => try_open(dir, config.clone()).unwrap(),
            Backend::JetStream(log) => open_replicated(dir, config.clone(), log).await,
        }
    }

    /// What a lost index means: on one machine the index alone (rebuilt from the log);
    /// on JetStream the node's whole copy (rebuilt from the stream).
    fn derived(&self, dir: &Path) -> PathBuf {
        match self {
            Backend::Embedded => dir.join("index"),
            Backend::JetStream(_) => dir.to_path_buf(),
        }
    }
}

async fn run(ops: Vec<Op>, config: StoreConfig, backend: Backend) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let mut store = backend.open(dir.path(), &config).await;
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Append {
                stream,
                expect,
                payloads,
                with_metadata,
            } => {
                let head = model.head(stream);
                let expected = expect.resolve(head);
                let events = new_events(&payloads, with_metadata);
                let result = store
                    .append(&stream_id(stream), expected, events.clone())
                    .await;
                if admits(expected, head) {
                    let predicted = model.append(stream, events);
                    prop_assert_eq!(result.unwrap(), predicted);
                } else {
                    match result {
                        Err(Error::VersionConflict { actual, .. }) => {
                            prop_assert_eq!(actual, head.map(Version));
                        }
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "{expected:?} on head {head:?}: expected a conflict, got {other:?}"
                            )));
                        }
                    }
                }
            }
            Op::Resend { which, expect } => {
                if model.appends.is_empty() {
                    continue;
                }
                let (stream, events, original) =
                    model.appends[which.index(model.appends.len())].clone();
                let expected = expect.resolve(model.head(stream));
                let result = store.append(&stream_id(stream), expected, events).await;
                prop_assert_eq!(
                    result.unwrap(),
                    AppendOutcome {
                        duplicate: true,
                        ..original
                    }
                );
            }
            Op::ResendPartly { which, keep } => {
                if model.appends.is_empty() {
                    continue;
                }
                let (stream, events, _) = &model.appends[which.index(model.appends.len())];
                let mut partly: Vec<NewEvent> = events[..=keep.index(events.len())].to_vec();
                partly.push(event("new"));
                let result = store
                    .append(&stream_id(*stream), ExpectedVersion::Any, partly)
                    .await;
                prop_assert!(
                    matches!(result, Err(Error::IdempotencyMismatch { .. })),
                    "{:?}",
                    result
                );
            }
            Op::Concurrent { appends } => {
                let tasks: Vec<_> = appends
                    .iter()
                    .map(|&(stream, count)| {
                        let store = store.clone();
                        let events: Vec<NewEvent> =
                            (0..count).map(|i| event(format!("c{i}"))).collect();
                        tokio::spawn(async move {
                            let outcome = store
                                .append(&stream_id(stream), ExpectedVersion::Any, events.clone())
                                .await;
                            (stream, events, outcome)
                        })
                    })
                    .collect();
                let mut done = Vec::new();
                for task in tasks {
                    let (stream, events, outcome) = task.await.unwrap();
                    done.push((stream, events, outcome.unwrap()));
                }
                done.sort_by_key(|(_, _, outcome)| outcome.first_position);
                for (stream, events, outcome) in done {
                    let predicted = model.append(stream, events);
                    prop_assert_eq!(outcome, predicted);
                }
            }
            Op::ReadStream {
                stream,
                backward,
                from,
                limit,
            } => {
                let span = model.head(stream).map_or(0, |head| head + 1) as usize + 2;
                let from = from.index(span) as u64;
                let direction = if backward {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let read = store
                    .read_stream(&stream_id(stream), Version(from), direction, limit)
                    .unwrap();
                let mut expected: Vec<_> = model
                    .stream_events(stream)
                    .into_iter()
                    .filter(|(_, e)| {
                        if backward {
                            e.version <= from
                        } else {
                            e.version >= from
                        }
                    })
                    .collect();
                if backward {
                    expected.reverse();
                }
                expected.truncate(limit);
                check_events(&read, expected)?;
            }
            Op::ReadAll { from, limit } => {
                let from = from.index(model.events.len() + 2);
                let read = store.read_all(Position(from as u64), limit).unwrap();
                let expected = model
                    .events
                    .iter()
                    .enumerate()
                    .skip(from)
                    .take(limit)
                    .map(|(p, e)| (p as u64, e));
                check_events(&read, expected)?;
            }
            Op::Subscribe { from, live } => {
                // From a position up to the end of the log (possibly nothing), then, if
                // `live`, one more event appended while subscribed.
                let from = from.index(model.events.len() + 1);
                let mut subscription = store.subscribe(Position(from as u64));
                if let Some(stream) = live {
                    let event = event("live");
                    let outcome = store
                        .append(
                            &stream_id(stream),
                            ExpectedVersion::Any,
                            vec![event.clone()],
                        )
                        .await
                        .unwrap();
                    prop_assert_eq!(outcome, model.append(stream, vec![event]));
                }
                let count = model.events.len() - from;
                let mut seen = Vec::with_capacity(count);
                while seen.len() < count {
                    // The events are durable already: a subscription that does not deliver
                    // them within seconds is stuck.
                    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next());
                    match next.await {
                        Ok(Some(Ok(event))) => seen.push(event),
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "subscription from {from} gave {other:?} after {} of {count} events",
                                seen.len()
                            )));
                        }
                    }
                }
                let expected = model
                    .events
                    .iter()
                    .enumerate()
                    .skip(from)
                    .map(|(p, e)| (p as u64, e));
                check_events(&seen, expected)?;
            }
            Op::Restart => {
                store.close().await;
                drop(store);
                store = backend.open(dir.path(), &config).await;
            }
            Op::DropIndexes => {
                store.close().await;
                drop(store);
                std::fs::remove_dir_all(backend.derived(dir.path())).unwrap();
                store = backend.open(dir.path(), &config).await;
                check_all(&store, &model)?;
            }
        }
        check_heads(&store, &model)?;
    }
    check_all(&store, &model)?;
    store.close().await;
    drop(store);
    let store = backend.open(dir.path(), &config).await;
    check_all(&store, &model)?;
    store.close().await;
    if let Backend::JetStream(_) = backend {
        // Another node, opened now, derives the same log from the stream.
        let other = TempDir::new().unwrap();
        let store = backend.open(other.path(), &config).await;
        check_all(&store, &model)?;
        store.close().await;
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 32,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    })]

    #[test]
    fn the_store_behaves_like_a_vec_of_events(
        ops in prop::collection::vec(op(), 1..40),
        segment_bytes in prop::sample::select(vec![512u64, 4096, 1 << 20]),
        preallocate_segments in any::<bool>(),
    ) {
        let config = StoreConfig {
            preallocate_segments,
            ..crate::common::segments_of(segment_bytes)
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops, config, Backend::Embedded))?;
    }
}

/// The same model, the log on a JetStream stream of 3 replicas on a real 3-node cluster
/// (a stream of its own per case), with restarts of the node and losses of its whole copy.
#[test]
fn the_store_on_jetstream_behaves_like_a_vec_of_events() {
    let cluster = NatsCluster::start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = (
        prop::collection::vec(op(), 1..40),
        prop::sample::select(vec![512u64, 1 << 20]),
    );
    let result = runner.run(&cases, |(ops, segment_bytes)| {
        let config = crate::common::segments_of(segment_bytes);
        let backend = Backend::JetStream(replicated(&cluster.urls(), 3));
        runtime.block_on(run(ops, config, backend))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
