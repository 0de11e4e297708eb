//! The state of an aggregate (or of a saga instance) folded from its stream's events,
//! the aggregate chosen by the stream's category ([`AGGREGATES`]): what
//! `GET /api/v1/streams/{stream_id}/state` answers and what `annals replay stream`
//! prints, by the same code.
//!
//! It lives here, beside [`crate::events`] (which decodes payloads by category the same
//! way), because it needs every domain crate and the `sagas` crate: `repositories`, the
//! other candidate, is a dependency of `sagas`, so it cannot fold a saga. The CLI
//! already depends on this crate for the event view.
//!
//! The events come from the log itself (the raw postcard payload) or from a server's
//! event view (the payload decoded as JSON, or its hex): [`Payload`] takes either, so
//! `annals replay stream --server` folds what the server sends.

use eventstore::{Aggregate, StreamId, Version};

/// An event's payload, as the fold gets it.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The postcard bytes, as the log holds them.
    Raw(&'a [u8]),
    /// The payload of an event view ([`crate::events::EventView`]): JSON decoded by the
    /// server (the event's fields, in its current schema version: older versions are
    /// upcast on the server), or the raw bytes in hex when `encoding` is `hex`.
    View {
        /// The view's `payload`.
        payload: &'a serde_json::Value,
        /// The view's `payload_encoding`: `json` or `hex`.
        encoding: &'a str,
    },
}

/// One event to fold.
#[derive(Debug, Clone, Copy)]
pub struct FoldEvent<'a> {
    /// Its version in the stream.
    pub version: u64,
    /// Its position in the log (for error messages).
    pub position: u64,
    /// Its type (for error messages).
    pub event_type: &'a str,
    /// The schema version of its payload.
    pub schema_version: u32,
    /// Its payload.
    pub payload: Payload<'a>,
}

/// Why a stream could not be folded.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// An event's payload is not an event of the stream's aggregate that this build can
    /// decode (a schema version from a newer build, a damaged payload). The log is not
    /// wrong for it: a server answers 500 and logs it; the CLI reports it.
    #[error(
        "cannot decode the {event_type} event at position {position} (schema version {schema_version}): {reason}"
    )]
    Decode {
        /// The event's type.
        event_type: String,
        /// Its position in the log.
        position: u64,
        /// Its payload's schema version.
        schema_version: u32,
        /// What the decoder said.
        reason: String,
    },
    /// The state could not be shown as JSON (a bug of the aggregate's serialization).
    #[error("cannot show the state as JSON: {0}")]
    Encode(String),
}

