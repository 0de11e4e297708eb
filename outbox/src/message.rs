//! The NATS form of an event: its subject, its headers and its body, and the way back.
//! Pure functions, no IO: the relay, restore, audit and any other consumer share them,
//! so what is written is exactly what is read. `docs/NATS.md` describes the format for
//! consumers written in other languages.
//!
//! - subject: `<prefix>.<category>.<event type>`, each token [sanitized](subject_token)
//!   (the subject routes; it is not needed to rebuild the event);
//! - headers: the CloudEvents 1.0 attributes of the NATS binding's binary content mode
//!   (`ce-*`, [`crate::cloudevents`]), so that a consumer in any language reads the
//!   event without this code; `Nats-Msg-Id` (the event id) and the `Annals-*` headers
//!   below, which carry every other field of the [`RecordedEvent`], so that [`decode`]
//!   rebuilds it exactly; and `Annals-Prev-Hash` / `Annals-Hash`, the record's place in
//!   the log's hash chain ([`Chain`]), so that a copy verifies itself message by message;
//! - body ([`encode`]): the payload as JSON (`ce-datacontenttype: application/json`)
//!   when the relay's [`JsonPayloads`](crate::cloudevents::JsonPayloads) knows the event,
//!   with the exact payload bytes kept in `Annals-Payload` (base64); otherwise, or when
//!   the JSON form would not fit the server's `max_payload`, the payload bytes themselves
//!   (`application/octet-stream`, no `Annals-Payload`). Either way [`decode`] gets the
//!   exact bytes back: the JSON is for consumers, never read back.
//!
//! Format 2 is format 1 plus the `ce-*` headers, the JSON body and `Annals-Payload`;
//! [`decode`] reads both, so a stream written by an older relay still restores and audits.
//!
//! The relay publishes each event in a `relay publish` span that continues the event's
//! trace; when that span has a trace context, the `traceparent` header carries it (a
//! consumer's span then follows the publish, the W3C producer convention) and
//! `Annals-Traceparent` keeps the event's stored one ([`carry_publish_trace`]), so that
//! [`decode`] still rebuilds the event exactly.
//!
//! Text values (stream id, event type, principal, issuer, action, on behalf of,
//! traceparent) are written
//! [percent-encoded](encode_text): NATS header values cannot hold line breaks, and header
//! parsers may trim surrounding white space.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use eventstore::{ChainHash, EventId, Metadata, Position, RecordedEvent, StreamId, Version};
use uuid::Uuid;

use crate::cloudevents::{self, JsonData};

/// The version of this message format, in the `Annals-Format` header. A consumer that
/// meets a higher number should stop rather than guess. [`decode`] reads format 1 too
/// (the same headers without `ce-*`, the body always the payload bytes).
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_TEXT: &str = "2";
/// The oldest format [`decode`] reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// What [`encode`] leaves free of the server's `max_payload` for the headers the relay
/// adds afterwards (the publish span's `traceparent`, `Annals-Traceparent`) and the
/// client's own framing, when it decides whether the JSON form fits.
pub const HEADROOM_BYTES: usize = 1024;

