//! Orders: one customer order, kept in the stream `order-<id>`.
//!
//! An order is placed with its lines (a sku and a quantity each) and is then pending
//! until the fulfilment saga has reserved its stock and charged its customer: it is
//! confirmed with the total charged, or cancelled with a reason. Confirmed and
//! cancelled are final.
//!
//! This crate is pure: [`Order::decide`](eventstore::Aggregate::decide) turns the state
//! and a command into events or an [`Error`], [`Order::evolve`](eventstore::Aggregate::evolve)
//! folds an event into the state. No IO happens here; the
//! [`eventstore::Repository`] loads, decides and appends. Prices live in inventory:
//! an order knows its total only once it is confirmed.
//!
//! ```
//! use eventstore::Aggregate;
//! use orders::{Command, Error, Event, Order, OrderStatus, PlacedLine};
//!
//! let order = Order::default().evolve(&Event::OrderPlaced {
//!     order_id: "o-1".into(),
//!     customer_id: "alice".into(),
//!     lines: vec![PlacedLine { sku: "apple".into(), quantity: 3, currency: "EUR".into() }],
//!     shipping_address: None,
//! });
//! assert_eq!(order.status(), OrderStatus::Pending);
//!
//! let order = order.evolve(&Event::OrderConfirmed { total: 360 });
//! let refused = order.decide(&Command::CancelOrder { reason: "too late".into() });
//! assert_eq!(refused, Err(Error::NotPending { status: OrderStatus::Confirmed }));
//! ```
//!
//! Events are stored with postcard, which is not self-describing: the order of the
//! [`Event`] variants and of their fields is the stored format. Add new variants at the
//! end, never reorder or change a field; a change of shape needs a new
//! [`EVENT_SCHEMA_VERSION`](eventstore::Aggregate::EVENT_SCHEMA_VERSION), the old
//! shape kept in a module of its own and an upcaster from it. Schema version 2 gave
//! each line of [`Event::OrderPlaced`] a currency; schema version 3 gave it an optional
//! `shipping_address`, personal data sealed under the ordering customer's key
//! ([`privacy::Sealed`], declared in [`PERSONAL_FIELDS`]). Events of version 1
//! ([`v1::Event`]) and 2 ([`v2::Event`]) are upcast when read (v1 through v2:
//! [`v1::Event::upcast`], [`v2::Event::upcast`]), so every reader (the aggregate, the
//! read models, the saga, the views) sees version 3 only. The golden tests of the
//! `api` crate (docs/schemas/golden) pin the bytes of every version.

use std::collections::BTreeSet;
use std::fmt;

use eventstore::Aggregate;
use privacy::{PersonalField, Sealed};
use serde::{Deserialize, Serialize};

/// The personal fields of the order's events. Each holds a [`Sealed`] value under the
/// key of the customer who ordered (`customer_id`), not of the order's stream.
pub const PERSONAL_FIELDS: &[PersonalField] = &[PersonalField {
    event_type: "OrderPlaced",
    field: "shipping_address",
}];

/// One line of an order: so many units of one sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderLine {
    /// The sku; not blank, at most one line per sku in an order.
    pub sku: String,
    /// How many units; above 0.
    pub quantity: u64,
}

/// The currency of every price in Annals (ISO 4217): skus are priced, accounts hold
/// and the payment provider charges in it (the provider's default configuration, see
/// `psp::ChainConfig`). An order's lines are recorded in it (schema version 2), and the
/// lines of orders recorded before currencies were (version 1) are upcast to it.
pub const CURRENCY: &str = "EUR";

/// One line of a placed order, as recorded since schema version 2: so many units of
/// one sku, and the currency the line is priced and paid in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlacedLine {
    /// The sku.
    pub sku: String,
    /// How many units; above 0.
    pub quantity: u64,
    /// The ISO 4217 code of the line's currency, e.g. `EUR` (for now every line is in
    /// EUR, `orders::CURRENCY`).
    pub currency: String,
}

