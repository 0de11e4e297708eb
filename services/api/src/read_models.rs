//! The read models of the reference domain, their projections and their queries.
//!
//! | projection | from | answers |
//! | --- | --- | --- |
//! | `orders` | `order-*` | order summaries (status, lines, total, cancel reason), per customer, paged |
//! | `inventory` | `stock-*` | stock per sku: on hand, reserved, available; paged by sku |
//! | `accounts` | `account-*` | balance per customer, with deposits, charges and refunds |
//! | `sales` | `stock-*` | per-sku sales of confirmed orders: quantity, revenue, orders; and the grand total |
//!
//! The keys are chosen for rebuild speed: sled costs microseconds per key written, and a
//! batch writes each key once, so each projection keeps few keys per batch. Order
//! summaries are stored per customer in chunks of [`ORDERS_PER_CHUNK`] (a customer's
//! orders in placement order; the first chunk also counts them), not one key per order,
//! so a customer with a few orders costs one key; the orders still pending are kept
//! in a small table of buckets, which tells a confirmation or cancellation (whose event
//! names no customer) where its summary is. Sales keep each sku's open reservations (and
//! their unit prices) until they are confirmed or released.
//!
//! [`Projections::start`] builds the runner over all four; the handle answers the
//! queries used by `GET /api/v1/customers/{customer_id}/orders`,
//! `GET /api/v1/inventory/skus` and `GET /api/v1/reports/sales`, reports status, starts
//! rebuilds and waits for positions (read-your-writes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{Aggregate, EventStore, Model, Position, StoredEvent};
use projections::{
    ApplyError, Changes, Error, Handle, Projection, Rebuild, Runner, RunnerConfig, Status,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The order summaries, per customer.
pub const ORDERS: &str = "orders";
/// Stock levels per sku.
pub const INVENTORY: &str = "inventory";
/// Account balances per customer.
pub const ACCOUNTS: &str = "accounts";
/// Sales of confirmed orders per sku.
pub const SALES: &str = "sales";

/// Order summaries per stored chunk: a customer's orders are stored 32 to a key, so a
/// rebuild writes one key per customer and batch rather than one per order, and a live
/// update rewrites a value of at most 32 summaries.
pub const ORDERS_PER_CHUNK: u64 = 32;

/// Buckets of the pending-orders table (orders placed but not yet confirmed or
/// cancelled), by a hash of the order id.
const PENDING_BUCKETS: u64 = 256;

/// Every projection of the reference domain.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(OrdersProjection),
        Arc::new(InventoryProjection),
        Arc::new(AccountsProjection),
        Arc::new(SalesProjection),
    ]
}

/// The id of the entity of `stream_id` if the stream is of `category` (`order-42` is
/// order `42`).
fn entity<'a>(stream_id: &'a str, category: &str) -> Option<&'a str> {
    stream_id.strip_prefix(category)?.strip_prefix('-')
}

fn decode<A: Aggregate>(event: &StoredEvent<'_>) -> Result<A::Event, ApplyError> {
    A::decode_event(event.schema_version, event.payload).map_err(|error| ApplyError::Decode {
        event_type: event.event_type.to_owned(),
        reason: error.to_string(),
    })
}

/// FNV-1a: a stable hash (the same on every machine and build) for bucket numbers.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------
// Orders

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, waiting for stock and payment.
    Pending,
    /// Confirmed; final.
    Confirmed,
    /// Cancelled; final.
    Cancelled,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    /// The sku.
    pub sku: String,
    /// How many units.
    pub quantity: u64,
}

/// The summary of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Where it is.
    pub status: OrderStatus,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// The amount charged, in minor units, once confirmed.
    pub total: Option<u64>,
    /// Why it was cancelled, once cancelled.
    pub cancel_reason: Option<String>,
    /// The log position of its `OrderPlaced` event.
    #[schema(value_type = u64)]
    pub placed_at: Position,
}

