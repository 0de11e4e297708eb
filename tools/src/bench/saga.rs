//! `annals bench saga`: the fulfilment saga end to end, in process. It registers skus
//! with ample stock and opens funded accounts, starts the saga driver (exactly as
//! `annals serve` runs it), then places `--orders` orders through the order repository
//! with at most `--in-flight` orders unfinished at a time, and follows the log: an order
//! is complete when its `OrderConfirmed` event is durable. It reports completed orders/s
//! and the time from `OrderPlaced` to `OrderConfirmed` (both as recorded in the log).
//!
//! Every event (order, reservations, charge, confirmation, and each saga step) is
//! fsync'd before it is acknowledged, as in production.
//!
//! With `--store nats://...` the log is a replicated JetStream stream and `--nodes` nodes
//! share it ([`super::saga_jetstream`]); this module holds what both runs share: the
//! seeding, the placing of orders and the following of the log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventstore::{Aggregate, CommandOptions, EventStore, Position, Repository};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::workload::{Choices, customer_id, sku_id, sku_price};
use super::{BenchDir, millis};

#[derive(Debug, clap::Args)]
pub struct SagaArgs {
    /// Orders to place (each with 1 to 3 lines).
    #[arg(long, default_value_t = 20_000)]
    pub(super) orders: u64,
    /// Orders placed and not yet confirmed, at most.
    #[arg(long, default_value_t = 64)]
    pub(super) in_flight: usize,
    /// Skus to spread the orders over (each stocked for every order).
    #[arg(long, default_value_t = 1_000)]
    skus: u64,
    /// Customers placing the orders (each funded for all of theirs).
    #[arg(long, default_value_t = 5_000)]
    customers: u64,
    /// Where the log is: `embedded` (segment files in the data directory), or a
    /// replicated JetStream stream on these servers, `nats://H1:P1,H2:P2,H3:P3`: a fresh
    /// stream for the run (its own name and subjects), deleted at the end, each node's
    /// copy in a temporary directory.
    #[arg(long, value_name = "embedded|nats://...", default_value = "embedded")]
    store: String,
    /// With --store nats://: the copies JetStream keeps of the bench's stream (3 by
    /// default).
    #[arg(long, value_name = "N")]
    store_replicas: Option<usize>,
    /// With --store nats://: Annals nodes in this process sharing the stream, each with
    /// its own copy and repositories (1 to 3). Orders are placed round-robin through
    /// them; the saga driver runs on the first.
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct SagaReport {
    bench: &'static str,
    orders: u64,
    in_flight: usize,
    skus: u64,
    customers: u64,
    confirmed: u64,
    cancelled: u64,
    seconds: f64,
    orders_per_second: f64,
    events: u64,
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

pub(super) async fn run(args: SagaArgs) -> anyhow::Result<()> {
    if args.orders == 0 || args.in_flight == 0 || args.skus < 3 || args.customers == 0 {
        bail!("--orders, --in-flight and --customers must be at least 1, --skus at least 3");
    }
    let backend = crate::serve::StoreBackend::parse(Some(&args.store), None, args.store_replicas)?;
    if let crate::serve::StoreBackend::JetStream(config) = backend {
        if args.data_dir.is_some() {
            bail!("--store nats:// takes no --data-dir: each node's copy is a temporary directory");
        }
        let nodes = args.nodes.unwrap_or(1);
        if !(1..=3).contains(&nodes) {
            bail!("--nodes must be 1 to 3, not {nodes}");
        }
        return super::saga_jetstream::run(&args, config, nodes).await;
    }
    if args.nodes.is_some() {
        bail!("--nodes needs --store nats://...");
    }
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    if store.next_position() > Position(0) {
        bail!("the data directory is not empty: use a fresh one");
    }
    seed(&store, &args).await?;
    let services = sagas::FulfilmentServices::new(
        repositories::Repositories::new(store.clone()),
        Duration::from_secs(30),
    );
    let driver = sagas::Driver::start(
        store.clone(),
        Arc::new(services),
        Arc::new(sagas::SystemClock),
        sagas::DriverConfig::default(),
    )
    .context("cannot start the saga driver")?;

    let first = store.next_position();
    let slots = Arc::new(Semaphore::new(args.in_flight));
    let follower = tokio::spawn(follow(
        store.clone(),
        first,
        args.orders,
        slots.clone(),
        None,
    ));
    let started = Instant::now();
    let orders = Repository::<orders::Order>::new(store.clone());
    place(std::slice::from_ref(&orders), &args, &slots).await?;
    let outcome = follower.await??;
    let seconds = started.elapsed().as_secs_f64();
    let events = store.next_position().0 - first.0;
    driver.stop().await;
    store.close().await;

    let report = SagaReport::new(&args, &outcome, seconds, events);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("saga: {}", report.text());
    }
    outcome.all_confirmed()
}

impl SagaReport {
    pub(super) fn new(args: &SagaArgs, outcome: &Outcome, seconds: f64, events: u64) -> Self {
        let latencies = &outcome.latencies;
        SagaReport {
            bench: "saga",
            orders: args.orders,
            in_flight: args.in_flight,
            skus: args.skus,
            customers: args.customers,
            confirmed: outcome.confirmed,
            cancelled: outcome.cancelled,
            seconds,
            orders_per_second: outcome.confirmed as f64 / seconds,
            events,
            events_per_second: events as f64 / seconds,
            p50_ms: millis(latencies.value_at_quantile(0.50)),
            p99_ms: millis(latencies.value_at_quantile(0.99)),
            p999_ms: millis(latencies.value_at_quantile(0.999)),
            max_ms: millis(latencies.max()),
        }
    }