impl PlacedLine {
    /// The line `line` in [`CURRENCY`].
    pub fn in_default_currency(line: &OrderLine) -> Self {
        PlacedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            currency: CURRENCY.to_owned(),
        }
    }

    /// The sku and quantity of the line.
    pub fn line(&self) -> OrderLine {
        OrderLine {
            sku: self.sku.clone(),
            quantity: self.quantity,
        }
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Places a new order. Its stream must be `order-<order_id>`.
    PlaceOrder {
        /// The order, the same as in the stream id; not blank.
        order_id: String,
        /// Who ordered; not blank.
        customer_id: String,
        /// What was ordered: at least one line, one line per sku.
        lines: Vec<OrderLine>,
        /// Where to ship, sealed under the customer's key for the event
        /// `EventId::derived(command id, 0)` of the stream `order-<order_id>`, field
        /// `shipping_address`; copied into the event as it is.
        shipping_address: Option<Sealed>,
    },
    /// Confirms a pending order: its stock is reserved and its customer charged.
    ConfirmOrder {
        /// The amount charged, in minor currency units (cents); above 0.
        total: u64,
    },
    /// Cancels a pending order.
    CancelOrder {
        /// Why, for the customer and the operator; not blank.
        reason: String,
    },
}

/// What happened to an order. Stored with postcard: append variants, never reorder
/// them or their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// The order was placed and is pending.
    OrderPlaced {
        /// The order.
        order_id: String,
        /// Who ordered.
        customer_id: String,
        /// What was ordered, each line with its currency (since schema version 2).
        lines: Vec<PlacedLine>,
        /// Where to ship, personal data sealed under the customer's key (since schema
        /// version 3; `None` in orders placed without one, and in older versions).
        shipping_address: Option<Sealed>,
    },
    /// The order was confirmed: stock reserved, customer charged.
    OrderConfirmed {
        /// The amount charged, in minor units.
        total: u64,
    },
    /// The order was cancelled.
    OrderCancelled {
        /// Why.
        reason: String,
    },
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Not placed: the stream has no events.
    #[default]
    None,
    /// Placed, waiting for stock and payment.
    Pending,
    /// Confirmed; final.
    Confirmed,
    /// Cancelled; final.
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderStatus::None => "not placed",
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Cancelled => "cancelled",
        })
    }
}

/// Why a command on an order was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The order was placed already. Over HTTP a 409; placing is not an update, and a
    /// retried command is recognised by its command id at the store before this.
    #[error("order {order_id:?} is already placed")]
    AlreadyPlaced {
        /// The placed order.
        order_id: String,
    },

    /// The order id was blank. A malformed command: over HTTP a 422.
    #[error("the order id must not be blank")]
    BlankOrderId,

    /// The customer id was blank. A malformed command: over HTTP a 422.
    #[error("the customer id must not be blank")]
    BlankCustomerId,

    /// The order had no lines. A malformed command: over HTTP a 422.
    #[error("an order needs at least one line")]
    NoLines,

    /// A line's sku was blank. A malformed command: over HTTP a 422.
    #[error("line {line} has a blank sku")]
    BlankSku {
        /// The line's index, from 0.
        line: usize,
    },

    /// A line's quantity was 0. A malformed command: over HTTP a 422.
    #[error("the quantity of {sku:?} must be above 0")]
    ZeroQuantity {
        /// The line's sku.
        sku: String,
    },

    /// Two lines named the same sku. A malformed command: over HTTP a 422; the client
    /// sends one line with the summed quantity.
    #[error("sku {sku:?} appears on more than one line")]
    DuplicateSku {
        /// The repeated sku.
        sku: String,
    },

    /// The order was never placed. Over HTTP a 404.
    #[error("the order was not placed")]
    UnknownOrder,

    /// The order is confirmed or cancelled already: only a pending order can be
    /// confirmed or cancelled. Over HTTP a 409; a saga sees it when the order was
    /// settled by someone else (e.g. an operator cancelled it) and compensates.
    #[error("the order is {status}, not pending")]
    NotPending {
        /// Where the order is.
        status: OrderStatus,
    },

    /// The confirmed total was 0. Every sku has a price above 0 and payments refuses a
    /// charge of 0, so a total of 0 is a caller's bug: over HTTP a 422.
    #[error("the total must be above 0")]
    ZeroTotal,

    /// The cancel reason was blank. A malformed command: over HTTP a 422.
    #[error("a cancellation needs a reason")]
    BlankReason,
}

