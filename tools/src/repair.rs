//! `annals repair`: replace the damaged ranges of a stopped data directory's log with the
//! JetStream copy, only where the copy's events chain exactly onto the intact records
//! around them (`eventstore::repair`), then open the store (which proves its index on the
//! log) and verify the whole log.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use ::outbox::{RangeOptions, RangeRead};
use anyhow::Context;
use eventstore::EventStore;
use eventstore::repair::{self, DamagedRange, Replacement};

use crate::exit::Failure;
use crate::progress;

/// How long connecting and each JetStream request may take.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);

/// Replace damaged records of a stopped data directory's log with the JetStream copy.
///
/// Finds the first damaged range of records (checksums, positions, hash chain), reads
/// exactly those positions from the copy, and replaces the range only if the copy's
/// events chain onto the intact record before it and the one after it and fill its bytes
/// exactly; otherwise refuses (exit 5) and touches nothing. Repeats until no damage is
/// left, then opens the store and verifies the whole log. Intact records are never rewritten.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  annals repair --data-dir ./annals-data --nats-url nats://127.0.0.1:4222
  annals repair --data-dir ./annals-data --nats-url nats://127.0.0.1:4222 --stream ANNALS

Stop the server first. A torn tail at the end of the last segment is not damage: the
next open cuts it. See docs/OPERATIONS.md, \"Repairing the log from the JetStream copy\".")]
pub struct RepairArgs {
    /// The data directory (not held by a running server).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// The NATS server holding the copy.
    #[arg(long, env = "ANNALS_NATS_URL")]
    nats_url: String,
    /// The JetStream stream holding the copy.
    #[arg(long, env = "ANNALS_NATS_STREAM", default_value = "ANNALS")]
    stream: String,
    /// TLS towards NATS.
    #[command(flatten)]
    nats_tls: crate::tls::NatsTlsArgs,
}

pub fn run(args: RepairArgs) -> anyhow::Result<()> {
    crate::data_dir::check_existing(&args.data_dir)?;
    let nats_tls = args.nats_tls.settings()?;
    let config = crate::data_dir::offline_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let lock = repair::lock(&args.data_dir)
            .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
        let mut client = None;
        let mut repaired = 0u64;
        let mut last_repaired: Option<(PathBuf, u64)> = None;
        while let Some(range) = repair::find_damage(&lock, &config)
            .with_context(|| format!("cannot repair {}", args.data_dir.display()))?
        {
            if last_repaired == Some((range.segment.clone(), range.start)) {
                return Err(Failure::Corrupt(format!(
                    "the range just repaired is still damaged: {range}"
                ))
                .into());
            }
            println!("damaged: {range}");
            if client.is_none() {
                client =
                    Some(::outbox::connect(&args.nats_url, &nats_tls, NATS_TIMEOUT, NATS_TIMEOUT).await?);
            }
            let client = client.as_ref().expect("connected above");
            let replacement = read_replacement(client, &args.stream, range.clone()).await?;
            let done = repair::apply(&lock, replacement)?
                .map_err(|refusal| Failure::Corrupt(format!("{refusal} ({range})")))?;
            println!(
                "replaced positions {}..={} ({} events, bytes {}..{}) of {} from stream {}",
                done.first_position,
                (done.first_position.0 + done.events).saturating_sub(1),
                done.events,
                done.start,
                done.end,
                done.segment.display(),
                args.stream
            );
            repaired += 1;
            last_repaired = Some((range.segment, range.start));
        }
        if repaired == 0 {
            println!(
                "nothing to repair: every record of {} is intact",
                args.data_dir.display()
            );
            return Ok(());
        }
        // The store takes the lock itself (the same process cannot hold it twice). The
        // index stays: it was never built from the damaged bytes (recovery indexes only
        // the intact records before damage, and refuses the rest), the repaired records
        // have the same bodies, lengths and offsets, and open proves its high-water mark,
        // heads and ids on the log before it trusts them. Its checkpoints, read models and
        // saga progress survive; `annals replay all` rebuilds all of it if wanted.
        drop(lock);
        let bar = progress::bytes_bar();
        bar.set_message("opening (the index catches up with the log)");
        let store = EventStore::open_with_progress(&args.data_dir, config, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let store = store.with_context(|| format!("cannot open {}", args.data_dir.display()))?;
        let bar = progress::bar(store.next_position().0, "events");
        bar.set_message("verifying");
        let report = store.verify_with_progress(&mut |done, _| bar.set_position(done));
        bar.finish_and_clear();
        store.close().await;
        let report = report.context("verification after the repair failed")?;
        println!(
            "repaired {repaired} damaged range(s); verified: ok: {} events in {} segments, head hash {}",
            report.events, report.segments, report.head_hash
        );
        Ok(())
    })
}

/// Reads the range's events from the copy into a replacement, refusing (exit 5) when the
/// copy does not hold them or they do not chain.
async fn read_replacement(
    client: &async_nats::Client,
    stream: &str,
    range: DamagedRange,
) -> anyhow::Result<Replacement> {
    let bar = match range.events() {
        Some(events) => progress::bar(events, "events"),
        None => progress::counter("events"),
    };
    bar.set_message(format!("reading positions from {}", range.first_position));
    let options = RangeOptions {
        request_timeout: NATS_TIMEOUT,
        ..RangeOptions::default()
    };
    let mut replacement = Replacement::new(range.clone());
    let mut refusal = None;
    let read = if replacement.is_complete() {
        Ok(RangeRead::Done)
    } else {
        ::outbox::read_range(
            client,
            stream,
            range.first_position,
            range.prev_hash,
            &options,
            &mut |event| {
                if let Err(refused) = replacement.push(&event) {
                    refusal = Some(refused);
                    return ControlFlow::Break(());
                }
                bar.inc(1);
                if replacement.is_complete() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await
    };
    bar.finish_and_clear();
    let read = read.with_context(|| format!("repair refused: the copy does not fit {range}"))?;
    if let Some(refusal) = refusal {
        return Err(Failure::Corrupt(format!("{refusal} ({range})")).into());
    }
    if let RangeRead::CopyEnded { last } = read
        && !replacement.is_complete()
    {
        let held = last.map_or_else(
            || format!("nothing from position {}", range.first_position),
            |last| format!("positions up to {last}"),
        );
        return Err(Failure::Corrupt(format!(
            "repair refused: stream {stream} holds {held}, not the whole damaged range ({range})"
        ))
        .into());
    }
    Ok(replacement)
}
