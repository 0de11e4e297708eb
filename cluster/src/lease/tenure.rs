//! `Tenure`: one node's holding of one role, from acquisition until it is lost or
//! released, as the worker sees it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// What a singleton worker gets while its node holds the role: a token cancelled the
/// moment the lease is lost (or the node shuts down), and the holder's deadline.
///
/// A worker checks [`is_held`](Self::is_held) right before each act and stops when it
/// is false; it may `select!` on [`lost`](Self::lost) to stop waiting. A clone is the
/// same tenure.
#[derive(Debug, Clone)]
pub struct Tenure {
    role: Arc<str>,
    token: CancellationToken,
    /// The holder's own monotonic deadline: last successful renewal sent + TTL − margin.
    deadline: Arc<Mutex<Instant>>,
}

impl Tenure {
    pub(crate) fn new(role: &str, deadline: Instant) -> Tenure {
        Tenure {
            role: Arc::from(role),
            token: CancellationToken::new(),
            deadline: Arc::new(Mutex::new(deadline)),
        }
    }

    /// The role held.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// True while the lease is held: not cancelled, and the deadline not passed by this
    /// process's monotonic clock. The clock check makes it right even if the process was
    /// paused and the task that renews (and cancels) has not run since.
    pub fn is_held(&self) -> bool {
        !self.token.is_cancelled() && Instant::now() < self.deadline()
    }

    /// Resolves when the lease is lost, released or the node shuts down.
    pub async fn lost(&self) {
        self.token.cancelled().await;
    }

    /// The token cancelled when the tenure ends, to hand to code that takes one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The instant (this process's monotonic clock) after which this node must not act
    /// unless renewed.
    pub fn deadline(&self) -> Instant {
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn extend_to(&self, deadline: Instant) {
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = deadline;
    }

    pub(crate) fn end(&self) {
        self.token.cancel();
    }
}
