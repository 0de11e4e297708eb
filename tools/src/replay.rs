//! `annals replay`: state rebuilt from the log.
//!
//! - `replay stream` folds one stream into its aggregate's state, at its head or as it
//!   was at a version, a log position or a moment ("what did order X look like at
//!   10:05"). The aggregate is chosen by the stream's category
//!   ([`api::replay::AGGREGATES`], shared with `GET /api/v1/streams/{stream_id}/state`).
//! - `replay all` rebuilds every structure derived from the log in a stopped data
//!   directory: the sled indexes, the read models, and the saga checkpoint
//!   ([`rebuild_sagas`]; the deadlines live in the saga streams and are re-armed from
//!   them when the server starts).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ::projections::offline::{self, RebuildReport};
use ::projections::{Projection, RunnerConfig};
use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use eventstore::{EventStore, StreamId};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::data_dir;
use crate::exit::Failure;
use crate::inspect::parse_stream_id;
use crate::output;
use crate::progress;
use crate::source::{EventJson, Source, SourceArgs, SourcedEvent};

#[derive(Debug, clap::Subcommand)]
pub enum ReplayCommand {
    /// Fold one stream into its aggregate's state (order-, stock- or account- streams),
    /// now or as it was at a version, a log position or a moment.
    #[command(after_help = "\
Examples:
  annals replay stream order-42                                  # the order now
  annals replay stream order-42 --as-of 2026-11-05T10:05:00Z     # the order at 10:05 UTC
  annals replay stream stock-apple --to-version 3 --events       # and the events applied
  annals replay stream account-alice --to-position 1200 --json
  annals replay stream order-42 --server http://127.0.0.1:8080   # while a server runs")]
    Stream(StreamArgs),
    /// Rebuild everything derived from the log in a stopped data directory: the indexes,
    /// the read models (and saga deadlines), with progress and a report.
    #[command(after_help = "\
Examples:
  annals replay all --data-dir ./annals-data
  annals replay all --data-dir ./annals-data --no-progress --json

The data directory must not be held by a running server: stop it first. The log is only
read; everything rebuilt is derived from it. The read models rebuilt are the six every
server keeps (orders, inventory, accounts, sales, customers, personal_data): the
correlation index is deleted with the rest of the index and not rebuilt here; a server started with --correlations builds
it again from the start of the log (or: annals projections rebuild correlations).")]
    All(AllArgs),
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The stream, e.g. order-42.
    stream: String,
    /// Stop after this stream version (0-based).
    #[arg(long, value_name = "N", conflicts_with_all = ["to_position", "as_of"])]
    to_version: Option<u64>,
    /// Stop after this log position: the stream as the log stood then.
    #[arg(long, value_name = "P", conflicts_with = "as_of")]
    to_position: Option<u64>,
    /// Only events recorded at or before this moment: RFC 3339 (2026-11-05T10:05:00Z,
    /// 2026-11-05T11:05:00+01:00) or a UTC date and time (2026-11-05T10:05:00,
    /// "2026-11-05 10:05").
    #[arg(long, value_name = "TIMESTAMP")]
    as_of: Option<String>,
    /// Also list the events applied.
    #[arg(long)]
    events: bool,
    #[command(flatten)]
    source: SourceArgs,
    /// Print one JSON object: {stream, version, position, recorded_at, head_version,
    /// events_applied, state, events?}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// The data directory (not held by a running server).
    #[arg(
        long,
        env = "ANNALS_DATA_DIR",
        default_value = "./annals-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Draw no progress bars (to measure what drawing them costs, or for logs).
    #[arg(long)]
    no_progress: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ReplayCommand) -> anyhow::Result<()> {
    data_dir::runtime()?.block_on(async {
        match command {
            ReplayCommand::Stream(args) => stream(args).await,
            ReplayCommand::All(args) => all(args).await,
        }
    })
}

