//! What the relay reports while it runs ([`RelayStatus`], read through a
//! [`StatusHandle`]), and what can be read from a data directory while it does not
//! ([`offline_status`]).

use chrono::{DateTime, Utc};
use eventstore::{EventStore, Position};
use serde::Serialize;
use tokio::sync::watch;

use crate::breaker::BreakerState;
use crate::error::Error;

/// What the relay is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Created, `run` not started yet.
    Starting,
    /// Connecting to NATS and checking the stream.
    Connecting,
    /// Connected and publishing (or waiting for new events).
    Publishing,
    /// Waiting before the next attempt after a failure (see `breaker`).
    Retrying,
    /// `run` has returned.
    Stopped,
}

/// A snapshot of the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayStatus {
    /// What the relay is doing.
    pub state: RelayState,
    /// Whether the NATS connection is up right now.
    pub connected: bool,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// The next position to publish: JetStream has acknowledged every event before it.
    pub checkpoint: Position,
    /// The next position the log will write (every position before it is durable).
    pub log_head: Position,
    /// Events durable in the log and not yet acknowledged by JetStream.
    pub backlog: u64,
    /// Events acknowledged since the relay started.
    pub published: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure, as one line; kept after recovery so an operator can see what
    /// happened (`last_error_at` says when).
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The JetStream stream.
    pub stream: String,
}

impl RelayStatus {
    pub(crate) fn new(stream: String, checkpoint: Position) -> Self {
        RelayStatus {
            state: RelayState::Starting,
            connected: false,
            breaker: BreakerState::Closed,
            checkpoint,
            log_head: checkpoint,
            backlog: 0,
            published: 0,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            stream,
        }
    }

    /// How a readiness probe should see the relay: healthy only while it is connected,
    /// publishing and its breaker is closed. A degraded relay does not make the server
    /// unready: the log keeps accepting writes and the backlog waits in it.
    pub fn health(&self) -> Health {
        let reason = match (self.state, self.connected, self.breaker) {
            (RelayState::Stopped, _, _) => return Health::Stopped,
            (_, _, BreakerState::Open) => Some("the circuit breaker is open: NATS keeps failing"),
            (_, _, BreakerState::HalfOpen) => Some("trying NATS again after failures"),
            (RelayState::Retrying, _, _) => Some("retrying after a NATS failure"),
            (_, false, _) => Some("not connected to NATS"),
            (RelayState::Starting | RelayState::Connecting, _, _) => Some("connecting to NATS"),
            (RelayState::Publishing, true, BreakerState::Closed) => None,
        };
        match reason {
            None => Health::Healthy,
            Some(reason) => Health::Degraded {
                reason: reason.to_owned(),
            },
        }
    }
}

/// The relay's health, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    /// Connected and publishing.
    Healthy,
    /// Running but not publishing; the backlog waits in the log.
    Degraded {
        /// Why, in a few words.
        reason: String,
    },
    /// The relay has stopped.
    Stopped,
}

/// A cheap, cloneable view of a running relay's status.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    pub(crate) receiver: watch::Receiver<RelayStatus>,
    pub(crate) store: EventStore,
}

impl StatusHandle {
    /// The status now, with the log head and backlog read from the store at this moment.
    pub fn current(&self) -> RelayStatus {
        let mut status = self.receiver.borrow().clone();
        status.log_head = self.store.next_position();
        status.backlog = status.log_head.0.saturating_sub(status.checkpoint.0);
        status
    }

    /// The relay's health now (see [`RelayStatus::health`]).
    pub fn health(&self) -> Health {
        self.receiver.borrow().health()
    }

    /// Waits until the relay reports a change (every acknowledgement is one); an error
    /// once the relay is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.receiver.changed().await
    }

    /// Waits until `condition` holds for the status, or the relay is gone.
    pub async fn wait_for(
        &mut self,
        mut condition: impl FnMut(&RelayStatus) -> bool,
    ) -> Result<RelayStatus, watch::error::RecvError> {
        loop {
            let status = self.current();
            if condition(&status) {
                return Ok(status);
            }
            self.receiver.changed().await?;
        }
    }
}

/// What a data directory says about its relay while none runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineStatus {
    /// The saved checkpoint (the next position to publish), if the relay ever saved one.
    pub checkpoint: Option<Position>,
    /// The next position the log will write.
    pub log_head: Position,
    /// Events after the checkpoint. The relay may have published some of them after its
    /// last checkpoint save; it finds out from the stream when it starts.
    pub backlog: u64,
}

/// Reads the relay checkpoint `checkpoint_name` and the log head of `store`.
pub fn offline_status(store: &EventStore, checkpoint_name: &str) -> Result<OfflineStatus, Error> {
    let checkpoint = store.load_checkpoint(checkpoint_name)?;
    let log_head = store.next_position();
    Ok(OfflineStatus {
        checkpoint,
        log_head,
        backlog: log_head.0.saturating_sub(checkpoint.unwrap_or_default().0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_degraded_until_connected_publishing_and_closed() {
        let mut status = RelayStatus::new("S".into(), Position(0));
        assert!(matches!(status.health(), Health::Degraded { .. }));
        status.state = RelayState::Publishing;
        status.connected = true;
        assert_eq!(status.health(), Health::Healthy);
        status.breaker = BreakerState::Open;
        assert!(matches!(status.health(), Health::Degraded { .. }));
        status.breaker = BreakerState::Closed;
        status.connected = false;
        assert!(matches!(status.health(), Health::Degraded { .. }));
        status.state = RelayState::Stopped;
        assert_eq!(status.health(), Health::Stopped);
    }
}
