//! Payments: one customer's prepaid account, kept in the stream `account-<customer>`.
//!
//! An account is opened once, funded by deposits, charged for orders and refunded when
//! an order is cancelled after its charge. An order is charged at most once and
//! refunded at most once, whatever the fulfilment saga retries, and yet the state keeps
//! no list of charges: it is the same size however many orders the account has paid for
//! (so loading it, and deciding a command, costs the same for an old customer as for a
//! new one). Each charge and each refund is a command that may take effect once in the
//! account's life ([`Aggregate::once_key`]): its events' ids derive from the account and
//! the order (`charge:<order>`, `refund:<order>`), so the store's durable id index
//! records it at most once, and a second one gets the first one's outcome. The history
//! of charges is for views: [`Charges`] folds it from the stream's events.
//!
//! A refund names the amount to give back: the charge its sender (the fulfilment saga,
//! the only sender of charges and refunds) saw answered. The account does not check it
//! against a charge it no longer remembers; docs/ARCHITECTURE.md ("Bounded work") says
//! why this was chosen.
//!
//! This crate is pure: [`Account::decide`](eventstore::Aggregate::decide) turns the state
//! and a command into events or an [`Error`], [`Account::evolve`](eventstore::Aggregate::evolve)
//! folds an event into the state. No IO happens here; the
//! [`eventstore::Repository`] loads, decides and appends. Money is an integer count of
//! minor currency units (cents).
//!
//! ```
//! use eventstore::Aggregate;
//! use payments::{Account, Command, Error, Event};
//!
//! let account = [
//!     Event::AccountOpened { customer_id: "alice".into() },
//!     Event::Deposited { amount: 500 },
//! ]
//! .iter()
//! .fold(Account::default(), Account::evolve);
//! assert_eq!(account.balance(), 500);
//!
//! let refused = account.decide(&Command::Charge { order_id: "o-1".into(), amount: 501 });
//! assert_eq!(refused, Err(Error::InsufficientFunds { requested: 501, balance: 500 }));
//! // Once per order, whoever asks: the store records the command at most once.
//! let charge = Command::Charge { order_id: "o-1".into(), amount: 100 };
//! assert_eq!(Account::once_key(&charge).as_deref(), Some("charge:o-1"));
//! ```
//!
//! Events are stored with postcard, which is not self-describing: the order of the
//! [`Event`] variants and of their fields is the stored format. Add new variants at the
//! end, never reorder or change a field; a change of shape needs a new
//! [`EVENT_SCHEMA_VERSION`](eventstore::Aggregate::EVENT_SCHEMA_VERSION) and a decoder
//! for the old one. The golden test in this crate pins the bytes.

pub mod card;

use std::collections::BTreeMap;

use eventstore::Aggregate;
use serde::{Deserialize, Serialize};

/// What can be asked of a customer's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Opens the account. Its stream must be `account-<customer_id>`.
    OpenAccount {
        /// The customer, the same as in the stream id; not blank.
        customer_id: String,
    },
    /// Adds money to the balance.
    Deposit {
        /// In minor units; above 0.
        amount: u64,
    },
    /// Takes money from the balance for an order, once: a second charge of the same
    /// order gets the first one's outcome ([`Aggregate::once_key`]).
    Charge {
        /// The order paid for; not blank.
        order_id: String,
        /// In minor units; above 0 and at most the balance.
        amount: u64,
    },
    /// Gives an order's charge back to the balance, once: a second refund of the same
    /// order gets the first one's outcome.
    Refund {
        /// The order whose charge is refunded.
        order_id: String,
        /// In minor units: the whole charge, as its sender saw it answered; above 0.
        amount: u64,
    },
}

/// What happened to an account. Stored with postcard: append variants, never reorder
/// them or their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// The account was opened.
    AccountOpened {
        /// The customer.
        customer_id: String,
    },
    /// Money was added to the balance.
    Deposited {
        /// In minor units.
        amount: u64,
    },
    /// Money was taken from the balance for an order.
    Charged {
        /// The order.
        order_id: String,
        /// In minor units.
        amount: u64,
    },
    /// An order's charge was given back to the balance.
    Refunded {
        /// The order.
        order_id: String,
        /// In minor units: the whole charge.
        amount: u64,
    },
}

