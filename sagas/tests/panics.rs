//! A saga instance that panics finishes in the same process: the driver stops its
//! instances, runs again from its checkpoint, and the instance resumes from its stream;
//! the command that panicked after taking effect is issued again under the same id and
//! has no second effect (one reservation per line, one charge).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventstore::{CommandOptions, EventStore, Position, RecordedEvent, Repository, StoreConfig};
use repositories::Repositories;
use sagas::fulfilment::{Command, Input, Phase};
use sagas::{
    Clock, Dispatcher, Driver, DriverConfig, DriverWorker, Fulfilment, FulfilmentServices, Issued,
    ManualClock,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(30);

fn open(dir: &Path) -> EventStore {
    EventStore::open(dir, StoreConfig::default()).expect("the store opens")
}

async fn command<A: eventstore::Aggregate>(store: &EventStore, id: &str, command: A::Command) {
    let options = CommandOptions {
        command_id: Uuid::now_v7(),
        ..CommandOptions::default()
    };
    Repository::<A>::new(store.clone())
        .execute(id, &command, &options)
        .await
        .expect("the command commits");
}

/// The skus `apple` and `pear` (10 each, at 120 and 80) and `alice`'s account (1,000).
async fn seed(store: &EventStore) {
    for (sku, price) in [("apple", 120), ("pear", 80)] {
        command::<inventory::Stock>(
            store,
            sku,
            inventory::Command::RegisterSku {
                sku: sku.into(),
                name: sku.into(),
                unit_price: price,
            },
        )
        .await;
        command::<inventory::Stock>(store, sku, inventory::Command::Restock { quantity: 10 }).await;
    }
    command::<payments::Account>(
        store,
        "alice",
        payments::Command::OpenAccount {
            customer_id: "alice".into(),
        },
    )
    .await;
    command::<payments::Account>(store, "alice", payments::Command::Deposit { amount: 1_000 })
        .await;
}

/// The fulfilment services, except that the first command matching `panics_on` panics
/// right after it took effect (its answer is lost).
struct PanicOnce {
    inner: FulfilmentServices,
    panics_on: fn(&Command) -> bool,
    panics: AtomicU32,
}

impl Dispatcher<Fulfilment> for PanicOnce {
    fn route(&self, event: &RecordedEvent, clock: &dyn Clock) -> Option<(String, Input)> {
        self.inner.route(event, clock)
    }

    async fn execute(
        &self,
        state: &Fulfilment,
        command_id: Uuid,
        issued: &Issued<Command>,
    ) -> Result<Input, eventstore::Error> {
        let answer = self.inner.execute(state, command_id, issued).await;
        if (self.panics_on)(&issued.command) && self.panics.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("injected: the {} command panicked", issued.key);
        }
        answer
    }
}

fn panic_once(store: &EventStore, panics_on: fn(&Command) -> bool) -> Arc<PanicOnce> {
    Arc::new(PanicOnce {
        inner: FulfilmentServices::new(Repositories::new(store.clone()), TIMEOUT),
        panics_on,
        panics: AtomicU32::new(0),
    })
}

/// Places `order`: two apples and three pears for alice.
async fn place(store: &EventStore, order: &str) {
    command::<orders::Order>(
        store,
        order,
        orders::Command::PlaceOrder {
            order_id: order.into(),
            customer_id: "alice".into(),
            lines: vec![
                orders::OrderLine {
                    sku: "apple".into(),
                    quantity: 2,
                },
                orders::OrderLine {
                    sku: "pear".into(),
                    quantity: 3,
                },
            ],
            shipping_address: None,
        },
    )
    .await;
}

/// Waits (up to 20 s) for the saga of `order` to be confirmed.
async fn confirmed(store: &EventStore, order: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(view) = sagas::view::load::<Fulfilment>(store, order).unwrap()
            && view.state.phase == Phase::Confirmed
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the saga of {order} was never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The events the saga's command `key` of `order` wrote.
fn events_of(log: &[RecordedEvent], order: &str, key: &str) -> usize {
    let command_id = sagas::saga::command_id::<Fulfilment>(order, key);
    log.iter()
        .filter(|event| event.metadata.command_id == Some(command_id))
        .count()
}

/// The saga invariants after `order` was confirmed once: each command took effect once.
fn assert_once(store: &EventStore, order: &str) {
    let log = store.read_all(Position(0), usize::MAX).unwrap();
    for key in [
        "reserve:apple",
        "reserve:pear",
        "charge",
        "confirm-order",
        "confirm-reservation:apple",
        "confirm-reservation:pear",
    ] {
        assert_eq!(events_of(&log, order, key), 1, "{key} of {order}");
    }
    let account = Repository::<payments::Account>::new(store.clone())
        .load("alice")
        .unwrap()
        .state;
    assert_eq!(account.balance(), 1_000 - 2 * 120 - 3 * 80);
    let charges = payments::Charges::read(store, "alice", eventstore::Version(u64::MAX)).unwrap();
    assert_eq!(charges.0.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_charge_finishes_in_this_process_and_charges_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    seed(&store).await;
    let dispatcher = panic_once(&store, |command| matches!(command, Command::Charge { .. }));
    let driver = Driver::start(
        store.clone(),
        dispatcher.clone(),
        Arc::new(ManualClock::new(chrono::Utc::now())),
        DriverConfig::default(),
    )
    .unwrap();
    place(&store, "o-1").await;
    confirmed(&store, "o-1").await;
    assert_eq!(
        dispatcher.panics.load(Ordering::SeqCst),
        2,
        "one panic, one retry"
    );
    let status = driver.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("o-1 panicked")),
        "{status:?}"
    );
    driver.stop().await;
    assert_once(&store, "o-1");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_run_ends_with_the_panic_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    seed(&store).await;
    let dispatcher = panic_once(
        &store,
        |command| matches!(command, Command::Reserve { sku, .. } if sku == "pear"),
    );
    let worker = DriverWorker::<Fulfilment, _>::new(
        store.clone(),
        dispatcher.clone(),
        Arc::new(ManualClock::new(chrono::Utc::now())),
        DriverConfig::default(),
    )
    .unwrap();
    place(&store, "o-2").await;
    let stop = CancellationToken::new();
    let failed = tokio::time::timeout(Duration::from_secs(20), worker.run(stop.clone()))
        .await
        .expect("the run ends at the panic");
    match failed {
        Err(sagas::DriverError::InstancePanicked { instance, message }) => {
            assert_eq!(instance, "o-2");
            assert!(message.contains("reserve:pear"), "{message}");
        }
        other => panic!("expected the instance's panic, got {other:?}"),
    }
    // The next run, in the same process, finishes the order.
    let run = tokio::spawn(worker.run(stop.clone()));
    confirmed(&store, "o-2").await;
    stop.cancel();
    run.await.unwrap().expect("the second run stops cleanly");
    assert_eq!(worker.watch().borrow().active, 0);
    assert_once(&store, "o-2");
    store.close().await;
}
