//! `annals bench`: benchmarks of the store, each printing events/s and commit latency
//! percentiles (or one JSON object per run with `--json`). Every append is fsync'd
//! before it is acknowledged, exactly as in production.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventstore::{
    Direction, EventStore, ExpectedVersion, NewEvent, Position, StoreConfig, StreamId, Version,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::progress;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Concurrent writers appending fsync'd commits: events/s and commit latency.
    Append(AppendArgs),
    /// Read the whole log back, decoding every event: events/s.
    Replay(ReplayArgs),
    /// Writers racing on one stream with exact expected versions: commits/s and
    /// conflicts/s, and a check that no version was assigned twice.
    Contend(ContendArgs),
    /// The outbox relay against a real NATS server: publish throughput of a backlog,
    /// then end-to-end lag (commit to JetStream acknowledgement) at a given write rate.
    Relay(RelayArgs),
    /// Place orders through a running `annals serve` from many connections:
    /// commands/s and latency percentiles.
    Http(crate::bench_http::HttpArgs),
    /// Seed a domain workload (skus, accounts, orders placed, confirmed and cancelled)
    /// and time a rebuild of every read model from it: events/s.
    Rebuild(RebuildArgs),
    /// The fulfilment saga end to end, in process: orders placed -> reserved, charged,
    /// confirmed; completed orders/s and placed-to-confirmed latency.
    Saga(crate::bench_saga::SagaArgs),
}

/// Which streams the writers append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Streams {
    /// All writers share one stream.
    Same,
    /// Each writer has its own stream.
    Own,
}

#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Events per append (commit).
    #[arg(long, default_value_t = 1)]
    events_per_commit: usize,
    /// Total events to append.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// One stream per writer, or one for all.
    #[arg(long, value_enum, default_value_t = Streams::Own)]
    streams: Streams,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

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

#[derive(Debug, clap::Args)]
pub struct ContendArgs {
    /// Writers racing on the one stream.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            BenchCommand::Append(args) => append(args).await,
            BenchCommand::Replay(args) => replay(args).await,
            BenchCommand::Contend(args) => contend(args).await,
            BenchCommand::Relay(args) => relay(args).await,
            BenchCommand::Rebuild(args) => rebuild(args).await,
            BenchCommand::Http(args) => crate::bench_http::run(args).await,
            BenchCommand::Saga(args) => crate::bench_saga::run(args).await,
        }
    })
}

/// A data directory: the one given, or a temporary one that lives as long as this.
pub(crate) struct BenchDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl BenchDir {
    pub(crate) fn new(given: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(match given {
            Some(path) => BenchDir { path, _temp: None },
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("annals-bench-")
                    .tempdir_in(std::env::current_dir()?)
                    .context("cannot make a temporary data directory here")?;
                BenchDir {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                }
            }
        })
    }

    pub(crate) fn open(&self) -> anyhow::Result<EventStore> {
        EventStore::open(&self.path, StoreConfig::default())
            .with_context(|| format!("cannot open {}", self.path.display()))
    }
}

fn payload(bytes: usize, seed: u64) -> Vec<u8> {
    (0..bytes).map(|i| (seed as usize + i) as u8).collect()
}

pub(crate) fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[derive(Debug, Serialize)]
struct AppendReport {
    bench: &'static str,
    writers: usize,
    events_per_commit: usize,
    payload_bytes: usize,
    streams: &'static str,
    events: u64,
    commits: u64,
    seconds: f64,
    events_per_second: f64,
    indexed_events_per_second: f64,
    commits_per_second: f64,
    p50_commit_ms: f64,
    p99_commit_ms: f64,
    p999_commit_ms: f64,
    max_commit_ms: f64,
}

