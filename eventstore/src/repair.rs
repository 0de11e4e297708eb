//! Repair from a copy: find the first damaged range of records in the log, and replace
//! exactly that range with the same events from a copy (the JetStream copy, read by
//! `annals repair`), only when they chain exactly onto the intact records around it.
//!
//! The sequence (docs/OPERATIONS.md, "Repairing the log from the JetStream copy"):
//! 1. [`lock`] takes the data directory's lock; the store stays closed throughout.
//! 2. [`find_damage`] walks every segment and finds the first record that fails its
//!    checksums, its position or the hash chain, then the next intact record after it in
//!    that segment (header and body checksums pass, a later position, and the records
//!    after it chain on from it). The range between them is what is replaced; without
//!    such a record it runs to the segment's end. Damage at the end of the last segment
//!    that recovery would cut as a torn tail is not repair's business: open cuts it.
//! 3. The caller feeds the range's events from the copy, in order, into a
//!    [`Replacement`], which encodes them as records of the segment's format (format 2
//!    with `synced_to` 0, which claims nothing) chained from the record before the range.
//! 4. [`apply`] refuses ([`Refusal`], touching nothing) unless the last event's hash is
//!    the `prev_hash` of the intact record after the range and the records fill the
//!    damaged bytes exactly; otherwise it writes the segment with the range replaced to a
//!    temporary file in `log/`, fsyncs it, checks that every byte outside the range is
//!    unchanged, renames it over the segment and fsyncs the directory.
//!
//! The index is not touched: it was never built from damaged bytes (recovery indexes the
//! intact records before a damage and refuses the rest), and the repaired records have
//! the bodies, lengths and offsets of the originals. The caller opens the store, which
//! proves the index on the log, and verifies the whole log once no damage is left.

use crate::io::real::RealFs;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::chain::ChainHash;
use crate::config::StoreConfig;
use crate::envelope::RecordedEvent;
use crate::error::{Error, PositionText};
use crate::ids::Position;
use crate::segment::{self, Format, Tail};

/// The data directory's lock, held while repair finds and replaces damage. Dropping it
/// releases the directory (the store can then be opened, in this process or another).
#[derive(Debug)]
pub struct RepairLock {
    log_dir: PathBuf,
    _lock: File,
}

/// Takes the lock of the existing data directory `dir` for a repair: `Error::MissingDataDir`
/// if it does not exist, `Error::Locked` if a process holds it. Removes temporary files
/// an interrupted repair left in `log/` (never a segment).
pub fn lock(dir: &Path) -> Result<RepairLock, Error> {
    if !dir.is_dir() {
        return Err(Error::MissingDataDir(dir.to_path_buf()));
    }
    let lock = crate::lock_file::lock_dir(dir)?;
    let log_dir = dir.join("log");
    for entry in std::fs::read_dir(&log_dir).map_err(Error::io(&log_dir))? {
        let path = entry.map_err(Error::io(&log_dir))?.path();
        if path.extension().is_some_and(|ext| ext == TEMP_EXTENSION) {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
        }
    }
    Ok(RepairLock {
        log_dir,
        _lock: lock,
    })
}

/// The extension of the temporary file a repaired segment is written to before it is
/// renamed over the segment (`log/<20-digit>.seg.repair`); not a segment name, so no
/// reader ever takes it for one.
const TEMP_EXTENSION: &str = "repair";

/// Where a damaged range ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeEnd {
    /// At an intact record (or at the end of a sealed segment, before the next segment's
    /// first record): the range holds the positions up to `position - 1` and the bytes
    /// up to `offset`.
    Before {
        /// The byte where the intact data resumes.
        offset: u64,
        /// The position of the first record after the range.
        position: Position,
        /// The `prev_hash` of that record, which the range's last record must hash to
        /// (`None` when that record is itself damaged: the next repair checks that link).
        next_prev_hash: Option<ChainHash>,
    },
    /// At the end of the data of the last segment: the range holds the appends whose
    /// records reach `data_end` (the end of the non-zero bytes) and fit in the file.
    DataEnd {
        /// The end of the segment's non-zero bytes.
        data_end: u64,
        /// The segment file's length.
        file_len: u64,
    },
}

