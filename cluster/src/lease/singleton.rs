//! `Leases::run_singleton`: campaign for a role, run the worker while the lease is held
//! (renewing beside it), stop the worker the moment the lease is lost, release it on
//! shutdown. The protocol and its timing argument are in the parent module's doc.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{LeaseError, Leases, Tenure};

/// How many of its own writes a campaign remembers to recognise them after an answer was
/// lost (a few attempts happen between two successful ones).
const REMEMBERED_WRITES: usize = 16;

/// Why a tenure ended.
#[derive(Debug)]
enum Stop {
    Lost(&'static str),
    Shutdown,
    WorkReturned,
}

/// A lease just won: the revision written and when that write was sent.
#[derive(Debug)]
struct Won {
    revision: u64,
    bytes: Bytes,
    sent_at: Instant,
    acquired_at: DateTime<Utc>,
}

/// A write of the lease key that did not succeed.
#[derive(Debug)]
enum WriteError {
    /// The key was not at the expected revision (or existed, for a create): another write
    /// came first.
    Conflict,
    /// No answer in time, no responders, a disconnection: unknown whether it was written.
    Failed(async_nats::Error),
}

impl Leases {
    /// Runs `work` only while this node holds `role`'s lease, until `shutdown` is
    /// cancelled.
    ///
    /// Campaigns; on winning, calls `work(tenure)` and polls the future it returns
    /// beside the renewals (no spawn: `work` needs neither `Send` nor `'static`). When the
    /// lease is lost (a conflict, or no renewal within TTL − margin) or `shutdown` is
    /// cancelled, the tenure's token is cancelled at once; the work then has until
    /// `min(now, deadline) + margin/2` to return before its future is dropped, so it never
    /// outlives the lease even if it ignores the token. Then it campaigns again, or, on
    /// shutdown, deletes the lease (expecting its revision) so a successor takes over at
    /// once, and returns. If `work` returns by itself, the lease is released and the node
    /// campaigns again after TTL/3.
    ///
    /// NATS outages are retried (reads every TTL/12 or 250 ms, backing off to the TTL after
    /// errors);
    /// the only error is a `role` that cannot be a key. Run one per role per node.
    pub async fn run_singleton<F, Fut>(
        &self,
        role: &str,
        shutdown: CancellationToken,
        mut work: F,
    ) -> Result<(), LeaseError>
    where
        F: FnMut(Tenure) -> Fut,
        Fut: Future<Output = ()>,
    {
        if !is_valid_key(role) {
            return Err(LeaseError::InvalidRole(role.to_owned()));
        }
        let mut campaign = Campaign {
            leases: self,
            role,
            observed: None,
            own_writes: Vec::new(),
            backoff: self.timing.read_every,
        };
        loop {
            let won = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    campaign.abandon().await;
                    return Ok(());
                }
                won = campaign.win() => won,
            };
            let (stop, written) = self.hold(role, won, &shutdown, &mut work).await;
            campaign.remember(written);
            match stop {
                Stop::Shutdown => return Ok(()),
                Stop::Lost(_) => {}
                Stop::WorkReturned => {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(self.timing.renew_every) => {}
                    }
                }
            }
        }
    }

    /// One tenure: runs the work beside the renewals until the lease is lost, the node
    /// shuts down or the work returns; then stops the work and, unless lost, releases.
    /// Returns why it ended and the writes that may be the key's latest: the last one
    /// known to have succeeded and those whose fate is unknown.
    async fn hold<F, Fut>(
        &self,
        role: &str,
        won: Won,
        shutdown: &CancellationToken,
        work: &mut F,
    ) -> (Stop, Vec<Bytes>)
    where
        F: FnMut(Tenure) -> Fut,
        Fut: Future<Output = ()>,
    {
        let timing = self.timing;
        let tenure = Tenure::new(role, won.sent_at + timing.ttl - timing.margin);
        self.roles.insert(&tenure);
        tracing::info!(role, node = %self.config.node_id, revision = won.revision, "lease acquired: the singleton starts");
        let mut keeper = Keeper {
            leases: self,
            role,
            tenure: tenure.clone(),
            revision: won.revision,
            acquired_at: won.acquired_at,
            last_sent: won.sent_at,
            last_bytes: won.bytes,
            unconfirmed: Vec::new(),
        };
        let mut work_future = Box::pin(work(tenure.clone()));
        let stop = {
            let keep = keeper.keep();
            tokio::pin!(keep);
            tokio::select! {
                biased;
                reason = &mut keep => Stop::Lost(reason),
                () = shutdown.cancelled() => Stop::Shutdown,
                () = &mut work_future => Stop::WorkReturned,
            }
        };
        tenure.end();
        if !matches!(stop, Stop::WorkReturned) {
            let drop_at = tenure.deadline().min(Instant::now()) + timing.margin / 2;
            if tokio::time::timeout_at(drop_at.into(), &mut work_future)
                .await
                .is_err()
            {
                tracing::warn!(
                    role,
                    "the singleton did not stop within its lease after its token was cancelled: its future is dropped"
                );
            }
        }
        drop(work_future);
        self.roles.remove(role);
        match &stop {
            Stop::Lost(reason) => {
                tracing::warn!(role, node = %self.config.node_id, reason, "lease lost: the singleton stopped");
            }
            Stop::Shutdown | Stop::WorkReturned => keeper.release().await,
        }
        let mut written: Vec<Bytes> = keeper
            .unconfirmed
            .into_iter()
            .map(|(bytes, _)| bytes)
            .collect();
        written.push(keeper.last_bytes);
        (stop, written)
    }
}

