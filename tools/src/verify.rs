//! `annals verify`: walk the whole log and check every record.

use std::path::PathBuf;

use anyhow::Context;

use crate::progress;

/// Check every record of a data directory: checksums, contiguous positions, the hash
/// chain and complete appends. Needs the directory not to be held by a running server.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The data directory.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let store = crate::data_dir::open_existing(&args.data_dir)?;
    let bar = progress::bar(store.next_position().0, "events");
    bar.set_message("verifying");
    let report = store.verify_with_progress(&mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    let report = report.context("verification failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "ok: {} events in {} segments ({} bytes); head hash {}",
            report.events, report.segments, report.bytes, report.head_hash
        );
    }
    Ok(())
}
