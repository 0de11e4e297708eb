//! The chain of providers: each call passes a timeout (the HTTP client's, per attempt),
//! then retries with exponential backoff and jitter for retryable failures only (the same
//! idempotency token every time, so a retry never charges twice), then the provider's
//! circuit breaker (the workspace's one, [`breaker::Breaker`]). A provider whose breaker
//! is open is skipped: the charge falls through to the next one. When every breaker is
//! open the charge fails with [`ChargeError::Unavailable`]; the fulfilment saga then
//! tries again later, and its deadline applies.
//!
//! A charge whose outcome at a provider is unknown (a timeout: the provider may have
//! captured it and lost the answer) is pinned to that provider: it is never sent to
//! another, where it could be captured a second time, until that provider answers (the
//! same token then returns the first capture). Pins live in memory: after a restart an
//! unknown outcome can fall through (a known limit, docs/ARCHITECTURE.md).
//!
//! Half-open: once an open breaker's cool-down has passed, one call goes through as the
//! probe; others skip the provider until the probe's outcome closes or opens it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use breaker::{Breaker, BreakerState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::provider::Provider;
use crate::{CardCharge, Failure, Receipt};

/// How the chain calls its providers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainConfig {
    /// The providers' base URLs, in order: the first is asked first.
    pub urls: Vec<String>,
    /// The limit of one HTTP attempt (connect included).
    pub timeout: Duration,
    /// Retries after a retryable failure, per provider and call.
    pub retries: usize,
    /// The first retry delay (it doubles, with jitter)...
    pub backoff_min: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Calls failed in a row (after their retries) that open a provider's breaker.
    pub failure_threshold: u32,
    /// How long an open breaker skips its provider before one probe.
    pub cool_down: Duration,
    /// The ISO 4217 currency of every amount (two decimals; Annals' minor units).
    pub currency: String,
}

impl ChainConfig {
    /// The defaults, with these providers.
    pub fn new(urls: Vec<String>) -> Self {
        ChainConfig {
            urls,
            timeout: Duration::from_secs(2),
            retries: 2,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            failure_threshold: 5,
            cool_down: Duration::from_secs(10),
            currency: "EUR".to_owned(),
        }
    }
}

/// Why a charge through the chain failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    /// The provider refused the card. A domain outcome: the saga cancels the order.
    #[error("the card was refused: {reason}")]
    Declined {
        /// The provider's reason, in Annals' words.
        reason: String,
    },
    /// The provider refused the request itself (a bad amount, a reused token): asking
    /// again would not help. The saga cancels the order; the log names the provider.
    #[error("the payment provider refused the request: {reason}")]
    Rejected {
        /// What the provider said.
        reason: String,
    },
    /// No provider could take the charge now (failing, or every breaker open; or the
    /// outcome at the one it is pinned to is unknown). Ask again later: the saga does,
    /// until its deadline.
    #[error("no payment provider is available: {reason}")]
    Unavailable {
        /// The last failure seen.
        reason: String,
    },
}

/// Why a refund through the chain failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// A provider that may hold the charge could not be asked. Ask again later.
    #[error("cannot refund now: {reason}")]
    Unavailable {
        /// The failure.
        reason: String,
    },
    /// A provider refused the reversal. Needs an operator.
    #[error("the payment provider refused the refund: {reason}")]
    Rejected {
        /// What the provider said.
        reason: String,
    },
}

/// Times a breaker entered each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Transitions {
    /// To closed (a probe succeeded).
    pub closed: u64,
    /// To open.
    pub open: u64,
    /// To half-open (a probe allowed).
    pub half_open: u64,
}

impl Transitions {
    /// The count of transitions into `state`.
    pub fn into_state(&self, state: BreakerState) -> u64 {
        match state {
            BreakerState::Closed => self.closed,
            BreakerState::Open => self.open,
            BreakerState::HalfOpen => self.half_open,
        }
    }

    fn count(&mut self, state: BreakerState) {
        let counter = match state {
            BreakerState::Closed => &mut self.closed,
            BreakerState::Open => &mut self.open,
            BreakerState::HalfOpen => &mut self.half_open,
        };
        *counter += 1;
    }
}

