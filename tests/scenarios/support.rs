//! A known history on disk (fixed ids and times, so outputs are golden), golden-file
//! comparison, and a real `annals serve` on a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use chrono::{DateTime, TimeZone, Utc};
use eventstore::{
    Aggregate, EventId, EventStore, Metadata, Position, RecordedEvent, StoreConfig, StreamId,
    Version,
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
    let mut placed_o1 = planned::<Order>(
        "order-o1",
        OrderEvent::OrderPlaced {
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
    };
    let mut placed_o2 = planned::<Order>(
        "order-o2",
        OrderEvent::OrderPlaced {
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
        let store = EventStore::open(dir, small_segments()).unwrap();
        store.import(history()).await.unwrap();
        store.close().await;
    });
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
    crate::annals(args, cwd)
}

/// Runs `annals`, expecting success, and returns its stdout.
pub fn annals_ok(args: &[&str], cwd: &Path) -> String {
    let output = annals(args, cwd);
    assert!(
        output.status.success(),
        "annals {args:?} failed: {}",
        crate::stderr(&output)
    );
    crate::stdout(&output)
}

/// Expects `annals args` to fail with `code` and one line on stderr containing each of
/// `needles`; returns that line.
pub fn annals_fails(args: &[&str], cwd: &Path, code: i32, needles: &[&str]) -> String {
    let output = annals(args, cwd);
    let message = crate::stderr(&output);
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

/// Compares `actual` with `tests/golden/<name>`; with `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
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

/// A real `annals serve` on a free port, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Server {
    /// Starts `annals serve` over `data_dir` on a port the OS picks, and returns once it
    /// has said where it listens (it listens before saying so). The saga is off: the
    /// server must not act on the seeded orders the tests compare against.
    pub fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annals"))
            .args([
                "serve",
                "--no-saga",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("annals serve starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let address = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("annals serve exited ({status}) before it listened");
            };
            if line.contains("annals serving") {
                let address = line
                    .split("address=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_else(|| panic!("no address in {line:?}"))
                    .to_owned();
                break address;
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Server {
            child,
            url: format!("http://{address}"),
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
