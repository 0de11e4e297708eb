//! The durable, append-only event log of Annals.
//!
//! Every state change is an event appended to one log of segment files (`segment`),
//! written by a single writer thread with group commit and `fdatasync` before any append
//! is acknowledged (`writer`). Everything else is derived from the log and kept in sled
//! (`index`): stream positions, heads, event ids, a sparse position map, snapshots. On
//! open the store cuts a torn tail, refuses corruption, and brings the index up to the
//! end of the log (`store`). Aggregates run on top through the [`Repository`]
//! (`aggregate`).
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
pub mod envelope;
pub mod error;
pub mod ids;
pub mod index;
pub mod locks;
pub mod readmodel;
pub mod segment;
pub mod snapshot;
pub mod store;
mod writer;

pub use aggregate::{Aggregate, CommandOptions, Committed, ExecuteError, Loaded, Repository};
pub use chain::ChainHash;
pub use envelope::{Metadata, NewEvent, RecordedEvent, StoredEvent};
pub use error::Error;
pub use ids::{EventId, ExpectedVersion, Position, StreamId, Version};
pub use locks::{KeyGuard, KeyedLocks};
pub use readmodel::{Model, ModelBatch, ReadModels};
pub use store::{AppendOutcome, Direction, EventStore, StoreConfig, Subscription, VerifyReport};
