//! How the fulfilment saga reaches orders, inventory and payments: which log events
//! start or cancel it, and how each of its commands runs on the aggregates.
//!
//! Commands run through the shared [`Repositories`] with the saga's deterministic
//! command id: handed the same repositories as the HTTP API, the saga queues on the same
//! per-stream queues. Domain refusals
//! become [`Outcome::Rejected`] with the aggregate's own words; refusals that mean
//! "already done" (a release of nothing, a refund of nothing) are [`Outcome::Done`].
//!
//! Every command is recorded as the saga's own: principal [`SERVICE_PRINCIPAL`], issuer
//! [`SERVICE_ISSUER`], the step's [`Command::action`], and `on_behalf_of` the principal
//! of the order's `OrderPlaced` (none when that had none). That principal is not carried
//! in the saga's recorded inputs, whose postcard layout is the format of every saga
//! stream written so far: its [`Dispatcher::route`] remembers it when it sees the
//! `OrderPlaced` (in a bounded cache of [`PLACED_BY_CAPACITY`] orders), and a command of
//! an order it does not remember (after a restart, or evicted) reads it from the order's
//! first event. Either way it comes out the same, and for sagas started before it existed.
//!
//! The charge of a customer with a card on file goes to the payment providers when the
//! services have a chain of them ([`FulfilmentServices::with_card_payments`]); everyone
//! else's, and every charge on a server without providers, to the prepaid account as
//! before (that path reads nothing more). A provider's refusal of the card is
//! [`Outcome::Rejected`]; no provider available now is an error, so the driver asks again
//! later and the saga's deadline applies. A refund gives back the order's captures at the
//! providers, if any, else the account's charge.
//!
//! Every command passes the `saga.command` fault point first
//! ([`FulfilmentServices::with_chaos`], inert without `--chaos`): an injected `error`
//! fails it as a store failure does (the driver tries it again later), a `delay` waits,
//! a `panic` panics the instance (the driver stops its instances and runs again from its
//! checkpoint; under `annals serve` the supervisor counts it).

use std::sync::Arc;
use std::time::Duration;

use chaos::{Effect, Injected, Point};
use eventstore::{
    Aggregate, CommandOptions, Direction, Error, ExecuteError, Metadata, RecordedEvent, Repository,
    Version,
};
use orders::Order;
use repositories::Repositories;
use uuid::Uuid;

use crate::clock::Clock;
use crate::driver::Dispatcher;
use crate::fulfilment::{Command, Fulfilment, Input, Outcome, SERVICE_ISSUER, SERVICE_PRINCIPAL};
use crate::saga::{self, Issued};

/// Faults the driver injects on purpose, to see deadlines and compensation happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay the charge of some orders by this long...
    pub charge_delay: Duration,
    /// ...for this share of orders, in percent (chosen by order id, so the same orders
    /// are delayed again after a restart).
    pub charge_delay_percent: u8,
}

impl Faults {
    fn charge_delay_for(&self, order_id: &str) -> Option<Duration> {
        if self.charge_delay_percent == 0 || self.charge_delay.is_zero() {
            return None;
        }
        let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, order_id.as_bytes());
        (hash.as_bytes()[0] % 100 < self.charge_delay_percent).then_some(self.charge_delay)
    }
}

/// How many orders' placers the services remember (about; older ones are evicted and
/// read again from their order streams when needed).
pub const PLACED_BY_CAPACITY: usize = 65_536;

/// The fulfilment saga's view of the world.
#[derive(Debug, Clone)]
pub struct FulfilmentServices {
    repositories: Repositories,
    timeout: Duration,
    faults: Faults,
    /// The `saga.command` fault point.
    chaos: chaos::Chaos,
    /// Who placed each order (the principal of its `OrderPlaced`), by order id, for the
    /// orders seen placed lately.
    placed_by: Arc<quick_cache::sync::Cache<String, Option<String>>>,
    /// The payment providers that charge cards on file; `None`: every order is paid
    /// from the prepaid account.
    card_payments: Option<psp::Chain>,
}