/// Folds a stream's events into its aggregate's state, as JSON.
pub type Fold = fn(&StreamId, &[FoldEvent<'_>]) -> Result<serde_json::Value, FoldError>;

/// The aggregates (and sagas) that can be folded, by stream category: the stream id is
/// `<category>-<id>`. A new event-sourced type is one more line here.
pub const AGGREGATES: &[(&str, Fold)] = &[
    (orders::Order::CATEGORY, fold::<orders::Order>),
    (inventory::Stock::CATEGORY, fold::<inventory::Stock>),
    (payments::Account::CATEGORY, fold::<payments::Account>),
    (customers::Customer::CATEGORY, fold::<customers::Customer>),
    (FULFILMENT_CATEGORY, fold_saga::<sagas::Fulfilment>),
];

/// The category of the fulfilment saga's streams (`saga-fulfilment-<order id>`).
const FULFILMENT_CATEGORY: &str = "saga-fulfilment";

/// The category of `stream` in [`AGGREGATES`] and its fold, if an aggregate owns it.
pub fn fold_for(stream: &StreamId) -> Option<(&'static str, Fold)> {
    AGGREGATES
        .iter()
        .find(|(category, _)| {
            stream
                .as_str()
                .strip_prefix(category)
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .copied()
}

/// The categories [`AGGREGATES`] knows, as stream prefixes (`order-`, ...), for messages.
pub fn known_prefixes() -> Vec<String> {
    AGGREGATES
        .iter()
        .map(|(category, _)| format!("{category}-"))
        .collect()
}

/// Folds `events` into `A`'s state, from its default.
fn fold<A: Aggregate>(
    _stream: &StreamId,
    events: &[FoldEvent<'_>],
) -> Result<serde_json::Value, FoldError> {
    let mut state = A::default();
    for event in events {
        let decoded = decode_with(event, |schema_version, raw| {
            A::decode_event(schema_version, raw).map_err(|error| error.to_string())
        })?;
        state = state.evolve(&decoded);
    }
    serde_json::to_value(&state).map_err(|error| FoldError::Encode(error.to_string()))
}

/// Folds a saga stream's recorded inputs into the saga instance: its state, and the
/// commands and deadlines it was waiting for at that point.
fn fold_saga<S: sagas::Saga>(
    stream: &StreamId,
    events: &[FoldEvent<'_>],
) -> Result<serde_json::Value, FoldError> {
    let mut inputs = Vec::with_capacity(events.len());
    for event in events {
        let input: S::Input = decode_with(event, |_, raw| {
            postcard::from_bytes(raw).map_err(|error| format!("not a saga input: {error}"))
        })?;
        inputs.push((Version(event.version), input));
    }
    let id = stream
        .as_str()
        .strip_prefix(&format!("saga-{}-", S::NAME))
        .unwrap_or(stream.as_str());
    let instance =
        sagas::Instance::<S>::replay(id, inputs.iter().map(|(version, input)| (*version, input)));
    Ok(serde_json::json!({
        "finished": instance.is_done(),
        "state": instance.state,
        "pending_commands": instance.outstanding,
        "pending_deadlines": instance.deadlines.values().collect::<Vec<_>>(),
    }))
}

/// An event's payload as `T`: decoded from postcard by `from_raw` (the log's bytes, or
/// a server's hex), or from the JSON a server decoded.
fn decode_with<T: serde::de::DeserializeOwned>(
    event: &FoldEvent<'_>,
    from_raw: impl Fn(u32, &[u8]) -> Result<T, String>,
) -> Result<T, FoldError> {
    let failed = |reason: String| FoldError::Decode {
        event_type: event.event_type.to_owned(),
        position: event.position,
        schema_version: event.schema_version,
        reason,
    };
    match event.payload {
        Payload::Raw(raw) => from_raw(event.schema_version, raw).map_err(failed),
        Payload::View {
            payload: serde_json::Value::String(hex),
            encoding: "hex",
        } => {
            let raw = from_hex(hex).map_err(failed)?;
            from_raw(event.schema_version, &raw).map_err(failed)
        }
        // The view's JSON is the variant's fields alone: the event type names the variant
        // (as it does in serde's externally tagged form, which the enums derive).
        Payload::View { payload, .. } => {
            let tagged = serde_json::json!({ event.event_type: payload });
            serde_json::from_value(tagged).map_err(|error| failed(error.to_string()))
        }
    }
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd-length hex".to_owned());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "not hex".to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fold_is_chosen_by_the_stream_s_category() {
        let category = |id: &str| fold_for(&StreamId::new(id).unwrap()).map(|(c, _)| c);
        assert_eq!(category("order-42"), Some("order"));
        assert_eq!(category("stock-apple"), Some("stock"));
        assert_eq!(category("account-alice"), Some("account"));
        assert_eq!(category("customer-alice"), Some("customer"));
        assert_eq!(category("saga-fulfilment-42"), Some("saga-fulfilment"));
        assert_eq!(category("orders-42"), None);
        assert_eq!(category("saga-other-1"), None);
        assert_eq!(category("ledger"), None);
    }

    /// The same events fold to the same state from the log's bytes, from a server's
    /// decoded JSON and from its hex.
    #[test]
    fn raw_json_and_hex_payloads_fold_alike() {
        let placed = orders::Event::OrderPlaced {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: vec![orders::PlacedLine {
                sku: "apple".into(),
                quantity: 2,
                currency: orders::CURRENCY.into(),
            }],
            shipping_address: None,
        };
        let raw = postcard::to_allocvec(&placed).unwrap();
        let json = orders::event_to_json(orders::Order::EVENT_SCHEMA_VERSION, &raw).unwrap();
        let hex = serde_json::Value::String(crate::events::hex(&raw));
        let event = |payload| FoldEvent {
            version: 0,
            position: 7,
            event_type: "OrderPlaced",
            schema_version: orders::Order::EVENT_SCHEMA_VERSION,
            payload,
        };
        let stream = StreamId::new("order-o-1").unwrap();
        let (_, fold) = fold_for(&stream).unwrap();
        let from_raw = fold(&stream, &[event(Payload::Raw(&raw))]).unwrap();
        let from_json = fold(
            &stream,
            &[event(Payload::View {
                payload: &json,
                encoding: "json",
            })],
        )
        .unwrap();
        let from_hex = fold(
            &stream,
            &[event(Payload::View {
                payload: &hex,
                encoding: "hex",
            })],
        )
        .unwrap();
        assert_eq!(from_raw, from_json);
        assert_eq!(from_raw, from_hex);
        assert_eq!(from_raw["customer_id"], "alice", "{from_raw}");

        let error = fold(&stream, &[event(Payload::Raw(&[0xff, 0xff]))]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("OrderPlaced event at position 7"),
            "{error}"
        );
    }
}