/// An order as stored, in its customer's chunk (which names the customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOrder {
    order_id: String,
    status: OrderStatus,
    lines: Vec<OrderLine>,
    total: Option<u64>,
    cancel_reason: Option<String>,
    placed_at: u64,
}

impl StoredOrder {
    fn summary(self, customer_id: &str) -> OrderSummary {
        OrderSummary {
            order_id: self.order_id,
            customer_id: customer_id.to_owned(),
            status: self.status,
            lines: self.lines,
            total: self.total,
            cancel_reason: self.cancel_reason,
            placed_at: Position(self.placed_at),
        }
    }
}

/// Up to [`ORDERS_PER_CHUNK`] of a customer's orders, in placement order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OrderChunk {
    /// In chunk 0: how many orders the customer has placed in all (0 in the others), so
    /// a customer with few orders costs one key.
    placed: u64,
    orders: Vec<StoredOrder>,
}

/// Where the summary of a pending order is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingOrder {
    customer_id: String,
    /// The customer's order number (from 0): chunk `index / 32`, slot `index % 32`.
    index: u64,
}

/// Customer id + chunk number -> up to 32 orders.
const ORDER_CHUNKS: &str = "chunks";
/// Bucket -> pending orders (order id -> where its summary is).
const PENDING: &str = "pending";

/// A customer's key: its length (2 bytes) and its bytes, so that no customer's key is a
/// prefix of another's.
fn customer_key(customer_id: &str) -> Result<Vec<u8>, ApplyError> {
    let length = u16::try_from(customer_id.len()).map_err(|_| {
        ApplyError::Inconsistent(format!(
            "a customer id of {} bytes is too long",
            customer_id.len()
        ))
    })?;
    let mut key = Vec::with_capacity(2 + customer_id.len() + 4);
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(customer_id.as_bytes());
    Ok(key)
}

/// The key of the chunk holding the customer's order number `index`.
fn chunk_key(customer: &[u8], index: u64) -> Result<Vec<u8>, ApplyError> {
    let chunk = u32::try_from(index / ORDERS_PER_CHUNK)
        .map_err(|_| ApplyError::Inconsistent("a customer has too many orders".into()))?;
    let mut key = Vec::with_capacity(customer.len() + 4);
    key.extend_from_slice(customer);
    key.extend_from_slice(&chunk.to_be_bytes());
    Ok(key)
}

fn pending_bucket(order_id: &str) -> [u8; 2] {
    ((stable_hash(order_id.as_bytes()) % PENDING_BUCKETS) as u16).to_be_bytes()
}

/// Order summaries, grouped by customer (`order-*` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersProjection;

impl OrdersProjection {
    /// Takes a pending order out of the pending table and returns where its summary is.
    fn settle(changes: &mut Changes, order_id: &str) -> Result<PendingOrder, ApplyError> {
        let bucket = pending_bucket(order_id);
        let pending = changes.entry::<BTreeMap<String, PendingOrder>>(PENDING, &bucket)?;
        let found = pending.as_mut().and_then(|orders| orders.remove(order_id));
        if pending.as_ref().is_some_and(BTreeMap::is_empty) {
            *pending = None;
        }
        found.ok_or_else(|| {
            ApplyError::Inconsistent(format!(
                "order {order_id:?} is settled but is not pending (never placed, or settled before)"
            ))
        })
    }

    fn update(
        changes: &mut Changes,
        order_id: &str,
        change: impl FnOnce(&mut StoredOrder),
    ) -> Result<(), ApplyError> {
        let pending = Self::settle(changes, order_id)?;
        let key = chunk_key(&customer_key(&pending.customer_id)?, pending.index)?;
        let slot = (pending.index % ORDERS_PER_CHUNK) as usize;
        let order = changes
            .entry::<OrderChunk>(ORDER_CHUNKS, &key)?
            .as_mut()
            .and_then(|chunk| chunk.orders.get_mut(slot))
            .filter(|order| order.order_id == order_id)
            .ok_or_else(|| {
                ApplyError::Inconsistent(format!("the summary of order {order_id:?} is missing"))
            })?;
        change(order);
        Ok(())
    }
}