/// A node's campaign for one role, kept across tenures.
struct Campaign<'a> {
    leases: &'a Leases,
    role: &'a str,
    /// Another node's lease as first seen: its revision and bytes, and when our read of
    /// it returned (never earlier than its write).
    observed: Option<(u64, Bytes, Instant)>,
    /// This node's recent writes: a key holding one of them was last written by this
    /// node, whose work is stopped between tenures, so it may take it back at once.
    own_writes: Vec<Bytes>,
    backoff: Duration,
}

impl Campaign<'_> {
    /// Campaigns until the lease is won.
    async fn win(&mut self) -> Won {
        let timing = self.leases.timing;
        loop {
            match self.step().await {
                Ok(Some(won)) => {
                    self.backoff = timing.read_every;
                    self.observed = None;
                    self.own_writes.clear();
                    return won;
                }
                Ok(None) => {
                    self.backoff = timing.read_every;
                    tokio::time::sleep(timing.read_every).await;
                }
                Err(error) => {
                    tracing::warn!(role = self.role, %error, retry_in = ?self.backoff, "cannot campaign for the lease: NATS did not answer");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(timing.ttl);
                }
            }
        }
    }

    /// One read of the key and, if the lease is free, expired or ours, one write.
    async fn step(&mut self) -> Result<Option<Won>, async_nats::Error> {
        let timing = self.leases.timing;
        let store = &self.leases.store;
        let entry = tokio::time::timeout(timing.request_timeout, store.entry(self.role))
            .await
            .map_err(|_| no_answer(timing.request_timeout))??;
        let seen_at = Instant::now();
        let expected = match entry {
            None => None,
            Some(entry) if entry.operation != kv::Operation::Put => None,
            Some(entry) if self.own_writes.contains(&entry.value) => Some(entry.revision),
            Some(entry) => match &self.observed {
                Some((revision, value, first_seen))
                    if *revision == entry.revision && *value == entry.value =>
                {
                    if seen_at.duration_since(*first_seen) <= timing.ttl {
                        return Ok(None);
                    }
                    tracing::info!(
                        role = self.role,
                        revision,
                        "the lease was not renewed for a TTL: taking it over"
                    );
                    Some(entry.revision)
                }
                _ => {
                    self.observed = Some((entry.revision, entry.value, seen_at));
                    return Ok(None);
                }
            },
        };
        let acquired_at = Utc::now();
        let bytes = self.leases.value(acquired_at);
        self.remember(vec![bytes.clone()]);
        let sent_at = Instant::now();
        match write(
            self.leases,
            self.role,
            bytes.clone(),
            expected,
            timing.request_timeout,
        )
        .await
        {
            Ok(revision) => Ok(Some(Won {
                revision,
                bytes,
                sent_at,
                acquired_at,
            })),
            Err(WriteError::Conflict) => Ok(None),
            Err(WriteError::Failed(error)) => Err(error),
        }
    }

    fn remember(&mut self, writes: Vec<Bytes>) {
        self.own_writes.extend(writes);
        let excess = self.own_writes.len().saturating_sub(REMEMBERED_WRITES);
        self.own_writes.drain(..excess);
    }

    /// On shutdown: a create or take-over whose answer never came may have been written;
    /// if the key holds it, delete it so a successor need not wait out the TTL.
    async fn abandon(&mut self) {
        if self.own_writes.is_empty() {
            return;
        }
        let timing = self.leases.timing;
        let store = &self.leases.store;
        if let Ok(Ok(Some(entry))) =
            tokio::time::timeout(timing.request_timeout, store.entry(self.role)).await
            && entry.operation == kv::Operation::Put
            && self.own_writes.contains(&entry.value)
        {
            let _ = tokio::time::timeout(
                timing.request_timeout,
                store.delete_expect_revision(self.role, Some(entry.revision)),
            )
            .await;
        }
    }
}

