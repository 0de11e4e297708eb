//! The one helper of the read models' given/when/then tests: events in, rows out, no
//! store. A change of how projections are fed touches this file only.

use eventstore::{Aggregate, StoredEvent};
use projections::{ApplyError, MemoryModel, Projection, Value};

/// An event as a test writes it: the stream it is in and the domain event.
pub(crate) struct Recorded {
    stream_id: String,
    event_type: &'static str,
    schema_version: u32,
    payload: Vec<u8>,
    correlation_id: Option<[u8; 16]>,
}

impl Recorded {
    /// The same event, with `correlation_id` in its metadata.
    pub(crate) fn correlated(mut self, correlation_id: [u8; 16]) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }
}

/// The event `event` of aggregate `A`, in the stream of the entity `id`
/// (`order-<id>`, `stock-<id>`, `account-<id>`).
pub(crate) fn event<A: Aggregate>(id: &str, event: A::Event) -> Recorded {
    Recorded {
        stream_id: format!("{}-{id}", A::CATEGORY),
        event_type: A::event_type(&event),
        schema_version: A::EVENT_SCHEMA_VERSION,
        payload: postcard::to_allocvec(&event).expect("a domain event encodes"),
        correlation_id: None,
    }
}

/// An order event of order `id`.
pub(crate) fn order(id: &str, event: orders::Event) -> Recorded {
    self::event::<orders::Order>(id, event)
}

/// A stock event of sku `id`.
pub(crate) fn stock(id: &str, event: inventory::Event) -> Recorded {
    self::event::<inventory::Stock>(id, event)
}

/// An account event of customer `id`.
pub(crate) fn account(id: &str, event: payments::Event) -> Recorded {
    self::event::<payments::Account>(id, event)
}

/// Given the events `given` (one batch), when `when` are applied (the next batch), then
/// the model holds what this returns; or `when` fails with the returned error, and the
/// model is as `given` left it. Events are numbered from position 0 in the order given.
pub(crate) fn check(
    projection: &dyn Projection,
    given: &[Recorded],
    when: &[Recorded],
) -> Result<MemoryModel, (ApplyError, MemoryModel)> {
    let mut model = MemoryModel::new();
    let given_events = batch(given, 0);
    model
        .apply(projection, &given_events)
        .unwrap_or_else(|error| panic!("the given events apply: {error}"));
    let when_events = batch(when, given.len());
    match model.apply(projection, &when_events) {
        Ok(()) => Ok(model),
        Err(error) => Err((error, model)),
    }
}

/// Every row of `table`, values only, in key order.
pub(crate) fn rows<V: Value>(model: &MemoryModel, table: &str) -> Vec<V> {
    model
        .rows::<V>(table)
        .unwrap_or_else(|error| panic!("table {table} decodes: {error}"))
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

/// `recorded` as stored, numbered from position `first`.
fn batch(recorded: &[Recorded], first: usize) -> Vec<StoredEvent<'_>> {
    recorded
        .iter()
        .enumerate()
        .map(|(index, event)| stored(event, (first + index) as u64))
        .collect()
}

fn stored(event: &Recorded, position: u64) -> StoredEvent<'_> {
    StoredEvent {
        id: [0; 16],
        stream_id: &event.stream_id,
        version: 0,
        position,
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at_micros: 0,
        metadata: eventstore::envelope::StoredMetadata {
            correlation_id: event.correlation_id,
            ..Default::default()
        },
        payload: &event.payload,
        identity: Default::default(),
    }
}
