//! How `annals import` reads an export within bounds: the longest line and the largest
//! append a valid export can hold, from the target store's own limits, so a hostile file
//! cannot make the import grow; and the header line.

use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::Context;

use eventstore::{RecordedEvent, StoreConfig};

use super::{FORMAT, FORMAT_VERSION, Header};
use crate::exit::Failure;

/// Bytes of an event line beyond what its record holds: member names, quotes, the id and
/// metadata UUIDs, numbers, the time, `true`, the payload's schema URN. Under 1 KiB in
/// fact; this leaves room.
const LINE_FIXED_BYTES: usize = 4096;
/// The most line bytes one byte of a record can become: a string byte escaped as
/// `\u00XX` (a 4-byte character written as a surrogate pair is 12 bytes for 4); a
/// payload byte is 2 hex digits.
const LINE_BYTES_PER_RECORD_BYTE: usize = 6;
/// The least a record takes beyond its payload, stream id and type name: the length and
/// checksum (8), flags (1), the previous hash (32), the event id (16).
const RECORD_FIXED_BYTES: usize = 57;

/// The bounds an import reads within, from the store's own limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The longest line a valid export can hold: every variable part of a line (stream,
    /// type, metadata strings, payload) is a part of one record of at most
    /// `max_event_bytes`, each of whose bytes becomes at most
    /// [`LINE_BYTES_PER_RECORD_BYTE`] line bytes, plus the payload's JSON (written only
    /// when at most `max_event_bytes` long), plus [`LINE_FIXED_BYTES`].
    pub(super) max_line_bytes: usize,
    /// The largest append the store accepts (`max_append_bytes`): a commit whose records
    /// add up to more, counting each at least [`RECORD_FIXED_BYTES`] plus its payload,
    /// stream id and type name, would be refused, so it is refused as soon as it passes.
    pub(super) max_append_bytes: usize,
}

impl Limits {
    pub(super) fn of(config: &StoreConfig) -> Self {
        Limits {
            max_line_bytes: config.max_event_bytes * (LINE_BYTES_PER_RECORD_BYTE + 1)
                + LINE_FIXED_BYTES,
            max_append_bytes: config.max_append_bytes,
        }
    }
}

/// The least bytes `event` takes in the log.
pub(super) fn least_record_bytes(event: &RecordedEvent) -> usize {
    RECORD_FIXED_BYTES
        + event.payload.len()
        + event.stream_id.as_str().len()
        + event.event_type.len()
}

/// The lines of an export, each read into a buffer of bounded size: a longer line is an
/// error found after reading one byte more than the bound, never the whole line.
pub(super) struct Lines<'a> {
    source: Box<dyn BufRead + 'a>,
    pub(super) max_line_bytes: usize,
    /// The 0-based number of the next line.
    next: usize,
    buffer: Vec<u8>,
}

impl<'a> Lines<'a> {
    pub(super) fn new(source: Box<dyn BufRead + 'a>, max_line_bytes: usize) -> Self {
        Lines {
            source,
            max_line_bytes,
            next: 0,
            buffer: Vec::new(),
        }
    }

    /// The next line without its line end, and its 0-based number; `None` at the end.
    pub(super) fn next_line(&mut self, file: &Path) -> anyhow::Result<Option<(usize, &str)>> {
        self.buffer.clear();
        let limit = self.max_line_bytes as u64 + 1;
        let read = (&mut self.source)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if read == 0 {
            return Ok(None);
        }
        let number = self.next;
        self.next += 1;
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
        } else if self.buffer.len() > self.max_line_bytes {
            return Err(damaged(
                file,
                number,
                format!(
                    "the line is longer than {} bytes, more than the largest event can take",
                    self.max_line_bytes
                ),
            ));
        }
        let line = std::str::from_utf8(&self.buffer)
            .map_err(|_| damaged(file, number, "the line is not UTF-8"))?;
        Ok(Some((number, line)))
    }
}

pub(super) fn damaged(file: &Path, line: usize, reason: impl std::fmt::Display) -> anyhow::Error {
    Failure::Corrupt(format!("{} line {}: {reason}", file.display(), line + 1)).into()
}

pub(super) fn read_header(lines: &mut Lines<'_>, file: &Path) -> anyhow::Result<Header> {
    let Some((number, line)) = lines.next_line(file)? else {
        return Err(damaged(file, 0, "the file is empty, not an Annals export"));
    };
    let header: Header = serde_json::from_str(line)
        .ok()
        .filter(|header: &Header| header.format == FORMAT)
        .ok_or_else(|| damaged(file, number, "not an Annals export header"))?;
    if header.version > FORMAT_VERSION {
        return Err(Failure::Usage(format!(
            "{} is format version {}; this annals reads up to version {FORMAT_VERSION}",
            file.display(),
            header.version
        ))
        .into());
    }
    Ok(header)
}
