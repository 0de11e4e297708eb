//! `annals`: the command line of the Annals event store.
//!
//! Every subcommand is a module with a clap `Args` struct and a `run` function, named
//! after its command unless that name is a crate's: `annals projections` lives in
//! [`read_model_commands`], `annals outbox`, `restore` and `audit` in [`relay_commands`]
//! and `annals chaos` in [`chaos_commands`], so `projections::`, `outbox::` and `chaos::`
//! always mean the crates. `annals bench` has a module per benchmark under [`bench`].
//! This file only parses the command line and turns errors into one clear line and an
//! exit code (see [`exit`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chaos_commands;
mod cluster;
mod data_dir;
mod erased;
mod event_json;
mod exit;
mod export;
mod inspect;
mod keys;
mod output;
mod progress;
mod read_model_commands;
mod relay_commands;
mod remote;
mod repair;
mod replay;
mod serve;
mod servers;
mod source;
mod telemetry;
mod tls;
mod token;
mod verify;

/// Annals: a durable, append-only event store with CQRS read models, sagas and an
/// outbox to NATS.
#[derive(Debug, Parser)]
#[command(name = "annals", version, propagate_version = true, after_help = after_help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  annals serve --data-dir ./annals-data --listen 127.0.0.1:8080
  annals inspect streams --category order                # offline: the server stopped
  annals inspect log --from 0 --limit 20 --server http://127.0.0.1:8080
  annals inspect tail --server http://127.0.0.1:8080      # follow the log live
  annals replay stream order-42 --as-of 2026-11-05T10:05:00Z
  annals replay all --data-dir ./annals-data              # rebuild indexes and read models
  annals export --data-dir ./annals-data --to annals.ndjson
  annals import annals.ndjson --data-dir ./restored
  annals verify --data-dir ./annals-data
  annals keys status --data-dir ./annals-data             # works beside a running server
  annals bench replay --events 1000000
  annals bench saga --orders 20000
  annals audit --nats-url nats://127.0.0.1:4222 --data-dir ./annals-data
  annals restore --nats-url nats://127.0.0.1:4222 --stream ANNALS --data-dir ./restored
  annals repair --nats-url nats://127.0.0.1:4222 --data-dir ./annals-data
  annals token mint --secret-file jwt-secret --sub ops-1 --role operator --ttl 1h
  annals chaos run --server http://127.0.0.1:8080 --experiment experiments/nats-outage.toml
  annals cluster status --nats-url nats://127.0.0.1:4222  # the nodes registered there
  annals inspect log --server nats://127.0.0.1:4222       # any ready node, with failover

Offline commands need the data directory to themselves: stop the server first. The
read-only ones (inspect, replay stream) can go through a running server with --server URL.
--json prints JSON for scripts (NDJSON, one object per line, for lists of events or
streams). Every command has its own --help with examples.";

fn after_help() -> String {
    format!("{EXAMPLES}\n\n{}", exit::SUMMARY)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (commands, queries, the live log) over a data directory.
    Serve(Box<serve::ServeArgs>),
    /// Look at streams, the log and events, payloads decoded to JSON.
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Rebuild state from the log: one aggregate at a point in time, or every index
    /// and read model.
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
    /// Write the whole log to a lossless NDJSON file (docs/EXPORT.md).
    Export(export::ExportArgs),
    /// Load an export into a new data directory, reproducing the log exactly.
    Import(export::ImportArgs),
    /// Check every record of a data directory: checksums, positions, hash chain.
    Verify(verify::VerifyArgs),
    /// The read models: list them (version, checkpoint, lag, state) or rebuild one; list
    /// a server's parked events or retry them (--server URL).
    #[command(subcommand, visible_alias = "read-models")]
    Projections(read_model_commands::ProjectionsCommand),
    /// The outbox relay: its saved progress in a stopped data directory.
    #[command(subcommand)]
    Outbox(relay_commands::OutboxCommand),
    /// Rebuild an empty data directory from the JetStream copy of the log.
    Restore(relay_commands::RestoreArgs),
    /// Compare a data directory's log with its JetStream copy, event by event.
    Audit(relay_commands::AuditArgs),
    /// Replace damaged records of a stopped data directory's log with the JetStream copy,
    /// only where the copy chains exactly onto the intact records around them.
    Repair(repair::RepairArgs),
    /// Measure the store: append throughput and latency, replay speed, contention.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fault injection on a server started with --chaos: inject, list and clear faults,
    /// run a chaos experiment.
    #[command(subcommand)]
    Chaos(chaos_commands::ChaosCommand),
    /// The key store of personal data: counts and master key fingerprints (works while
    /// the server runs), and master key rotation.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The nodes of a cluster, found through NATS service discovery.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Mint development tokens signed with the server's HS256 secret file.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server reports what it does, in the format its settings ask for (it sets up
    // the subscriber itself, once its settings are read); the offline tools only what
    // went wrong.
    // The measuring children of `bench append --compare-observability` report as a
    // server does (traces exported on the "on" side), so that their cost is measured.
    let _telemetry = match &cli.command {
        Command::Serve(_) => None,
        Command::Bench(bench::BenchCommand::Append(args)) if args.as_server() => {
            match telemetry::init_server(
                telemetry::LogFormat::Text,
                args.observed(),
                args.traces_per_second(),
            ) {
                Ok(telemetry) => Some(telemetry),
                Err(error) => return exit::report(&error),
            }
        }
        _ => {
            telemetry::init_tools("warn");
            None
        }
    };
    let result = match cli.command {
        Command::Bench(command) => bench::run(command),
        Command::Verify(args) => verify::run(args),
        Command::Restore(args) => relay_commands::restore(args),
        Command::Audit(args) => relay_commands::audit(args),
        Command::Repair(args) => repair::run(args),
        Command::Outbox(command) => relay_commands::run(command),
        Command::Projections(command) => read_model_commands::run(command),
        Command::Serve(args) => serve::run_blocking(*args),
        Command::Inspect(command) => inspect::run(command),
        Command::Replay(command) => replay::run(command),
        Command::Token(command) => token::run(command),
        Command::Cluster(command) => cluster::run(command),
        Command::Keys(command) => keys::run(command),
        Command::Chaos(command) => chaos_commands::run(command),
        Command::Export(args) => export::export(args),
        Command::Import(args) => export::import(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
