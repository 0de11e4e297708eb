//! The segment log: the on-disk format of records, reading them back, and telling a torn
//! tail (an unfinished write cut by a crash, which is truncated) from corruption (damage to
//! written records, which is reported and never skipped).
//!
//! A segment is `log/<first-position>.seg`, a sequence of records:
//!
//! ```text
//! record = body_len: u32 LE | crc32(body): u32 LE | body
//! body   = flags: u8 | prev_hash: [u8; 32] | postcard(StoredEvent)
//! ```
//!
//! `prev_hash` is the BLAKE3 hash of the previous record's body (zeros for the first
//! record of the log), so the records form a hash chain across segments: changing,
//! reordering or removing any record breaks every later link. `flags` bit 0 marks the last
//! record of one append; an append's records are all in one segment, and recovery drops
//! the records of an append whose last record is missing, so appends are all-or-nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::envelope::StoredEvent;
use crate::error::{Error, PositionText};
use crate::ids::Position;

/// Bytes of the length and checksum before each record body.
pub const HEADER_BYTES: usize = 8;
/// Bytes of the body before the postcard-encoded event.
pub const BODY_PREFIX_BYTES: usize = 1 + 32;
/// Flag: this record is the last of its append.
pub const FLAG_COMMIT_END: u8 = 1;
/// The hash before the first record of the log.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The file name of the segment whose first record has `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// The segments in `log_dir`, by first position, oldest first.
pub fn list_segments(log_dir: &Path) -> Result<Vec<u64>, Error> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(log_dir).map_err(Error::io(log_dir))? {
        let entry = entry.map_err(Error::io(log_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".seg") {
            match stem.parse::<u64>() {
                Ok(first) if stem.len() == 20 => segments.push(first),
                _ => {
                    return Err(Error::Corrupt {
                        segment: entry.path(),
                        offset: 0,
                        after: PositionText(None),
                        reason: "a segment file name is not a 20-digit position".into(),
                    });
                }
            }
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Appends one encoded record to `buf` and returns the hash of its body.
pub fn encode_record(
    buf: &mut Vec<u8>,
    flags: u8,
    prev_hash: &[u8; 32],
    event: &StoredEvent<'_>,
) -> Result<[u8; 32], Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    buf.push(flags);
    buf.extend_from_slice(prev_hash);
    let encoded = postcard::to_extend(event, std::mem::take(buf));
    *buf = encoded.map_err(|source| Error::Codec {
        what: "event record",
        source,
    })?;
    let body = &buf[start + HEADER_BYTES..];
    let body_len = u32::try_from(body.len()).expect("records are bounded by max_append_bytes");
    let crc = crc32fast::hash(body);
    let hash = *blake3::hash(body).as_bytes();
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(hash)
}

/// One record read back, borrowed from the read buffer.
#[derive(Debug)]
pub struct Record<'a> {
    /// Bytes of the whole record, header included.
    pub len: usize,
    /// The record's flags.
    pub flags: u8,
    /// The hash of the previous record.
    pub prev_hash: &'a [u8; 32],
    /// The whole body, which the next record's `prev_hash` hashes.
    pub body: &'a [u8],
    /// The decoded event.
    pub event: StoredEvent<'a>,
}

impl Record<'_> {
    /// The hash the next record must carry as `prev_hash`.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(self.body).as_bytes()
    }

    /// Whether this record ends an append.
    pub fn ends_commit(&self) -> bool {
        self.flags & FLAG_COMMIT_END != 0
    }
}

/// Why the bytes at some offset are not a good record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Fewer bytes than a header remain.
    IncompleteHeader,
    /// The header is all zeros: nothing was written here.
    ZeroHeader,
    /// The declared length is larger than any record can be.
    ImpossibleLength(u32),
    /// The record runs past the end of the data.
    PastEnd,
    /// The checksum does not match the body.
    Checksum,
    /// The checksum matches but the body does not decode.
    Undecodable(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::IncompleteHeader => f.write_str("incomplete record header"),
            Damage::ZeroHeader => f.write_str("zeroed record header"),
            Damage::ImpossibleLength(len) => write!(f, "impossible record length {len}"),
            Damage::PastEnd => f.write_str("record runs past the end of the segment"),
            Damage::Checksum => f.write_str("checksum mismatch"),
            Damage::Undecodable(why) => write!(f, "record does not decode: {why}"),
        }
    }
}