/// One dependency as `GET /api/v1/dependencies` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyStatus {
    /// The provider's base URL.
    pub name: String,
    /// Its place in the chain, from 0 (asked first).
    pub rank: usize,
    /// The breaker: `closed`, `open` or `half_open`.
    pub state: BreakerState,
    /// Calls failed in a row (after their retries).
    pub consecutive_failures: u32,
    /// Calls failed since the server started.
    pub failures_total: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// While open: when one probe will be let through.
    pub next_probe: Option<DateTime<Utc>>,
    /// Times the breaker entered each state.
    pub transitions: Transitions,
}

#[derive(Debug)]
struct Health {
    breaker: Breaker,
    /// A half-open probe is under way: the others skip the provider.
    probing: bool,
    failures_total: u64,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    transitions: Transitions,
}

#[derive(Debug)]
struct Link {
    name: String,
    provider: Provider,
    health: Mutex<Health>,
}

impl Link {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to this provider now (and if it is the half-open probe,
    /// claims it).
    fn admit(&self) -> bool {
        let mut health = self.health();
        let before = health.breaker.state();
        if health.breaker.wait_until(Instant::now()).is_some() {
            return false;
        }
        let after = health.breaker.state();
        if after != before {
            health.transitions.count(after);
            tracing::info!(provider = %self.name, "payment provider breaker half-open: one probe goes through");
        }
        if after == BreakerState::HalfOpen {
            if health.probing {
                return false;
            }
            health.probing = true;
        }
        true
    }

    /// The provider answered (a capture, a decline, a refusal: it works).
    fn answered(&self) {
        let mut health = self.health();
        health.probing = false;
        let before = health.breaker.state();
        health.breaker.success();
        if before != BreakerState::Closed {
            health.transitions.count(BreakerState::Closed);
            tracing::info!(provider = %self.name, "payment provider breaker closed");
        }
    }

    fn failed(&self, failure: &Failure) {
        let mut health = self.health();
        health.probing = false;
        let before = health.breaker.state();
        health.breaker.failure(Instant::now());
        health.failures_total += 1;
        health.last_error = Some(failure.to_string());
        health.last_error_at = Some(Utc::now());
        let after = health.breaker.state();
        if after != before {
            health.transitions.count(after);
        }
        if after == BreakerState::Open {
            tracing::warn!(provider = %self.name, error = %failure, failures = health.breaker.consecutive_failures(), "payment provider breaker open");
        }
    }

    fn status(&self, rank: usize) -> DependencyStatus {
        let health = self.health();
        let next_probe = health.breaker.open_until().map(|until| {
            let wait = until.saturating_duration_since(Instant::now());
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero())
        });
        DependencyStatus {
            name: self.name.clone(),
            rank,
            state: health.breaker.state(),
            consecutive_failures: health.breaker.consecutive_failures(),
            failures_total: health.failures_total,
            last_error: health.last_error.clone(),
            last_error_at: health.last_error_at,
            next_probe,
            transitions: health.transitions,
        }
    }
}

/// The providers, in order, each behind its breaker. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Chain {
    links: Arc<[Link]>,
    backoff: ExponentialBuilder,
    /// Orders whose outcome at a provider is unknown, and that provider's rank.
    pinned: Arc<Mutex<HashMap<String, usize>>>,
    /// The `psp.charge` fault point's switch (inert unless the server runs `--chaos`).
    chaos: chaos::Chaos,
}