impl Projection for OrdersProjection {
    fn name(&self) -> &str {
        ORDERS
    }

    fn version(&self) -> u32 {
        1
    }

    /// Every order event, and the most bytes written: about as much work as the other
    /// three together.
    fn weight(&self) -> u32 {
        3
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(order_id) = entity(event.stream_id, orders::Order::CATEGORY) else {
            return Ok(());
        };
        match decode::<orders::Order>(event)? {
            orders::Event::OrderPlaced {
                order_id: _,
                customer_id,
                lines,
            } => {
                let customer = customer_key(&customer_id)?;
                let order = StoredOrder {
                    order_id: order_id.to_owned(),
                    status: OrderStatus::Pending,
                    lines: lines
                        .into_iter()
                        .map(|line| OrderLine {
                            sku: line.sku,
                            quantity: line.quantity,
                        })
                        .collect(),
                    total: None,
                    cancel_reason: None,
                    placed_at: event.position,
                };
                let first = chunk_key(&customer, 0)?;
                let first = changes
                    .entry::<OrderChunk>(ORDER_CHUNKS, &first)?
                    .get_or_insert_with(OrderChunk::default);
                let index = first.placed;
                first.placed += 1;
                if index < ORDERS_PER_CHUNK {
                    first.orders.push(order);
                } else if index % ORDERS_PER_CHUNK == 0 {
                    let chunk = OrderChunk {
                        placed: 0,
                        orders: vec![order],
                    };
                    changes.put(ORDER_CHUNKS, &chunk_key(&customer, index)?, chunk)?;
                } else {
                    changes
                        .entry::<OrderChunk>(ORDER_CHUNKS, &chunk_key(&customer, index)?)?
                        .get_or_insert_with(OrderChunk::default)
                        .orders
                        .push(order);
                }
                changes
                    .entry::<BTreeMap<String, PendingOrder>>(PENDING, &pending_bucket(order_id))?
                    .get_or_insert_with(BTreeMap::new)
                    .insert(order_id.to_owned(), PendingOrder { customer_id, index });
            }
            orders::Event::OrderConfirmed { total } => {
                Self::update(changes, order_id, |order| {
                    order.status = OrderStatus::Confirmed;
                    order.total = Some(total);
                })?;
            }
            orders::Event::OrderCancelled { reason } => {
                Self::update(changes, order_id, |order| {
                    order.status = OrderStatus::Cancelled;
                    order.cancel_reason = Some(reason);
                })?;
            }
        }
        Ok(())
    }
}

/// One page of a customer's orders, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CustomerOrders {
    /// The customer.
    pub customer_id: String,
    /// How many orders the customer has placed in all.
    pub total_orders: u64,
    /// The orders of this page.
    pub orders: Vec<OrderSummary>,
    /// Pass as `after` for the next page; absent on the last page. Orders are numbered
    /// from 0 in the order they were placed.
    pub next_after: Option<u64>,
}

