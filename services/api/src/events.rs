//! Recorded events as JSON: the envelope's fields and the payload decoded by the domain
//! crate that owns the stream's category. A payload no crate here can decode (another
//! category, an unknown schema version) is shown as hex, never dropped.

use eventstore::RecordedEvent;

pub use crate::event_types::schema_urn;
use serde::Serialize;
use utoipa::ToSchema;

/// One recorded event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// The event id (UUID v7).
    pub id: String,
    /// The stream it belongs to.
    pub stream: String,
    /// Its 0-based version in that stream.
    pub version: u64,
    /// Its 0-based position in the whole log.
    pub position: u64,
    /// Its type name, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The schema version of its payload as stored (the log is never rewritten).
    pub schema_version: u32,
    /// When it was recorded (RFC 3339, UTC).
    pub recorded_at: String,
    /// Correlation, causation, trace, command id, and who caused it (principal, issuer,
    /// action, on behalf of), where set.
    pub metadata: MetadataView,
    /// The payload: decoded JSON when `payload_encoding` is `json`, else a hex string.
    /// The JSON is the event's fields (no wrapper naming the type), in the current
    /// schema version of its type: an event stored in an older version is upcast.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `json` or `hex`.
    pub payload_encoding: &'static str,
    /// The URN of the JSON Schema the JSON payload conforms to
    /// (`urn:annals:schema:event:<type>:<version>`, served at
    /// `/api/v1/schemas/events/<type>/<version>`); absent for a hex payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<String>,
}

/// An event's metadata; absent members were not set.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct MetadataView {
    /// The business transaction the event belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The command or event that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The W3C trace context of the request that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Who issued the command: the token's subject, or a service's own name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The command that produced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The issuer of the principal's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The policy action that caused it, e.g. `orders.place` or `fulfilment.reserve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The user a service acted for (the customer whose order the saga fulfils).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl EventView {
    /// The JSON view of `event`.
    pub fn of(event: &RecordedEvent) -> Self {
        let (payload, payload_encoding, payload_schema) = match decode_payload(event) {
            Some(json) => (json, "json", payload_schema(event)),
            None => (serde_json::Value::String(hex(&event.payload)), "hex", None),
        };
        let metadata = &event.metadata;
        EventView {
            id: event.id.to_string(),
            stream: event.stream_id.to_string(),
            version: event.version.0,
            position: event.position.0,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            metadata: MetadataView {
                correlation_id: metadata.correlation_id.map(|id| id.to_string()),
                causation_id: metadata.causation_id.map(|id| id.to_string()),
                traceparent: metadata.traceparent.clone(),
                principal: metadata.principal.clone(),
                command_id: metadata.command_id.map(|id| id.to_string()),
                issuer: metadata.issuer.clone(),
                action: metadata.action.clone(),
                on_behalf_of: metadata.on_behalf_of.clone(),
            },
            payload,
            payload_encoding,
            payload_schema,
        }
    }
}

impl EventView {
    /// The view of `event` as the server's routes show it: [`EventView::of`], with
    /// `"erased": true` added to each sealed value whose key `key_store` destroyed
    /// ([`privacy::mark_erased`]). Never decrypted: a log read shows ciphertext.
    pub fn marked(event: &RecordedEvent, key_store: Option<&privacy::KeyStore>) -> Self {
        let mut view = Self::of(event);
        crate::personal_data::mark_erased(key_store, &mut view.payload);
        view
    }
}

/// The payload as the JSON a consumer sees, if the stream's category belongs to a crate
/// that knows it: the event's fields as an object (`{"total":360}`; no wrapper naming the
/// type, which the envelope names), in the current schema version of its type, an older
/// stored version upcast ([`payload_schema_version`] says which). `None` for a category
/// or a schema version no crate here knows, or a damaged payload.
///
/// A pure function of the recorded event: the HTTP views, the CLI and the NATS relay
/// (CloudEvents `data`) all show the same JSON for an event.
pub fn decode_payload(event: &RecordedEvent) -> Option<serde_json::Value> {
    let category = crate::event_types::category_of(&event.stream_id);
    crate::event_types::decode_json(category, event.schema_version, &event.payload)?.ok()
}

/// The version of the JSON [`decode_payload`] gives for `event`: the current schema
/// version of its type (older stored versions are upcast on read). `None` for a type
/// Annals does not have.
pub fn payload_schema_version(event: &RecordedEvent) -> Option<u32> {
    crate::event_types::current_version(&event.event_type)
}

/// The URN of the JSON Schema that [`decode_payload`]'s JSON for `event` conforms to,
/// the CloudEvents `dataschema` of its message: `urn:annals:schema:event:<type>:<N>`
/// with N its type's current version (not the stored one, for an upcast event).
pub fn payload_schema(event: &RecordedEvent) -> Option<String> {
    schema_urn(&event.event_type, payload_schema_version(event)?)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use eventstore::{Metadata, NewEvent, StreamId};

    use super::EventView;

    fn recorded(metadata: Metadata) -> eventstore::RecordedEvent {
        let event = NewEvent::new("OrderPlaced", vec![0xff]).with_metadata(metadata);
        eventstore::RecordedEvent {
            id: event.id,
            stream_id: StreamId::new("other-1").unwrap(),
            version: eventstore::Version(0),
            position: eventstore::Position(0),
            event_type: event.event_type,
            schema_version: 1,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            metadata: event.metadata,
            payload: event.payload,
            last_in_commit: true,
        }
    }

    /// Who caused an event is part of its JSON; members that are not set are absent.
    #[test]
    fn the_metadata_shows_who_caused_the_event() {
        let view = EventView::of(&recorded(Metadata {
            principal: Some("annals-fulfilment".into()),
            issuer: Some("annals".into()),
            action: Some("fulfilment.charge".into()),
            on_behalf_of: Some("alice".into()),
            ..Metadata::default()
        }));
        assert_eq!(
            serde_json::to_value(&view.metadata).unwrap(),
            serde_json::json!({
                "principal": "annals-fulfilment",
                "issuer": "annals",
                "action": "fulfilment.charge",
                "on_behalf_of": "alice",
            })
        );
        let plain = EventView::of(&recorded(Metadata::default()));
        assert_eq!(
            serde_json::to_value(&plain.metadata).unwrap(),
            serde_json::json!({})
        );
    }
}
