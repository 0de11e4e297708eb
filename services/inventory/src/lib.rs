//! Inventory: the stock of one sku, kept in the stream `stock-<sku>`.
//!
//! A sku is registered once with a name and a unit price, restocked, and reserved for
//! orders. A reservation holds a quantity back from what is available until the order
//! is settled: [`Command::Release`] gives it back (the order was cancelled),
//! [`Command::ConfirmReservation`] takes it out of stock for good (the order was
//! confirmed and the goods leave the warehouse). Each reservation records the unit
//! price at the time it was made, so the fulfilment saga can total the order from the
//! reservations it collected.
//!
//! This crate is pure: [`Stock::decide`](eventstore::Aggregate::decide) turns the state
//! and a command into events or an [`Error`], [`Stock::evolve`](eventstore::Aggregate::evolve)
//! folds an event into the state. No IO happens here; the
//! [`eventstore::Repository`] loads, decides and appends.
//!
//! ```
//! use eventstore::Aggregate;
//! use inventory::{Command, Error, Event, Stock};
//!
//! let stock = [
//!     Event::SkuRegistered { sku: "apple".into(), name: "Apple".into(), unit_price: 120 },
//!     Event::Restocked { quantity: 10 },
//! ]
//! .iter()
//! .fold(Stock::default(), Stock::evolve);
//! assert_eq!(stock.available(), 10);
//!
//! let refused = stock.decide(&Command::Reserve { order_id: "o-1".into(), quantity: 11 });
//! assert_eq!(refused, Err(Error::InsufficientStock { requested: 11, available: 10 }));
//! ```
//!
//! Events are stored with postcard, which is not self-describing: the order of the
//! [`Event`] variants and of their fields is the stored format. Add new variants at the
//! end, never reorder or change a field; a change of shape needs a new
//! [`EVENT_SCHEMA_VERSION`](eventstore::Aggregate::EVENT_SCHEMA_VERSION) and a decoder
//! for the old one. The golden test in this crate pins the bytes.

use std::collections::BTreeMap;

use eventstore::Aggregate;
use serde::{Deserialize, Serialize};

/// What can be asked of a sku's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a new sku. Its stream must be `stock-<sku>`.
    RegisterSku {
        /// The sku, the same as in the stream id; not blank.
        sku: String,
        /// A display name; not blank.
        name: String,
        /// The price of one unit in minor currency units (cents); above 0.
        unit_price: u64,
    },
    /// Adds units to the stock on hand.
    Restock {
        /// How many units arrived; above 0.
        quantity: u64,
    },
    /// Holds units back for an order until it is confirmed or cancelled.
    Reserve {
        /// The order the units are for; not blank.
        order_id: String,
        /// How many units; above 0 and at most what is available.
        quantity: u64,
    },
    /// Gives an order's whole reservation back to what is available.
    Release {
        /// The order whose reservation is released.
        order_id: String,
    },
    /// Takes an order's reservation out of stock for good: the goods are shipped.
    ConfirmReservation {
        /// The order whose reservation is confirmed.
        order_id: String,
    },
}

/// What happened to a sku's stock. Stored with postcard: append variants, never
/// reorder them or their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// The sku was registered.
    SkuRegistered {
        /// The sku.
        sku: String,
        /// Its display name.
        name: String,
        /// The price of one unit in minor units.
        unit_price: u64,
    },
    /// Units arrived and were added to the stock on hand.
    Restocked {
        /// How many units.
        quantity: u64,
    },
    /// Units were held back for an order.
    StockReserved {
        /// The order.
        order_id: String,
        /// How many units.
        quantity: u64,
        /// The unit price when the reservation was made, in minor units.
        unit_price: u64,
    },
    /// An order's reservation was given back to what is available.
    StockReleased {
        /// The order.
        order_id: String,
        /// How many units were released: the whole reservation.
        quantity: u64,
    },
    /// An order's reservation left the stock for good.
    ReservationConfirmed {
        /// The order.
        order_id: String,
        /// How many units left the stock: the whole reservation.
        quantity: u64,
    },
}

