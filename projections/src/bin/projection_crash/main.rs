//! `projection-crash <data-dir> <version> <live|rebuild|settle>`: the child process of the
//! projections crash test (`tests/projections/crash.rs`), which kills it with SIGKILL.
//!
//! It opens the store and runs the projection runner with the [`tally::Tally`]
//! projection at `<version>`, with small catch-up batches (many checkpoints):
//! - `live`: 16 writers append sale events (reserve, then confirm or release) while the
//!   runner projects them live; prints `started` once running;
//! - `rebuild`: the same writers, while the runner rebuilds the tally (the test passes a
//!   new version, so the start triggers a blue-green rebuild); prints `rebuilding`;
//! - `settle`: no writers; waits until the tally is live at the head of the log, prints
//!   `settled`, closes the store and exits 0.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{EventStore, ExpectedVersion, NewEvent, Position, StoreConfig, StreamId};
use projections::{Runner, RunnerConfig, State};
use tokio_util::sync::CancellationToken;

mod tally;

use tally::{Sale, Tally};

const WRITERS: u64 = 16;
const SKUS: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(version), Some(mode)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: projection-crash <data-dir> <version> <live|rebuild|settle>");
        std::process::exit(2);
    };
    let version: u32 = version.parse().expect("a version number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(PathBuf::from(dir), version, mode.clone()));
}

/// Small batches: a rebuild writes many checkpoints, so a kill lands between them.
fn config() -> RunnerConfig {
    RunnerConfig {
        catch_up_batch_events: 100,
        switch_lag: 200,
        live_batch_events: 64,
        ..RunnerConfig::default()
    }
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

async fn run(dir: PathBuf, version: u32, mode: String) {
    let store = EventStore::open(&dir, StoreConfig::default()).unwrap_or_else(|error| {
        eprintln!("projection-crash: cannot open {}: {error}", dir.display());
        std::process::exit(1);
    });
    let (runner, handle) = Runner::new(&store, vec![Arc::new(Tally { version })], config())
        .expect("the runner starts");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));
    match mode.as_str() {
        "live" | "rebuild" => {
            for writer in 0..WRITERS {
                tokio::spawn(write(store.clone(), writer));
            }
            say(if mode == "live" {
                "started"
            } else {
                "rebuilding"
            });
            std::future::pending::<()>().await;
        }
        "settle" => {
            loop {
                let head = store.next_position();
                let status = handle.status_of(tally::NAME).expect("the tally");
                if status.state == State::Live
                    && status.active_version == Some(version)
                    && (head == Position(0)
                        || handle
                            .wait_for(tally::NAME, Position(head.0 - 1), Duration::from_secs(60))
                            .await
                            .is_ok())
                {
                    break;
                }
                if let Some(fault) = status.state.fault() {
                    eprintln!("projection-crash: {fault}");
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shutdown.cancel();
            let _ = running.await;
            store.close().await;
            say("settled");
        }
        other => {
            eprintln!("projection-crash: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

async fn append(store: &EventStore, sku: u64, sale: &Sale) {
    let stream = StreamId::new(format!("sale-{sku}")).expect("a valid stream id");
    let (event_type, payload) = sale.encode();
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, payload)],
        )
        .await
        .unwrap_or_else(|error| panic!("append failed: {error}"));
}

/// Orders of one sku each: reserve, then confirm (3 in 4) or release.
async fn write(store: EventStore, writer: u64) {
    let mut random =
        (u64::from(std::process::id()) << 8 | writer).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut number = 0u64;
    loop {
        number += 1;
        let order = format!("{}-{writer}-{number}", std::process::id());
        let sku = next(&mut random) % SKUS;
        let reserved = Sale::Reserved {
            order: order.clone(),
            quantity: 1 + next(&mut random) % 9,
            unit_price: 100 + next(&mut random) % 900,
        };
        append(&store, sku, &reserved).await;
        let settled = if next(&mut random).is_multiple_of(4) {
            Sale::Released { order }
        } else {
            Sale::Confirmed { order }
        };
        append(&store, sku, &settled).await;
    }
}
