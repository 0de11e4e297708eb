//! Opening a data directory for the offline commands: never creating one by mistake,
//! refusing a directory that holds no log, and saying what to do when a server holds it.

use std::path::Path;

use anyhow::Context;
use eventstore::{EventStore, StoreConfig};

use crate::exit::Failure;

/// The store settings of an offline command: never create the directory (a typo in a
/// path is an error, not an empty store), never zero-fill the active segment (reading a
/// store is no reason to grow it).
pub fn offline_config() -> StoreConfig {
    StoreConfig {
        create_if_missing: false,
        preallocate_segments: false,
        ..StoreConfig::default()
    }
}

/// Checks that `dir` exists and holds a log, without touching it.
pub fn check_existing(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(eventstore::Error::MissingDataDir(dir.to_path_buf()).into());
    }
    if !dir.join("log").is_dir() {
        return Err(Failure::NotADataDir(format!(
            "{} is not an Annals data directory (it has no log/); point --data-dir at one, \
             e.g. the directory `annals serve --data-dir` uses",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Opens an existing data directory: it must exist and hold a log, and no other process
/// may hold it (a server does: the error says to stop it or use `--server URL`).
pub fn open_existing(dir: &Path) -> anyhow::Result<EventStore> {
    check_existing(dir)?;
    EventStore::open(dir, offline_config())
        .with_context(|| format!("cannot open {}", dir.display()))
}

/// A current-thread runtime for the offline commands: the store's subscriptions and
/// `close` need one, though their work is blocking.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
