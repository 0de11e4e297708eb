//! `annals bench append --store nats://...`: the append load of [`super::append`] on a
//! store whose log is a replicated JetStream stream (`EventStore::open_replicated`), and
//! with `--compare-plain-jetstream` the same load published by a plain JetStream client.
//!
//! Every measurement gets a stream of its own (a unique name and subject prefix), created
//! with the configuration the store gives its log (file storage, `--store-replicas`
//! copies, the same duplicate window) and deleted at the end, whether the measurement
//! succeeded or not; the store's copy lives in a temporary directory.
//!
//! The plain client is what the backend is measured against: as many writers, each
//! publishing its commit as one message (`--events-per-commit` x `--payload-bytes` bytes,
//! with a `Nats-Msg-Id` as an append has) to its writer's subject. Closed-loop: each
//! writer awaits the PubAck before its next publish, as an append does (the same
//! durability: the PubAck of a replicated stream on servers with `sync_interval: always`).
//! Pipelined: each writer keeps up to `--plain-in-flight` publishes awaiting their PubAck,
//! what JetStream does when the client does not wait. `--rounds` rounds measure the three
//! alternately (ABBA: the order reverses every round); the report has each round's
//! figures, their medians and the backend's rate as a share of each plain rate.
//!
//! The scratch stream (`scratch`, `connect`, `delete`) and the load average are shared
//! with `bench saga --store nats://` ([`super::saga_jetstream`]).

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream;
use eventstore::{EventStore, ReplicatedConfig, StoreConfig};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::append::{AppendArgs, AppendReport, measure_on};
use super::workload::payload;
use super::{BenchDir, millis};

/// The backend's report: the embedded store's fields, and where the log was.
#[derive(Debug, Serialize)]
struct JetStreamReport {
    #[serde(flatten)]
    append: AppendReport,
    store: &'static str,
    replicas: usize,
    /// The 1-minute load average of the machine before and after the run.
    load_average: [f64; 2],
}

/// One measurement of the plain client.
#[derive(Debug, Serialize)]
struct PlainReport {
    /// Publishes each writer keeps awaiting their PubAck (1: closed-loop).
    in_flight: usize,
    events: u64,
    commits: u64,
    seconds: f64,
    events_per_second: f64,
    commits_per_second: f64,
    /// From each publish to its PubAck, as the writer saw it.
    p50_commit_ms: f64,
    p99_commit_ms: f64,
    max_commit_ms: f64,
}

/// What `--compare-plain-jetstream` measured of one side.
#[derive(Debug, Default, Serialize)]
struct Side {
    /// Each round's events/s, p50 and p99 commit latency.
    events_per_second: Vec<f64>,
    p50_commit_ms: Vec<f64>,
    p99_commit_ms: Vec<f64>,
    median_events_per_second: f64,
    median_p50_commit_ms: f64,
    median_p99_commit_ms: f64,
}

impl Side {
    fn push(&mut self, events_per_second: f64, p50: f64, p99: f64) {
        self.events_per_second.push(events_per_second);
        self.p50_commit_ms.push(p50);
        self.p99_commit_ms.push(p99);
        self.median_events_per_second = median(&self.events_per_second);
        self.median_p50_commit_ms = median(&self.p50_commit_ms);
        self.median_p99_commit_ms = median(&self.p99_commit_ms);
    }
}

#[derive(Debug, Serialize)]
struct CompareReport {
    bench: &'static str,
    store: &'static str,
    replicas: usize,
    writers: usize,
    events_per_commit: usize,
    payload_bytes: usize,
    streams: &'static str,
    events: u64,
    rounds: usize,
    plain_in_flight: usize,
    /// The store on JetStream (`EventStore::append`).
    backend: Side,
    /// The plain client, each writer awaiting its PubAck before its next publish.
    plain: Side,
    /// The plain client, each writer keeping `plain_in_flight` publishes in flight.
    pipelined: Side,
    /// The backend's median rate as a share of the closed-loop plain client's.
    backend_vs_plain: f64,
    /// The backend's median rate as a share of the pipelined plain client's.
    backend_vs_pipelined: f64,
    /// The 1-minute load average of the machine before and after the run.
    load_average: [f64; 2],
}

