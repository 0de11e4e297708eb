//! Snapshots: the latest folded state of a stream at some version, so an aggregate with
//! a long history loads from the snapshot plus newer events. A snapshot is derived data
//! kept in sled: losing one costs a longer load, never correctness, so one that does not
//! fit the stream (a version past its head, after an index rebuild) is ignored.

use crate::derived::index::{Index, be_u64};
use crate::error::Error;
use crate::ids::{StreamId, Version};

/// Stores `state` as the snapshot of `stream` at `version`, replacing an older one.
pub fn save(index: &Index, stream: &StreamId, version: Version, state: &[u8]) -> Result<(), Error> {
    let mut value = Vec::with_capacity(8 + state.len());
    value.extend_from_slice(&version.0.to_be_bytes());
    value.extend_from_slice(state);
    index.snapshots.insert(stream.as_str().as_bytes(), value)?;
    Ok(())
}

/// The latest snapshot of `stream`, unless the stream's head (`head`) is before it.
pub fn load(
    index: &Index,
    stream: &StreamId,
    head: Option<Version>,
) -> Result<Option<(Version, Vec<u8>)>, Error> {
    let Some(value) = index.snapshots.get(stream.as_str().as_bytes())? else {
        return Ok(None);
    };
    if value.len() < 8 {
        return Ok(None);
    }
    let version = Version(be_u64(&value[..8]));
    match head {
        Some(head) if head >= version => Ok(Some((version, value[8..].to_vec()))),
        _ => Ok(None),
    }
}
