//! The fulfilment saga's invariants, end to end against the real `annals serve`: 500
//! orders from 50 customers competing for scarce stock of 10 skus, with random funds,
//! random cancels and a few deadlines (some charges are held up past the deadline by
//! the server's fault injection). Once every saga has finished:
//!
//! - every order is `confirmed` or `cancelled`;
//! - for every sku, stock confirmed to orders + available = restocked, nothing reserved;
//! - for every account, balance = deposits - charges of confirmed orders (refunds
//!   balance the rest), and no order was charged twice;
//! - a confirmed order was charged its total, the total of its lines at the sku prices;
//! - every cancel the API acknowledged (200) ended its order `cancelled`, with the
//!   customer's reason.
//!
//! The second test runs the same workload while the server is killed with SIGKILL at
//! random moments (at least 5 times) and restarted on the same data directory; clients
//! retry with the same `Idempotency-Key`, as a real client would.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use eventstore::{Aggregate, Direction, EventStore, Repository, StoreConfig, Version};
use serde_json::{Value, json};
use test_support::{AnnalsServer, Random};

const SKUS: usize = 10;
const CUSTOMERS: usize = 50;
const ORDERS: usize = 500;
const CLIENTS: usize = 16;
/// The reason of every customer cancel; the saga's own cancels give other reasons.
const CUSTOMER_REASON: &str = "changed my mind";

/// `annals serve` over `data` with the saga on. Deadlines: 10% of charges are held up
/// for 6 s, far past the 2 s deadline, so that a deadline wins even on a loaded machine.
fn serve(data: &Path) -> AnnalsServer {
    AnnalsServer::start_in(data, &SAGA_FLAGS)
}

/// The saga's flags of these scenarios: a 2 s deadline, 10% of charges held up 6 s.
pub(crate) const SAGA_FLAGS: [&str; 6] = [
    "--saga-timeout",
    "2",
    "--fault-charge-delay-ms",
    "6000",
    "--fault-charge-delay-percent",
    "10",
];

/// Runs `f` (which blocks: starting or restarting a server) without holding up the
/// runtime's other tasks.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A client that retries through server restarts: same request, same key.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Client {
    /// POSTs until the server answers (any status), retrying connection failures.
    pub(crate) async fn post(&self, path: &str, body: &Value, key: &str) -> (u16, Value) {
        let started = Instant::now();
        loop {
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .header("Idempotency-Key", key)
                .json(body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().as_u16() != 503 => {
                    let status = response.status().as_u16();
                    let body = response.json().await.unwrap_or(Value::Null);
                    return (status, body);
                }
                _ => {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "POST {path} never got through"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }
}

/// What the workload did, to check the outcome against.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    restocked: BTreeMap<String, u64>,
    deposits: BTreeMap<String, u64>,
    pub(crate) orders: Vec<String>,
    /// The orders whose customer cancel was acknowledged (answered 200).
    pub(crate) acknowledged_cancels: Vec<String>,
}

/// What the clients did: the orders placed, and those whose cancel was acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub(crate) orders: Vec<String>,
    pub(crate) acknowledged_cancels: Vec<String>,
}

