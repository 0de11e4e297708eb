//! The lease that keeps a singleton worker (the saga driver, the outbox relay) on exactly
//! one Annals node at a time, through a JetStream key-value bucket.
//!
//! # The bucket
//! One bucket (`annals_leases` unless configured), created if missing with the replicas
//! given, `history: 1`, file storage and **no** `max_age`: expiry is not the server's (its
//! clock is a third machine's, and a bucket-wide TTL would delete a lease under a slow
//! renewal). A key is a role (`saga`, `relay`); its value is the JSON of [`Holder`]:
//! `{holder, http, acquired_at, renewed_at, write_id}`. The times are the holder's wall
//! clock, for people and `annals cluster status` only; no decision reads them. `write_id`
//! is random per write, so no two writes carry the same bytes and a node recognises its
//! own write after an answer was lost.
//!
//! # The protocol
//! - **Acquire** a free key (absent, or deleted on release): `kv.create`, which fails if
//!   the key exists. Success: held at the revision it returns.
//! - **Renew** every TTL/3 (after a failure, every TTL/12): `kv.update` with the held
//!   revision as the expected revision. Success: held at the new revision.
//! - **Take over** a lease nobody renews: a contender reads the key every TTL/12 (at most
//!   250 ms apart, so a released lease moves within a quarter second) and takes over
//!   only after it has seen the *same* revision (and bytes) for longer than the TTL by
//!   its own monotonic clock, with `kv.update` expecting that revision. JetStream
//!   checks expected revisions in the stream's order (through Raft in a cluster), so of
//!   two contenders and a late renewal at most one write succeeds: two nodes can never
//!   both win the same revision.
//! - **Release** on a clean stop, after the work has stopped: `kv.delete` expecting the
//!   held revision. A contender sees the delete marker on its next read and creates the
//!   key at once (well under a second), instead of waiting out a TTL.
//! - **Take back** a lease still holding this node's own last write (after a lost
//!   tenure, e.g. a partition that healed before anyone took over): at once, expecting
//!   that revision. Nobody else wrote since, so nobody else acted, and this node's worker
//!   is stopped between tenures: the expected revision is the whole argument.
//! - **Lose**: a renewal that meets another revision (someone took over), or no
//!   successful renewal for TTL − margin (margin = TTL/4) after the last successful
//!   renewal was *sent*, by the holder's monotonic clock. NATS timeouts, "no responders"
//!   and disconnections count as not renewed; nothing else ends a tenure early.
//!
//! # Why two nodes never act at once (the timing argument)
//! Let the holder send its last successful write at `s` (its clock), the server write it
//! at `w ≥ s`, and a contender first read that revision at `o ≥ w` (the instant its read
//! returned, not when it was sent: a read sent before the write may return it). The
//! holder stops acting at `s + TTL − margin` and drops its worker by
//! `s + TTL − margin/2` at the latest. The contender writes no earlier than `o + TTL`.
//! So between the holder's stop and the contender's first act lie at least `margin/2` +
//! `(o − s)` ≥ 1.5 s with the default TTL of 6 s. This needs only that the two monotonic
//! clocks *run* at about the same rate (they do, to parts per million); it never compares
//! what two machines' clocks *read*. A renewal that was written but whose answer was lost
//! is recognised by its bytes (a conflict on the next renewal, then a read) and the
//! deadline counts from when *it* was sent, which keeps the argument. The client may also
//! send a renewal it buffered during a disconnection after it reconnects, long after the
//! holder stopped: against the expected revision it either conflicts or reads to
//! contenders as a renewal (they wait a TTL more, and the former holder takes it back).
//!
//! # What it does not guarantee
//! The lease fences *acts that check it*: a worker must call [`Tenure::is_held`] right
//! before each act (it reads the monotonic clock against the deadline, so it is right
//! even when the process was paused and the renewing task has not run yet). An act
//! already in flight when the deadline passes (a request sent, a write queued) may land
//! after another node took over; the singletons' writes must therefore be safe to repeat
//! or be guarded by the store's own expected versions. A machine suspend (not a process
//! pause) stops Linux's monotonic clock and is not covered. Node ids must be unique.
//!
//! # Timings (TTL 6 s, the default)
//! Renew every 2 s, retry every 0.5 s after a failed renewal, stop acting 4.5 s after the
//! last successful renewal was sent, drop the worker at 5.25 s. A contender reads every
//! 0.25 s and takes over after 6 s of no change: a holder's death is followed by a new
//! holder after at most TTL + 2 reads after its last renewal, about 6.5 s (the issue asks
//! for 10).