/// `Annals-Format`: the format version ([`FORMAT_VERSION`]).
pub const FORMAT: HeaderName = HeaderName::from_static("Annals-Format");
/// `Annals-Stream`: the stream id, percent-encoded.
pub const STREAM: HeaderName = HeaderName::from_static("Annals-Stream");
/// `Annals-Version`: the 0-based stream version, decimal.
pub const VERSION: HeaderName = HeaderName::from_static("Annals-Version");
/// `Annals-Position`: the 0-based global log position, decimal.
pub const POSITION: HeaderName = HeaderName::from_static("Annals-Position");
/// `Annals-Event-Type`: the event type, percent-encoded.
pub const EVENT_TYPE: HeaderName = HeaderName::from_static("Annals-Event-Type");
/// `Annals-Schema-Version`: the payload's schema version, decimal.
pub const SCHEMA_VERSION: HeaderName = HeaderName::from_static("Annals-Schema-Version");
/// `Annals-Recorded-At`: RFC 3339 in UTC with exactly six fractional digits
/// (microseconds, the log's precision).
pub const RECORDED_AT: HeaderName = HeaderName::from_static("Annals-Recorded-At");
/// `Annals-Last-In-Commit`: `true` on the last event of an append, else `false`.
pub const LAST_IN_COMMIT: HeaderName = HeaderName::from_static("Annals-Last-In-Commit");
/// `Annals-Correlation-Id`: a UUID; absent when the event has none.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("Annals-Correlation-Id");
/// `Annals-Causation-Id`: a UUID; absent when the event has none.
pub const CAUSATION_ID: HeaderName = HeaderName::from_static("Annals-Causation-Id");
/// `Annals-Command-Id`: a UUID; absent when the event has none.
pub const COMMAND_ID: HeaderName = HeaderName::from_static("Annals-Command-Id");
/// `Annals-Principal`: percent-encoded; absent when the event has none. The subject who
/// caused the event, never a token.
pub const PRINCIPAL: HeaderName = HeaderName::from_static("Annals-Principal");
/// `Annals-Issuer`: the issuer of the principal's token, percent-encoded; absent when none.
pub const ISSUER: HeaderName = HeaderName::from_static("Annals-Issuer");
/// `Annals-Action`: the policy action that caused the event, percent-encoded; absent when none.
pub const ACTION: HeaderName = HeaderName::from_static("Annals-Action");
/// `Annals-On-Behalf-Of`: the user a service acted for, percent-encoded; absent when none.
pub const ON_BEHALF_OF: HeaderName = HeaderName::from_static("Annals-On-Behalf-Of");
/// `Annals-Prev-Hash`: the chain hash of the log's record before this one (64 hex
/// digits; zeros before position 0).
pub const PREV_HASH: HeaderName = HeaderName::from_static("Annals-Prev-Hash");
/// `Annals-Hash`: this record's chain hash, BLAKE3 of its record body, which holds the
/// previous hash (64 hex digits). The last message's is the log's head hash.
pub const HASH: HeaderName = HeaderName::from_static("Annals-Hash");
/// `Annals-Payload`: the payload bytes, standard base64 with padding, present when the
/// body is the payload as JSON (format 2); absent when the body is the payload itself.
pub const PAYLOAD: HeaderName = HeaderName::from_static("Annals-Payload");
/// `traceparent`: the W3C trace context, under its standard name so that tracing-aware
/// consumers pick it up; percent-encoded like the other texts; absent when none.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `Annals-Traceparent`: the event's stored trace context, percent-encoded, present only
/// when `traceparent` carries the relay's publish span instead ([`carry_publish_trace`]).
pub const STORED_TRACEPARENT: HeaderName = HeaderName::from_static("Annals-Traceparent");

/// How an empty text is written: percent-encoding never produces `""` (a `"` is always
/// encoded), and an empty header value may not survive every parser.
const EMPTY_TEXT: &str = "\"\"";

/// The subject of `event` under `prefix`: `<prefix>.<category>.<event type>`.
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    let mut subject = String::with_capacity(prefix.len() + 2 + 48);
    subject.push_str(prefix);
    subject.push('.');
    push_token(&mut subject, event.stream_id.category());
    subject.push('.');
    push_token(&mut subject, &event.event_type);
    subject
}

/// `text` made into one valid NATS subject token: `.`, `*`, `>`, white space, control
/// and non-ASCII characters become `_`, and an empty text becomes `_`.
pub fn subject_token(text: &str) -> String {
    let mut token = String::with_capacity(text.len().max(1));
    push_token(&mut token, text);
    token
}

fn push_token(out: &mut String, text: &str) {
    if text.is_empty() {
        out.push('_');
        return;
    }
    for c in text.chars() {
        let keep = c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>');
        out.push(if keep { c } else { '_' });
    }
}

/// The headers of `event` (see the module documentation), without the body's content
/// type ([`encode`] adds it) and the chain ([`chained_headers`]).
pub fn headers(event: &RecordedEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let id = event.id.to_string();
    let stream = encode_text(event.stream_id.as_str());
    let recorded_at = event
        .recorded_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    cloudevents::insert_attributes(&mut headers, event, &id, &recorded_at, &stream);
    headers.insert(NATS_MESSAGE_ID, id);
    headers.insert(FORMAT, FORMAT_TEXT);
    headers.insert(STREAM, stream);
    headers.insert(VERSION, event.version.0.to_string());
    headers.insert(POSITION, event.position.0.to_string());
    headers.insert(EVENT_TYPE, encode_text(&event.event_type));
    headers.insert(SCHEMA_VERSION, event.schema_version.to_string());
    headers.insert(RECORDED_AT, recorded_at);
    headers.insert(
        LAST_IN_COMMIT,
        if event.last_in_commit {
            "true"
        } else {
            "false"
        },
    );
    let metadata = &event.metadata;
    for (name, id) in [
        (CORRELATION_ID, metadata.correlation_id),
        (CAUSATION_ID, metadata.causation_id),
        (COMMAND_ID, metadata.command_id),
    ] {
        if let Some(id) = id {
            headers.insert(name, id.to_string());
        }
    }
    for (name, text) in [
        (PRINCIPAL, &metadata.principal),
        (ISSUER, &metadata.issuer),
        (ACTION, &metadata.action),
        (ON_BEHALF_OF, &metadata.on_behalf_of),
        (TRACEPARENT, &metadata.traceparent),
    ] {
        if let Some(text) = text {
            headers.insert(name, encode_text(text));
        }
    }
    headers
}

