//! `annals inspect`: look at streams, the log and single events, payloads decoded to
//! JSON, from a stopped data directory or through a running server (`--server URL`).
//!
//! Human output is a table; `--json` prints NDJSON (one JSON object per line: per
//! stream, per event), the event objects shaped as the HTTP API's.

use std::io::Write;

use anyhow::Context;
use eventstore::StreamId;

use crate::data_dir;
use crate::erased::Erased;
use crate::exit::Failure;
use crate::output;
use crate::source::{EventJson, Source, SourceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum InspectCommand {
    /// List the streams (optionally of one category) with their last version.
    #[command(after_help = "\
Examples:
  annals inspect streams --data-dir ./annals-data
  annals inspect streams --category order --json
  annals inspect streams --server http://127.0.0.1:8080")]
    Streams(StreamsArgs),
    /// Show the events of one stream, oldest first.
    #[command(after_help = "\
Examples:
  annals inspect stream order-42 --data-dir ./annals-data
  annals inspect stream stock-apple --from 10 --limit 5 --json")]
    Stream(StreamArgs),
    /// Show the log (every stream) in position order from a position.
    #[command(after_help = "\
Examples:
  annals inspect log --from 0 --limit 20
  annals inspect log --from 1000 --limit 100 --json | jq .type")]
    Log(LogArgs),
    /// Show one event by its id: envelope, metadata and payload.
    #[command(after_help = "\
Example:
  annals inspect event 0193a4e2-7c1d-7b3e-9f00-1234567890ab")]
    Event(EventArgs),
    /// Follow the log live: the events from a position (by default, new ones only) as
    /// they are committed. Stop with Ctrl-C, or after --limit events.
    #[command(after_help = "\
Examples:
  annals inspect tail --server http://127.0.0.1:8080
  annals inspect tail --server http://127.0.0.1:8080 --from 0 --json")]
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// Only the streams of this category: the part of the id before the first `-`.
    #[arg(long)]
    category: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print NDJSON: one {"stream", "last_version"} object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The stream, e.g. order-42.
    stream: String,
    /// The first version to show.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// How many events at most [default: all].
    #[arg(long)]
    limit: Option<u64>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print NDJSON: one event object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The first position to show.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// How many events at most.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    #[command(flatten)]
    source: SourceArgs,
    /// Print NDJSON: one event object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// The event id (a UUID v7).
    id: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Print the event as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The first position to show [default: the end of the log: new events only].
    #[arg(long)]
    from: Option<u64>,
    /// Stop after this many events [default: follow until interrupted].
    #[arg(long)]
    limit: Option<u64>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print NDJSON: one event object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(command: InspectCommand) -> anyhow::Result<()> {
    data_dir::runtime()?.block_on(async {
        let source_args = match &command {
            InspectCommand::Streams(args) => &args.source,
            InspectCommand::Stream(args) => &args.source,
            InspectCommand::Log(args) => &args.source,
            InspectCommand::Event(args) => &args.source,
            InspectCommand::Tail(args) => &args.source,
        };
        let source = Source::open(source_args)?;
        let erased = Erased::load(source_args);
        let result = match command {
            InspectCommand::Streams(args) => streams(&source, args).await,
            InspectCommand::Stream(args) => stream(&source, args, &erased).await,
            InspectCommand::Log(args) => log(&source, args, &erased).await,
            InspectCommand::Event(args) => event(&source, args, &erased).await,
            InspectCommand::Tail(args) => tail(&source, args, &erased).await,
        };
        source.close().await;
        result
    })
}

/// Writes `text` to stdout; false when the reader has gone (`| head`), which ends the
/// command quietly.
fn write_out(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("cannot write to stdout"),
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    write_out(text).map(|_| ())
}

fn ndjson_line<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    Ok(line)
}

async fn streams(source: &Source, args: StreamsArgs) -> anyhow::Result<()> {
    let streams = source.streams(args.category.as_deref()).await?;
    if args.json {
        let mut text = String::new();
        for (stream, last_version) in &streams {
            text.push_str(&ndjson_line(
                &serde_json::json!({"stream": stream, "last_version": last_version}),
            )?);
        }
        return print(&text);
    }
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|(stream, last_version)| vec![stream.clone(), last_version.to_string()])
        .collect();
    print(&output::table(&["STREAM", "LAST VERSION"], &[1], &rows))
}

/// A stream id from the command line; a malformed one is bad usage.
pub fn parse_stream_id(text: &str) -> anyhow::Result<StreamId> {
    StreamId::new(text).map_err(|error| Failure::Usage(error.to_string()).into())
}

async fn stream(source: &Source, args: StreamArgs, erased: &Erased) -> anyhow::Result<()> {
    let stream = parse_stream_id(&args.stream)?;
    let (_, events) = source.stream(&stream, args.from, args.limit).await?;
    let events: Vec<EventJson> = events
        .into_iter()
        .map(|event| {
            let mut view = event.view;
            erased.mark_event(&mut view);
            view
        })
        .collect();
    print_events(&events, false, args.json)
}

fn print_events(events: &[EventJson], with_stream: bool, json: bool) -> anyhow::Result<()> {
    if json {
        let mut text = String::new();
        for event in events {
            text.push_str(&ndjson_line(event)?);
        }
        return print(&text);
    }
    print(&output::event_table(events, with_stream))
}

async fn log(source: &Source, args: LogArgs, erased: &Erased) -> anyhow::Result<()> {
    let mut events = Vec::new();
    source
        .log(args.from, args.limit, &mut |mut event| {
            erased.mark_event(&mut event);
            events.push(event);
            Ok(())
        })
        .await?;
    print_events(&events, true, args.json)
}

async fn event(source: &Source, args: EventArgs, erased: &Erased) -> anyhow::Result<()> {
    let mut event = source.event(&args.id).await?;
    erased.mark_event(&mut event);
    if args.json {
        return print(&ndjson_line(&event)?);
    }
    print(&output::event_details(&event))
}

async fn tail(source: &Source, args: TailArgs, erased: &Erased) -> anyhow::Result<()> {
    let limit = args.limit.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    let mut seen = 0u64;
    source
        .tail(args.from, &mut |mut event| {
            erased.mark_event(&mut event);
            let line = if args.json {
                ndjson_line(&event)?
            } else {
                format!("{}\n", output::event_line(&event))
            };
            seen += 1;
            Ok(write_out(&line)? && seen < limit)
        })
        .await
}
