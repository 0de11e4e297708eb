//! Typed identifiers: stream ids, stream versions, global positions, event ids and the
//! expected-version rule of an append. Each is validated where it is made, so the rest of
//! the store never sees a malformed one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

/// The longest stream id accepted, in bytes. Stream ids are index keys and HTTP path
/// segments; a bound keeps both cheap.
pub const MAX_STREAM_ID_BYTES: usize = 256;

/// The name of one event stream, such as `order-42`: non-empty, at most
/// [`MAX_STREAM_ID_BYTES`] bytes, no control characters and no surrounding white space.
///
/// The part before the first `-` is the stream's category (`order`), which is how
/// streams are listed by kind.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Validates `id` and makes a stream id of it.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_STREAM_ID_BYTES {
            Some("it is longer than 256 bytes")
        } else if id.chars().any(char::is_control) {
            Some("it contains a control character")
        } else if id.trim() != id {
            Some("it starts or ends with white space")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidStreamId {
                id: id.chars().take(64).collect(),
                reason,
            }),
            None => Ok(StreamId(Arc::from(id))),
        }
    }

    /// Makes the stream id `<category>-<id>`, the naming convention of aggregates.
    pub fn for_entity(category: &str, id: &str) -> Result<Self, Error> {
        Self::new(format!("{category}-{id}"))
    }

    /// The stream id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the part before the first `-`, or the whole id if it has none.
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(&*self.0, |(category, _)| category)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        StreamId::new(text).map_err(serde::de::Error::custom)
    }
}

impl FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        StreamId::new(s)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", &*self.0)
    }
}

/// The 0-based, contiguous number of an event within its stream.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version after this one.
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The 0-based, contiguous place of an event in the whole log.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The unique id of an event: a UUID v7, so ids sort roughly by creation time.
///
/// Re-sending an event with an id the store already holds is how a client retries an
/// append safely: the store answers with the original result and writes nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh UUID v7.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Accepts a UUID v7 only: other versions do not sort by time.
    pub fn from_uuid(id: Uuid) -> Result<Self, Error> {
        if id.get_version_num() == 7 {
            Ok(EventId(id))
        } else {
            Err(Error::InvalidEventId {
                id,
                reason: "event ids must be UUID v7",
            })
        }
    }

    /// The `index`-th event id of the command `command_id`: a UUID v7 with the command
    /// id's timestamp and random bits derived from the command id and the index. A
    /// retried command derives the same ids, so the store recognises the retry.
    pub fn derived(command_id: Uuid, index: u32) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("annals event id from command id v1");
        hasher.update(command_id.as_bytes());
        hasher.update(&index.to_le_bytes());
        let hash = hasher.finalize();
        let mut bytes = [0u8; 16];
        // Keep the 48-bit millisecond timestamp of a v7 command id, so derived ids sort
        // with their command; any other command id contributes only through the hash.
        if command_id.get_version_num() == 7 {
            bytes[..6].copy_from_slice(&command_id.as_bytes()[..6]);
        } else {
            bytes[..6].copy_from_slice(&hash.as_bytes()[16..22]);
        }
        bytes[6..].copy_from_slice(&hash.as_bytes()[..10]);
        bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        EventId(Uuid::from_bytes(bytes))
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl FromStr for EventId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let id = Uuid::parse_str(s).map_err(|_| Error::InvalidEventId {
            id: Uuid::nil(),
            reason: "not a UUID",
        })?;
        EventId::from_uuid(id)
    }
}

/// What the writer of an append believes about the stream's current version.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream holds.
    Any,
    /// The stream must not exist yet (its first event gets version 0).
    NoStream,
    /// The stream must exist, at any version.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` (None: no stream) satisfies this.
    pub fn admits(self, current: Option<Version>) -> bool {
        match (self, current) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::StreamExists, Some(_)) => true,
            (ExpectedVersion::Exact(expected), Some(actual)) => expected == actual,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_validated() {
        assert!(StreamId::new("order-1").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("a\nb").is_err());
        assert!(StreamId::new("a\0b").is_err());
        assert!(StreamId::new(" order-1").is_err());
        assert!(StreamId::new("x".repeat(257)).is_err());
        assert!(StreamId::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        assert_eq!(StreamId::new("order-1-a").unwrap().category(), "order");
        assert_eq!(StreamId::new("ledger").unwrap().category(), "ledger");
    }

    #[test]
    fn derived_event_ids_are_deterministic_v7_and_distinct() {
        let command = Uuid::now_v7();
        let first = EventId::derived(command, 0);
        assert_eq!(first, EventId::derived(command, 0));
        assert_ne!(first, EventId::derived(command, 1));
        assert_ne!(first, EventId::derived(Uuid::now_v7(), 0));
        assert_eq!(first.as_uuid().get_version_num(), 7);
        assert_eq!(&first.as_uuid().as_bytes()[..6], &command.as_bytes()[..6]);
        assert!(EventId::from_uuid(first.as_uuid()).is_ok());
    }

    /// Golden values. Changing them breaks retries across an upgrade: a command retried
    /// after the upgrade would get other event ids, the store would not recognise it as a
    /// re-send, and its events would be appended twice.
    #[test]
    fn derived_event_ids_are_pinned() {
        let v7_command: Uuid = "0193a4e2-7c1d-7b3e-9f00-0000000000c1".parse().unwrap();
        // A v5 command id, as the API derives from an Idempotency-Key.
        let v5_command: Uuid = "2c279423-5ad3-5198-8e04-5884e143962e".parse().unwrap();
        let derived = |command, index| EventId::derived(command, index).to_string();
        assert_eq!(
            derived(v7_command, 0),
            "0193a4e2-7c1d-7162-b8e7-06d7df771ff4"
        );
        assert_eq!(
            derived(v7_command, 1),
            "0193a4e2-7c1d-7e21-9ebd-aa15b86bd32e"
        );
        assert_eq!(
            derived(v5_command, 0),
            "2c675c0d-968d-7eca-92fd-f7e7b23911bf"
        );
    }

    #[test]
    fn non_v7_event_ids_are_refused() {
        assert!(EventId::from_uuid(Uuid::nil()).is_err());
        assert!("not-a-uuid".parse::<EventId>().is_err());
    }

    #[test]
    fn expected_version_rules() {
        use ExpectedVersion::*;
        assert!(Any.admits(None) && Any.admits(Some(Version(3))));
        assert!(NoStream.admits(None) && !NoStream.admits(Some(Version(0))));
        assert!(!StreamExists.admits(None) && StreamExists.admits(Some(Version(0))));
        assert!(Exact(Version(2)).admits(Some(Version(2))));
        assert!(!Exact(Version(2)).admits(Some(Version(1))) && !Exact(Version(0)).admits(None));
    }
}
