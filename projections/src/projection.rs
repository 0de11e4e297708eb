//! The [`Projection`] trait: how a read model is derived from events.

use eventstore::StoredEvent;

use crate::changes::Changes;
use crate::error::ApplyError;

/// A read model derived from the log.
///
/// The runner feeds a projection every event of the log in position order, in batches:
/// for each event it calls [`Projection::apply`] with the batch's [`Changes`] (reads see
/// the writes of earlier events of the same batch), then writes the whole batch and the
/// new checkpoint in one atomic write. A projection must therefore be a pure function of
/// the events and the model: applying the same events to the same model must write the
/// same values (that is what lets a crash re-apply a batch, and a rebuild reproduce the
/// live model byte for byte).
///
/// `apply` sees the event as stored ([`StoredEvent`], borrowed from the read buffer): the
/// stream id gives the category, the payload decodes with the domain's
/// `Aggregate::decode_event`. Events of other categories are simply ignored (return
/// `Ok`); the checkpoint moves past them all the same.
pub trait Projection: Send + Sync + 'static {
    /// The name, unique among the projections of a store; also the name its read models
    /// are stored under.
    fn name(&self) -> &str;

    /// The version of the projection's logic and stored shape. Bump it when either
    /// changes: at start the runner sees that the active read model was built by another
    /// version and rebuilds it beside the active one (blue-green). Values up to
    /// [`crate::MAX_VERSION`].
    fn version(&self) -> u32;

    /// How much work applying the log is for this projection, relative to the others
    /// (default 1). A rebuild of several projections shares them among threads by this
    /// weight, so give the heaviest (most events handled, most keys written) more.
    fn weight(&self) -> u32 {
        1
    }

    /// What happens to an event this projection still cannot apply after the runner's
    /// retries, when it differs from the runner's [`crate::RunnerConfig::poison_policy`]
    /// (default: `None`, the runner's).
    fn poison_policy(&self) -> Option<crate::poison::PoisonPolicy> {
        None
    }

    /// Applies one event to the batch's changes. An error (or a panic) discards the rest
    /// of the batch's changes for this projection, so the model stays at its last
    /// checkpoint; the runner applies from there again a few times, then stops the
    /// projection faulted at the event or parks the event (`crate::poison`).
    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError>;
}