/// One order, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    status: OrderStatus,
    order_id: String,
    customer_id: String,
    lines: Vec<OrderLine>,
    total: Option<u64>,
    cancel_reason: Option<String>,
    /// Sealed: the aggregate never opens it (snapshot schema version 2).
    shipping_address: Option<Sealed>,
}

impl Order {
    /// Where the order is in its life.
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// The order id; empty until placed.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// Who ordered; empty until placed.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// What was ordered, one line per sku, in the order given.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The amount charged, in minor units, once confirmed.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Why the order was cancelled, once cancelled.
    pub fn cancel_reason(&self) -> Option<&str> {
        self.cancel_reason.as_deref()
    }

    /// Where to ship, sealed, if the order was placed with an address. It is bound to
    /// the stream's first event (`OrderPlaced`, version 0), field `shipping_address`.
    pub fn shipping_address(&self) -> Option<&Sealed> {
        self.shipping_address.as_ref()
    }

    fn place(
        &self,
        order_id: &str,
        customer_id: &str,
        lines: &[OrderLine],
        shipping_address: Option<&Sealed>,
    ) -> Result<Vec<Event>, Error> {
        if self.status != OrderStatus::None {
            return Err(Error::AlreadyPlaced {
                order_id: self.order_id.clone(),
            });
        }
        if is_blank(order_id) {
            return Err(Error::BlankOrderId);
        }
        if is_blank(customer_id) {
            return Err(Error::BlankCustomerId);
        }
        if lines.is_empty() {
            return Err(Error::NoLines);
        }
        let mut seen = BTreeSet::new();
        for (index, line) in lines.iter().enumerate() {
            if is_blank(&line.sku) {
                return Err(Error::BlankSku { line: index });
            }
            if line.quantity == 0 {
                return Err(Error::ZeroQuantity {
                    sku: line.sku.clone(),
                });
            }
            if !seen.insert(line.sku.as_str()) {
                return Err(Error::DuplicateSku {
                    sku: line.sku.clone(),
                });
            }
        }
        Ok(vec![Event::OrderPlaced {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            lines: lines.iter().map(PlacedLine::in_default_currency).collect(),
            shipping_address: shipping_address.cloned(),
        }])
    }

    /// Refuses anything but a pending order.
    fn ensure_pending(&self) -> Result<(), Error> {
        match self.status {
            OrderStatus::Pending => Ok(()),
            OrderStatus::None => Err(Error::UnknownOrder),
            status => Err(Error::NotPending { status }),
        }
    }
}

impl Aggregate for Order {
    type Command = Command;
    type Event = Event;
    type Error = Error;

    const CATEGORY: &'static str = "order";
    /// 3: `OrderPlaced` has an optional sealed `shipping_address`; 2: each of its lines
    /// has a currency. Versions 1 and 2 are upcast on read.
    const EVENT_SCHEMA_VERSION: u32 = 3;
    /// 2: the state holds the sealed shipping address. Snapshots of version 1 are
    /// ignored (the stream is folded from its events instead).
    const SNAPSHOT_SCHEMA_VERSION: u32 = 2;

