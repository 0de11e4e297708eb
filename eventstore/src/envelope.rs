//! The event envelope: what a writer proposes ([`NewEvent`]), what the log holds
//! ([`RecordedEvent`]) and the metadata that travels with every event.
//!
//! The stored form is postcard, which is not self-describing: the field order of
//! [`StoredEvent`] is the on-disk format. Change it only by adding a new record format
//! version, and keep the golden test in `segment.rs` passing for the old one. The
//! identity fields added later ([`StoredIdentity`]: issuer, action, on behalf of) are not
//! part of that layout: they follow it in the record body, announced by a flag bit, so
//! an event without them is stored byte for byte as before (see `segment.rs`).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{EventId, Position, StreamId, Version};

/// Who and what caused an event; carried unchanged from the command to the log, the
/// read models, the sagas and NATS.
///
/// Its serde form is JSON only (the export lines): the identity fields added with
/// authentication are left out when not set, so an event without them exports exactly
/// as before and an export written before them still imports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by every event of one business transaction.
    pub correlation_id: Option<Uuid>,
    /// The id of the command or event that caused this one.
    pub causation_id: Option<Uuid>,
    /// W3C trace context of the request that wrote the event.
    pub traceparent: Option<String>,
    /// The authenticated subject that issued the command (the token's `sub`; for a
    /// command a service issues, the service's own name).
    pub principal: Option<String>,
    /// The id of the command that produced the event.
    pub command_id: Option<Uuid>,
    /// Who vouched for `principal`: the issuer (`iss`) of the token that authenticated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The policy action that caused the event, e.g. `orders.place` (for a saga's
    /// command, the saga's step, e.g. `fulfilment.reserve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For a command a service issues for a user (the saga for the customer who placed
    /// the order): that user's subject. `principal` is then the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// An event proposed for appending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; re-sending an id the store holds makes the append a no-op retry.
    pub id: EventId,
    /// The event's type name, e.g. `OrderPlaced`.
    pub event_type: String,
    /// The version of the payload's schema, so every past shape stays decodable.
    pub schema_version: u32,
    /// Correlation, causation, trace and identity.
    pub metadata: Metadata,
    /// The postcard-encoded payload.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// An event with a fresh id, schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, payload: Vec<u8>) -> Self {
        NewEvent {
            id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            metadata: Metadata::default(),
            payload,
        }
    }

    /// The same event with the given id.
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// The same event with the given metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as the log holds it: durable, positioned and immutable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The event's unique id (UUID v7).
    pub id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its 0-based version in that stream.
    pub version: Version,
    /// Its 0-based position in the whole log.
    pub position: Position,
    /// Its type name.
    pub event_type: String,
    /// The schema version of its payload.
    pub schema_version: u32,
    /// When the writer recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, trace and identity.
    pub metadata: Metadata,
    /// The postcard-encoded payload.
    pub payload: Vec<u8>,
    /// Whether this is the last event of the append that wrote it: appends are atomic,
    /// and a consumer (or an import) can keep them so.
    pub last_in_commit: bool,
}

/// The on-disk body of one record, borrowed from the read buffer so that a replay
/// decodes without allocating. Field order is the file format.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredEvent<'a> {
    /// Event id bytes.
    pub id: [u8; 16],
    /// Stream id.
    #[serde(borrow)]
    pub stream_id: &'a str,
    /// Stream version.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// Type name.
    #[serde(borrow)]
    pub event_type: &'a str,
    /// Payload schema version.
    pub schema_version: u32,
    /// Microseconds since the Unix epoch, UTC.
    pub recorded_at_micros: i64,
    /// Metadata.
    #[serde(borrow)]
    pub metadata: StoredMetadata<'a>,
    /// Payload bytes.
    #[serde(borrow)]
    pub payload: &'a [u8],
    /// Issuer, action and on-behalf-of. Not part of the postcard layout above: the record
    /// stores it after the event, as a second postcard value, when it is not empty
    /// (`segment::FLAG_IDENTITY`).
    #[serde(skip)]
    pub identity: StoredIdentity<'a>,
}