/// The renewals of one tenure.
struct Keeper<'a> {
    leases: &'a Leases,
    role: &'a str,
    tenure: Tenure,
    /// The revision of the last write known to have succeeded.
    revision: u64,
    acquired_at: DateTime<Utc>,
    /// When that write was sent: the deadline counts from here.
    last_sent: Instant,
    /// Its bytes: if the tenure is lost while the key still holds them, nobody else
    /// wrote since, and the next campaign may take the lease back at once.
    last_bytes: Bytes,
    /// Renewals sent since, whose answer was lost or a conflict: one may have been
    /// written. With when each was sent.
    unconfirmed: Vec<(Bytes, Instant)>,
}

/// The outcome of one renewal.
enum Renewal {
    Renewed,
    Failed,
    Conflict,
}

impl Keeper<'_> {
    /// Renews until the lease is lost; returns why. Never returns while the lease holds.
    async fn keep(&mut self) -> &'static str {
        let timing = self.leases.timing;
        let mut next = self.last_sent + timing.renew_every;
        loop {
            let deadline = self.tenure.deadline();
            tokio::time::sleep_until(next.min(deadline).into()).await;
            if Instant::now() >= deadline {
                return "not renewed within TTL - margin (NATS unreachable or too slow)";
            }
            match self.renew(deadline).await {
                Renewal::Renewed => next = self.last_sent + timing.renew_every,
                Renewal::Failed => next = Instant::now() + timing.retry_every,
                Renewal::Conflict => return "another write of the lease came first",
            }
        }
    }

    async fn renew(&mut self, deadline: Instant) -> Renewal {
        let bytes = self.leases.value(self.acquired_at);
        let sent_at = Instant::now();
        self.unconfirmed.push((bytes.clone(), sent_at));
        let budget = deadline.saturating_duration_since(sent_at);
        match write(
            self.leases,
            self.role,
            bytes.clone(),
            Some(self.revision),
            budget,
        )
        .await
        {
            Ok(revision) => {
                self.confirm(revision, bytes, sent_at);
                Renewal::Renewed
            }
            Err(WriteError::Conflict) => self.recognise(deadline).await,
            Err(WriteError::Failed(error)) => {
                tracing::debug!(role = self.role, %error, "a lease renewal failed; retrying");
                Renewal::Failed
            }
        }
    }

    /// After a conflict: if the key holds one of our unconfirmed renewals (its answer was
    /// lost), we still hold the lease from when that one was sent; else another node
    /// wrote and the lease is lost.
    async fn recognise(&mut self, deadline: Instant) -> Renewal {
        let budget = deadline.saturating_duration_since(Instant::now());
        let entry = match tokio::time::timeout(budget, self.leases.store.entry(self.role)).await {
            Ok(Ok(entry)) => entry,
            _ => return Renewal::Failed,
        };
        let ours = entry.as_ref().and_then(|entry| {
            self.unconfirmed
                .iter()
                .find(|(bytes, _)| entry.operation == kv::Operation::Put && *bytes == entry.value)
                .map(|(bytes, sent_at)| (entry.revision, bytes.clone(), *sent_at))
        });
        match ours {
            Some((revision, bytes, sent_at)) => {
                self.confirm(revision, bytes, sent_at);
                Renewal::Renewed
            }
            None => Renewal::Conflict,
        }
    }

    fn confirm(&mut self, revision: u64, bytes: Bytes, sent_at: Instant) {
        let timing = self.leases.timing;
        self.revision = revision;
        self.last_sent = sent_at;
        self.last_bytes = bytes;
        self.unconfirmed.clear();
        self.tenure.extend_to(sent_at + timing.ttl - timing.margin);
    }

    /// Deletes the lease, expecting our revision, so a successor takes over at once. If
    /// this fails, the successor waits out the TTL: slower, never unsafe.
    async fn release(&mut self) {
        let timing = self.leases.timing;
        let store = &self.leases.store;
        let role = self.role;
        let delete = |revision| {
            tokio::time::timeout(
                timing.request_timeout,
                store.delete_expect_revision(role, Some(revision)),
            )
        };
        let mut result = delete(self.revision).await;
        if let Ok(Err(error)) = &result
            && error.kind() == kv::UpdateErrorKind::WrongLastRevision
            && let Renewal::Renewed = self
                .recognise(Instant::now() + timing.request_timeout)
                .await
        {
            result = delete(self.revision).await;
        }
        match result {
            Ok(Ok(())) => {
                tracing::info!(role = self.role, node = %self.leases.config.node_id, "lease released");
            }
            Ok(Err(error)) => {
                tracing::warn!(role = self.role, %error, "the lease could not be released: a successor takes over after the TTL");
            }
            Err(_) => {
                tracing::warn!(
                    role = self.role,
                    "the lease release got no answer: a successor takes over after the TTL"
                );
            }
        }
    }
}

/// Writes `bytes` to `role`: a create if `expected` is `None` (also over a delete
/// marker), else an update expecting that revision; within `budget`.
async fn write(
    leases: &Leases,
    role: &str,
    bytes: Bytes,
    expected: Option<u64>,
    budget: Duration,
) -> Result<u64, WriteError> {
    let store = &leases.store;
    let answer = match expected {
        None => tokio::time::timeout(budget, store.create(role, bytes))
            .await
            .map(|created| {
                created.map_err(|error| match error.kind() {
                    kv::CreateErrorKind::AlreadyExists => WriteError::Conflict,
                    _ => WriteError::Failed(error.into()),
                })
            }),
        Some(revision) => tokio::time::timeout(budget, store.update(role, bytes, revision))
            .await
            .map(|updated| {
                updated.map_err(|error| match error.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => WriteError::Conflict,
                    _ => WriteError::Failed(error.into()),
                })
            }),
    };
    answer.unwrap_or_else(|_| Err(WriteError::Failed(no_answer(budget))))
}

fn no_answer(waited: Duration) -> async_nats::Error {
    format!("no answer within {waited:?}").into()
}

/// What JetStream accepts as a key (async-nats keeps its own check private).
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-/_=.".contains(&byte))
}