/// Why a command on a sku's stock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The sku is not registered. Over HTTP a 404; a saga treats it as a rejection of
    /// the order line and compensates.
    #[error("the sku is not registered")]
    UnknownSku,

    /// The sku is registered already. Over HTTP a 409; registering is not an update.
    #[error("sku {sku:?} is already registered")]
    AlreadyRegistered {
        /// The registered sku.
        sku: String,
    },

    /// The sku was blank. A malformed command: over HTTP a 422.
    #[error("the sku must not be blank")]
    BlankSku,

    /// The name was blank. A malformed command: over HTTP a 422.
    #[error("the name must not be blank")]
    BlankName,

    /// The order id was blank. A malformed command: over HTTP a 422.
    #[error("the order id must not be blank")]
    BlankOrderId,

    /// The unit price was 0: an order of it could never be charged. Over HTTP a 422.
    #[error("the unit price must be above 0")]
    ZeroPrice,

    /// The quantity was 0. A malformed command: over HTTP a 422.
    #[error("the quantity must be above 0")]
    ZeroQuantity,

    /// Restocking would overflow the stock counter. Over HTTP a 422; the quantity is
    /// absurd.
    #[error("restocking {quantity} would overflow the stock of {on_hand}")]
    StockOverflow {
        /// The quantity asked for.
        quantity: u64,
        /// The stock on hand.
        on_hand: u64,
    },

    /// Fewer units are available (on hand and not reserved) than asked for. A domain
    /// rule: over HTTP a 422; the fulfilment saga cancels the order and compensates.
    #[error("insufficient stock: {requested} requested, {available} available")]
    InsufficientStock {
        /// The quantity asked for.
        requested: u64,
        /// What is available.
        available: u64,
    },

    /// The order holds a reservation of this sku already. One reservation per order and
    /// sku: a retried command is recognised by its command id at the store, so this is
    /// a second, different request. Over HTTP a 409; a saga that sees it for its own
    /// order knows the reservation is in place.
    #[error("order {order_id:?} already reserved {quantity} units")]
    AlreadyReserved {
        /// The order.
        order_id: String,
        /// What it holds.
        quantity: u64,
    },

    /// The order holds no reservation of this sku (never reserved, or already released
    /// or confirmed). Over HTTP a 404; a compensating saga treats it as done.
    #[error("order {order_id:?} holds no reservation")]
    NoReservation {
        /// The order.
        order_id: String,
    },
}

/// One order's hold on a sku.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// How many units are held.
    pub quantity: u64,
    /// The unit price when the reservation was made, in minor units.
    pub unit_price: u64,
}

/// The stock of one sku, folded from its stream.
///
/// `on_hand` counts the units in the warehouse, reserved ones included;
/// `reserved` is the sum of the open reservations, so `available = on_hand - reserved`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    registered: bool,
    sku: String,
    name: String,
    unit_price: u64,
    on_hand: u64,
    reserved: u64,
    reservations: BTreeMap<String, Reservation>,
}

impl Stock {
    /// Whether the sku is registered; every other field is empty until it is.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The sku.
    pub fn sku(&self) -> &str {
        &self.sku
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current price of one unit, in minor units.
    pub fn unit_price(&self) -> u64 {
        self.unit_price
    }

    /// The units in the warehouse, reserved ones included.
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    /// The units held by open reservations.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The units that can still be reserved: on hand minus reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }

    /// The open reservations, by order id.
    pub fn reservations(&self) -> &BTreeMap<String, Reservation> {
        &self.reservations
    }

    /// The open reservation of one order, if any.
    pub fn reservation(&self, order_id: &str) -> Option<Reservation> {
        self.reservations.get(order_id).copied()
    }

    fn register(&self, sku: &str, name: &str, unit_price: u64) -> Result<Vec<Event>, Error> {
        if self.registered {
            return Err(Error::AlreadyRegistered {
                sku: self.sku.clone(),
            });
        }
        if is_blank(sku) {
            return Err(Error::BlankSku);
        }
        if is_blank(name) {
            return Err(Error::BlankName);
        }
        if unit_price == 0 {
            return Err(Error::ZeroPrice);
        }
        Ok(vec![Event::SkuRegistered {
            sku: sku.to_owned(),
            name: name.to_owned(),
            unit_price,
        }])
    }

    fn restock(&self, quantity: u64) -> Result<Vec<Event>, Error> {
        if quantity == 0 {
            return Err(Error::ZeroQuantity);
        }
        if self.on_hand.checked_add(quantity).is_none() {
            return Err(Error::StockOverflow {
                quantity,
                on_hand: self.on_hand,
            });
        }
        Ok(vec![Event::Restocked { quantity }])
    }

    fn reserve(&self, order_id: &str, quantity: u64) -> Result<Vec<Event>, Error> {
        if is_blank(order_id) {
            return Err(Error::BlankOrderId);
        }
        if quantity == 0 {
            return Err(Error::ZeroQuantity);
        }
        if let Some(held) = self.reservation(order_id) {
            return Err(Error::AlreadyReserved {
                order_id: order_id.to_owned(),
                quantity: held.quantity,
            });
        }
        if quantity > self.available() {
            return Err(Error::InsufficientStock {
                requested: quantity,
                available: self.available(),
            });
        }
        Ok(vec![Event::StockReserved {
            order_id: order_id.to_owned(),
            quantity,
            unit_price: self.unit_price,
        }])
    }

    /// The open reservation that a release or confirmation settles.
    fn open_reservation(&self, order_id: &str) -> Result<Reservation, Error> {
        if is_blank(order_id) {
            return Err(Error::BlankOrderId);
        }
        self.reservation(order_id)
            .ok_or_else(|| Error::NoReservation {
                order_id: order_id.to_owned(),
            })
    }
}

impl Aggregate for Stock {
    type Command = Command;
    type Event = Event;
    type Error = Error;

