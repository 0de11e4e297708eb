//! The `inventory` read model: the stock level of each sku (`stock-*` streams), paged
//! in sku order; one key per sku.

use eventstore::{Aggregate, Model, StoredEvent};
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};

use crate::{INVENTORY, decode, entity, page};

/// The stock of one sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkuLevel {
    /// The sku.
    pub sku: String,
    /// Its display name.
    pub name: String,
    /// The price of one unit, in minor units.
    pub unit_price: u64,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: u64,
    /// Units held by open reservations.
    pub reserved: u64,
    /// Units that can still be reserved: on hand minus reserved.
    pub available: u64,
}

/// Sku -> level.
const SKUS: &str = "skus";

/// Stock levels per sku (`stock-*` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct InventoryProjection;

impl Projection for InventoryProjection {
    fn name(&self) -> &str {
        INVENTORY
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(sku) = entity(event.stream_id, inventory::Stock::CATEGORY) else {
            return Ok(());
        };
        let event = decode::<inventory::Stock>(event)?;
        if let inventory::Event::SkuRegistered {
            sku: _,
            name,
            unit_price,
        } = event
        {
            let level = SkuLevel {
                sku: sku.to_owned(),
                name,
                unit_price,
                on_hand: 0,
                reserved: 0,
                available: 0,
            };
            return changes.put(SKUS, sku.as_bytes(), level);
        }
        let level = changes
            .entry::<SkuLevel>(SKUS, sku.as_bytes())?
            .as_mut()
            .ok_or_else(|| ApplyError::Inconsistent(format!("sku {sku:?} is not registered")))?;
        // Saturating, as the aggregate folds: a stored event never panics a projection.
        match event {
            inventory::Event::SkuRegistered { .. } => unreachable!("handled above"),
            inventory::Event::Restocked { quantity } => {
                level.on_hand = level.on_hand.saturating_add(quantity);
            }
            inventory::Event::StockReserved { quantity, .. } => {
                level.reserved = level.reserved.saturating_add(quantity);
            }
            inventory::Event::StockReleased { quantity, .. } => {
                level.reserved = level.reserved.saturating_sub(quantity);
            }
            inventory::Event::ReservationConfirmed { quantity, .. } => {
                level.reserved = level.reserved.saturating_sub(quantity);
                level.on_hand = level.on_hand.saturating_sub(quantity);
            }
        }
        level.available = level.on_hand.saturating_sub(level.reserved);
        Ok(())
    }
}

/// A page of skus, in sku order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkuPage {
    /// The skus of this page.
    pub skus: Vec<SkuLevel>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Up to `limit` skus after `after` (exclusive), in sku order.
pub fn skus(model: &Model, after: Option<&str>, limit: usize) -> Result<SkuPage, Error> {
    let (items, next_after) = page::<SkuLevel>(model, SKUS, after, limit)?;
    Ok(SkuPage {
        skus: items,
        next_after,
    })
}

/// The stock of one sku, if registered.
pub fn sku(model: &Model, sku: &str) -> Result<Option<SkuLevel>, Error> {
    projections::read(model, SKUS, sku.as_bytes())
}

#[cfg(test)]
mod tests {
    use inventory::Event;
    use projections::ApplyError;

    use super::*;
    use crate::check::{check, rows, stock};

    fn registered(sku: &str) -> crate::check::Recorded {
        stock(
            sku,
            Event::SkuRegistered {
                sku: sku.into(),
                name: "Apple".into(),
                unit_price: 120,
            },
        )
    }

    fn level(on_hand: u64, reserved: u64, available: u64) -> SkuLevel {
        SkuLevel {
            sku: "apple".into(),
            name: "Apple".into(),
            unit_price: 120,
            on_hand,
            reserved,
            available,
        }
    }

    #[test]
    fn a_registered_sku_has_no_stock() {
        let model = check(&InventoryProjection, &[], &[registered("apple")]).unwrap();
        assert_eq!(rows::<SkuLevel>(&model, SKUS), vec![level(0, 0, 0)]);
    }

    #[test]
    fn restocks_reservations_releases_and_confirmations_move_the_levels() {
        let model = check(
            &InventoryProjection,
            &[registered("apple")],
            &[
                stock("apple", Event::Restocked { quantity: 10 }),
                stock(
                    "apple",
                    Event::StockReserved {
                        order_id: "o1".into(),
                        quantity: 4,
                        unit_price: 120,
                    },
                ),
                stock(
                    "apple",
                    Event::StockReserved {
                        order_id: "o2".into(),
                        quantity: 3,
                        unit_price: 120,
                    },
                ),
                stock(
                    "apple",
                    Event::StockReleased {
                        order_id: "o2".into(),
                        quantity: 3,
                    },
                ),
                stock(
                    "apple",
                    Event::ReservationConfirmed {
                        order_id: "o1".into(),
                        quantity: 4,
                    },
                ),
                stock(
                    "apple",
                    Event::StockReserved {
                        order_id: "o3".into(),
                        quantity: 2,
                        unit_price: 120,
                    },
                ),
            ],
        )
        .unwrap();
        assert_eq!(rows::<SkuLevel>(&model, SKUS), vec![level(6, 2, 4)]);
    }

    #[test]
    fn levels_saturate_instead_of_failing() {
        let model = check(
            &InventoryProjection,
            &[registered("apple")],
            &[stock(
                "apple",
                Event::StockReleased {
                    order_id: "o1".into(),
                    quantity: 5,
                },
            )],
        )
        .unwrap();
        assert_eq!(rows::<SkuLevel>(&model, SKUS), vec![level(0, 0, 0)]);
    }

    #[test]
    fn stock_of_an_unregistered_sku_is_inconsistent() {
        let (error, model) = check(
            &InventoryProjection,
            &[],
            &[stock("apple", Event::Restocked { quantity: 1 })],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::Inconsistent(_)), "{error}");
        assert!(model.tables().is_empty());
    }
}
