//! Card payments through external payment service providers (PSPs).
//!
//! A customer with a card on file pays for an order by card: the fulfilment saga's
//! charge step asks a [`Chain`] of providers, configured in order (`annals serve
//! --psp-url URL`, repeated). Each provider is reached through an anti-corruption layer
//! (the private module `provider`): Annals speaks of a [`CardCharge`] in minor units and
//! hears back a [`Receipt`] or a [`Failure`]; the provider's resources, decimal amounts,
//! statuses, error codes and idempotency header never leave that module:
//!
//! ```compile_fail
//! // The provider's own types cannot be named outside the adapter.
//! use psp::provider::PaymentIntent;
//! ```
//!
//! The chain ([`chain`]) puts each provider behind a timeout, retries with backoff and
//! jitter for retryable failures only, and a circuit breaker; an open breaker falls
//! through to the next provider; [`Chain::dependencies`] reports every breaker.

pub mod chain;
mod provider;

pub use breaker::BreakerState;
pub use chain::{Chain, ChainConfig, ChargeError, DependencyStatus, RefundError, Transitions};

/// A charge of an order to a card on file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCharge {
    /// The order paid for: the provider's reference, and the root of the idempotency
    /// token (one capture per order, whatever is retried).
    pub order_id: String,
    /// The card's token at the provider (registered by the customer).
    pub card: String,
    /// In minor units; above 0.
    pub amount: u64,
}

/// A charge taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider that took it (its base URL).
    pub provider: String,
    /// The provider's reference of the payment, opaque to Annals.
    pub payment: String,
}

/// What went wrong with one call to one provider, in Annals' terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The card was refused (declined, no funds): final, not retried.
    #[error("declined: {reason}")]
    Declined {
        /// Why, in Annals' words.
        reason: String,
    },
    /// The provider is unavailable or overloaded and certainly took nothing: retried,
    /// counted by the breaker, then the next provider is asked.
    #[error("unavailable: {reason}")]
    Retryable {
        /// What happened.
        reason: String,
    },
    /// No answer after the request left (a timeout): the provider may have taken the
    /// charge. Retried with the same idempotency token; never sent to another provider.
    #[error("no answer: {reason}")]
    Uncertain {
        /// What happened.
        reason: String,
    },
    /// The provider refused the request itself: not retried.
    #[error("refused: {reason}")]
    Rejected {
        /// What the provider said.
        reason: String,
    },
}

impl Failure {
    /// Whether asking the same provider again (same token) may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable { .. } | Failure::Uncertain { .. })
    }
}