async fn append(args: AppendArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.events_per_commit == 0 {
        bail!("--writers and --events-per-commit must be at least 1");
    }
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let commits_total = args.events.div_ceil(args.events_per_commit as u64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let store = store.clone();
        let commits = commits_total / args.writers as u64
            + u64::from((writer as u64) < commits_total % args.writers as u64);
        let stream = match args.streams {
            Streams::Own => StreamId::new(format!("bench-{writer}"))?,
            Streams::Same => StreamId::new("bench-shared")?,
        };
        let (per_commit, bytes) = (args.events_per_commit, args.payload_bytes);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            for commit in 0..commits {
                let events = (0..per_commit)
                    .map(|i| NewEvent::new("BenchEvent", payload(bytes, commit + i as u64)))
                    .collect();
                let begun = Instant::now();
                store.append(&stream, ExpectedVersion::Any, events).await?;
                latencies.record(begun.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    for task in tasks {
        latencies.add(task.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = store.next_position().0;
    // The index is written off the acknowledgement path and may lag; time until it has
    // caught up too, for the rate the whole store sustains.
    let waiter = store.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for_index()).await??;
    let indexed_seconds = started.elapsed().as_secs_f64();
    store.close().await;
    let report = AppendReport {
        bench: "append",
        writers: args.writers,
        events_per_commit: args.events_per_commit,
        payload_bytes: args.payload_bytes,
        streams: match args.streams {
            Streams::Same => "same",
            Streams::Own => "own",
        },
        events,
        commits: latencies.len(),
        seconds,
        events_per_second: events as f64 / seconds,
        indexed_events_per_second: events as f64 / indexed_seconds,
        commits_per_second: latencies.len() as f64 / seconds,
        p50_commit_ms: millis(latencies.value_at_quantile(0.50)),
        p99_commit_ms: millis(latencies.value_at_quantile(0.99)),
        p999_commit_ms: millis(latencies.value_at_quantile(0.999)),
        max_commit_ms: millis(latencies.max()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "append: {} writers x {} events/commit, {} B payloads, {} streams: {} events in {:.2} s = {:.0} events/s ({:.0} commits/s; {:.0} events/s until indexed too); commit latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            report.writers,
            report.events_per_commit,
            report.payload_bytes,
            report.streams,
            report.events,
            report.seconds,
            report.events_per_second,
            report.commits_per_second,
            report.indexed_events_per_second,
            report.p50_commit_ms,
            report.p99_commit_ms,
            report.p999_commit_ms,
            report.max_commit_ms
        );
    }
    Ok(())
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

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
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

/// Appends events in large commits until the log holds `events`.
async fn seed(store: &EventStore, events: u64, payload_bytes: usize) -> anyhow::Result<()> {
    let have = store.next_position().0;
    if have >= events {
        return Ok(());
    }
    let bar = progress::bar(events - have, "events");
    bar.set_message("seeding");
    let remaining = Arc::new(AtomicU64::new(events - have));
    let mut tasks = Vec::new();
    for writer in 0..4u64 {
        let (store, remaining, bar) = (store.clone(), remaining.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("seed-{writer}"))?;
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        (left > 0).then(|| left - left.min(1000))
                    })
                    .map_or(0, |left| left.min(1000));
                if take == 0 {
                    return anyhow::Ok(());
                }
                let batch = (0..take)
                    .map(|i| NewEvent::new("Seeded", payload(payload_bytes, i)))
                    .collect();
                store.append(&stream, ExpectedVersion::Any, batch).await?;
                bar.inc(take);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

#[derive(Debug, Serialize)]
struct ContendReport {
    bench: &'static str,
    writers: usize,
    seconds: f64,
    commits: u64,
    conflicts: u64,
    commits_per_second: f64,
    conflicts_per_second: f64,
    versions_unique_and_contiguous: bool,
}

async fn contend(args: ContendArgs) -> anyhow::Result<()> {
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let stream = StreamId::new("contended-1")?;
    let commits = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let (store, stream) = (store.clone(), stream.clone());
        let (commits, conflicts) = (commits.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            let mut believed: Option<Version> = None;
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let expected = believed.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let event = NewEvent::new("Claimed", format!("{writer}:{sequence}").into_bytes());
                match store.append(&stream, expected, vec![event]).await {
                    Ok(outcome) => {
                        believed = Some(outcome.last_version);
                        commits.fetch_add(1, Ordering::Relaxed);
                        sequence += 1;
                    }
                    Err(eventstore::Error::VersionConflict { actual, .. }) => {
                        believed = actual;
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => return Err(anyhow::Error::from(error)),
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (commits, conflicts) = (
        commits.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
    );
    // Read the stream back: every version exactly once, 0..commits, one event each.
    let reader = store.clone();
    let events = tokio::task::spawn_blocking(move || {
        reader.read_stream(&stream, Version(0), Direction::Forward, usize::MAX)
    })
    .await??;
    let unique = events.len() as u64 == commits
        && events
            .iter()
            .enumerate()
            .all(|(i, event)| event.version.0 == i as u64)
        && events
            .iter()
            .map(|event| &event.payload)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
            == commits;
    store.close().await;
    let report = ContendReport {
        bench: "contend",
        writers: args.writers,
        seconds,
        commits,
        conflicts,
        commits_per_second: commits as f64 / seconds,
        conflicts_per_second: conflicts as f64 / seconds,
        versions_unique_and_contiguous: unique,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "contend: {} writers on one stream for {:.1} s: {} commits ({:.0}/s), {} conflicts ({:.0}/s); versions unique and contiguous: {}",
            report.writers,
            report.seconds,
            report.commits,
            report.commits_per_second,
            report.conflicts,
            report.conflicts_per_second,
            if unique { "yes" } else { "NO" }
        );
    }
    if !unique {
        bail!("a version was assigned twice or skipped");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Events of the seeded workload (a seeded data directory is reused as it is).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Skus in the workload.
    #[arg(long, default_value_t = 1_000)]
    skus: u64,
    /// Customers (accounts) in the workload.
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    /// Orders in flight at once while seeding.
    #[arg(long, default_value_t = 256)]
    writers: u64,
    /// After the rebuild, seconds of live projection under a steady write load, to
    /// measure its lag (0: skip).
    #[arg(long, default_value_t = 5.0)]
    live_seconds: f64,
    /// Events per second written during the live phase.
    #[arg(long, default_value_t = 10_000)]
    live_rate: u64,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct RebuildReport {
    bench: &'static str,
    events: u64,
    read_models: usize,
    seconds: f64,
    events_per_second: f64,
    seed_seconds: Option<f64>,
    live: Option<LiveLag>,
}

/// Live projection under a steady write load: how long after an append's
/// acknowledgement the read model has applied it.
#[derive(Debug, Serialize)]
struct LiveLag {
    events: u64,
    events_per_second: f64,
    p50_lag_ms: f64,
    p99_lag_ms: f64,
    max_lag_ms: f64,
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    if args.skus < 3 || args.customers == 0 || args.writers == 0 {
        bail!("--skus must be at least 3, --customers and --writers at least 1");
    }
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let seeded = Instant::now();
    let seed_seconds = if store.next_position().0 < args.events {
        seed_domain(&store, &args).await?;
        Some(seeded.elapsed().as_secs_f64())
    } else {
        None
    };
    // Let the index catch up with the seeding first, so the rebuild runs alone.
    let waiter = store.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for_index()).await??;
    let events = store.next_position().0;
    let bar = progress::bar(events, "events");
    bar.set_message("rebuilding");
    let reader = store.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        let all = read_models::projections();
        let report = crate::projections::rebuild_with_progress(&reader, &all, &bar);
        bar.finish_and_clear();
        report.map(|report| (report, all.len()))
    })
    .await?;
    let (rebuilt, read_models) = rebuilt?;
    let live = live_lag(&store, &args).await;
    store.close().await;
    let report = RebuildReport {
        bench: "rebuild",
        events: rebuilt.events,
        read_models,
        seconds: rebuilt.seconds,
        events_per_second: rebuilt.events as f64 / rebuilt.seconds,
        seed_seconds,
        live: live?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "rebuild: {} read models over {} events in {:.3} s = {:.0} events/s{}",
            report.read_models,
            report.events,
            report.seconds,
            report.events_per_second,
            report
                .seed_seconds
                .map(|s| format!(" (seeded in {s:.1} s)"))
                .unwrap_or_default()
        );
        if let Some(live) = &report.live {
            println!(
                "live: {} events at {:.0} events/s; lag from acknowledgement to read model p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                live.events,
                live.events_per_second,
                live.p50_lag_ms,
                live.p99_lag_ms,
                live.max_lag_ms
            );
        }
    }
    Ok(())
}

/// Runs the domain projections live while writers append deposits and restocks at
/// `args.live_rate` events/s for `args.live_seconds`; each writer waits, after each
/// acknowledged append, until the read model has applied it, and records how long.
async fn live_lag(store: &EventStore, args: &RebuildArgs) -> anyhow::Result<Option<LiveLag>> {
    if args.live_seconds <= 0.0 || args.live_rate == 0 {
        return Ok(None);
    }
    let (projections, runner) =
        read_models::ReadSide::start(store, ::projections::RunnerConfig::default())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runner.run(shutdown.clone()));
    let head = store.next_position().0;
    if head > 0 {
        projections
            .wait_for(Position(head - 1), Duration::from_secs(120))
            .await?;
    }
    let writers = 64u64;
    let period = Duration::from_secs_f64(writers as f64 / args.live_rate as f64);
    let deadline = Instant::now() + Duration::from_secs_f64(args.live_seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (store, projections) = (store.clone(), projections.clone());
        let (skus, customers) = (args.skus, args.customers);
        tasks.spawn(async move {
            let mut lags = Histogram::<u64>::new(3).expect("valid precision");
            let mut choices = Choices::new(writer + 1);
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                ticks.tick().await;
                let (model, stream, event) = if choices.below(2) == 0 {
                    let event = domain_event::<payments::Account>(&payments::Event::Deposited {
                        amount: 1 + choices.below(100),
                    })?;
                    let stream =
                        StreamId::for_entity("account", &customer_id(choices.below(customers)))?;
                    (read_models::ACCOUNTS, stream, event)
                } else {
                    let event = domain_event::<inventory::Stock>(&inventory::Event::Restocked {
                        quantity: 1 + choices.below(10),
                    })?;
                    let stream = StreamId::for_entity("stock", &sku_id(choices.below(skus)))?;
                    (read_models::INVENTORY, stream, event)
                };
                let outcome = store
                    .append(&stream, ExpectedVersion::Any, vec![event])
                    .await?;
                let acknowledged = Instant::now();
                projections
                    .wait_for_model(model, outcome.last_position, Duration::from_secs(30))
                    .await?;
                lags.record(acknowledged.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(lags)
        });
    }
    let mut lags = Histogram::<u64>::new(3).expect("valid precision");
    while let Some(task) = tasks.join_next().await {
        lags.add(task??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await?;
    Ok(Some(LiveLag {
        events: lags.len(),
        events_per_second: lags.len() as f64 / seconds,
        p50_lag_ms: millis(lags.value_at_quantile(0.50)),
        p99_lag_ms: millis(lags.value_at_quantile(0.99)),
        max_lag_ms: millis(lags.max()),
    }))
}

/// A domain event of aggregate `A`, encoded as the repository would.
fn domain_event<A: eventstore::Aggregate>(event: &A::Event) -> anyhow::Result<NewEvent> {
    Ok(NewEvent::new(
        A::event_type(event),
        postcard::to_allocvec(event)?,
    ))
}

/// Appends one domain event to `<A::CATEGORY>-<id>`.
async fn append_domain<A: eventstore::Aggregate>(
    store: &EventStore,
    id: &str,
    events: &[A::Event],
) -> anyhow::Result<()> {
    let stream = StreamId::for_entity(A::CATEGORY, id)?;
    let events = events
        .iter()
        .map(domain_event::<A>)
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.append(&stream, ExpectedVersion::Any, events).await?;
    Ok(())
}

pub(crate) fn sku_id(sku: u64) -> String {
    format!("sku-{sku:05}")
}

pub(crate) fn sku_price(sku: u64) -> u64 {
    100 + (sku * 37) % 5_000
}

pub(crate) fn customer_id(customer: u64) -> String {
    format!("customer-{customer:06}")
}

/// xorshift64*: the workload's choices, the same for every run.
pub(crate) struct Choices(pub(crate) u64);

impl Choices {
    pub(crate) fn new(seed: u64) -> Self {
        Choices(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// Seeds skus and funded accounts, then orders until the log holds `args.events`: each
/// order is placed, reserves its lines, and is then confirmed (charge, confirmation,
/// reservations confirmed: 80%), cancelled for lack of payment (reservations released:
/// 15%) or cancelled after its charge (refund, release: 5%); now and then a sku is
/// restocked or an account topped up. Every event goes to its own stream, in the order
/// the fulfilment saga would write it.
async fn seed_domain(store: &EventStore, args: &RebuildArgs) -> anyhow::Result<()> {
    use inventory::{Event as Stock, Stock as StockAggregate};
    use orders::{Event as OrderEvent, Order, OrderLine};
    use payments::{Account, Event as Payment};

    if store.next_position().0 > 0 {
        bail!(
            "the data directory holds {} events, fewer than --events {}: use a fresh one",
            store.next_position().0,
            args.events
        );
    }
    let bar = progress::bar(args.events, "events");
    bar.set_message("seeding");
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..args.writers {
        let (store, skus, customers, writers) =
            (store.clone(), args.skus, args.customers, args.writers);
        tasks.spawn(async move {
            for sku in (writer..skus).step_by(writers as usize) {
                let registered = Stock::SkuRegistered {
                    sku: sku_id(sku),
                    name: format!("Article {sku}"),
                    unit_price: sku_price(sku),
                };
                let restocked = Stock::Restocked { quantity: 1 << 40 };
                append_domain::<StockAggregate>(&store, &sku_id(sku), &[registered, restocked])
                    .await?;
            }
            for customer in (writer..customers).step_by(writers as usize) {
                let opened = Payment::AccountOpened {
                    customer_id: customer_id(customer),
                };
                let deposited = Payment::Deposited { amount: 1 << 50 };
                append_domain::<Account>(&store, &customer_id(customer), &[opened, deposited])
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    let next_order = Arc::new(AtomicU64::new(0));
    for _ in 0..args.writers {
        let (store, next_order, bar) = (store.clone(), next_order.clone(), bar.clone());
        let (skus, customers, target) = (args.skus, args.customers, args.events);
        tasks.spawn(async move {
            while store.next_position().0 < target {
                let number = next_order.fetch_add(1, Ordering::Relaxed);
                let mut choices = Choices::new(number);
                let order_id = format!("{:016x}{:016x}", number, choices.below(u64::MAX));
                let customer = customer_id(choices.below(customers));
                let mut lines: Vec<(u64, u64)> = Vec::new();
                for _ in 0..1 + choices.below(3) {
                    let sku = choices.below(skus);
                    if lines.iter().all(|(chosen, _)| *chosen != sku) {
                        lines.push((sku, 1 + choices.below(5)));
                    }
                }
                let placed = OrderEvent::OrderPlaced {
                    order_id: order_id.clone(),
                    customer_id: customer.clone(),
                    lines: lines
                        .iter()
                        .map(|&(sku, quantity)| OrderLine {
                            sku: sku_id(sku),
                            quantity,
                        })
                        .collect(),
                };
                append_domain::<Order>(&store, &order_id, &[placed]).await?;
                let mut total = 0;
                for &(sku, quantity) in &lines {
                    let reserved = Stock::StockReserved {
                        order_id: order_id.clone(),
                        quantity,
                        unit_price: sku_price(sku),
                    };
                    append_domain::<StockAggregate>(&store, &sku_id(sku), &[reserved]).await?;
                    total += quantity * sku_price(sku);
                }
                let outcome = choices.below(100);
                if outcome >= 80 {
                    if outcome >= 95 {
                        let charged = Payment::Charged {
                            order_id: order_id.clone(),
                            amount: total,
                        };
                        let refunded = Payment::Refunded {
                            order_id: order_id.clone(),
                            amount: total,
                        };
                        append_domain::<Account>(&store, &customer, &[charged]).await?;
                        append_domain::<Account>(&store, &customer, &[refunded]).await?;
                    }
                    for &(sku, quantity) in &lines {
                        let released = Stock::StockReleased {
                            order_id: order_id.clone(),
                            quantity,
                        };
                        append_domain::<StockAggregate>(&store, &sku_id(sku), &[released]).await?;
                    }
                    let reason = if outcome >= 95 {
                        "the order was not confirmed in time"
                    } else {
                        "insufficient funds"
                    };
                    let cancelled = OrderEvent::OrderCancelled {
                        reason: reason.into(),
                    };
                    append_domain::<Order>(&store, &order_id, &[cancelled]).await?;
                } else {
                    let charged = Payment::Charged {
                        order_id: order_id.clone(),
                        amount: total,
                    };
                    append_domain::<Account>(&store, &customer, &[charged]).await?;
                    let confirmed = OrderEvent::OrderConfirmed { total };
                    append_domain::<Order>(&store, &order_id, &[confirmed]).await?;
                    for &(sku, quantity) in &lines {
                        let confirmed = Stock::ReservationConfirmed {
                            order_id: order_id.clone(),
                            quantity,
                        };
                        append_domain::<StockAggregate>(&store, &sku_id(sku), &[confirmed]).await?;
                    }
                }
                if number % 50 == 0 {
                    let sku = choices.below(skus);
                    let restocked = Stock::Restocked { quantity: 1_000 };
                    append_domain::<StockAggregate>(&store, &sku_id(sku), &[restocked]).await?;
                    let deposited = Payment::Deposited { amount: 10_000 };
                    append_domain::<Account>(&store, &customer, &[deposited]).await?;
                }
                bar.set_position(store.next_position().0);
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// JetStream storage of the relay bench's scratch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStorage {
    /// On disk, as in production.
    File,
    /// In memory.
    Memory,
}

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The NATS server (with JetStream) to publish to. A scratch stream is created for
    /// the run and deleted afterwards.
    #[arg(long, env = "ANNALS_NATS_URL")]
    nats_url: String,
    /// Events in the backlog relayed in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Write rate of the lag phase, in events/s (0 skips the phase).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds the lag phase writes.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// JetStream storage of the scratch stream.
    #[arg(long, value_enum, default_value_t = BenchStorage::File)]
    storage: BenchStorage,
    /// Publishes awaiting their acknowledgement at most.
    #[arg(long, default_value_t = 4096)]
    max_acks_in_flight: usize,
    /// The scratch stream's duplicate window in milliseconds (the relay's default is
    /// 120000). NATS keeps every message id of the window in memory and pays for each.
    #[arg(long, default_value_t = 120_000)]
    duplicate_window_ms: u64,
    /// Keep the scratch stream afterwards.
    #[arg(long)]
    keep_stream: bool,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct RelayReport {
    bench: &'static str,
    /// The scratch stream (deleted unless `--keep-stream`).
    stream: String,
    storage: &'static str,
    payload_bytes: usize,
    max_acks_in_flight: usize,
    duplicate_window_ms: u64,
    backlog_events: u64,
    backlog_seconds: f64,
    backlog_events_per_second: f64,
    lag_target_rate: u64,
    lag_events: u64,
    lag_achieved_rate: f64,
    p50_lag_ms: f64,
    p99_lag_ms: f64,
    p999_lag_ms: f64,
    max_lag_ms: f64,
}

/// Waits until the relay's checkpoint reaches `target`, polling (a waiter woken by every
/// acknowledgement would take CPU from the relay it measures); fails if it stalls.
async fn wait_relayed(
    status: &::outbox::StatusHandle,
    target: u64,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let mut last_progress = (status.current().checkpoint.0, Instant::now());
    loop {
        let now = status.current();
        if let Some(bar) = bar {
            bar.set_position(now.checkpoint.0);
        }
        if now.checkpoint.0 >= target {
            return Ok(());
        }
        if now.checkpoint.0 > last_progress.0 {
            last_progress = (now.checkpoint.0, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(30) {
            bail!(
                "the relay made no progress for 30 s (checkpoint {}, breaker {:?}, last error: {})",
                now.checkpoint,
                now.breaker,
                now.last_error.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    seed(&store, args.events, args.payload_bytes).await?;
    let backlog = store.next_position().0;
    // Let the index catch up with the seeding first, so the relay runs alone.
    let waiter = store.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for_index()).await??;
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos())
    );
    let config = ::outbox::RelayConfig {
        stream: format!("ANNALS_BENCH_{unique}"),
        subject_prefix: format!("annals.bench_{unique}"),
        checkpoint_name: format!("bench-relay-{unique}"),
        storage: match args.storage {
            BenchStorage::File => ::outbox::Storage::File,
            BenchStorage::Memory => ::outbox::Storage::Memory,
        },
        max_acks_in_flight: args.max_acks_in_flight,
        duplicate_window: Duration::from_millis(args.duplicate_window_ms),
        ..::outbox::RelayConfig::new(args.nats_url.clone())
    };
    let relay = ::outbox::Relay::new(store.clone(), config.clone())?;
    // Connect, create the stream: fail fast with a clear error, outside the timing.
    relay
        .check()
        .await
        .context("NATS is not ready for the relay")?;
    let status = relay.status();
    let shutdown = tokio_util::sync::CancellationToken::new();

    // Phase 1: the backlog.
    let bar = progress::bar(backlog, "events");
    bar.set_message("relaying the backlog");
    let started = Instant::now();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let relayed = wait_relayed(&status, backlog, Some(&bar)).await;
    let backlog_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Phase 2: writes at a steady rate; lag from each commit to its acknowledgement.
    let lag = match relayed {
        Ok(()) if args.rate > 0 => {
            relay_lag(
                &store,
                &status,
                args.rate,
                args.duration,
                args.payload_bytes,
            )
            .await
        }
        Ok(()) => Ok((Histogram::<u64>::new(3).expect("valid precision"), 0, 0.0)),
        Err(error) => Err(error),
    };
    shutdown.cancel();
    let stopped = task.await;
    if !args.keep_stream
        && let Ok(client) = ::outbox::connect(
            &args.nats_url,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
    {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&config.stream)
            .await;
    }
    store.close().await;
    stopped.context("the relay task")??;
    let (lags, lag_events, lag_achieved_rate) = lag?;
    let report = RelayReport {
        bench: "relay",
        stream: config.stream.clone(),
        storage: match args.storage {
            BenchStorage::File => "file",
            BenchStorage::Memory => "memory",
        },
        payload_bytes: args.payload_bytes,
        max_acks_in_flight: args.max_acks_in_flight,
        duplicate_window_ms: args.duplicate_window_ms,
        backlog_events: backlog,
        backlog_seconds,
        backlog_events_per_second: backlog as f64 / backlog_seconds,
        lag_target_rate: args.rate,
        lag_events,
        lag_achieved_rate,
        p50_lag_ms: millis(lags.value_at_quantile(0.50)),
        p99_lag_ms: millis(lags.value_at_quantile(0.99)),
        p999_lag_ms: millis(lags.value_at_quantile(0.999)),
        max_lag_ms: millis(lags.max()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "relay ({} storage, {} B payloads, {} acks in flight, {} ms duplicate window): backlog of {} events in {:.2} s = {:.0} events/s; at {} events/s of writes ({} events, {:.0}/s achieved): commit-to-ack lag p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            report.storage,
            report.payload_bytes,
            report.max_acks_in_flight,
            report.duplicate_window_ms,
            report.backlog_events,
            report.backlog_seconds,
            report.backlog_events_per_second,
            report.lag_target_rate,
            report.lag_events,
            report.lag_achieved_rate,
            report.p50_lag_ms,
            report.p99_lag_ms,
            report.p999_lag_ms,
            report.max_lag_ms
        );
        if args.keep_stream {
            println!("the stream {} was kept", report.stream);
        }
    }
    Ok(())
}

/// Appends single events at `rate` per second for `seconds` while the relay runs, and
/// returns the histogram of commit-to-acknowledgement lags (µs), the events written and
/// the rate achieved.
async fn relay_lag(
    store: &EventStore,
    status: &::outbox::StatusHandle,
    rate: u64,
    seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<(Histogram<u64>, u64, f64)> {
    let total = (rate as f64 * seconds).round().max(1.0) as u64;
    // The observer notes when the checkpoint passes each position: (checkpoint, when).
    let observer_stop = tokio_util::sync::CancellationToken::new();
    let observer = {
        let mut status = status.clone();
        let stop = observer_stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            loop {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { break },
                    () = stop.cancelled() => break,
                }
                let checkpoint = status.current().checkpoint.0;
                if seen.last().is_none_or(|(last, _)| checkpoint > *last) {
                    seen.push((checkpoint, Instant::now()));
                }
            }
            seen
        })
    };
    let (commits_tx, mut commits_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
    let started = Instant::now();
    let mut issued = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut writers = tokio::task::JoinSet::new();
    while issued < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while issued < due {
            let permit = in_flight.clone().acquire_owned().await?;
            let (store, commits_tx) = (store.clone(), commits_tx.clone());
            let stream = StreamId::new(format!("lag-{}", issued % 64))?;
            let payload = payload(payload_bytes, issued);
            writers.spawn(async move {
                let outcome = store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![NewEvent::new("Measured", payload)],
                    )
                    .await?;
                let _ = commits_tx.send((outcome.first_position.0, Instant::now()));
                drop(permit);
                anyhow::Ok(())
            });
            issued += 1;
        }
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    let written_seconds = started.elapsed().as_secs_f64();
    drop(commits_tx);
    wait_relayed(status, store.next_position().0, None).await?;
    observer_stop.cancel();
    let seen = observer.await?;
    let mut lags = Histogram::<u64>::new(3).expect("valid precision");
    while let Some((position, committed)) = commits_rx.recv().await {
        let at = seen.partition_point(|(checkpoint, _)| *checkpoint <= position);
        let acked = seen
            .get(at)
            .map(|(_, when)| *when)
            .context("an acknowledgement the observer missed")?;
        lags.record(acked.saturating_duration_since(committed).as_micros() as u64)?;
    }
    Ok((lags, total, total as f64 / written_seconds))
}
