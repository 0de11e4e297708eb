//! `annals export` and `annals import`: the whole log as an NDJSON file and back, losslessly
//! (the format is docs/EXPORT.md). An import into an empty data directory reproduces the
//! log exactly: the same ids, positions, versions, times, metadata, payload bytes and
//! append boundaries, hence the same hash chain, which the import checks against the
//! head hash the export recorded. The import is staged beside the target and moved into
//! place only once every check passed; it reads within bounds taken from `StoreConfig`
//! (the longest line, the largest append), so a hostile file cannot make it grow.

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
use reading::{Limits, Lines, damaged, least_record_bytes, read_header};

mod keys;
mod reading;

pub use keys::{KEYS_FORMAT, KeysFile};
use keys::{export_keys, keys_path, read_keys, write_keys};

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

  annals export --data-dir ./annals-data --to annals.ndjson --with-keys \\
      --master-key-file /etc/annals/master.key         # also annals.ndjson.keys

The format (NDJSON: a header line, then one line per event) is described in docs/EXPORT.md.
Without --with-keys an export holds no key material: personal fields stay ciphertext that
only the key store of the data directory opens. With it, the key store's keys, wrapped by
the master key, go to a separate file (<FILE>.keys, mode 0600).
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
    /// Also export the key store's keys (wrapped by the master key, destroyed ones as
    /// tombstones) to a separate file: `<FILE>.keys`, or --keys-to.
    #[arg(long)]
    with_keys: bool,
    /// Where --with-keys writes the keys [default: the export's file name + `.keys`;
    /// required with `--to -`].
    #[arg(long, value_name = "FILE", requires = "with_keys")]
    keys_to: Option<PathBuf>,
    /// The master key (with --with-keys).
    #[command(flatten)]
    master: crate::keys::MasterKeyArgs,
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
  annals import annals.ndjson --data-dir ./restored --master-key-file /etc/annals/master.key
  gunzip -c annals.ndjson.gz | annals import - --data-dir ./restored

The data directory must be new, empty, or hold no events. The import is written into a
temporary directory beside it, verified whole, its head hash compared with the one the
export recorded, and only then moved into place: a refused file leaves nothing behind.
If the export has a keys file (<FILE>.keys, or --keys), its keys go into the new data
directory's key store: give the master key they are wrapped by.")]
pub struct ImportArgs {
    /// The export file to read (`-`: standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The keys file of `annals export --with-keys` [default: `<FILE>.keys` if it exists].
    #[arg(long, value_name = "KEYS_FILE")]
    keys: Option<PathBuf>,
    /// The master key the exported keys are wrapped by (needed when there are keys).
    #[command(flatten)]
    master: crate::keys::MasterKeyArgs,
    /// The data directory to fill: new (it is created), empty, or without events.
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
    /// Correlation, causation, traceparent, principal, command id (null: not set), and
    /// issuer, action, on behalf of (absent: not set, so lines without them are as
    /// before these members existed, and such older lines import).
    pub metadata: Metadata,
    /// The payload bytes as lower-case hex (the postcard encoding, exactly as stored).
    pub payload: String,
    /// The payload as JSON, upcast to its type's current schema version (the object the
    /// API shows as an event's `payload`), for readers of the file; absent when no crate
    /// decodes it. Derived from `payload`: import ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_json: Option<serde_json::Value>,
    /// The URN of `payload_json`'s JSON Schema (docs/EVENTS.md); absent with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<String>,
    /// Whether it ends the append that wrote it.
    pub last_in_commit: bool,
}

