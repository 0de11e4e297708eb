//! `Idempotency-Key`: the same key and the same request get the first response, also
//! after a restart; the same key with another request is a 422.
//!
//! The log is Annals' only durable store, so a key's record is an event: the first
//! successful response to a keyed request is appended to the stream
//! `idempotency-<blake3 hex of the key>` (one event, written with `NoStream`), holding a
//! fingerprint of the request (route, path, `If-Match`, body as decoded) and the
//! response's status, headers and body. A retry finds it and is answered from it.
//!
//! The command itself is protected too: its id derives from the key ([`command_id`]),
//! and event ids derive from the command id, so if the server stops after the command's
//! events were appended but before the record was, the retried command is recognised by
//! the store (the repository answers with the original outcome) and the record is
//! written then. Requests with one key run one at a time in this process, and one
//! process holds the data directory, so two requests with one key never race.
//!
//! Only successful responses are recorded: a refused command wrote nothing, so running
//! it again is safe by itself, and a refusal (say, insufficient stock) may rightly
//! succeed later.

use eventstore::{EventId, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId, Version};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::ApiError;

/// The category of the streams holding idempotency records.
pub const CATEGORY: &str = "idempotency";

/// The type of a record's event.
pub const EVENT_TYPE: &str = "IdempotentResponseRecorded";

/// The schema version of [`Record`].
pub const SCHEMA_VERSION: u32 = 1;

/// The UUID v5 namespace of command ids derived from keys.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_0c2e_5b7d_4e39_9c84_2d1f_7a3b_5e60);

/// The first response to a keyed request. Stored with postcard: never reorder or change
/// the fields; a new shape needs a new [`SCHEMA_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key as the client sent it.
    pub key: String,
    /// blake3 of the request: route, path, `If-Match` and the decoded body.
    pub fingerprint: [u8; 32],
    /// The response's status code.
    pub status: u16,
    /// The response's `ETag`, if any.
    pub etag: Option<String>,
    /// The response's `Location`, if any.
    pub location: Option<String>,
    /// The response's body (JSON).
    pub body: Vec<u8>,
}

/// The stream of `key`'s record.
pub fn stream_of(key: &str) -> StreamId {
    let hash = blake3::hash(key.as_bytes());
    StreamId::new(format!("{CATEGORY}-{}", hash.to_hex()))
        .expect("a category and 64 hex digits make a valid stream id")
}

/// The id of the command run for `key`, the same at every retry (and after a restart).
pub fn command_id(key: &str) -> Uuid {
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, key.as_bytes())
}

/// The fingerprint of a request: what must be equal for a retry to be "the same".
pub(crate) fn fingerprint(
    route: &str,
    path: &str,
    if_match: Option<Version>,
    body: &serde_json::Value,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("annals idempotent request v1");
    for part in [route, path] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    match if_match {
        Some(version) => hasher.update(&[1]).update(&version.0.to_le_bytes()),
        None => hasher.update(&[0]),
    };
    hasher.update(body.to_string().as_bytes());
    *hasher.finalize().as_bytes()
}

/// The record of `key`, if one was written.
pub(crate) async fn find(store: &EventStore, key: &str) -> Result<Option<Record>, ApiError> {
    let store = store.clone();
    let stream = stream_of(key);
    let events = tokio::task::spawn_blocking(move || {
        store.read_stream(&stream, Version(0), eventstore::Direction::Forward, 1)
    })
    .await
    .map_err(|error| ApiError::internal(&error))??;
    let Some(event) = events.first() else {
        return Ok(None);
    };
    decode(event.schema_version, &event.payload)
        .map(Some)
        .map_err(|error| ApiError::internal(&error))
}

/// Appends `record` as the first response to its key. If another record got there
/// first (only possible across processes), that one is returned and stands.
pub(crate) async fn save(
    store: &EventStore,
    record: &Record,
    command_id: Uuid,
) -> Result<Option<Record>, ApiError> {
    let payload = postcard::to_allocvec(record).map_err(|error| ApiError::internal(&error))?;
    let event = NewEvent {
        id: EventId::new(),
        event_type: EVENT_TYPE.to_owned(),
        schema_version: SCHEMA_VERSION,
        metadata: Metadata {
            correlation_id: Some(command_id),
            causation_id: Some(command_id),
            command_id: Some(command_id),
            ..Metadata::default()
        },
        payload,
    };
    let stream = stream_of(&record.key);
    match store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
    {
        Ok(_) => Ok(None),
        Err(error) if error.is_conflict() => find(store, &record.key).await,
        Err(error) => Err(error.into()),
    }
}