impl Chain {
    /// A chain over `config.urls`; an error names a bad URL or setting.
    pub fn new(config: &ChainConfig) -> Result<Chain, String> {
        if config.urls.is_empty() {
            return Err("a provider chain needs at least one provider URL".to_owned());
        }
        if config.timeout.is_zero() {
            return Err("the provider timeout must be above 0".to_owned());
        }
        if config.currency.len() != 3 || !config.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "the currency must be an ISO 4217 code such as EUR, not {:?}",
                config.currency
            ));
        }
        let links = config
            .urls
            .iter()
            .map(|url| {
                Ok(Link {
                    name: url.trim_end_matches('/').to_owned(),
                    provider: Provider::new(url, config.timeout, &config.currency)?,
                    health: Mutex::new(Health {
                        breaker: Breaker::new(
                            config.failure_threshold,
                            config.cool_down,
                            config.backoff_min,
                            config.backoff_max,
                        ),
                        probing: false,
                        failures_total: 0,
                        last_error: None,
                        last_error_at: None,
                        transitions: Transitions::default(),
                    }),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Chain {
            links: links.into(),
            backoff: ExponentialBuilder::new()
                .with_min_delay(config.backoff_min)
                .with_max_delay(config.backoff_max)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(config.retries),
            pinned: Arc::default(),
            chaos: chaos::Chaos::inert(),
        })
    }

    /// The same chain, passing every charge attempt through the `psp.charge` fault
    /// point of `chaos`: an `error` fails the attempt as an unavailable provider does
    /// (before the request leaves, so nothing is charged), a `delay` waits before it.
    pub fn with_chaos(mut self, chaos: chaos::Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    fn pins(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.pinned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges `charge` at the first provider that takes it.
    pub async fn charge(&self, charge: &CardCharge) -> Result<Receipt, ChargeError> {
        let pinned = self.pins().get(&charge.order_id).copied();
        let mut last = None;
        for (rank, link) in self.links.iter().enumerate() {
            if pinned.is_some_and(|pin| pin != rank) {
                continue;
            }
            if !link.admit() {
                last = Some(format!("{}: the circuit breaker is open", link.name));
                continue;
            }
            let attempt = || async {
                match self.chaos.check(chaos::Point::PspCharge) {
                    Some(chaos::Effect::Error) => {
                        return Err(Failure::Retryable {
                            reason: "a fault injected at psp.charge".to_owned(),
                        });
                    }
                    Some(chaos::Effect::Delay(pause)) => tokio::time::sleep(pause).await,
                    _ => {}
                }
                link.provider.charge(charge).await
            };
            let result = attempt
                .retry(self.backoff)
                .when(Failure::is_retryable)
                .notify(|failure, delay| {
                    tracing::debug!(provider = %link.name, %failure, ?delay, order_id = %charge.order_id, "charge failed; retrying");
                })
                .await;
            match result {
                Ok(receipt) => {
                    link.answered();
                    self.pins().remove(&charge.order_id);
                    return Ok(receipt);
                }
                Err(Failure::Declined { reason }) => {
                    link.answered();
                    self.pins().remove(&charge.order_id);
                    return Err(ChargeError::Declined { reason });
                }
                Err(Failure::Rejected { reason }) => {
                    // The provider answered: it works, the request was at fault.
                    link.answered();
                    self.pins().remove(&charge.order_id);
                    return Err(ChargeError::Rejected {
                        reason: format!("{}: {reason}", link.name),
                    });
                }
                Err(failure @ Failure::Uncertain { .. }) => {
                    link.failed(&failure);
                    self.pins().insert(charge.order_id.clone(), rank);
                    return Err(ChargeError::Unavailable {
                        reason: format!(
                            "{}: {failure}; the charge may have been taken, so it is asked of this provider again, never of another",
                            link.name
                        ),
                    });
                }
                Err(failure @ Failure::Retryable { .. }) => {
                    link.failed(&failure);
                    last = Some(format!("{}: {failure}", link.name));
                }
            }
        }
        Err(ChargeError::Unavailable {
            reason: last.unwrap_or_else(|| "no provider".to_owned()),
        })
    }

    /// Gives back every capture of the order `order_id`, at every provider (a charge
    /// may sit at any of them). The number of captures reversed.
    pub async fn refund(&self, order_id: &str) -> Result<usize, RefundError> {
        let mut reversed = 0;
        for link in self.links.iter() {
            let attempt = || link.provider.refund(order_id);
            match attempt
                .retry(self.backoff)
                .when(Failure::is_retryable)
                .await
            {
                Ok(count) => reversed += count,
                Err(Failure::Rejected { reason } | Failure::Declined { reason }) => {
                    return Err(RefundError::Rejected {
                        reason: format!("{}: {reason}", link.name),
                    });
                }
                Err(failure) => {
                    return Err(RefundError::Unavailable {
                        reason: format!("{}: {failure}", link.name),
                    });
                }
            }
        }
        Ok(reversed)
    }

    /// Every provider's breaker and failures, in chain order.
    pub fn dependencies(&self) -> Vec<DependencyStatus> {
        self.links
            .iter()
            .enumerate()
            .map(|(rank, link)| link.status(rank))
            .collect()
    }
}
