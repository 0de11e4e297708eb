//! What the scenarios share: a known history on disk (fixed ids and times, so outputs are
//! golden), golden-file comparison, and running `annals` to check what it printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, TimeZone, Utc};
use eventstore::{
    Aggregate, EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    StoreConfig, StreamId, Version,
};
use uuid::Uuid;

/// 2026-11-05 at 10:`minute`:00 UTC: the time of the known history's events.
pub fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 5, 10, minute, 0).unwrap()
}

/// The fixed id of the event at `position`: a UUID v7 of its time.
pub fn event_id(position: u64) -> EventId {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&position.to_be_bytes());
    let millis = at((position % 60) as u32).timestamp_millis() as u64;
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    EventId::from_uuid(uuid).unwrap()
}

/// One event of the known history.
struct Planned {
    stream: &'static str,
    event_type: &'static str,
    payload: Vec<u8>,
    minute: u32,
    last_in_commit: bool,
    metadata: Metadata,
}

fn planned<A: Aggregate>(stream: &'static str, event: A::Event, minute: u32) -> Planned {
    Planned {
        stream,
        event_type: A::event_type(&event),
        payload: postcard::to_allocvec(&event).unwrap(),
        minute,
        last_in_commit: true,
        metadata: Metadata::default(),
    }
}

/// An order event as schema version 1 recorded it (lines without a currency): the known
/// history is a log written before version 2, so every command here reads it upcast.
fn planned_order_v1(stream: &'static str, event: orders::v1::Event, minute: u32) -> Planned {
    Planned {
        stream,
        event_type: <orders::Order as Aggregate>::event_type(&event.clone().upcast().upcast()),
        payload: postcard::to_allocvec(&event).unwrap(),
        minute,
        last_in_commit: true,
        metadata: Metadata::default(),
    }
}

/// The correlation id of order o1's events.
pub const CORRELATION: &str = "0193a4e2-7c1d-7b3e-9f00-00000000c0de";

/// The known history, as the log holds it (see [`seed_history`]).
pub fn history() -> Vec<RecordedEvent> {
    use inventory::{Event as Stock, Stock as StockAggregate};
    use orders::{Event as OrderEvent, Order, OrderLine};
    use payments::{Account, Event as Payment};

    let apple = |quantity| {
        vec![OrderLine {
            sku: "apple".into(),
            quantity,
        }]
    };
    let mut placed_o1 = planned_order_v1(
        "order-o1",
        orders::v1::Event::OrderPlaced {
            order_id: "o1".into(),
            customer_id: "alice".into(),
            lines: apple(3),
        },
        4,
    );
    placed_o1.metadata = Metadata {
        correlation_id: Some(Uuid::parse_str(CORRELATION).unwrap()),
        causation_id: None,
        traceparent: None,
        principal: Some("alice".into()),
        command_id: Some(Uuid::parse_str("0193a4e2-7c1d-7b3e-9f00-0000000000c1").unwrap()),
        ..Metadata::default()
    };
    let mut placed_o2 = planned_order_v1(
        "order-o2",
        orders::v1::Event::OrderPlaced {
            order_id: "o2".into(),
            customer_id: "bob".into(),
            lines: apple(1),
        },
        9,
    );
    // Order o2 is placed and cancelled in one append: two events, one commit.
    placed_o2.last_in_commit = false;
    let plan = vec![
        planned::<StockAggregate>(
            "stock-apple",
            Stock::SkuRegistered {
                sku: "apple".into(),
                name: "Apple".into(),
                unit_price: 120,
            },
            0,
        ),
        planned::<StockAggregate>("stock-apple", Stock::Restocked { quantity: 10 }, 1),
        planned::<Account>(
            "account-alice",
            Payment::AccountOpened {
                customer_id: "alice".into(),
            },
            2,
        ),
        planned::<Account>("account-alice", Payment::Deposited { amount: 5000 }, 3),
        placed_o1,
        planned::<StockAggregate>(
            "stock-apple",
            Stock::StockReserved {
                order_id: "o1".into(),
                quantity: 3,
                unit_price: 120,
            },
            5,
        ),
        planned::<Account>(
            "account-alice",
            Payment::Charged {
                order_id: "o1".into(),
                amount: 360,
            },
            6,
        ),
        planned::<Order>("order-o1", OrderEvent::OrderConfirmed { total: 360 }, 7),
        planned::<StockAggregate>(
            "stock-apple",
            Stock::ReservationConfirmed {
                order_id: "o1".into(),
                quantity: 3,
            },
            8,
        ),
        placed_o2,
        planned::<Order>(
            "order-o2",
            OrderEvent::OrderCancelled {
                reason: "changed my mind".into(),
            },
            9,
        ),
        Planned {
            stream: "ledger-1",
            event_type: "Noted",
            payload: vec![0xde, 0xad, 0xbe, 0xef],
            minute: 10,
            last_in_commit: true,
            metadata: Metadata::default(),
        },
    ];
    let mut versions = std::collections::HashMap::new();
    plan.into_iter()
        .enumerate()
        .map(|(position, event)| {
            let version = versions.entry(event.stream).or_insert(0u64);
            let recorded = RecordedEvent {
                id: event_id(position as u64),
                stream_id: StreamId::new(event.stream).unwrap(),
                version: Version(*version),
                position: Position(position as u64),
                event_type: event.event_type.into(),
                schema_version: 1,
                recorded_at: at(event.minute),
                metadata: event.metadata,
                payload: event.payload,
                last_in_commit: event.last_in_commit,
            };
            *version += 1;
            recorded
        })
        .collect()
}