/// The fold for `stream`, chosen by its category ([`api::replay::AGGREGATES`], the same
/// table `GET /api/v1/streams/{stream_id}/state` folds with).
fn fold_for(stream: &StreamId) -> anyhow::Result<api::replay::Fold> {
    api::replay::fold_for(stream)
        .map(|(_, fold)| fold)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "cannot replay {stream}: no aggregate owns the category {:?} (replay knows {} streams; `annals inspect stream {stream}` shows its events)",
                stream.category(),
                api::replay::known_prefixes().join(", ")
            ))
            .into()
        })
}

/// `events` folded by `fold`: from their raw payloads (a local read), else from the
/// view a server sent (decoded JSON, or hex).
fn fold_events(
    fold: api::replay::Fold,
    stream: &StreamId,
    events: &[SourcedEvent],
) -> anyhow::Result<serde_json::Value> {
    let to_fold: Vec<api::replay::FoldEvent<'_>> = events
        .iter()
        .map(|event| api::replay::FoldEvent {
            version: event.view.version,
            position: event.view.position,
            event_type: &event.view.event_type,
            schema_version: event.view.schema_version,
            payload: match &event.raw {
                Some(raw) => api::replay::Payload::Raw(raw),
                None => api::replay::Payload::View {
                    payload: &event.view.payload,
                    encoding: &event.view.payload_encoding,
                },
            },
        })
        .collect();
    Ok(fold(stream, &to_fold)?)
}

/// Parses `--as-of`: RFC 3339, or a date and time without an offset, taken as UTC.
pub fn parse_timestamp(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let trimmed = text.trim();
    if let Ok(moment) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(moment.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(naive.and_utc());
        }
    }
    Err(Failure::Usage(format!(
        "invalid --as-of {:?}: expected an RFC 3339 timestamp such as 2026-11-05T10:05:00Z (or a UTC date and time such as \"2026-11-05 10:05\")",
        text.chars().take(64).collect::<String>()
    ))
    .into())
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    Head,
    Version(u64),
    Position(u64),
    Moment(DateTime<Utc>),
}

impl Until {
    fn admits(&self, event: &EventJson) -> anyhow::Result<bool> {
        Ok(match self {
            Until::Head => true,
            Until::Version(version) => event.version <= *version,
            Until::Position(position) => event.position <= *position,
            Until::Moment(moment) => {
                let recorded = DateTime::parse_from_rfc3339(&event.recorded_at)
                    .with_context(|| {
                        format!(
                            "event {} has an unreadable recorded_at {:?}",
                            event.id, event.recorded_at
                        )
                    })?
                    .with_timezone(&Utc);
                recorded <= *moment
            }
        })
    }
}

