//! Aggregates and the repository that runs commands against them.
//!
//! An aggregate is pure: [`Aggregate::decide`] turns (state, command) into events or a
//! domain error, [`Aggregate::evolve`] folds one event into the state. The
//! [`Repository`] does the IO around them: load (snapshot plus newer events), decide,
//! append with `Exact(version)`, and on a version conflict reload and decide again, a
//! bounded number of times. Event ids are derived from the command id, so a command sent
//! twice is recognised by the store and has one effect.
//!
//! A repository is also the per-stream command queue: [`Repository::execute`] waits for
//! its stream's entry in the repository's [`KeyedLocks`] before it loads, so commands on
//! one aggregate through one repository (and its clones) run one after another instead
//! of spending their conflict retries on each other. Writers that share a repository
//! share the queue without taking any lock themselves; conflict retries are left for
//! writers outside it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent};
use crate::error::Error;
use crate::ids::{EventId, ExpectedVersion, StreamId, Version};
use crate::locks::KeyedLocks;
use crate::store::{AppendOutcome, Direction, EventStore};

/// How often a command refused on a node's copy of a stream on JetStream decides again
/// after the copy caught up (another node kept writing meanwhile: past this, it answers).
const STALE_CHECKS: usize = 4;

/// A consistency boundary: state folded from its own stream's events.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// What callers ask of it.
    type Command: Send + Sync;
    /// What it records. Encoded with postcard: keep every past shape decodable.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stream category: the aggregate with id `42` lives in `<CATEGORY>-42`.
    const CATEGORY: &'static str;
    /// The schema version of the encoded events; bump it when their shape changes, and
    /// teach [`Aggregate::decode_event`] the old one.
    const EVENT_SCHEMA_VERSION: u32 = 1;
    /// The schema version of the encoded state in snapshots; bump it when the state's
    /// shape changes (old snapshots are then ignored, not misread).
    const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

    /// Decides what happens: the events to record, or why not.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn evolve(self, event: &Self::Event) -> Self;

    /// The event's type name, e.g. `OrderPlaced`.
    fn event_type(event: &Self::Event) -> &'static str;

    /// The identity of a command that may take effect at most once in the aggregate's
    /// life, whoever sends it and however often (a charge for an order, say). `Some(key)`
    /// makes the command's id, and so its events' ids, derive from the stream and `key`
    /// instead of the caller's command id: the store's durable id index then records it
    /// at most once, and a second such command gets the first one's outcome. The state
    /// need not remember it. `None` (the default): the caller's command id decides.
    fn once_key(command: &Self::Command) -> Option<String> {
        let _ = command;
        None
    }

    /// Decodes a stored event of any schema version this code knows.
    fn decode_event(schema_version: u32, payload: &[u8]) -> Result<Self::Event, Error> {
        let _ = schema_version;
        postcard::from_bytes(payload).map_err(|source| Error::Codec {
            what: "aggregate event",
            source,
        })
    }
}

/// An event as the JSON a consumer sees: the fields of its enum variant as an object
/// (`{"total":360}`), without the variant's name around them (the envelope's type names
/// it already); a variant without fields is `{}`. `None` if the event does not serialize
/// to JSON (a map with non-string keys, say).
///
/// Events are enums so that postcard can store them (a varint tag, then the fields);
/// serde's default JSON form of an enum wraps the fields in the variant's name
/// (`{"OrderConfirmed":{"total":360}}`), which repeats the type and which no consumer
/// wants.
pub fn event_json<E: Serialize>(event: &E) -> Option<serde_json::Value> {
    match serde_json::to_value(event).ok()? {
        serde_json::Value::Object(map) if map.len() == 1 => map.into_iter().next().map(|(_, v)| v),
        // A unit variant serializes as its name.
        serde_json::Value::String(_) => Some(serde_json::Value::Object(serde_json::Map::new())),
        other => Some(other),
    }
}

/// An aggregate's state and the version of the last event folded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The last version folded in; `None` for a stream with no events.
    pub version: Option<Version>,
}