/// The on-disk form of [`Metadata`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StoredMetadata<'a> {
    /// Correlation id bytes.
    pub correlation_id: Option<[u8; 16]>,
    /// Causation id bytes.
    pub causation_id: Option<[u8; 16]>,
    /// W3C traceparent.
    #[serde(borrow)]
    pub traceparent: Option<&'a str>,
    /// Principal.
    #[serde(borrow)]
    pub principal: Option<&'a str>,
    /// Command id bytes.
    pub command_id: Option<[u8; 16]>,
}

/// The on-disk form of the identity fields of [`Metadata`] that the original record
/// layout has no place for. Field order is the file format.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIdentity<'a> {
    /// The principal's token issuer.
    #[serde(borrow)]
    pub issuer: Option<&'a str>,
    /// The policy action.
    #[serde(borrow)]
    pub action: Option<&'a str>,
    /// The user a service acted for.
    #[serde(borrow)]
    pub on_behalf_of: Option<&'a str>,
}

impl<'a> StoredIdentity<'a> {
    /// The stored form of the identity fields of `metadata`.
    pub fn of(metadata: &'a Metadata) -> Self {
        StoredIdentity {
            issuer: metadata.issuer.as_deref(),
            action: metadata.action.as_deref(),
            on_behalf_of: metadata.on_behalf_of.as_deref(),
        }
    }

    /// True when no field is set: the record then stores no identity block at all.
    pub fn is_empty(&self) -> bool {
        self.issuer.is_none() && self.action.is_none() && self.on_behalf_of.is_none()
    }
}

impl<'a> StoredMetadata<'a> {
    /// The stored form of `metadata`.
    pub fn of(metadata: &'a Metadata) -> Self {
        StoredMetadata {
            correlation_id: metadata.correlation_id.map(|id| *id.as_bytes()),
            causation_id: metadata.causation_id.map(|id| *id.as_bytes()),
            traceparent: metadata.traceparent.as_deref(),
            principal: metadata.principal.as_deref(),
            command_id: metadata.command_id.map(|id| *id.as_bytes()),
        }
    }
}

impl<'a> StoredEvent<'a> {
    /// The stored form of `event`, to be written at `stream_id`/`version`/`position`.
    pub fn of(
        event: &'a NewEvent,
        stream_id: &'a StreamId,
        version: Version,
        position: Position,
        recorded_at_micros: i64,
    ) -> Self {
        StoredEvent {
            id: *event.id.as_uuid().as_bytes(),
            stream_id: stream_id.as_str(),
            version: version.0,
            position: position.0,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at_micros,
            metadata: StoredMetadata::of(&event.metadata),
            payload: &event.payload,
            identity: StoredIdentity::of(&event.metadata),
        }
    }

    /// The owned form. Fails only on a stream id that no writer could have written,
    /// which means the record is corrupt.
    pub fn to_recorded(&self, last_in_commit: bool) -> Result<RecordedEvent, crate::Error> {
        Ok(RecordedEvent {
            id: EventId::from_uuid(Uuid::from_bytes(self.id))?,
            stream_id: StreamId::new(self.stream_id)?,
            version: Version(self.version),
            position: Position(self.position),
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            recorded_at: Utc
                .timestamp_micros(self.recorded_at_micros)
                .single()
                .unwrap_or_default(),
            metadata: Metadata {
                correlation_id: self.metadata.correlation_id.map(Uuid::from_bytes),
                causation_id: self.metadata.causation_id.map(Uuid::from_bytes),
                traceparent: self.metadata.traceparent.map(str::to_owned),
                principal: self.metadata.principal.map(str::to_owned),
                command_id: self.metadata.command_id.map(Uuid::from_bytes),
                issuer: self.identity.issuer.map(str::to_owned),
                action: self.identity.action.map(str::to_owned),
                on_behalf_of: self.identity.on_behalf_of.map(str::to_owned),
            },
            payload: self.payload.to_vec(),
            last_in_commit,
        })
    }
}

impl RecordedEvent {
    /// The stored form of this event, as it was written.
    pub fn to_stored(&self) -> StoredEvent<'_> {
        StoredEvent {
            id: *self.id.as_uuid().as_bytes(),
            stream_id: self.stream_id.as_str(),
            version: self.version.0,
            position: self.position.0,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
            metadata: StoredMetadata::of(&self.metadata),
            payload: &self.payload,
            identity: StoredIdentity::of(&self.metadata),
        }
    }
}