impl FulfilmentServices {
    /// Services running their commands through `repositories` (share them with the
    /// other writers of the process); an order not charged within `timeout` is cancelled.
    pub fn new(repositories: Repositories, timeout: Duration) -> Self {
        FulfilmentServices {
            repositories,
            timeout,
            faults: Faults::default(),
            chaos: chaos::Chaos::inert(),
            placed_by: Arc::new(quick_cache::sync::Cache::new(PLACED_BY_CAPACITY)),
            card_payments: None,
        }
    }

    /// The same services, charging the customers with a card on file through `chain`.
    pub fn with_card_payments(mut self, chain: psp::Chain) -> Self {
        self.card_payments = Some(chain);
        self
    }

    /// The providers and the card on file of `customer_id`, when its charges go to a
    /// provider.
    async fn card_of(&self, customer_id: &str) -> Result<Option<(&psp::Chain, String)>, Error> {
        let Some(chain) = &self.card_payments else {
            return Ok(None);
        };
        let card = self.repositories.cards.load_async(customer_id).await?.state;
        Ok(card.token().map(|token| (chain, token.to_owned())))
    }

    /// Runs `command` on the account of the order's customer.
    async fn on_account(
        &self,
        state: &Fulfilment,
        command: payments::Command,
        options: &CommandOptions,
    ) -> Result<Result<payments::Account, payments::Error>, Error> {
        run(
            &self.repositories.accounts,
            &state.customer_id,
            command,
            options,
        )
        .await
    }

    /// The same services, injecting `faults`.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The same services, with every command passing the `saga.command` fault point of
    /// `chaos` (the server's switch, inert without `--chaos`).
    pub fn with_chaos(mut self, chaos: chaos::Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Who placed the order `order_id`: the principal of its `OrderPlaced`, the first
    /// event of its stream (`None` when it had none, or the stream does not start so).
    /// Remembered from [`Dispatcher::route`], or read from the order's stream.
    fn placed_by(&self, order_id: &str) -> Result<Option<String>, Error> {
        if let Some(principal) = self.placed_by.get(order_id) {
            return Ok(principal);
        }
        let principal = self.read_placed_by(order_id)?;
        self.placed_by
            .insert(order_id.to_owned(), principal.clone());
        Ok(principal)
    }

    /// [`FulfilmentServices::placed_by`], read from the order's first event.
    fn read_placed_by(&self, order_id: &str) -> Result<Option<String>, Error> {
        let stream = Repository::<Order>::stream_id(order_id)?;
        let first = self.repositories.orders.store().read_stream(
            &stream,
            Version(0),
            Direction::Forward,
            1,
        )?;
        Ok(first
            .into_iter()
            .next()
            .filter(|event| event.event_type == "OrderPlaced")
            .and_then(|event| event.metadata.principal))
    }
}

/// Runs a command on one aggregate (queued on its stream by the repository).
async fn run<A: Aggregate>(
    repository: &Repository<A>,
    id: &str,
    command: A::Command,
    options: &CommandOptions,
) -> Result<Result<A, A::Error>, Error> {
    match repository.execute(id, &command, options).await {
        Ok(committed) => Ok(Ok(committed.state)),
        Err(ExecuteError::Rejected(rejection)) => Ok(Err(rejection)),
        // The saga never sends a command that changes nothing; if one did, it is done.
        Err(ExecuteError::NoChange) => Ok(Ok(repository.load_async(id).await?.state)),
        Err(ExecuteError::Store(error)) => Err(error),
    }
}

/// No payment provider could be asked now: a failure like the store's, so the driver
/// asks again later (and the saga's deadline applies meanwhile).
fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::Io {
        path: "payment providers".into(),
        source: std::io::Error::other(error.to_string()),
    }
}

fn rejected(error: impl std::fmt::Display) -> Outcome {
    Outcome::Rejected {
        reason: error.to_string(),
    }
}