/// Decodes a stored record.
pub fn decode(schema_version: u32, payload: &[u8]) -> Result<Record, eventstore::Error> {
    let _ = schema_version;
    postcard::from_bytes(payload).map_err(|source| eventstore::Error::Codec {
        what: "idempotency record",
        source,
    })
}

/// The first successful response to a request with an `Idempotency-Key`, as the log
/// views show it: the fingerprint in hex, the response's body as the JSON it was.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecordView {
    /// The key as the client sent it.
    pub key: String,
    /// blake3 of the request (route, path, `If-Match`, decoded body), 64 hex digits.
    pub fingerprint: String,
    /// The response's status code.
    pub status: u16,
    /// The response's `ETag`, if any.
    pub etag: Option<String>,
    /// The response's `Location`, if any.
    pub location: Option<String>,
    /// The response's body: its JSON, or its bytes in hex if they are not JSON.
    pub body: serde_json::Value,
}

impl RecordView {
    /// The view of `record`.
    pub fn of(record: &Record) -> Self {
        let body = serde_json::from_slice::<serde_json::Value>(&record.body)
            .unwrap_or_else(|_| serde_json::Value::String(crate::events::hex(&record.body)));
        RecordView {
            key: record.key.clone(),
            fingerprint: crate::events::hex(&record.fingerprint),
            status: record.status,
            etag: record.etag.clone(),
            location: record.location.clone(),
            body,
        }
    }
}

/// A stored record as JSON, for the log views ([`RecordView`]).
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let record = decode(schema_version, payload)?;
    Ok(serde_json::to_value(RecordView::of(&record))
        .expect("a record view always converts to JSON: derived Serialize, no maps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_stable_streams_and_command_ids() {
        assert_eq!(stream_of("k-1"), stream_of("k-1"));
        assert_ne!(stream_of("k-1"), stream_of("k-2"));
        assert_eq!(stream_of("k-1").category(), CATEGORY);
        assert_eq!(command_id("k-1"), command_id("k-1"));
        assert_ne!(command_id("k-1"), command_id("k-2"));
    }

    /// Golden values. Changing them breaks retries across an upgrade: a request retried
    /// with its `Idempotency-Key` after the upgrade would find no record (another stream),
    /// run as another command (another command id, so other event ids the store does not
    /// recognise), or be refused as another request (another fingerprint).
    #[test]
    fn keys_streams_command_ids_and_fingerprints_are_pinned() {
        let key = "order-0-3-7";
        assert_eq!(
            stream_of(key).as_str(),
            "idempotency-a81aee8edbb33a6c5988482d37e87695bbfbb142be79c1683fd1acba85f9fb4c"
        );
        // UUID v5 in the namespace 6a1f0c2e-5b7d-4e39-9c84-2d1f7a3b5e60.
        assert_eq!(
            command_id(key).to_string(),
            "2c279423-5ad3-5198-8e04-5884e143962e"
        );
        let body =
            serde_json::json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 3}]});
        let fingerprint = fingerprint("place_order", "/api/v1/orders", None, &body);
        assert_eq!(
            blake3::Hash::from(fingerprint).to_hex().as_str(),
            "bff88ae3a4bd112f663025f97611ac8b539fb9661d8084adaaf82f88bf366bd2"
        );
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let body = serde_json::json!({"quantity": 5});
        let base = fingerprint("r", "/p", None, &body);
        assert_eq!(base, fingerprint("r", "/p", None, &body));
        assert_ne!(base, fingerprint("r", "/q", None, &body));
        assert_ne!(base, fingerprint("r", "/p", Some(Version(0)), &body));
        assert_ne!(
            base,
            fingerprint("r", "/p", None, &serde_json::json!({"quantity": 6}))
        );
        // Length prefixes keep the parts apart.
        assert_ne!(
            fingerprint("ab", "c", None, &body),
            fingerprint("a", "bc", None, &body)
        );
    }

    #[test]
    fn records_round_trip_and_show_as_json() {
        let record = Record {
            key: "k".into(),
            fingerprint: [7; 32],
            status: 201,
            etag: Some("\"0\"".into()),
            location: None,
            body: br#"{"version":0}"#.to_vec(),
        };
        let bytes = postcard::to_allocvec(&record).unwrap();
        assert_eq!(decode(SCHEMA_VERSION, &bytes).unwrap(), record);
        let json = event_to_json(SCHEMA_VERSION, &bytes).unwrap();
        assert_eq!(json["body"]["version"], 0);
        assert_eq!(json["status"], 201);
    }
}
