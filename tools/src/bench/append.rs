//! `annals bench append`: concurrent writers appending fsync'd commits; events/s and
//! commit latency percentiles.
//!
//! With `--compare-observability` it measures W1 (64 writers, one event per commit)
//! alternately in child processes that run as `annals serve` does: the server's
//! subscriber, and every commit in a span of its own, as a command runs in its request's
//! span (each commit the root of a trace). Observability off: no traces exported, no
//! metrics recorder (`annals serve --no-metrics` without `--otlp-endpoint`). On: traces
//! exported over OTLP/HTTP to a local receiver, sampled as the server samples new traces
//! (`--traces-per-second`; a sampled commit's append has its `append` span), and the
//! server's metrics recorder. For `--rounds` rounds in ABBA order: the rate with it on as
//! a share of the rate with it off, in one run.
//!
//! With `--store nats://...` the same load runs on a store whose log is a replicated
//! JetStream stream ([`super::append_jetstream`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use eventstore::{EventStore, ExpectedVersion, NewEvent, StreamId};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::payload;
use super::{BenchDir, millis};

/// Which streams the writers append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Streams {
    /// All writers share one stream.
    Same,
    /// Each writer has its own stream.
    Own,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("comparison")
    .args(["compare_observability", "compare_plain_jetstream"])
    .multiple(false)))]
pub struct AppendArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub(super) writers: usize,
    /// Events per append (commit).
    #[arg(long, default_value_t = 1)]
    pub(super) events_per_commit: usize,
    /// Total events to append.
    #[arg(long, default_value_t = 50_000)]
    pub(super) events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 200)]
    pub(super) payload_bytes: usize,
    /// One stream per writer, or one for all.
    #[arg(long, value_enum, default_value_t = Streams::Own)]
    pub(super) streams: Streams,
    /// Where the log is: `embedded` (segment files in the data directory), or a
    /// replicated JetStream stream on these servers, `nats://H1:P1,H2:P2,H3:P3`: a fresh
    /// stream for the run (its own name and subjects), deleted at the end, the node's
    /// copy in a temporary directory.
    #[arg(long, value_name = "embedded|nats://...", default_value = "embedded")]
    pub(super) store: String,
    /// With --store nats://: the copies JetStream keeps of the bench's stream (3 by
    /// default).
    #[arg(long, value_name = "N")]
    pub(super) store_replicas: Option<usize>,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Measure W1 with observability off and on, alternately in child processes (the
    /// writers, events and payload flags apply).
    #[arg(long, conflicts_with_all = ["data_dir", "otlp_endpoint"])]
    compare_observability: bool,
    /// With --store nats://: in alternating rounds, the same load on the store and
    /// published by a plain JetStream client to a stream of its own (as many writers,
    /// each commit one message): closed-loop (each writer awaits its PubAck before its
    /// next, as an append does) and pipelined (--plain-in-flight publishes in flight).
    #[arg(long)]
    pub(super) compare_plain_jetstream: bool,
    /// With --compare-plain-jetstream: the publishes each writer of the pipelined plain
    /// client keeps in flight.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 64,
        requires = "compare_plain_jetstream"
    )]
    pub(super) plain_in_flight: usize,
    /// With a comparison: measurements of each side (default 6 for
    /// --compare-observability, 4 for --compare-plain-jetstream).
    #[arg(long, requires = "comparison")]
    rounds: Option<usize>,
    /// The "on" side: export traces to this OTLP/HTTP collector and record metrics, as
    /// `annals serve` does (set by --compare-observability).
    #[arg(long, hide = true, value_name = "URL", requires = "as_server")]
    otlp_endpoint: Option<String>,
    /// A measuring child of --compare-observability: the server's subscriber, each
    /// commit in a span.
    #[arg(long, hide = true)]
    as_server: bool,
    /// With --compare-observability: the "on" side begins at most this many traces a
    /// second, as `annals serve --traces-per-second` does (a large number: every commit
    /// traced and exported).
    #[arg(long, value_name = "N", default_value_t = crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND)]
    traces_per_second: u32,
}