/// Parses the record at the start of `bytes`.
pub fn parse_record(bytes: &[u8], max_record_bytes: usize) -> Result<Record<'_>, Damage> {
    if bytes.len() < HEADER_BYTES {
        return Err(Damage::IncompleteHeader);
    }
    let header: &[u8; HEADER_BYTES] = bytes[..HEADER_BYTES].try_into().expect("8 bytes");
    if header == &[0; HEADER_BYTES] {
        return Err(Damage::ZeroHeader);
    }
    let body_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let body_len_usize = body_len as usize;
    if body_len_usize < BODY_PREFIX_BYTES || body_len_usize > max_record_bytes {
        return Err(Damage::ImpossibleLength(body_len));
    }
    let Some(body) = bytes.get(HEADER_BYTES..HEADER_BYTES + body_len_usize) else {
        return Err(Damage::PastEnd);
    };
    if crc32fast::hash(body) != crc {
        return Err(Damage::Checksum);
    }
    let flags = body[0];
    let prev_hash: &[u8; 32] = body[1..BODY_PREFIX_BYTES].try_into().expect("32 bytes");
    let event = postcard::from_bytes::<StoredEvent<'_>>(&body[BODY_PREFIX_BYTES..])
        .map_err(|error| Damage::Undecodable(error.to_string()))?;
    Ok(Record {
        len: HEADER_BYTES + body_len_usize,
        flags,
        prev_hash,
        body,
        event,
    })
}

/// Whether the bytes of the last segment from `cut_from` (the end of the last complete
/// append) on, with damage of kind `damage` at `damage_at` (`None`: the segment ends inside
/// an append), are a torn write (unacknowledged, safe to cut) rather than corruption of
/// acknowledged records. `data` ends at the last non-zero byte (zeros after it are
/// unwritten preallocation).
///
/// The writer never has more than `max_unsynced_bytes` written but not yet synced, so a
/// cut longer than that would remove acknowledged records: corruption. Within that
/// window, a torn write shows as a short file (a cut header, a record running past the
/// end), a zeroed header, or an unwritten 512-byte block of zeros; damage with none of
/// these marks (say, a flipped bit in a complete record) is reported as corruption, so an
/// acknowledged record is never cut silently.
pub fn is_torn_tail(
    data: &[u8],
    cut_from: usize,
    damage_at: usize,
    damage: Option<&Damage>,
    max_unsynced_bytes: usize,
) -> bool {
    if data.len().saturating_sub(cut_from) > max_unsynced_bytes {
        return false;
    }
    match damage {
        None
        | Some(Damage::IncompleteHeader)
        | Some(Damage::ZeroHeader)
        | Some(Damage::PastEnd) => true,
        Some(Damage::ImpossibleLength(_) | Damage::Checksum | Damage::Undecodable(_)) => {
            let first_block = damage_at.next_multiple_of(512);
            data.get(first_block..)
                .unwrap_or_default()
                .chunks_exact(512)
                .any(|block| block.iter().all(|byte| *byte == 0))
        }
    }
}

/// Reads a whole segment file.
pub fn read_segment(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io(path))
}

