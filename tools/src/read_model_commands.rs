//! `annals projections`: the read models of a stopped store: list them, rebuild them.

use std::path::PathBuf;
use std::sync::Arc;

use ::projections::offline::{self, RebuildReport};
use ::projections::{Projection, RunnerConfig, State, Status};
use anyhow::{Context, bail};
use eventstore::EventStore;
use read_models::{ACCOUNTS, INVENTORY, ORDERS, SALES};

use crate::progress;

/// Events a `list` applies as a dry run after each checkpoint, to find a poison event.
const PROBE_EVENTS: u64 = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Show each read model: version, active version, checkpoint, lag, state.
    List(ListArgs),
    /// Rebuild a read model (or `all`) from the log, blue-green: the new model builds
    /// beside the active one and replaces it once complete.
    Rebuild(RebuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The data directory (not held by a running server).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// The read model to rebuild, or all of them.
    #[arg(value_parser = [ORDERS, INVENTORY, ACCOUNTS, SALES, "all"])]
    name: String,
    /// The data directory (not held by a running server).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    // The store's subscriptions and close need a runtime, though this work is blocking.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            ProjectionsCommand::List(args) => list(args).await,
            ProjectionsCommand::Rebuild(args) => rebuild(args).await,
        }
    })
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<EventStore> {
    crate::data_dir::open_existing(data_dir)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = open(&args.data_dir)?;
    let statuses = offline::statuses(&store, &read_models::projections(), PROBE_EVENTS);
    store.close().await;
    let statuses = statuses?;
    if args.json {
        println!("{}", serde_json::to_string(&statuses)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>7} {:>7} {:>12} {:>12}  STATE",
        "NAME", "VERSION", "ACTIVE", "CHECKPOINT", "LAG"
    );
    for status in &statuses {
        println!(
            "{:<12} {:>7} {:>7} {:>12} {:>12}  {}",
            status.name,
            status.version,
            active(status),
            status.checkpoint,
            status.lag,
            state(status)
        );
    }
    Ok(())
}

fn active(status: &Status) -> String {
    match (status.active_version, status.active_build) {
        (Some(version), Some(0)) => version.to_string(),
        (Some(version), Some(build)) => format!("{version}.{build}"),
        _ => "-".into(),
    }
}

fn state(status: &Status) -> String {
    let mut text = match &status.state {
        State::CatchingUp => "catching up".to_owned(),
        State::Live => "live".to_owned(),
        State::Outdated => format!(
            "outdated: built by another version, rebuilt at the next start (code is v{})",
            status.version
        ),
        State::Faulted { .. } => status
            .state
            .fault()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        State::Stopped if status.active_version.is_none() => "never built".to_owned(),
        State::Stopped => "stopped".to_owned(),
    };
    if let Some(rebuild) = &status.rebuild {
        text.push_str(&format!(
            "; an interrupted rebuild of v{} stands at {}",
            rebuild.version, rebuild.checkpoint
        ));
    }
    text
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let all = read_models::projections();
    let chosen: Vec<Arc<dyn Projection>> = if args.name == "all" {
        all
    } else {
        all.into_iter().filter(|p| p.name() == args.name).collect()
    };
    if chosen.is_empty() {
        bail!("no read model is named {:?}", args.name);
    }
    let store = open(&args.data_dir)?;
    let bar = progress::bar(store.next_position().0, "events");
    bar.set_message(format!("rebuilding {}", args.name));
    let report = rebuild_with_progress(&store, &chosen, &bar);
    bar.finish_and_clear();
    store.close().await;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for rebuilt in &report.rebuilt {
        println!(
            "rebuilt {} v{} (build {}) up to position {}",
            rebuilt.name, rebuilt.version, rebuilt.build, rebuilt.checkpoint
        );
    }
    println!(
        "{} events in {:.2} s = {:.0} events/s",
        report.events,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9)
    );
    Ok(())
}

/// [`offline::rebuild`] with the default limits, moving `bar` as it goes.
pub fn rebuild_with_progress(
    store: &EventStore,
    chosen: &[Arc<dyn Projection>],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<RebuildReport> {
    offline::rebuild(store, chosen, &RunnerConfig::default(), &|done, _| {
        bar.set_position(done)
    })
    .context("rebuild failed")
}