    /// The report as one line of text.
    pub(super) fn text(&self) -> String {
        format!(
            "{} orders ({} in flight, {} skus, {} customers): {} confirmed, {} cancelled in {:.2} s = {:.0} orders/s completed ({} events, {:.0} events/s); placed -> confirmed p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            self.orders,
            self.in_flight,
            self.skus,
            self.customers,
            self.confirmed,
            self.cancelled,
            self.seconds,
            self.orders_per_second,
            self.events,
            self.events_per_second,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }
}

/// Places `args.orders` orders (1 to 3 lines each), the n-th through `through[n % len]`,
/// taking an in-flight slot for each (the follower gives it back when the order
/// completes). Returns once every order is placed.
pub(super) async fn place(
    through: &[Repository<orders::Order>],
    args: &SagaArgs,
    slots: &Arc<Semaphore>,
) -> anyhow::Result<()> {
    let mut choices = Choices::new(7);
    let mut placing = tokio::task::JoinSet::new();
    for number in 0..args.orders {
        let permit = slots.clone().acquire_owned().await?;
        // The follower gives the slot back when the order completes.
        permit.forget();
        let lines = (0..1 + choices.below(3))
            .map(|i| orders::OrderLine {
                sku: sku_id((choices.below(args.skus) + i) % args.skus),
                quantity: 1 + choices.below(3),
            })
            .collect::<Vec<_>>();
        let mut lines = lines;
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        lines.dedup_by(|a, b| a.sku == b.sku);
        let customer = customer_id(choices.below(args.customers));
        let orders = through[(number % through.len() as u64) as usize].clone();
        placing.spawn(async move {
            let order_id = uuid::Uuid::now_v7().to_string();
            let command = orders::Command::PlaceOrder {
                order_id: order_id.clone(),
                customer_id: customer,
                lines,
                shipping_address: None,
            };
            let options = CommandOptions {
                command_id: uuid::Uuid::now_v7(),
                ..CommandOptions::default()
            };
            orders.execute(&order_id, &command, &options).await
        });
        while let Some(placed) = placing.try_join_next() {
            placed?.context("placing an order failed")?;
        }
    }
    while let Some(placed) = placing.join_next().await {
        placed?.context("placing an order failed")?;
    }
    Ok(())
}

/// Skus stocked for every order and accounts funded for every order of theirs.
pub(super) async fn seed(store: &EventStore, args: &SagaArgs) -> anyhow::Result<()> {
    let stock = Repository::<inventory::Stock>::new(store.clone());
    let accounts = Repository::<payments::Account>::new(store.clone());
    let options = || CommandOptions {
        command_id: uuid::Uuid::now_v7(),
        ..CommandOptions::default()
    };
    let mut seeding = tokio::task::JoinSet::new();
    for sku in 0..args.skus {
        let (stock, options) = (stock.clone(), options());
        let quantity = args.orders * 3;
        seeding.spawn(async move {
            let id = sku_id(sku);
            let register = inventory::Command::RegisterSku {
                sku: id.clone(),
                name: format!("Thing {sku}"),
                unit_price: sku_price(sku),
            };
            stock.execute(&id, &register, &options).await?;
            let restock = inventory::Command::Restock { quantity };
            let options = CommandOptions {
                command_id: uuid::Uuid::now_v7(),
                ..options
            };
            stock.execute(&id, &restock, &options).await?;
            anyhow::Ok(())
        });
        if seeding.len() >= 64 {
            seeding.join_next().await.expect("one task")??;
        }
    }
    for customer in 0..args.customers {
        let (accounts, options) = (accounts.clone(), options());
        // Enough for every order at the highest price.
        let amount = args.orders * 9 * 5_100;
        seeding.spawn(async move {
            let id = customer_id(customer);
            let open = payments::Command::OpenAccount {
                customer_id: id.clone(),
            };
            accounts.execute(&id, &open, &options).await?;
            let deposit = payments::Command::Deposit { amount };
            let options = CommandOptions {
                command_id: uuid::Uuid::now_v7(),
                ..options
            };
            accounts.execute(&id, &deposit, &options).await?;
            anyhow::Ok(())
        });
        if seeding.len() >= 64 {
            seeding.join_next().await.expect("one task")??;
        }
    }
    while let Some(seeded) = seeding.join_next().await {
        seeded??;
    }
    Ok(())
}

pub(super) struct Outcome {
    pub(super) confirmed: u64,
    pub(super) cancelled: u64,
    latencies: Histogram<u64>,
}

impl Outcome {
    /// An error if any order was cancelled.
    pub(super) fn all_confirmed(&self) -> anyhow::Result<()> {
        if self.cancelled > 0 {
            bail!(
                "{} orders were cancelled: the seeded stock or funds were short",
                self.cancelled
            );
        }
        Ok(())
    }
}

/// Follows the log from `from` until `orders` orders are settled, timing each from its
/// `OrderPlaced` to its `OrderConfirmed` and giving back an in-flight slot for each.
/// With `stall`, fails when no event arrives for that long (a saga that stopped).
pub(super) async fn follow(
    store: EventStore,
    from: Position,
    orders: u64,
    slots: Arc<Semaphore>,
    stall: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let mut subscription = store.subscribe(from);
    let mut placed_at = HashMap::new();
    let mut outcome = Outcome {
        confirmed: 0,
        cancelled: 0,
        latencies: Histogram::<u64>::new(3).expect("valid precision"),
    };
    while outcome.confirmed + outcome.cancelled < orders {
        let next = match stall {
            None => subscription.next().await,
            Some(stall) => tokio::time::timeout(stall, subscription.next())
                .await
                .with_context(|| {
                    format!(
                        "no event for {stall:?} with {} of {orders} orders settled: the saga stalled",
                        outcome.confirmed + outcome.cancelled
                    )
                })?,
        };
        let event = next.context("the store closed during the benchmark")??;
        if event.stream_id.category() != orders::Order::CATEGORY {
            continue;
        }
        match orders::Order::decode_event(event.schema_version, &event.payload)? {
            orders::Event::OrderPlaced { .. } => {
                placed_at.insert(event.stream_id, event.recorded_at);
            }
            orders::Event::OrderConfirmed { .. } => {
                let placed = placed_at
                    .remove(&event.stream_id)
                    .context("an order confirmed before it was placed")?;
                let micros = (event.recorded_at - placed).num_microseconds().unwrap_or(0);
                outcome.latencies.record(micros.max(0) as u64)?;
                outcome.confirmed += 1;
                slots.add_permits(1);
            }
            orders::Event::OrderCancelled { .. } => {
                placed_at.remove(&event.stream_id);
                outcome.cancelled += 1;
                slots.add_permits(1);
            }
        }
    }
    Ok(outcome)
}
