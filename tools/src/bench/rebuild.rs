//! `annals bench rebuild`: seed the domain workload, time a rebuild of the read models
//! every server keeps (not `correlations`, kept only with `annals serve --correlations`)
//! from it, then measure how far live projection lags behind a steady write load.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use eventstore::{EventStore, ExpectedVersion, Position, StreamId};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{Choices, Workload, customer_id, domain_event, seed_domain, sku_id};
use super::{BenchDir, millis};
use crate::progress;

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

pub(super) async fn run(args: RebuildArgs) -> anyhow::Result<()> {
    if args.skus < 3 || args.customers == 0 || args.writers == 0 {
        bail!("--skus must be at least 3, --customers and --writers at least 1");
    }
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let seeded = Instant::now();
    let seed_seconds = if store.next_position().0 < args.events {
        let workload = Workload {
            events: args.events,
            skus: args.skus,
            customers: args.customers,
            writers: args.writers,
        };
        seed_domain(&store, &workload).await?;
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
        let report = crate::read_model_commands::rebuild_with_progress(&reader, &all, &bar);
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
        read_models::ReadSide::start(store, projections::RunnerConfig::default())?;
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
