//! The read models of the reference domain: their projections and their queries.
//!
//! | read model | module | from | answers |
//! | --- | --- | --- | --- |
//! | `orders` | [`order_summaries`] | `order-*` | order summaries (status, lines, total, cancel reason), per customer, paged |
//! | `inventory` | [`stock_levels`] | `stock-*` | stock per sku: on hand, reserved, available; paged by sku |
//! | `accounts` | [`balances`] | `account-*` | balance per customer, with deposits, charges and refunds |
//! | `sales` | [`sales`] | `stock-*` | per-sku sales of confirmed orders: quantity, revenue, orders; and the grand total |
//! | `correlations` | [`correlations`] | every event with a correlation id | the log positions of each correlation's events, in log order; kept only on request (below) |
//! | `customers` | [`customers`] | `customer-*` | each customer's profile, sealed (ciphertext with its place), its version, whether and when it was erased |
//! | `personal_data` | [`personal_data`] | every event with declared personal fields | key id -> every sealed field under it (position, stream, event id, type, field) |
//!
//! Read models keep personal data sealed, never in plaintext: the API opens it with the
//! key store when it answers. Which fields are personal comes from the domain crates'
//! declarations (`customers::PERSONAL_FIELDS`, `orders::PERSONAL_FIELDS`; see
//! [`sealed_fields`]).
//!
//! Words, as the whole workspace uses them: a **projection** is the runtime's part (the
//! [`projections::Projection`] trait and the runner that feeds it the log); a **read
//! model** is one of the domain's projections here with its stored tables and its query
//! functions; the **model store** ([`eventstore::ReadModels`], [`eventstore::Model`]) is
//! where read models are kept in sled; a **view** is a JSON shape of the HTTP API.
//!
//! The keys are chosen for rebuild speed: sled costs microseconds per key written, and a
//! batch writes each key once, so each read model keeps few keys per batch (see each
//! module). The modules are named after what they hold, not after the domain crates, so
//! that `orders` always means the domain crate.
//!
//! [`projections()`] are the six every server keeps. `correlations` applies nearly
//! every event (about 6% of `annals bench http`), so, like EventStoreDB's
//! `$by_correlation_id` system projection, it is off by default: [`all_projections()`]
//! adds it, and a server keeps it only with `annals serve --correlations`, which builds
//! it from the start of the log.
//!
//! [`ReadSide::start`] builds the runner over the six, and
//! [`ReadSide::start_with_correlations`] over all seven; the handle answers the queries
//! used by `GET /api/v1/customers/{customer_id}/orders`, `GET /api/v1/inventory/skus`,
//! `GET /api/v1/reports/sales` and (when kept) `GET /api/v1/correlations/{correlation_id}`,
//! reports status, starts rebuilds and waits for positions (read-your-writes). The
//! offline CLI (`annals projections`, `annals replay all`) uses [`projections()`],
//! [`all_projections()`] and [`stored_projections()`] with [`projections::offline`].

use std::sync::Arc;

use eventstore::{Aggregate, EventStore, Model, StoredEvent};
use projections::{ApplyError, Error, Projection};

pub mod balances;
#[cfg(test)]
mod check;
pub mod correlations;
pub mod customers;
pub mod order_summaries;
mod personal;
pub mod personal_data;
mod read_side;
pub mod sales;
pub mod stock_levels;

pub use balances::{AccountBalance, AccountPage, AccountsProjection, account, accounts};
pub use correlations::{CorrelationsProjection, correlated_positions};
pub use customers::{CustomerProfile, CustomersProjection, ErasureRecord, customer};
pub use order_summaries::{
    CustomerOrders, ORDERS_PER_CHUNK, OrderSummary, OrdersProjection, customer_orders,
};
pub use personal::sealed_fields;
pub use personal_data::{PersonalDataField, PersonalDataProjection, fields_of};
pub use read_side::ReadSide;
pub use sales::{SalesProjection, SalesReport, SalesTotals, SkuSales, sales};
pub use stock_levels::{InventoryProjection, SkuLevel, SkuPage, sku, skus};

/// The order summaries, per customer.
pub const ORDERS: &str = "orders";
/// Stock levels per sku.
pub const INVENTORY: &str = "inventory";
/// Account balances per customer.
pub const ACCOUNTS: &str = "accounts";
/// Sales of confirmed orders per sku.
pub const SALES: &str = "sales";
/// The log positions of each correlation's events.
pub const CORRELATIONS: &str = "correlations";
/// Customer profiles, sealed.
pub const CUSTOMERS: &str = "customers";
/// Every sealed personal field, by key id.
pub const PERSONAL_DATA: &str = "personal_data";

/// The read models every server keeps: `orders`, `inventory`, `accounts`, `sales`,
/// `customers` and `personal_data`. `correlations` is not among them (see
/// [`all_projections`]).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(OrdersProjection),
        Arc::new(InventoryProjection),
        Arc::new(AccountsProjection),
        Arc::new(SalesProjection),
        Arc::new(CustomersProjection),
        Arc::new(PersonalDataProjection),
    ]
}

/// Every read model of the reference domain: those of [`projections`] and
/// `correlations`, which applies nearly every event and so is kept only on request
/// (`annals serve --correlations`, [`ReadSide::start_with_correlations`]), like
/// EventStoreDB's `$by_correlation_id` system projection, off by default.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    let mut all = projections();
    all.push(Arc::new(CorrelationsProjection));
    all
}

/// The read models `store` holds, for the offline CLI: those of [`projections`], and
/// `correlations` if a build of it is stored (a server ran with `--correlations`).
pub fn stored_projections(store: &EventStore) -> Result<Vec<Arc<dyn Projection>>, Error> {
    let kept = store
        .read_models()?
        .stored_models()
        .iter()
        .any(|(name, _)| name == CORRELATIONS);
    Ok(if kept {
        all_projections()
    } else {
        projections()
    })
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
