//! One commit as one JetStream message: the events of an append and the expected version
//! the appender checked, in postcard. The stream is the message's subject (see
//! `subject`); the recorded time is the time JetStream stored the message; positions and
//! versions are what every node's follower derives by applying the messages in sequence
//! order. So a message holds nothing a node could disagree about.
//!
//! The layout is fixed like the log's record format: add a field only with a new
//! `FORMAT`, and keep decoding the old one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent};
use crate::error::Error;
use crate::ids::{EventId, ExpectedVersion, Version};

/// The first byte of every message body.
const FORMAT: u8 = 1;

/// The body of one commit message.
#[derive(Debug, Serialize, Deserialize)]
struct Commit {
    expected: Expected,
    events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Expected {
    Any,
    NoStream,
    Exact(u64),
    StreamExists,
}

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    id: [u8; 16],
    event_type: String,
    schema_version: u32,
    metadata: WireMetadata,
    payload: Vec<u8>,
}

/// [`Metadata`] without its JSON-only `skip_serializing_if` (which postcard cannot read
/// back); a struct literal, so a new metadata field fails to compile here until added.
#[derive(Debug, Serialize, Deserialize)]
struct WireMetadata {
    correlation_id: Option<[u8; 16]>,
    causation_id: Option<[u8; 16]>,
    traceparent: Option<String>,
    principal: Option<String>,
    command_id: Option<[u8; 16]>,
    issuer: Option<String>,
    action: Option<String>,
    on_behalf_of: Option<String>,
}

/// The message body of an append of `events` that expected `expected`.
pub fn encode(expected: ExpectedVersion, events: &[NewEvent]) -> Result<Vec<u8>, Error> {
    let commit = Commit {
        expected: match expected {
            ExpectedVersion::Any => Expected::Any,
            ExpectedVersion::NoStream => Expected::NoStream,
            ExpectedVersion::Exact(version) => Expected::Exact(version.0),
            ExpectedVersion::StreamExists => Expected::StreamExists,
        },
        events: events.iter().map(Event::of).collect(),
    };
    let mut body = vec![FORMAT];
    postcard::to_io(&commit, &mut body).map_err(|source| Error::Codec {
        what: "a commit message for JetStream",
        source,
    })?;
    Ok(body)
}

/// The expected version and the events a message body holds.
pub fn decode(body: &[u8]) -> Result<(ExpectedVersion, Vec<NewEvent>), String> {
    let Some((&format, rest)) = body.split_first() else {
        return Err("an empty message".to_owned());
    };
    if format != FORMAT {
        return Err(format!(
            "commit format {format}, not one this release reads"
        ));
    }
    let commit: Commit = postcard::from_bytes(rest).map_err(|error| error.to_string())?;
    if commit.events.is_empty() {
        return Err("a commit without events".to_owned());
    }
    let expected = match commit.expected {
        Expected::Any => ExpectedVersion::Any,
        Expected::NoStream => ExpectedVersion::NoStream,
        Expected::Exact(version) => ExpectedVersion::Exact(Version(version)),
        Expected::StreamExists => ExpectedVersion::StreamExists,
    };
    let events = commit
        .events
        .into_iter()
        .map(Event::into_new)
        .collect::<Result<_, _>>()?;
    Ok((expected, events))
}

impl Event {
    fn of(event: &NewEvent) -> Event {
        let Metadata {
            correlation_id,
            causation_id,
            traceparent,
            principal,
            command_id,
            issuer,
            action,
            on_behalf_of,
        } = event.metadata.clone();
        Event {
            id: *event.id.as_uuid().as_bytes(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            metadata: WireMetadata {
                correlation_id: correlation_id.map(Uuid::into_bytes),
                causation_id: causation_id.map(Uuid::into_bytes),
                traceparent,
                principal,
                command_id: command_id.map(Uuid::into_bytes),
                issuer,
                action,
                on_behalf_of,
            },
            payload: event.payload.clone(),
        }
    }

    fn into_new(self) -> Result<NewEvent, String> {
        let WireMetadata {
            correlation_id,
            causation_id,
            traceparent,
            principal,
            command_id,
            issuer,
            action,
            on_behalf_of,
        } = self.metadata;
        let id =
            EventId::from_uuid(Uuid::from_bytes(self.id)).map_err(|error| error.to_string())?;
        Ok(NewEvent {
            id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            metadata: Metadata {
                correlation_id: correlation_id.map(Uuid::from_bytes),
                causation_id: causation_id.map(Uuid::from_bytes),
                traceparent,
                principal,
                command_id: command_id.map(Uuid::from_bytes),
                issuer,
                action,
                on_behalf_of,
            },
            payload: self.payload,
        })
    }
}

/// The `Nats-Msg-Id` of an append: its event id when it has one event, else a digest of
/// all its ids in order (two appends share it only if they hold the same ids).
pub fn message_id(events: &[NewEvent]) -> String {
    match events {
        [event] => event.id.as_uuid().to_string(),
        _ => {
            let mut hasher = blake3::Hasher::new();
            for event in events {
                hasher.update(event.id.as_uuid().as_bytes());
            }
            format!("commit-{}", hasher.finalize().to_hex())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_round_trips_with_every_metadata_field() {
        let mut event = NewEvent::new("OrderPlaced", vec![1, 2, 3]);
        event.schema_version = 3;
        event.metadata = Metadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: Some(Uuid::now_v7()),
            traceparent: Some("00-abc-def-01".into()),
            principal: Some("alice".into()),
            command_id: Some(Uuid::now_v7()),
            issuer: Some("https://issuer".into()),
            action: Some("orders.place".into()),
            on_behalf_of: None,
        };
        let events = vec![event, NewEvent::new("OrderConfirmed", vec![])];
        let body = encode(ExpectedVersion::Exact(Version(7)), &events).unwrap();
        let (expected, decoded) = decode(&body).unwrap();
        assert_eq!(expected, ExpectedVersion::Exact(Version(7)));
        assert_eq!(decoded, events);
    }

    #[test]
    fn a_foreign_or_damaged_body_is_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 0]).is_err());
        assert!(decode(&[FORMAT, 0xFF, 0xFF]).is_err());
        let body = encode(ExpectedVersion::Any, &[]).unwrap();
        assert!(decode(&body).is_err(), "a commit needs events");
    }

    #[test]
    fn message_ids_differ_for_different_appends() {
        let (a, b) = (NewEvent::new("A", vec![]), NewEvent::new("B", vec![]));
        assert_eq!(
            message_id(std::slice::from_ref(&a)),
            a.id.as_uuid().to_string()
        );
        let ab = message_id(&[a.clone(), b.clone()]);
        assert_ne!(ab, message_id(&[b, a.clone()]));
        assert_ne!(ab, message_id(&[a]));
    }
}
