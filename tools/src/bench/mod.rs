//! `annals bench`: benchmarks of the store, each printing events/s and commit latency
//! percentiles (or one JSON object per run with `--json`). Every append is fsync'd
//! before it is acknowledged, exactly as in production.
//!
//! One module per benchmark, each with its clap `Args`, its JSON report and a `run`;
//! this module holds the subcommand enum and what they share (the data directory,
//! milliseconds from a histogram's microseconds); [`workload`] is what they write, and
//! [`http_load`] what the benches that drive a server over HTTP share.

use std::path::PathBuf;

use anyhow::Context;
use eventstore::{EventStore, StoreConfig};

pub mod append;
mod append_jetstream;
mod contend;
mod http;
pub(crate) mod http_load;
mod otlp_sink;
mod overload;
mod policy;
mod rebuild;
mod relay;
mod replay;
mod saga;
mod saga_jetstream;
mod scale;
mod workload;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Concurrent writers appending fsync'd commits: events/s and commit latency.
    Append(append::AppendArgs),
    /// Read the whole log back, decoding every event: events/s.
    Replay(replay::ReplayArgs),
    /// Writers racing on one stream with exact expected versions: commits/s and
    /// conflicts/s, and a check that no version was assigned twice.
    Contend(contend::ContendArgs),
    /// The outbox relay against a real NATS server: publish throughput of a backlog,
    /// then end-to-end lag (commit to JetStream acknowledgement) at a given write rate.
    Relay(relay::RelayArgs),
    /// Place orders through a running `annals serve` from many connections:
    /// commands/s and latency percentiles.
    Http(http::HttpArgs),
    /// Interactive orders alone, then under a flood of bulk requests (rebuilds, exports,
    /// 1,000-event log pages): p50/p99 and errors of each, and whether the p99 under the
    /// flood stays within 2x (the intent lanes' target).
    Overload(overload::OverloadArgs),
    /// Decisions of the policy gatekeeper over a mix of roles and actions, on one
    /// thread and on two: decisions/s and latency percentiles.
    Policy(policy::PolicyArgs),
    /// Seed a domain workload (skus, accounts, orders placed, confirmed and cancelled)
    /// and time a rebuild of the four default read models from it: events/s.
    Rebuild(rebuild::RebuildArgs),
    /// The fulfilment saga end to end, in process: orders placed -> reserved, charged,
    /// confirmed; completed orders/s and placed-to-confirmed latency. With
    /// `--store nats://...`, on `--nodes` nodes sharing a JetStream stream.
    Saga(saga::SagaArgs),
    /// Seed a large log, then measure in a fresh process: open time, resident memory
    /// after open, and the W1 append rate on it against an empty log.
    Scale(scale::ScaleArgs),
    /// The measuring child process of `bench scale` (not for direct use).
    #[command(hide = true)]
    ScaleChild(scale::ScaleChildArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            BenchCommand::Append(args) => append::run(args).await,
            BenchCommand::Replay(args) => replay::run(args).await,
            BenchCommand::Contend(args) => contend::run(args).await,
            BenchCommand::Relay(args) => relay::run(args).await,
            BenchCommand::Rebuild(args) => rebuild::run(args).await,
            BenchCommand::Http(args) => http::run(args).await,
            BenchCommand::Overload(args) => overload::run(args).await,
            BenchCommand::Policy(args) => policy::run(args).await,
            BenchCommand::Saga(args) => saga::run(args).await,
            BenchCommand::Scale(args) => scale::run(args).await,
            BenchCommand::ScaleChild(args) => scale::child(args).await,
        }
    })
}

/// A data directory: the one given, or a temporary one that lives as long as this.
struct BenchDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl BenchDir {
    fn new(given: Option<PathBuf>) -> anyhow::Result<Self> {
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

    fn open(&self) -> anyhow::Result<EventStore> {
        EventStore::open(&self.path, StoreConfig::default())
            .with_context(|| format!("cannot open {}", self.path.display()))
    }
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}