/// Up to `limit` orders of `customer_id`, oldest first, after the order numbered
/// `after` (orders are numbered from 0 as they were placed).
pub fn customer_orders(
    model: &Model,
    customer_id: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<CustomerOrders, Error> {
    let empty = CustomerOrders {
        customer_id: customer_id.to_owned(),
        total_orders: 0,
        orders: Vec::new(),
        next_after: None,
    };
    let Ok(customer) = customer_key(customer_id) else {
        // Too long to be stored: no orders can be under it.
        return Ok(empty);
    };
    let first_key = chunk_key(&customer, 0).expect("chunk 0 has a key");
    let Some(first_chunk) = projections::read::<OrderChunk>(model, ORDER_CHUNKS, &first_key)?
    else {
        return Ok(empty);
    };
    let total_orders = first_chunk.placed;
    let first = after.map_or(0, |after| after.saturating_add(1));
    let last = total_orders.min(first.saturating_add(limit as u64));
    let mut orders = Vec::new();
    let mut index = first;
    let mut cached = Some((0, first_chunk));
    while index < last {
        let number = index / ORDERS_PER_CHUNK;
        let chunk = match cached.take() {
            Some((cached_number, chunk)) if cached_number == number => chunk,
            _ => match chunk_key(&customer, index) {
                Ok(key) => {
                    projections::read::<OrderChunk>(model, ORDER_CHUNKS, &key)?.unwrap_or_default()
                }
                Err(_) => break,
            },
        };
        let from = (index % ORDERS_PER_CHUNK) as usize;
        let take = ((last - index) as usize).min(chunk.orders.len().saturating_sub(from));
        if take == 0 {
            break;
        }
        orders.extend(
            chunk
                .orders
                .into_iter()
                .skip(from)
                .take(take)
                .map(|order| order.summary(customer_id)),
        );
        index += take as u64;
    }
    let next_after = (index < total_orders && index > first).then(|| index - 1);
    Ok(CustomerOrders {
        customer_id: customer_id.to_owned(),
        total_orders,
        orders,
        next_after,
    })
}

// ---------------------------------------------------------------------------------------
// Inventory

/// The stock of one sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// Up to `limit` values of a table keyed by text, after `after`, and the key to pass
/// for the next page if there is one.
fn page<V: projections::Value>(
    model: &Model,
    table: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<V>, Option<String>), Error> {
    let mut entries = projections::scan::<V>(
        model,
        table,
        b"",
        after.map(str::as_bytes),
        limit.saturating_add(1),
    )?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_after = match entries.last() {
        Some((key, _)) if more => Some(String::from_utf8_lossy(key).into_owned()),
        _ => None,
    };
    Ok((
        entries.into_iter().map(|(_, value)| value).collect(),
        next_after,
    ))
}

// ---------------------------------------------------------------------------------------
// Accounts

/// One customer's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountBalance {
    /// The customer.
    pub customer_id: String,
    /// The balance, in minor units.
    pub balance: u64,
    /// All deposits, in minor units.
    pub deposited: u64,
    /// All charges, in minor units (refunded ones included).
    pub charged: u64,
    /// All refunds, in minor units.
    pub refunded: u64,
}

/// Customer id -> account.
const BALANCES: &str = "accounts";

/// Account balances per customer (`account-*` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountsProjection;

impl Projection for AccountsProjection {
    fn name(&self) -> &str {
        ACCOUNTS
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(customer_id) = entity(event.stream_id, payments::Account::CATEGORY) else {
            return Ok(());
        };
        let event = decode::<payments::Account>(event)?;
        if let payments::Event::AccountOpened { .. } = event {
            let account = AccountBalance {
                customer_id: customer_id.to_owned(),
                balance: 0,
                deposited: 0,
                charged: 0,
                refunded: 0,
            };
            return changes.put(BALANCES, customer_id.as_bytes(), account);
        }
        let account = changes
            .entry::<AccountBalance>(BALANCES, customer_id.as_bytes())?
            .as_mut()
            .ok_or_else(|| {
                ApplyError::Inconsistent(format!("the account of {customer_id:?} is not open"))
            })?;
        match event {
            payments::Event::AccountOpened { .. } => unreachable!("handled above"),
            payments::Event::Deposited { amount } => {
                account.balance = account.balance.saturating_add(amount);
                account.deposited = account.deposited.saturating_add(amount);
            }
            payments::Event::Charged { amount, .. } => {
                account.balance = account.balance.saturating_sub(amount);
                account.charged = account.charged.saturating_add(amount);
            }
            payments::Event::Refunded { amount, .. } => {
                account.balance = account.balance.saturating_add(amount);
                account.refunded = account.refunded.saturating_add(amount);
            }
        }
        Ok(())
    }
}

/// A page of accounts, in customer order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AccountPage {
    /// The accounts of this page.
    pub accounts: Vec<AccountBalance>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// One customer's account, if open.
pub fn account(model: &Model, customer_id: &str) -> Result<Option<AccountBalance>, Error> {
    projections::read(model, BALANCES, customer_id.as_bytes())
}