pub(super) async fn run(
    args: &AppendArgs,
    config: ReplicatedConfig,
    rounds: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.writers > 0 && args.events_per_commit > 0,
        "--writers and --events-per-commit must be at least 1"
    );
    if args.compare_plain_jetstream {
        anyhow::ensure!(
            rounds > 0 && args.plain_in_flight > 0,
            "--rounds and --plain-in-flight must be at least 1"
        );
        return compare(args, &config, rounds).await;
    }
    let before = load_average();
    let append = backend(args, &config).await?;
    let report = JetStreamReport {
        append,
        store: "jetstream",
        replicas: config.replicas,
        load_average: [before, load_average()],
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "append on JetStream (R{}): {} writers x {} events/commit, {} B payloads, {} streams: {} events in {:.2} s = {:.0} events/s; commit latency p50 {:.2} ms, p99 {:.2} ms (load average {:.2} -> {:.2})",
            report.replicas,
            args.writers,
            args.events_per_commit,
            args.payload_bytes,
            args.streams_name(),
            report.append.events,
            report.append.seconds,
            report.append.events_per_second,
            report.append.p50_commit_ms,
            report.append.p99_commit_ms,
            report.load_average[0],
            report.load_average[1],
        );
    }
    Ok(())
}

/// The three, alternately, `rounds` times.
async fn compare(
    args: &AppendArgs,
    config: &ReplicatedConfig,
    rounds: usize,
) -> anyhow::Result<()> {
    let before = load_average();
    let (mut backend_side, mut plain_side, mut pipelined_side) =
        (Side::default(), Side::default(), Side::default());
    for round in 0..rounds {
        let mut order = [0, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for which in order {
            let (name, rate, p50, p99) = match which {
                0 => {
                    let report = backend(args, config).await?;
                    let (rate, p50, p99) = (
                        report.events_per_second,
                        report.p50_commit_ms,
                        report.p99_commit_ms,
                    );
                    backend_side.push(rate, p50, p99);
                    ("backend", rate, p50, p99)
                }
                _ => {
                    let in_flight = if which == 1 { 1 } else { args.plain_in_flight };
                    let report = plain(args, config, in_flight).await?;
                    let side = if which == 1 {
                        &mut plain_side
                    } else {
                        &mut pipelined_side
                    };
                    side.push(
                        report.events_per_second,
                        report.p50_commit_ms,
                        report.p99_commit_ms,
                    );
                    (
                        if which == 1 { "plain" } else { "pipelined" },
                        report.events_per_second,
                        report.p50_commit_ms,
                        report.p99_commit_ms,
                    )
                }
            };
            if !args.json {
                println!(
                    "round {} {name:>9}: {rate:>8.0} events/s, p50 {p50:.2} ms, p99 {p99:.2} ms (load average {:.2})",
                    round + 1,
                    load_average()
                );
            }
        }
    }
    let report = CompareReport {
        bench: "append-jetstream-compare",
        store: "jetstream",
        replicas: config.replicas,
        writers: args.writers,
        events_per_commit: args.events_per_commit,
        payload_bytes: args.payload_bytes,
        streams: args.streams_name(),
        events: args.events,
        rounds,
        plain_in_flight: args.plain_in_flight,
        backend_vs_plain: backend_side.median_events_per_second
            / plain_side.median_events_per_second,
        backend_vs_pipelined: backend_side.median_events_per_second
            / pipelined_side.median_events_per_second,
        backend: backend_side,
        plain: plain_side,
        pipelined: pipelined_side,
        load_average: [before, load_average()],
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "medians of {} rounds: backend {:.0} events/s (p50 {:.2} ms), plain closed-loop {:.0} (p50 {:.2} ms), plain pipelined x{} {:.0}; backend / plain {:.1}%, backend / pipelined {:.1}% (load average {:.2} -> {:.2})",
            report.rounds,
            report.backend.median_events_per_second,
            report.backend.median_p50_commit_ms,
            report.plain.median_events_per_second,
            report.plain.median_p50_commit_ms,
            report.plain_in_flight,
            report.pipelined.median_events_per_second,
            report.backend_vs_plain * 100.0,
            report.backend_vs_pipelined * 100.0,
            report.load_average[0],
            report.load_average[1],
        );
    }
    Ok(())
}

/// A stream and subject prefix no other run uses.
pub(super) fn scratch(config: &ReplicatedConfig, kind: &str) -> ReplicatedConfig {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos()),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    ReplicatedConfig {
        stream: format!("ANNALS_BENCH_{}_{unique}", kind.to_uppercase()),
        subject_prefix: format!("annals.bench_{kind}_{unique}"),
        ..config.clone()
    }
}