/// The first damaged range of the log: what [`find_damage`] found and a [`Replacement`]
/// must fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment file.
    pub segment: PathBuf,
    /// The segment's format, in which the replacement is encoded.
    pub format: Format,
    /// The byte where the first damaged record starts.
    pub start: u64,
    /// The first position of the range (the last intact record's plus one).
    pub first_position: Position,
    /// The chain hash of the last intact record before the range.
    pub prev_hash: ChainHash,
    /// Where the range ends.
    pub end: RangeEnd,
    /// What is wrong with the first damaged record.
    pub reason: String,
    /// The segment's length and BLAKE3 hash when the damage was found: [`apply`] touches
    /// nothing if the file changed since.
    file_len: u64,
    file_hash: [u8; 32],
    /// Whether the record before the range ends its append (a range at the end of the
    /// last segment must end with a whole append).
    prev_ends_commit: bool,
}

impl DamagedRange {
    /// The range's last position, when an intact record bounds it.
    pub fn last_position(&self) -> Option<Position> {
        match &self.end {
            RangeEnd::Before { position, .. } => position.0.checked_sub(1).map(Position),
            RangeEnd::DataEnd { .. } => None,
        }
    }

    /// The events the range holds, when an intact record bounds it.
    pub fn events(&self) -> Option<u64> {
        match &self.end {
            RangeEnd::Before { position, .. } => Some(position.0 - self.first_position.0),
            RangeEnd::DataEnd { .. } => None,
        }
    }
}

impl std::fmt::Display for DamagedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let positions = match self.last_position() {
            Some(last) if last >= self.first_position => {
                format!("positions {}..={}", self.first_position, last)
            }
            Some(_) => "no position".to_owned(),
            None => format!("positions {} to the end of the log", self.first_position),
        };
        let end = match &self.end {
            RangeEnd::Before { offset, .. } => offset.to_string(),
            RangeEnd::DataEnd { data_end, .. } => format!("{data_end} (the end of its data)"),
        };
        write!(
            f,
            "{}, {positions}, bytes {}..{end}: {}",
            self.segment.display(),
            self.start,
            self.reason
        )
    }
}

/// Why a repair was refused: the copy does not fit the damaged range exactly. Nothing was
/// written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repair refused: {0}")]
pub struct Refusal(pub String);

/// What [`apply`] replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The segment file.
    pub segment: PathBuf,
    /// The first position replaced.
    pub first_position: Position,
    /// Events replaced.
    pub events: u64,
    /// The bytes replaced, `start..end`.
    pub start: u64,
    /// See `start`.
    pub end: u64,
}

/// Finds the first damaged range of the log in `dir` (whose lock `lock` holds), or
/// `None` when every record is intact (a torn tail that open would cut counts as
/// intact). Damage that is not a range of records (a missing or misnamed segment, a
/// damaged segment header) is `Error::Corrupt`: repair cannot replace it.
pub fn find_damage(lock: &RepairLock, config: &StoreConfig) -> Result<Option<DamagedRange>, Error> {
    let log_dir = &lock.log_dir;
    let segments = segment::list_segments(&RealFs::new(log_dir.as_path()))?;
    let mut next_position = 0u64;
    let mut last_hash = segment::GENESIS_HASH;
    for (i, &first) in segments.iter().enumerate() {
        let path = log_dir.join(segment::segment_file_name(first));
        let unrepairable = |offset: u64, after: u64, reason: String| Error::Corrupt {
            segment: path.clone(),
            offset,
            after: PositionText(after.checked_sub(1).map(Position)),
            reason: format!("{reason}; repair replaces damaged records inside a segment only"),
        };
        if first != next_position {
            return Err(unrepairable(
                0,
                next_position,
                format!(
                    "the segment starts at position {first}, but the log continues at {next_position}"
                ),
            ));
        }
        let data = read_file(&path)?;
        let format = segment::detect_format(&data)
            .map_err(|reason| unrepairable(0, next_position, reason))?;
        let next_segment = segments.get(i + 1).copied();
        let walk = walk_segment(&data, format, next_position, last_hash, config);
        let is_last = next_segment.is_none();
        let incomplete = walk.damage.is_none() && walk.committed < walk.data_end;
        if is_last && (walk.parse_damage.is_some() || incomplete) {
            // Recovery's judgment of the last segment's end: a torn tail is open's business.
            let tail = Tail {
                data: &data[..walk.data_end.max(walk.committed)],
                format,
                committed: walk.committed,
                damage_at: walk.stopped_at,
                damage: walk.parse_damage.as_ref(),
                proven_synced: walk.proven_synced,
                max_record_bytes: config.max_event_bytes,
            };
            if segment::judge_tail(&tail).is_ok() {
                return Ok(None);
            }
        }
        let (at, reason) = match walk.damage.clone() {
            Some(damage) => damage,
            None if is_last && incomplete => (
                walk.stopped_at,
                "the segment ends inside an append".to_owned(),
            ),
            None => {
                next_position = walk.next_position;
                last_hash = walk.last_hash;
                match next_segment {
                    Some(next_first) if next_first != next_position => {
                        // The segment lacks records at its end: a range of no bytes.
                        let end = RangeEnd::Before {
                            offset: data.len() as u64,
                            position: Position(next_first),
                            next_prev_hash: first_prev_hash(log_dir, next_first, config),
                        };
                        let reason = format!(
                            "the segment ends at position {next_position}, the next one starts at {next_first}"
                        );
                        return Ok(Some(range(
                            &path,
                            format,
                            &data,
                            &walk,
                            data.len(),
                            end,
                            reason,
                        )));
                    }
                    _ => continue,
                }
            }
        };
        let end = match next_intact(&data, walk.data_end, format, at, walk.next_position, config) {
            Some((offset, position, prev)) => RangeEnd::Before {
                offset: offset as u64,
                position: Position(position),
                next_prev_hash: Some(ChainHash(prev)),
            },
            None => match next_segment {
                Some(next_first) => RangeEnd::Before {
                    offset: data.len() as u64,
                    position: Position(next_first),
                    next_prev_hash: first_prev_hash(log_dir, next_first, config),
                },
                None => RangeEnd::DataEnd {
                    data_end: walk.data_end as u64,
                    file_len: data.len() as u64,
                },
            },
        };
        return Ok(Some(range(&path, format, &data, &walk, at, end, reason)));
    }
    Ok(None)
}

