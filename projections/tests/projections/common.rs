//! Helpers shared by the test modules: stores, a workload of sale events, the expected
//! tally computed straight from the log, and time limits that turn a hang into a failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use eventstore::{
    AppendOutcome, EventStore, ExpectedVersion, Model, NewEvent, Position, RecordedEvent,
    StoreConfig, StreamId,
};
use projections::{Handle, Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

use crate::tally::{self, Open, Sale, Tally, Totals};

pub use test_support::{PATIENCE, Random, SPAWNING, within};

/// Opens the store in `dir` (never while a child is being spawned; see
/// `test_support::SPAWNING`).
pub fn open(dir: &Path) -> EventStore {
    let _not_spawning = test_support::not_spawning();
    EventStore::open(dir, StoreConfig::default())
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()))
}

/// Small batches, so that tests cross many batch boundaries.
pub fn small_batches() -> RunnerConfig {
    RunnerConfig {
        catch_up_batch_events: 97,
        switch_lag: 50,
        live_batch_events: 16,
        ..RunnerConfig::default()
    }
}

/// A running runner with the tally at `version`.
pub struct Running {
    pub handle: Handle,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(store: &EventStore, version: u32, config: RunnerConfig) -> Running {
        let (runner, handle) = Runner::new(store, vec![Arc::new(Tally { version })], config)
            .expect("the runner is made");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner.run(shutdown.clone()));
        Running {
            handle,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        within("the runner's stop", self.task)
            .await
            .expect("the runner ends");
    }

    /// Waits until the tally has applied everything written so far.
    pub async fn settle(&self, store: &EventStore) {
        let head = store.next_position();
        if head.0 > 0 {
            self.handle
                .wait_for(tally::NAME, Position(head.0 - 1), PATIENCE)
                .await
                .unwrap_or_else(|error| panic!("the tally did not reach {head}: {error}"));
        }
    }
}

/// Appends one sale event to `sale-<sku>`.
pub async fn append(store: &EventStore, sku: u64, sale: &Sale) -> AppendOutcome {
    let (event_type, payload) = sale.encode();
    append_raw(store, &format!("sale-{sku}"), event_type, payload).await
}

/// Appends one event as given (a poison event, or one of another category).
pub async fn append_raw(
    store: &EventStore,
    stream: &str,
    event_type: &str,
    payload: Vec<u8>,
) -> AppendOutcome {
    store
        .append(
            &StreamId::new(stream).expect("a valid stream id"),
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, payload)],
        )
        .await
        .unwrap_or_else(|error| panic!("append to {stream} failed: {error}"))
}

/// Writes `orders` random orders (reserve, then confirm or release, some left open)
/// over `skus` skus, with a few events of other categories in between.
pub async fn workload(store: &EventStore, random: &mut Random, tag: &str, orders: u64, skus: u64) {
    let mut open: Vec<(u64, String)> = Vec::new();
    for number in 0..orders {
        let sku = random.below(skus);
        let order = format!("{tag}-{number}");
        let reserved = Sale::Reserved {
            order: order.clone(),
            quantity: 1 + random.below(9),
            unit_price: 1 + random.below(1_000),
        };
        append(store, sku, &reserved).await;
        open.push((sku, order));
        if random.below(10) == 0 {
            append_raw(store, "audit-1", "Noted", b"not a sale".to_vec()).await;
        }
        while open.len() > random.below(4) as usize {
            let (sku, order) = open.swap_remove(random.below(open.len() as u64) as usize);
            let settled = if random.below(4) == 0 {
                Sale::Released { order }
            } else {
                Sale::Confirmed { order }
            };
            append(store, sku, &settled).await;
        }
    }
}

/// The tally of the events before `until`, computed straight from the log: open
/// reservations and totals per sku.
pub fn expected(
    log: &[RecordedEvent],
    until: Position,
) -> (BTreeMap<String, Open>, BTreeMap<String, Totals>) {
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for event in log.iter().take_while(|event| event.position < until) {
        let Some(sku) = tally::sku_of(event.stream_id.as_str()) else {
            continue;
        };
        let sale = Sale::parse(&event.event_type, &event.payload)
            .unwrap_or_else(|error| panic!("bad sale event at {}: {error}", event.position));
        match sale {
            Sale::Reserved {
                order,
                quantity,
                unit_price,
            } => {
                open.entry(sku.to_owned())
                    .or_default()
                    .insert(order, (quantity, unit_price));
            }
            Sale::Released { order } => {
                let held = open.get_mut(sku).expect("a reservation");
                held.remove(&order).expect("the order's reservation");
                if held.is_empty() {
                    open.remove(sku);
                }
            }
            Sale::Confirmed { order } => {
                let held = open.get_mut(sku).expect("a reservation");
                let (quantity, unit_price) = held.remove(&order).expect("the order's reservation");
                if held.is_empty() {
                    open.remove(sku);
                }
                let sold = totals.entry(sku.to_owned()).or_insert((0, 0, 0));
                sold.0 += quantity;
                sold.1 += quantity * unit_price;
                sold.2 += 1;
            }
        }
    }
    (open, totals)
}

/// What a tally model holds: open reservations and totals per sku.
pub fn actual(model: &Model) -> (BTreeMap<String, Open>, BTreeMap<String, Totals>) {
    let decode = |table: &str| -> Vec<(String, Vec<u8>)> {
        model
            .scan(table, b"", None, usize::MAX)
            .expect("scan the model")
            .into_iter()
            .map(|(key, value)| (String::from_utf8(key).expect("a text key"), value))
            .collect()
    };
    let open = decode(tally::OPEN)
        .into_iter()
        .map(|(sku, bytes)| {
            (
                sku,
                postcard::from_bytes::<Open>(&bytes).expect("open reservations"),
            )
        })
        .collect();
    let totals = decode(tally::TOTALS)
        .into_iter()
        .map(|(sku, bytes)| (sku, postcard::from_bytes::<Totals>(&bytes).expect("totals")))
        .collect();
    (open, totals)
}

/// Checks that `model` holds exactly the tally of the log before its checkpoint.
pub fn assert_exact(model: &Model, log: &[RecordedEvent], what: &str) -> Position {
    let checkpoint = model.checkpoint().expect("the checkpoint");
    assert!(
        checkpoint.0 <= log.len() as u64,
        "{what}: checkpoint {checkpoint} is past the end of the log ({})",
        log.len()
    );
    let (expected_open, expected_totals) = expected(log, checkpoint);
    let (actual_open, actual_totals) = actual(model);
    assert_eq!(
        actual_totals, expected_totals,
        "{what}: the totals at checkpoint {checkpoint} are not those of the log (doubled or short)"
    );
    assert_eq!(
        actual_open, expected_open,
        "{what}: the open reservations at checkpoint {checkpoint} are not those of the log"
    );
    checkpoint
}

/// The whole durable log.
pub fn read_log(store: &EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position(0), usize::MAX)
        .expect("read the whole log")
}
