//! CQRS read models derived from the log of an [`eventstore::EventStore`].
//!
//! - A [`Projection`] has a name and a version and applies events to [`Changes`]: typed
//!   tables held in memory over its read model for the length of a batch.
//! - The [`Runner`] catches each projection up from its checkpoint, then follows the log
//!   live, writing each batch's changes and the new checkpoint in one atomic write: a
//!   crash re-applies from the checkpoint and never doubles an effect.
//! - Poison events ([`poison`]): a projection that fails on an event (an error or a
//!   panic) applies it again a few times, then by [`PoisonPolicy`] stops there,
//!   [`State::Faulted`], naming the event (nothing is skipped), or parks it durably and
//!   goes on. [`Handle::parked`] lists parked events; [`Handle::retry`] applies them again
//!   and starts a faulted projection again.
//! - Rebuilds are blue-green: a new model builds beside the active one (which keeps
//!   answering queries) and takes over atomically once caught up; the old one is dropped.
//!   They start when the code's version differs from the active model's, on
//!   [`Handle::rebuild`], or offline with [`offline::rebuild`].
//! - Read-your-writes: [`Handle::wait_for`] resolves once a projection has applied a
//!   given position, or times out naming its checkpoint.
//! - A projection's change logic can be tested without a store: [`MemoryModel`] applies
//!   events to tables in memory, as the runner would, and gives the rows back.
//!
//! - Each batch a projection applies runs in a `project <projection>` span that links to
//!   the traces of its events (`trace`).
//!
//! Read models are derived data, never a source of truth: dropping them costs a rebuild.
//!
//! ```no_run
//! # async fn demo(store: eventstore::EventStore, projections: Vec<std::sync::Arc<dyn projections::Projection>>) -> Result<(), projections::Error> {
//! use projections::{Runner, RunnerConfig};
//! let (runner, handle) = Runner::new(&store, projections, RunnerConfig::default())?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(runner.run(shutdown.clone()));
//! let position = store.next_position();
//! handle.wait_for_all(position, std::time::Duration::from_secs(1)).await.ok();
//! for status in handle.status() {
//!     println!("{} v{:?}: checkpoint {}, lag {}", status.name, status.active_version, status.checkpoint, status.lag);
//! }
//! shutdown.cancel();
//! # Ok(()) }
//! ```

mod catch_up;
pub mod changes;
pub mod error;
pub mod memory;
pub mod offline;
pub mod poison;
pub mod projection;
pub mod runner;
mod trace;

pub use changes::{Changes, Value, read, scan};
pub use error::{ApplyError, Error, Fault};
pub use memory::MemoryModel;
pub use poison::{ParkedEvent, PoisonPolicy, Retried};
pub use projection::Projection;
pub use runner::{
    Handle, MAX_VERSION, Rebuild, RebuildStatus, Runner, RunnerConfig, State, Status,
};
