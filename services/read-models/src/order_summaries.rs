//! The `orders` read model: order summaries per customer (`order-*` streams), and the
//! query of one customer's orders, paged.
//!
//! Order summaries are stored per customer in chunks of [`ORDERS_PER_CHUNK`] (a
//! customer's orders in placement order; the first chunk also counts them), not one key
//! per order, so a customer with a few orders costs one key; the orders still pending
//! are kept in a small table of buckets, which tells a confirmation or cancellation
//! (whose event names no customer) where its summary is.

use std::collections::BTreeMap;

use eventstore::{Aggregate, Model, Position, StoredEvent};
use orders::{OrderLine, OrderStatus};
use privacy::SealedField;
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};

use crate::{ORDERS, decode, entity};

/// Order summaries per stored chunk: a customer's orders are stored 32 to a key, so a
/// rebuild writes one key per customer and batch rather than one per order, and a live
/// update rewrites a value of at most 32 summaries.
pub const ORDERS_PER_CHUNK: u64 = 32;

/// Buckets of the pending-orders table (orders placed but not yet confirmed or
/// cancelled), by a hash of the order id.
const PENDING_BUCKETS: u64 = 256;

/// FNV-1a: a stable hash (the same on every machine and build) for bucket numbers.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The summary of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Where it is: `pending`, `confirmed` or `cancelled` (never `None`).
    #[serde(with = "status_name")]
    #[cfg_attr(feature = "openapi", schema(schema_with = status_name::schema))]
    pub status: OrderStatus,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// The amount charged, in minor units, once confirmed.
    pub total: Option<u64>,
    /// Why it was cancelled, once cancelled.
    pub cancel_reason: Option<String>,
    /// The log position of its `OrderPlaced` event.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub placed_at: Position,
    /// Where to ship, sealed under the customer's key, with its place (the
    /// `OrderPlaced` event), if the order was placed with one. Never serialized: a
    /// view opens it with the key store and shows the plaintext, or null once erased.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub shipping_address: Option<SealedField>,
}

/// The JSON of a summary's status: the status's lower-case name (its `Display`), the
/// spelling the HTTP API uses for an order's status everywhere.
mod status_name {
    use orders::OrderStatus;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// The statuses a summary can have.
    const STATUSES: [OrderStatus; 3] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Cancelled,
    ];

    pub(super) fn serialize<S: Serializer>(
        status: &OrderStatus,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(status)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OrderStatus, D::Error> {
        let name = String::deserialize(deserializer)?;
        STATUSES
            .into_iter()
            .find(|status| status.to_string() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown order status {name:?}")))
    }

    /// The OpenAPI schema: a string, one of the names.
    #[cfg(feature = "openapi")]
    pub(super) fn schema() -> utoipa::openapi::schema::Object {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(STATUSES.map(|status| status.to_string())))
            .description(Some("Where the order is in its life."))
            .build()
    }
}

/// How a stored summary encodes its status: the codes the first version of this read
/// model gave them (pending 0, confirmed 1, cancelled 2), which are not the domain
/// enum's variant numbers (the domain counts "not placed" first). postcard writes an
/// enum variant and a `u32` alike (a varint), so the bytes are those of version 1.
/// Changing the codes changes every stored `orders` model: bump the projection version.
mod stored_status {
    use orders::OrderStatus;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        status: &OrderStatus,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let code = match status {
            OrderStatus::Pending => 0,
            OrderStatus::Confirmed => 1,
            OrderStatus::Cancelled => 2,
            OrderStatus::None => {
                return Err(S::Error::custom("an order summary is of a placed order"));
            }
        };
        serializer.serialize_u32(code)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OrderStatus, D::Error> {
        match u32::deserialize(deserializer)? {
            0 => Ok(OrderStatus::Pending),
            1 => Ok(OrderStatus::Confirmed),
            2 => Ok(OrderStatus::Cancelled),
            code => Err(D::Error::custom(format!(
                "unknown order status code {code}"
            ))),
        }
    }
}