/// Makes the `traceparent` header of `event`'s message carry `publish`, the trace
/// context of the relay's publish span, and keeps the event's stored one in
/// `Annals-Traceparent`. Does nothing when the event stores no trace context or there is
/// no publish context (no OpenTelemetry layer): the message is then exactly what
/// [`headers`] writes.
pub fn carry_publish_trace(headers: &mut HeaderMap, event: &RecordedEvent, publish: Option<&str>) {
    if let (Some(stored), Some(publish)) = (&event.metadata.traceparent, publish) {
        headers.insert(STORED_TRACEPARENT, encode_text(stored));
        headers.insert(TRACEPARENT, encode_text(publish));
    }
}

/// A record's place in the log's hash chain: the hash before it and its own.
///
/// A reader checks a copy message by message: each message's `prev` is the `hash` of the
/// message before it (a missing, repeated or reordered message breaks that link), and
/// its `hash` is [`ChainHash::of_record`]`(prev, event)` (an altered field or body, or a
/// wrong hash, breaks that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The chain hash of the record before.
    pub prev: ChainHash,
    /// This record's chain hash.
    pub hash: ChainHash,
}

impl Chain {
    /// The chain of `event` after a record whose hash is `prev`.
    pub fn after(prev: ChainHash, event: &RecordedEvent) -> Result<Chain, eventstore::Error> {
        Ok(Chain {
            prev,
            hash: ChainHash::of_record(&prev, event)?,
        })
    }

    /// Whether `hash` is the chain hash of `event` after `prev`.
    pub fn holds_for(&self, event: &RecordedEvent) -> bool {
        ChainHash::of_record(&self.prev, event).is_ok_and(|hash| hash == self.hash)
    }
}

/// The headers of `event` with its place in the hash chain: what the relay publishes.
pub fn chained_headers(event: &RecordedEvent, chain: &Chain) -> HeaderMap {
    let mut headers = headers(event);
    headers.insert(PREV_HASH, chain.prev.to_string());
    headers.insert(HASH, chain.hash.to_string());
    headers
}

/// The chain headers of a message: `None` when it has neither (a message of a release
/// before the headers existed), an error when it has one only or a malformed one.
pub fn chain(headers: Option<&HeaderMap>) -> Result<Option<Chain>, DecodeError> {
    let Some(headers) = headers else {
        return Ok(None);
    };
    let parse = |name: HeaderName| -> Result<Option<ChainHash>, DecodeError> {
        let label = name_of(&name);
        optional(headers, name)
            .map(|text| {
                text.parse::<ChainHash>()
                    .map_err(|error| DecodeError(format!("{label}: {error}")))
            })
            .transpose()
    };
    match (parse(PREV_HASH)?, parse(HASH)?) {
        (Some(prev), Some(hash)) => Ok(Some(Chain { prev, hash })),
        (None, None) => Ok(None),
        _ => Err(DecodeError(
            "the message carries one of Annals-Prev-Hash and Annals-Hash without the other".into(),
        )),
    }
}