impl ExportedEvent {
    /// The line of `event`; its `payload_json` only if that JSON's text is at most
    /// `max_json_bytes` long (the importer's line bound counts on it).
    fn of(event: &RecordedEvent, max_json_bytes: usize) -> Self {
        let payload_json = api::events::decode_payload(event)
            .filter(|json| serde_json::to_vec(json).is_ok_and(|text| text.len() <= max_json_bytes));
        let payload_schema = payload_json
            .as_ref()
            .and_then(|_| api::events::payload_schema(event));
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
            payload_json,
            payload_schema,
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
    /// Keys written with --with-keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<usize>,
    /// Where.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_file: Option<String>,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let keys_to = match (args.with_keys, &args.keys_to) {
        (false, _) => None,
        (true, Some(file)) => Some(file.clone()),
        (true, None) if args.to.as_os_str() == "-" => {
            return Err(Failure::Usage(
                "--with-keys with --to - needs --keys-to FILE: the keys never go to standard output with the events".into(),
            )
            .into());
        }
        (true, None) => Some(keys_path(&args.to)),
    };
    data_dir::runtime()?.block_on(async {
        let store = data_dir::open_existing(&args.data_dir)?;
        // The keys are read first: a wrong master key fails before the long part.
        let keys = match &keys_to {
            Some(_) => match export_keys(&args) {
                Ok(keys) => Some(keys),
                Err(error) => {
                    store.close().await;
                    return Err(error);
                }
            },
            None => None,
        };
        let result = export_store(&store, &args);
        store.close().await;
        let mut report = result?;
        if let (Some(file), Some((fingerprint, keys))) = (&keys_to, keys) {
            let count = keys.len();
            write_keys(
                file,
                &KeysFile {
                    format: KEYS_FORMAT.into(),
                    version: FORMAT_VERSION,
                    head_hash: report.head_hash.clone(),
                    events: report.events,
                    master_fingerprint: fingerprint,
                    exported_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
                    keys,
                },
            )?;
            report.keys = Some(count);
            report.keys_file = Some(file.display().to_string());
        }
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if args.to.as_os_str() != "-" {
            println!(
                "exported {} events ({} bytes) to {} in {:.2} s; head hash {}",
                report.events, report.bytes, report.file, report.seconds, report.head_hash
            );
        }
        if !args.json
            && let (Some(count), Some(file)) = (report.keys, &report.keys_file)
        {
            println!(
                "exported {count} keys, wrapped by the master key, to {file}: keep it apart from the export, as the master key"
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
        keys: None,
        keys_file: None,
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
    let max_json_bytes = store.config().max_event_bytes;
    // Personal fields whose key was destroyed are marked `"erased": true` in
    // `payload_json` (the bytes in `payload` stay as the log holds them).
    let erased = match privacy::destroyed_keys(store.dir()) {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!(
                "warning: cannot read the key store, erased personal fields are not marked: {error}"
            );
            Default::default()
        }
    };
    let mut next = Position(0);
    while next.0 < header.events {
        let want = READ_EVENTS.min((header.events - next.0) as usize);
        let events = store.read_all(next, want)?;
        let Some(last) = events.last() else {
            anyhow::bail!("the log ended at position {next}, before {}", header.events);
        };
        next = last.position.next();
        for event in &events {
            let mut line = ExportedEvent::of(event, max_json_bytes);
            if let Some(json) = line.payload_json.as_mut().filter(|_| !erased.is_empty()) {
                privacy::mark_erased(json, &|key_id| erased.contains_key(&key_id));
            }
            serde_json::to_writer(&mut *out, &line).context("cannot encode an event")?;
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
    /// Keys imported from the export's keys file.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<usize>,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let config = StoreConfig::default();
        let limits = Limits::of(&config);
        let source: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin().lock()))
        } else {
            let file = File::open(&args.file)
                .with_context(|| format!("cannot open the export {}", args.file.display()))?;
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        let mut lines = Lines::new(source, limits.max_line_bytes);
        let header = read_header(&mut lines, &args.file)?;
        let keys_file = match &args.keys {
            Some(file) => Some(file.clone()),
            None if args.file.as_os_str() == "-" => None,
            None => Some(keys_path(&args.file)).filter(|file| file.exists()),
        };
        // The keys are checked before the events are read: a missing or wrong master
        // key fails at once.
        let keys = match &keys_file {
            None => None,
            Some(file) => {
                let keys = read_keys(file, &header)?;
                let master = args.master.key()?.ok_or_else(|| {
                    Failure::Usage(format!(
                        "{} holds the export's keys: give the master key they are wrapped by ({}) with --master-key-file FILE or {}",
                        file.display(),
                        keys.master_fingerprint,
                        privacy::MASTER_KEY_ENV
                    ))
                })?;
                if master.fingerprint() != keys.master_fingerprint {
                    return Err(anyhow::Error::new(privacy::Error::ExportedUnderOtherMaster {
                        found: keys.master_fingerprint.clone(),
                        given: master.fingerprint(),
                    }));
                }
                Some((master, keys))
            }
        };
        let target = Target::check(&args.data_dir).await?;
        let staging = Staging::create(&target)?;
        let store = EventStore::open(&staging.path, config)
            .with_context(|| format!("cannot open {}", staging.path.display()))?;
        let result = import_into(&store, &header, &mut lines, &args, &limits).await;
        store.close().await;
        let mut report = result?;
        if let Some((master, keys)) = keys {
            let imported = privacy::KeyStore::open(&staging.path, master)
                .and_then(|store| store.import_keys(&keys.keys))
                .context("cannot import the keys")?;
            report.keys = Some(imported);
        }
        staging.commit(&target)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "imported {} events into {} in {:.2} s; verified, head hash {} as exported",
                report.events, report.data_dir, report.seconds, report.head_hash
            );
            if let Some(keys) = report.keys {
                println!("imported {keys} keys into its key store");
            }
        }
        Ok(())
    })
}