fn range(
    path: &Path,
    format: Format,
    data: &[u8],
    walk: &Walk,
    at: usize,
    end: RangeEnd,
    reason: String,
) -> DamagedRange {
    DamagedRange {
        segment: path.to_path_buf(),
        format,
        start: at as u64,
        first_position: Position(walk.next_position),
        prev_hash: ChainHash(walk.last_hash),
        end,
        reason,
        file_len: data.len() as u64,
        file_hash: *blake3::hash(data).as_bytes(),
        prev_ends_commit: walk.last_ends_commit,
    }
}

/// One segment walked from its first record to the first damage.
struct Walk {
    /// The first damaged record's offset and what is wrong with it.
    damage: Option<(usize, String)>,
    /// The damage when it is a record that does not parse (recovery judges those at the
    /// end of the last segment).
    parse_damage: Option<segment::Damage>,
    /// The position after the last intact record.
    next_position: u64,
    /// The chain hash of the last intact record.
    last_hash: [u8; 32],
    /// Where the last complete append before the damage ends.
    committed: usize,
    /// The largest `synced_to` of the intact records.
    proven_synced: u64,
    /// The end of the segment's non-zero bytes.
    data_end: usize,
    /// Where the walk stopped: the damage, or the end of the last intact record.
    stopped_at: usize,
    /// Whether the last intact record ends its append.
    last_ends_commit: bool,
}

fn walk_segment(
    data: &[u8],
    format: Format,
    mut next_position: u64,
    mut last_hash: [u8; 32],
    config: &StoreConfig,
) -> Walk {
    let data_end = data
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    let mut offset = format.data_start().min(data.len());
    let mut committed = offset;
    let mut proven_synced = 0;
    let mut damage = None;
    let mut parse_damage = None;
    let mut last_ends_commit = true;
    while offset < data.len() {
        match segment::parse_record(&data[offset..], config.max_event_bytes, format) {
            Err(found) => {
                if offset < data_end {
                    damage = Some((offset, found.to_string()));
                    parse_damage = Some(found);
                }
                break;
            }
            Ok(record) if record.event.position != next_position => {
                let found = record.event.position;
                damage = Some((
                    offset,
                    format!("expected position {next_position}, found {found}"),
                ));
                break;
            }
            Ok(record) if record.prev_hash != &last_hash => {
                damage = Some((offset, "hash chain broken".to_owned()));
                break;
            }
            Ok(record) => {
                last_hash = record.hash();
                next_position += 1;
                offset += record.len;
                proven_synced = proven_synced.max(record.synced_to);
                last_ends_commit = record.ends_commit();
                if last_ends_commit {
                    committed = offset;
                }
            }
        }
    }
    Walk {
        damage,
        parse_damage,
        next_position,
        last_hash,
        committed,
        proven_synced,
        data_end,
        stopped_at: offset,
        last_ends_commit,
    }
}

