//! What the benchmarks write: filler events of a given size, and a domain workload
//! (skus, accounts, orders placed, confirmed and cancelled) as the fulfilment saga would
//! write it, with the same choices on every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use eventstore::{EventStore, ExpectedVersion, NewEvent, StreamId};

use crate::progress;

pub(super) fn payload(bytes: usize, seed: u64) -> Vec<u8> {
    (0..bytes).map(|i| (seed as usize + i) as u8).collect()
}

/// Appends events in large commits until the log holds `events`.
pub(super) async fn seed(
    store: &EventStore,
    events: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let have = store.next_position().0;
    if have >= events {
        return Ok(());
    }
    let bar = progress::bar(events - have, "events");
    bar.set_message("seeding");
    let remaining = Arc::new(AtomicU64::new(events - have));
    let mut tasks = Vec::new();
    for writer in 0..4u64 {
        let (store, remaining, bar) = (store.clone(), remaining.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("seed-{writer}"))?;
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        (left > 0).then(|| left - left.min(1000))
                    })
                    .map_or(0, |left| left.min(1000));
                if take == 0 {
                    return anyhow::Ok(());
                }
                let batch = (0..take)
                    .map(|i| NewEvent::new("Seeded", payload(payload_bytes, i)))
                    .collect();
                store.append(&stream, ExpectedVersion::Any, batch).await?;
                bar.inc(take);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// A domain event of aggregate `A`, encoded as the repository would (in the aggregate's
/// current schema version).
pub(super) fn domain_event<A: eventstore::Aggregate>(event: &A::Event) -> anyhow::Result<NewEvent> {
    let mut event = NewEvent::new(A::event_type(event), postcard::to_allocvec(event)?);
    event.schema_version = A::EVENT_SCHEMA_VERSION;
    Ok(event)
}

/// Appends one domain event to `<A::CATEGORY>-<id>`.
async fn append_domain<A: eventstore::Aggregate>(
    store: &EventStore,
    id: &str,
    events: &[A::Event],
) -> anyhow::Result<()> {
    let stream = StreamId::for_entity(A::CATEGORY, id)?;
    let events = events
        .iter()
        .map(domain_event::<A>)
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.append(&stream, ExpectedVersion::Any, events).await?;
    Ok(())
}

pub(super) fn sku_id(sku: u64) -> String {
    format!("sku-{sku:05}")
}

pub(super) fn sku_price(sku: u64) -> u64 {
    100 + (sku * 37) % 5_000
}

pub(super) fn customer_id(customer: u64) -> String {
    format!("customer-{customer:06}")
}

/// xorshift64*: the workload's choices, the same for every run.
pub(super) struct Choices(u64);

