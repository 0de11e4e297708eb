//! The segment log: the on-disk format of records, reading them back, and telling a torn
//! tail (an unfinished write cut by a crash, which is truncated) from corruption (damage to
//! written records, which is reported and never skipped).
//!
//! A segment is `log/<first-position>.seg`. Format 2 (written since the storage-fault work)
//! starts with a segment header and uses a self-checking record header:
//!
//! ```text
//! segment  = "ANNALSEG" | version = 2: u32 LE | crc32(the 12 bytes before): u32 LE | record*
//! record   = body_len: u32 LE | synced_to: u32 LE | crc32(body): u32 LE
//!            | crc32(the 12 header bytes before): u32 LE | body
//! body     = flags: u8 | prev_hash: [u8; 32] | postcard(StoredEvent) [| postcard(StoredIdentity)]
//! ```
//!
//! `synced_to` is a promise the writer makes: when it wrote this record, the first
//! `synced_to` bytes of this segment were already durable (an `fdatasync` covering them had
//! returned). A later record that is intact and carries a larger `synced_to` proves that
//! damage before it is damage to synced data, never a torn write. The header checksum
//! means a damaged length is seen as damage, not believed.
//!
//! Format 1 (segments written before) has no segment header and an 8-byte record header,
//! `body_len | crc32(body)`; it is still read everywhere, and the writer never appends to
//! it (it starts a format-2 segment first).
//!
//! `prev_hash` is the BLAKE3 hash of the previous record's body (zeros for the first
//! record of the log), so the records form a hash chain across segments: changing,
//! reordering or removing any record breaks every later link. `flags` bit 0 marks the last
//! record of one append; an append's records are all in one segment, and recovery drops
//! the records of an append whose last record is missing, so appends are all-or-nothing.
//!
//! `flags` bit 1 ([`FLAG_IDENTITY`]) says the body carries a second postcard value after
//! the event, the identity block (`StoredIdentity`: issuer, action, on behalf of, each an
//! optional string). The writer sets it exactly when one of them is set, so an event
//! without them is stored byte for byte as before the block existed, in either format.
//! A body is canonical or damaged: bytes after the event without the flag, bytes after
//! the identity block, or the flag over an empty block are [`Damage::Undecodable`] (no
//! writer makes them, and accepting them would let two bodies stand for one event).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::envelope::StoredEvent;
use crate::error::{Error, PositionText};
use crate::ids::Position;
use crate::io::{LogFile, LogFs};

pub use crate::tail::{Tail, judge_tail};