/// Small segments without preallocation, so that a few hundred events roll them.
pub fn small_segments() -> StoreConfig {
    StoreConfig {
        segment_bytes: 16 * 1024,
        preallocate_segments: false,
        ..StoreConfig::default()
    }
}

/// Writes the known history into a new data directory `dir`, exactly as listed (ids,
/// positions, times), through the store's import.
pub fn seed_history(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(dir);
        store.import(history()).await.unwrap();
        store.close().await;
    });
}

/// Writes `events` single-event appends to streams `order-0` to `order-6` of a new data
/// directory `dir`.
pub fn seed(dir: &Path, events: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(dir);
        for i in 0..events {
            let stream = StreamId::new(format!("order-{}", i % 7)).unwrap();
            let payload = format!("payload number {i}").into_bytes();
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("OrderPlaced", payload)],
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
}

/// Opens (or creates) the store in `dir` with [`small_segments`], never while a child
/// process is being spawned (see `test_support::SPAWNING`).
pub fn open_store(dir: &Path) -> EventStore {
    let _not_spawning = test_support::not_spawning();
    EventStore::open(dir, small_segments())
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()))
}

/// A data directory with the known history, in a temporary directory.
pub fn seeded() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed_history(&data);
    (temp, data)
}

/// Runs `annals` with `args` in `cwd`.
pub fn annals(args: &[&str], cwd: &Path) -> Output {
    test_support::run_annals(args, cwd)
}

/// What `output` printed on stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What `output` printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `annals`, expecting success, and returns its stdout.
pub fn annals_ok(args: &[&str], cwd: &Path) -> String {
    let output = annals(args, cwd);
    assert!(
        output.status.success(),
        "annals {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// Expects `annals args` to fail with `code` and one line on stderr containing each of
/// `needles`; returns that line.
pub fn annals_fails(args: &[&str], cwd: &Path, code: i32, needles: &[&str]) -> String {
    let output = annals(args, cwd);
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "annals {args:?}: {message}"
    );
    assert_eq!(
        message.lines().count(),
        1,
        "one clear line, no backtrace: {message}"
    );
    assert!(message.starts_with("error: "), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    message
}

/// Parses NDJSON: one JSON value per line.
pub fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Compares `actual` with `tests/golden/<name>`. Only `UPDATE_GOLDEN=1`, exactly, rewrites
/// the file instead (and says so): any other value is refused, so that `UPDATE_GOLDEN=0`
/// or a stray variable can never turn every comparison into a pass.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    match std::env::var_os("UPDATE_GOLDEN") {
        None => {}
        Some(value) if value == "1" => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            eprintln!("UPDATE_GOLDEN=1: rewrote {}", path.display());
            return;
        }
        Some(value) => panic!(
            "UPDATE_GOLDEN={value:?}: only UPDATE_GOLDEN=1 rewrites golden files; unset it to compare"
        ),
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1 to write it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
        path.display()
    );
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Polls `GET /api/v1/outbox` until `done` accepts it.
pub fn wait_for_outbox(
    server: &test_support::AnnalsServer,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let status_url = format!("{}/api/v1/outbox", server.url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(test_support::within(what, async {
        let client = reqwest::Client::new();
        loop {
            let status: serde_json::Value = client
                .get(&status_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if done(&status) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }));
}