/// What `replay stream --json` prints.
#[derive(Debug, Serialize)]
struct Replayed {
    /// The stream.
    stream: String,
    /// The last version applied; null when no event was (the stream did not exist yet).
    version: Option<u64>,
    /// The log position of that event.
    position: Option<u64>,
    /// When that event was recorded.
    recorded_at: Option<String>,
    /// The stream's last version now.
    head_version: u64,
    /// How many events were folded.
    events_applied: usize,
    /// The aggregate's state.
    state: serde_json::Value,
    /// The events applied, with `--events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventJson>>,
}

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let stream = parse_stream_id(&args.stream)?;
    let fold = fold_for(&stream)?;
    let until = match (args.to_version, args.to_position, &args.as_of) {
        (Some(version), _, _) => Until::Version(version),
        (_, Some(position), _) => Until::Position(position),
        (_, _, Some(moment)) => Until::Moment(parse_timestamp(moment)?),
        _ => Until::Head,
    };
    let source = Source::open(&args.source)?;
    let erased = crate::erased::Erased::load(&args.source);
    // Only as many events as the cut can need are read.
    let limit = match until {
        Until::Version(version) => Some(version.saturating_add(1)),
        _ => None,
    };
    let read = source.stream(&stream, 0, limit).await;
    source.close().await;
    let (head, events) = read?;
    if let Until::Version(version) = until
        && version > head
    {
        return Err(Failure::NotFound(format!(
            "stream {stream} has no version {version}: its last version is {head}"
        ))
        .into());
    }
    let mut applied = Vec::with_capacity(events.len());
    for event in events {
        if !until.admits(&event.view)? {
            break;
        }
        applied.push(event);
    }
    let mut state = fold_events(fold, &stream, &applied)?;
    erased.mark(&mut state);
    for event in &mut applied {
        erased.mark_event(&mut event.view);
    }
    let last = applied.last().map(|event| &event.view);
    let replayed = Replayed {
        stream: stream.to_string(),
        version: last.map(|event| event.version),
        position: last.map(|event| event.position),
        recorded_at: last.map(|event| event.recorded_at.clone()),
        head_version: head,
        events_applied: applied.len(),
        state,
        events: args
            .events
            .then(|| applied.iter().map(|event| event.view.clone()).collect()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&replayed)?);
        return Ok(());
    }
    let cut = match until {
        Until::Head => String::new(),
        Until::Version(version) => format!(" (--to-version {version})"),
        Until::Position(position) => format!(" (--to-position {position})"),
        Until::Moment(moment) => format!(
            " (--as-of {})",
            moment.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        ),
    };
    match (replayed.version, replayed.position, &replayed.recorded_at) {
        (Some(version), Some(position), Some(recorded_at)) => println!(
            "{stream} at version {version} of {head}{cut}: position {position}, recorded {recorded_at}; {} applied",
            match replayed.events_applied {
                1 => "1 event".to_owned(),
                count => format!("{count} events"),
            }
        ),
        _ => println!("{stream} had no events yet{cut}: the state before its first event"),
    }
    if let Some(events) = &replayed.events {
        println!("\nevents applied:");
        print!("{}", output::event_table(events, false));
    }
    println!(
        "\nstate:\n{}",
        serde_json::to_string_pretty(&replayed.state)?
    );
    Ok(())
}

/// What `replay all` rebuilt.
#[derive(Debug, Serialize)]
struct AllReport {
    /// Events in the log.
    events: u64,
    /// Streams in the log.
    streams: usize,
    /// Bytes of log read to rebuild the index.
    log_bytes: u64,
    /// Seconds spent rebuilding the index (stream and id indexes, heads).
    index_seconds: f64,
    /// The read models rebuilt.
    read_models: Vec<RebuiltModel>,
    /// Seconds spent rebuilding the read models.
    read_models_seconds: f64,
    /// The fulfilment saga: instances, unfinished ones, pending deadlines, checkpoint.
    sagas: sagas::driver::CheckpointRebuild,
    /// Seconds in all.
    seconds: f64,
    /// Events per second over the whole rebuild.
    events_per_second: f64,
}

#[derive(Debug, Serialize)]
struct RebuiltModel {
    name: String,
    version: u32,
    build: u32,
    checkpoint: u64,
}

fn bar_or_hidden(no_progress: bool, bar: impl FnOnce() -> ProgressBar) -> ProgressBar {
    if no_progress {
        ProgressBar::hidden()
    } else {
        bar()
    }
}