/// Bytes of the record header in format 2: length, synced-to mark, body and header checksums.
pub const HEADER_BYTES: usize = 16;
/// Bytes of the record header in format 1: length and body checksum.
pub const V1_HEADER_BYTES: usize = 8;
/// Bytes of the segment header that opens a format-2 segment.
pub const SEGMENT_HEADER_BYTES: usize = 16;
/// The first bytes of a format-2 segment. As a format-1 length they would claim more than
/// 1 GiB, which no format-1 record can be, so the two formats cannot be confused.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
/// The sector size the torn-write argument reasons in: a power loss keeps or loses each
/// 512-byte sector of unsynced data as a whole, and may tear one (new bytes, then old).
pub const SECTOR_BYTES: usize = 512;
/// Bytes of the body before the postcard-encoded event.
pub const BODY_PREFIX_BYTES: usize = 1 + 32;
/// Flag: this record is the last of its append.
pub const FLAG_COMMIT_END: u8 = 1;
/// Flag: the body holds an identity block after the event (see the module documentation).
/// [`encode_record`] sets and clears it itself, from the event.
pub const FLAG_IDENTITY: u8 = 2;
/// The hash before the first record of the log.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The file name of the segment whose first record has `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// The segments in `log_dir`, by first position, oldest first.
pub fn list_segments(fs: &dyn LogFs) -> Result<Vec<u64>, Error> {
    let mut segments = Vec::new();
    let names = fs.list().map_err(Error::io(&fs.path("")))?;
    for name in &names {
        if let Some(stem) = name.strip_suffix(".seg") {
            match stem.parse::<u64>() {
                Ok(first) if stem.len() == 20 => segments.push(first),
                _ => {
                    return Err(Error::Corrupt {
                        segment: fs.path(name),
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

/// The record format of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No segment header, 8-byte record headers (segments written before format 2).
    V1,
    /// A segment header, then self-checking 16-byte record headers.
    V2,
}

impl Format {
    /// Bytes of this format's record header.
    pub fn header_bytes(self) -> usize {
        match self {
            Format::V1 => V1_HEADER_BYTES,
            Format::V2 => HEADER_BYTES,
        }
    }

    /// The offset of the first record in a segment of this format.
    pub fn data_start(self) -> usize {
        match self {
            Format::V1 => 0,
            Format::V2 => SEGMENT_HEADER_BYTES,
        }
    }
}

/// The segment header of a format-2 segment.
pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The format of a segment from its first bytes (at least [`SEGMENT_HEADER_BYTES`] of them
/// when the file has that many). A segment that begins with zeros, or with the start of
/// the header and then zeros, is format 2 (an empty new segment, or one whose header has
/// not wholly reached the disk: the writer writes the header with the segment's first
/// records, and writes it again at open when it is not whole); a segment that begins with
/// the magic but an unknown version or a bad header checksum is an error.
pub fn detect_format(first_bytes: &[u8]) -> Result<Format, String> {
    let head = &first_bytes[..first_bytes.len().min(SEGMENT_HEADER_BYTES)];
    let expected = segment_header();
    // The header, or the start of it followed by zeros (a write torn inside it, or never
    // made), or nothing: format 2.
    let whole = head
        .iter()
        .zip(&expected)
        .take_while(|(a, b)| a == b)
        .count();
    if head[whole..].iter().all(|byte| *byte == 0) {
        return Ok(Format::V2);
    }
    if !head.starts_with(&SEGMENT_MAGIC) {
        return Ok(Format::V1);
    }
    Err("the segment header is damaged or of an unknown version".into())
}

/// Appends one encoded format-2 record to `buf` and returns the hash of its body.
/// `synced_to` is how many bytes of the segment are durable as the record is written
/// (0 claims nothing). [`FLAG_IDENTITY`] in `flags` is ignored: it is set when the
/// event's identity block is not empty, and only then.
pub fn encode_record(
    buf: &mut Vec<u8>,
    flags: u8,
    prev_hash: &[u8; 32],
    event: &StoredEvent<'_>,
    synced_to: u32,
) -> Result<[u8; 32], Error> {
    let start = buf.len();
    let has_identity = !event.identity.is_empty();
    let flags = if has_identity {
        flags | FLAG_IDENTITY
    } else {
        flags & !FLAG_IDENTITY
    };
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    buf.push(flags);
    buf.extend_from_slice(prev_hash);
    let codec = |source| Error::Codec {
        what: "event record",
        source,
    };
    *buf = postcard::to_extend(event, std::mem::take(buf)).map_err(codec)?;
    if has_identity {
        *buf = postcard::to_extend(&event.identity, std::mem::take(buf)).map_err(codec)?;
    }
    let body = &buf[start + HEADER_BYTES..];
    let body_len = u32::try_from(body.len()).expect("records are bounded by max_append_bytes");
    let crc = crc32fast::hash(body);
    let hash = *blake3::hash(body).as_bytes();
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&synced_to.to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&buf[start..start + 12]);
    buf[start + 12..start + 16].copy_from_slice(&header_crc.to_le_bytes());
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
    /// Bytes of the segment durable when the record was written (0 in format 1).
    pub synced_to: u64,
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
    /// The record header fails its own checksum (format 2).
    HeaderChecksum,
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
            Damage::HeaderChecksum => f.write_str("record header checksum mismatch"),
            Damage::ImpossibleLength(len) => write!(f, "impossible record length {len}"),
            Damage::PastEnd => f.write_str("record runs past the end of the segment"),
            Damage::Checksum => f.write_str("checksum mismatch"),
            Damage::Undecodable(why) => write!(f, "record does not decode: {why}"),
        }
    }
}

/// Parses the record at the start of `bytes`, a record of a segment in `format`.
pub fn parse_record(
    bytes: &[u8],
    max_record_bytes: usize,
    format: Format,
) -> Result<Record<'_>, Damage> {
    let header_bytes = format.header_bytes();
    if bytes.len() < header_bytes {
        return Err(Damage::IncompleteHeader);
    }
    let header = &bytes[..header_bytes];
    if header.iter().all(|byte| *byte == 0) {
        return Err(Damage::ZeroHeader);
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (body_len, synced_to, crc) = match format {
        Format::V1 => (word(0), 0, word(4)),
        Format::V2 => {
            if crc32fast::hash(&header[..12]) != word(12) {
                return Err(Damage::HeaderChecksum);
            }
            (word(0), word(4), word(8))
        }
    };
    let body_len_usize = body_len as usize;
    if body_len_usize < BODY_PREFIX_BYTES || body_len_usize > max_record_bytes {
        return Err(Damage::ImpossibleLength(body_len));
    }
    let Some(body) = bytes.get(header_bytes..header_bytes + body_len_usize) else {
        return Err(Damage::PastEnd);
    };
    if crc32fast::hash(body) != crc {
        return Err(Damage::Checksum);
    }
    let flags = body[0];
    let prev_hash: &[u8; 32] = body[1..BODY_PREFIX_BYTES].try_into().expect("32 bytes");
    let event = decode_body(flags, &body[BODY_PREFIX_BYTES..])?;
    Ok(Record {
        len: header_bytes + body_len_usize,
        flags,
        prev_hash,
        body,
        synced_to: u64::from(synced_to),
        event,
    })
}

/// The event of a record body after its prefix: the event, then the identity block when
/// `flags` announces one, and nothing else.
fn decode_body(flags: u8, bytes: &[u8]) -> Result<StoredEvent<'_>, Damage> {
    let undecodable = |error: postcard::Error| Damage::Undecodable(error.to_string());
    let (mut event, rest) =
        postcard::take_from_bytes::<StoredEvent<'_>>(bytes).map_err(undecodable)?;
    let rest = if flags & FLAG_IDENTITY != 0 {
        let (identity, rest) = postcard::take_from_bytes(rest).map_err(undecodable)?;
        event.identity = identity;
        if event.identity.is_empty() {
            return Err(Damage::Undecodable(
                "the identity flag is set but the identity block is empty".into(),
            ));
        }
        rest
    } else {
        rest
    };
    if !rest.is_empty() {
        return Err(Damage::Undecodable(format!(
            "{} bytes follow the event",
            rest.len()
        )));
    }
    Ok(event)
}

/// Reads a whole segment file.
pub fn read_segment(fs: &dyn LogFs, first_position: u64) -> Result<Vec<u8>, Error> {
    let name = segment_file_name(first_position);
    fs.read_all(&name).map_err(Error::io(&fs.path(&name)))
}

/// A forward reader over the log that keeps its place: the file, the byte offset and the
/// position of the next record. Used by subscriptions, log reads and index catch-up.
#[derive(Debug)]
pub struct LogCursor {
    fs: Arc<dyn LogFs>,
    segment: u64,
    offset: u64,
    next_position: u64,
    file: Option<Arc<dyn LogFile>>,
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`.
    buffer_start: u64,
    max_record_bytes: usize,
    /// How much the next read asks for.
    chunk: usize,
    /// The format of the segment being read, once its file is open.
    format: Format,
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

/// Reads into `buf` at `offset` until it is full or the file ends; how many bytes it read.
fn read_up_to(file: &dyn LogFile, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(read) => got += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
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
        fs: Arc<dyn LogFs>,
        segment: u64,
        offset: u64,
        next_position: u64,
        max_record_bytes: usize,
    ) -> Self {
        LogCursor {
            fs,
            segment,
            offset,
            next_position,
            file: None,
            buffer: Vec::new(),
            buffer_start: offset,
            max_record_bytes,
            chunk: FIRST_CHUNK,
            format: Format::V2,
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
        self.fs.path(&segment_file_name(self.segment))
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
            if self.offset == 0 && self.format == Format::V2 {
                // Step over the segment header.
                self.offset = SEGMENT_HEADER_BYTES as u64;
                continue;
            }
            let within = (self.offset - self.buffer_start) as usize;
            let record =
                match parse_record(&self.buffer[within..], self.max_record_bytes, self.format) {
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
            let file = self
                .fs
                .open(&segment_file_name(self.segment))
                .map_err(Error::io(&path))?;
            let mut first = [0u8; SEGMENT_HEADER_BYTES];
            let got = read_up_to(file.as_ref(), &mut first, 0).map_err(Error::io(&path))?;
            self.format = detect_format(&first[..got]).map_err(|reason| Error::Corrupt {
                segment: path.clone(),
                offset: 0,
                after: PositionText(self.next_position.checked_sub(1).map(Position)),
                reason,
            })?;
            self.file = Some(file);
        }
        let file = self.file.clone().expect("opened above");
        let read_from = self.buffer_start + self.buffer.len() as u64;
        let want = (end.saturating_sub(read_from)).min(self.chunk.max(self.buffer.len()) as u64);
        self.chunk = (self.chunk * 2).min(READ_CHUNK);
        if want == 0 {
            return Ok(false);
        }
        let old_len = self.buffer.len();
        self.buffer.resize(old_len + want as usize, 0);
        let read = read_up_to(file.as_ref(), &mut self.buffer[old_len..], read_from);
        let got = match read {
            Ok(got) => got,
            Err(error) => {
                self.buffer.truncate(old_len);
                return Err(Error::io(&path)(error));
            }
        };
        self.buffer.truncate(old_len + got);
        Ok(self.buffer.len() > old_len && got > 0)
    }
}

/// A small event for the unit tests of the record format and of `tail`.
#[cfg(test)]
pub(crate) fn test_event(position: u64, payload: &[u8]) -> StoredEvent<'_> {
    StoredEvent {
        id: [7; 16],
        stream_id: "order-1",
        version: position,
        position,
        event_type: "OrderPlaced",
        schema_version: 1,
        recorded_at_micros: 1_700_000_000_000_000,
        metadata: crate::envelope::StoredMetadata::default(),
        payload,
        identity: crate::envelope::StoredIdentity::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, payload: &[u8]) -> StoredEvent<'_> {
        test_event(position, payload)
    }

    #[test]
    fn a_record_round_trips_and_chains() {
        let mut buf = Vec::new();
        let first = encode_record(
            &mut buf,
            FLAG_COMMIT_END,
            &GENESIS_HASH,
            &event(0, b"a"),
            16,
        )
        .unwrap();
        let first_len = buf.len();
        encode_record(&mut buf, 0, &first, &event(1, b"bc"), 0).unwrap();
        let record = parse_record(&buf, 1 << 20, Format::V2).unwrap();
        assert_eq!(record.len, first_len);
        assert!(record.ends_commit());
        assert_eq!(record.hash(), first);
        assert_eq!(record.synced_to, 16);
        assert_eq!(record.event.payload, b"a");
        let second = parse_record(&buf[first_len..], 1 << 20, Format::V2).unwrap();
        assert_eq!(second.prev_hash, &first);
        assert!(!second.ends_commit());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    /// The record header of the golden identity record: body length, synced-to mark,
    /// body checksum, header checksum.
    const GOLDEN_IDENTITY_HEADER: &str = "7500000000100000cedb9db4636c4fbf";

    /// The body every golden record holds: its hash is the chain hash, in both formats.
    const GOLDEN_BODY: &str = concat!(
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
    );

    /// The record format is the file format: these bytes must stay readable forever.
    #[test]
    fn golden_record_bytes() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            FLAG_COMMIT_END,
            &GENESIS_HASH,
            &event(5, b"hi"),
            4096,
        )
        .unwrap();
        let golden = format!("{}{}", "58000000" /* body_len */, "00100000" /* synced_to */)
            + "a90d9aa0" // crc32(body)
            + "f772bf43" // crc32(the 12 header bytes before)
            + GOLDEN_BODY;
        assert_eq!(hex(&buf), golden);
        let record = parse_record(&buf, 1 << 20, Format::V2).unwrap();
        assert_eq!(record.event.position, 5);
        assert_eq!(record.event.payload, b"hi");
        assert_eq!(record.synced_to, 4096);
        assert_eq!(hex(&segment_header()), "414e4e414c53454702000000cbdcf76e");
    }

    /// Segments written before format 2 stay readable: the same record in format 1.
    #[test]
    fn golden_format_1_record_bytes() {
        let bytes = unhex(&format!("58000000a90d9aa0{GOLDEN_BODY}"));
        assert_eq!(detect_format(&bytes), Ok(Format::V1));
        let record = parse_record(&bytes, 1 << 20, Format::V1).unwrap();
        assert_eq!(record.event.position, 5);
        assert_eq!(record.event.payload, b"hi");
        assert_eq!(record.synced_to, 0);
        let mut v2 = Vec::new();
        let hash =
            encode_record(&mut v2, FLAG_COMMIT_END, &GENESIS_HASH, &event(5, b"hi"), 0).unwrap();
        assert_eq!(
            record.hash(),
            hash,
            "the chain hash does not depend on the format"
        );
    }

    /// The identity block: announced by flag bit 1 and appended after the event, so the
    /// event part is byte for byte the golden body's.
    const GOLDEN_IDENTITY_BODY: &str = concat!(
        "03",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "07070707070707070707070707070707",
        "076f726465722d31",
        "05",
        "05",
        "0b4f72646572506c61636564",
        "01",
        "8080f28183898506",
        "0000000000",
        "026869",
        "0106616e6e616c73",             // issuer: Some("annals")
        "010c6f72646572732e706c616365", // action: Some("orders.place")
        "0105616c696365"                // on_behalf_of: Some("alice")
    );

    fn with_identity(event: StoredEvent<'_>) -> StoredEvent<'_> {
        StoredEvent {
            identity: crate::envelope::StoredIdentity {
                issuer: Some("annals"),
                action: Some("orders.place"),
                on_behalf_of: Some("alice"),
            },
            ..event
        }
    }

    /// A record with the identity block, in both formats: these bytes must stay readable.
    #[test]
    fn golden_identity_record_bytes() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            FLAG_COMMIT_END,
            &GENESIS_HASH,
            &with_identity(event(5, b"hi")),
            4096,
        )
        .unwrap();
        let header = &hex(&buf)[..32];
        assert_eq!(&header[..16], "7500000000100000", "body_len, synced_to");
        assert_eq!(hex(&buf[HEADER_BYTES..]), GOLDEN_IDENTITY_BODY);
        assert_eq!(header, GOLDEN_IDENTITY_HEADER);
        let check = |record: Record<'_>| {
            assert_eq!(record.flags, FLAG_COMMIT_END | FLAG_IDENTITY);
            assert!(record.ends_commit());
            assert_eq!(record.event.position, 5);
            assert_eq!(record.event.payload, b"hi");
            assert_eq!(record.event.identity.issuer, Some("annals"));
            assert_eq!(record.event.identity.action, Some("orders.place"));
            assert_eq!(record.event.identity.on_behalf_of, Some("alice"));
        };
        check(parse_record(&buf, 1 << 20, Format::V2).unwrap());
        // The same body under a format-1 header: the old reader's path reads it too.
        let body = unhex(GOLDEN_IDENTITY_BODY);
        let mut v1 = Vec::new();
        v1.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v1.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        v1.extend_from_slice(&body);
        check(parse_record(&v1, 1 << 20, Format::V1).unwrap());
        // Owned and back (with a real v7 id): the same bytes, the same chain hash.
        let v7: uuid::Uuid = "0192f0c4-7d1e-7a3b-9c4d-5e6f708192a3".parse().unwrap();
        let stored = StoredEvent {
            id: *v7.as_bytes(),
            ..with_identity(event(5, b"hi"))
        };
        let mut original = Vec::new();
        encode_record(&mut original, FLAG_COMMIT_END, &GENESIS_HASH, &stored, 0).unwrap();
        let recorded = parse_record(&original, 1 << 20, Format::V2)
            .unwrap()
            .event
            .to_recorded(true)
            .unwrap();
        assert_eq!(recorded.metadata.issuer.as_deref(), Some("annals"));
        assert_eq!(recorded.metadata.action.as_deref(), Some("orders.place"));
        assert_eq!(recorded.metadata.on_behalf_of.as_deref(), Some("alice"));
        let mut again = Vec::new();
        encode_record(
            &mut again,
            FLAG_COMMIT_END,
            &GENESIS_HASH,
            &recorded.to_stored(),
            0,
        )
        .unwrap();
        assert_eq!(again, original);
    }

    /// The flag follows the event, whatever the caller passes: no identity, no block.
    #[test]
    fn the_identity_flag_is_set_exactly_when_there_is_an_identity() {
        let mut plain = Vec::new();
        encode_record(
            &mut plain,
            FLAG_COMMIT_END | FLAG_IDENTITY,
            &GENESIS_HASH,
            &event(5, b"hi"),
            0,
        )
        .unwrap();
        assert_eq!(hex(&plain[HEADER_BYTES..]), GOLDEN_BODY);
        let only_action = StoredEvent {
            identity: crate::envelope::StoredIdentity {
                action: Some("fulfilment.reserve"),
                ..Default::default()
            },
            ..event(5, b"hi")
        };
        let mut buf = Vec::new();
        encode_record(&mut buf, 0, &GENESIS_HASH, &only_action, 0).unwrap();
        let record = parse_record(&buf, 1 << 20, Format::V2).unwrap();
        assert_eq!(record.flags, FLAG_IDENTITY);
        assert_eq!(record.event.identity, only_action.identity);
    }

    /// A body is canonical: extra bytes, or a flag that announces nothing, are damage.
    #[test]
    fn a_body_that_is_not_canonical_is_damage() {
        let record_of = |body: &[u8]| {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            bytes.extend_from_slice(body);
            bytes
        };
        let undecodable = |body: Vec<u8>| {
            matches!(
                parse_record(&record_of(&body), 1 << 20, Format::V1),
                Err(Damage::Undecodable(_))
            )
        };
        // Bytes after the event without the flag.
        let mut trailing = unhex(GOLDEN_BODY);
        trailing.push(0);
        assert!(undecodable(trailing));
        // The identity block without the flag.
        let mut unflagged = unhex(GOLDEN_IDENTITY_BODY);
        unflagged[0] = FLAG_COMMIT_END;
        assert!(undecodable(unflagged));
        // The flag over an empty block, over no block, and bytes after the block.
        let mut empty = unhex(GOLDEN_BODY);
        empty[0] |= FLAG_IDENTITY;
        assert!(undecodable(empty.clone()));
        empty.extend_from_slice(&[0, 0, 0]);
        assert!(undecodable(empty));
        let mut after = unhex(GOLDEN_IDENTITY_BODY);
        after.push(0);
        assert!(undecodable(after));
        assert!(!undecodable(unhex(GOLDEN_IDENTITY_BODY)));
    }

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(detect_format(&[]), Ok(Format::V2));
        assert_eq!(detect_format(&[0; 16]), Ok(Format::V2));
        assert_eq!(detect_format(&segment_header()), Ok(Format::V2));
        let mut wrong_version = segment_header();
        wrong_version[8] = 3;
        assert!(detect_format(&wrong_version).is_err());
        // A header write torn after 3 or 10 bytes.
        let mut torn = [0u8; 16];
        torn[..3].copy_from_slice(&segment_header()[..3]);
        assert_eq!(detect_format(&torn), Ok(Format::V2));
        torn[..10].copy_from_slice(&segment_header()[..10]);
        assert_eq!(detect_format(&torn), Ok(Format::V2));
    }

    #[test]
    fn damage_is_classified() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            FLAG_COMMIT_END,
            &GENESIS_HASH,
            &event(0, b"abc"),
            0,
        )
        .unwrap();
        let parse = |bytes: &[u8]| parse_record(bytes, 1 << 20, Format::V2).unwrap_err();
        assert_eq!(parse(&buf[..5]), Damage::IncompleteHeader);
        assert_eq!(parse(&buf[..buf.len() - 1]), Damage::PastEnd);
        assert_eq!(parse(&[0; 16]), Damage::ZeroHeader);
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert_eq!(parse(&flipped), Damage::Checksum);
        // A flipped bit in the length is seen by the header checksum, not believed.
        let mut long = buf.clone();
        long[2] ^= 0x08;
        assert_eq!(parse(&long), Damage::HeaderChecksum);
        assert!(matches!(
            parse_record(&buf, 8, Format::V2).unwrap_err(),
            Damage::ImpossibleLength(_)
        ));
    }
}