/// Why a command on an account was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The account is not open. Over HTTP a 404; the fulfilment saga cancels the order.
    #[error("the account is not open")]
    NoAccount,

    /// The account is open already. Over HTTP a 409; opening is not an update.
    #[error("the account of {customer_id:?} is already open")]
    AlreadyOpen {
        /// The account's customer.
        customer_id: String,
    },

    /// The customer id was blank. A malformed command: over HTTP a 422.
    #[error("the customer id must not be blank")]
    BlankCustomerId,

    /// The order id was blank. A malformed command: over HTTP a 422.
    #[error("the order id must not be blank")]
    BlankOrderId,

    /// The amount was 0. A malformed command: over HTTP a 422.
    #[error("the amount must be above 0")]
    ZeroAmount,

    /// The balance would overflow its counter. Over HTTP a 422; the amount is absurd.
    #[error("adding {amount} would overflow the balance of {balance}")]
    BalanceOverflow {
        /// The amount to add.
        amount: u64,
        /// The balance.
        balance: u64,
    },

    /// The balance is below the charge. A domain rule: over HTTP a 422; the fulfilment
    /// saga cancels the order and releases its stock.
    #[error("insufficient funds: {requested} requested, balance {balance}")]
    InsufficientFunds {
        /// The amount charged.
        requested: u64,
        /// The balance.
        balance: u64,
    },

    /// The order was charged already (perhaps refunded since): an order is paid once.
    /// No longer decided: a second charge of an order gets the first one's outcome
    /// from the store ([`Aggregate::once_key`]). Kept for the stable problem types of
    /// the API (a 409).
    #[error("order {order_id:?} was already charged {amount}")]
    AlreadyCharged {
        /// The order.
        order_id: String,
        /// Its charge.
        amount: u64,
    },

    /// The order was never charged to this account. Over HTTP a 404; a compensating
    /// saga treats it as nothing to undo. No longer decided (the state keeps no
    /// charges); kept for the stable problem types of the API.
    #[error("order {order_id:?} was not charged to this account")]
    NotCharged {
        /// The order.
        order_id: String,
    },

    /// The order's charge was refunded already. Over HTTP a 409; a compensating saga
    /// treats it as done. No longer decided: a second refund gets the first one's
    /// outcome from the store; kept for the stable problem types of the API.
    #[error("the charge of order {order_id:?} was already refunded")]
    AlreadyRefunded {
        /// The order.
        order_id: String,
    },
}

/// The charge of one order, as [`Charges`] folds it from the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// In minor units.
    pub amount: u64,
    /// Whether it was given back.
    pub refunded: bool,
}

/// Every charge of an account, refunded ones included, by order id: a view folded from
/// the account's events (its size grows with the orders paid for, so it is not part of
/// the [`Account`] that commands load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charges(pub BTreeMap<String, Charge>);

impl Charges {
    /// Folds one more event of the account's stream in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Charged { order_id, amount } => {
                self.0.insert(
                    order_id.clone(),
                    Charge {
                        amount: *amount,
                        refunded: false,
                    },
                );
            }
            Event::Refunded { order_id, .. } => {
                if let Some(charge) = self.0.get_mut(order_id) {
                    charge.refunded = true;
                }
            }
            Event::AccountOpened { .. } | Event::Deposited { .. } => {}
        }
    }

    /// The charges of the account of `customer_id`, folded from its stream up to
    /// `version` (`Version(u64::MAX)`: all of it).
    pub fn read(
        store: &eventstore::EventStore,
        customer_id: &str,
        version: eventstore::Version,
    ) -> Result<Charges, eventstore::Error> {
        let stream = eventstore::Repository::<Account>::stream_id(customer_id)?;
        let mut charges = Charges::default();
        let mut from = eventstore::Version(0);
        while from <= version {
            let events = store.read_stream(&stream, from, eventstore::Direction::Forward, 4096)?;
            let Some(last) = events.last() else { break };
            from = last.version.next();
            for event in events.iter().filter(|event| event.version <= version) {
                charges.apply(&Account::decode_event(
                    event.schema_version,
                    &event.payload,
                )?);
            }
        }
        Ok(charges)
    }

    /// The charges folded from `events`, in stream order.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut charges = Charges::default();
        for event in events {
            charges.apply(event);
        }
        charges
    }
}

/// A customer's account, folded from its stream: whether it is open, whose, and its
/// balance. Nothing in it grows with the account's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    open: bool,
    customer_id: String,
    balance: u64,
}

impl Account {
    /// Whether the account is open; every other field is empty until it is.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The customer.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// The money on the account, in minor units.
    pub fn balance(&self) -> u64 {
        self.balance
    }

