//! The relay: tails the durable log from where the JetStream copy ends and publishes every
//! event, in order, exactly once.
//!
//! One **session** is: connect (or reuse the connection), check JetStream and the stream,
//! read the stream's last message, resume after it (never before the checkpoint), then
//! publish from a store subscription with up to `max_acks_in_flight` acknowledgements
//! outstanding. Every publish carries `Nats-Expected-Last-Sequence` = the sequence of the
//! message before it, so the stream accepts the events only in log order and without a
//! gap: a lost publish makes the ones after it fail instead of landing out of order. Any
//! failure ends the session; the relay backs off (or the breaker opens) and the next
//! session finds out from the stream itself what got there. Acknowledgements are taken in
//! order, and the checkpoint moves over acknowledged events only.
//!
//! The relay resumes right after the stream's last message, **never leaving a gap**: if
//! that is below the checkpoint (NATS lost acknowledged messages on power loss, or they
//! were deleted at the end), it republishes the missing range from the log and logs it at
//! warn. Every message carries its record's chain hash (`Annals-Prev-Hash`,
//! `Annals-Hash`), continued from the stream's last message (checked against its event)
//! or, when that message has none (an older release) or the stream is empty, computed
//! from the log.
//!
//! Each message is a CloudEvent ([`message::encode`]): its body is the payload as JSON
//! when [`RelayConfig::json_payloads`] knows the event and the message then fits the
//! server's `max_payload` (read at each session's connect), with the exact bytes in
//! `Annals-Payload`; otherwise the payload bytes.
//!
//! Each event is published in a `relay publish` span (`publish <subject>`, a producer),
//! whose parent is the trace context the event stores, so it joins the trace of the
//! command that wrote it; the span lasts until JetStream acknowledges the message. When
//! the span has a trace context (an OpenTelemetry layer is installed), the message's
//! `traceparent` header names the span and `Annals-Traceparent` keeps the stored context
//! ([`message::carry_publish_trace`]); otherwise the message is as before.
//!
//! Each publish passes the `relay.publish` fault point ([`RelayConfig::chaos`], inert
//! without `--chaos`): an injected `error` fails the publish as a NATS error does (the
//! session ends; backoff, the breaker and the degraded status follow), a `delay` waits
//! before it, a `panic` panics in the relay's task (its supervisor restarts it, and it
//! resumes after the stream's last message), and a `lost_ack` publishes the message, waits
//! for it to be stored, then reports its acknowledgement lost: the session ends, and the
//! next one resumes after the stream's last message (which is that one), so nothing is
//! published twice.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use async_nats::Client;
use async_nats::connection::State;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use chaos::{Effect, Injected, Point};
use eventstore::{ChainHash, EventStore, Position, RecordedEvent};
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::{Breaker, BreakerState};
use crate::config::RelayConfig;
use crate::error::Error;
use crate::message::{self, Chain};
use crate::nats::{self, CopyEnd};
use crate::status::{RelayState, RelayStatus, StatusHandle};

/// The outbox relay. Build it with [`Relay::new`], hand out [`Relay::status`] handles,
/// then [`Relay::run`] it until shutdown. A clone shares the status: a server's
/// supervisor runs a clone again after a failure, and it resumes from the checkpoint
/// saved in the store.
#[derive(Debug, Clone)]
pub struct Relay {
    store: EventStore,
    config: RelayConfig,
    status: watch::Sender<RelayStatus>,
    checkpoint: Position,
}

/// What [`Relay::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// The stream's last sequence (0: it never held a message).
    pub last_sequence: u64,
    /// The position in the stream's last message, if it holds any.
    pub copy_last_position: Option<Position>,
    /// The saved checkpoint.
    pub checkpoint: Position,
    /// Where the relay would resume.
    pub resume_at: Position,
    /// The next position the log will write.
    pub log_head: Position,
}

