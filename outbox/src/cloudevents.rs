//! The CloudEvents side of a message: the `ce-*` headers of the CloudEvents 1.0 NATS
//! protocol binding (binary content mode), and the JSON a consumer reads in the body.
//!
//! This crate does not know the domain's types: whoever starts the relay hands it a
//! [`JsonPayloads`], a function from an event to its payload as JSON and the URN of the
//! schema that JSON follows (the `annals` binary passes the API's decoder). An event it
//! cannot turn into JSON (an unknown category, an undecodable payload, no function at
//! all) is published with its payload bytes as the body and `ce-datacontenttype:
//! application/octet-stream`: never dropped. `docs/NATS.md` describes what consumers see.
//!
//! Values follow the binding: each attribute under its name prefixed `ce-`, text
//! percent-encoded (space, `"`, `%` and every byte outside printable ASCII), which is
//! what [`crate::message::encode_text`] does for the non-empty texts attributes are.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use eventstore::RecordedEvent;

use crate::message::subject_token;

/// `ce-specversion`: always `1.0`.
pub const SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
/// `ce-id`: the event id (a UUID v7), unique across the log.
pub const ID: HeaderName = HeaderName::from_static("ce-id");
/// `ce-source`: `/annals/<category>`, the bounded context the event's stream belongs to.
pub const SOURCE: HeaderName = HeaderName::from_static("ce-source");
/// `ce-type`: `annals.<category>.<event type>`.
pub const TYPE: HeaderName = HeaderName::from_static("ce-type");
/// `ce-time`: when the log recorded the event, RFC 3339 in UTC with six fractional digits.
pub const TIME: HeaderName = HeaderName::from_static("ce-time");
/// `ce-subject`: the stream id, percent-encoded.
pub const SUBJECT: HeaderName = HeaderName::from_static("ce-subject");
/// `ce-datacontenttype`: [`JSON`] or [`OCTET_STREAM`].
pub const DATACONTENTTYPE: HeaderName = HeaderName::from_static("ce-datacontenttype");
/// `ce-dataschema`: the URN of the JSON schema of the body; only with a JSON body whose
/// schema is known.
pub const DATASCHEMA: HeaderName = HeaderName::from_static("ce-dataschema");

/// The CloudEvents version the messages follow.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of a JSON body.
pub const JSON: &str = "application/json";
/// The content type of a body that holds the payload bytes themselves.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// An event's payload as JSON, with the schema it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonData {
    /// The payload as the consumer reads it.
    pub data: serde_json::Value,
    /// The URN of its JSON schema (`urn:annals:schema:event:<type>:<version>`), if one
    /// is published.
    pub dataschema: Option<String>,
}

type ToJson = dyn Fn(&RecordedEvent) -> Option<JsonData> + Send + Sync;

/// How the relay turns a payload into JSON: a function injected by whoever starts it
/// (the `annals` binary passes the API's decoder). The default has none: every body is
/// then the payload bytes (`application/octet-stream`).
#[derive(Clone, Default)]
pub struct JsonPayloads(Option<Arc<ToJson>>);

impl JsonPayloads {
    /// Payloads made JSON by `to_json`; `None` from it publishes that event's bytes.
    pub fn new(
        to_json: impl Fn(&RecordedEvent) -> Option<JsonData> + Send + Sync + 'static,
    ) -> Self {
        JsonPayloads(Some(Arc::new(to_json)))
    }

    /// No JSON: every body is the payload bytes.
    pub fn none() -> Self {
        JsonPayloads(None)
    }

    /// The JSON of `event`'s payload, if there is a function and it knows the event.
    pub fn json_of(&self, event: &RecordedEvent) -> Option<JsonData> {
        self.0.as_ref().and_then(|to_json| to_json(event))
    }
}

impl std::fmt::Debug for JsonPayloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "JsonPayloads(a decoder)"
        } else {
            "JsonPayloads(none)"
        })
    }
}

/// `ce-source` of `event`: `/annals/<category>`, the category made a subject token (so
/// it needs no encoding; `order-42` → `/annals/order`).
pub fn source(event: &RecordedEvent) -> String {
    format!("/annals/{}", subject_token(event.stream_id.category()))
}

/// `ce-type` of `event`: `annals.<category>.<event type>`, both made subject tokens, so
/// it is the message's subject after its prefix (`annals.order.OrderPlaced`).
pub fn event_type(event: &RecordedEvent) -> String {
    format!(
        "annals.{}.{}",
        subject_token(event.stream_id.category()),
        subject_token(&event.event_type)
    )
}

/// Inserts the attributes every message has (`ce-specversion`, `ce-id`, `ce-source`,
/// `ce-type`, `ce-time`, `ce-subject`); the content type and schema depend on the body.
/// `id`, `time` and `subject` are the texts of the event id, its RFC 3339 time and its
/// percent-encoded stream id, which the `Annals-*` headers carry too: made once.
pub fn insert_attributes(
    headers: &mut HeaderMap,
    event: &RecordedEvent,
    id: &str,
    time: &str,
    subject: &str,
) {
    headers.insert(SPECVERSION, SPEC_VERSION);
    headers.insert(ID, id);
    headers.insert(SOURCE, source(event));
    headers.insert(TYPE, event_type(event));
    headers.insert(TIME, time);
    headers.insert(SUBJECT, subject);
}