/// The comparison of `--compare-observability`.
#[derive(Debug, Serialize)]
struct ObservabilityReport {
    bench: &'static str,
    rounds: usize,
    /// Every round's events/s with observability off, then on.
    off: Vec<f64>,
    on: Vec<f64>,
    median_off_per_second: f64,
    median_on_per_second: f64,
    /// `median_on / median_off`.
    ratio: f64,
    /// What the local receiver got: export requests and bytes.
    exports: u64,
    exported_bytes: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct AppendReport {
    bench: &'static str,
    writers: usize,
    events_per_commit: usize,
    payload_bytes: usize,
    streams: &'static str,
    /// Events this run appended: the data directory may hold older ones, which neither
    /// count nor make the rate.
    pub(super) events: u64,
    commits: u64,
    pub(super) seconds: f64,
    pub(super) events_per_second: f64,
    indexed_events_per_second: f64,
    commits_per_second: f64,
    pub(super) p50_commit_ms: f64,
    pub(super) p99_commit_ms: f64,
    p999_commit_ms: f64,
    max_commit_ms: f64,
}

pub(super) async fn run(args: AppendArgs) -> anyhow::Result<()> {
    let backend = crate::serve::StoreBackend::parse(Some(&args.store), None, args.store_replicas)?;
    if let crate::serve::StoreBackend::JetStream(config) = backend {
        if args.compare_observability || args.data_dir.is_some() {
            bail!("--store nats:// takes neither --compare-observability nor --data-dir");
        }
        return super::append_jetstream::run(&args, config, args.rounds.unwrap_or(4)).await;
    }
    if args.compare_plain_jetstream {
        bail!("--compare-plain-jetstream needs --store nats://...");
    }
    if args.compare_observability {
        return compare_observability(&args).await;
    }
    if args.otlp_endpoint.is_some() {
        // Metrics recorded as a server records them (the subscriber is set up in main).
        api::metrics::install();
    }
    let report = measure(&args).await?;
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

/// W1 off and on, alternately, each in a child process of its own.
async fn compare_observability(args: &AppendArgs) -> anyhow::Result<()> {
    let sink = super::otlp_sink::OtlpSink::start().await?;
    let rounds = args.rounds.unwrap_or(6);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Off first in odd rounds, on first in even ones.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for observed in order {
            let rate = child(args, observed.then_some(sink.endpoint.as_str())).await?;
            if !args.json {
                let label = if observed { "on " } else { "off" };
                println!(
                    "round {} observability {label}: {rate:.0} events/s",
                    round + 1
                );
            }
            if observed { &mut on } else { &mut off }.push(rate);
        }
    }
    let (exports, exported_bytes) = sink.received();
    if exports == 0 {
        bail!("the observed runs exported no spans: the comparison would mean nothing");
    }
    let median = |rates: &[f64]| {
        let mut rates = rates.to_vec();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let report = ObservabilityReport {
        bench: "append-observability",
        rounds,
        median_off_per_second: median(&off),
        median_on_per_second: median(&on),
        ratio: median(&on) / median(&off),
        off,
        on,
        exports,
        exported_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "observability on / off: {:.0} / {:.0} events/s (medians of {} rounds): {:.1}% ({} exports, {} bytes of spans)",
            report.median_on_per_second,
            report.median_off_per_second,
            report.rounds,
            report.ratio * 100.0,
            report.exports,
            report.exported_bytes
        );
    }
    Ok(())
}

/// One measurement in a child process (`otlp`: the on side, exporting there): events/s.
async fn child(args: &AppendArgs, otlp: Option<&str>) -> anyhow::Result<f64> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["bench", "append", "--json", "--streams", "own"])
        .args(["--writers", &args.writers.to_string()])
        .args(["--events-per-commit", &args.events_per_commit.to_string()])
        .args(["--events", &args.events.to_string()])
        .args(["--payload-bytes", &args.payload_bytes.to_string()])
        .args(["--traces-per-second", &args.traces_per_second.to_string()])
        .arg("--as-server")
        // The server's default level: its spans are recorded, its lines are few.
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::inherit());
    if let Some(endpoint) = otlp {
        command.args(["--otlp-endpoint", endpoint]);
    }
    let output = command
        .output()
        .await
        .context("cannot run the measuring child")?;
    if !output.status.success() {
        bail!("the measuring child failed ({})", output.status);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the measuring child printed no report")?;
    report["events_per_second"]
        .as_f64()
        .context("the child's report has no events_per_second")
}

impl AppendArgs {
    /// The collector of the "on" side of `--compare-observability`, in a measuring
    /// child.
    pub fn observed(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref()
    }

    /// Whether this is a measuring child, running as a server does.
    pub fn as_server(&self) -> bool {
        self.as_server
    }

    /// The most traces the "on" side begins a second.
    pub fn traces_per_second(&self) -> u32 {
        self.traces_per_second
    }

    /// Writer `writer`'s commits, and how many events its last one is short by. When
    /// --events is not a multiple of --events-per-commit, the last commit of writer 0
    /// (which has the most commits) is short, so that exactly --events are appended.
    pub(super) fn commits_of(&self, writer: usize) -> (u64, u64) {
        let commits_total = self.events.div_ceil(self.events_per_commit as u64);
        let short_by = commits_total * self.events_per_commit as u64 - self.events;
        let commits = commits_total / self.writers as u64
            + u64::from((writer as u64) < commits_total % self.writers as u64);
        (commits, if writer == 0 { short_by } else { 0 })
    }

