//! `annals restore`, `annals audit` and `annals outbox status`: the JetStream copy of the
//! log, seen from the command line.

use std::path::PathBuf;
use std::time::Duration;

use ::outbox::{AuditOptions, Divergence, RestoreOptions};
use anyhow::Context;
use eventstore::{ChainHash, EventStore, Position, StoreConfig};

use crate::progress;

/// How long connecting and each JetStream request may take.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The NATS server holding the copy.
    #[arg(long, env = "ANNALS_NATS_URL")]
    nats_url: String,
    /// The JetStream stream holding the copy.
    #[arg(long, env = "ANNALS_NATS_STREAM", default_value = "ANNALS")]
    stream: String,
    /// The data directory to rebuild: new or empty (a directory left by an interrupted
    /// restore is checked and continued).
    #[arg(long)]
    data_dir: PathBuf,
    /// Stop at this head, `POSITION:HASH` (the original's last position and head hash,
    /// as `annals verify` reports them), and fail unless the copy reaches it with that
    /// hash.
    #[arg(long, value_parser = parse_head)]
    expect_head: Option<(Position, ChainHash)>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// TLS towards NATS.
    #[command(flatten)]
    nats_tls: crate::tls::NatsTlsArgs,
}

/// `POSITION:HASH`, as `--expect-head` takes it.
fn parse_head(text: &str) -> Result<(Position, ChainHash), String> {
    let (position, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not POSITION:HASH"))?;
    let position = position
        .parse::<u64>()
        .map_err(|_| format!("{position:?} is not a position"))?;
    let hash = hash
        .parse::<ChainHash>()
        .map_err(|error| error.to_string())?;
    Ok((Position(position), hash))
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The NATS server holding the copy.
    #[arg(long, env = "ANNALS_NATS_URL")]
    nats_url: String,
    /// The data directory whose log is compared (not held by a running server).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// The JetStream stream holding the copy.
    #[arg(long, env = "ANNALS_NATS_STREAM", default_value = "ANNALS")]
    stream: String,
    /// Accept a copy that only lags: it lacks the log's last events, but none the
    /// relay's checkpoint says JetStream acknowledged.
    #[arg(long)]
    allow_backlog: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// TLS towards NATS.
    #[command(flatten)]
    nats_tls: crate::tls::NatsTlsArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// The relay's progress as saved in a stopped data directory: checkpoint, log head,
    /// backlog.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The data directory (not held by a running server; ask `GET /api/v1/outbox` then).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./annals-data")]
    data_dir: PathBuf,
    /// The relay's checkpoint name.
    #[arg(long, default_value = "outbox-relay")]
    checkpoint_name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens an existing data directory for reading.
fn open_existing(dir: &std::path::Path) -> anyhow::Result<EventStore> {
    crate::data_dir::open_existing(dir)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = ::outbox::connect(&args.nats_url, &args.nats_tls.settings()?, NATS_TIMEOUT, NATS_TIMEOUT).await?;
        let store = EventStore::open(&args.data_dir, StoreConfig::default())
            .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
        let bar = progress::bar(0, "events");
        bar.set_message(format!("restoring from {}", args.stream));
        let options = RestoreOptions {
            request_timeout: NATS_TIMEOUT,
            expect_head: args.expect_head,
            ..RestoreOptions::default()
        };
        let result = ::outbox::restore(&client, &args.stream, &store, &options, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
        bar.finish_and_clear();
        store.close().await;
        let report = result.context("restore failed")?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "restored {} events from stream {} into {} ({} messages read, {} already there{}); verified {} events, head {}:{}",
                report.imported,
                report.stream,
                args.data_dir.display(),
                report.messages,
                report.skipped,
                if report.incomplete_tail > 0 {
                    format!(
                        ", {} left out: the copy ends inside an append",
                        report.incomplete_tail
                    )
                } else {
                    String::new()
                },
                report.verified_events,
                report.next_position.0.saturating_sub(1),
                report.head_hash
            );
        }
        if report.unhashed_messages > 0 {
            eprintln!(
                "warning: {} messages of the copy carry no chain hash (published by an older release); they were checked by position and by the final verification only",
                report.unhashed_messages
            );
        }
        Ok(())
    })
}

pub fn audit(args: AuditArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = open_existing(&args.data_dir)?;
        let client = ::outbox::connect(&args.nats_url, &args.nats_tls.settings()?, NATS_TIMEOUT, NATS_TIMEOUT).await?;
        let options = AuditOptions {
            request_timeout: NATS_TIMEOUT,
            ..AuditOptions::default()
        };
        let result = ::outbox::audit(&client, &args.stream, &store, &options).await;
        store.close().await;
        let report = result.context("audit failed")?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}: {}", report.stream, report.summary());
        }
        if report.unhashed_messages > 0 {
            eprintln!(
                "warning: {} messages of the copy carry no chain hash (published by an older release); they were compared field by field only",
                report.unhashed_messages
            );
        }
        match report.divergence {
            None if report.copy_behind > 0 && !args.allow_backlog => {
                let position = Position(report.log_head.0 - report.copy_behind);
                Err(::outbox::Error::CopyDiverged {
                    position,
                    reason: format!(
                        "the copy lacks the log's last {} events, from position {position}; the relay has not published them yet (start it, or pass --allow-backlog)",
                        report.copy_behind
                    ),
                }
                .into())
            }
            None => Ok(()),
            Some(divergence) => {
                // Exit as a failed verification does.
                let position = match &divergence {
                    Divergence::Missing { position, .. }
                    | Divergence::Extra { position, .. }
                    | Divergence::Different { position, .. }
                    | Divergence::BrokenChain { position, .. }
                    | Divergence::Lost { position, .. } => *position,
                    Divergence::Malformed { .. } => {
                        report.identical_through.map_or(Position(0), Position::next)
                    }
                };
                Err(::outbox::Error::CopyDiverged {
                    position,
                    reason: divergence.to_string(),
                }
                .into())
            }
        }
    })
}

pub fn run(command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::Status(args) => status(args),
    }
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    // The store's close needs a runtime, though this is a quick read.
    runtime()?.block_on(async {
        let store = open_existing(&args.data_dir)?;
        let status = ::outbox::offline_status(&store, &args.checkpoint_name);
        store.close().await;
        let status = status?;
        if args.json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            println!(
                "checkpoint {}, log head {}, backlog {} events{}",
                status
                    .checkpoint
                    .map_or_else(|| "none (never published)".to_owned(), |c| c.to_string()),
                status.log_head,
                status.backlog,
                if status.backlog > 0 {
                    " (the relay may have published some after its last checkpoint; it asks the stream when it starts)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_head_is_a_position_and_a_chain_hash() {
        let hash = "1a73394ac4fdb8fd6e73cdb8b6fe92c6b0a75ce272abd0d05496e7c4540af2f6";
        let (position, parsed) = parse_head(&format!("1799:{hash}")).unwrap();
        assert_eq!(position, Position(1799));
        assert_eq!(parsed.to_string(), hash);
        for bad in [
            "1799".to_owned(),
            format!("x:{hash}"),
            "1799:abc".to_owned(),
            format!("-1:{hash}"),
        ] {
            assert!(parse_head(&bad).is_err(), "{bad}");
        }
    }
}
