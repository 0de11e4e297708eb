//! The log's hash chain, for readers outside the store: a copy of the log (the NATS
//! stream, an export) can carry each record's chain hash, and a reader can check it
//! without the segment files.
//!
//! Every record's body is `flags | prev_hash | postcard(StoredEvent)` (see `segment`), and
//! its chain hash is the BLAKE3 hash of that body; `prev_hash` is the chain hash of the
//! record before it ([`ChainHash::GENESIS`] before the first). [`ChainHash::of_record`]
//! rebuilds the body from a [`RecordedEvent`] and the hash before it, exactly as the
//! writer encoded it, so the hash of the log's last record (`VerifyReport::head_hash`)
//! commits to every event, its position, its append boundary and its order.

use std::fmt;
use std::str::FromStr;

use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::segment::{self, FLAG_COMMIT_END};

/// One record's chain hash: BLAKE3 of its body. Written and parsed as 64 lower-case hex
/// digits, as `annals verify` prints the head hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash "before" the first record of the log: 32 zero bytes.
    pub const GENESIS: ChainHash = ChainHash(segment::GENESIS_HASH);

    /// The chain hash of the record that holds `event` after a record whose chain hash
    /// is `prev`. Fails only if the event cannot be encoded (a payload over the record
    /// size limit), which no event read from a log can be.
    pub fn of_record(prev: &ChainHash, event: &RecordedEvent) -> Result<ChainHash, Error> {
        let flags = if event.last_in_commit {
            FLAG_COMMIT_END
        } else {
            0
        };
        let mut buffer = Vec::with_capacity(segment::HEADER_BYTES + 96 + event.payload.len());
        segment::encode_record(&mut buffer, flags, &prev.0, &event.to_stored(), 0).map(ChainHash)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Why a text is not a chain hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a chain hash (64 hex digits)")]
pub struct ParseChainHashError(pub String);

impl FromStr for ChainHash {
    type Err = ParseChainHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseChainHashError(text.to_owned());
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(ChainHash(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventStore, ExpectedVersion, NewEvent, Position, StoreConfig, StreamId};

    #[tokio::test]
    async fn the_chain_rebuilt_from_events_ends_at_the_verified_head_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        let stream = StreamId::new("order-1").unwrap();
        for count in [1, 3, 2] {
            let events = (0..count)
                .map(|i| NewEvent::new("OrderPlaced", vec![i; 10]))
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        let mut hash = ChainHash::GENESIS;
        for event in store.read_all(Position(0), usize::MAX).unwrap() {
            hash = ChainHash::of_record(&hash, &event).unwrap();
        }
        assert_eq!(hash.to_string(), store.verify().unwrap().head_hash);
        assert_eq!(hash.to_string().parse::<ChainHash>(), Ok(hash));
        assert!("00".parse::<ChainHash>().is_err());
        assert!("zz".repeat(32).parse::<ChainHash>().is_err());
        store.close().await;
    }
}