/// The load on a fresh store on a fresh stream, both removed afterwards.
async fn backend(args: &AppendArgs, config: &ReplicatedConfig) -> anyhow::Result<AppendReport> {
    let config = scratch(config, "log");
    let dir = BenchDir::new(None)?;
    let opened = EventStore::open_replicated(&dir.path, StoreConfig::default(), config.clone())
        .await
        .with_context(|| format!("cannot open a store on JetStream stream {}", config.stream));
    let measured = match opened {
        Ok(store) => {
            let measured = measure_on(&store, args).await;
            store.close().await;
            measured
        }
        Err(error) => Err(error),
    };
    let deleted = delete_scratch(&config).await;
    let report = measured?;
    deleted?;
    Ok(report)
}

/// The load published by a plain client, each writer keeping `in_flight` publishes
/// awaiting their PubAck, to a fresh stream deleted afterwards.
async fn plain(
    args: &AppendArgs,
    config: &ReplicatedConfig,
    in_flight: usize,
) -> anyhow::Result<PlainReport> {
    let config = scratch(config, "plain");
    let js = connect(&config).await?;
    js.create_stream(jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create the stream {}", config.stream))?;
    let measured = publish_load(args, &js, &config.subject_prefix, in_flight).await;
    let deleted = delete(&js, &config.stream).await;
    let report = measured?;
    deleted?;
    Ok(report)
}

async fn publish_load(
    args: &AppendArgs,
    js: &jetstream::Context,
    prefix: &str,
    in_flight: usize,
) -> anyhow::Result<PlainReport> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let js = js.clone();
        let (commits, last_commit_short_by) = args.commits_of(writer);
        let subject = format!("{prefix}.{}", args.stream_of(writer));
        let (per_commit, bytes) = (args.events_per_commit as u64, args.payload_bytes);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            let mut waiting = VecDeque::with_capacity(in_flight);
            let mut published = 0u64;
            for commit in 0..commits {
                let size = if commit + 1 == commits {
                    per_commit - last_commit_short_by
                } else {
                    per_commit
                };
                let body: Vec<u8> = (0..size).flat_map(|i| payload(bytes, commit + i)).collect();
                if waiting.len() == in_flight {
                    acknowledged(&mut waiting, &mut latencies).await?;
                }
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    uuid::Uuid::new_v4().to_string().as_str(),
                );
                let begun = Instant::now();
                let ack = js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .context("publishing")?;
                waiting.push_back((begun, ack));
                published += size;
            }
            while !waiting.is_empty() {
                acknowledged(&mut waiting, &mut latencies).await?;
            }
            anyhow::Ok((latencies, published))
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    let mut events = 0u64;
    for task in tasks {
        let (task_latencies, published) = task.await??;
        latencies.add(task_latencies)?;
        events += published;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(PlainReport {
        in_flight,
        events,
        commits: latencies.len(),
        seconds,
        events_per_second: events as f64 / seconds,
        commits_per_second: latencies.len() as f64 / seconds,
        p50_commit_ms: millis(latencies.value_at_quantile(0.50)),
        p99_commit_ms: millis(latencies.value_at_quantile(0.99)),
        max_commit_ms: millis(latencies.max()),
    })
}

/// Awaits the oldest publish in flight and records its latency.
async fn acknowledged(
    waiting: &mut VecDeque<(Instant, jetstream::context::PublishAckFuture)>,
    latencies: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let (begun, ack) = waiting.pop_front().expect("a publish in flight");
    ack.await.context("awaiting a PubAck")?;
    latencies.record(begun.elapsed().as_micros() as u64)?;
    Ok(())
}

/// A JetStream context on `config`'s servers, waiting for answers as long as an append.
pub(super) async fn connect(config: &ReplicatedConfig) -> anyhow::Result<jetstream::Context> {
    let addresses = config
        .urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("the --store URLs")?;
    let client = async_nats::ConnectOptions::new()
        .name("annals-bench")
        .connect(addresses)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}",
                eventstore::replicated::without_credentials(&config.urls)
            )
        })?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client))
}

/// Connects anew and deletes the stream of `config` (a [`scratch`] one), whatever became
/// of the measurement's own connection.
pub(super) async fn delete_scratch(config: &ReplicatedConfig) -> anyhow::Result<()> {
    delete(&connect(config).await?, &config.stream).await
}

pub(super) async fn delete(js: &jetstream::Context, stream: &str) -> anyhow::Result<()> {
    js.delete_stream(stream)
        .await
        .with_context(|| format!("cannot delete the bench's stream {stream}"))?;
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The machine's 1-minute load average (0 where /proc/loadavg is not).
pub(super) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}