/// A forward reader over the log that keeps its place: the file, the byte offset and the
/// position of the next record. Used by subscriptions, log reads and index catch-up.
#[derive(Debug)]
pub struct LogCursor {
    log_dir: PathBuf,
    segment: u64,
    offset: u64,
    next_position: u64,
    file: Option<File>,
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`.
    buffer_start: u64,
    max_record_bytes: usize,
    /// How much the next read asks for.
    chunk: usize,
}

/// How far a cursor may read: the end of what is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableEnd {
    /// The position the next append will get; everything before it is durable.
    pub next_position: u64,
    /// The first position of the segment being written.
    pub active_segment: u64,
    /// The durable length in bytes of that segment.
    pub active_len: u64,
}

/// The largest read a cursor makes at once.
const READ_CHUNK: usize = 256 * 1024;
/// A cursor's first read. Reads double from here up to [`READ_CHUNK`]: a stream read
/// that visits one commit here and one there reads a few KiB per commit, a scan of the
/// log soon reads 256 KiB at a time.
const FIRST_CHUNK: usize = 8 * 1024;

impl LogCursor {
    /// A cursor at the record starting at byte `offset` of segment `segment`, which has
    /// position `next_position`.
    pub fn at(
        log_dir: PathBuf,
        segment: u64,
        offset: u64,
        next_position: u64,
        max_record_bytes: usize,
    ) -> Self {
        LogCursor {
            log_dir,
            segment,
            offset,
            next_position,
            file: None,
            buffer: Vec::new(),
            buffer_start: offset,
            max_record_bytes,
            chunk: FIRST_CHUNK,
        }
    }

    /// The position of the next record this cursor reads.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// The segment and byte offset of the next record.
    pub fn place(&self) -> (u64, u64) {
        (self.segment, self.offset)
    }

    fn segment_path(&self) -> PathBuf {
        self.log_dir.join(segment_file_name(self.segment))
    }

    /// Calls `visit` with each durable record from the cursor on, its segment file and its
    /// byte offset, at most `max` of them, and returns how many it visited. Stops at the durable end.
    pub fn read_with(
        &mut self,
        durable: &DurableEnd,
        max: usize,
        mut visit: impl FnMut(&Record<'_>, &Path, u64) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut visited = 0;
        while visited < max && self.next_position < durable.next_position {
            let end = if self.segment == durable.active_segment {
                durable.active_len
            } else {
                u64::MAX
            };
            if self.offset >= end || !self.fill(end)? {
                // The end of a sealed segment: the next one starts at our position.
                if self.segment == durable.active_segment {
                    break;
                }
                self.segment = self.next_position;
                self.offset = 0;
                self.file = None;
                self.buffer.clear();
                self.buffer_start = 0;
                continue;
            }
            let within = (self.offset - self.buffer_start) as usize;
            let record = match parse_record(&self.buffer[within..], self.max_record_bytes) {
                Ok(record) => record,
                Err(Damage::PastEnd | Damage::IncompleteHeader) => {
                    // Read more of the file and try again.
                    self.buffer.drain(..within);
                    self.buffer_start = self.offset;
                    if !self.fill_more(end)? {
                        return Err(self.corrupt("record runs past the end of the segment"));
                    }
                    continue;
                }
                Err(damage) => return Err(self.corrupt(&damage.to_string())),
            };
            if record.event.position != self.next_position {
                return Err(self.corrupt(&format!(
                    "expected position {}, found {}",
                    self.next_position, record.event.position
                )));
            }
            visit(&record, &self.segment_path(), self.offset)?;
            self.offset += record.len as u64;
            self.next_position += 1;
            visited += 1;
        }
        Ok(visited)
    }

    fn corrupt(&self, reason: &str) -> Error {
        Error::Corrupt {
            segment: self.segment_path(),
            offset: self.offset,
            after: PositionText(self.next_position.checked_sub(1).map(Position)),
            reason: reason.to_owned(),
        }
    }

    /// Makes sure the buffer holds bytes at `self.offset`; false at the end of the data.
    fn fill(&mut self, end: u64) -> Result<bool, Error> {
        let buffered_end = self.buffer_start + self.buffer.len() as u64;
        if self.offset >= self.buffer_start && self.offset < buffered_end {
            return Ok(true);
        }
        self.buffer.clear();
        self.buffer_start = self.offset;
        self.fill_more(end)
    }

    /// Appends the next chunk of the file to the buffer; false if nothing more is there.
    fn fill_more(&mut self, end: u64) -> Result<bool, Error> {
        let path = self.segment_path();
        if self.file.is_none() {
            self.file = Some(File::open(&path).map_err(Error::io(&path))?);
        }
        let file = self.file.as_mut().expect("opened above");
        let read_from = self.buffer_start + self.buffer.len() as u64;
        let want = (end.saturating_sub(read_from)).min(self.chunk.max(self.buffer.len()) as u64);
        self.chunk = (self.chunk * 2).min(READ_CHUNK);
        if want == 0 {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(read_from))
            .map_err(Error::io(&path))?;
        let old_len = self.buffer.len();
        let got = file
            .take(want)
            .read_to_end(&mut self.buffer)
            .map_err(Error::io(&path))?;
        Ok(self.buffer.len() > old_len && got > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::StoredMetadata;

    fn event(position: u64, payload: &[u8]) -> StoredEvent<'_> {
        StoredEvent {
            id: [7; 16],
            stream_id: "order-1",
            version: position,
            position,
            event_type: "OrderPlaced",
            schema_version: 1,
            recorded_at_micros: 1_700_000_000_000_000,
            metadata: StoredMetadata::default(),
            payload,
        }
    }

    #[test]
    fn a_record_round_trips_and_chains() {
        let mut buf = Vec::new();
        let first =
            encode_record(&mut buf, FLAG_COMMIT_END, &GENESIS_HASH, &event(0, b"a")).unwrap();
        let first_len = buf.len();
        encode_record(&mut buf, 0, &first, &event(1, b"bc")).unwrap();
        let record = parse_record(&buf, 1 << 20).unwrap();
        assert_eq!(record.len, first_len);
        assert!(record.ends_commit());
        assert_eq!(record.hash(), first);
        assert_eq!(record.event.payload, b"a");
        let second = parse_record(&buf[first_len..], 1 << 20).unwrap();
        assert_eq!(second.prev_hash, &first);
        assert!(!second.ends_commit());
    }

    /// The record format is the file format: these bytes must stay readable forever.
    #[test]
    fn golden_record_bytes() {
        let mut buf = Vec::new();
        encode_record(&mut buf, FLAG_COMMIT_END, &GENESIS_HASH, &event(5, b"hi")).unwrap();
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "58000000",
                "a90d9aa0",
                "01",
                "0000000000000000000000000000000000000000000000000000000000000000",
                "07070707070707070707070707070707",
                "076f726465722d31",
                "05",
                "05",
                "0b4f72646572506c61636564",
                "01",
                "8080f28183898506",
                "0000000000",
                "026869"
            )
        );
        let record = parse_record(&buf, 1 << 20).unwrap();
        assert_eq!(record.event.position, 5);
        assert_eq!(record.event.payload, b"hi");
    }

    #[test]
    fn damage_is_classified() {
        let mut buf = Vec::new();
        encode_record(&mut buf, FLAG_COMMIT_END, &GENESIS_HASH, &event(0, b"abc")).unwrap();
        assert_eq!(
            parse_record(&buf[..5], 1 << 20).unwrap_err(),
            Damage::IncompleteHeader
        );
        assert_eq!(
            parse_record(&buf[..buf.len() - 1], 1 << 20).unwrap_err(),
            Damage::PastEnd
        );
        assert_eq!(
            parse_record(&[0; 16], 1 << 20).unwrap_err(),
            Damage::ZeroHeader
        );
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert_eq!(
            parse_record(&flipped, 1 << 20).unwrap_err(),
            Damage::Checksum
        );
        assert!(matches!(
            parse_record(&buf, 8).unwrap_err(),
            Damage::ImpossibleLength(_)
        ));
    }

    #[test]
    fn torn_tail_or_corruption() {
        let data = vec![1u8; 4096];
        // A flipped byte in complete, non-zero data is corruption, even near the end.
        assert!(!is_torn_tail(
            &data,
            4000,
            4000,
            Some(&Damage::Checksum),
            1 << 20
        ));
        // A short write is torn, if within the unsynced window.
        assert!(is_torn_tail(
            &data,
            4000,
            4000,
            Some(&Damage::PastEnd),
            1 << 20
        ));
        assert!(!is_torn_tail(&data, 0, 4000, Some(&Damage::PastEnd), 1000));
        // An append cut short is torn within the window.
        assert!(is_torn_tail(&data, 3000, 4096, None, 1 << 20));
        // An unwritten (zero) block after the damage marks a torn write.
        let mut with_hole = vec![1u8; 4096];
        with_hole[1024..1536].fill(0);
        assert!(is_torn_tail(
            &with_hole,
            700,
            700,
            Some(&Damage::Checksum),
            1 << 20
        ));
    }
}