/// How one command is to be run.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// The command's id, from which its event ids derive. A retry must reuse it.
    pub command_id: Uuid,
    /// Run only if the aggregate is at this version (HTTP `If-Match`); no retry then.
    pub expected_version: Option<Version>,
    /// Correlation, causation, trace and identity (principal, issuer, action, on behalf
    /// of) for the events.
    pub metadata: Metadata,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Committed<A> {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The append; `duplicate` is set if this command had already been recorded.
    pub outcome: AppendOutcome,
    /// The state after the command.
    pub state: A,
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The aggregate refused it: a domain rule (over HTTP a 422).
    #[error(transparent)]
    Rejected(E),
    /// The decision produced no events: nothing to record.
    #[error("the command changed nothing")]
    NoChange,
    /// The aggregate was not at the expected version (over HTTP a 412 with `If-Match`,
    /// else a 409 after the retries ran out).
    #[error(transparent)]
    Store(#[from] Error),
}

/// Loads aggregates and runs commands on them.
#[derive(Debug, Clone)]
pub struct Repository<A> {
    store: EventStore,
    /// Recently decided states, if enabled ([`Repository::with_cache`]).
    cache: Option<Arc<StateCache<A>>>,
    /// A snapshot is saved each time a stream crosses a multiple of this many events.
    snapshot_every: u64,
    /// How many times a command is decided again after a version conflict.
    max_conflict_retries: u32,
    /// The per-stream command queue, shared by every clone of this repository.
    queue: Arc<KeyedLocks>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store` that snapshots every 100 events and retries a
    /// conflicting command up to 8 times.
    pub fn new(store: EventStore) -> Self {
        Repository {
            store,
            cache: None,
            snapshot_every: 100,
            max_conflict_retries: 8,
            queue: Arc::default(),
            _aggregate: PhantomData,
        }
    }

    /// The same repository with another snapshot interval (0: never).
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// The same repository, keeping the state of up to `streams` recently commanded
    /// aggregates in memory. A cached state is used only while the stream's head is
    /// still its version (checked before every decision), and the append that follows
    /// expects that version: a stale entry can cost a retry, never a wrong decision.
    /// Commands with an expected version (`If-Match`) always load.
    pub fn with_cache(mut self, streams: usize) -> Self {
        self.cache = Some(Arc::new(StateCache {
            states: Mutex::new(HashMap::new()),
            capacity: streams.max(1),
        }));
        self
    }

    /// The same repository with another retry bound.
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// The store this repository reads and writes.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The stream of the aggregate `id`.
    pub fn stream_id(id: &str) -> Result<StreamId, Error> {
        StreamId::for_entity(A::CATEGORY, id)
    }

    /// Loads the aggregate `id`: its latest snapshot, then every newer event.
    pub fn load(&self, id: &str) -> Result<Loaded<A>, Error> {
        self.load_stream(&Self::stream_id(id)?)
    }

    /// [`Repository::load`] for async code: on the worker if the stream's events are in
    /// the page cache, else on the store's bounded blocking pool
    /// ([`EventStore::read_cached_or_blocking`]): the worker never waits for the disk.
    pub async fn load_async(&self, id: &str) -> Result<Loaded<A>, Error> {
        let stream = Self::stream_id(id)?;
        self.load_stream_async(stream).await
    }

    async fn load_stream_async(&self, stream: StreamId) -> Result<Loaded<A>, Error> {
        let repository = self.clone();
        self.store
            .read_cached_or_blocking(move |_| repository.load_stream(&stream))
            .await
    }

    fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        let (mut state, mut version) = match self.store.load_snapshot(stream)? {
            Some((version, bytes)) => match decode_snapshot::<A>(&bytes) {
                Some(state) => (state, Some(version)),
                None => (A::default(), None),
            },
            None => (A::default(), None),
        };
        loop {
            let from = version.map_or(Version(0), Version::next);
            let events = self
                .store
                .read_stream(stream, from, Direction::Forward, 4096)?;
            if events.is_empty() {
                return Ok(Loaded { state, version });
            }
            for event in &events {
                state = state.evolve(&A::decode_event(event.schema_version, &event.payload)?);
                version = Some(event.version);
            }
        }
    }

    /// Runs `command` on the aggregate `id`: waits for its turn in the stream's queue,
    /// then loads, decides and appends. On a version conflict (with a writer outside
    /// this repository; without `expected_version`) it reloads and decides again, and
    /// records the number of such retries as `retries` on the current span (the
    /// caller's command span declares it; a span without the field ignores it).
    ///
    /// It never waits for the disk or the indexer on the async worker that awaits it. Its
    /// reads (the load, the check a refused command makes for an earlier run of itself,
    /// which needs the index to cover the log) run on the worker only if they need not
    /// wait, else on the store's bounded blocking pool
    /// ([`EventStore::read_cached_or_blocking`]); a snapshot write always runs on the
    /// pool ([`EventStore::blocking`]). The decision is pure and quick; a cached state is
    /// checked against the stream's head (in memory, or one point read of sled's heads
    /// tree).
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        options: &CommandOptions,
    ) -> Result<Committed<A>, ExecuteError<A::Error>> {
        let stream = Self::stream_id(id)?;
        // The id the events derive from: the command's own, or one the aggregate names.
        let command_id = match A::once_key(command) {
            Some(key) => once_command_id(&stream, &key),
            None => options.command_id,
        };
        let _queued = self.queue.lock(stream.as_str()).await;
        let mut attempt = 0;
        let mut stale_checks = 0;
        // A command sent again (same command id) must get its first outcome, not a
        // refusal from the state it already changed. Checking for that up front would
        // cost an index lookup per command, so it is checked only where a retry shows:
        // a refusal, a version mismatch, or an append whose ids are partly stored. A
        // retry that decides the same events is recognised by the store itself.
        loop {
            let cached = match options.expected_version {
                None => self.cached(&stream)?,
                Some(_) => None,
            };
            let loaded = match cached {
                Some(loaded) => loaded,
                None => self.load_stream_async(stream.clone()).await?,
            };
            // A refusal below is decided on this node's state of the stream; with the log
            // on JetStream another node may have moved it since: decide again once the
            // copy caught up (an append is guarded by its expected version instead).
            if let Some(expected) = options.expected_version
                && loaded.version != Some(expected)
            {
                if stale_checks < STALE_CHECKS && self.moved_since(&stream, loaded.version).await? {
                    stale_checks += 1;
                    continue;
                }
                let conflict = Error::VersionConflict {
                    stream: stream.clone(),
                    expected: format!("version {expected}"),
                    actual: loaded.version,
                };
                return self
                    .original_or(&stream, command_id, ExecuteError::Store(conflict))
                    .await;
            }
            let events = match loaded.state.decide(command) {
                Ok(events) if events.is_empty() => {
                    if stale_checks < STALE_CHECKS
                        && self.moved_since(&stream, loaded.version).await?
                    {
                        stale_checks += 1;
                        continue;
                    }
                    return self
                        .original_or(&stream, command_id, ExecuteError::NoChange)
                        .await;
                }
                Ok(events) => events,
                Err(rejection) => {
                    if stale_checks < STALE_CHECKS
                        && self.moved_since(&stream, loaded.version).await?
                    {
                        stale_checks += 1;
                        continue;
                    }
                    return self
                        .original_or(&stream, command_id, ExecuteError::Rejected(rejection))
                        .await;
                }
            };
            let mut metadata = options.metadata.clone();
            metadata.command_id = Some(options.command_id);
            let mut new_events = Vec::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                let payload = postcard::to_allocvec(event).map_err(|source| Error::Codec {
                    what: "aggregate event",
                    source,
                })?;
                new_events.push(NewEvent {
                    id: EventId::derived(command_id, i as u32),
                    event_type: A::event_type(event).to_owned(),
                    schema_version: A::EVENT_SCHEMA_VERSION,
                    metadata: metadata.clone(),
                    payload,
                });
            }
            let expected = match loaded.version {
                Some(version) => ExpectedVersion::Exact(version),
                None => ExpectedVersion::NoStream,
            };
            match self.store.append(&stream, expected, new_events).await {
                Ok(outcome) if outcome.duplicate => {
                    let state = self.load_stream_async(stream.clone()).await?.state;
                    return Ok(Committed {
                        stream,
                        outcome,
                        state,
                    });
                }
                Ok(outcome) => {
                    let state = events
                        .iter()
                        .fold(loaded.state, |state, event| state.evolve(event));
                    self.maybe_snapshot(&stream, &state, loaded.version, outcome.last_version)
                        .await;
                    if let Some(cache) = &self.cache {
                        cache.put(&stream, &state, outcome.last_version);
                    }
                    return Ok(Committed {
                        stream,
                        outcome,
                        state,
                    });
                }
                Err(error)
                    if error.is_conflict()
                        && options.expected_version.is_none()
                        && attempt < self.max_conflict_retries =>
                {
                    attempt += 1;
                    // The caller's command span counts them, if it has the field.
                    tracing::Span::current().record("retries", attempt);
                    tokio::task::yield_now().await;
                }
                Err(error @ Error::IdempotencyMismatch { .. }) => {
                    return self.original_or(&stream, command_id, error.into()).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The cached state of `stream`, if caching is on and the stream has not moved
    /// since.
    /// Whether `stream` is past `version` on the log, which this node's copy may not have
    /// shown yet: always false on one machine; with the log on JetStream, true when the
    /// copy, caught up with the stream's last commit, holds a later head.
    async fn moved_since(
        &self,
        stream: &StreamId,
        version: Option<Version>,
    ) -> Result<bool, Error> {
        if !self.store.catch_up_stream(stream).await? {
            return Ok(false);
        }
        Ok(self.store.stream_head(stream)? != version)
    }

    fn cached(&self, stream: &StreamId) -> Result<Option<Loaded<A>>, Error> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let Some(cached) = cache.get(stream) else {
            return Ok(None);
        };
        if self.store.stream_head(stream)? == cached.version {
            Ok(Some(cached))
        } else {
            Ok(None)
        }
    }

    /// The first outcome of this command if it was recorded before, else `failure`.
    /// Looking it up needs the index to cover the log: while it lags (a write burst),
    /// the lookup waits on the blocking pool.
    async fn original_or(
        &self,
        stream: &StreamId,
        command_id: Uuid,
        failure: ExecuteError<A::Error>,
    ) -> Result<Committed<A>, ExecuteError<A::Error>> {
        let (repository, stream) = (self.clone(), stream.clone());
        let original = self
            .store
            .read_cached_or_blocking(move |_| repository.already_recorded(&stream, command_id))
            .await?;
        match original {
            Some(original) => Ok(original),
            None => Err(failure),
        }
    }

    /// If this command's first event is already stored, what it committed.
    fn already_recorded(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> Result<Option<Committed<A>>, Error> {
        let first_id = EventId::derived(command_id, 0);
        // Most refused commands never ran before, which the writer's filter proves at
        // once; only a possible earlier run needs the index (and so waits for it).
        if !self.store.may_hold_event(&first_id) {
            return Ok(None);
        }
        let Some(first) = self.store.read_event(&first_id)? else {
            return Ok(None);
        };
        if &first.stream_id != stream {
            return Err(Error::IdempotencyMismatch { id: command_id });
        }
        // The command's events are the ones whose ids derive from it, in order.
        let events = self
            .store
            .read_stream(stream, first.version, Direction::Forward, 4096)?;
        let last = events
            .iter()
            .enumerate()
            .take_while(|(i, event)| event.id == EventId::derived(command_id, *i as u32))
            .last()
            .map_or(&first, |(_, event)| event);
        let loaded = self.load_stream(stream)?;
        Ok(Some(Committed {
            stream: stream.clone(),
            outcome: AppendOutcome {
                first_position: first.position,
                last_position: last.position,
                first_version: first.version,
                last_version: last.version,
                duplicate: true,
            },
            state: loaded.state,
        }))
    }

    /// Saves a snapshot of `state` if the append crossed a multiple of
    /// `snapshot_every`, on the blocking pool. A snapshot that cannot be saved is
    /// logged: it is derived data, and the next one will do.
    async fn maybe_snapshot(
        &self,
        stream: &StreamId,
        state: &A,
        before: Option<Version>,
        after: Version,
    ) {
        if self.snapshot_every == 0 {
            return;
        }
        let crossed = before.map_or(0, |v| (v.0 + 1) / self.snapshot_every)
            != (after.0 + 1) / self.snapshot_every;
        if !crossed {
            return;
        }
        let bytes = A::SNAPSHOT_SCHEMA_VERSION.to_be_bytes().to_vec();
        let bytes = match postcard::to_extend(state, bytes) {
            Ok(encoded) => encoded,
            Err(error) => {
                tracing::warn!(%error, %stream, "snapshot not saved: the state does not encode");
                return;
            }
        };
        let snapshot_stream = stream.clone();
        let saved = self
            .store
            .blocking(move |store| store.save_snapshot(&snapshot_stream, after, &bytes))
            .await;
        if let Err(error) = saved {
            tracing::warn!(%error, %stream, "snapshot not saved");
        }
    }
}

/// The command id of the command `key` on `stream` ([`Aggregate::once_key`]): the same
/// for every sender, and for no other stream or key.
fn once_command_id(stream: &StreamId, key: &str) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("annals command id from stream and key v1");
    hasher.update(&(stream.as_str().len() as u64).to_le_bytes());
    hasher.update(stream.as_str().as_bytes());
    hasher.update(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Uuid::from_bytes(bytes)
}

fn decode_snapshot<A: Aggregate>(bytes: &[u8]) -> Option<A> {
    let (schema, state) = bytes.split_at_checked(4)?;
    if u32::from_be_bytes(schema.try_into().ok()?) != A::SNAPSHOT_SCHEMA_VERSION {
        return None;
    }
    postcard::from_bytes(state).ok()
}

/// States of recently commanded aggregates, by stream.
#[derive(Debug)]
struct StateCache<A> {
    states: Mutex<HashMap<StreamId, Loaded<A>>>,
    capacity: usize,
}

impl<A: Clone> StateCache<A> {
    fn get(&self, stream: &StreamId) -> Option<Loaded<A>> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.get(stream).cloned()
    }

    fn put(&self, stream: &StreamId, state: &A, version: Version) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.len() >= self.capacity && !states.contains_key(stream) {
            // Full: make room by dropping some entry (a miss only costs a load).
            if let Some(victim) = states.keys().next().cloned() {
                states.remove(&victim);
            }
        }
        states.insert(
            stream.clone(),
            Loaded {
                state: state.clone(),
                version: Some(version),
            },
        );
    }
}