mod error;
mod singleton;
mod tenure;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

pub use error::LeaseError;
pub use tenure::Tenure;

/// The bucket of the leases unless configured otherwise.
pub const DEFAULT_BUCKET: &str = "annals_leases";

/// The time a lease lives without renewal unless configured otherwise: a dead holder's
/// role moves to another node within about 6.5 s (see the module doc).
pub const DEFAULT_TTL: Duration = Duration::from_secs(6);

/// The shortest TTL accepted: below it, one slow JetStream answer loses the lease.
pub const MIN_TTL: Duration = Duration::from_millis(300);

/// What a node needs to campaign for leases.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The key-value bucket of the leases; created if missing.
    pub bucket: String,
    /// The replicas of the bucket when it is created (3 on a 3-server cluster, so a lease
    /// survives one server's loss). An existing bucket keeps its own.
    pub replicas: usize,
    /// How long a lease lives without renewal (see the module doc for what follows).
    pub ttl: Duration,
    /// This node's id, unique among the nodes: two nodes with one id could not tell their
    /// writes apart from each other's.
    pub node_id: String,
    /// This node's HTTP address, written into the leases it holds so other nodes and
    /// `annals cluster status` can name where a singleton runs.
    pub http_address: Option<String>,
}

impl LeaseConfig {
    /// The defaults (`annals_leases`, 1 replica, TTL 6 s) for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            bucket: DEFAULT_BUCKET.to_owned(),
            replicas: 1,
            ttl: DEFAULT_TTL,
            node_id: node_id.into(),
            http_address: None,
        }
    }

    fn validate(&self) -> Result<(), LeaseError> {
        if self.ttl < MIN_TTL {
            return Err(LeaseError::Config(format!(
                "the lease TTL {:?} is shorter than {MIN_TTL:?}; one slow JetStream answer would lose the lease",
                self.ttl
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(LeaseError::Config(format!(
                "the lease bucket's replicas must be 1 to 5 (JetStream's limit), not {}",
                self.replicas
            )));
        }
        if self.node_id.trim().is_empty() {
            return Err(LeaseError::Config(
                "the node id is empty; give each node a unique id".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The value of a lease key: who holds the role, for people and discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's node id.
    pub holder: String,
    /// The holder's HTTP address, if it gave one.
    pub http: Option<String>,
    /// When this node acquired the lease (its wall clock; informative only).
    pub acquired_at: DateTime<Utc>,
    /// When this node last renewed it (its wall clock; informative only: whether a lease
    /// is alive is decided by watching its revision, never by comparing clocks).
    pub renewed_at: DateTime<Utc>,
    /// Random, new with every write: no two writes of a lease have the same bytes.
    pub write_id: u64,
}

/// The derived timings of one TTL (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) ttl: Duration,
    /// The holder stops acting at TTL − margin after its last successful renewal was sent.
    pub(crate) margin: Duration,
    pub(crate) renew_every: Duration,
    /// After a failed renewal.
    pub(crate) retry_every: Duration,
    /// How often a contender reads the key (and its first backoff after an error).
    pub(crate) read_every: Duration,
    /// The longest a contender waits for one answer of the bucket.
    pub(crate) request_timeout: Duration,
}

impl Timing {
    fn of(ttl: Duration) -> Timing {
        Timing {
            ttl,
            margin: ttl / 4,
            renew_every: ttl / 3,
            retry_every: ttl / 12,
            read_every: (ttl / 12).min(Duration::from_millis(250)),
            request_timeout: ttl / 3,
        }
    }
}

/// The handle on the lease bucket of one node: cheap to clone, one per process.
#[derive(Debug, Clone)]
pub struct Leases {
    store: kv::Store,
    config: Arc<LeaseConfig>,
    timing: Timing,
    roles: Roles,
}

impl Leases {
    /// Opens the bucket `config.bucket`, creating it (with `config.replicas`) if missing.
    pub async fn open(js: &jetstream::Context, config: LeaseConfig) -> Result<Leases, LeaseError> {
        config.validate()?;
        let bucket_error = |source: async_nats::Error| LeaseError::Bucket {
            bucket: config.bucket.clone(),
            source,
        };
        let store = match js.get_key_value(config.bucket.as_str()).await {
            Ok(store) => store,
            Err(_missing) => {
                let created = js
                    .create_key_value(kv::Config {
                        bucket: config.bucket.clone(),
                        description: "Annals: which node runs each singleton worker".to_owned(),
                        history: 1,
                        num_replicas: config.replicas,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(store) => store,
                    // Another node may have created it between our look and our create.
                    Err(create_error) => js
                        .get_key_value(config.bucket.as_str())
                        .await
                        .map_err(|_| bucket_error(create_error.into()))?,
                }
            }
        };
        Ok(Leases {
            store,
            timing: Timing::of(config.ttl),
            config: Arc::new(config),
            roles: Roles::default(),
        })
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The roles this node holds now, as a cheap handle for health and discovery.
    pub fn roles(&self) -> Roles {
        self.roles.clone()
    }

    /// Every lease in the bucket and its holder, by role. A lease whose holder died stays
    /// listed until another node takes it over: compare `renewed_at` with the TTL for a
    /// hint, knowing it is another machine's clock.
    pub async fn holders(&self) -> Result<Vec<(String, Holder)>, LeaseError> {
        let unavailable = |operation: &'static str| {
            let bucket = self.config.bucket.clone();
            move |source: async_nats::Error| LeaseError::Unavailable {
                bucket,
                operation,
                source,
            }
        };
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|error| unavailable("list keys")(error.into()))?
            .try_collect()
            .await
            .map_err(|error| unavailable("list keys")(error.into()))?;
        let mut holders = Vec::with_capacity(keys.len());
        for role in keys {
            let entry = self
                .store
                .entry(role.as_str())
                .await
                .map_err(|error| unavailable("read a lease")(error.into()))?;
            let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
                continue;
            };
            let holder = self.parse(&role, &entry.value)?;
            holders.push((role, holder));
        }
        Ok(holders)
    }

    fn parse(&self, role: &str, value: &Bytes) -> Result<Holder, LeaseError> {
        serde_json::from_slice(value).map_err(|source| LeaseError::Malformed {
            bucket: self.config.bucket.clone(),
            role: role.to_owned(),
            source,
        })
    }

    /// The bytes of a write of this node's lease (a new `write_id` each time).
    fn value(&self, acquired_at: DateTime<Utc>) -> Bytes {
        let holder = Holder {
            holder: self.config.node_id.clone(),
            http: self.config.http_address.clone(),
            acquired_at,
            renewed_at: Utc::now(),
            write_id: fastrand::u64(..),
        };
        Bytes::from(serde_json::to_vec(&holder).expect("a Holder serialises"))
    }
}

/// The roles this node holds, shared between the lease tasks and whoever reports health:
/// a cheap clone handle.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    tenures: Arc<Mutex<BTreeMap<String, Tenure>>>,
}

impl Roles {
    /// The roles held at this instant (by the holder's own deadline, so a role whose
    /// renewal is overdue is no longer listed even before its task notices), in order.
    pub fn held(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, tenure)| tenure.is_held())
            .map(|(role, _)| role.clone())
            .collect()
    }

    fn insert(&self, tenure: &Tenure) {
        self.lock().insert(tenure.role().to_owned(), tenure.clone());
    }

    fn remove(&self, role: &str) {
        self.lock().remove(role);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tenure>> {
        self.tenures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
