//! `relay-child <data-dir> <nats-url> <stream> <duplicate-window-ms> <writers>`: the child
//! process of the relay's kill test (`tests/relay/kill.rs`), which kills it with SIGKILL
//! at random moments and starts it again on the same data directory.
//!
//! It opens the store, runs `<writers>` tasks appending commits of 1 to 4 events (each to
//! its own stream, pausing a millisecond or two between commits) and the outbox relay
//! publishing to `<stream>` with the given duplicate window, until it is killed. It prints
//! `relaying` once the relay has started and then one line per second with the relay's
//! checkpoint and the log head, so the test can see progress.

use std::path::PathBuf;
use std::time::Duration;

use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent, StoreConfig, StreamId};
use outbox::{Relay, RelayConfig, Storage};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The store configuration; the test opens the store with the same one.
fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 1 << 20,
        ..StoreConfig::default()
    }
}

/// The relay configuration: the defaults with quick retries and a frequent checkpoint,
/// so that kills land between acknowledgement and checkpoint as well as between publish
/// and acknowledgement.
fn relay_config(nats_url: &str, stream: &str, duplicate_window: Duration) -> RelayConfig {
    RelayConfig {
        stream: stream.to_owned(),
        storage: Storage::File,
        duplicate_window,
        max_acks_in_flight: 512,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        checkpoint_interval: Duration::from_millis(50),
        status_interval: Duration::from_millis(50),
        ..RelayConfig::new(nats_url)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [dir, url, stream, window, writers] => window
            .parse::<u64>()
            .ok()
            .zip(writers.parse::<u64>().ok())
            .map(|(window, writers)| {
                (
                    PathBuf::from(dir),
                    url.clone(),
                    stream.clone(),
                    window,
                    writers,
                )
            }),
        _ => None,
    };
    let Some((dir, url, stream, window_ms, writers)) = parsed else {
        eprintln!(
            "usage: relay-child <data-dir> <nats-url> <stream> <duplicate-window-ms> <writers>"
        );
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(
        dir,
        url,
        stream,
        Duration::from_millis(window_ms),
        writers,
    ));
}

async fn run(dir: PathBuf, url: String, stream: String, window: Duration, writers: u64) {
    let store = match EventStore::open(&dir, store_config()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("relay-child: cannot open {}: {error}", dir.display());
            std::process::exit(1);
        }
    };
    let relay = match Relay::new(store.clone(), relay_config(&url, &stream, window)) {
        Ok(relay) => relay,
        Err(error) => {
            eprintln!("relay-child: {error}");
            std::process::exit(1);
        }
    };
    let status = relay.status();
    let relay = tokio::spawn(relay.run(CancellationToken::new()));
    for writer in 0..writers {
        tokio::spawn(write(store.clone(), writer));
    }
    println!("relaying");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if relay.is_finished() {
            eprintln!("relay-child: the relay stopped: {:?}", relay.await);
            std::process::exit(1);
        }
        let now = status.current();
        println!(
            "checkpoint {} head {} breaker {:?} error {:?}",
            now.checkpoint, now.log_head, now.breaker, now.last_error
        );
    }
}

/// A xorshift step: enough randomness to vary commit sizes and pauses.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn write(store: EventStore, writer: u64) {
    let stream = StreamId::new(format!("killed-{writer}")).expect("a valid stream id");
    let mut random =
        (u64::from(std::process::id()) << 8 | writer).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        let count = 1 + next(&mut random) % 4;
        let commit = Uuid::now_v7();
        let events = (0..count)
            .map(|i| {
                NewEvent::new("Relayed", format!("{commit} {i} {count}").into_bytes())
                    .with_metadata(Metadata {
                        correlation_id: Some(commit),
                        principal: Some(format!("writer {writer}")),
                        ..Metadata::default()
                    })
            })
            .collect();
        if let Err(error) = store.append(&stream, ExpectedVersion::Any, events).await {
            eprintln!("relay-child: append failed: {error}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(1 + next(&mut random) % 2)).await;
    }
}
