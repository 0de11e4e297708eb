//! The `sales` read model: what each sku sold in confirmed orders (`stock-*` streams: a
//! reservation records the unit price, its confirmation the quantity that left the
//! stock), and the grand totals. Each sku's open reservations (and their unit prices)
//! are kept until they are confirmed or released.

use std::collections::BTreeMap;

use eventstore::{Aggregate, Model, StoredEvent};
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};

use crate::{SALES, decode, entity, page};

/// What one sku sold in confirmed orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkuSales {
    /// The sku.
    pub sku: String,
    /// Units sold.
    pub quantity: u64,
    /// Revenue in minor units: each confirmed reservation's quantity times the unit
    /// price it was reserved at.
    pub revenue: u64,
    /// Confirmed orders that included the sku.
    pub orders: u64,
}

/// What all skus sold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SalesTotals {
    /// Units sold.
    pub quantity: u64,
    /// Revenue in minor units.
    pub revenue: u64,
    /// Confirmed order lines.
    pub order_lines: u64,
}

/// An open reservation: what a confirmation will sell, at what price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct OpenReservation {
    quantity: u64,
    unit_price: u64,
}

/// Sku -> sales.
const SALES_BY_SKU: &str = "skus";
/// Sku -> open reservations by order id.
const OPEN: &str = "open";
/// The empty key -> the totals.
const TOTALS: &str = "totals";

/// Per-sku sales of confirmed orders (`stock-*` streams: a reservation records the unit
/// price, its confirmation the quantity that left the stock).
#[derive(Debug, Clone, Copy, Default)]
pub struct SalesProjection;

impl Projection for SalesProjection {
    fn name(&self) -> &str {
        SALES
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(sku) = entity(event.stream_id, inventory::Stock::CATEGORY) else {
            return Ok(());
        };
        let take_open = |changes: &mut Changes, order_id: &str| {
            let open = changes.entry::<BTreeMap<String, OpenReservation>>(OPEN, sku.as_bytes())?;
            let found = open.as_mut().and_then(|orders| orders.remove(order_id));
            if open.as_ref().is_some_and(BTreeMap::is_empty) {
                *open = None;
            }
            found.ok_or_else(|| {
                ApplyError::Inconsistent(format!(
                    "order {order_id:?} holds no reservation of sku {sku:?}"
                ))
            })
        };
        match decode::<inventory::Stock>(event)? {
            inventory::Event::SkuRegistered { .. } | inventory::Event::Restocked { .. } => {}
            inventory::Event::StockReserved {
                order_id,
                quantity,
                unit_price,
            } => {
                changes
                    .entry::<BTreeMap<String, OpenReservation>>(OPEN, sku.as_bytes())?
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        order_id,
                        OpenReservation {
                            quantity,
                            unit_price,
                        },
                    );
            }
            inventory::Event::StockReleased { order_id, .. } => {
                take_open(changes, &order_id)?;
            }
            inventory::Event::ReservationConfirmed { order_id, quantity } => {
                let reservation = take_open(changes, &order_id)?;
                let revenue = quantity.saturating_mul(reservation.unit_price);
                let sales = changes
                    .entry::<SkuSales>(SALES_BY_SKU, sku.as_bytes())?
                    .get_or_insert_with(|| SkuSales {
                        sku: sku.to_owned(),
                        ..SkuSales::default()
                    });
                sales.quantity = sales.quantity.saturating_add(quantity);
                sales.revenue = sales.revenue.saturating_add(revenue);
                sales.orders += 1;
                let totals = changes
                    .entry::<SalesTotals>(TOTALS, b"")?
                    .get_or_insert_with(SalesTotals::default);
                totals.quantity = totals.quantity.saturating_add(quantity);
                totals.revenue = totals.revenue.saturating_add(revenue);
                totals.order_lines += 1;
            }
        }
        Ok(())
    }
}

/// A page of the sales report: skus in sku order, and the grand totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SalesReport {
    /// What all skus sold.
    pub totals: SalesTotals,
    /// The skus of this page.
    pub skus: Vec<SkuSales>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// The grand totals and up to `limit` skus after `after`, in sku order.
pub fn sales(model: &Model, after: Option<&str>, limit: usize) -> Result<SalesReport, Error> {
    let totals = projections::read::<SalesTotals>(model, TOTALS, b"")?.unwrap_or_default();
    let (skus, next_after) = page::<SkuSales>(model, SALES_BY_SKU, after, limit)?;
    Ok(SalesReport {
        totals,
        skus,
        next_after,
    })
}

#[cfg(test)]
mod tests {
    use inventory::Event;
    use projections::ApplyError;

    use super::*;
    use crate::check::{check, rows, stock};

    fn reserved(
        sku: &str,
        order_id: &str,
        quantity: u64,
        unit_price: u64,
    ) -> crate::check::Recorded {
        stock(
            sku,
            Event::StockReserved {
                order_id: order_id.into(),
                quantity,
                unit_price,
            },
        )
    }

    fn confirmed(sku: &str, order_id: &str, quantity: u64) -> crate::check::Recorded {
        stock(
            sku,
            Event::ReservationConfirmed {
                order_id: order_id.into(),
                quantity,
            },
        )
    }

    #[test]
    fn a_reservation_is_open_until_confirmed() {
        let model = check(&SalesProjection, &[], &[reserved("apple", "o1", 3, 120)]).unwrap();
        assert_eq!(
            rows::<BTreeMap<String, OpenReservation>>(&model, OPEN),
            vec![BTreeMap::from([(
                "o1".to_owned(),
                OpenReservation {
                    quantity: 3,
                    unit_price: 120,
                }
            )])]
        );
        assert!(rows::<SkuSales>(&model, SALES_BY_SKU).is_empty());
    }

    #[test]
    fn a_confirmation_sells_at_the_price_reserved() {
        let model = check(
            &SalesProjection,
            &[
                reserved("apple", "o1", 3, 120),
                reserved("apple", "o2", 1, 130),
                reserved("pear", "o2", 2, 50),
            ],
            &[
                confirmed("apple", "o1", 3),
                confirmed("apple", "o2", 1),
                confirmed("pear", "o2", 2),
            ],
        )
        .unwrap();
        assert_eq!(
            rows::<SkuSales>(&model, SALES_BY_SKU),
            vec![
                SkuSales {
                    sku: "apple".into(),
                    quantity: 4,
                    revenue: 490,
                    orders: 2,
                },
                SkuSales {
                    sku: "pear".into(),
                    quantity: 2,
                    revenue: 100,
                    orders: 1,
                },
            ]
        );
        assert_eq!(
            rows::<SalesTotals>(&model, TOTALS),
            vec![SalesTotals {
                quantity: 6,
                revenue: 590,
                order_lines: 3,
            }]
        );
        assert!(rows::<BTreeMap<String, OpenReservation>>(&model, OPEN).is_empty());
    }

    #[test]
    fn a_released_reservation_sells_nothing() {
        let model = check(
            &SalesProjection,
            &[reserved("apple", "o1", 3, 120)],
            &[stock(
                "apple",
                Event::StockReleased {
                    order_id: "o1".into(),
                    quantity: 3,
                },
            )],
        )
        .unwrap();
        assert!(model.tables().is_empty());
    }

    #[test]
    fn a_confirmation_without_a_reservation_is_inconsistent() {
        let (error, _) = check(&SalesProjection, &[], &[confirmed("apple", "o1", 3)]).unwrap_err();
        assert!(matches!(error, ApplyError::Inconsistent(_)), "{error}");
    }
}
