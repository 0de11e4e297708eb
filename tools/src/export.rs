//! `annals export` and `annals import`: the whole log as an NDJSON file and back, losslessly
//! (the format is docs/EXPORT.md). An import into an empty data directory reproduces the
//! log exactly: the same ids, positions, versions, times, metadata, payload bytes and
//! append boundaries, hence the same hash chain, which the import checks against the
//! head hash the export recorded.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use eventstore::{
    EventId, EventStore, Metadata, Position, RecordedEvent, StoreConfig, StreamId, Version,
};
use serde::{Deserialize, Serialize};

use crate::data_dir;
use crate::exit::Failure;
use crate::progress;

/// The `format` member of an export's header line.
pub const FORMAT: &str = "annals-export";
/// The version of the format this code writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;
/// Events read from the log per read while exporting.
const READ_EVENTS: usize = 4096;
/// Events gathered before an import hands them to the store (cut at an append boundary).
const IMPORT_BATCH_EVENTS: usize = 4096;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  annals export --data-dir ./annals-data --to annals.ndjson
  annals export --data-dir ./annals-data --to - | gzip > annals.ndjson.gz

The format (NDJSON: a header line, then one line per event) is described in docs/EXPORT.md.
The data directory must not be held by a running server: stop it first.")]
pub struct ExportArgs {
    /// The data directory to export (not held by a running server).
    #[arg(
        long,
        env = "ANNALS_DATA_DIR",
        default_value = "./annals-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// The file to write (`-`: standard output). It is written beside, then renamed into
    /// place once complete.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Draw no progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  annals import annals.ndjson --data-dir ./restored
  gunzip -c annals.ndjson.gz | annals import - --data-dir ./restored

The data directory must be new or hold no events. After the import the whole log is
verified and its head hash compared with the one the export recorded.")]
pub struct ImportArgs {
    /// The export file to read (`-`: standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory to fill: new (it is created) or without events.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Draw no progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Events that follow: the log's positions `0..events`.
    pub events: u64,
    /// The hash of the last record (hex), which commits to the whole log: an import
    /// that reproduces the log reproduces this hash.
    pub head_hash: String,
    /// When the export was made (RFC 3339, UTC).
    pub exported_at: String,
}

/// One event line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    /// Its position in the log.
    pub position: u64,
    /// The event id (UUID v7).
    pub id: uuid::Uuid,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The schema version of its payload.
    pub schema_version: u32,
    /// When it was recorded: RFC 3339, UTC, exactly six fractional digits (the log keeps
    /// microseconds).
    pub recorded_at: String,
    /// Correlation, causation, traceparent, principal, command id (null: not set).
    pub metadata: Metadata,
    /// The payload bytes as lower-case hex (the postcard encoding, exactly as stored).
    pub payload: String,
    /// Whether it ends the append that wrote it.
    pub last_in_commit: bool,
}

impl ExportedEvent {
    fn of(event: &RecordedEvent) -> Self {
        ExportedEvent {
            position: event.position.0,
            id: event.id.as_uuid(),
            stream: event.stream_id.to_string(),
            version: event.version.0,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            metadata: event.metadata.clone(),
            payload: api::events::hex(&event.payload),
            last_in_commit: event.last_in_commit,
        }
    }

