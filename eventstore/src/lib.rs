//! The durable, append-only event log of Annals.
//!
//! Every state change is an event appended to one log of segment files (`segment`),
//! written by a single writer thread with group commit and `fdatasync` before any append
//! is acknowledged (`writer`). Everything else is derived from the log and kept in sled
//! (`derived`): stream positions, heads, event ids, a sparse position map, checkpoints,
//! snapshots, read models. On
//! open the store cuts a torn tail, refuses corruption, and brings the index up to the
//! end of the log (`open`, `recovery`). Aggregates run on top through the [`Repository`]
//! (`aggregate`).
//!
//! The modules, by concern:
//! - the handle: `store` ([`EventStore`]: append, import, close), `config`
//!   ([`StoreConfig`]), `shared` (the state its threads share), `failed_dirs` (the data
//!   directories whose writer failed in this process, reopened only by a fresh one);
//! - the write path: `writer` (group commit), `syncer` (`fdatasync`, then acknowledge),
//!   `indexer` (sled, off the acknowledgement path); what the writer keeps in bounded
//!   memory: `id_filter` (the scalable Bloom filter of stored ids), `stream_heads`
//!   (unindexed heads and a cache of the others);
//! - the files: `segment` (record format, parsing, the read cursor), `segment_files`
//!   (creating, preallocating and syncing segment files), `lock_file` (`LOCK`), `io`
//!   (the IO seam under the log: [`io::LogFs`] and [`io::LogFile`], real over `std::fs`,
//!   and with the `sim` feature a simulated disk with power loss and faults for tests);
//! - opening: `open` (the sequence), `recovery` (torn tail, corruption, index catch-up);
//! - repair: `repair` (the first damaged range of records, replaced from a copy only when
//!   the copy's events chain onto the intact records around it and fill it exactly);
//! - reading: `reads` (streams and the log, with the overlay of commits not yet indexed),
//!   `subscription` (catch-up, then live), `verify` (the whole log, checked);
//! - derived storage in sled: `derived` (`index`, `snapshot`, `readmodel`), the only
//!   module that imports sled;
//! - commands: `aggregate` ([`Repository`]), `locks` ([`KeyedLocks`]);
//! - [`metrics`]: the write path's histograms (append acknowledgement, fsync, events per
//!   group commit), recorded once per group commit through the `metrics` facade.
//!
//! ```no_run
//! # async fn demo() -> Result<(), eventstore::Error> {
//! use eventstore::{EventStore, ExpectedVersion, NewEvent, StoreConfig, StreamId};
//! let store = EventStore::open("./annals-data", StoreConfig::default())?;
//! let stream = StreamId::new("order-42")?;
//! let outcome = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", vec![1, 2])])
//!     .await?;
//! assert_eq!(outcome.first_version.0, 0);
//! # Ok(()) }
//! ```

pub mod aggregate;
pub mod chain;
mod config;
pub mod derived;
pub mod envelope;
pub mod error;
mod failed_dirs;
mod id_filter;
pub mod ids;
mod indexer;
pub mod io;
mod lock_file;
pub mod locks;
pub mod low_priority;
pub mod metrics;
mod open;
mod reads;
mod recovery;
pub mod repair;
pub mod replicated;
pub mod segment;
mod segment_files;
mod shared;
pub mod store;
mod stream_heads;
mod subscription;
mod syncer;
mod tail;
mod verify;
mod writer;

pub use aggregate::{
    Aggregate, CommandOptions, Committed, ExecuteError, Loaded, Repository, event_json,
};
pub use chain::ChainHash;
pub use config::StoreConfig;
pub use derived::readmodel::{Model, ModelBatch, ReadModels};
pub use envelope::{Metadata, NewEvent, RecordedEvent, StoredEvent, StoredIdentity};
pub use error::Error;
pub use ids::{EventId, ExpectedVersion, Position, StreamId, Version};
pub use locks::{KeyGuard, KeyedLocks};
pub use replicated::ReplicatedConfig;
pub use store::{AppendOutcome, Direction, EventStore};
pub use subscription::Subscription;
pub use verify::VerifyReport;
