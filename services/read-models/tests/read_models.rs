//! The domain read models over a real store, fed by real commands through the
//! aggregate repository (the fulfilment saga's steps, run in line): they agree with the
//! aggregates and with the log, a rebuild reproduces them byte for byte (also under
//! write load), a poison event stops only the projection that reads it, and a write is
//! visible once its position is waited for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstore::{
    Aggregate, CommandOptions, EventStore, ExecuteError, ExpectedVersion, NewEvent, Position,
    Repository, StoreConfig, StreamId,
};
use orders::OrderStatus;
use projections::{Error, RunnerConfig, State};
use read_models::{
    ACCOUNTS, CORRELATIONS, CUSTOMERS, INVENTORY, ORDERS, PERSONAL_DATA, ReadSide, SALES, SkuSales,
};
use test_support::{PATIENCE, Random, within};
use tokio_util::sync::CancellationToken;

const ALL: [&str; 7] = [
    ORDERS,
    INVENTORY,
    ACCOUNTS,
    SALES,
    CUSTOMERS,
    PERSONAL_DATA,
    CORRELATIONS,
];

/// A store, the domain's projections running over it, and repositories.
struct Domain {
    store: EventStore,
    projections: ReadSide,
    shutdown: CancellationToken,
    runner: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn small_batches() -> RunnerConfig {
    RunnerConfig {
        catch_up_batch_events: 101,
        switch_lag: 40,
        live_batch_events: 32,
        ..RunnerConfig::default()
    }
}

impl Domain {
    fn start() -> Domain {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        // Every read model, `correlations` included (a server keeps it only with
        // `--correlations`).
        let (projections, runner) =
            ReadSide::start_with_correlations(&store, small_batches()).unwrap();
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(runner.run(shutdown.clone()));
        Domain {
            store,
            projections,
            shutdown,
            runner,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop_keeping_files().await;
    }

    /// Stops, and hands over the store's directory (removed when it is dropped).
    async fn stop_keeping_files(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        within("the runner's stop", self.runner).await.unwrap();
        self.store.close().await;
        self._dir
    }

    /// Waits until every read model has applied the whole log.
    async fn settle(&self) {
        let head = self.store.next_position();
        if head.0 > 0 {
            self.projections
                .wait_for(Position(head.0 - 1), PATIENCE)
                .await
                .unwrap_or_else(|error| panic!("the read models did not reach {head}: {error}"));
        }
    }

    fn digests(&self) -> Vec<String> {
        ALL.iter()
            .map(|name| self.projections.digest(name).unwrap())
            .collect()
    }
}

async fn run<A: Aggregate>(
    store: &EventStore,
    id: &str,
    command: A::Command,
) -> Result<eventstore::AppendOutcome, ExecuteError<A::Error>> {
    // Every event of one entity is of one correlation, so that correlations have
    // several events (the `correlations` read model's check).
    let stream = format!("{}-{id}", A::CATEGORY);
    let options = CommandOptions {
        command_id: uuid::Uuid::now_v7(),
        metadata: eventstore::Metadata {
            correlation_id: Some(uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                stream.as_bytes(),
            )),
            ..eventstore::Metadata::default()
        },
        ..CommandOptions::default()
    };
    Repository::<A>::new(store.clone())
        .execute(id, &command, &options)
        .await
        .map(|committed| committed.outcome)
}

fn sku(number: u64) -> String {
    format!("sku-{number:03}")
}

fn customer(number: u64) -> String {
    format!("customer-{number:03}")
}

/// Registers `skus` skus with some stock and opens `customers` accounts with some money.
async fn reference_data(store: &EventStore, random: &mut Random, skus: u64, customers: u64) {
    for number in 0..skus {
        run::<inventory::Stock>(
            store,
            &sku(number),
            inventory::Command::RegisterSku {
                sku: sku(number),
                name: format!("Article {number}"),
                unit_price: 1 + random.below(500),
            },
        )
        .await
        .unwrap();
        run::<inventory::Stock>(
            store,
            &sku(number),
            inventory::Command::Restock {
                quantity: 5 + random.below(60),
            },
        )
        .await
        .unwrap();
    }
    for number in 0..customers {
        run::<payments::Account>(
            store,
            &customer(number),
            payments::Command::OpenAccount {
                customer_id: customer(number),
            },
        )
        .await
        .unwrap();
        run::<payments::Account>(
            store,
            &customer(number),
            payments::Command::Deposit {
                amount: 100 + random.below(20_000),
            },
        )
        .await
        .unwrap();
    }
}

/// Places an order and runs it to its end the way the fulfilment saga does: reserve
/// each line, charge, confirm, confirm the reservations; or on a refusal (stock, money,
/// or now and then a cancellation after the charge) refund, release and cancel.
async fn fulfil(
    store: &EventStore,
    random: &mut Random,
    order_id: &str,
    customer_id: &str,
    skus: u64,
) {
    let mut lines = Vec::new();
    for _ in 0..1 + random.below(3) {
        let line = sku(random.below(skus));
        if lines.iter().all(|l: &orders::OrderLine| l.sku != line) {
            lines.push(orders::OrderLine {
                sku: line,
                quantity: 1 + random.below(6),
            });
        }
    }
    run::<orders::Order>(
        store,
        order_id,
        orders::Command::PlaceOrder {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            lines: lines.clone(),
            shipping_address: None,
        },
    )
    .await
    .unwrap();
    let mut reserved = Vec::new();
    let mut refusal = None;
    let mut total = 0;
    for line in &lines {
        let reserve = inventory::Command::Reserve {
            order_id: order_id.to_owned(),
            quantity: line.quantity,
        };
        match run::<inventory::Stock>(store, &line.sku, reserve).await {
            Ok(_) => {
                let stock = Repository::<inventory::Stock>::new(store.clone())
                    .load(&line.sku)
                    .unwrap()
                    .state;
                total += stock.reservation(order_id).unwrap().quantity
                    * stock.reservation(order_id).unwrap().unit_price;
                reserved.push(line.sku.clone());
            }
            Err(ExecuteError::Rejected(error)) => {
                refusal = Some(error.to_string());
                break;
            }
            Err(error) => panic!("reserve failed: {error}"),
        }
    }
    let mut charged = false;
    if refusal.is_none() {
        let charge = payments::Command::Charge {
            order_id: order_id.to_owned(),
            amount: total,
        };
        match run::<payments::Account>(store, customer_id, charge).await {
            Ok(_) => charged = true,
            Err(ExecuteError::Rejected(error)) => refusal = Some(error.to_string()),
            Err(error) => panic!("charge failed: {error}"),
        }
    }
    if refusal.is_none() && random.below(10) == 0 {
        refusal = Some("the customer changed their mind".into());
    }
    match refusal {
        None => {
            run::<orders::Order>(store, order_id, orders::Command::ConfirmOrder { total })
                .await
                .unwrap();
            for line in &reserved {
                let confirm = inventory::Command::ConfirmReservation {
                    order_id: order_id.to_owned(),
                };
                run::<inventory::Stock>(store, line, confirm).await.unwrap();
            }
        }
        Some(reason) => {
            if charged {
                let refund = payments::Command::Refund {
                    order_id: order_id.to_owned(),
                    amount: total,
                };
                run::<payments::Account>(store, customer_id, refund)
                    .await
                    .unwrap();
            }
            for line in &reserved {
                let release = inventory::Command::Release {
                    order_id: order_id.to_owned(),
                };
                run::<inventory::Stock>(store, line, release).await.unwrap();
            }
            run::<orders::Order>(store, order_id, orders::Command::CancelOrder { reason })
                .await
                .unwrap();
        }
    }
}

/// `orders` orders by random customers (customer 0 places one in four, so its orders
/// span several chunks), with restocks and deposits now and then.
async fn workload(
    store: &EventStore,
    random: &mut Random,
    tag: &str,
    orders: u64,
    skus: u64,
    customers: u64,
) {
    for number in 0..orders {
        let buyer = if random.below(4) == 0 {
            customer(0)
        } else {
            customer(random.below(customers))
        };
        fulfil(store, random, &format!("{tag}-{number}"), &buyer, skus).await;
        if random.below(8) == 0 {
            let restock = inventory::Command::Restock {
                quantity: 1 + random.below(40),
            };
            run::<inventory::Stock>(store, &sku(random.below(skus)), restock)
                .await
                .unwrap();
            let deposit = payments::Command::Deposit {
                amount: 1 + random.below(5_000),
            };
            run::<payments::Account>(store, &buyer, deposit)
                .await
                .unwrap();
        }
    }
}

/// Checks every read model against the aggregates (loaded from their streams) and the
/// sales against the log.
fn assert_agrees_with_the_log(domain: &Domain, skus: u64, customers: u64) {
    let store = &domain.store;
    let read = &domain.projections;
    // Inventory: paged through 7 at a time, equal to each sku's stock.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = read.skus(after.as_deref(), 7).unwrap();
        listed.extend(page.skus);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed.len() as u64, skus);
    for level in &listed {
        let stock = Repository::<inventory::Stock>::new(store.clone())
            .load(&level.sku)
            .unwrap()
            .state;
        assert_eq!(
            (
                level.on_hand,
                level.reserved,
                level.available,
                level.unit_price
            ),
            (
                stock.on_hand(),
                stock.reserved(),
                stock.available(),
                stock.unit_price()
            ),
            "sku {}",
            level.sku
        );
        assert_eq!(read.sku(&level.sku).unwrap().as_ref(), Some(level));
    }
    // Accounts.
    for number in 0..customers {
        let account = Repository::<payments::Account>::new(store.clone())
            .load(&customer(number))
            .unwrap()
            .state;
        let balance = read
            .account(&customer(number))
            .unwrap()
            .expect("an account");
        assert_eq!(balance.balance, account.balance(), "{}", customer(number));
    }
    assert_eq!(
        read.accounts(None, 1_000).unwrap().accounts.len() as u64,
        customers
    );
    // Orders: every customer's orders, paged 5 at a time, in placement order.
    let log = store.read_all(Position(0), usize::MAX).unwrap();
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &log {
        if event.stream_id.category() == "order"
            && let Ok(orders::Event::OrderPlaced {
                order_id,
                customer_id,
                ..
            }) = orders::Order::decode_event(event.schema_version, &event.payload)
        {
            placed.entry(customer_id).or_default().push(order_id);
        }
    }
    for (customer_id, expected) in &placed {
        let mut summaries = Vec::new();
        let mut after = None;
        loop {
            let page = read.customer_orders(customer_id, after, 5).unwrap();
            assert_eq!(page.total_orders, expected.len() as u64);
            summaries.extend(page.orders);
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let ids: Vec<&String> = summaries.iter().map(|s| &s.order_id).collect();
        assert_eq!(
            ids,
            expected.iter().collect::<Vec<_>>(),
            "orders of {customer_id}"
        );
        for summary in &summaries {
            let order = Repository::<orders::Order>::new(store.clone())
                .load(&summary.order_id)
                .unwrap()
                .state;
            assert_eq!(summary.status, order.status(), "order {}", summary.order_id);
            assert_eq!(summary.total, order.total());
            assert_eq!(summary.cancel_reason.as_deref(), order.cancel_reason());
            assert_eq!(summary.customer_id, *customer_id);
            assert_eq!(summary.lines, order.lines());
        }
    }
    // Sales: each confirmed reservation's quantity at its reservation's price.
    let mut prices: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sales: BTreeMap<String, SkuSales> = BTreeMap::new();
    for event in &log {
        if event.stream_id.category() != "stock" {
            continue;
        }
        let sku_id = event.stream_id.as_str()["stock-".len()..].to_owned();
        match inventory::Stock::decode_event(event.schema_version, &event.payload).unwrap() {
            inventory::Event::StockReserved {
                order_id,
                unit_price,
                ..
            } => {
                prices.insert((sku_id, order_id), unit_price);
            }
            inventory::Event::ReservationConfirmed { order_id, quantity } => {
                let price = prices[&(sku_id.clone(), order_id)];
                let sold = sales.entry(sku_id.clone()).or_insert_with(|| SkuSales {
                    sku: sku_id,
                    ..SkuSales::default()
                });
                sold.quantity += quantity;
                sold.revenue += quantity * price;
                sold.orders += 1;
            }
            _ => {}
        }
    }
    let report = read.sales(None, 1_000).unwrap();
    assert_eq!(report.skus, sales.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        report.totals.revenue,
        sales.values().map(|s| s.revenue).sum::<u64>()
    );
    assert_eq!(
        report.totals.order_lines,
        sales.values().map(|s| s.orders).sum::<u64>()
    );
    // Correlations: each correlation's positions, as a scan of the log finds them.
    let mut correlated: BTreeMap<[u8; 16], Vec<u64>> = BTreeMap::new();
    for event in store.read_all(Position(0), usize::MAX).unwrap() {
        if let Some(id) = event.metadata.correlation_id {
            correlated
                .entry(*id.as_bytes())
                .or_default()
                .push(event.position.0);
        }
    }
    assert!(!correlated.is_empty());
    for (id, positions) in &correlated {
        assert_eq!(
            read.correlated(id, 10_000).unwrap(),
            (positions.clone(), false)
        );
        if positions.len() > 1 {
            let (first, more) = read.correlated(id, 1).unwrap();
            assert_eq!((first, more), (positions[..1].to_vec(), true));
        }
    }
    assert_eq!(read.correlated(&[0xee; 16], 10).unwrap(), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_read_models_agree_with_the_aggregates_and_a_rebuild() {
    let mut random = Random::seeded("live vs rebuilt");
    let domain = Domain::start();
    reference_data(&domain.store, &mut random, 12, 6).await;
    workload(&domain.store, &mut random, "o", 150, 12, 6).await;
    domain.settle().await;
    assert_agrees_with_the_log(&domain, 12, 6);
    let live = domain.digests();

    for name in ALL {
        let rebuild = domain.projections.rebuild(name).await.unwrap();
        within("a rebuild", rebuild.finished()).await.unwrap();
    }
    for status in domain.projections.status() {
        assert_eq!(
            (status.active_build, &status.state),
            (Some(1), &State::Live),
            "{}",
            status.name
        );
        assert_eq!(status.lag, 0);
    }
    assert_eq!(
        domain.digests(),
        live,
        "a rebuilt read model differs from the live one"
    );
    domain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_write_load_keeps_answering_and_loses_nothing() {
    let mut random = Random::seeded("rebuild under load");
    let domain = Domain::start();
    reference_data(&domain.store, &mut random, 10, 5).await;
    workload(&domain.store, &mut random, "seed", 120, 10, 5).await;
    domain.settle().await;

    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let (store, writing) = (domain.store.clone(), writing.clone());
            let mut random = random.split();
            tokio::spawn(async move {
                let mut round = 0;
                while writing.load(Ordering::Relaxed) {
                    workload(&store, &mut random, &format!("w{writer}-{round}"), 5, 10, 5).await;
                    round += 1;
                }
            })
        })
        .collect();
    let mut rebuilds = Vec::new();
    for name in ALL {
        rebuilds.push(domain.projections.rebuild(name).await.unwrap());
    }
    // While they run, the old models answer every query.
    let mut answered = 0;
    while domain
        .projections
        .status()
        .iter()
        .any(|s| s.rebuild.is_some())
    {
        assert!(domain.projections.skus(None, 100).unwrap().skus.len() == 10);
        assert!(
            domain
                .projections
                .customer_orders(&customer(0), None, 10)
                .is_ok()
        );
        assert!(domain.projections.sales(None, 100).is_ok());
        assert!(domain.projections.account(&customer(1)).unwrap().is_some());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(answered > 0, "no query ran during the rebuilds");
    for rebuild in rebuilds {
        within("a rebuild", rebuild.finished()).await.unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        within("a writer", writer).await.unwrap();
    }
    domain.settle().await;
    assert_agrees_with_the_log(&domain, 10, 5);
    let switched = domain.digests();
    for name in ALL {
        let again = domain.projections.rebuild(name).await.unwrap();
        within("a fresh rebuild", again.finished()).await.unwrap();
    }
    assert_eq!(domain.digests(), switched, "a fresh rebuild differs");
    domain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_order_event_stops_only_the_orders_model() {
    let mut random = Random::seeded("poison");
    let domain = Domain::start();
    reference_data(&domain.store, &mut random, 4, 3).await;
    workload(&domain.store, &mut random, "before", 10, 4, 3).await;
    let poison = domain
        .store
        .append(
            &StreamId::new("order-poison").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("OrderPlaced", vec![0xff, 0xff, 0xff, 0xff])],
        )
        .await
        .unwrap();
    workload(&domain.store, &mut random, "after", 10, 4, 3).await;
    let head = domain.store.next_position();
    match domain
        .projections
        .wait_for_model(ORDERS, Position(head.0 - 1), PATIENCE)
        .await
    {
        Err(Error::Faulted { fault, .. }) => assert_eq!(fault.position, poison.first_position),
        other => panic!("expected the orders model to fault, got {other:?}"),
    }
    for name in [INVENTORY, ACCOUNTS, SALES] {
        domain
            .projections
            .wait_for_model(name, Position(head.0 - 1), PATIENCE)
            .await
            .unwrap_or_else(|error| panic!("{name} stopped too: {error}"));
    }
    let status = domain
        .projections
        .status()
        .into_iter()
        .find(|s| s.name == ORDERS)
        .unwrap();
    assert!(
        matches!(status.state, State::Faulted { position, .. } if position == poison.first_position)
    );
    assert!(status.checkpoint <= poison.first_position);
    // Its queries still answer, from where it stopped.
    assert!(
        domain
            .projections
            .customer_orders(&customer(0), None, 100)
            .is_ok()
    );
    assert!(matches!(
        domain
            .projections
            .wait_for(Position(head.0 - 1), Duration::from_secs(5))
            .await,
        Err(Error::Faulted { .. })
    ));
    domain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_then_a_wait_for_its_position_always_reads_the_write() {
    let mut random = Random::seeded("read your writes");
    let domain = Domain::start();
    reference_data(&domain.store, &mut random, 5, 3).await;
    for number in 0..40u64 {
        let order_id = format!("ryw-{number}");
        let placed = run::<orders::Order>(
            &domain.store,
            &order_id,
            orders::Command::PlaceOrder {
                order_id: order_id.clone(),
                customer_id: "reader".into(),
                lines: vec![orders::OrderLine {
                    sku: sku(random.below(5)),
                    quantity: 1,
                }],
                shipping_address: None,
            },
        )
        .await
        .unwrap();
        domain
            .projections
            .wait_for_model(ORDERS, placed.last_position, PATIENCE)
            .await
            .unwrap();
        let page = domain
            .projections
            .customer_orders("reader", None, 100)
            .unwrap();
        assert_eq!(page.total_orders, number + 1);
        assert_eq!(
            page.orders.last().map(|o| o.order_id.as_str()),
            Some(order_id.as_str())
        );
        assert_eq!(
            page.orders.last().map(|o| o.status),
            Some(OrderStatus::Pending)
        );

        let quantity = 1 + random.below(9);
        let before = domain.projections.sku(&sku(1)).unwrap().unwrap().on_hand;
        let restocked = run::<inventory::Stock>(
            &domain.store,
            &sku(1),
            inventory::Command::Restock { quantity },
        )
        .await
        .unwrap();
        domain
            .projections
            .wait_for(restocked.last_position, PATIENCE)
            .await
            .unwrap();
        assert_eq!(
            domain.projections.sku(&sku(1)).unwrap().unwrap().on_hand,
            before + quantity
        );
    }
    domain.stop().await;
}

/// Without `--correlations`, the read side keeps the four default read models and not
/// `correlations`, whose query then names it as unknown; the offline list of a store
/// adds it only once a build of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlations_are_kept_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
    let names = |list: Vec<Arc<dyn projections::Projection>>| {
        list.iter().map(|p| p.name().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(read_models::projections()),
        [ORDERS, INVENTORY, ACCOUNTS, SALES, CUSTOMERS, PERSONAL_DATA]
    );
    assert_eq!(names(read_models::all_projections()), ALL);
    assert_eq!(
        names(read_models::stored_projections(&store).unwrap()),
        [ORDERS, INVENTORY, ACCOUNTS, SALES, CUSTOMERS, PERSONAL_DATA]
    );
    let (read_side, runner) = ReadSide::start(&store, small_batches()).unwrap();
    assert!(!read_side.keeps_correlations());
    let mut listed: Vec<String> = read_side.status().into_iter().map(|s| s.name).collect();
    listed.sort();
    assert_eq!(
        listed,
        [ACCOUNTS, CUSTOMERS, INVENTORY, ORDERS, PERSONAL_DATA, SALES]
    );
    assert!(matches!(
        read_side.correlated(&[7; 16], 10),
        Err(Error::UnknownProjection(name)) if name == CORRELATIONS
    ));
    drop(runner);
    let (read_side, runner) = ReadSide::start_with_correlations(&store, small_batches()).unwrap();
    assert!(read_side.keeps_correlations());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));
    let mut listed: Vec<String> = read_side.status().into_iter().map(|s| s.name).collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ACCOUNTS,
            CORRELATIONS,
            CUSTOMERS,
            INVENTORY,
            ORDERS,
            PERSONAL_DATA,
            SALES
        ]
    );
    shutdown.cancel();
    within("the runner's stop", running).await.unwrap();
    assert_eq!(names(read_models::stored_projections(&store).unwrap()), ALL);
    store.close().await;
}

