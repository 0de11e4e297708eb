//! `annals`: the command line of the Annals event store.
//!
//! Every subcommand is a module with a clap `Args` struct and a `run` function; this file
//! only parses the command line and turns errors into one clear line and an exit code
//! (see [`exit`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_http;
mod bench_saga;
mod exit;
mod outbox;
mod progress;
mod projections;
mod serve;
mod verify;

/// Annals: a durable, append-only event store with CQRS read models, sagas and an
/// outbox to NATS.
#[derive(Debug, Parser)]
#[command(name = "annals", version, propagate_version = true, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  annals serve --data-dir ./annals-data --listen 127.0.0.1:8080
  annals bench append --writers 64 --events-per-commit 1 --events 50000
  annals bench replay --events 1000000
  annals bench saga --orders 20000
  annals verify --data-dir ./annals-data
  annals audit --nats-url nats://127.0.0.1:4222 --data-dir ./annals-data
  annals restore --nats-url nats://127.0.0.1:4222 --stream ANNALS --data-dir ./restored

Exit codes: 0 ok, 1 unexpected error, 2 bad usage, 3 data directory missing,
4 data directory locked by another process, 5 corrupt log or failed verification
(or audit), 6 NATS unreachable or not set up for the outbox.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the store: append throughput and latency, replay speed, contention.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check every record of a data directory: checksums, positions, hash chain.
    Verify(verify::VerifyArgs),
    /// Rebuild an empty data directory from the JetStream copy of the log.
    Restore(outbox::RestoreArgs),
    /// Compare a data directory's log with its JetStream copy, event by event.
    Audit(outbox::AuditArgs),
    /// The outbox relay: its saved progress in a stopped data directory.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// The read models: list them (version, checkpoint, lag, state) or rebuild one.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// Serve the HTTP API (commands, queries, the live log) over a data directory.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server reports what it does; the offline tools only what went wrong.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Bench(command) => bench::run(command),
        Command::Verify(args) => verify::run(args),
        Command::Restore(args) => outbox::restore(args),
        Command::Audit(args) => outbox::audit(args),
        Command::Outbox(command) => outbox::run(command),
        Command::Projections(command) => projections::run(command),
        Command::Serve(args) => serve::run_blocking(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
