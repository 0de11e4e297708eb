//! What the relay of this binary publishes as JSON: the outbox crate does not know the
//! domain's types, so the binary hands it the API's decoder (the same JSON as
//! `GET /api/v1/streams/...`) and the URN of the schema of that JSON, served at
//! `GET /api/v1/schemas/events/<type>/<version>`. An event the API
//! cannot decode goes to NATS as its bytes (`application/octet-stream`), never dropped.

use eventstore::RecordedEvent;
use outbox::{JsonData, JsonPayloads};

/// The decoder every relay of this binary (`annals serve`, `annals bench relay`) gets.
pub fn json_payloads() -> JsonPayloads {
    JsonPayloads::new(json_of)
}

/// The payload of `event` as JSON, with the URN of the schema that JSON follows (its
/// type's current version: an older stored version is upcast on decoding).
fn json_of(event: &RecordedEvent) -> Option<JsonData> {
    let data = api::events::decode_payload(event)?;
    Some(JsonData {
        data,
        dataschema: api::events::payload_schema(event),
    })
}

#[cfg(test)]
mod tests {
    use eventstore::{Metadata, Position, StreamId, Version};

    use super::*;

    fn recorded(stream: &str, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        RecordedEvent {
            id: eventstore::EventId::new(),
            stream_id: StreamId::new(stream).unwrap(),
            version: Version(0),
            position: Position(0),
            event_type: event_type.into(),
            schema_version: 1,
            recorded_at: chrono::Utc::now(),
            metadata: Metadata::default(),
            payload,
            last_in_commit: true,
        }
    }

    #[test]
    fn a_domain_event_has_json_and_a_schema_and_a_foreign_one_has_neither() {
        let confirmed = orders::Event::OrderConfirmed { total: 360 };
        let event = recorded(
            "order-o1",
            "OrderConfirmed",
            postcard::to_allocvec(&confirmed).unwrap(),
        );
        let json = json_payloads().json_of(&event).expect("an order event");
        assert_eq!(json.data, serde_json::json!({"total": 360}));
        // The schema of the JSON: the type's current version (a stored version 1 is
        // upcast on decoding).
        assert_eq!(json.dataschema, api::events::payload_schema(&event));
        assert!(
            json.dataschema
                .as_deref()
                .is_some_and(|urn| urn.starts_with("urn:annals:schema:event:OrderConfirmed:")),
            "{:?}",
            json.dataschema
        );
        assert_eq!(
            json_payloads().json_of(&recorded("ledger-1", "Noted", vec![0xde, 0xad])),
            None
        );
        assert_eq!(
            json_payloads().json_of(&recorded("order-o1", "OrderConfirmed", vec![0xff; 3])),
            None
        );
    }
}