    /// The stream writer `writer` appends to.
    pub(super) fn stream_of(&self, writer: usize) -> String {
        match self.streams {
            Streams::Own => format!("bench-{writer}"),
            Streams::Same => "bench-shared".to_owned(),
        }
    }

    /// `--streams` as the reports name it.
    pub(super) fn streams_name(&self) -> &'static str {
        match self.streams {
            Streams::Same => "same",
            Streams::Own => "own",
        }
    }

    /// The W1 load of docs/BENCHMARKS.md: 64 writers, one event per commit, each writer
    /// on its own stream, `events` events of `payload_bytes` bytes.
    pub(super) fn w1(events: u64, payload_bytes: usize) -> AppendArgs {
        AppendArgs {
            writers: 64,
            events_per_commit: 1,
            events,
            payload_bytes,
            streams: Streams::Own,
            store: "embedded".into(),
            store_replicas: None,
            data_dir: None,
            json: true,
            compare_observability: false,
            compare_plain_jetstream: false,
            plain_in_flight: 64,
            rounds: None,
            otlp_endpoint: None,
            as_server: false,
            traces_per_second: crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND,
        }
    }
}

async fn measure(args: &AppendArgs) -> anyhow::Result<AppendReport> {
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let report = measure_on(&store, args).await;
    store.close().await;
    report
}

/// Runs the load of `args` on an open store (whatever it holds already).
pub(super) async fn measure_on(
    store: &EventStore,
    args: &AppendArgs,
) -> anyhow::Result<AppendReport> {
    if args.writers == 0 || args.events_per_commit == 0 {
        bail!("--writers and --events-per-commit must be at least 1");
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let store = store.clone();
        let (commits, last_commit_short_by) = args.commits_of(writer);
        let stream = StreamId::new(args.stream_of(writer))?;
        let (per_commit, bytes) = (args.events_per_commit as u64, args.payload_bytes);
        // A measuring child of --compare-observability runs each commit in a span of its
        // own, as a command runs in its request's span: the root of a trace, so that the
        // append is traced and exported as the sampler decides.
        let observed = args.as_server;
        let writing = async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            let mut appended = 0u64;
            for commit in 0..commits {
                let size = if commit + 1 == commits {
                    per_commit - last_commit_short_by
                } else {
                    per_commit
                };
                let events: Vec<NewEvent> = (0..size)
                    .map(|i| NewEvent::new("BenchEvent", payload(bytes, commit + i)))
                    .collect();
                let begun = Instant::now();
                let appending = store.append(&stream, ExpectedVersion::Any, events);
                if observed {
                    let span = tracing::info_span!("bench commit", writer, commit);
                    tracing::Instrument::instrument(appending, span).await?;
                } else {
                    appending.await?;
                }
                latencies.record(begun.elapsed().as_micros() as u64)?;
                appended += size;
            }
            anyhow::Ok((latencies, appended))
        };
        tasks.push(tokio::spawn(writing));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    // Only the events this run appended: the data directory may hold others already.
    let mut events = 0u64;
    for task in tasks {
        let (task_latencies, appended) = task.await??;
        latencies.add(task_latencies)?;
        events += appended;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The index is written off the acknowledgement path and may lag; time until it has
    // caught up too, for the rate the whole store sustains.
    let waiter = store.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for_index()).await??;
    let indexed_seconds = started.elapsed().as_secs_f64();
    Ok(AppendReport {
        bench: "append",
        writers: args.writers,
        events_per_commit: args.events_per_commit,
        payload_bytes: args.payload_bytes,
        streams: args.streams_name(),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data_dir: &std::path::Path, events: u64, events_per_commit: usize) -> AppendArgs {
        AppendArgs {
            writers: 2,
            events_per_commit,
            events,
            payload_bytes: 16,
            streams: Streams::Own,
            store: "embedded".into(),
            store_replicas: None,
            data_dir: Some(data_dir.to_path_buf()),
            json: true,
            compare_observability: false,
            compare_plain_jetstream: false,
            plain_in_flight: 64,
            rounds: None,
            otlp_endpoint: None,
            as_server: false,
            traces_per_second: crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND,
        }
    }

    #[tokio::test]
    async fn counts_only_the_events_it_appended() {
        let temp = tempfile::tempdir().unwrap();
        let first = measure(&args(temp.path(), 30, 3)).await.unwrap();
        assert_eq!((first.events, first.commits), (30, 10));
        // A second run on the same directory: 7 events in commits of 3 (3, 3 and 1).
        let second = measure(&args(temp.path(), 7, 3)).await.unwrap();
        assert_eq!((second.events, second.commits), (7, 3));
        let store = BenchDir::new(Some(temp.path().to_path_buf()))
            .unwrap()
            .open()
            .unwrap();
        assert_eq!(store.next_position().0, 37, "both runs are in the log");
        store.close().await;
    }
}