impl Choices {
    pub(super) fn new(seed: u64) -> Self {
        Choices(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// The size of a domain workload.
pub(super) struct Workload {
    /// Events the log holds when seeding stops.
    pub(super) events: u64,
    /// Skus, registered and stocked first.
    pub(super) skus: u64,
    /// Customers, whose accounts are opened and funded first.
    pub(super) customers: u64,
    /// Orders in flight at once.
    pub(super) writers: u64,
}

/// Seeds skus and funded accounts, then orders until the log holds `workload.events`: each
/// order is placed, reserves its lines, and is then confirmed (charge, confirmation,
/// reservations confirmed: 80%), cancelled for lack of payment (reservations released:
/// 15%) or cancelled after its charge (refund, release: 5%); now and then a sku is
/// restocked or an account topped up. Every event goes to its own stream, in the order
/// the fulfilment saga would write it.
pub(super) async fn seed_domain(store: &EventStore, workload: &Workload) -> anyhow::Result<()> {
    use inventory::{Event as Stock, Stock as StockAggregate};
    use orders::{Event as OrderEvent, Order, PlacedLine};
    use payments::{Account, Event as Payment};

    if store.next_position().0 > 0 {
        bail!(
            "the data directory holds {} events, fewer than --events {}: use a fresh one",
            store.next_position().0,
            workload.events
        );
    }
    let bar = progress::bar(workload.events, "events");
    bar.set_message("seeding");
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..workload.writers {
        let (store, skus, customers, writers) = (
            store.clone(),
            workload.skus,
            workload.customers,
            workload.writers,
        );
        tasks.spawn(async move {
            for sku in (writer..skus).step_by(writers as usize) {
                let registered = Stock::SkuRegistered {
                    sku: sku_id(sku),
                    name: format!("Article {sku}"),
                    unit_price: sku_price(sku),
                };
                let restocked = Stock::Restocked { quantity: 1 << 40 };
                append_domain::<StockAggregate>(&store, &sku_id(sku), &[registered, restocked])
                    .await?;
            }
            for customer in (writer..customers).step_by(writers as usize) {
                let opened = Payment::AccountOpened {
                    customer_id: customer_id(customer),
                };
                let deposited = Payment::Deposited { amount: 1 << 50 };
                append_domain::<Account>(&store, &customer_id(customer), &[opened, deposited])
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    let next_order = Arc::new(AtomicU64::new(0));
    for _ in 0..workload.writers {
        let (store, next_order, bar) = (store.clone(), next_order.clone(), bar.clone());
        let (skus, customers, target) = (workload.skus, workload.customers, workload.events);
        tasks.spawn(async move {
            while store.next_position().0 < target {
                let number = next_order.fetch_add(1, Ordering::Relaxed);
                let mut choices = Choices::new(number);
                let order_id = format!("{:016x}{:016x}", number, choices.below(u64::MAX));
                let customer = customer_id(choices.below(customers));
                let mut lines: Vec<(u64, u64)> = Vec::new();
                for _ in 0..1 + choices.below(3) {
                    let sku = choices.below(skus);
                    if lines.iter().all(|(chosen, _)| *chosen != sku) {
                        lines.push((sku, 1 + choices.below(5)));
                    }
                }
                let placed = OrderEvent::OrderPlaced {
                    order_id: order_id.clone(),
                    customer_id: customer.clone(),
                    lines: lines
                        .iter()
                        .map(|&(sku, quantity)| PlacedLine {
                            sku: sku_id(sku),
                            quantity,
                            currency: orders::CURRENCY.to_owned(),
                        })
                        .collect(),
                    shipping_address: None,
                };
                append_domain::<Order>(&store, &order_id, &[placed]).await?;
                let mut total = 0;
                for &(sku, quantity) in &lines {
                    let reserved = Stock::StockReserved {
                        order_id: order_id.clone(),
                        quantity,
                        unit_price: sku_price(sku),
                    };
                    append_domain::<StockAggregate>(&store, &sku_id(sku), &[reserved]).await?;
                    total += quantity * sku_price(sku);
                }
                let outcome = choices.below(100);
                if outcome >= 80 {
                    if outcome >= 95 {
                        let charged = Payment::Charged {
                            order_id: order_id.clone(),
                            amount: total,
                        };
                        let refunded = Payment::Refunded {
                            order_id: order_id.clone(),
                            amount: total,
                        };
                        append_domain::<Account>(&store, &customer, &[charged]).await?;
                        append_domain::<Account>(&store, &customer, &[refunded]).await?;
                    }
                    for &(sku, quantity) in &lines {
                        let released = Stock::StockReleased {
                            order_id: order_id.clone(),
                            quantity,
                        };
                        append_domain::<StockAggregate>(&store, &sku_id(sku), &[released]).await?;
                    }
                    let reason = if outcome >= 95 {
                        "the order was not confirmed in time"
                    } else {
                        "insufficient funds"
                    };
                    let cancelled = OrderEvent::OrderCancelled {
                        reason: reason.into(),
                    };
                    append_domain::<Order>(&store, &order_id, &[cancelled]).await?;
                } else {
                    let charged = Payment::Charged {
                        order_id: order_id.clone(),
                        amount: total,
                    };
                    append_domain::<Account>(&store, &customer, &[charged]).await?;
                    let confirmed = OrderEvent::OrderConfirmed { total };
                    append_domain::<Order>(&store, &order_id, &[confirmed]).await?;
                    for &(sku, quantity) in &lines {
                        let confirmed = Stock::ReservationConfirmed {
                            order_id: order_id.clone(),
                            quantity,
                        };
                        append_domain::<StockAggregate>(&store, &sku_id(sku), &[confirmed]).await?;
                    }
                }
                if number % 50 == 0 {
                    let sku = choices.below(skus);
                    let restocked = Stock::Restocked { quantity: 1_000 };
                    append_domain::<StockAggregate>(&store, &sku_id(sku), &[restocked]).await?;
                    let deposited = Payment::Deposited { amount: 10_000 };
                    append_domain::<Account>(&store, &customer, &[deposited]).await?;
                }
                bar.set_position(store.next_position().0);
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    bar.finish_and_clear();
    Ok(())
}