pub(crate) async fn setup(client: &Client, random: &mut Random) -> Ledger {
    let mut ledger = Ledger::default();
    for s in 0..SKUS {
        let sku = format!("sku{s}");
        let price = 50 + random.below(450);
        let body = json!({"sku": sku, "name": format!("Thing {s}"), "unit_price": price});
        let (status, body) = client
            .post("/api/v1/inventory/skus", &body, &format!("register-{sku}"))
            .await;
        assert_eq!(status, 201, "{body}");
        // Scarce: about half of what the orders will ask for.
        let quantity = 40 + random.below(40);
        let (status, body) = client
            .post(
                &format!("/api/v1/inventory/skus/{sku}/restock"),
                &json!({ "quantity": quantity }),
                &format!("restock-{sku}"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ledger.restocked.insert(sku, quantity);
    }
    for c in 0..CUSTOMERS {
        let customer = format!("customer{c}");
        if c % 10 == 9 {
            continue; // No account: every order of theirs is refused payment.
        }
        let (status, body) = client
            .post(
                "/api/v1/payments/accounts",
                &json!({ "customer_id": customer }),
                &format!("open-{customer}"),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let amount = random.below(12_000);
        ledger.deposits.insert(customer.clone(), amount);
        if amount > 0 {
            let (status, body) = client
                .post(
                    &format!("/api/v1/payments/accounts/{customer}/deposits"),
                    &json!({ "amount": amount }),
                    &format!("deposit-{customer}"),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    ledger
}

/// Places `ORDERS` orders from `CLIENTS` concurrent clients; some are cancelled soon
/// after.
pub(crate) async fn place_orders(
    client: &Client,
    random: &mut Random,
    run: u64,
    orders: usize,
) -> Placed {
    let mut plans: Vec<Vec<(Value, Option<u64>)>> = vec![Vec::new(); CLIENTS];
    for i in 0..orders {
        let customer = format!("customer{}", random.below(CUSTOMERS as u64));
        let mut skus: Vec<u64> = (0..SKUS as u64).collect();
        let lines: Vec<Value> = (0..1 + random.below(3))
            .map(|_| {
                let sku = skus.remove(random.below(skus.len() as u64) as usize);
                json!({"sku": format!("sku{sku}"), "quantity": 1 + random.below(4)})
            })
            .collect();
        let cancel_after_ms = (random.below(10) == 0).then(|| random.below(30));
        plans[i % CLIENTS].push((
            json!({"customer_id": customer, "lines": lines}),
            cancel_after_ms,
        ));
    }
    let mut tasks = Vec::new();
    for (c, plan) in plans.into_iter().enumerate() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = Placed::default();
            for (n, (order, cancel_after_ms)) in plan.into_iter().enumerate() {
                let key = format!("order-{run}-{c}-{n}");
                let (status, body) = client.post("/api/v1/orders", &order, &key).await;
                assert_eq!(status, 201, "{body}");
                let order_id = body["order_id"].as_str().unwrap().to_owned();
                if let Some(after) = cancel_after_ms {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    let (status, body) = client
                        .post(
                            &format!("/api/v1/orders/{order_id}/cancel"),
                            &json!({ "reason": CUSTOMER_REASON }),
                            &format!("cancel-{key}"),
                        )
                        .await;
                    // Too late is fine: the order was settled first.
                    assert!(
                        [200, 409, 422].contains(&status),
                        "cancel answered {status}: {body}"
                    );
                    if status == 200 {
                        placed.acknowledged_cancels.push(order_id.clone());
                    }
                }
                placed.orders.push(order_id);
            }
            placed
        }));
    }
    let mut placed = Placed::default();
    for task in tasks {
        let of_one_client = task.await.unwrap();
        placed.orders.extend(of_one_client.orders);
        placed
            .acknowledged_cancels
            .extend(of_one_client.acknowledged_cancels);
    }
    placed
}

/// Waits until every order's saga has finished (polling the API).
pub(crate) async fn wait_for_quiescence(client: &Client, orders: &[String]) {
    let started = Instant::now();
    let mut waiting: Vec<&String> = orders.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for order in waiting {
            let finished = client
                .get(&format!("/api/v1/sagas/fulfilment/{order}"))
                .await
                .is_some_and(|(status, saga)| status == 200 && saga["finished"] == true);
            if !finished {
                still.push(order);
            }
        }
        waiting = still;
        if let Some(order) = waiting.first() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} sagas never finished, e.g. {order}: {:?}",
                waiting.len(),
                client
                    .get(&format!("/api/v1/sagas/fulfilment/{order}"))
                    .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Opens the stopped server's store and checks every invariant.
pub(crate) async fn check_invariants(data: &Path, ledger: &Ledger) -> BTreeMap<String, usize> {
    let store = {
        let _not_spawning = test_support::not_spawning();
        EventStore::open(data, StoreConfig::default()).expect("the store opens")
    };
    let report = store.verify().expect("the log verifies");
    assert!(report.events > 0);
    let orders = Repository::<orders::Order>::new(store.clone());
    let stock = Repository::<inventory::Stock>::new(store.clone());
    let accounts = Repository::<payments::Account>::new(store.clone());

    let mut prices = BTreeMap::new();
    for sku in ledger.restocked.keys() {
        prices.insert(sku.clone(), stock.load(sku).unwrap().state.unit_price());
    }
    let mut shipped: BTreeMap<String, u64> = BTreeMap::new();
    let mut spent: BTreeMap<String, u64> = BTreeMap::new();
    let mut outcomes: HashMap<String, (String, orders::Order)> = HashMap::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for order_id in &ledger.orders {
        let order = orders.load(order_id).unwrap().state;
        match order.status() {
            orders::OrderStatus::Confirmed => {
                *tally.entry("confirmed".into()).or_default() += 1;
                let total: u64 = order
                    .lines()
                    .iter()
                    .map(|line| line.quantity * prices[&line.sku])
                    .sum();
                assert_eq!(order.total(), Some(total), "order {order_id}'s total");
                for line in order.lines() {
                    *shipped.entry(line.sku.clone()).or_default() += line.quantity;
                }
                *spent.entry(order.customer_id().to_owned()).or_default() += total;
            }
            orders::OrderStatus::Cancelled => {
                let reason = order.cancel_reason().unwrap_or_default();
                let why = [
                    "insufficient stock",
                    "payment refused",
                    "deadline",
                    CUSTOMER_REASON,
                ]
                .into_iter()
                .find(|why| reason.contains(why))
                .unwrap_or_else(|| panic!("order {order_id}: unexpected reason {reason:?}"));
                *tally.entry(format!("cancelled: {why}")).or_default() += 1;
            }
            status => panic!("order {order_id} ended {status}"),
        }
        outcomes.insert(order_id.clone(), (order.customer_id().to_owned(), order));
    }

    // An acknowledged cancel is final. The order aggregate cancels only a pending order and
    // confirms only a pending order, so a confirmation that won first would have refused
    // the cancel (409), never acknowledged it: every acknowledged cancel must have ended
    // its order, with the customer's reason (not a saga cancel that came first, which
    // would have refused it too).
    for order_id in &ledger.acknowledged_cancels {
        let (_, order) = &outcomes[order_id];
        assert_eq!(
            order.status(),
            orders::OrderStatus::Cancelled,
            "order {order_id}: its cancel was acknowledged, yet it ended {}",
            order.status()
        );
        assert_eq!(
            order.cancel_reason(),
            Some(CUSTOMER_REASON),
            "order {order_id}: its cancel was acknowledged, yet another reason ended it"
        );
    }

    for (sku, restocked) in &ledger.restocked {
        let level = stock.load(sku).unwrap().state;
        let shipped = shipped.get(sku).copied().unwrap_or(0);
        assert_eq!(level.reserved(), 0, "{sku}: a reservation was left behind");
        assert_eq!(
            shipped + level.available(),
            *restocked,
            "{sku}: confirmed {shipped} + available {} != restocked {restocked}",
            level.available()
        );
    }

    for (customer, deposits) in &ledger.deposits {
        let account = accounts.load(customer).unwrap().state;
        let spent = spent.get(customer).copied().unwrap_or(0);
        assert_eq!(
            account.balance(),
            deposits - spent,
            "{customer}: balance != deposits {deposits} - confirmed charges {spent}"
        );
        let stream = Repository::<payments::Account>::stream_id(customer).unwrap();
        let history: Vec<payments::Event> = store
            .read_stream(&stream, Version(0), Direction::Forward, 100_000)
            .unwrap()
            .iter()
            .map(|event| {
                payments::Account::decode_event(event.schema_version, &event.payload).unwrap()
            })
            .collect();
        for (order_id, charge) in &payments::Charges::of(&history).0 {
            let (_, order) = &outcomes[order_id];
            match order.status() {
                orders::OrderStatus::Confirmed => {
                    assert!(!charge.refunded, "confirmed order {order_id} was refunded");
                    assert_eq!(Some(charge.amount), order.total());
                }
                _ => assert!(
                    charge.refunded,
                    "cancelled order {order_id} kept its charge"
                ),
            }
        }
        // No order charged or refunded twice: one Charged event per order in the
        // account's stream, at most one Refunded.
        let mut charged: HashMap<(&str, &str), u32> = HashMap::new();
        for event in &history {
            let once = match event {
                payments::Event::Charged { order_id, .. } => ("charged", order_id.as_str()),
                payments::Event::Refunded { order_id, .. } => ("refunded", order_id.as_str()),
                _ => continue,
            };
            let count = charged.entry(once).or_default();
            *count += 1;
            assert_eq!(*count, 1, "order {} {} twice", once.1, once.0);
        }
    }
    store.close().await;
    tally
}

/// `annals replay all --json` on a stopped data directory.
fn replay_all(data: &Path) -> Value {
    let data = data.to_str().expect("a UTF-8 path");
    let output = test_support::run_annals(
        &[
            "replay",
            "all",
            "--no-progress",
            "--json",
            "--data-dir",
            data,
        ],
        Path::new("."),
    );
    assert!(
        output.status.success(),
        "replay all failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

async fn run(name: &str, kills: bool) {
    let mut random = Random::seeded(name);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = blocking(|| serve(&data));
    let client = Client {
        http: reqwest::Client::new(),
        base: server.url(),
    };
    let mut ledger = setup(&client, &mut random).await;

    let placing = {
        let client = client.clone();
        let mut random = random.split();
        tokio::spawn(async move { place_orders(&client, &mut random, 0, ORDERS).await })
    };
    let mut killed = 0;
    if kills {
        while !placing.is_finished() || killed < 5 {
            tokio::time::sleep(Duration::from_millis(150 + random.below(600))).await;
            server.kill();
            killed += 1;
            blocking(|| server.restart());
        }
    }
    let placed = placing.await.unwrap();
    ledger.orders = placed.orders;
    ledger.acknowledged_cancels = placed.acknowledged_cancels;
    assert_eq!(ledger.orders.len(), ORDERS);
    if kills {
        // One more kill while the sagas finish their work; then every derived structure
        // (index, read models, the saga checkpoint) is rebuilt from the log before the
        // restart, and the unfinished sagas must still resume from it.
        tokio::time::sleep(Duration::from_millis(random.below(300))).await;
        server.kill();
        killed += 1;
        let rebuilt = replay_all(&data);
        println!(
            "{name}: replay all after the last kill: {}",
            rebuilt["sagas"]
        );
        assert!(rebuilt["sagas"]["instances"].as_u64().unwrap() > 0);
        blocking(|| server.restart());
    }
    wait_for_quiescence(&client, &ledger.orders).await;
    blocking(|| server.terminate());
    let tally = check_invariants(&data, &ledger).await;
    let rebuilt = replay_all(&data);
    assert_eq!(rebuilt["sagas"]["instances"], ORDERS, "{rebuilt}");
    assert_eq!(rebuilt["sagas"]["unfinished"], 0, "{rebuilt}");
    assert_eq!(
        rebuilt["sagas"]["checkpoint"], rebuilt["events"],
        "{rebuilt}"
    );
    println!(
        "{name}: {tally:?}, {killed} kills, {} acknowledged cancels",
        ledger.acknowledged_cancels.len()
    );
    // The workload exercises every path.
    for outcome in [
        "confirmed",
        "cancelled: insufficient stock",
        "cancelled: payment refused",
        "cancelled: deadline",
    ] {
        assert!(tally.contains_key(outcome), "no order {outcome}: {tally:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scarce_stock_random_funds_and_cancels_keep_every_invariant() {
    run("saga invariants", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invariant_holds_while_the_server_is_killed_and_restarted() {
    run("saga invariants under kill -9", true).await;
}