impl Relay {
    /// A relay for `store` with `config` (checked here; no IO beyond reading the
    /// checkpoint).
    pub fn new(store: EventStore, config: RelayConfig) -> Result<Relay, Error> {
        config.validate()?;
        let checkpoint = store
            .load_checkpoint(&config.checkpoint_name)?
            .unwrap_or_default();
        let (status, _) = watch::channel(RelayStatus::new(config.stream.clone(), checkpoint));
        Ok(Relay {
            store,
            config,
            status,
            checkpoint,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// A handle to read the status while the relay runs (and after it stopped).
    pub fn status(&self) -> StatusHandle {
        StatusHandle {
            receiver: self.status.subscribe(),
            store: self.store.clone(),
        }
    }

    /// Connects once, checks JetStream, creates or checks the stream and finds where the
    /// copy ends, returning the first problem as a typed error. For a server that wants
    /// to fail fast at start; [`Relay::run`] itself retries such problems.
    pub async fn check(&self) -> Result<CheckReport, Error> {
        let config = &self.config;
        let client = nats::connect(
            &config.nats_url,
            &config.tls,
            config.connect_timeout,
            config.request_timeout,
        )
        .await?;
        let jetstream = nats::context(client, config.request_timeout, config.max_acks_in_flight);
        nats::check_jetstream(&jetstream, &config.nats_url).await?;
        let mut stream = nats::ensure_stream(&jetstream, config).await?;
        let end = nats::copy_end(&mut stream).await?;
        check_copy_continues_log(&self.store, &end)?;
        Ok(CheckReport {
            last_sequence: end.last_sequence,
            copy_last_position: end.last_event.as_ref().map(|event| event.position),
            checkpoint: self.checkpoint,
            resume_at: nats::resume_position(end.last_event.as_ref().map(|event| event.position)),
            log_head: self.store.next_position(),
        })
    }

    /// Publishes until `shutdown` is cancelled, then waits up to `shutdown_grace` for the
    /// acknowledgements already due and saves the checkpoint. NATS failures never end it
    /// (they are retried; see [`Error`]); it returns an error only if the store fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let config = &self.config;
        // Read again: a relay run again after a failure resumes where the last run saved.
        let checkpoint = self
            .store
            .load_checkpoint(&config.checkpoint_name)?
            .unwrap_or(self.checkpoint);
        let mut worker = Worker {
            store: &self.store,
            config,
            status: &self.status,
            breaker: Breaker::new(
                config.breaker_failure_threshold,
                config.breaker_cool_down,
                config.backoff_min,
                config.backoff_max,
            ),
            client: None,
            acked: checkpoint,
            acked_hash: None,
            saved: checkpoint,
            last_save: Instant::now(),
        };
        let result = worker.run(&shutdown).await;
        worker.save_checkpoint();
        let connected = worker.connected();
        self.status.send_modify(|status| {
            status.state = RelayState::Stopped;
            status.connected = connected;
        });
        // Every publish is acknowledged or abandoned by now: dropping the client closes
        // the connection with nothing left to flush.
        drop(worker.client.take());
        result
    }
}

/// Checks that the copy continues this log: its last event is the log's event at that
/// position, exactly, and its chain hash (if it carries one) is that event's.
fn check_copy_continues_log(store: &EventStore, end: &CopyEnd) -> Result<(), Error> {
    let Some(copied) = &end.last_event else {
        return Ok(());
    };
    if let Some(chain) = &end.last_chain
        && !chain.holds_for(copied)
    {
        return Err(Error::CopyDiverged {
            position: copied.position,
            reason: format!(
                "the copy's last message (sequence {}) carries an Annals-Hash that is not its event's",
                end.last_sequence
            ),
        });
    }
    let position = copied.position;
    let head = store.next_position();
    if position >= head {
        return Err(Error::CopyDiverged {
            position,
            reason: format!(
                "the copy holds position {position} but the log ends before it (next position {head})"
            ),
        });
    }
    let local = store.read_all(position, 1)?.pop();
    match local {
        Some(local) if local == *copied => Ok(()),
        Some(local) => Err(Error::CopyDiverged {
            position,
            reason: if local.id != copied.id {
                format!(
                    "the copy has event {} there, the log has {}",
                    copied.id, local.id
                )
            } else {
                "the event there differs between the copy and the log".into()
            },
        }),
        None => Err(Error::CopyDiverged {
            position,
            reason: "the log has no event there".into(),
        }),
    }
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// A publish sent and not yet acknowledged.
struct InFlight {
    position: Position,
    sequence: u64,
    hash: ChainHash,
    ack: PublishAckFuture,
    /// The publish span, closed with the acknowledgement.
    span: tracing::Span,
}

/// The oldest publish, whose acknowledgement is being awaited.
struct Awaited {
    position: Position,
    sequence: u64,
    hash: ChainHash,
    ack: AckFuture,
    span: tracing::Span,
}

impl From<InFlight> for Awaited {
    fn from(in_flight: InFlight) -> Self {
        Awaited {
            position: in_flight.position,
            sequence: in_flight.sequence,
            hash: in_flight.hash,
            ack: in_flight.ack.into_future(),
            span: in_flight.span,
        }
    }
}

/// The relay's mutable state across sessions.
struct Worker<'a> {
    store: &'a EventStore,
    config: &'a RelayConfig,
    status: &'a watch::Sender<RelayStatus>,
    breaker: Breaker,
    client: Option<Client>,
    /// The next position to publish: JetStream acknowledged every event before it.
    acked: Position,
    /// The chain hash of the record before `acked`, once known: saves walking the log
    /// when the copy's last message carries no hash.
    acked_hash: Option<ChainHash>,
    /// The checkpoint last saved.
    saved: Position,
    last_save: Instant,
}

impl Worker<'_> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if let Some(until) = self.breaker.wait_until(Instant::now()) {
                self.report_breaker(RelayState::Retrying);
                tokio::select! {
                    () = tokio::time::sleep_until(until) => continue,
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            self.report_breaker(RelayState::Connecting);
            let error = match self.session(shutdown).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_store() => return Err(error),
                Err(error) => error,
            };
            let delay = self.breaker.failure(Instant::now());
            tracing::warn!(
                %error,
                failures = self.breaker.consecutive_failures(),
                breaker = ?self.breaker.state(),
                retry_in = ?delay,
                "outbox relay: NATS failure; the backlog waits in the log"
            );
            let (connected, failures, breaker) = (
                self.connected(),
                self.breaker.consecutive_failures(),
                self.breaker.state(),
            );
            self.status.send_modify(|status| {
                status.state = RelayState::Retrying;
                status.connected = connected;
                status.breaker = breaker;
                status.consecutive_failures = failures;
                status.last_error = Some(error.to_string());
                status.last_error_at = Some(chrono::Utc::now());
            });
            self.save_checkpoint();
            if breaker == BreakerState::Closed {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }

    fn connected(&self) -> bool {
        self.client
            .as_ref()
            .is_some_and(|client| client.connection_state() == State::Connected)
    }

    fn report_breaker(&self, state: RelayState) {
        let (connected, breaker, failures) = (
            self.connected(),
            self.breaker.state(),
            self.breaker.consecutive_failures(),
        );
        self.status.send_modify(|status| {
            status.state = state;
            status.connected = connected;
            status.breaker = breaker;
            status.consecutive_failures = failures;
        });
    }

    fn succeeded(&mut self) {
        if self.breaker.state() != BreakerState::Closed || self.breaker.consecutive_failures() > 0 {
            self.breaker.success();
            self.report_breaker(RelayState::Publishing);
        }
    }

    /// Saves the acknowledged position as the checkpoint if it moved. A failed save is
    /// logged, not fatal: the checkpoint is a fallback, the stream says where to resume.
    fn save_checkpoint(&mut self) {
        self.last_save = Instant::now();
        if self.acked == self.saved {
            return;
        }
        match self
            .store
            .save_checkpoint(&self.config.checkpoint_name, self.acked)
        {
            Ok(()) => self.saved = self.acked,
            Err(error) => tracing::warn!(%error, "outbox relay: cannot save its checkpoint"),
        }
    }

    async fn client(&mut self) -> Result<Client, Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let config = self.config;
        let (min, max) = (config.backoff_min, config.backoff_max);
        let client = nats::connect_with(
            &config.nats_url,
            &config.tls,
            config.connect_timeout,
            config.request_timeout,
            move |attempt| {
                // The client's own reconnect loop after an outage: the relay's backoff
                // bounds, capped at a second so a returning NATS is found quickly.
                let exponent = attempt.min(16) as u32;
                min.saturating_mul(1 << exponent)
                    .min(max)
                    .min(std::time::Duration::from_secs(1))
            },
        )
        .await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// One session: resynchronise with the stream, then publish until an error or
    /// shutdown (`Ok`).
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let config = self.config;
        let client = self.client().await?;
        // The server's limit on a message, headers included: the JSON form of an event
        // is sent only when it fits.
        let max_message_bytes = client.server_info().max_payload;
        let jetstream = nats::context(client, config.ack_timeout, config.max_acks_in_flight);
        nats::check_jetstream(&jetstream, &config.nats_url).await?;
        let mut stream = nats::ensure_stream(&jetstream, config).await?;
        let end = nats::copy_end(&mut stream).await?;
        check_copy_continues_log(self.store, &end)?;
        let copy_last = end.last_event.as_ref().map(|event| event.position);
        let resume = nats::resume_position(copy_last);
        if resume < self.acked {
            if end.last_sequence == 0 {
                tracing::info!(stream = %config.stream, "outbox relay: the stream is new; publishing the whole log into it");
            } else {
                tracing::warn!(
                    stream = %config.stream,
                    copy_ends_at = ?copy_last,
                    checkpoint = %self.acked,
                    missing = self.acked.0 - resume.0,
                    "outbox relay: the JetStream copy ends before the checkpoint (NATS lost acknowledged messages, or they were deleted); republishing the missing events from the log"
                );
            }
        }
        let mut prev_hash = self.hash_before(resume, &end).await?;
        self.acked = resume;
        let connected = self.connected();
        let acked = self.acked;
        self.status.send_modify(|status| {
            status.state = RelayState::Publishing;
            status.connected = connected;
            status.checkpoint = acked;
        });
        if resume >= self.store.next_position() {
            // Nothing to publish and NATS answered: that is a success too.
            self.succeeded();
        }
        tracing::debug!(%resume, last_sequence = end.last_sequence, "outbox relay: publishing");

        let mut subscription = self.store.subscribe(resume);
        let mut expected_sequence = end.last_sequence;
        let mut queue: VecDeque<InFlight> = VecDeque::with_capacity(config.max_acks_in_flight);
        let mut awaited: Option<Awaited> = None;
        let mut ticker = tokio::time::interval(config.status_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            if awaited.is_none()
                && let Some(next) = queue.pop_front()
            {
                awaited = Some(Awaited::from(next));
            }
            let in_flight = queue.len() + usize::from(awaited.is_some());
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    self.drain(awaited, queue).await;
                    return Ok(());
                }
                ack = async { (&mut awaited.as_mut().expect("guarded").ack).await }, if awaited.is_some() => {
                    let done = awaited.take().expect("guarded");
                    self.acknowledged(done.position, done.sequence, done.hash, &done.span, ack)?;
                    // Take the acknowledgements that are already in, without a round
                    // through the select for each.
                    while let Some(next) = queue.pop_front() {
                        let mut next = Awaited::from(next);
                        match (&mut next.ack).now_or_never() {
                            Some(ack) => self.acknowledged(next.position, next.sequence, next.hash, &next.span, ack)?,
                            None => {
                                awaited = Some(next);
                                break;
                            }
                        }
                    }
                }
                event = subscription.next(), if in_flight < config.max_acks_in_flight => {
                    let mut event = Some(event);
                    let mut in_flight = in_flight;
                    // Send what the subscription holds already, up to the bound.
                    while let Some(next) = event.take() {
                        let next = match next {
                            Some(Ok(next)) => next,
                            Some(Err(error)) => return Err(Error::Store(error)),
                            None if shutdown.is_cancelled() => {
                                self.drain(awaited, queue).await;
                                return Ok(());
                            }
                            None => return Err(Error::StoreClosed),
                        };
                        let position = next.position;
                        let chain = Chain::after(prev_hash, &next)?;
                        let (ack, span) = publish(&jetstream, config, next, &chain, expected_sequence, max_message_bytes).await?;
                        prev_hash = chain.hash;
                        expected_sequence += 1;
                        queue.push_back(InFlight { position, sequence: expected_sequence, hash: chain.hash, ack, span });
                        in_flight += 1;
                        if in_flight < config.max_acks_in_flight {
                            event = subscription.next().now_or_never();
                        }
                    }
                }
                _ = ticker.tick() => {
                    if self.last_save.elapsed() >= config.checkpoint_interval {
                        self.save_checkpoint();
                    }
                    let connected = self.connected();
                    self.status.send_if_modified(|status| {
                        let changed = status.connected != connected;
                        status.connected = connected;
                        changed
                    });
                }
            }
        }
    }

    /// The chain hash of the record before `resume`: the hash of the copy's last message
    /// when it carries one (checked against its event already), the one remembered from
    /// the last acknowledgement, or else computed from the log (a copy made by a release
    /// before the chain headers; once per process).
    async fn hash_before(&mut self, resume: Position, end: &CopyEnd) -> Result<ChainHash, Error> {
        if resume == Position(0) {
            return Ok(ChainHash::GENESIS);
        }
        if let (Some(chain), Some(event)) = (&end.last_chain, &end.last_event)
            && event.position.next() == resume
        {
            return Ok(chain.hash);
        }
        if let Some(hash) = self.acked_hash
            && self.acked == resume
        {
            return Ok(hash);
        }
        tracing::info!(
            %resume,
            "outbox relay: the copy's last message carries no chain hash (published by an older release); computing the chain from the log"
        );
        let store = self.store.clone();
        let hash = tokio::task::spawn_blocking(move || chain_hash_before(&store, resume))
            .await
            .map_err(|error| Error::nats("chain hash task", error))??;
        self.acked_hash = Some(hash);
        Ok(hash)
    }

    /// Takes one acknowledgement, in order.
    fn acknowledged(
        &mut self,
        position: Position,
        sequence: u64,
        hash: ChainHash,
        span: &tracing::Span,
        ack: Result<PublishAck, PublishError>,
    ) -> Result<(), Error> {
        if ack.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        let ack = ack.map_err(|error| match error.kind() {
            PublishErrorKind::WrongLastSequence => Error::nats(
                "publish",
                format!("the stream did not end where the relay expected (at sequence {}): another publisher, or a lost publish; resynchronising", sequence - 1),
            ),
            PublishErrorKind::StreamNotFound => Error::nats("publish", "no stream takes the subject (NATS restarting, or the stream was deleted)"),
            _ => Error::nats("publish acknowledgement", error),
        })?;
        if ack.duplicate {
            // The relay publishes only what the stream does not hold, so the stream's
            // duplicate window remembers an event id whose message is gone (lost or
            // deleted within the window). Retried until the window has passed.
            return Err(Error::nats(
                "publish",
                format!(
                    "the stream took position {position} as a duplicate of message {}, which it no longer holds; retrying after its duplicate window",
                    ack.sequence
                ),
            ));
        }
        if ack.sequence != sequence {
            return Err(Error::nats(
                "publish",
                format!(
                    "position {position} was stored at sequence {}, expected {sequence}; resynchronising",
                    ack.sequence
                ),
            ));
        }
        self.acked = position.next();
        self.acked_hash = Some(hash);
        self.succeeded();
        let acked = self.acked;
        self.status.send_modify(|status| {
            status.checkpoint = acked;
            status.published += 1;
        });
        Ok(())
    }

    /// On shutdown: waits (at most `shutdown_grace`) for the acknowledgements of what was
    /// sent, so that the checkpoint covers it.
    async fn drain(&mut self, awaited: Option<Awaited>, queue: VecDeque<InFlight>) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        let pending = awaited
            .into_iter()
            .map(|awaited| {
                (
                    awaited.position,
                    awaited.sequence,
                    awaited.hash,
                    awaited.ack,
                    awaited.span,
                )
            })
            .chain(queue.into_iter().map(|next| {
                (
                    next.position,
                    next.sequence,
                    next.hash,
                    next.ack.into_future(),
                    next.span,
                )
            }));
        for (position, sequence, hash, ack, span) in pending {
            match tokio::time::timeout_at(deadline, ack).await {
                Ok(ack) => {
                    if self
                        .acknowledged(position, sequence, hash, &span, ack)
                        .is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// The chain hash of the log's record before `position`, walking the log from its start.
pub(crate) fn chain_hash_before(
    store: &EventStore,
    position: Position,
) -> Result<ChainHash, Error> {
    const BATCH: usize = 4096;
    let mut hash = ChainHash::GENESIS;
    let mut next = Position(0);
    while next < position {
        let limit = BATCH.min((position.0 - next.0) as usize);
        let events = store.read_all(next, limit)?;
        if events.is_empty() {
            return Err(Error::CopyDiverged {
                position: next,
                reason: format!("the log ends before position {position}"),
            });
        }
        for event in &events {
            hash = ChainHash::of_record(&hash, event)?;
        }
        next = Position(next.0 + events.len() as u64);
    }
    Ok(hash)
}

/// Sends one event with its place in the chain, in its publish span; returns the future
/// of its acknowledgement and the span, which the acknowledgement closes.
async fn publish(
    jetstream: &async_nats::jetstream::Context,
    config: &RelayConfig,
    event: RecordedEvent,
    chain: &Chain,
    expected_last_sequence: u64,
    max_message_bytes: usize,
) -> Result<(PublishAckFuture, tracing::Span), Error> {
    let position = event.position;
    let fault = config.chaos.check(Point::RelayPublish);
    match fault {
        Some(Effect::Error) => return Err(Error::nats("publish", Injected(Point::RelayPublish))),
        Some(Effect::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Effect::Panic) => Effect::panic_at(Point::RelayPublish),
        _ => {}
    }
    let subject = message::subject(&config.subject_prefix, &event);
    let span = publish_span(&subject, &event);
    let publish_trace = (!span.is_disabled())
        .then(|| trace_context::of(&span))
        .flatten();
    let json = config.json_payloads.json_of(&event);
    let (mut headers, body) = message::encode(&event, chain, json, max_message_bytes);
    message::carry_publish_trace(&mut headers, &event, publish_trace.as_deref());
    let size = body.len() + message::header_bytes(&headers);
    let publish = PublishMessage::build()
        .headers(headers)
        .payload(body)
        .expected_last_sequence(expected_last_sequence);
    let ack = jetstream
        .send_publish(subject, publish)
        .instrument(span.clone())
        .await
        .map_err(|error| {
            span.record("otel.status_code", "ERROR");
            match error.kind() {
                PublishErrorKind::MaxPayloadExceeded => Error::MessageTooLarge { position, size },
                _ => Error::nats("publish", error),
            }
        })?;
    if fault == Some(Effect::LostAck) {
        // Sent, and stored once its acknowledgement is in; the relay hears it was lost.
        let stored = ack.into_future().await.is_ok();
        return Err(Error::nats(
            "publish acknowledgement",
            format!(
                "chaos: a fault injected at {} lost the acknowledgement of position {position} \
                 (stored: {stored}); resynchronising",
                Point::RelayPublish
            ),
        ));
    }
    Ok((ack, span))
}

/// The span of publishing `event` to `subject`: a producer in the trace the event stores
/// (a trace of its own when it stores none). Its fields are only computed when a
/// subscriber wants the span.
fn publish_span(subject: &str, event: &RecordedEvent) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "relay publish",
        otel.name = %format_args!("publish {subject}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        position = event.position.0,
        stream = %event.stream_id,
        event_type = %event.event_type,
        subject,
    );
    if !span.is_disabled() {
        trace_context::follow(&span, event.metadata.traceparent.as_deref());
    }
    span
}