async fn all(args: AllArgs) -> anyhow::Result<()> {
    data_dir::check_existing(&args.data_dir)?;
    let started = Instant::now();

    // 1. The index: emptied and rebuilt from the whole log, the lock held throughout.
    let bar = bar_or_hidden(args.no_progress, progress::bytes_bar);
    bar.set_message("rebuilding the index");
    let dir = args.data_dir.clone();
    let store = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || {
            let mut log_bytes = 0;
            EventStore::open_rebuilding_index(
                &dir,
                data_dir::offline_config(),
                &mut |done, total| {
                    log_bytes = total;
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )
            .map(|store| (store, log_bytes))
        })
        .await?
    };
    bar.finish_and_clear();
    let (store, log_bytes) =
        store.with_context(|| format!("cannot open {}", args.data_dir.display()))?;
    let index_seconds = started.elapsed().as_secs_f64();

    let result = rebuild_derived(&store, &args).await;
    store.close().await;
    let (events, streams, models, read_models_seconds, sagas) = result?;
    let seconds = started.elapsed().as_secs_f64();
    let report = AllReport {
        events,
        streams,
        log_bytes,
        index_seconds,
        read_models: models
            .rebuilt
            .iter()
            .map(|rebuilt| RebuiltModel {
                name: rebuilt.name.clone(),
                version: rebuilt.version,
                build: rebuilt.build,
                checkpoint: rebuilt.checkpoint.0,
            })
            .collect(),
        read_models_seconds,
        sagas,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "index: {} events in {} streams ({:.1} MiB of log) in {:.2} s",
        report.events,
        report.streams,
        report.log_bytes as f64 / (1 << 20) as f64,
        report.index_seconds
    );
    let names: Vec<String> = report
        .read_models
        .iter()
        .map(|model| format!("{} v{}", model.name, model.version))
        .collect();
    println!(
        "read models: {} up to position {} in {:.2} s",
        names.join(", "),
        report.events,
        report.read_models_seconds
    );
    println!(
        "sagas: {} fulfilment instances, {} unfinished with {} deadlines pending (they resume when the server starts, from position {})",
        report.sagas.instances,
        report.sagas.unfinished,
        report.sagas.pending_deadlines,
        report.sagas.checkpoint
    );
    println!(
        "rebuilt in {:.2} s = {:.0} events/s",
        report.seconds, report.events_per_second
    );
    Ok(())
}

type Derived = (
    u64,
    usize,
    RebuildReport,
    f64,
    sagas::driver::CheckpointRebuild,
);

/// Steps 2 and 3 of `replay all`, on the store with its index rebuilt.
async fn rebuild_derived(store: &EventStore, args: &AllArgs) -> anyhow::Result<Derived> {
    let events = store.next_position().0;
    let lister = store.clone();
    let streams = tokio::task::spawn_blocking(move || lister.streams(None))
        .await??
        .len();

    // 2. The read models, all in one pass over the log, switched in blue-green.
    let started = Instant::now();
    let bar = bar_or_hidden(args.no_progress, || progress::bar(events, "events"));
    bar.set_message("rebuilding the read models");
    let reader = store.clone();
    let models_bar = bar.clone();
    let models = tokio::task::spawn_blocking(move || {
        // The read models every server keeps: the index (with any `correlations`) was
        // just deleted, and a server started with `--correlations` builds it again.
        let all: Vec<Arc<dyn Projection>> = read_models::projections();
        offline::rebuild(&reader, &all, &RunnerConfig::default(), &|done, _| {
            models_bar.set_position(done)
        })
    })
    .await?
    .context("the read models could not be rebuilt")?;
    bar.finish_and_clear();
    let read_models_seconds = started.elapsed().as_secs_f64();

    // 3. The sagas.
    let sagas = rebuild_sagas(store, args.no_progress).await?;
    Ok((events, streams, models, read_models_seconds, sagas))
}

/// The fulfilment saga's checkpoint, derived from its streams: where its driver reads
/// the log from at the next start, so that every unfinished instance resumes (issuing
/// its unanswered commands again) and re-arms its deadlines, which are recorded in its
/// stream.
async fn rebuild_sagas(
    store: &EventStore,
    no_progress: bool,
) -> anyhow::Result<sagas::driver::CheckpointRebuild> {
    let bar = bar_or_hidden(no_progress, || progress::counter("sagas"));
    bar.set_message("reading the saga streams");
    let (store, counter) = (store.clone(), bar.clone());
    let rebuilt = tokio::task::spawn_blocking(move || {
        sagas::driver::rebuild_checkpoint::<sagas::Fulfilment>(&store, &|n| counter.set_position(n))
    })
    .await?
    .context("the saga checkpoint could not be rebuilt")?;
    bar.finish_and_clear();
    Ok(rebuilt)
}