    fn into_recorded(self) -> Result<RecordedEvent, String> {
        let recorded_at = DateTime::parse_from_rfc3339(&self.recorded_at)
            .map_err(|error| format!("bad recorded_at {:?}: {error}", self.recorded_at))?
            .with_timezone(&Utc);
        Ok(RecordedEvent {
            id: EventId::from_uuid(self.id).map_err(|error| error.to_string())?,
            stream_id: StreamId::new(&self.stream).map_err(|error| error.to_string())?,
            version: Version(self.version),
            position: Position(self.position),
            event_type: self.event_type,
            schema_version: self.schema_version,
            recorded_at,
            metadata: self.metadata,
            payload: from_hex(&self.payload).ok_or("the payload is not hex")?,
            last_in_commit: self.last_in_commit,
        })
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

fn bar(no_progress: bool, total: u64, message: &'static str) -> indicatif::ProgressBar {
    if no_progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = progress::bar(total, "events");
    bar.set_message(message);
    bar
}

/// What `export` did.
#[derive(Debug, Serialize)]
struct ExportReport {
    events: u64,
    bytes: u64,
    head_hash: String,
    file: String,
    seconds: f64,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    data_dir::runtime()?.block_on(async {
        let store = data_dir::open_existing(&args.data_dir)?;
        let result = export_store(&store, &args);
        store.close().await;
        let report = result?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if args.to.as_os_str() != "-" {
            println!(
                "exported {} events ({} bytes) to {} in {:.2} s; head hash {}",
                report.events, report.bytes, report.file, report.seconds, report.head_hash
            );
        }
        Ok(())
    })
}

fn export_store(store: &EventStore, args: &ExportArgs) -> anyhow::Result<ExportReport> {
    let started = Instant::now();
    // Verify first: a damaged log is not exported, and the head hash goes in the header.
    let events = store.next_position().0;
    let verifying = bar(args.no_progress, events, "verifying");
    let verified = store.verify_with_progress(&mut |done, _| verifying.set_position(done));
    verifying.finish_and_clear();
    let verified = verified.context("the log does not verify, so it is not exported")?;
    let header = Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        events: verified.events,
        head_hash: verified.head_hash.clone(),
        exported_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    };
    let to_stdout = args.to.as_os_str() == "-";
    let partial = partial_path(&args.to);
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        )
    };
    let mut out = CountingWriter {
        inner: BufWriter::with_capacity(1 << 20, sink),
        bytes: 0,
    };
    let exporting = bar(args.no_progress, header.events, "exporting");
    let written = write_export(store, &header, &mut out, &exporting);
    exporting.finish_and_clear();
    let written = written.and_then(|()| out.inner.flush().context("cannot write the export"));
    if let Err(error) = written {
        if !to_stdout {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(error);
    }
    let bytes = out.bytes;
    drop(out);
    if !to_stdout {
        File::open(&partial)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot sync {}", partial.display()))?;
        std::fs::rename(&partial, &args.to)
            .with_context(|| format!("cannot rename the export to {}", args.to.display()))?;
    }
    Ok(ExportReport {
        events: header.events,
        bytes,
        head_hash: header.head_hash,
        file: args.to.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where an export is written until it is complete: `<file>.partial`.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn write_export(
    store: &EventStore,
    header: &Header,
    out: &mut impl Write,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let write_error = || "cannot write the export";
    serde_json::to_writer(&mut *out, header).context("cannot encode the header")?;
    out.write_all(b"\n").with_context(write_error)?;
    let mut next = Position(0);
    while next.0 < header.events {
        let want = READ_EVENTS.min((header.events - next.0) as usize);
        let events = store.read_all(next, want)?;
        let Some(last) = events.last() else {
            anyhow::bail!("the log ended at position {next}, before {}", header.events);
        };
        next = last.position.next();
        for event in &events {
            serde_json::to_writer(&mut *out, &ExportedEvent::of(event))
                .context("cannot encode an event")?;
            out.write_all(b"\n").with_context(write_error)?;
        }
        bar.set_position(next.0);
    }
    Ok(())
}

/// A writer that counts the bytes through it.
struct CountingWriter<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What `import` did.
#[derive(Debug, Serialize)]
struct ImportReport {
    events: u64,
    head_hash: String,
    verified: bool,
    data_dir: String,
    seconds: f64,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let source: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin().lock()))
        } else {
            let file = File::open(&args.file)
                .with_context(|| format!("cannot open the export {}", args.file.display()))?;
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        let mut lines = source.lines().enumerate();
        let header = read_header(&mut lines, &args.file)?;
        let store = EventStore::open(&args.data_dir, StoreConfig::default())
            .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
        let result = import_into(&store, &header, &mut lines, &args).await;
        store.close().await;
        let report = result?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "imported {} events into {} in {:.2} s; verified, head hash {} as exported",
                report.events, report.data_dir, report.seconds, report.head_hash
            );
        }
        Ok(())
    })
}