/// The data directory an import fills, as it was found.
struct Target {
    dir: PathBuf,
    /// Its parent, where the import is staged (the same file system, so a rename moves it).
    parent: PathBuf,
    name: std::ffi::OsString,
    state: TargetState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    /// It does not exist: the staged directory is renamed to it.
    Missing,
    /// An empty directory: the staged directory is renamed over it (`rename` replaces an
    /// empty directory in one step).
    Empty,
    /// A data directory without events: it is moved aside, the staged directory renamed
    /// to its name, and then it is removed.
    Eventless,
}

impl Target {
    /// Finds what `dir` is; one that holds events (or other files) is bad usage.
    async fn check(dir: &Path) -> anyhow::Result<Target> {
        let name = dir
            .file_name()
            .filter(|name| *name != "." && *name != "..")
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "--data-dir {} names no directory to create; give a path ending in a name",
                    dir.display()
                ))
            })?
            .to_owned();
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let state = if !dir.exists() {
            TargetState::Missing
        } else if !dir.is_dir() {
            return Err(Failure::Usage(format!("{} is not a directory", dir.display())).into());
        } else if std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none()
        {
            TargetState::Empty
        } else if !dir.join("log").is_dir() {
            return Err(Failure::Usage(format!(
                "{} is neither empty nor an Annals data directory; import into a new or \
                 empty data directory",
                dir.display()
            ))
            .into());
        } else {
            let store = data_dir::open_existing(dir)?;
            let existing = store.next_position().0;
            store.close().await;
            if existing > 0 {
                return Err(Failure::Usage(format!(
                    "{} already holds {existing} events; import into a new or empty data \
                     directory",
                    dir.display()
                ))
                .into());
            }
            TargetState::Eventless
        };
        Ok(Target {
            dir: dir.to_path_buf(),
            parent,
            name,
            state,
        })
    }

    /// A path beside the target: `.<name>.<what>-<pid>`.
    fn beside(&self, what: &str) -> PathBuf {
        let mut name = std::ffi::OsString::from(".");
        name.push(&self.name);
        name.push(format!(".{what}-{}", std::process::id()));
        self.parent.join(name)
    }
}

