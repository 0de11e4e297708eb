//! `annals bench scale`: what a large log costs at open and on the write path. It seeds
//! a log of `--events` events quickly (large appends straight through the store, on many
//! streams), closes it, and then measures in a fresh child process, so that none of the
//! seeding's memory counts: the open time, the resident memory right after open
//! (`VmRSS` and the peak `VmHWM` from `/proc/self/status`), and the W1 rate of `bench
//! append` (64 writers, one event per commit) on that log. A second child runs the same
//! on an empty log, for the rate to compare with.
//!
//! Targets (issue 11): under 256 MiB resident after opening 10,000,000 events, and W1 at
//! 10,000,000 events at least 90% of W1 on an empty log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use eventstore::{EventStore, ExpectedVersion, NewEvent, StoreConfig, StreamId};
use serde::{Deserialize, Serialize};

use super::BenchDir;
use super::append::{AppendArgs, measure_on};
use super::workload::payload;
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Events to seed the log with.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per seeded stream (each stream is written by one append); the log then
    /// holds `events / events_per_stream` streams.
    #[arg(long, default_value_t = 100)]
    events_per_stream: u64,
    /// Payload bytes per event, seeded and appended.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Events the W1 load appends (64 writers, one event per commit), on each log.
    #[arg(long, default_value_t = 50_000)]
    w1_events: u64,
    /// Data directory to seed (default: a fresh temporary directory, removed
    /// afterwards). A directory already holding `--events` events is not seeded again.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The hidden child of `bench scale`: opens a data directory, reports its open time and
/// memory, runs W1 on it, and prints one JSON object.
#[derive(Debug, clap::Args)]
pub struct ScaleChildArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    w1_events: u64,
    #[arg(long)]
    payload_bytes: usize,
}

/// What a child measured on one log.
#[derive(Debug, Serialize, Deserialize)]
struct Measured {
    /// Events in the log when it was opened.
    events_at_open: u64,
    open_seconds: f64,
    /// Resident memory right after open.
    rss_after_open_mib: f64,
    /// The peak resident memory until then (open included).
    peak_rss_after_open_mib: f64,
    w1_events_per_second: f64,
    /// Resident memory after the W1 load.
    rss_after_w1_mib: f64,
}

#[derive(Debug, Serialize)]
struct ScaleReport {
    bench: &'static str,
    /// Events in the log when the child opened it.
    events: u64,
    /// Streams the seeding wrote (`events / events_per_stream`, for a freshly seeded log).
    seeded_streams: u64,
    payload_bytes: usize,
    w1_events: u64,
    seed_seconds: f64,
    /// Measured on the seeded log, in a fresh process.
    open_seconds: f64,
    rss_after_open_mib: f64,
    peak_rss_after_open_mib: f64,
    rss_after_w1_mib: f64,
    w1_events_per_second: f64,
    /// Measured on an empty log, in another fresh process.
    empty_open_seconds: f64,
    empty_rss_after_open_mib: f64,
    empty_w1_events_per_second: f64,
    /// W1 on the seeded log over W1 on the empty one (the target is at least 0.9).
    w1_ratio: f64,
}

