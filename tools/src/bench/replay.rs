//! `annals bench replay`: read the whole log back, decoding every event; events/s.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use eventstore::Position;
use serde::Serialize;

use super::BenchDir;
use super::workload::seed;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Events to replay (the store is seeded up to this many first).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Payload bytes per seeded event.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ReplayReport {
    bench: &'static str,
    events: u64,
    bytes: u64,
    seconds: f64,
    events_per_second: f64,
    megabytes_per_second: f64,
}

pub(super) async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    seed(&store, args.events, args.payload_bytes).await?;
    let events = args.events.min(store.next_position().0);
    // Let the index catch up with the seeding first, so the replay runs alone.
    let waiter = store.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for_index()).await??;
    let reader = store.clone();
    let (count, bytes, seconds) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut count = 0u64;
        reader.replay_from(Position(0), |event| {
            // Touch what a projection would: the type, the stream and the payload.
            bytes += (event.payload.len() + event.event_type.len() + event.stream_id.len()) as u64;
            count += 1;
            Ok(())
        })?;
        anyhow::Ok((count, bytes, started.elapsed().as_secs_f64()))
    })
    .await??;
    store.close().await;
    if count < events {
        bail!("replayed {count} events, expected {events}");
    }
    let report = ReplayReport {
        bench: "replay",
        events: count,
        bytes,
        seconds,
        events_per_second: count as f64 / seconds,
        megabytes_per_second: bytes as f64 / seconds / 1e6,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "replay: {} events ({:.1} MB of payload) in {:.3} s = {:.0} events/s",
            report.events,
            report.bytes as f64 / 1e6,
            report.seconds,
            report.events_per_second
        );
    }
    Ok(())
}
