//! `annals projections` (alias `annals read-models`): the read models of a stopped
//! store (list them, rebuild them), and the poison events of a running server's read
//! models (`parked` lists the events a read model parked, `retry` applies them again
//! and resumes a faulted read model; both with `--server URL`).

use std::path::PathBuf;
use std::sync::Arc;

use ::projections::offline::{self, RebuildReport};
use ::projections::{Projection, RunnerConfig, State, Status};
use anyhow::{Context, bail};
use eventstore::EventStore;
use read_models::{ACCOUNTS, CORRELATIONS, CUSTOMERS, INVENTORY, ORDERS, PERSONAL_DATA, SALES};

use crate::progress;
use crate::servers::{Repeat, Servers};
use hyper::Method;

/// Events a `list` applies as a dry run after each checkpoint, to find a poison event.
const PROBE_EVENTS: u64 = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Show each read model: version, active version, checkpoint, lag, state (the six
    /// every server keeps, and `correlations` if the data directory holds it).
    List(ListArgs),
    /// Rebuild a read model (or `all`) from the log, blue-green: the new model builds
    /// beside the active one and replaces it once complete. `all` is the six every
    /// server keeps, and `correlations` if the data directory holds it (a server ran with
    /// `--correlations`); `correlations` by name builds it in any case.
    Rebuild(RebuildArgs),
    /// List the events a read model of a running server parked (poison events it could
    /// not apply and went past, under `annals serve --poison-events park`).
    #[command(after_help = "Examples:
  annals read-models parked orders --server http://127.0.0.1:8080
  annals read-models parked orders --server nats://127.0.0.1:4222   # a node found there")]
    Parked(RemoteArgs),
    /// Retry a read model of a running server: apply its parked events again (those that
    /// succeed leave the list), and resume it from the event it failed on if faulted.
    #[command(after_help = "Examples:
  annals read-models retry orders --server http://127.0.0.1:8080
  annals read-models retry orders --server nats://127.0.0.1:4222    # a node found there")]
    Retry(RemoteArgs),
}

#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The read model, e.g. orders.
    name: String,
    /// The running server, e.g. http://127.0.0.1:8080 or https://annals.example:8443; or
    /// nats://HOST:PORT[,...]: the nodes registered there for service discovery, a ready
    /// one first, the next if one cannot be reached, does not answer in time or answers
    /// 5xx. Each node keeps its own read models: the answer is that node's.
    #[arg(long, env = "ANNALS_SERVER", value_name = "URL")]
    server: String,
    /// The token and CA the --server client uses.
    #[command(flatten)]
    client: crate::remote::ClientArgs,
    /// Print the server's JSON answer instead of text.
    #[arg(long)]
    json: bool,
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
    #[arg(value_parser = [ORDERS, INVENTORY, ACCOUNTS, SALES, CUSTOMERS, PERSONAL_DATA, CORRELATIONS, "all"])]
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
            ProjectionsCommand::Parked(args) => parked(args).await,
            ProjectionsCommand::Retry(args) => retry(args).await,
        }
    })
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<EventStore> {
    crate::data_dir::open_existing(data_dir)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = open(&args.data_dir)?;
    // The default read models, and `correlations` if a server kept it here.
    let statuses = read_models::stored_projections(&store)
        .and_then(|kept| offline::statuses(&store, &kept, PROBE_EVENTS));
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
    // By name: any read model, `correlations` included.
    let named: Vec<Arc<dyn Projection>> = read_models::all_projections()
        .into_iter()
        .filter(|p| p.name() == args.name)
        .collect();
    if named.is_empty() && args.name != "all" {
        bail!("no read model is named {:?}", args.name);
    }
    let store = open(&args.data_dir)?;
    // `all`: the default read models, and `correlations` if a server kept it here.
    let chosen = if args.name == "all" {
        match read_models::stored_projections(&store) {
            Ok(kept) => kept,
            Err(error) => {
                store.close().await;
                return Err(error.into());
            }
        }
    } else {
        named
    };
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

/// How long connecting to the server, and its answer, may take.
const SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET` (or `POST`) `/api/v1/projections/{name}/{action}` on the `--server`, as JSON;
/// a refusal or an error status is a [`crate::exit::Failure`] (404: no such read model, exit 7; the
/// rest exit 8). Through `nats://` it goes to a node that answers: both are safe to send
/// twice (a retried event that applied leaves the parked list in the same write, so a
/// second retry does not apply it again), and each node keeps its own read models. Also
/// gives ` on node ID at URL` for messages when the node was found on NATS (else "").
async fn remote(
    args: &RemoteArgs,
    post: bool,
    action: &str,
) -> anyhow::Result<(serde_json::Value, String)> {
    let servers = Servers::new(&args.server, &args.client, SERVER_TIMEOUT)?;
    let method = if post { Method::POST } else { Method::GET };
    let path = crate::servers::path(&["api", "v1", "projections", &args.name, action], &[]);
    let (answer, node) = servers.json(method, &path, None, Repeat::Safe).await?;
    let on = if servers.is_cluster() {
        format!(" on {}", node.name)
    } else {
        String::new()
    };
    Ok((answer, on))
}

async fn parked(args: RemoteArgs) -> anyhow::Result<()> {
    let (answer, on) = remote(&args, false, "parked").await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let parked = answer["parked"].as_array().cloned().unwrap_or_default();
    if parked.is_empty() {
        println!("{}{on} has parked no events", args.name);
        return Ok(());
    }
    if !on.is_empty() {
        println!("the events {}{on} parked:", args.name);
    }
    println!(
        "{:>12}  {:<24} {:<20} {:<27}  ERROR",
        "POSITION", "STREAM", "TYPE", "PARKED AT"
    );
    for event in &parked {
        println!(
            "{:>12}  {:<24} {:<20} {:<27}  {}",
            event["position"],
            event["stream"].as_str().unwrap_or_default(),
            event["event_type"].as_str().unwrap_or_default(),
            event["parked_at"].as_str().unwrap_or_default(),
            event["error"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

async fn retry(args: RemoteArgs) -> anyhow::Result<()> {
    let (answer, on) = remote(&args, true, "retry").await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let count = |field: &str| answer[field].as_u64().unwrap_or_default();
    println!(
        "{}{on}: retried {} parked events, {} applied, {} still parked{}",
        args.name,
        count("retried"),
        count("applied"),
        count("parked"),
        if answer["resumed"].as_bool() == Some(true) {
            "; resumed from the event it had failed on"
        } else {
            ""
        }
    );
    Ok(())
}