type Lines<'a> = std::iter::Enumerate<std::io::Lines<Box<dyn BufRead + 'a>>>;

fn damaged(file: &Path, line: usize, reason: impl std::fmt::Display) -> anyhow::Error {
    Failure::Corrupt(format!("{} line {}: {reason}", file.display(), line + 1)).into()
}

fn read_header(lines: &mut Lines<'_>, file: &Path) -> anyhow::Result<Header> {
    let Some((number, line)) = lines.next() else {
        return Err(damaged(file, 0, "the file is empty, not an Annals export"));
    };
    let line = line.with_context(|| format!("cannot read {}", file.display()))?;
    let header: Header = serde_json::from_str(&line)
        .ok()
        .filter(|header: &Header| header.format == FORMAT)
        .ok_or_else(|| damaged(file, number, "not an Annals export header"))?;
    if header.version > FORMAT_VERSION {
        return Err(Failure::Usage(format!(
            "{} is format version {}; this annals reads up to version {FORMAT_VERSION}",
            file.display(),
            header.version
        ))
        .into());
    }
    Ok(header)
}

async fn import_into(
    store: &EventStore,
    header: &Header,
    lines: &mut Lines<'_>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let existing = store.next_position().0;
    if existing > 0 {
        return Err(Failure::Usage(format!(
            "{} already holds {existing} events; import into a new or empty data directory",
            args.data_dir.display()
        ))
        .into());
    }
    let importing = bar(args.no_progress, header.events, "importing");
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(IMPORT_BATCH_EVENTS);
    let mut expected = 0u64;
    for (number, line) in lines {
        let line = line.with_context(|| format!("cannot read {}", args.file.display()))?;
        if line.is_empty() {
            continue;
        }
        let event = serde_json::from_str::<ExportedEvent>(&line)
            .map_err(|error| error.to_string())
            .and_then(ExportedEvent::into_recorded)
            .map_err(|reason| damaged(&args.file, number, reason))?;
        if event.position.0 != expected {
            return Err(damaged(
                &args.file,
                number,
                format!("position {} where {expected} was expected", event.position),
            ));
        }
        expected += 1;
        let ends_append = event.last_in_commit;
        batch.push(event);
        if ends_append && batch.len() >= IMPORT_BATCH_EVENTS {
            store
                .import(std::mem::take(&mut batch))
                .await
                .context("the store refused the import")?;
            importing.set_position(expected);
        }
    }
    if expected != header.events {
        return Err(Failure::Corrupt(format!(
            "{} holds {expected} events but its header announces {}: the file is truncated",
            args.file.display(),
            header.events
        ))
        .into());
    }
    if !batch.is_empty() {
        store
            .import(batch)
            .await
            .context("the store refused the import")?;
    }
    importing.finish_and_clear();
    let verifying = bar(args.no_progress, expected, "verifying");
    let verifier = store.clone();
    let bar_handle = verifying.clone();
    let verified = tokio::task::spawn_blocking(move || {
        verifier.verify_with_progress(&mut |done, _| bar_handle.set_position(done))
    })
    .await?;
    verifying.finish_and_clear();
    let verified = verified.context("the imported log does not verify")?;
    if verified.head_hash != header.head_hash {
        return Err(Failure::Corrupt(format!(
            "the imported log's head hash {} differs from the exported {}: the file was changed",
            verified.head_hash, header.head_hash
        ))
        .into());
    }
    Ok(ImportReport {
        events: verified.events,
        head_hash: verified.head_hash,
        verified: true,
        data_dir: args.data_dir.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
