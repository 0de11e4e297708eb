//! `Tally`: a small sales projection for the tests and the crash child, over `sale-<sku>`
//! streams whose events carry text payloads:
//!
//! - `Reserved`: `<order> <quantity> <unit price>` opens a reservation;
//! - `Confirmed`: `<order>` sells what the order reserved, at its price;
//! - `Released`: `<order>` drops the reservation.
//!
//! The model holds, per sku, the open reservations (`open`) and the totals sold
//! (`totals`: quantity, revenue, orders), like the domain's sales read model. A payload
//! that does not parse is a poison event.

use std::collections::BTreeMap;

use eventstore::StoredEvent;
use projections::{ApplyError, Changes, Projection};

/// Sku -> open reservations: order -> (quantity, unit price).
pub const OPEN: &str = "open";
/// Sku -> (quantity, revenue, orders) sold.
pub const TOTALS: &str = "totals";
/// The projection's name.
pub const NAME: &str = "tally";

/// Open reservations of one sku.
pub type Open = BTreeMap<String, (u64, u64)>;
/// Quantity, revenue and orders sold of one sku.
pub type Totals = (u64, u64, u64);

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sale {
    Reserved {
        order: String,
        quantity: u64,
        unit_price: u64,
    },
    Confirmed {
        order: String,
    },
    Released {
        order: String,
    },
}

impl Sale {
    /// The event type and payload of this sale event.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        match self {
            Sale::Reserved {
                order,
                quantity,
                unit_price,
            } => (
                "Reserved",
                format!("{order} {quantity} {unit_price}").into_bytes(),
            ),
            Sale::Confirmed { order } => ("Confirmed", order.clone().into_bytes()),
            Sale::Released { order } => ("Released", order.clone().into_bytes()),
        }
    }

    /// Parses a stored sale event.
    pub fn parse(event_type: &str, payload: &[u8]) -> Result<Sale, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let fields: Vec<&str> = text.split(' ').collect();
        let number = |field: &str| field.parse::<u64>().map_err(|e| format!("{field:?}: {e}"));
        match (event_type, fields.as_slice()) {
            ("Reserved", [order, quantity, unit_price]) => Ok(Sale::Reserved {
                order: (*order).to_owned(),
                quantity: number(quantity)?,
                unit_price: number(unit_price)?,
            }),
            ("Confirmed", [order]) => Ok(Sale::Confirmed {
                order: (*order).to_owned(),
            }),
            ("Released", [order]) => Ok(Sale::Released {
                order: (*order).to_owned(),
            }),
            _ => Err(format!("not a sale event: {event_type} {text:?}")),
        }
    }
}

/// The sku of a `sale-<sku>` stream.
pub fn sku_of(stream_id: &str) -> Option<&str> {
    stream_id.strip_prefix("sale-")
}

/// The tally projection at some version.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub version: u32,
}

impl Projection for Tally {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(sku) = sku_of(event.stream_id) else {
            return Ok(());
        };
        let sale =
            Sale::parse(event.event_type, event.payload).map_err(|reason| ApplyError::Decode {
                event_type: event.event_type.to_owned(),
                reason,
            })?;
        let missing = |order: &str| ApplyError::Inconsistent(format!("{order} holds nothing"));
        match sale {
            Sale::Reserved {
                order,
                quantity,
                unit_price,
            } => {
                changes
                    .entry::<Open>(OPEN, sku.as_bytes())?
                    .get_or_insert_with(Open::new)
                    .insert(order, (quantity, unit_price));
            }
            Sale::Released { order } => {
                let open = changes.entry::<Open>(OPEN, sku.as_bytes())?;
                open.as_mut()
                    .and_then(|open| open.remove(&order))
                    .ok_or_else(|| missing(&order))?;
                if open.as_ref().is_some_and(Open::is_empty) {
                    *open = None;
                }
            }
            Sale::Confirmed { order } => {
                let open = changes.entry::<Open>(OPEN, sku.as_bytes())?;
                let (quantity, unit_price) = open
                    .as_mut()
                    .and_then(|open| open.remove(&order))
                    .ok_or_else(|| missing(&order))?;
                if open.as_ref().is_some_and(Open::is_empty) {
                    *open = None;
                }
                let totals = changes
                    .entry::<Totals>(TOTALS, sku.as_bytes())?
                    .get_or_insert((0, 0, 0));
                totals.0 += quantity;
                totals.1 += quantity * unit_price;
                totals.2 += 1;
            }
        }
        Ok(())
    }
}
