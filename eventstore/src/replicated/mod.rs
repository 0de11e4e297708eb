//! The log on a replicated NATS JetStream stream: the second backend of [`EventStore`].
//!
//! Opened with [`EventStore::open_replicated`], a store keeps the log in a JetStream
//! stream (replicated by JetStream's Raft, `--store-replicas`, 3 by default) instead of in
//! the data directory; the data directory keeps what each node derives: a copy of the
//! log for reads, the index, read models and checkpoints. Every node that opens the same
//! stream takes appends and serves reads, with the same `EventStore` API as the embedded
//! store.
//!
//! How each guarantee of the embedded store holds here (docs/ARCHITECTURE.md has the
//! argument and the limits):
//! - **One commit, one message.** An append is one JetStream message on the subject
//!   `<prefix>.<stream token>` (`subject`: the stream id encoded safely and reversibly)
//!   holding all its events (`wire`): all-or-nothing because a message is.
//! - **Acknowledged when replicated and synced.** `append` returns after JetStream's
//!   PubAck, which a replicated stream sends once a quorum of servers stored the message
//!   (synced at once with the servers' `sync_interval: always`), and after this node's
//!   copy applied it, so the node reads its own writes.
//! - **Positions and versions.** Every node applies the messages in sequence order
//!   through its own writer (`follower`): positions count the applied events, gap-free,
//!   and versions count each stream's, exactly as on one machine; a message's recorded
//!   time is the time JetStream stored it. Every node derives the same log, down to the
//!   hash chain.
//! - **Expected versions.** An append that expects a version is checked against the
//!   node's copy, caught up to the stream's last message on that subject, and published
//!   with `Nats-Expected-Last-Subject-Sequence` = that message's sequence: if another
//!   node appended in between, JetStream refuses it and the append checks again. The
//!   follower applies each message with the expected version it was published with, so
//!   no copy can admit what another refused.
//! - **Event-id dedup.** `Nats-Msg-Id` (the event id, or a digest of the ids of a
//!   multi-event append) inside JetStream's duplicate window; beyond it the node's copy
//!   answers a re-send with the original outcome before publishing, and a re-send that
//!   still reaches the stream (two nodes at once) is refused identically by every copy.

mod append;
mod follower;
pub mod subject;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::config::StoreConfig;
use crate::error::Error;
use crate::ids::StreamId;
use crate::store::{AppendOutcome, EventStore};

pub(crate) use append::append;

/// Where the replicated log lives. Its `Debug` hides credentials in the URLs.
#[derive(Clone, PartialEq)]
pub struct ReplicatedConfig {
    /// The NATS servers, comma-separated (`nats://h1:4222,nats://h2:4222`); credentials
    /// in a URL are never logged.
    pub urls: String,
    /// The JetStream stream that holds the log (created if missing).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<stream token>`.
    pub subject_prefix: String,
    /// Copies JetStream keeps of every message, when the stream is created.
    pub replicas: usize,
    /// JetStream's duplicate window for `Nats-Msg-Id`, when the stream is created.
    pub duplicate_window: Duration,
    /// The longest an append waits for JetStream's acknowledgement, or for this node's
    /// copy to apply an acknowledged commit.
    pub timeout: Duration,
}

impl std::fmt::Debug for ReplicatedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedConfig")
            .field("urls", &without_credentials(&self.urls))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `urls` with any `user:password@` of each URL shown as `***@`.