/// An order as stored, in its customer's chunk (which names the customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOrder {
    order_id: String,
    #[serde(with = "stored_status")]
    status: OrderStatus,
    lines: Vec<OrderLine>,
    total: Option<u64>,
    cancel_reason: Option<String>,
    placed_at: u64,
    /// Since version 2 of this read model.
    shipping_address: Option<SealedField>,
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
            shipping_address: self.shipping_address,
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

    /// 2: a stored order keeps its sealed shipping address (postcard: the stored
    /// values changed shape, so a version 1 model is rebuilt).
    fn version(&self) -> u32 {
        2
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
                shipping_address,
            } => {
                let customer = customer_key(&customer_id)?;
                let shipping_address = shipping_address.map(|sealed| SealedField {
                    sealed,
                    stream: event.stream_id.to_owned(),
                    event_id: uuid::Uuid::from_bytes(event.id),
                    field: "shipping_address".to_owned(),
                });
                let order = StoredOrder {
                    order_id: order_id.to_owned(),
                    status: OrderStatus::Pending,
                    lines: lines.iter().map(orders::PlacedLine::line).collect(),
                    total: None,
                    cancel_reason: None,
                    placed_at: event.position,
                    shipping_address,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use orders::Event;
    use projections::ApplyError;

    use super::*;
    use crate::check::{check, order, rows, stock};

    fn placed(order_id: &str, customer_id: &str) -> crate::check::Recorded {
        order(
            order_id,
            Event::OrderPlaced {
                order_id: order_id.into(),
                customer_id: customer_id.into(),
                lines: vec![orders::PlacedLine {
                    sku: "apple".into(),
                    quantity: 3,
                    currency: orders::CURRENCY.into(),
                }],
                shipping_address: None,
            },
        )
    }

    fn stored(order_id: &str, status: OrderStatus, placed_at: u64) -> StoredOrder {
        StoredOrder {
            order_id: order_id.into(),
            status,
            lines: vec![OrderLine {
                sku: "apple".into(),
                quantity: 3,
            }],
            total: None,
            cancel_reason: None,
            placed_at,
            shipping_address: None,
        }
    }

    #[test]
    fn a_placed_order_keeps_its_sealed_shipping_address_with_its_place() {
        let sealed = privacy::Sealed {
            key_id: privacy::KeyId(uuid::Uuid::from_u128(7)),
            ciphertext: privacy::Ciphertext(vec![9; 4]),
        };
        let with_address = order(
            "o1",
            Event::OrderPlaced {
                order_id: "o1".into(),
                customer_id: "alice".into(),
                lines: vec![],
                shipping_address: Some(sealed.clone()),
            },
        );
        let model = check(&OrdersProjection, &[], &[with_address]).unwrap();
        let chunks = rows::<OrderChunk>(&model, ORDER_CHUNKS);
        let kept = chunks[0].orders[0].shipping_address.clone().unwrap();
        assert_eq!(kept.sealed, sealed);
        assert_eq!(kept.stream, "order-o1");
        assert_eq!(kept.field, "shipping_address");
        let summary = chunks[0].orders[0].clone().summary("alice");
        assert_eq!(summary.shipping_address, Some(kept));
        // The summary's JSON (what the HTTP API would serve as it is) never carries it.
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json.get("shipping_address").is_none(), "{json}");
    }

    #[test]
    fn a_placed_order_is_pending_in_its_customers_first_chunk() {
        let model = check(&OrdersProjection, &[], &[placed("o1", "alice")]).unwrap();
        assert_eq!(
            rows::<OrderChunk>(&model, ORDER_CHUNKS),
            vec![OrderChunk {
                placed: 1,
                orders: vec![stored("o1", OrderStatus::Pending, 0)],
            }]
        );
        let pending = rows::<BTreeMap<String, PendingOrder>>(&model, PENDING);
        assert_eq!(
            pending,
            vec![BTreeMap::from([(
                "o1".to_owned(),
                PendingOrder {
                    customer_id: "alice".into(),
                    index: 0,
                }
            )])]
        );
    }

    #[test]
    fn a_confirmation_records_the_total_and_leaves_nothing_pending() {
        let model = check(
            &OrdersProjection,
            &[placed("o1", "alice"), placed("o2", "alice")],
            &[order("o2", Event::OrderConfirmed { total: 360 })],
        )
        .unwrap();
        let mut confirmed = stored("o2", OrderStatus::Confirmed, 1);
        confirmed.total = Some(360);
        assert_eq!(
            rows::<OrderChunk>(&model, ORDER_CHUNKS),
            vec![OrderChunk {
                placed: 2,
                orders: vec![stored("o1", OrderStatus::Pending, 0), confirmed],
            }]
        );
        let pending: Vec<String> = rows::<BTreeMap<String, PendingOrder>>(&model, PENDING)
            .into_iter()
            .flat_map(BTreeMap::into_keys)
            .collect();
        assert_eq!(pending, vec!["o1".to_owned()]);
    }

    #[test]
    fn a_cancellation_records_the_reason() {
        let model = check(
            &OrdersProjection,
            &[placed("o1", "alice")],
            &[order(
                "o1",
                Event::OrderCancelled {
                    reason: "out of stock".into(),
                },
            )],
        )
        .unwrap();
        let mut cancelled = stored("o1", OrderStatus::Cancelled, 0);
        cancelled.cancel_reason = Some("out of stock".into());
        assert_eq!(
            rows::<OrderChunk>(&model, ORDER_CHUNKS),
            vec![OrderChunk {
                placed: 1,
                orders: vec![cancelled],
            }]
        );
        assert!(model.tables().iter().all(|table| *table != PENDING));
    }

    #[test]
    fn the_thirty_third_order_of_a_customer_starts_a_second_chunk() {
        let given: Vec<_> = (0..ORDERS_PER_CHUNK)
            .map(|number| placed(&format!("o{number}"), "alice"))
            .collect();
        let model = check(&OrdersProjection, &given, &[placed("late", "alice")]).unwrap();
        let customer = customer_key("alice").unwrap();
        let first = model
            .get::<OrderChunk>(ORDER_CHUNKS, &chunk_key(&customer, 0).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(first.placed, ORDERS_PER_CHUNK + 1);
        assert_eq!(first.orders.len() as u64, ORDERS_PER_CHUNK);
        let second = model
            .get::<OrderChunk>(ORDER_CHUNKS, &chunk_key(&customer, 32).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            second,
            OrderChunk {
                placed: 0,
                orders: vec![stored("late", OrderStatus::Pending, ORDERS_PER_CHUNK)],
            }
        );
    }

    #[test]
    fn customers_are_kept_apart() {
        let model = check(
            &OrdersProjection,
            &[placed("o1", "alice")],
            &[placed("o2", "bob")],
        )
        .unwrap();
        let chunks = rows::<OrderChunk>(&model, ORDER_CHUNKS);
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|chunk| chunk.placed == 1));
    }

    #[test]
    fn settling_an_order_that_is_not_pending_is_inconsistent() {
        let (error, model) = check(
            &OrdersProjection,
            &[placed("o1", "alice")],
            &[
                order("o1", Event::OrderConfirmed { total: 360 }),
                order("o1", Event::OrderConfirmed { total: 360 }),
            ],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::Inconsistent(_)), "{error}");
        // The failed batch wrote nothing: the order is still pending.
        assert_eq!(
            rows::<OrderChunk>(&model, ORDER_CHUNKS)[0].orders[0].status,
            OrderStatus::Pending
        );
    }

    #[test]
    fn events_of_other_streams_are_ignored() {
        let model = check(
            &OrdersProjection,
            &[],
            &[stock("apple", inventory::Event::Restocked { quantity: 1 })],
        )
        .unwrap();
        assert!(model.tables().is_empty());
    }

    /// The JSON of a summary, as `GET /api/v1/customers/{customer_id}/orders` serves it.
    #[test]
    fn a_summary_is_served_with_lower_case_status_names() {
        let mut summary = stored("o1", OrderStatus::Confirmed, 6).summary("alice");
        summary.total = Some(360);
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(
            json,
            r#"{"order_id":"o1","customer_id":"alice","status":"confirmed","lines":[{"sku":"apple","quantity":3}],"total":360,"cancel_reason":null,"placed_at":6}"#
        );
        assert_eq!(
            serde_json::from_str::<OrderSummary>(&json).unwrap(),
            summary
        );
        for (status, name) in [
            (OrderStatus::Pending, "pending"),
            (OrderStatus::Cancelled, "cancelled"),
        ] {
            summary.status = status;
            let json = serde_json::to_value(&summary).unwrap();
            assert_eq!(json["status"], name);
        }
    }

    /// The stored shape of a chunk. These bytes are in every stored `orders` model: a
    /// change here needs a new projection version (a rebuild), never a silent change.
    /// Version 2 added the shipping address after `placed_at` (0: none).
    #[test]
    fn golden_chunk_bytes() {
        let mut confirmed = stored("o", OrderStatus::Confirmed, 7);
        confirmed.total = Some(360);
        let mut cancelled = stored("c", OrderStatus::Cancelled, 8);
        cancelled.cancel_reason = Some("r".into());
        let chunk = OrderChunk {
            placed: 3,
            orders: vec![stored("p", OrderStatus::Pending, 6), confirmed, cancelled],
        };
        assert_eq!(
            postcard::to_allocvec(&chunk).unwrap(),
            [
                3, 3, // placed, three orders
                1, b'p', 0, 1, 5, b'a', b'p', b'p', b'l', b'e', 3, 0, 0, 6, 0, // pending
                1, b'o', 1, 1, 5, b'a', b'p', b'p', b'l', b'e', 3, 1, 232, 2, 0, 7,
                0, // confirmed
                1, b'c', 2, 1, 5, b'a', b'p', b'p', b'l', b'e', 3, 0, 1, 1, b'r', 8,
                0, // cancelled
            ]
        );
        // With an address: 1, the key id (16 bytes), the ciphertext, then its place.
        let mut shipped = stored("s", OrderStatus::Pending, 9);
        shipped.shipping_address = Some(SealedField {
            sealed: privacy::Sealed {
                key_id: privacy::KeyId(uuid::Uuid::from_u128(1)),
                ciphertext: privacy::Ciphertext(vec![0xcc; 2]),
            },
            stream: "order-s".into(),
            event_id: uuid::Uuid::from_u128(2),
            field: "shipping_address".into(),
        });
        let bytes = postcard::to_allocvec(&shipped).unwrap();
        let mut expected = vec![
            1, b's', 0, 1, 5, b'a', b'p', b'p', b'l', b'e', 3, 0, 0, 9, 1,
        ];
        expected.extend([16].iter().chain(&uuid::Uuid::from_u128(1).into_bytes()));
        expected.extend([2, 0xcc, 0xcc, 7]);
        expected.extend(b"order-s");
        expected.extend([16].iter().chain(&uuid::Uuid::from_u128(2).into_bytes()));
        expected.push(16);
        expected.extend(b"shipping_address");
        assert_eq!(bytes, expected);
        let pending = PendingOrder {
            customer_id: "alice".into(),
            index: 300,
        };
        assert_eq!(
            postcard::to_allocvec(&pending).unwrap(),
            [5, b'a', b'l', b'i', b'c', b'e', 172, 2]
        );
    }
}