/// The directory an import is written into, beside its target; removed on drop unless it
/// was moved into place.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(target: &Target) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(&target.parent)
            .with_context(|| format!("cannot create {}", target.parent.display()))?;
        let path = target.beside("import");
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    /// Moves the staged data directory into place and makes the move durable.
    fn commit(mut self, target: &Target) -> anyhow::Result<()> {
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
        };
        match target.state {
            TargetState::Missing | TargetState::Empty => rename(&self.path, &target.dir)?,
            TargetState::Eventless => {
                let aside = target.beside("replaced");
                rename(&target.dir, &aside)?;
                if let Err(error) = rename(&self.path, &target.dir) {
                    let _ = std::fs::rename(&aside, &target.dir);
                    return Err(error);
                }
                std::fs::remove_dir_all(&aside)
                    .with_context(|| format!("cannot remove {}", aside.display()))?;
            }
        }
        self.committed = true;
        File::open(&target.parent)
            .and_then(|parent| parent.sync_all())
            .with_context(|| format!("cannot sync {}", target.parent.display()))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn import_into(
    store: &EventStore,
    header: &Header,
    lines: &mut Lines<'_>,
    args: &ImportArgs,
    limits: &Limits,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let importing = bar(args.no_progress, header.events, "importing");
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(IMPORT_BATCH_EVENTS);
    let mut expected = 0u64;
    // The line where the open commit started, and the least bytes it takes so far.
    let mut commit: Option<(usize, usize)> = None;
    while let Some((number, line)) = lines.next_line(&args.file)? {
        if line.is_empty() {
            continue;
        }
        let event = serde_json::from_str::<ExportedEvent>(line)
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
        let (started_at, bytes) = commit.get_or_insert((number, 0));
        *bytes += least_record_bytes(&event);
        if *bytes > limits.max_append_bytes {
            return Err(damaged(
                &args.file,
                *started_at,
                format!(
                    "the commit that starts here never ends within the largest append the \
                     store accepts ({} bytes)",
                    limits.max_append_bytes
                ),
            ));
        }
        let ends_append = event.last_in_commit;
        if ends_append {
            commit = None;
        }
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
        keys: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `OrderConfirmed` of `order-o1` as the log holds it (schema version 2).
    fn confirmed() -> RecordedEvent {
        let payload = postcard::to_stdvec(&orders::Event::OrderConfirmed { total: 360 }).unwrap();
        RecordedEvent {
            id: EventId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            stream_id: StreamId::new("order-o1").unwrap(),
            version: Version(1),
            position: Position(7),
            event_type: "OrderConfirmed".into(),
            schema_version: 2,
            // The log's precision: microseconds.
            recorded_at: DateTime::from_timestamp_micros(1_793_000_000_123_456).unwrap(),
            metadata: Default::default(),
            payload,
            last_in_commit: true,
        }
    }

    #[test]
    fn a_line_carries_the_payload_json_beside_its_bytes_and_import_ignores_it() {
        let event = confirmed();
        let line = ExportedEvent::of(&event, 1 << 20);
        assert_eq!(line.payload_json, Some(serde_json::json!({"total": 360})));
        assert_eq!(
            line.payload_schema.as_deref(),
            Some("urn:annals:schema:event:OrderConfirmed:3")
        );
        let mut edited = line.clone();
        edited.payload_json = Some(serde_json::json!({"total": 1}));
        assert_eq!(
            edited.into_recorded().unwrap(),
            event,
            "the bytes are the event"
        );
    }

    #[test]
    fn a_payload_json_longer_than_the_bound_is_left_out() {
        let event = confirmed();
        let line = ExportedEvent::of(&event, "{\"total\":360}".len() - 1);
        assert_eq!(line.payload_json, None);
        assert_eq!(line.payload_schema, None);
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains("payload_json"), "{text}");
        assert_eq!(line.into_recorded().unwrap(), event);
    }
}