/// The first intact record after the damage at `damaged_at` (and before `data_end`, where
/// the segment's non-zero bytes end): its header and body checksums pass, its position is at least `next_position`, and every record after it
/// in the segment (up to the end or the next damage) chains on from it. Returns its
/// offset, position and `prev_hash`.
fn next_intact(
    data: &[u8],
    data_end: usize,
    format: Format,
    damaged_at: usize,
    next_position: u64,
    config: &StoreConfig,
) -> Option<(usize, u64, [u8; 32])> {
    // A record starts before the end of the non-zero bytes (its header is not zeros).
    let mut at = damaged_at + 1;
    while at < data_end {
        if let Ok(record) = segment::parse_record(&data[at..], config.max_event_bytes, format)
            && record.event.position >= next_position
            && chains_on(data, format, at, config)
        {
            return Some((at, record.event.position, *record.prev_hash));
        }
        at += 1;
    }
    None
}

/// Whether the records from the intact one at `at` chain on to the end of the segment or
/// to the next record that does not parse.
fn chains_on(data: &[u8], format: Format, mut at: usize, config: &StoreConfig) -> bool {
    let mut before: Option<(u64, [u8; 32])> = None;
    while let Ok(record) = segment::parse_record(&data[at..], config.max_event_bytes, format) {
        if let Some((position, hash)) = before
            && (record.event.position != position + 1 || record.prev_hash != &hash)
        {
            return false;
        }
        before = Some((record.event.position, record.hash()));
        at += record.len;
    }
    true
}

/// The `prev_hash` of the first record of the segment starting at `first`, if that
/// record is intact.
fn first_prev_hash(log_dir: &Path, first: u64, config: &StoreConfig) -> Option<ChainHash> {
    let data = read_file(&log_dir.join(segment::segment_file_name(first))).ok()?;
    let format = segment::detect_format(&data).ok()?;
    let record = segment::parse_record(
        data.get(format.data_start()..)?,
        config.max_event_bytes,
        format,
    )
    .ok()?;
    (record.event.position == first).then_some(ChainHash(*record.prev_hash))
}

/// The records that replace a [`DamagedRange`], built from the copy's events in order.
#[derive(Debug)]
pub struct Replacement {
    range: DamagedRange,
    bytes: Vec<u8>,
    next_position: u64,
    last_hash: [u8; 32],
    last_ends_commit: bool,
}

impl Replacement {
    /// An empty replacement for `range`.
    pub fn new(range: DamagedRange) -> Replacement {
        Replacement {
            next_position: range.first_position.0,
            last_hash: range.prev_hash.0,
            last_ends_commit: range.prev_ends_commit,
            bytes: Vec::new(),
            range,
        }
    }

    /// The range being replaced.
    pub fn range(&self) -> &DamagedRange {
        &self.range
    }

    /// The position the next event must have.
    pub fn next_position(&self) -> Position {
        Position(self.next_position)
    }

    /// Encodes the copy's next event as the range's next record, chained from the record
    /// before it. Refuses an event out of place or one that would run past the segment.
    pub fn push(&mut self, event: &RecordedEvent) -> Result<(), Refusal> {
        if event.position.0 != self.next_position {
            return Err(Refusal(format!(
                "the copy holds position {} where the damaged range needs position {}",
                event.position, self.next_position
            )));
        }
        let flags = if event.last_in_commit {
            segment::FLAG_COMMIT_END
        } else {
            0
        };
        let mut record = Vec::new();
        let hash =
            segment::encode_record(&mut record, flags, &self.last_hash, &event.to_stored(), 0)
                .map_err(|error| {
                    Refusal(format!(
                        "the copy's event at position {}: {error}",
                        event.position
                    ))
                })?;
        match self.range.format {
            Format::V2 => self.bytes.extend_from_slice(&record),
            Format::V1 => {
                // `body_len | crc32(body) | body`: format 2's header without its
                // `synced_to` and header checksum.
                self.bytes.extend_from_slice(&record[..4]);
                self.bytes.extend_from_slice(&record[8..12]);
                self.bytes
                    .extend_from_slice(&record[segment::HEADER_BYTES..]);
            }
        }
        self.last_hash = hash;
        self.last_ends_commit = event.last_in_commit;
        self.next_position += 1;
        if self.range.start + self.bytes.len() as u64 > self.range.file_len {
            return Err(Refusal(format!(
                "the copy's events up to position {} take {} bytes from byte {}, past the end of {} ({} bytes)",
                event.position,
                self.bytes.len(),
                self.range.start,
                self.range.segment.display(),
                self.range.file_len
            )));
        }
        Ok(())
    }