    fn open_account(&self, customer_id: &str) -> Result<Vec<Event>, Error> {
        if self.open {
            return Err(Error::AlreadyOpen {
                customer_id: self.customer_id.clone(),
            });
        }
        if is_blank(customer_id) {
            return Err(Error::BlankCustomerId);
        }
        Ok(vec![Event::AccountOpened {
            customer_id: customer_id.to_owned(),
        }])
    }

    fn deposit(&self, amount: u64) -> Result<Vec<Event>, Error> {
        if amount == 0 {
            return Err(Error::ZeroAmount);
        }
        self.ensure_can_credit(amount)?;
        Ok(vec![Event::Deposited { amount }])
    }

    fn charge_order(&self, order_id: &str, amount: u64) -> Result<Vec<Event>, Error> {
        if is_blank(order_id) {
            return Err(Error::BlankOrderId);
        }
        if amount == 0 {
            return Err(Error::ZeroAmount);
        }
        if amount > self.balance {
            return Err(Error::InsufficientFunds {
                requested: amount,
                balance: self.balance,
            });
        }
        Ok(vec![Event::Charged {
            order_id: order_id.to_owned(),
            amount,
        }])
    }

    fn refund(&self, order_id: &str, amount: u64) -> Result<Vec<Event>, Error> {
        if is_blank(order_id) {
            return Err(Error::BlankOrderId);
        }
        if amount == 0 {
            return Err(Error::ZeroAmount);
        }
        self.ensure_can_credit(amount)?;
        Ok(vec![Event::Refunded {
            order_id: order_id.to_owned(),
            amount,
        }])
    }

    /// Checks that `amount` can be added to the balance.
    fn ensure_can_credit(&self, amount: u64) -> Result<(), Error> {
        match self.balance.checked_add(amount) {
            Some(_) => Ok(()),
            None => Err(Error::BalanceOverflow {
                amount,
                balance: self.balance,
            }),
        }
    }
}

impl Aggregate for Account {
    type Command = Command;
    type Event = Event;
    type Error = Error;

    const CATEGORY: &'static str = "account";
    /// 2: the state no longer holds the charges (snapshots of version 1 did; they are
    /// ignored and the state is folded from the events again).
    const SNAPSHOT_SCHEMA_VERSION: u32 = 2;

    fn decide(&self, command: &Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::OpenAccount { customer_id } => self.open_account(customer_id),
            _ if !self.open => Err(Error::NoAccount),
            Command::Deposit { amount } => self.deposit(*amount),
            Command::Charge { order_id, amount } => self.charge_order(order_id, *amount),
            Command::Refund { order_id, amount } => self.refund(order_id, *amount),
        }
    }

    fn once_key(command: &Command) -> Option<String> {
        match command {
            Command::Charge { order_id, .. } => Some(format!("charge:{order_id}")),
            Command::Refund { order_id, .. } => Some(format!("refund:{order_id}")),
            Command::OpenAccount { .. } | Command::Deposit { .. } => None,
        }
    }

    fn evolve(mut self, event: &Event) -> Self {
        // Arithmetic saturates: `decide` never emits an event that would overflow, and
        // folding a stored event must not panic whatever the log holds.
        match event {
            Event::AccountOpened { customer_id } => {
                self.open = true;
                self.customer_id.clone_from(customer_id);
            }
            Event::Deposited { amount } => {
                self.balance = self.balance.saturating_add(*amount);
            }
            Event::Charged { amount, .. } => {
                self.balance = self.balance.saturating_sub(*amount);
            }
            Event::Refunded { amount, .. } => {
                self.balance = self.balance.saturating_add(*amount);
            }
        }
        self
    }

    fn event_type(event: &Event) -> &'static str {
        match event {
            Event::AccountOpened { .. } => "AccountOpened",
            Event::Deposited { .. } => "Deposited",
            Event::Charged { .. } => "Charged",
            Event::Refunded { .. } => "Refunded",
        }
    }
}

/// Decodes a stored account event (any schema version this code knows) into JSON for
/// display over HTTP or in the CLI: the variant's fields, e.g. `{"amount":500}` for a
/// `Deposited` ([`eventstore::event_json`]).
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let event = Account::decode_event(schema_version, payload)?;
    Ok(eventstore::event_json(&event)
        .expect("an account event always converts to JSON: derived Serialize, no maps"))
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests;