/// The whole message of `event` with its place in the chain: its headers and its body.
/// The body is `json`'s data (with the payload in `Annals-Payload`) when there is one
/// and the message then fits in `max_message_bytes` (the server's `max_payload`) less
/// [`HEADROOM_BYTES`]; otherwise the payload bytes. An empty payload is always sent as
/// itself (an empty header value may not survive every parser).
pub fn encode(
    event: &RecordedEvent,
    chain: &Chain,
    json: Option<JsonData>,
    max_message_bytes: usize,
) -> (HeaderMap, Bytes) {
    let mut headers = chained_headers(event, chain);
    if let Some(json) = json.filter(|_| !event.payload.is_empty()) {
        let body = serde_json::to_vec(&json.data).expect("a JSON value always serializes");
        let schema = json.dataschema.as_deref().map(encode_text);
        let payload = BASE64.encode(&event.payload);
        // The size the JSON form would have, counted before the headers are added (a
        // line is `name: value\r\n`), so that the bytes form needs no copy of them.
        let line =
            |name: &HeaderName, value: &str| AsRef::<str>::as_ref(name).len() + 2 + value.len() + 2;
        let size = header_bytes(&headers)
            + line(&cloudevents::DATACONTENTTYPE, cloudevents::JSON)
            + schema
                .as_deref()
                .map_or(0, |schema| line(&cloudevents::DATASCHEMA, schema))
            + line(&PAYLOAD, &payload)
            + body.len();
        if size + HEADROOM_BYTES <= max_message_bytes {
            headers.insert(cloudevents::DATACONTENTTYPE, cloudevents::JSON);
            if let Some(schema) = schema {
                headers.insert(cloudevents::DATASCHEMA, schema);
            }
            headers.insert(PAYLOAD, payload);
            return (headers, Bytes::from(body));
        }
        tracing::debug!(
            position = %event.position,
            size,
            max_message_bytes,
            "the JSON form of the event does not fit the server's max_payload; publishing its bytes"
        );
    }
    headers.insert(cloudevents::DATACONTENTTYPE, cloudevents::OCTET_STREAM);
    (headers, Bytes::copy_from_slice(&event.payload))
}

/// The bytes `headers` take on the wire: `NATS/1.0` and a line per value.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|value| AsRef::<str>::as_ref(name).len() + 2 + value.as_str().len() + 2)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

/// Why a message is not a well-formed Annals event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Rebuilds the event from a message's headers and body, of format 1 or 2. Its payload
/// is `Annals-Payload` when present (the body is then JSON for consumers), else the
/// body. Its trace context is `Annals-Traceparent` when present (the `traceparent`
/// header then names the relay's publish span), else `traceparent`.
pub fn decode(headers: Option<&HeaderMap>, body: &[u8]) -> Result<RecordedEvent, DecodeError> {
    let headers = headers.ok_or_else(|| DecodeError("the message has no headers".into()))?;
    let format: u32 = number(headers, FORMAT)?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&format) {
        return Err(DecodeError(format!(
            "message format {format} is not supported (this build reads formats {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
        )));
    }
    let payload = match (format, optional(headers, PAYLOAD)) {
        (1, _) | (_, None) => {
            if optional(headers, cloudevents::DATACONTENTTYPE) == Some(cloudevents::JSON) {
                return Err(DecodeError(
                    "the body is JSON but the message has no Annals-Payload: the exact payload is missing".into(),
                ));
            }
            body.to_vec()
        }
        (_, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|error| DecodeError(format!("Annals-Payload is not base64: {error}")))?,
    };
    let id = required(headers, NATS_MESSAGE_ID)?;
    let id = id
        .parse::<EventId>()
        .map_err(|error| DecodeError(format!("Nats-Msg-Id {id:?}: {error}")))?;
    let stream = decode_text(required(headers, STREAM)?)
        .map_err(|error| DecodeError(format!("{STREAM_NAME}: {error}")))?;
    let stream_id =
        StreamId::new(&stream).map_err(|error| DecodeError(format!("{STREAM_NAME}: {error}")))?;
    let event_type = decode_text(required(headers, EVENT_TYPE)?)
        .map_err(|error| DecodeError(format!("Annals-Event-Type: {error}")))?;
    let recorded_at = required(headers, RECORDED_AT)?;
    let recorded_at = DateTime::parse_from_rfc3339(recorded_at)
        .map_err(|error| DecodeError(format!("Annals-Recorded-At {recorded_at:?}: {error}")))?
        .with_timezone(&Utc);
    let last_in_commit = match required(headers, LAST_IN_COMMIT)? {
        "true" => true,
        "false" => false,
        other => {
            return Err(DecodeError(format!(
                "Annals-Last-In-Commit {other:?} is neither true nor false"
            )));
        }
    };
    let uuid = |name: HeaderName| -> Result<Option<Uuid>, DecodeError> {
        optional(headers, name.clone())
            .map(|text| {
                Uuid::parse_str(text)
                    .map_err(|error| DecodeError(format!("{}: {text:?}: {error}", name_of(&name))))
            })
            .transpose()
    };
    let text = |name: HeaderName| -> Result<Option<String>, DecodeError> {
        optional(headers, name.clone())
            .map(|text| {
                decode_text(text)
                    .map_err(|error| DecodeError(format!("{}: {error}", name_of(&name))))
            })
            .transpose()
    };
    Ok(RecordedEvent {
        id,
        stream_id,
        version: Version(number(headers, VERSION)?),
        position: Position(number(headers, POSITION)?),
        event_type,
        schema_version: number(headers, SCHEMA_VERSION)?,
        recorded_at,
        metadata: Metadata {
            correlation_id: uuid(CORRELATION_ID)?,
            causation_id: uuid(CAUSATION_ID)?,
            traceparent: match text(STORED_TRACEPARENT)? {
                Some(stored) => Some(stored),
                None => text(TRACEPARENT)?,
            },
            principal: text(PRINCIPAL)?,
            command_id: uuid(COMMAND_ID)?,
            issuer: text(ISSUER)?,
            action: text(ACTION)?,
            on_behalf_of: text(ON_BEHALF_OF)?,
        },
        payload,
        last_in_commit,
    })
}