    const CATEGORY: &'static str = "stock";

    fn decide(&self, command: &Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::RegisterSku {
                sku,
                name,
                unit_price,
            } => self.register(sku, name, *unit_price),
            _ if !self.registered => Err(Error::UnknownSku),
            Command::Restock { quantity } => self.restock(*quantity),
            Command::Reserve { order_id, quantity } => self.reserve(order_id, *quantity),
            Command::Release { order_id } => {
                let held = self.open_reservation(order_id)?;
                Ok(vec![Event::StockReleased {
                    order_id: order_id.clone(),
                    quantity: held.quantity,
                }])
            }
            Command::ConfirmReservation { order_id } => {
                let held = self.open_reservation(order_id)?;
                Ok(vec![Event::ReservationConfirmed {
                    order_id: order_id.clone(),
                    quantity: held.quantity,
                }])
            }
        }
    }

    fn evolve(mut self, event: &Event) -> Self {
        // Arithmetic saturates: `decide` never emits an event that would overflow, and
        // folding a stored event must not panic whatever the log holds.
        match event {
            Event::SkuRegistered {
                sku,
                name,
                unit_price,
            } => {
                self.registered = true;
                self.sku.clone_from(sku);
                self.name.clone_from(name);
                self.unit_price = *unit_price;
            }
            Event::Restocked { quantity } => {
                self.on_hand = self.on_hand.saturating_add(*quantity);
            }
            Event::StockReserved {
                order_id,
                quantity,
                unit_price,
            } => {
                self.reserved = self.reserved.saturating_add(*quantity);
                self.reservations.insert(
                    order_id.clone(),
                    Reservation {
                        quantity: *quantity,
                        unit_price: *unit_price,
                    },
                );
            }
            Event::StockReleased { order_id, quantity } => {
                self.reservations.remove(order_id);
                self.reserved = self.reserved.saturating_sub(*quantity);
            }
            Event::ReservationConfirmed { order_id, quantity } => {
                self.reservations.remove(order_id);
                self.reserved = self.reserved.saturating_sub(*quantity);
                self.on_hand = self.on_hand.saturating_sub(*quantity);
            }
        }
        self
    }

    fn event_type(event: &Event) -> &'static str {
        match event {
            Event::SkuRegistered { .. } => "SkuRegistered",
            Event::Restocked { .. } => "Restocked",
            Event::StockReserved { .. } => "StockReserved",
            Event::StockReleased { .. } => "StockReleased",
            Event::ReservationConfirmed { .. } => "ReservationConfirmed",
        }
    }
}

/// Decodes a stored stock event (any schema version this code knows) into JSON for
/// display over HTTP or in the CLI: the variant's fields, e.g. `{"quantity":5}` for a
/// `Restocked` ([`eventstore::event_json`]).
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let event = Stock::decode_event(schema_version, payload)?;
    Ok(eventstore::event_json(&event)
        .expect("a stock event always converts to JSON: derived Serialize, no maps"))
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests;