pub fn without_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Default for ReplicatedConfig {
    fn default() -> Self {
        ReplicatedConfig {
            urls: "nats://127.0.0.1:4222".into(),
            stream: "ANNALS_LOG".into(),
            subject_prefix: "annals.log".into(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a store on JetStream shares between its appenders and its follower.
pub(crate) struct Link {
    pub(crate) config: ReplicatedConfig,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: jetstream::stream::Stream,
    /// The largest message the servers take (`max_payload`): the largest commit.
    pub(crate) max_payload: usize,
    /// The last JetStream sequence this node's copy has applied or refused.
    pub(crate) applied: watch::Sender<u64>,
    /// What applying each recent sequence gave, for the appender waiting on it.
    pub(crate) outcomes: Mutex<BTreeMap<u64, Result<AppendOutcome, Error>>>,
    /// The last sequence known on each stream's subject (a bounded cache).
    pub(crate) subjects: Mutex<HashMap<StreamId, u64>>,
    /// Why the follower stopped, if it did.
    pub(crate) failure: watch::Sender<Option<String>>,
    /// Stops the follower (the store closes).
    pub(crate) stop: tokio_util::sync::CancellationToken,
    /// The follower's tasks, awaited by [`Link::stop`].
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("stream", &self.config.stream)
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

/// Outcomes kept for appenders that have not collected theirs yet (commits of other
/// nodes are never collected): the oldest go first.
const OUTCOMES_KEPT: usize = 65_536;
/// Streams whose last subject sequence is cached.
const SUBJECTS_KEPT: usize = 262_144;

impl Link {
    fn subject(&self, stream: &StreamId) -> String {
        format!("{}.{}", self.config.subject_prefix, subject::encode(stream))
    }

    pub(crate) fn record(&self, sequence: u64, outcome: Result<AppendOutcome, Error>) {
        let mut outcomes = self.outcomes.lock().expect("not poisoned");
        outcomes.insert(sequence, outcome);
        while outcomes.len() > OUTCOMES_KEPT {
            outcomes.pop_first();
        }
    }

    pub(crate) fn saw(&self, stream: StreamId, sequence: u64) {
        let mut subjects = self.subjects.lock().expect("not poisoned");
        if subjects.len() >= SUBJECTS_KEPT && !subjects.contains_key(&stream) {
            subjects.clear();
        }
        let known = subjects.entry(stream).or_insert(sequence);
        *known = (*known).max(sequence);
    }

    fn forget(&self, stream: &StreamId) {
        self.subjects.lock().expect("not poisoned").remove(stream);
    }

    /// Waits until this node's copy has applied (or refused) `sequence`.
    async fn applied_through(&self, sequence: u64) -> Result<(), Error> {
        let mut applied = self.applied.subscribe();
        let mut failure = self.failure.subscribe();
        let waited = tokio::time::timeout(self.config.timeout, async {
            tokio::select! {
                reached = applied.wait_for(|applied| *applied >= sequence) => {
                    reached.map(|_| ()).map_err(|_| "the follower stopped".to_owned())
                }
                failed = failure.wait_for(Option::is_some) => Err(failed
                    .map_or_else(|_| "the follower stopped".to_owned(), |why| why.clone().unwrap_or_default())),
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Error::cluster("this node's copy of the log", why)),
            Err(_) => Err(Error::cluster(
                "this node's copy of the log",
                format!(
                    "it did not reach sequence {sequence} within {:?} (the node is behind)",
                    self.config.timeout
                ),
            )),
        }
    }
}

impl EventStore {
    /// Opens a store whose log is the JetStream stream `replicated.stream` (created if
    /// missing, with `replicated.replicas` copies), keeping this node's copy of it, the
    /// index and read models in `dir`. Returns once the copy has caught up with the
    /// stream as it was at the call. `dir` must hold a copy of this same stream, or no log
    /// at all.
    pub async fn open_replicated(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        replicated: ReplicatedConfig,
    ) -> Result<EventStore, Error> {
        let dir = dir.as_ref().to_path_buf();
        let store = tokio::task::spawn_blocking(move || EventStore::open(dir, config))
            .await
            .map_err(|error| Error::cluster("opening the node's copy", error.to_string()))??;
        match Self::link(&store, replicated).await {
            Ok(()) => Ok(store),
            Err(error) => {
                store.close().await;
                Err(error)
            }
        }
    }

    async fn link(store: &EventStore, replicated: ReplicatedConfig) -> Result<(), Error> {
        let client = connect(&replicated.urls).await?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client);
        // A cluster that lost a server moments ago may still be electing leaders: its
        // requests time out for a few seconds.
        let deadline = tokio::time::Instant::now() + replicated.timeout;
        let (stream, last) = loop {
            match ensure_stream(&js, &replicated).await {
                Ok(found) => break found,
                Err(error @ Error::Cluster { what: FOREIGN, .. }) => return Err(error),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%error, "the log's stream is not available yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let link = Arc::new(Link {
            config: replicated,
            js,
            stream,
            max_payload,
            applied: watch::Sender::new(0),
            outcomes: Mutex::new(BTreeMap::new()),
            subjects: Mutex::new(HashMap::new()),
            failure: watch::Sender::new(None),
            stop: tokio_util::sync::CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        store
            .shared
            .replica
            .set(link.clone())
            .map_err(|_| Error::cluster("linking the store", "it is linked already"))?;
        follower::start(store, &link, last).await?;
        link.applied_through_unbounded(last).await
    }

    /// For a store on JetStream: waits until this node's copy holds the last commit
    /// JetStream has on `stream` now (one request to the stream's leader), and returns
    /// `true`; on one machine `false` at once (the copy is the log). A command refused on
    /// the state it read calls this before it answers (`Repository::execute`): an append
    /// is guarded by its expected version, a refusal by nothing else.
    pub async fn catch_up_stream(&self, stream: &StreamId) -> Result<bool, Error> {
        let Some(link) = self.shared.replica.get() else {
            return Ok(false);
        };
        let last = append::last_sequence(link, &link.subject(stream)).await?;
        link.applied_through(last).await?;
        link.saw(stream.clone(), last);
        Ok(true)
    }

    /// The JetStream sequence this node's copy has applied, for a store on JetStream.
    pub fn replicated_sequence(&self) -> Option<u64> {
        self.shared.replica.get().map(|link| *link.applied.borrow())
    }
}

impl Link {
    /// Stops the follower and waits for it: before the store's writer closes, so that a
    /// follower never takes the closing writer for a failed one.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// [`Link::applied_through`] without the timeout: the catch-up at open, however long.
    async fn applied_through_unbounded(&self, sequence: u64) -> Result<(), Error> {
        let mut applied = self.applied.subscribe();
        let mut failure = self.failure.subscribe();
        tokio::select! {
            reached = applied.wait_for(|applied| *applied >= sequence) => {
                reached.map(|_| ()).map_err(|_| Error::cluster("catching up", "the follower stopped"))
            }
            failed = failure.wait_for(Option::is_some) => Err(Error::cluster(
                "catching up",
                failed.map_or_else(|_| "the follower stopped".to_owned(), |why| why.clone().unwrap_or_default()),
            )),
        }
    }
}

/// What this node's copy holds under the ids of `events`, in order (`None` for an id it
/// does not hold), read on the store's blocking pool.
async fn stored(
    store: &EventStore,
    events: &[crate::envelope::NewEvent],
) -> Result<Vec<Option<crate::envelope::RecordedEvent>>, Error> {
    let ids: Vec<_> = events.iter().map(|event| event.id).collect();
    store
        .blocking(move |store| ids.iter().map(|id| store.read_event(id)).collect())
        .await
}

/// Connects to the comma-separated `urls`; the client reconnects by itself afterwards.
async fn connect(urls: &str) -> Result<async_nats::Client, Error> {
    let mut addresses = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
        let address: async_nats::ServerAddr = url.parse().map_err(|_| {
            Error::cluster(
                "the NATS URLs",
                "one is not a NATS URL (nats://host:port, comma-separated)".to_owned(),
            )
        })?;
        addresses.push(address);
    }
    if addresses.is_empty() {
        return Err(Error::cluster("the NATS URLs", "none given".to_owned()));
    }
    async_nats::ConnectOptions::new()
        .name("annals-store")
        .connect(addresses)
        .await
        .map_err(|error| {
            Error::cluster(
                "connecting to NATS",
                format!("{error}; check that the servers run and are reachable"),
            )
        })
}

/// The log's stream, created if missing: file storage, the given replicas, no limits
/// (nothing is ever discarded), deletes and purges denied (so sequences never vanish),
/// direct gets allowed (the last message of a subject, read from any replica).
/// What a stream of another kind under the log's name is refused as (not retried).
const FOREIGN: &str = "the log's stream";

/// The stream and its last sequence now.
async fn ensure_stream(
    js: &jetstream::Context,
    replicated: &ReplicatedConfig,
) -> Result<(jetstream::stream::Stream, u64), Error> {
    let subjects = format!("{}.>", replicated.subject_prefix);
    let config = jetstream::stream::Config {
        name: replicated.stream.clone(),
        description: Some("The Annals event log: one message per commit".into()),
        subjects: vec![subjects.clone()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicated.replicas,
        duplicate_window: replicated.duplicate_window,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(config).await.map_err(|error| {
        Error::cluster(
            "creating the log's stream",
            format!("{error}; check that JetStream is enabled and has a leader"),
        )
    })?;
    let info = stream
        .info()
        .await
        .map_err(|error| Error::cluster("reading the log's stream", error.to_string()))?;
    if info.config.subjects != [subjects.clone()] {
        return Err(Error::cluster(
            FOREIGN,
            format!(
                "stream {} exists with subjects {:?}, not [{subjects}]: choose another --store-stream",
                replicated.stream, info.config.subjects
            ),
        ));
    }
    let last = info.state.last_sequence;
    Ok((stream, last))
}