/// Only the position of a message, for the relay's look at the end of the stream.
pub fn position(headers: Option<&HeaderMap>) -> Result<Position, DecodeError> {
    let headers = headers.ok_or_else(|| DecodeError("the message has no headers".into()))?;
    Ok(Position(number(headers, POSITION)?))
}

const STREAM_NAME: &str = "Annals-Stream";

fn name_of(name: &HeaderName) -> String {
    name.to_string()
}

fn optional(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).map(|value| value.as_str())
}

fn required(headers: &HeaderMap, name: HeaderName) -> Result<&str, DecodeError> {
    let label = name_of(&name);
    optional(headers, name).ok_or_else(|| DecodeError(format!("the header {label} is missing")))
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: HeaderName) -> Result<T, DecodeError> {
    let label = name_of(&name);
    let text = required(headers, name)?;
    text.parse()
        .map_err(|_| DecodeError(format!("{label} {text:?} is not a valid number")))
}

/// Percent-encodes every byte of `text` outside printable ASCII (`!` to `~`), and `%`
/// and `"` themselves; an empty text is written `""`.
pub fn encode_text(text: &str) -> String {
    if text.is_empty() {
        return EMPTY_TEXT.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'%' && byte != b'"' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_text`].
pub fn decode_text(text: &str) -> Result<String, String> {
    if text == EMPTY_TEXT {
        return Ok(String::new());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event() -> RecordedEvent {
        RecordedEvent {
            id: EventId::new(),
            stream_id: StreamId::new("order-42 ä.b*c>").unwrap(),
            version: Version(7),
            position: Position(1234),
            event_type: "Order Placed.v2".into(),
            schema_version: 3,
            recorded_at: Utc.timestamp_micros(1_790_000_000_123_456).unwrap(),
            metadata: Metadata {
                correlation_id: Some(Uuid::now_v7()),
                causation_id: Some(Uuid::from_u128(42)),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                principal: Some(" alice\r\n%\"x\" ".into()),
                command_id: None,
                ..Metadata::default()
            },
            payload: vec![0, 1, 2, 255],
            last_in_commit: false,
        }
    }

    #[test]
    fn an_event_survives_the_round_trip_exactly() {
        let original = event();
        let headers = headers(&original);
        let back = decode(Some(&headers), &original.payload).unwrap();
        assert_eq!(back, original);
        for principal in [None, Some(String::new()), Some("\"\"".to_owned())] {
            let mut original = event();
            original.metadata.principal = principal;
            original.last_in_commit = true;
            let back = decode(Some(&super::headers(&original)), &original.payload).unwrap();
            assert_eq!(back, original);
        }
    }

    /// The identity headers: text-encoded like the principal, each absent when not set,
    /// and an event that has them round-trips exactly (restore reproduces the log).
    #[test]
    fn golden_identity_headers() {
        let plain = event();
        let mut event = plain.clone();
        event.metadata.principal = Some("annals-fulfilment".into());
        event.metadata.issuer = Some("https://id.example/realm 1".into());
        event.metadata.action = Some("fulfilment.reserve".into());
        event.metadata.on_behalf_of = Some("alice".into());
        let headers = headers(&event);
        let value = |name: HeaderName| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(value(PRINCIPAL).as_deref(), Some("annals-fulfilment"));
        assert_eq!(
            value(ISSUER).as_deref(),
            Some("https://id.example/realm%201")
        );
        assert_eq!(value(ACTION).as_deref(), Some("fulfilment.reserve"));
        assert_eq!(value(ON_BEHALF_OF).as_deref(), Some("alice"));
        assert_eq!(headers.len(), 22);
        assert_eq!(decode(Some(&headers), &event.payload).unwrap(), event);
        for only in 0..3 {
            let mut partial = plain.clone();
            match only {
                0 => partial.metadata.issuer = Some(String::new()),
                1 => partial.metadata.action = Some("orders.place".into()),
                _ => partial.metadata.on_behalf_of = Some(" bob\n".into()),
            }
            let headers = super::headers(&partial);
            assert_eq!(headers.len(), 20);
            assert_eq!(decode(Some(&headers), &partial.payload).unwrap(), partial);
        }
        // No token ever: the headers hold nothing but the event's own fields.
        assert!(headers.iter().all(|(name, _)| {
            let name = name.to_string().to_ascii_lowercase();
            !name.contains("authorization") && !name.contains("token")
        }));
    }

    /// The wire format is a contract with consumers outside this code base
    /// (docs/NATS.md): these exact header values must not change within format 2.
    #[test]
    fn golden_headers() {
        let mut event = event();
        event.id = "0192f0c4-7d1e-7a3b-9c4d-5e6f708192a3".parse().unwrap();
        event.metadata.correlation_id = Some(Uuid::from_u128(1));
        let headers = headers(&event);
        let value = |name: HeaderName| headers.get(name).map(|v| v.as_str().to_owned());
        let expected = [
            (
                NATS_MESSAGE_ID,
                Some("0192f0c4-7d1e-7a3b-9c4d-5e6f708192a3"),
            ),
            (FORMAT, Some("2")),
            (STREAM, Some("order-42%20%C3%A4.b*c>")),
            (VERSION, Some("7")),
            (POSITION, Some("1234")),
            (EVENT_TYPE, Some("Order%20Placed.v2")),
            (SCHEMA_VERSION, Some("3")),
            (RECORDED_AT, Some("2026-09-21T14:13:20.123456Z")),
            (LAST_IN_COMMIT, Some("false")),
            (CORRELATION_ID, Some("00000000-0000-0000-0000-000000000001")),
            (CAUSATION_ID, Some("00000000-0000-0000-0000-00000000002a")),
            (COMMAND_ID, None),
            (PRINCIPAL, Some("%20alice%0D%0A%25%22x%22%20")),
            (ISSUER, None),
            (ACTION, None),
            (ON_BEHALF_OF, None),
            (
                TRACEPARENT,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ),
            (cloudevents::SPECVERSION, Some("1.0")),
            (
                cloudevents::ID,
                Some("0192f0c4-7d1e-7a3b-9c4d-5e6f708192a3"),
            ),
            (cloudevents::SOURCE, Some("/annals/order")),
            (cloudevents::TYPE, Some("annals.order.Order_Placed_v2")),
            (cloudevents::TIME, Some("2026-09-21T14:13:20.123456Z")),
            (cloudevents::SUBJECT, Some("order-42%20%C3%A4.b*c>")),
            (cloudevents::DATACONTENTTYPE, None),
            (cloudevents::DATASCHEMA, None),
            (PAYLOAD, None),
        ];
        for (name, want) in expected {
            assert_eq!(value(name.clone()).as_deref(), want, "{name}");
        }
        assert_eq!(headers.len(), 19);
        assert_eq!(FORMAT_TEXT, FORMAT_VERSION.to_string());

        let chain = Chain::after(ChainHash::GENESIS, &event).unwrap();
        let chained = chained_headers(&event, &chain);
        assert_eq!(chained.len(), 21);
        assert_eq!(
            chained.get(PREV_HASH).map(|v| v.as_str()),
            Some("0".repeat(64).as_str())
        );
        assert_eq!(
            chained.get(HASH).map(|v| v.as_str()),
            Some(chain.hash.to_string().as_str())
        );
        // The hash is BLAKE3 of the record body (flags, previous hash, postcard event):
        // pinned, because consumers check it.
        assert_eq!(
            chain.hash.to_string(),
            "1a73394ac4fdb8fd6e73cdb8b6fe92c6b0a75ce272abd0d05496e7c4540af2f6"
        );
    }

    #[test]
    fn the_chain_headers_round_trip_and_catch_an_altered_event() {
        let event = event();
        let prev: ChainHash = "ab".repeat(32).parse().unwrap();
        let chain = Chain::after(prev, &event).unwrap();
        let headers = chained_headers(&event, &chain);
        assert_eq!(super::chain(Some(&headers)), Ok(Some(chain)));
        assert!(chain.holds_for(&event));
        let mut altered = event.clone();
        altered.payload.push(0);
        assert!(!chain.holds_for(&altered));
        let mut reordered = event.clone();
        reordered.position = Position(1235);
        assert!(!chain.holds_for(&reordered));
        // Messages of an older release carry neither header: accepted as unhashed.
        assert_eq!(super::chain(Some(&super::headers(&event))), Ok(None));
        assert_eq!(super::chain(None), Ok(None));
        let mut half = super::headers(&event);
        half.insert(HASH, chain.hash.to_string());
        assert!(super::chain(Some(&half)).is_err());
        half.insert(PREV_HASH, "not hex");
        assert!(super::chain(Some(&half)).is_err());
    }

    /// With a publish span, `traceparent` names it and the event's own context moves to
    /// `Annals-Traceparent`: the message still decodes to the event exactly.
    #[test]
    fn the_publish_trace_leaves_the_event_intact() {
        let original = event();
        let publish = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        let mut headers = headers(&original);
        carry_publish_trace(&mut headers, &original, Some(publish));
        assert_eq!(headers.len(), 20);
        assert_eq!(headers.get(TRACEPARENT).map(|v| v.as_str()), Some(publish));
        assert_eq!(
            headers.get(STORED_TRACEPARENT).map(|v| v.as_str()),
            original.metadata.traceparent.as_deref()
        );
        assert_eq!(decode(Some(&headers), &original.payload).unwrap(), original);
        // Without a publish context, or without a stored one, nothing changes.
        let mut untouched = super::headers(&original);
        carry_publish_trace(&mut untouched, &original, None);
        assert_eq!(untouched, super::headers(&original));
        let mut untraced = original.clone();
        untraced.metadata.traceparent = None;
        let mut untouched = super::headers(&untraced);
        carry_publish_trace(&mut untouched, &untraced, Some(publish));
        assert_eq!(untouched, super::headers(&untraced));
        assert_eq!(
            decode(Some(&untouched), &untraced.payload).unwrap(),
            untraced
        );
    }

    fn json_data() -> JsonData {
        JsonData {
            data: serde_json::json!({"total": 360, "note": "ä \"x\""}),
            dataschema: Some("urn:annals:schema:event:OrderConfirmed:1".into()),
        }
    }

    /// Format 2 with a JSON body: the consumer's JSON in the body, the exact payload in
    /// `Annals-Payload`, and the message decodes to the event exactly.
    #[test]
    fn a_json_body_keeps_the_exact_payload_beside_it() {
        let original = event();
        let chain = Chain::after(ChainHash::GENESIS, &original).unwrap();
        let (headers, body) = encode(&original, &chain, Some(json_data()), 1 << 20);
        let value = |name: HeaderName| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            value(cloudevents::DATACONTENTTYPE).as_deref(),
            Some("application/json")
        );
        assert_eq!(
            value(cloudevents::DATASCHEMA).as_deref(),
            Some("urn:annals:schema:event:OrderConfirmed:1")
        );
        assert_eq!(value(PAYLOAD).as_deref(), Some("AAEC/w=="));
        let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(data, json_data().data);
        assert_eq!(decode(Some(&headers), &body).unwrap(), original);
        assert_eq!(super::chain(Some(&headers)), Ok(Some(chain)));
        // No schema known: JSON all the same, without ce-dataschema.
        let unschemed = JsonData {
            dataschema: None,
            ..json_data()
        };
        let (headers, body) = encode(&original, &chain, Some(unschemed), 1 << 20);
        assert!(headers.get(cloudevents::DATASCHEMA).is_none());
        assert_eq!(decode(Some(&headers), &body).unwrap(), original);
    }

    /// No JSON for the event (or an empty payload): the body is the payload bytes,
    /// `application/octet-stream`, no `Annals-Payload`, no schema. Never dropped.
    #[test]
    fn without_json_the_body_is_the_payload() {
        let original = event();
        let chain = Chain::after(ChainHash::GENESIS, &original).unwrap();
        let (headers, body) = encode(&original, &chain, None, 1 << 20);
        assert_eq!(
            headers
                .get(cloudevents::DATACONTENTTYPE)
                .map(|v| v.as_str()),
            Some("application/octet-stream")
        );
        assert!(headers.get(PAYLOAD).is_none());
        assert!(headers.get(cloudevents::DATASCHEMA).is_none());
        assert_eq!(&body[..], &original.payload[..]);
        assert_eq!(decode(Some(&headers), &body).unwrap(), original);
        let mut empty = original.clone();
        empty.payload.clear();
        let (headers, body) = encode(&empty, &chain, Some(json_data()), 1 << 20);
        assert!(headers.get(PAYLOAD).is_none());
        assert!(body.is_empty());
        assert_eq!(decode(Some(&headers), &body).unwrap(), empty);
    }

    /// A JSON form that would not fit the server's `max_payload` (with the base64 copy
    /// and the headroom) falls back to the bytes, which fit.
    #[test]
    fn json_that_does_not_fit_falls_back_to_the_bytes() {
        let mut original = event();
        original.payload = vec![7; 10_000];
        let chain = Chain::after(ChainHash::GENESIS, &original).unwrap();
        let big = JsonData {
            data: serde_json::json!({"bytes": original.payload}),
            dataschema: None,
        };
        let limit = 16 * 1024;
        let (headers, body) = encode(&original, &chain, Some(big.clone()), limit);
        assert_eq!(
            headers
                .get(cloudevents::DATACONTENTTYPE)
                .map(|v| v.as_str()),
            Some("application/octet-stream")
        );
        assert!(header_bytes(&headers) + body.len() + HEADROOM_BYTES <= limit);
        assert_eq!(decode(Some(&headers), &body).unwrap(), original);
        // With room, the same event goes as JSON, and its size is what was estimated.
        let (headers, body) = encode(&original, &chain, Some(big), 1 << 20);
        assert!(headers.get(PAYLOAD).is_some());
        assert!(header_bytes(&headers) + body.len() > limit);
        assert_eq!(decode(Some(&headers), &body).unwrap(), original);
    }

    /// Format 1 (an older relay: no `ce-*`, the body always the payload) still decodes,
    /// so an old stream restores and audits.
    #[test]
    fn format_1_messages_still_decode() {
        let original = event();
        let chain = Chain::after(ChainHash::GENESIS, &original).unwrap();
        let mut old = HeaderMap::new();
        for (name, values) in chained_headers(&original, &chain).iter() {
            if !name.to_string().starts_with("ce-") {
                for value in values {
                    old.append(name.clone(), value.clone());
                }
            }
        }
        old.insert(FORMAT, "1");
        assert_eq!(old.len(), 15);
        assert_eq!(decode(Some(&old), &original.payload).unwrap(), original);
        assert_eq!(super::chain(Some(&old)), Ok(Some(chain)));
    }

    /// A JSON body whose exact copy is missing or broken, or a format from the future, is
    /// an error: never a payload guessed from the JSON.
    #[test]
    fn a_json_body_without_its_exact_copy_is_an_error() {
        let original = event();
        let chain = Chain::after(ChainHash::GENESIS, &original).unwrap();
        let (headers, body) = encode(&original, &chain, Some(json_data()), 1 << 20);
        let mut stripped = HeaderMap::new();
        for (name, values) in headers.iter() {
            if *name != PAYLOAD {
                for value in values {
                    stripped.append(name.clone(), value.clone());
                }
            }
        }
        assert!(decode(Some(&stripped), &body).is_err());
        let mut broken = headers.clone();
        broken.insert(PAYLOAD, "not base64!");
        assert!(decode(Some(&broken), &body).is_err());
        let mut future = headers.clone();
        future.insert(FORMAT, "3");
        assert!(decode(Some(&future), &body).is_err());
    }

    #[test]
    fn subjects_are_sanitized_tokens() {
        assert_eq!(
            subject("annals.events", &event()),
            "annals.events.order.Order_Placed_v2"
        );
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("a.b*c>d e\tä"), "a_b_c_d_e__");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(decode(None, b"").is_err());
        let good = headers(&event());
        for name in [
            NATS_MESSAGE_ID,
            STREAM,
            POSITION,
            RECORDED_AT,
            LAST_IN_COMMIT,
            FORMAT,
        ] {
            let mut broken = HeaderMap::new();
            for (key, values) in good.iter() {
                if *key != name {
                    for value in values {
                        broken.append(key.clone(), value.clone());
                    }
                }
            }
            assert!(decode(Some(&broken), b"").is_err(), "without {name}");
            broken.insert(name.clone(), "%zz");
            assert!(decode(Some(&broken), b"").is_err(), "with a bad {name}");
        }
        assert!(decode_text("%").is_err());
        assert!(decode_text("%FF").is_err());
        assert_eq!(decode_text(&encode_text("ö %\"")).unwrap(), "ö %\"");
    }
}