    /// Whether the range has all its events: up to the intact record after it, or (at the
    /// end of the last segment) whole appends reaching the end of its data.
    pub fn is_complete(&self) -> bool {
        match &self.range.end {
            RangeEnd::Before { position, .. } => self.next_position >= position.0,
            RangeEnd::DataEnd { data_end, .. } => {
                self.range.start + self.bytes.len() as u64 >= *data_end && self.last_ends_commit
            }
        }
    }
}

/// Replaces the damaged range with `replacement` if its records fit exactly: they chain
/// onto the intact record after the range and fill its bytes exactly. Otherwise refuses
/// and touches nothing. The segment is rewritten through a temporary file (fsync'd,
/// compared byte by byte outside the range with the original), renamed over the segment,
/// and the directory fsync'd.
pub fn apply(
    lock: &RepairLock,
    replacement: Replacement,
) -> Result<Result<Repaired, Refusal>, Error> {
    let Replacement {
        range,
        bytes,
        next_position,
        last_hash,
        ..
    } = replacement;
    let refuse = |reason: String| Ok(Err(Refusal(reason)));
    let end = match &range.end {
        RangeEnd::Before {
            offset,
            position,
            next_prev_hash,
        } => {
            if next_position != position.0 {
                return refuse(format!(
                    "the copy gave the range positions {}..{next_position}, but it runs to position {}",
                    range.first_position, position.0
                ));
            }
            if let Some(expected) = next_prev_hash
                && *expected != ChainHash(last_hash)
            {
                return refuse(format!(
                    "the copy's event at position {} has chain hash {}, but the intact record at position {position} (byte {offset}) follows a record with hash {expected}",
                    next_position.saturating_sub(1),
                    ChainHash(last_hash)
                ));
            }
            if range.start + bytes.len() as u64 != *offset {
                return refuse(format!(
                    "the copy's events at positions {}..{next_position} take {} bytes, but the damaged range is {} bytes ({}..{offset})",
                    range.first_position,
                    bytes.len(),
                    offset - range.start,
                    range.start
                ));
            }
            *offset
        }
        RangeEnd::DataEnd { data_end, file_len } => {
            let end = range.start + bytes.len() as u64;
            if end < *data_end || end > *file_len {
                return refuse(format!(
                    "the copy's events at positions {}..{next_position} end at byte {end}, but the damaged data ends at byte {data_end} of {file_len}",
                    range.first_position
                ));
            }
            end
        }
    };
    let original = read_file(&range.segment)?;
    if original.len() as u64 != range.file_len
        || *blake3::hash(&original).as_bytes() != range.file_hash
    {
        return refuse(format!(
            "{} changed since the damage was found",
            range.segment.display()
        ));
    }
    let (start, end) = (range.start as usize, end as usize);
    let mut repaired = Vec::with_capacity(original.len());
    repaired.extend_from_slice(&original[..start]);
    repaired.extend_from_slice(&bytes);
    repaired.extend_from_slice(&original[end..]);
    let temp = range
        .segment
        .with_extension(format!("seg.{TEMP_EXTENSION}"));
    let mut file = File::create(&temp).map_err(Error::io(&temp))?;
    file.write_all(&repaired)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(&temp))?;
    drop(file);
    // Never rewrite an intact record: what reached the disk must be the original outside
    // the range, and the copy's records inside it.
    let written = read_file(&temp)?;
    let same = written.len() == original.len()
        && written[..start] == original[..start]
        && written[start..end] == bytes[..]
        && written[end..] == original[end..];
    if !same {
        std::fs::remove_file(&temp).map_err(Error::io(&temp))?;
        return Err(Error::io(&temp)(std::io::Error::other(
            "the repaired segment read back differs from what was written",
        )));
    }
    std::fs::rename(&temp, &range.segment).map_err(Error::io(&range.segment))?;
    crate::segment_files::sync_dir(&RealFs::new(lock.log_dir.as_path()))?;
    Ok(Ok(Repaired {
        segment: range.segment.clone(),
        first_position: range.first_position,
        events: next_position - range.first_position.0,
        start: range.start,
        end: end as u64,
    }))
}

/// A whole file of the (real) log directory: repair works on the files themselves, offline.
fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io(path))
}
