//! `verify`: a walk of the whole durable log that checks every record (checksum,
//! decoding, contiguous positions, the hash chain, appends complete, every stream's
//! versions contiguous from 0) and reports the head hash that commits to all of it.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, PositionText};
use crate::ids::Position;
use crate::segment::{self, LogCursor};
use crate::store::EventStore;

/// What [`EventStore::verify`] found in a sound log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Segment files checked.
    pub segments: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// The hash of the last record (hex), which commits to the whole log.
    pub head_hash: String,
}

impl EventStore {
    /// Walks the whole durable log and checks every record: checksum, decoding,
    /// contiguous positions, hash chain, appends complete within their segment, and each
    /// stream's versions contiguous from 0 across appends (a version reused or skipped is
    /// reported naming the stream and position). Returns the first damage as
    /// [`Error::Corrupt`].
    ///
    /// Memory: the version check keeps one map entry per stream seen (its id and the next
    /// version it expects, about 100 bytes with the map's overhead), so a log of a million
    /// streams costs about 100 MB while verifying; everything else is one read buffer.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        self.verify_with_progress(&mut |_, _| {})
    }

    /// [`EventStore::verify`], calling `progress(events_done, events_total)`.
    pub fn verify_with_progress(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport, Error> {
        let durable = self.shared.durable_end();
        let mut cursor = LogCursor::at(
            self.shared.fs.clone(),
            0,
            0,
            0,
            self.shared.config.max_event_bytes,
        );
        let mut last_hash = segment::GENESIS_HASH;
        let mut report = VerifyReport {
            events: 0,
            segments: self.shared.segments.read().expect("not poisoned").len() as u64,
            bytes: 0,
            head_hash: String::new(),
        };
        let mut commit_open = false;
        let mut next_versions: HashMap<String, u64> = HashMap::new();
        loop {
            let read = cursor.read_with(&durable, 1 << 16, |record, segment, offset| {
                if record.prev_hash != &last_hash {
                    return Err(Error::Corrupt {
                        segment: segment.to_path_buf(),
                        offset,
                        after: PositionText(record.event.position.checked_sub(1).map(Position)),
                        reason: "hash chain broken: a record before this one was changed, removed or reordered".into(),
                    });
                }
                let event = &record.event;
                let expected = match next_versions.get_mut(event.stream_id) {
                    Some(next) => next,
                    None => next_versions.entry(event.stream_id.to_owned()).or_insert(0),
                };
                if event.version != *expected {
                    let what = if event.version < *expected {
                        "reused"
                    } else {
                        "skipped"
                    };
                    return Err(Error::Corrupt {
                        segment: segment.to_path_buf(),
                        offset,
                        after: PositionText(event.position.checked_sub(1).map(Position)),
                        reason: format!(
                            "stream {} has version {} at position {}, but its next version is {}: a version was {what}",
                            event.stream_id, event.version, event.position, *expected
                        ),
                    });
                }
                *expected += 1;
                last_hash = record.hash();
                commit_open = !record.ends_commit();
                report.bytes += record.len as u64;
                Ok(())
            })?;
            if read == 0 {
                break;
            }
            report.events += read as u64;
            progress(report.events, durable.next_position);
        }
        if commit_open {
            let (segment, offset) = cursor.place();
            return Err(Error::Corrupt {
                segment: self.shared.fs.path(&segment::segment_file_name(segment)),
                offset,
                after: PositionText(report.events.checked_sub(1).map(Position)),
                reason: "the log ends inside an append".into(),
            });
        }
        report.head_hash = last_hash.iter().map(|b| format!("{b:02x}")).collect();
        Ok(report)
    }
}