/// A log whose orders were placed by the code of schema version 1 (their `OrderPlaced`
/// as it wrote them: lines without a currency) gives the same read models, byte for
/// byte, as the same history written by the current code: they read it upcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_schema_version_1_gives_the_read_models_of_its_upcast() {
    fn event<A: Aggregate>(schema_version: u32, event: &A::Event) -> NewEvent {
        let mut new = NewEvent::new(A::event_type(event), postcard::to_allocvec(event).unwrap());
        new.schema_version = schema_version;
        new
    }
    fn placed(schema_version: u32, order: &str, quantity: u64) -> NewEvent {
        let line = orders::OrderLine {
            sku: "apple".into(),
            quantity,
        };
        let (order_id, customer_id) = (order.to_owned(), "alice".to_owned());
        if schema_version == 1 {
            let old = orders::v1::Event::OrderPlaced {
                order_id,
                customer_id,
                lines: vec![line],
            };
            let mut new = NewEvent::new("OrderPlaced", postcard::to_allocvec(&old).unwrap());
            new.schema_version = 1;
            new
        } else if schema_version == 2 {
            let old = orders::v2::Event::OrderPlaced {
                order_id,
                customer_id,
                lines: vec![orders::PlacedLine::in_default_currency(&line)],
            };
            let mut new = NewEvent::new("OrderPlaced", postcard::to_allocvec(&old).unwrap());
            new.schema_version = 2;
            new
        } else {
            event::<orders::Order>(
                schema_version,
                &orders::Event::OrderPlaced {
                    order_id,
                    customer_id,
                    lines: vec![orders::PlacedLine::in_default_currency(&line)],
                    shipping_address: None,
                },
            )
        }
    }
    let mut digests = Vec::new();
    for order_version in [1, 2, 3] {
        let domain = Domain::start();
        let stock = |e: inventory::Event| ("stock-apple", event::<inventory::Stock>(1, &e));
        let account = |e: payments::Event| ("account-alice", event::<payments::Account>(1, &e));
        let order =
            |id: &'static str, e: orders::Event| (id, event::<orders::Order>(order_version, &e));
        let history = vec![
            stock(inventory::Event::SkuRegistered {
                sku: "apple".into(),
                name: "Apple".into(),
                unit_price: 120,
            }),
            stock(inventory::Event::Restocked { quantity: 10 }),
            account(payments::Event::AccountOpened {
                customer_id: "alice".into(),
            }),
            account(payments::Event::Deposited { amount: 1_000 }),
            ("order-o1", placed(order_version, "o1", 3)),
            stock(inventory::Event::StockReserved {
                order_id: "o1".into(),
                quantity: 3,
                unit_price: 120,
            }),
            account(payments::Event::Charged {
                order_id: "o1".into(),
                amount: 360,
            }),
            order("order-o1", orders::Event::OrderConfirmed { total: 360 }),
            stock(inventory::Event::ReservationConfirmed {
                order_id: "o1".into(),
                quantity: 3,
            }),
            ("order-o2", placed(order_version, "o2", 1)),
            order(
                "order-o2",
                orders::Event::OrderCancelled {
                    reason: "changed my mind".into(),
                },
            ),
        ];
        for (stream, event) in history {
            domain
                .store
                .append(
                    &StreamId::new(stream).unwrap(),
                    ExpectedVersion::Any,
                    vec![event],
                )
                .await
                .unwrap();
        }
        domain.settle().await;
        let orders = domain
            .projections
            .customer_orders("alice", None, 100)
            .unwrap();
        assert_eq!(orders.orders.len(), 2, "{order_version}");
        digests.push(domain.digests());
        domain.stop().await;
    }
    assert_eq!(digests[0], digests[1]);
}