impl Dispatcher<Fulfilment> for FulfilmentServices {
    fn route(&self, event: &RecordedEvent, clock: &dyn Clock) -> Option<(String, Input)> {
        if event.stream_id.category() != Order::CATEGORY {
            return None;
        }
        let order_id = event.stream_id.as_str().strip_prefix("order-")?;
        let decoded = match Order::decode_event(event.schema_version, &event.payload) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::error!(%error, position = %event.position, "an order event does not decode; the saga ignores it");
                return None;
            }
        };
        let input = match decoded {
            orders::Event::OrderPlaced {
                order_id,
                customer_id,
                lines,
                ..
            } => {
                self.placed_by
                    .insert(order_id.clone(), event.metadata.principal.clone());
                Input::Started {
                    order_id,
                    customer_id,
                    // The saga reserves and charges by sku and quantity; every price is in
                    // the one currency Annals has (`orders::CURRENCY`).
                    lines: lines.iter().map(orders::PlacedLine::line).collect(),
                    deadline: clock.now()
                        + chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX),
                    correlation_id: event.metadata.correlation_id,
                }
            }
            orders::Event::OrderCancelled { reason } => {
                let own = saga::command_id::<Fulfilment>(order_id, "cancel-order");
                if event.metadata.command_id == Some(own) {
                    return None;
                }
                Input::CancelRequested { reason }
            }
            orders::Event::OrderConfirmed { .. } => return None,
        };
        Some((order_id.to_owned(), input))
    }

    async fn execute(
        &self,
        state: &Fulfilment,
        command_id: Uuid,
        issued: &Issued<Command>,
    ) -> Result<Input, Error> {
        match self.chaos.check(Point::SagaCommand) {
            Some(Effect::Error) => {
                return Err(Error::Io {
                    path: Point::SagaCommand.name().into(),
                    source: Injected(Point::SagaCommand).io(),
                });
            }
            Some(Effect::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Effect::Panic) => Effect::panic_at(Point::SagaCommand),
            _ => {}
        }
        let order_id = state.order_id.clone();
        let options = CommandOptions {
            command_id,
            expected_version: None,
            metadata: Metadata {
                correlation_id: state.correlation_id,
                principal: Some(SERVICE_PRINCIPAL.to_owned()),
                issuer: Some(SERVICE_ISSUER.to_owned()),
                action: Some(issued.command.action().to_owned()),
                on_behalf_of: self.placed_by(&order_id)?,
                // The saga command's span, in the trace of the event that caused it.
                traceparent: trace_context::current(),
                ..Metadata::default()
            },
        };
        let outcome = match &issued.command {
            Command::Reserve { sku, quantity } => {
                let command = inventory::Command::Reserve {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                };
                match run(&self.repositories.stock, sku, command, &options).await? {
                    Ok(stock) => match stock.reservation(&order_id) {
                        Some(reservation) => Outcome::Reserved {
                            quantity: reservation.quantity,
                            unit_price: reservation.unit_price,
                        },
                        // Taken and already given back: only a compensation does that,
                        // after this answer was recorded. Report what was asked.
                        None => Outcome::Reserved {
                            quantity: *quantity,
                            unit_price: stock.unit_price(),
                        },
                    },
                    Err(error) => rejected(error),
                }
            }
            Command::Release { sku } => {
                let command = inventory::Command::Release {
                    order_id: order_id.clone(),
                };
                match run(&self.repositories.stock, sku, command, &options).await? {
                    Ok(_) | Err(inventory::Error::NoReservation { .. }) => Outcome::Done,
                    Err(error) => rejected(error),
                }
            }
            Command::ConfirmReservation { sku } => {
                let command = inventory::Command::ConfirmReservation {
                    order_id: order_id.clone(),
                };
                match run(&self.repositories.stock, sku, command, &options).await? {
                    Ok(_) => Outcome::Done,
                    Err(error) => rejected(error),
                }
            }
            Command::Charge { amount } => {
                if let Some(delay) = self.faults.charge_delay_for(&order_id) {
                    tokio::time::sleep(delay).await;
                }
                if let Some((chain, card)) = self.card_of(&state.customer_id).await? {
                    let charge = psp::CardCharge {
                        order_id: order_id.clone(),
                        card,
                        amount: *amount,
                    };
                    return match chain.charge(&charge).await {
                        Ok(receipt) => {
                            tracing::info!(order_id = %order_id, provider = %receipt.provider, payment = %receipt.payment, "order charged to the card on file");
                            Ok(Input::Answered {
                                key: issued.key.clone(),
                                outcome: Outcome::Done,
                            })
                        }
                        Err(
                            error @ (psp::ChargeError::Declined { .. }
                            | psp::ChargeError::Rejected { .. }),
                        ) => Ok(Input::Answered {
                            key: issued.key.clone(),
                            outcome: rejected(error),
                        }),
                        Err(error @ psp::ChargeError::Unavailable { .. }) => {
                            Err(unavailable(error))
                        }
                    };
                }
                let command = payments::Command::Charge {
                    order_id: order_id.clone(),
                    amount: *amount,
                };
                match self.on_account(state, command, &options).await? {
                    Ok(_) => Outcome::Done,
                    Err(error) => rejected(error),
                }
            }
            Command::Refund => {
                if let Some(chain) = &self.card_payments {
                    match chain.refund(&order_id).await {
                        Ok(0) => {}
                        Ok(_) => {
                            return Ok(Input::Answered {
                                key: issued.key.clone(),
                                outcome: Outcome::Done,
                            });
                        }
                        Err(error @ psp::RefundError::Rejected { .. }) => {
                            return Ok(Input::Answered {
                                key: issued.key.clone(),
                                outcome: rejected(error),
                            });
                        }
                        Err(error @ psp::RefundError::Unavailable { .. }) => {
                            return Err(unavailable(error));
                        }
                    }
                }
                // The account is refunded only for a charge the saga saw answered: the
                // amount it charged.
                match state.charged {
                    None => Outcome::Done,
                    Some(amount) => {
                        let command = payments::Command::Refund {
                            order_id: order_id.clone(),
                            amount,
                        };
                        match self.on_account(state, command, &options).await? {
                            Ok(_)
                            | Err(
                                payments::Error::NotCharged { .. }
                                | payments::Error::AlreadyRefunded { .. },
                            ) => Outcome::Done,
                            Err(error) => rejected(error),
                        }
                    }
                }
            }
            Command::ConfirmOrder { total } => {
                let command = orders::Command::ConfirmOrder { total: *total };
                match run(&self.repositories.orders, &order_id, command, &options).await? {
                    Ok(_) => Outcome::Done,
                    Err(error) => rejected(error),
                }
            }
            Command::CancelOrder { reason } => {
                let command = orders::Command::CancelOrder {
                    reason: reason.clone(),
                };
                match run(&self.repositories.orders, &order_id, command, &options).await? {
                    // Refused: the order is settled already (the customer cancelled).
                    Ok(_) | Err(_) => Outcome::Done,
                }
            }
        };
        Ok(Input::Answered {
            key: issued.key.clone(),
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use eventstore::{EventStore, StoreConfig};

    use super::*;

    /// Services that never saw an order placed read who placed it from its stream.
    #[tokio::test]
    async fn who_placed_an_order_unseen_is_read_from_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        let repositories = Repositories::new(store.clone());
        for (order, principal) in [("o-1", Some("alice")), ("o-2", None)] {
            let options = CommandOptions {
                command_id: Uuid::now_v7(),
                metadata: Metadata {
                    principal: principal.map(str::to_owned),
                    ..Metadata::default()
                },
                ..CommandOptions::default()
            };
            let place = orders::Command::PlaceOrder {
                order_id: order.into(),
                customer_id: "c-1".into(),
                lines: vec![orders::OrderLine {
                    sku: "apple".into(),
                    quantity: 1,
                }],
                shipping_address: None,
            };
            repositories
                .orders
                .execute(order, &place, &options)
                .await
                .unwrap();
        }
        let services = FulfilmentServices::new(repositories, Duration::from_secs(30));
        assert_eq!(services.placed_by("o-1").unwrap().as_deref(), Some("alice"));
        assert_eq!(services.placed_by("o-2").unwrap(), None);
        assert_eq!(services.placed_by("o-never").unwrap(), None);
        // Remembered once read.
        assert_eq!(
            services.placed_by.get("o-1"),
            Some(Some("alice".to_owned()))
        );
        store.close().await;
    }
}