/// Up to `limit` accounts after the customer `after`, in customer order.
pub fn accounts(model: &Model, after: Option<&str>, limit: usize) -> Result<AccountPage, Error> {
    let (accounts, next_after) = page::<AccountBalance>(model, BALANCES, after, limit)?;
    Ok(AccountPage {
        accounts,
        next_after,
    })
}

// ---------------------------------------------------------------------------------------
// Sales

/// What one sku sold in confirmed orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

// ---------------------------------------------------------------------------------------
// The handle

/// The domain's read models, as the HTTP handlers and the CLI use them.
#[derive(Debug, Clone)]
pub struct Projections {
    handle: Handle,
}

impl Projections {
    /// Prepares the runner of every domain projection over `store` (spawn
    /// `runner.run(shutdown)`) and the handle to query them.
    pub fn start(store: &EventStore, config: RunnerConfig) -> Result<(Projections, Runner), Error> {
        let (runner, handle) = Runner::new(store, projections(), config)?;
        Ok((Projections { handle }, runner))
    }

    /// The runner's handle, for what this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The status of every projection (`GET /api/v1/projections`).
    pub fn status(&self) -> Vec<Status> {
        self.handle.status()
    }

    /// Starts a blue-green rebuild of `name`
    /// (`POST /api/v1/projections/{name}/rebuild`).
    pub async fn rebuild(&self, name: &str) -> Result<Rebuild, Error> {
        self.handle.rebuild(name).await
    }

    /// Starts a faulted projection again from its checkpoint.
    pub async fn retry(&self, name: &str) -> Result<(), Error> {
        self.handle.retry(name).await
    }

    /// Read-your-writes across every read model: resolves once all have applied the
    /// event at `min_position`, or fails with [`Error::Timeout`] (503 and the checkpoint)
    /// or [`Error::Faulted`].
    pub async fn wait_for(&self, min_position: Position, timeout: Duration) -> Result<(), Error> {
        self.handle.wait_for_all(min_position, timeout).await
    }

    /// Read-your-writes for one read model (the one a query reads).
    pub async fn wait_for_model(
        &self,
        name: &str,
        min_position: Position,
        timeout: Duration,
    ) -> Result<Position, Error> {
        self.handle.wait_for(name, min_position, timeout).await
    }

    /// `GET /api/v1/customers/{customer_id}/orders`: see [`customer_orders`].
    pub fn customer_orders(
        &self,
        customer_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<CustomerOrders, Error> {
        self.handle.read(ORDERS, |model| {
            customer_orders(model, customer_id, after, limit)
        })
    }

    /// `GET /api/v1/inventory/skus`: see [`skus`].
    pub fn skus(&self, after: Option<&str>, limit: usize) -> Result<SkuPage, Error> {
        self.handle
            .read(INVENTORY, |model| skus(model, after, limit))
    }

    /// The stock of one sku, see [`sku`].
    pub fn sku(&self, sku_id: &str) -> Result<Option<SkuLevel>, Error> {
        self.handle.read(INVENTORY, |model| sku(model, sku_id))
    }

    /// One customer's account, see [`account`].
    pub fn account(&self, customer_id: &str) -> Result<Option<AccountBalance>, Error> {
        self.handle
            .read(ACCOUNTS, |model| account(model, customer_id))
    }

    /// A page of accounts, see [`accounts`].
    pub fn accounts(&self, after: Option<&str>, limit: usize) -> Result<AccountPage, Error> {
        self.handle
            .read(ACCOUNTS, |model| accounts(model, after, limit))
    }

    /// `GET /api/v1/reports/sales`: see [`sales`].
    pub fn sales(&self, after: Option<&str>, limit: usize) -> Result<SalesReport, Error> {
        self.handle.read(SALES, |model| sales(model, after, limit))
    }

    /// A digest of the active model of `name` (tables only, not the checkpoint), to
    /// compare two builds byte for byte.
    pub fn digest(&self, name: &str) -> Result<String, Error> {
        self.handle.read(name, |model| Ok(model.digest()?))
    }
}