    fn decide(&self, command: &Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::PlaceOrder {
                order_id,
                customer_id,
                lines,
                shipping_address,
            } => self.place(order_id, customer_id, lines, shipping_address.as_ref()),
            Command::ConfirmOrder { total } => {
                self.ensure_pending()?;
                if *total == 0 {
                    return Err(Error::ZeroTotal);
                }
                Ok(vec![Event::OrderConfirmed { total: *total }])
            }
            Command::CancelOrder { reason } => {
                self.ensure_pending()?;
                if is_blank(reason) {
                    return Err(Error::BlankReason);
                }
                Ok(vec![Event::OrderCancelled {
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn evolve(mut self, event: &Event) -> Self {
        match event {
            Event::OrderPlaced {
                order_id,
                customer_id,
                lines,
                shipping_address,
            } => {
                self.status = OrderStatus::Pending;
                self.order_id.clone_from(order_id);
                self.customer_id.clone_from(customer_id);
                self.lines = lines.iter().map(PlacedLine::line).collect();
                self.shipping_address.clone_from(shipping_address);
            }
            Event::OrderConfirmed { total } => {
                self.status = OrderStatus::Confirmed;
                self.total = Some(*total);
            }
            Event::OrderCancelled { reason } => {
                self.status = OrderStatus::Cancelled;
                self.cancel_reason = Some(reason.clone());
            }
        }
        self
    }

    fn event_type(event: &Event) -> &'static str {
        match event {
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::OrderConfirmed { .. } => "OrderConfirmed",
            Event::OrderCancelled { .. } => "OrderCancelled",
        }
    }

    /// Version 3 as it is; versions 1 and 2 decoded in their own shapes and upcast.
    fn decode_event(schema_version: u32, payload: &[u8]) -> Result<Event, eventstore::Error> {
        let codec = |source| eventstore::Error::Codec {
            what: "order event",
            source,
        };
        match schema_version {
            1 => postcard::from_bytes::<v1::Event>(payload)
                .map(|event| event.upcast().upcast())
                .map_err(codec),
            2 => postcard::from_bytes::<v2::Event>(payload)
                .map(v2::Event::upcast)
                .map_err(codec),
            3 => postcard::from_bytes(payload).map_err(codec),
            _ => Err(eventstore::Error::UnknownSchemaVersion {
                what: "order event",
                schema_version,
            }),
        }
    }
}

/// The order events of schema version 1 (before lines had a currency), kept to read the
/// logs that hold them and to generate their JSON Schema. Never change them.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use super::{OrderLine, PlacedLine};

    /// What happened to an order, as schema version 1 recorded it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Event {
        /// The order was placed and is pending.
        OrderPlaced {
            /// The order.
            order_id: String,
            /// Who ordered.
            customer_id: String,
            /// What was ordered.
            lines: Vec<OrderLine>,
        },
        /// The order was confirmed: stock reserved, customer charged.
        OrderConfirmed {
            /// The amount charged, in minor units.
            total: u64,
        },
        /// The order was cancelled.
        OrderCancelled {
            /// Why.
            reason: String,
        },
    }

    impl Event {
        /// The event in schema version 2: each line of an `OrderPlaced` in
        /// [`super::CURRENCY`], the only currency Annals priced in when version 1 was
        /// written; the other events are unchanged. Upcast it again
        /// ([`super::v2::Event::upcast`]) for the current version.
        pub fn upcast(self) -> super::v2::Event {
            use super::v2;
            match self {
                Event::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                } => v2::Event::OrderPlaced {
                    order_id,
                    customer_id,
                    lines: lines.iter().map(PlacedLine::in_default_currency).collect(),
                },
                Event::OrderConfirmed { total } => v2::Event::OrderConfirmed { total },
                Event::OrderCancelled { reason } => v2::Event::OrderCancelled { reason },
            }
        }
    }
}

/// The order events of schema version 2 (lines with a currency, no shipping address),
/// kept to read the logs that hold them and to generate their JSON Schema. Never change
/// them.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    use super::PlacedLine;

    /// What happened to an order, as schema version 2 recorded it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Event {
        /// The order was placed and is pending.
        OrderPlaced {
            /// The order.
            order_id: String,
            /// Who ordered.
            customer_id: String,
            /// What was ordered, each line with its currency (since schema version 2).
            lines: Vec<PlacedLine>,
        },
        /// The order was confirmed: stock reserved, customer charged.
        OrderConfirmed {
            /// The amount charged, in minor units.
            total: u64,
        },
        /// The order was cancelled.
        OrderCancelled {
            /// Why.
            reason: String,
        },
    }

    impl Event {
        /// The event in schema version 3: an `OrderPlaced` without a shipping address
        /// (version 2 had none); the other events are unchanged.
        pub fn upcast(self) -> super::Event {
            match self {
                Event::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                } => super::Event::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    shipping_address: None,
                },
                Event::OrderConfirmed { total } => super::Event::OrderConfirmed { total },
                Event::OrderCancelled { reason } => super::Event::OrderCancelled { reason },
            }
        }
    }
}

/// Decodes a stored order event (any schema version this code knows) into JSON for
/// display over HTTP or in the CLI: the variant's fields, e.g. `{"total":360}` for an
/// `OrderConfirmed` ([`eventstore::event_json`]).
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let event = Order::decode_event(schema_version, payload)?;
    Ok(eventstore::event_json(&event)
        .expect("an order event always converts to JSON: derived Serialize, no maps"))
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests;