pub(super) async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    if args.events_per_stream == 0 || args.w1_events == 0 {
        bail!("--events-per-stream and --w1-events must be at least 1");
    }
    let dir = BenchDir::new(args.data_dir.clone())?;
    let started = Instant::now();
    let store = dir.open()?;
    seed(
        &store,
        args.events,
        args.events_per_stream,
        args.payload_bytes,
    )
    .await?;
    let seeded_events = store.next_position().0;
    store.close().await;
    drop(store);
    let seed_seconds = started.elapsed().as_secs_f64();

    let seeded = measure_in_child(&dir.path, &args).await?;
    let empty_dir = BenchDir::new(None)?;
    let empty = measure_in_child(&empty_dir.path, &args).await?;
    let report = ScaleReport {
        bench: "scale",
        events: seeded.events_at_open,
        seeded_streams: seeded_events.div_ceil(args.events_per_stream),
        payload_bytes: args.payload_bytes,
        w1_events: args.w1_events,
        seed_seconds,
        open_seconds: seeded.open_seconds,
        rss_after_open_mib: seeded.rss_after_open_mib,
        peak_rss_after_open_mib: seeded.peak_rss_after_open_mib,
        rss_after_w1_mib: seeded.rss_after_w1_mib,
        w1_events_per_second: seeded.w1_events_per_second,
        empty_open_seconds: empty.open_seconds,
        empty_rss_after_open_mib: empty.rss_after_open_mib,
        empty_w1_events_per_second: empty.w1_events_per_second,
        w1_ratio: seeded.w1_events_per_second / empty.w1_events_per_second,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "scale: {} events on {} streams seeded in {:.1} s; opened in {:.2} s with {:.1} MiB resident (peak {:.1} MiB; empty log: {:.2} s, {:.1} MiB); W1 {:.0} events/s against {:.0} on an empty log ({:.0}%), {:.1} MiB resident after it",
            report.events,
            report.seeded_streams,
            report.seed_seconds,
            report.open_seconds,
            report.rss_after_open_mib,
            report.peak_rss_after_open_mib,
            report.empty_open_seconds,
            report.empty_rss_after_open_mib,
            report.w1_events_per_second,
            report.empty_w1_events_per_second,
            report.w1_ratio * 100.0,
            report.rss_after_w1_mib,
        );
    }
    Ok(())
}

/// Appends events in appends of `per_stream` events, one new stream each, from several
/// writers at once (so that group commits are large), until the log holds `events`.
async fn seed(
    store: &EventStore,
    events: u64,
    per_stream: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let have = store.next_position().0;
    if have >= events {
        return Ok(());
    }
    let bar = progress::bar(events - have, "events");
    bar.set_message("seeding");
    // Appends are numbered; each writer takes the next number until the log is full.
    let next_append = Arc::new(AtomicU64::new(have.div_ceil(per_stream)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, next_append, bar) = (store.clone(), next_append.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let number = next_append.fetch_add(1, Ordering::Relaxed);
                let first = number * per_stream;
                if first >= events {
                    return anyhow::Ok(());
                }
                let count = per_stream.min(events - first);
                let batch: Vec<NewEvent> = (0..count)
                    .map(|i| NewEvent::new("Seeded", payload(payload_bytes, first + i)))
                    .collect();
                let stream = StreamId::new(format!("scale-{number}"))?;
                store.append(&stream, ExpectedVersion::Any, batch).await?;
                bar.inc(count);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Runs this binary's hidden `bench scale-child` on `data_dir` and reads its report.
async fn measure_in_child(data_dir: &Path, args: &ScaleArgs) -> anyhow::Result<Measured> {
    let binary = std::env::current_exe().context("cannot find the annals binary")?;
    let mut child = Command::new(binary);
    child
        .args(["bench", "scale-child", "--data-dir"])
        .arg(data_dir)
        .args(["--w1-events", &args.w1_events.to_string()])
        .args(["--payload-bytes", &args.payload_bytes.to_string()]);
    let output = tokio::task::spawn_blocking(move || child.output())
        .await?
        .context("cannot start the measuring child process")?;
    if !output.status.success() {
        bail!(
            "the measuring child process failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the measuring child process printed no report: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        )
    })
}

/// The child: open, memory, W1, one JSON line on stdout.
pub(super) async fn child(args: ScaleChildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = EventStore::open(&args.data_dir, StoreConfig::default())
        .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
    let open_seconds = started.elapsed().as_secs_f64();
    let (rss_after_open, peak_rss_after_open) = resident_memory()?;
    let events_at_open = store.next_position().0;
    let w1 = measure_on(&store, &AppendArgs::w1(args.w1_events, args.payload_bytes)).await?;
    let (rss_after_w1, _) = resident_memory()?;
    store.close().await;
    let measured = Measured {
        events_at_open,
        open_seconds,
        rss_after_open_mib: rss_after_open,
        peak_rss_after_open_mib: peak_rss_after_open,
        w1_events_per_second: w1.events_per_second,
        rss_after_w1_mib: rss_after_w1,
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// This process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in MiB.
fn resident_memory() -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status (resident memory is measured on Linux)")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("/proc/self/status has no {name}"))?;
        let kib: f64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("cannot read {line:?}"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
