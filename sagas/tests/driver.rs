//! The driver over a real store on disk, on a manual clock: a deadline is stored when
//! scheduled, re-armed by the next driver after a stop, fired once, and a command that
//! was in flight at the stop is issued again without a second effect. The saga's
//! commands are recorded as its own, on behalf of whoever placed the order. An instance
//! that did not load what a former holder of the saga recorded (another node's driver)
//! loads its stream again and finishes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{CommandOptions, EventStore, Metadata, Position, Repository, StoreConfig};
use repositories::Repositories;
use sagas::fulfilment::Phase;
use sagas::view::SagaView;
use sagas::{Driver, DriverConfig, Faults, Fulfilment, FulfilmentServices, ManualClock};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(30);

fn open(dir: &Path) -> EventStore {
    EventStore::open(dir, StoreConfig::default()).expect("the store opens")
}

fn start(store: &EventStore, clock: &ManualClock, faults: Faults) -> Driver {
    let services =
        FulfilmentServices::new(Repositories::new(store.clone()), TIMEOUT).with_faults(faults);
    Driver::start(
        store.clone(),
        Arc::new(services),
        Arc::new(clock.clone()),
        DriverConfig::default(),
    )
    .expect("the driver starts")
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

/// Faults that hold up every charge for 600 ms.
fn slow_charges() -> Faults {
    Faults {
        charge_delay: Duration::from_millis(600),
        charge_delay_percent: 100,
    }
}

/// The sku `apple` (10 in stock at 120) and the account of `alice` (1,000 in it).
async fn seed(store: &EventStore) {
    command::<inventory::Stock>(
        store,
        "apple",
        inventory::Command::RegisterSku {
            sku: "apple".into(),
            name: "Apple".into(),
            unit_price: 120,
        },
    )
    .await;
    command::<inventory::Stock>(store, "apple", inventory::Command::Restock { quantity: 10 }).await;
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

/// Places `order` (one apple for alice) as `principal` through the API would: who, with
/// which issuer and action; with no principal when `None`.
async fn place(store: &EventStore, order: &str, principal: Option<&str>) {
    let options = CommandOptions {
        command_id: Uuid::now_v7(),
        metadata: Metadata {
            principal: principal.map(str::to_owned),
            issuer: principal.map(|_| "https://id.example".to_owned()),
            action: principal.map(|_| "orders.place".to_owned()),
            ..Metadata::default()
        },
        ..CommandOptions::default()
    };
    let place = orders::Command::PlaceOrder {
        order_id: order.into(),
        customer_id: "alice".into(),
        lines: vec![orders::OrderLine {
            sku: "apple".into(),
            quantity: 1,
        }],
        shipping_address: None,
    };
    Repository::<orders::Order>::new(store.clone())
        .execute(order, &place, &options)
        .await
        .expect("the order is placed");
}

/// The event of the saga command `key` of `order`.
fn saga_command_event(
    log: &[eventstore::RecordedEvent],
    order: &str,
    key: &str,
) -> eventstore::RecordedEvent {
    let command_id = sagas::saga::command_id::<Fulfilment>(order, key);
    log.iter()
        .find(|event| event.metadata.command_id == Some(command_id))
        .unwrap_or_else(|| panic!("no event of {order}'s {key}"))
        .clone()
}

/// The saga of `order` once `done` holds (polling, up to 20 s).
async fn saga_when(
    store: &EventStore,
    order: &str,
    what: &str,
    done: impl Fn(&SagaView<Fulfilment>) -> bool,
) -> SagaView<Fulfilment> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(view) = sagas::view::load::<Fulfilment>(store, order).unwrap()
            && done(&view)
        {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the saga of {order} never got {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn deadlines_fired(view: &SagaView<Fulfilment>) -> usize {
    view.steps
        .iter()
        .filter(|step| step.event_type == "FulfilmentDeadlinePassed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_survives_a_restart_and_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clock = ManualClock::new(chrono::Utc::now());
    seed(&store).await;

    // Every charge is held up: the saga sits in `charging` with its deadline armed.
    let slow = slow_charges();
    let driver = start(&store, &clock, slow.clone());
    command::<orders::Order>(
        &store,
        "o-1",
        orders::Command::PlaceOrder {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: vec![orders::OrderLine {
                sku: "apple".into(),
                quantity: 2,
            }],
            shipping_address: None,
        },
    )
    .await;
    let charging = saga_when(&store, "o-1", "charging", |v| {
        v.state.phase == Phase::Charging
    })
    .await;
    // Stored when scheduled: the deadline is in the saga's stream.
    assert_eq!(charging.pending_deadlines.len(), 1);
    let at = charging.pending_deadlines[0].at;
    assert_eq!(charging.state.deadline, Some(at));
    // The status counts the instance in its phase (for `annals_saga_instances`).
    let mut status = driver.watch();
    let in_charging = tokio::time::timeout(
        TIMEOUT,
        status.wait_for(|status| status.phases.get("charging") == Some(&1)),
    )
    .await
    .expect("the status shows the instance charging within the timeout")
    .expect("the driver runs")
    .clone();
    assert_eq!(in_charging.saga, "fulfilment");
    assert_eq!(
        in_charging.phases.values().sum::<u64>(),
        1,
        "{in_charging:?}"
    );
    // Stopped while the charge is held up: the charge never ran.
    driver.stop().await;
    assert_eq!(
        Repository::<payments::Account>::new(store.clone())
            .load("alice")
            .unwrap()
            .state
            .balance(),
        1_000
    );

    // The clock passes the deadline while no driver runs; the next one re-arms it and it
    // fires at once, while the re-issued charge is held up again.
    clock.advance(chrono::Duration::seconds(31));
    let driver = start(&store, &clock, slow);
    let done = saga_when(&store, "o-1", "finished", |v| v.finished).await;
    assert_eq!(done.state.phase, Phase::Cancelled, "{:?}", done.state);
    assert_eq!(deadlines_fired(&done), 1);
    assert_eq!(
        done.state.cancel_reason.as_deref(),
        Some("the order was not fulfilled before its deadline")
    );
    driver.stop().await;

    // The re-issued charge went through after the deadline: refunded, charged once.
    let account = Repository::<payments::Account>::new(store.clone())
        .load("alice")
        .unwrap()
        .state;
    assert_eq!(account.balance(), 1_000);
    let charges = payments::Charges::read(&store, "alice", eventstore::Version(u64::MAX)).unwrap();
    let charge = charges.0.get("o-1").expect("charged");
    assert!(charge.refunded);
    let order = Repository::<orders::Order>::new(store.clone())
        .load("o-1")
        .unwrap()
        .state;
    assert_eq!(order.status(), orders::OrderStatus::Cancelled);
    let stock = Repository::<inventory::Stock>::new(store.clone())
        .load("apple")
        .unwrap()
        .state;
    assert_eq!((stock.available(), stock.reserved()), (10, 0));

    // A third start, later still: nothing fires again, nothing is recorded.
    clock.advance(chrono::Duration::seconds(60));
    let before = done.version;
    let driver = start(&store, &clock, Faults::default());
    // Not a sleep: wait until this driver has read the whole log and no instance of it
    // runs, so that anything it would fire or record has had its chance.
    let head = store.next_position();
    let mut status = driver.watch();
    tokio::time::timeout(
        TIMEOUT,
        status.wait_for(|status| status.read_to >= head && status.active == 0),
    )
    .await
    .expect("the third driver reads the log within the timeout")
    .expect("the driver runs");
    // Every phase is reported, none with an instance in it.
    let phases = driver.status().phases;
    assert_eq!(phases.len(), Phase::ALL.len(), "{phases:?}");
    assert!(phases.values().all(|count| *count == 0), "{phases:?}");
    driver.stop().await;
    let after = sagas::view::load::<Fulfilment>(&store, "o-1")
        .unwrap()
        .unwrap();
    assert_eq!(after.version, before);
    assert_eq!(deadlines_fired(&after), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_acts_as_itself_on_behalf_of_who_placed_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clock = ManualClock::new(chrono::Utc::now());
    seed(&store).await;
    let driver = start(&store, &clock, Faults::default());
    // o-1 placed by alice through the API (who and what recorded); o-2 with no principal.
    for (order, principal) in [("o-1", Some("alice")), ("o-2", None)] {
        place(&store, order, principal).await;
    }
    for order in ["o-1", "o-2"] {
        saga_when(&store, order, "confirmed", |v| {
            v.state.phase == Phase::Confirmed
        })
        .await;
    }
    driver.stop().await;

    let log = store.read_all(Position(0), usize::MAX).unwrap();
    for (order, on_behalf_of) in [("o-1", Some("alice")), ("o-2", None)] {
        for (key, action) in [
            ("reserve:apple", "fulfilment.reserve"),
            ("charge", "fulfilment.charge"),
            ("confirm-order", "fulfilment.confirm-order"),
            (
                "confirm-reservation:apple",
                "fulfilment.confirm-reservation",
            ),
        ] {
            let event = saga_command_event(&log, order, key);
            let metadata = &event.metadata;
            assert_eq!(
                metadata.principal.as_deref(),
                Some(sagas::fulfilment::SERVICE_PRINCIPAL),
                "{order} {key}"
            );
            assert_eq!(metadata.principal.as_deref(), Some("annals-fulfilment"));
            assert_eq!(metadata.issuer.as_deref(), Some("annals"), "{order} {key}");
            assert_eq!(metadata.action.as_deref(), Some(action), "{order} {key}");
            assert_eq!(
                metadata.on_behalf_of.as_deref(),
                on_behalf_of,
                "{order} {key}"
            );
        }
    }
    // The order itself keeps who placed it.
    let placed = log
        .iter()
        .find(|event| event.stream_id.as_str() == "order-o-1")
        .unwrap();
    assert_eq!(placed.metadata.principal.as_deref(), Some("alice"));
    assert_eq!(placed.metadata.on_behalf_of, None);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_placed_the_order_is_known_to_the_driver_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clock = ManualClock::new(chrono::Utc::now());
    seed(&store).await;
    // The charge is held up: the first driver stops with the order reserved, uncharged.
    let driver = start(&store, &clock, slow_charges());
    place(&store, "o-1", Some("alice")).await;
    saga_when(&store, "o-1", "charging", |v| {
        v.state.phase == Phase::Charging
    })
    .await;
    driver.stop().await;

    // A new driver, with new services that never saw the order placed, charges it.
    let driver = start(&store, &clock, Faults::default());
    saga_when(&store, "o-1", "confirmed", |v| {
        v.state.phase == Phase::Confirmed
    })
    .await;
    driver.stop().await;
    let log = store.read_all(Position(0), usize::MAX).unwrap();
    for key in ["reserve:apple", "charge", "confirm-order"] {
        let event = saga_command_event(&log, "o-1", key);
        assert_eq!(
            event.metadata.on_behalf_of.as_deref(),
            Some("alice"),
            "{key}"
        );
    }
    store.close().await;
}

/// Appends `order`'s `OrderPlaced` (alice, `quantity` apples) as the code of
/// `schema_version` wrote it: version 1 without a currency per line, version 2 with one,
/// version 3 with an (absent) shipping address too.
async fn place_raw(store: &EventStore, order: &str, quantity: u64, schema_version: u32) {
    let line = orders::OrderLine {
        sku: "apple".into(),
        quantity,
    };
    let payload = match schema_version {
        1 => postcard::to_allocvec(&orders::v1::Event::OrderPlaced {
            order_id: order.into(),
            customer_id: "alice".into(),
            lines: vec![line],
        }),
        2 => postcard::to_allocvec(&orders::v2::Event::OrderPlaced {
            order_id: order.into(),
            customer_id: "alice".into(),
            lines: vec![orders::PlacedLine::in_default_currency(&line)],
        }),
        _ => postcard::to_allocvec(&orders::Event::OrderPlaced {
            order_id: order.into(),
            customer_id: "alice".into(),
            lines: vec![orders::PlacedLine::in_default_currency(&line)],
            shipping_address: None,
        }),
    }
    .unwrap();
    let mut event = eventstore::NewEvent::new("OrderPlaced", payload);
    event.schema_version = schema_version;
    store
        .append(
            &eventstore::StreamId::new(format!("order-{order}")).unwrap(),
            eventstore::ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .unwrap();
}

/// Orders placed by the code of schema version 1 (their `OrderPlaced` as it wrote them:
/// lines without a currency) are fulfilled, and refused, exactly as orders placed now:
/// the saga reads them upcast. Same saga states, same orders, stock and account after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_in_schema_version_1_have_the_same_saga_outcomes() {
    let start_at = chrono::DateTime::from_timestamp(1_793_000_000, 0).unwrap();
    let mut outcomes = Vec::new();
    for schema_version in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let clock = ManualClock::new(start_at);
        seed(&store).await;
        let driver = start(&store, &clock, Faults::default());
        // o-1 fits the stock (10 apples) and the balance; o-2 does not fit the stock. One
        // after the other, so that o-2 always meets the stock o-1 left (the two sagas run
        // concurrently, and the reason o-2 is refused names the stock it saw).
        place_raw(&store, "o-1", 2, schema_version).await;
        let confirmed = saga_when(&store, "o-1", "confirmed", |v| {
            v.state.phase == Phase::Confirmed
        })
        .await;
        place_raw(&store, "o-2", 20, schema_version).await;
        let cancelled = saga_when(&store, "o-2", "cancelled", |v| {
            v.state.phase == Phase::Cancelled
        })
        .await;
        driver.stop().await;
        let orders = Repository::<orders::Order>::new(store.clone());
        fn state(value: impl serde::Serialize) -> serde_json::Value {
            serde_json::to_value(value).unwrap()
        }
        outcomes.push((
            schema_version,
            confirmed.state,
            cancelled.state,
            state(orders.load("o-1").unwrap().state),
            state(orders.load("o-2").unwrap().state),
            state(
                Repository::<inventory::Stock>::new(store.clone())
                    .load("apple")
                    .unwrap()
                    .state,
            ),
            state(
                Repository::<payments::Account>::new(store.clone())
                    .load("alice")
                    .unwrap()
                    .state,
            ),
        ));
        store.close().await;
    }
    let (_, v1_confirmed, v1_cancelled, v1_o1, v1_o2, v1_stock, v1_account) = &outcomes[0];
    let (_, v2_confirmed, v2_cancelled, v2_o1, v2_o2, v2_stock, v2_account) = &outcomes[1];
    assert_eq!(v1_confirmed, v2_confirmed);
    assert_eq!(v1_cancelled, v2_cancelled);
    assert_eq!(v1_o1, v2_o1);
    assert_eq!(v1_o2, v2_o2);
    assert_eq!(v1_stock, v2_stock);
    assert_eq!(v1_account, v2_account);
    assert_eq!(v1_o1["status"], "Confirmed", "{v1_o1}");
    assert_eq!(v1_o2["status"], "Cancelled", "{v1_o2}");
}

/// What a former holder of the saga (another node, which lost the saga's lease or died)
/// recorded in an instance's stream before this driver could see it: this node's copy
/// of the log had not applied it when the instance loaded. Done at the instance's charge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Former {
    /// Recorded the charge's answer: this driver's own record of it is a duplicate.
    AnsweredTheCharge,
    /// Recorded a customer's cancel before the charge's answer: this driver's record of
    /// the answer meets another version.
    RecordedACancel,
}

/// The fulfilment services, and a former holder that records one input first.
struct Takeover {
    services: FulfilmentServices,
    store: EventStore,
    former: Former,
    done: std::sync::atomic::AtomicBool,
}

impl Takeover {
    async fn record_as_former_holder(&self, order: &str, input: &sagas::fulfilment::Input) {
        use sagas::Saga as _;
        let event = eventstore::NewEvent::new(
            Fulfilment::input_type(input),
            postcard::to_allocvec(input).unwrap(),
        )
        .with_id(sagas::saga::input_id::<Fulfilment>(order, input));
        let stream = sagas::saga::stream_id::<Fulfilment>(order).unwrap();
        self.store
            .append(&stream, eventstore::ExpectedVersion::Any, vec![event])
            .await
            .expect("the former holder's record");
    }
}

impl sagas::Dispatcher<Fulfilment> for Takeover {
    fn route(
        &self,
        event: &eventstore::RecordedEvent,
        clock: &dyn sagas::Clock,
    ) -> Option<(String, sagas::fulfilment::Input)> {
        self.services.route(event, clock)
    }

    async fn execute(
        &self,
        state: &Fulfilment,
        command_id: Uuid,
        issued: &sagas::Issued<sagas::fulfilment::Command>,
    ) -> Result<sagas::fulfilment::Input, eventstore::Error> {
        use std::sync::atomic::Ordering;
        let first = issued.key == "charge" && !self.done.swap(true, Ordering::SeqCst);
        if first && self.former == Former::RecordedACancel {
            let cancel = sagas::fulfilment::Input::CancelRequested {
                reason: "changed my mind".into(),
            };
            self.record_as_former_holder(&state.order_id, &cancel).await;
        }
        let answer = self.services.execute(state, command_id, issued).await?;
        if first && self.former == Former::AnsweredTheCharge {
            self.record_as_former_holder(&state.order_id, &answer).await;
        }
        Ok(answer)
    }
}

/// Runs one order under a driver whose instance did not load what a former holder
/// recorded (see [`Former`]); the saga must still finish in `expected`.
async fn takeover(former: Former, expected: Phase) -> SagaView<Fulfilment> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clock = ManualClock::new(chrono::Utc::now());
    seed(&store).await;
    let dispatcher = Takeover {
        services: FulfilmentServices::new(Repositories::new(store.clone()), TIMEOUT),
        store: store.clone(),
        former,
        done: false.into(),
    };
    let driver = Driver::start(
        store.clone(),
        Arc::new(dispatcher),
        Arc::new(clock.clone()),
        DriverConfig::default(),
    )
    .expect("the driver starts");
    place(&store, "o-1", None).await;
    let view = saga_when(&store, "o-1", "finished", |view| {
        view.finished && view.state.phase == expected
    })
    .await;
    driver.stop().await;
    store.close().await;
    view
}

/// The instance records an answer a former holder recorded first: the store answers
/// "duplicate" at a version past the instance's. The instance loads its stream again
/// (it had not applied that answer) and goes on; before, it skipped the answer as one
/// it had applied, and waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_a_former_holder_recorded_first_is_taken_from_the_stream() {
    let view = takeover(Former::AnsweredTheCharge, Phase::Confirmed).await;
    let answers = view
        .steps
        .iter()
        .filter(|step| step.event_type == "FulfilmentCommandAnswered")
        .count();
    // reserve:apple, charge, confirm-reservation:apple, confirm-order: each once.
    assert_eq!(answers, 4, "{:?}", view.steps);
}

/// The instance records an answer after a former holder recorded another input: the
/// store refuses the expected version. The instance loads its stream again and records
/// the answer after it; before, it retried the same stale version forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_a_former_holder_recorded_is_loaded_before_the_next_record() {
    let view = takeover(Former::RecordedACancel, Phase::Cancelled).await;
    assert!(
        view.steps
            .iter()
            .any(|step| step.event_type == "FulfilmentCancelRequested"),
        "{:?}",
        view.steps
    );
}