/// Personal data in the read models: a customer registered with sealed fields (real
/// ones, from a real key store), orders with a sealed shipping address, then the
/// customer's erasure. `customers`, `orders` and `personal_data` keep the ciphertext with
/// its place, which the key store opens; the erasure is marked; a rebuild gives the same
/// answers; and no file of the store holds a plaintext byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_kept_sealed_indexed_and_marked_erased() {
    const NAME: &str = "Alice Liddell-Plaintextname";
    const EMAIL: &str = "alice.plaintext@example.com";
    const ADDRESS: &str = "7 Rabbit Hole Lane, Plaintextshire";
    const SHIPPING: &str = "12 Looking Glass Road, Plaintextford";

    let domain = Domain::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys =
        privacy::KeyStore::open(keys_dir.path(), privacy::MasterKey::generate().unwrap()).unwrap();
    let key = keys.create_key("alice").unwrap();
    let other_key = keys.create_key("bob").unwrap();

    // Registration, sealed as the API does: for the event the repository will give the
    // command's first event.
    let command_id = uuid::Uuid::now_v7();
    let event_id = eventstore::EventId::derived(command_id, 0).as_uuid();
    let seal = |key, stream: &str, event_id, field: &str, value: &str| {
        let at = privacy::Binding {
            stream,
            event_id,
            field,
        };
        keys.seal(key, &at, value).unwrap()
    };
    let register = customers::Command::RegisterCustomer {
        customer_id: "alice".into(),
        name: seal(key, "customer-alice", event_id, "name", NAME),
        email: seal(key, "customer-alice", event_id, "email", EMAIL),
        address: seal(key, "customer-alice", event_id, "address", ADDRESS),
    };
    let options = |command_id| CommandOptions {
        command_id,
        ..CommandOptions::default()
    };
    Repository::<customers::Customer>::new(domain.store.clone())
        .execute("alice", &register, &options(command_id))
        .await
        .unwrap();
    let bob_id = uuid::Uuid::now_v7();
    let bob_event = eventstore::EventId::derived(bob_id, 0).as_uuid();
    let register_bob = customers::Command::RegisterCustomer {
        customer_id: "bob".into(),
        name: seal(other_key, "customer-bob", bob_event, "name", "Bob"),
        email: seal(
            other_key,
            "customer-bob",
            bob_event,
            "email",
            "bob@example.com",
        ),
        address: seal(other_key, "customer-bob", bob_event, "address", "Bob's"),
    };
    Repository::<customers::Customer>::new(domain.store.clone())
        .execute("bob", &register_bob, &options(bob_id))
        .await
        .unwrap();

    // Two orders of alice's with a shipping address under her key, one without.
    let mut placed = Vec::new();
    for (order_id, with_address) in [("p1", true), ("p2", false), ("p3", true)] {
        let command_id = uuid::Uuid::now_v7();
        let event_id = eventstore::EventId::derived(command_id, 0).as_uuid();
        let stream = format!("order-{order_id}");
        let shipping_address =
            with_address.then(|| seal(key, &stream, event_id, "shipping_address", SHIPPING));
        let place = orders::Command::PlaceOrder {
            order_id: order_id.into(),
            customer_id: "alice".into(),
            lines: vec![orders::OrderLine {
                sku: "apple".into(),
                quantity: 1,
            }],
            shipping_address,
        };
        let committed = Repository::<orders::Order>::new(domain.store.clone())
            .execute(order_id, &place, &options(command_id))
            .await
            .unwrap();
        placed.push((order_id, with_address, committed.outcome.last_position.0));
    }
    domain.settle().await;

    let open = |field: &privacy::SealedField| keys.open_sealed(&field.sealed, &field.binding());
    let read = &domain.projections;
    let profile = read.customer("alice").unwrap().unwrap();
    assert_eq!(open(&profile.name).unwrap(), NAME);
    assert_eq!(open(&profile.email).unwrap(), EMAIL);
    assert_eq!(open(&profile.address).unwrap(), ADDRESS);
    assert_eq!(profile.email.stream, "customer-alice");
    assert_eq!(profile.email.event_id, event_id);
    assert_eq!(
        (profile.version, profile.erased, profile.erased_at),
        (0, false, None)
    );
    assert_eq!(read.customer("nobody").unwrap(), None);

    let orders = read.customer_orders("alice", None, 10).unwrap().orders;
    assert_eq!(orders.len(), 3);
    for (summary, (order_id, with_address, _)) in orders.iter().zip(&placed) {
        assert_eq!(summary.order_id, *order_id);
        match (&summary.shipping_address, with_address) {
            (Some(address), true) => {
                assert_eq!(open(address).unwrap(), SHIPPING);
                assert_eq!(address.stream, format!("order-{order_id}"));
            }
            (None, false) => {}
            other => panic!("order {order_id}: {other:?}"),
        }
    }

    let fields = read.personal_data(&[key]).unwrap();
    let found: Vec<(u64, &str, &str, &str)> = fields
        .iter()
        .map(|field| {
            (
                field.position,
                field.event_type.as_str(),
                field.sealed.stream.as_str(),
                field.sealed.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (0, "CustomerRegistered", "customer-alice", "name"),
            (0, "CustomerRegistered", "customer-alice", "email"),
            (0, "CustomerRegistered", "customer-alice", "address"),
            (placed[0].2, "OrderPlaced", "order-p1", "shipping_address"),
            (placed[2].2, "OrderPlaced", "order-p3", "shipping_address"),
        ]
    );
    let values: Vec<String> = fields.iter().map(|f| open(&f.sealed).unwrap()).collect();
    assert_eq!(values, [NAME, EMAIL, ADDRESS, SHIPPING, SHIPPING]);
    assert_eq!(read.personal_data(&[other_key]).unwrap().len(), 3, "bob's");
    assert_eq!(read.personal_data(&[key, other_key]).unwrap().len(), 8);
    assert!(
        read.personal_data(&[privacy::KeyId(uuid::Uuid::from_u128(1))])
            .unwrap()
            .is_empty()
    );

    // The erasure: the event, then the keys (as the API does).
    let erase = customers::Command::ErasePersonalData {
        reason: "the customer asked".into(),
        erased_by: "operator".into(),
        key_ids: vec![key],
    };
    let erased = Repository::<customers::Customer>::new(domain.store.clone())
        .execute("alice", &erase, &options(uuid::Uuid::now_v7()))
        .await
        .unwrap();
    keys.erase("alice").unwrap();
    domain.settle().await;
    let profile = read.customer("alice").unwrap().unwrap();
    assert!(profile.erased);
    assert_eq!(profile.version, 1);
    let recorded = domain
        .store
        .read_all(erased.outcome.last_position, 1)
        .unwrap()
        .remove(0);
    assert_eq!(profile.erased_at, Some(recorded.recorded_at));
    assert_eq!(profile.erasure.as_ref().unwrap().key_ids, vec![key]);
    assert!(matches!(
        open(&profile.name),
        Err(privacy::Unreadable::Erased { .. })
    ));
    assert!(!read.customer("bob").unwrap().unwrap().erased);
    let answers = |read: &ReadSide| {
        (
            read.customer("alice").unwrap(),
            read.customer("bob").unwrap(),
            read.customer_orders("alice", None, 10).unwrap(),
            read.personal_data(&[key, other_key]).unwrap(),
        )
    };
    let before = answers(read);

    // A rebuild of each gives the same answers, byte for byte.
    let names = [ORDERS, CUSTOMERS, PERSONAL_DATA];
    let digests: Vec<String> = names.iter().map(|n| read.digest(n).unwrap()).collect();
    for name in names {
        let rebuild = read.rebuild(name).await.unwrap();
        within("a rebuild", rebuild.finished()).await.unwrap();
    }
    assert_eq!(answers(read), before);
    let rebuilt: Vec<String> = names.iter().map(|n| read.digest(n).unwrap()).collect();
    assert_eq!(rebuilt, digests);

    // No file of the store (log, sled, read models) holds a plaintext byte string.
    let data_dir = domain.stop_keeping_files().await;
    let data_dir = data_dir.path();
    // The scan finds what is there: the stream ids are in the log in the clear.
    assert!(!files_containing(data_dir, b"customer-alice").is_empty());
    for plaintext in [NAME, EMAIL, ADDRESS, SHIPPING, "bob@example.com"] {
        let holders = files_containing(data_dir, plaintext.as_bytes());
        assert!(holders.is_empty(), "{plaintext:?} in {holders:?}");
    }
}

/// The files under `dir` (at any depth) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|window| window == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}
