//! `verify`: a walk of the whole durable log that checks every record (checksum,
//! decoding, contiguous positions, the hash chain, appends complete) and reports the head
//! hash that commits to all of it.

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
    /// contiguous positions, hash chain, appends complete within their segment. Returns
    /// the first damage as [`Error::Corrupt`].
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
            self.shared.log_dir.clone(),
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
                segment: self
                    .shared
                    .log_dir
                    .join(segment::segment_file_name(segment)),
                offset,
                after: PositionText(report.events.checked_sub(1).map(Position)),
                reason: "the log ends inside an append".into(),
            });
        }
        report.head_hash = last_hash.iter().map(|b| format!("{b:02x}")).collect();
        Ok(report)
    }
}
