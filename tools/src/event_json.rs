//! What the relay of this binary publishes as JSON: the outbox crate does not know the
//! domain's types, so the binary hands it the API's decoder (the same JSON as
//! `GET /api/v1/streams/...`) and the URN of each event type's schema. An event the API
//! cannot decode goes to NATS as its bytes (`application/octet-stream`), never dropped.

use eventstore::RecordedEvent;
use outbox::{JsonData, JsonPayloads};

/// The decoder every relay of this binary (`annals serve`, `annals bench relay`) gets.
pub fn json_payloads() -> JsonPayloads {
    JsonPayloads::new(json_of)
}

/// The payload of `event` as JSON, with its schema's URN.
fn json_of(event: &RecordedEvent) -> Option<JsonData> {
    let data = api::events::decode_payload(event)?;
    Some(JsonData {
        data,
        dataschema: schema_urn(&event.event_type, event.schema_version),
    })
}

/// `urn:annals:schema:event:<EventType>:<SchemaVersion>`, the name of the JSON schema
/// of a payload (served at `GET /api/v1/schemas/events/<EventType>/<SchemaVersion>`).
fn schema_urn(event_type: &str, schema_version: u32) -> Option<String> {
    Some(format!(
        "urn:annals:schema:event:{event_type}:{schema_version}"
    ))
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
        assert!(json.data.to_string().contains("360"), "{}", json.data);
        assert_eq!(
            json.dataschema.as_deref(),
            Some("urn:annals:schema:event:OrderConfirmed:1")
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
