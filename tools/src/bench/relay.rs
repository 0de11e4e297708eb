//! `annals bench relay`: the outbox relay against a real NATS server; publish throughput
//! of a backlog, then end-to-end lag (commit to JetStream acknowledgement) at a given
//! write rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventstore::{EventStore, ExpectedVersion, NewEvent, StreamId};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{payload, seed};
use super::{BenchDir, millis};
use crate::progress;

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
    /// TLS towards NATS.
    #[command(flatten)]
    nats_tls: crate::tls::NatsTlsArgs,
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
    status: &outbox::StatusHandle,
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

pub(super) async fn run(args: RelayArgs) -> anyhow::Result<()> {
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
    let config = outbox::RelayConfig {
        stream: format!("ANNALS_BENCH_{unique}"),
        subject_prefix: format!("annals.bench_{unique}"),
        checkpoint_name: format!("bench-relay-{unique}"),
        storage: match args.storage {
            BenchStorage::File => outbox::Storage::File,
            BenchStorage::Memory => outbox::Storage::Memory,
        },
        max_acks_in_flight: args.max_acks_in_flight,
        duplicate_window: Duration::from_millis(args.duplicate_window_ms),
        tls: args.nats_tls.settings()?,
        // What the server publishes: the payload as JSON where the API knows it.
        json_payloads: crate::event_json::json_payloads(),
        ..outbox::RelayConfig::new(args.nats_url.clone())
    };
    let relay = outbox::Relay::new(store.clone(), config.clone())?;
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
        && let Ok(client) = outbox::connect(
            &args.nats_url,
            &config.tls,
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
    status: &outbox::StatusHandle,
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
