//! Recovery at open: check the index's high-water mark against the log, walk the log from
//! there to its end (checksums, positions, hash chain), index what the index lacks, and
//! cut a torn tail or refuse corruption (docs/ARCHITECTURE.md, "Opening and recovery").

use std::sync::Arc;

use crate::config::StoreConfig;
use crate::derived::index::{CommitLocation, HighWater, Index, IndexBatch, IndexedCommit};
use crate::error::{Error, PositionText};
use crate::ids::{EventId, Position, StreamId};
use crate::io::LogFs;
use crate::segment::{self, DurableEnd, LogCursor};
use crate::segment_files;

/// Where the log ends after recovery.
pub(crate) struct Recovered {
    pub(crate) next_position: u64,
    pub(crate) end_offset: u64,
    pub(crate) last_hash: [u8; 32],
    /// The last segment's format.
    pub(crate) format: segment::Format,
    /// Whether the last segment's format-2 header is on disk (a new segment's header is
    /// written with its first records, so a crash can leave a segment of zeros).
    pub(crate) header_on_disk: bool,
}

/// Appends recovery puts in one index batch (one entry of the sparse position map): about
/// what a busy group commit holds, so a read from any position skips as few records as
/// after normal operation.
const RECOVERY_COMMITS_PER_BATCH: usize = 64;

/// Appends recovery indexes per sled round. sled costs microseconds per key written and a
/// stream gets one run (one key) per round, so larger rounds write far fewer keys; this
/// bounds the memory a round holds.
const RECOVERY_COMMITS_PER_ROUND: usize = 1 << 16;

/// Brings the index up to the end of the log, starting from its high-water mark (or from
/// scratch if it has none or it does not match the log), and cuts a torn tail.
pub(crate) fn recover(
    fs: &Arc<dyn LogFs>,
    segments: &[u64],
    index: &Index,
    config: &StoreConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Recovered, Error> {
    let mut start = index.high_water()?.unwrap_or(HighWater::START);
    if let Some(why) = high_water_unproven(fs, segments, index, &start, config)? {
        tracing::warn!(
            %why,
            "the index's high-water mark is not provably on the log; rebuilding the index from the log"
        );
        index.clear()?;
        start = HighWater::START;
    }
    let total_bytes: u64 = segments
        .iter()
        .filter(|&&first| first >= start.segment)
        .map(|first| {
            fs.open(&segment::segment_file_name(*first))
                .and_then(|file| file.len())
                .unwrap_or(0)
        })
        .sum::<u64>()
        .saturating_sub(start.offset);
    let mut done_bytes = 0u64;

    let mut next_position = start.next_position;
    let mut last_hash = start.last_hash;
    let mut end_offset = start.offset;
    let mut last_format = segment::Format::V2;
    let mut header_on_disk = false;
    let first_segment_index = segments.partition_point(|&first| first < start.segment);
    for (i, &first) in segments.iter().enumerate().skip(first_segment_index) {
        let path = fs.path(&segment::segment_file_name(first));
        let is_last = i + 1 == segments.len();
        if first != start.segment && first != next_position {
            return Err(Error::Corrupt {
                segment: path,
                offset: 0,
                after: PositionText(next_position.checked_sub(1).map(Position)),
                reason: format!(
                    "segment starts at position {first}, but the log continues at {next_position}: a segment is missing or misnamed"
                ),
            });
        }
        let data = segment::read_segment(fs.as_ref(), first)?;
        let format = segment::detect_format(&data).map_err(|reason| Error::Corrupt {
            segment: path.clone(),
            offset: 0,
            after: PositionText(next_position.checked_sub(1).map(Position)),
            reason,
        })?;
        let mut offset = if first == start.segment {
            (start.offset as usize).max(format.data_start())
        } else {
            format.data_start()
        };
        let mut proven_synced = 0u64;
        let mut committed_offset = offset;
        let mut committed_position = next_position;
        let mut committed_hash = last_hash;
        let mut batches: Vec<IndexBatch> = Vec::new();
        let mut pending_commits = 0usize;
        let mut commit: Option<IndexedCommit> = None;
        let mut damage = None;
        while offset < data.len() {
            let record =
                match segment::parse_record(&data[offset..], config.max_event_bytes, format) {
                    Ok(record) => record,
                    Err(found) => {
                        damage = Some(found);
                        break;
                    }
                };
            let event = &record.event;
            let corrupt = |reason: String| Error::Corrupt {
                segment: path.clone(),
                offset: offset as u64,
                after: PositionText(next_position.checked_sub(1).map(Position)),
                reason,
            };
            if event.position != next_position {
                return Err(corrupt(format!(
                    "expected position {next_position}, found {}",
                    event.position
                )));
            }
            if record.prev_hash != &last_hash {
                return Err(corrupt("hash chain broken".into()));
            }
            let stream = StreamId::new(event.stream_id).map_err(|e| corrupt(e.to_string()))?;
            let id = EventId::from_uuid(uuid::Uuid::from_bytes(event.id))
                .map_err(|e| corrupt(e.to_string()))?;
            let entry = commit.get_or_insert_with(|| IndexedCommit {
                stream: stream.clone(),
                first_version: event.version,
                location: CommitLocation {
                    first_position: event.position,
                    count: 0,
                    segment: first,
                    offset: offset as u64,
                },
                event_ids: Vec::new(),
            });
            if entry.stream != stream
                || entry.first_version + entry.event_ids.len() as u64 != event.version
            {
                return Err(corrupt("an append mixes streams or skips a version".into()));
            }
            entry.event_ids.push(id);
            entry.location.count += 1;
            proven_synced = proven_synced.max(record.synced_to);
            last_hash = record.hash();
            next_position += 1;
            offset += record.len;
            if record.ends_commit() {
                let done = commit.take().expect("started above");
                let end = HighWater {
                    next_position,
                    segment: first,
                    offset: offset as u64,
                    last_hash,
                };
                // Consecutive appends share a batch, as a group commit's do: one entry of
                // the sparse position map per batch, not per append.
                match batches.last_mut() {
                    Some(batch) if batch.commits.len() < RECOVERY_COMMITS_PER_BATCH => {
                        batch.commits.push(done);
                        batch.end = end;
                    }
                    _ => batches.push(IndexBatch {
                        start: (done.location.first_position, first, done.location.offset),
                        commits: vec![done],
                        end,
                    }),
                }
                pending_commits += 1;
                committed_offset = offset;
                committed_position = next_position;
                committed_hash = last_hash;
                if pending_commits >= RECOVERY_COMMITS_PER_ROUND {
                    index.apply(&batches)?;
                    batches.clear();
                    pending_commits = 0;
                    progress(done_bytes + offset as u64, total_bytes);
                }
            }
        }
        index.apply(&batches)?;
        done_bytes += data.len() as u64;
        progress(done_bytes, total_bytes);

        // Zeros after the last record are unwritten preallocation, not data.
        let data_end = data
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |last| last + 1);
        if damage.is_some() && offset >= data_end {
            damage = None;
        }
        let tail_is_clean = damage.is_none() && committed_offset >= data_end;
        if !tail_is_clean {
            let reason = match &damage {
                Some(damage) => damage.to_string(),
                None => "the segment ends inside an append".into(),
            };
            // Only the last segment can hold unsynced bytes: the writer syncs a segment
            // whole before it starts the next.
            let verdict = if is_last {
                segment::judge_tail(&segment::Tail {
                    data: &data[..data_end.max(committed_offset)],
                    format,
                    committed: committed_offset,
                    damage_at: offset,
                    damage: damage.as_ref(),
                    proven_synced,
                    max_record_bytes: config.max_event_bytes,
                })
            } else {
                Err("a sealed segment is always synced whole".into())
            };
            if let Err(why) = verdict {
                return Err(Error::Corrupt {
                    segment: path,
                    offset: if damage.is_some() {
                        offset as u64
                    } else {
                        committed_offset as u64
                    },
                    after: PositionText(committed_position.checked_sub(1).map(Position)),
                    reason: format!("{reason}; {why}"),
                });
            }
            tracing::warn!(
                segment = %path.display(),
                cut_bytes = data_end - committed_offset,
                %reason,
                "cutting a torn tail left by a crash (never acknowledged)"
            );
        }
        if is_last && config.preallocate_segments {
            // Keep the active segment's preallocated space: zero what was torn instead
            // of cutting the file.
            if committed_offset < data_end {
                let file = segment_files::open_segment(fs.as_ref(), first)?;
                let zeros = vec![0u8; data_end - committed_offset];
                file.write_all_at(&zeros, committed_offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io(&path))?;
            }
        } else if committed_offset < data.len() {
            let file = segment_files::open_segment(fs.as_ref(), first)?;
            file.set_len(committed_offset as u64)
                .map_err(Error::io(&path))?;
            file.sync_all().map_err(Error::io(&path))?;
        }
        let kept_end = committed_offset.min(data.len());
        if is_last && (kept_end as u64) > proven_synced {
            // What this open keeps of the last segment becomes the durable end the
            // writer's first records will claim, but it may be only in the page cache
            // (written by a process that died before its sync), or in pages a failed
            // fsync left marked clean, which a plain fsync would not write. Write those
            // bytes again and sync them, so the claim holds.
            let from = proven_synced as usize;
            let file = segment_files::open_segment(fs.as_ref(), first)?;
            file.write_all_at(&data[from..kept_end], from as u64)
                .and_then(|()| file.sync_all())
                .map_err(Error::io(&path))?;
        }
        next_position = committed_position;
        last_hash = committed_hash;
        end_offset = committed_offset as u64;
        last_format = format;
        header_on_disk = format == segment::Format::V2
            && data.get(..segment::SEGMENT_HEADER_BYTES) == Some(&segment::segment_header()[..]);
    }
    Ok(Recovered {
        next_position,
        end_offset,
        last_hash,
        format: last_format,
        header_on_disk,
    })
}

/// Why the index's high-water mark is not provably on this log, or `None` when it is.
///
/// The mark says "the log holds positions up to `next_position - 1`, that last record
/// ends at byte `offset` of segment `segment`, and its hash is `last_hash`". It is proven
/// by reading the log from the index's last group-commit start up to the mark (at most one
/// group commit of records): every record must be there and whole, the positions must run
/// on to the mark, the walk must end exactly at the mark's byte place, and the last record
/// must carry the remembered hash. Anything else (a read error, a missing segment, damage,
/// zeros, a mark past the log's end, a different hash) means the index describes another
/// log or a longer copy of this one (a `log/` restored from an older backup beside a newer
/// `index/`): trusting it would leave the writer appending at the index's position, after
/// a hole. Such an index is rebuilt from the log.
fn high_water_unproven(
    fs: &Arc<dyn LogFs>,
    segments: &[u64],
    index: &Index,
    high_water: &HighWater,
    config: &StoreConfig,
) -> Result<Option<String>, Error> {
    if *high_water == HighWater::START {
        return Ok(None);
    }
    let Some(last_position) = high_water.next_position.checked_sub(1) else {
        return Ok(Some(
            "its high-water mark is at position 0 but not at the start of the log".into(),
        ));
    };
    if segments.binary_search(&high_water.segment).is_err() {
        return Ok(Some(format!(
            "its high-water mark lies in segment {}, which the log does not have",
            segment::segment_file_name(high_water.segment)
        )));
    }
    let Some((first_position, first_segment, first_offset)) =
        index.batch_start_before(last_position)?
    else {
        return Ok(Some(format!(
            "it has no commit location at or before position {last_position}"
        )));
    };
    // Read as far as the mark and no further: the mark's segment counts as ending there.
    let mark = DurableEnd {
        next_position: high_water.next_position,
        active_segment: high_water.segment,
        active_len: high_water.offset,
    };
    let mut cursor = LogCursor::at(
        fs.clone(),
        first_segment,
        first_offset,
        first_position,
        config.max_event_bytes,
    );
    let mut last_hash = None;
    // The writer trusts the index's stream heads and event ids. sled writes the heads and
    // ids of a round before its high-water mark, and recovers a prefix of its writes, so
    // if the last round's heads and ids are there, so are all before: check those.
    let mut derived_mismatch = None;
    loop {
        let read = cursor.read_with(&mark, usize::MAX, |record, _, _| {
            last_hash = Some(record.hash());
            let event = &record.event;
            if derived_mismatch.is_some() {
                return Ok(());
            }
            let id = EventId::from_uuid(uuid::Uuid::from_bytes(event.id));
            let stream = StreamId::new(event.stream_id);
            let (Ok(id), Ok(stream)) = (id, stream) else {
                return Ok(());
            };
            if index.event_position(&id)? != Some(event.position) {
                derived_mismatch = Some(format!(
                    "it does not hold the id of the event at position {}",
                    event.position
                ));
            } else if index
                .head(&stream)?
                .is_none_or(|head| head.0 < event.version)
            {
                derived_mismatch = Some(format!(
                    "its head of stream {stream} is behind version {} at position {}",
                    event.version, event.position
                ));
            }
            Ok(())
        });
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                return Ok(Some(format!(
                    "the log does not hold its high-water mark (position {last_position}): {error}"
                )));
            }
        }
    }
    if cursor.next_position() != high_water.next_position {
        return Ok(Some(format!(
            "it remembers positions up to {last_position}, but the log ends at position {}",
            cursor.next_position()
        )));
    }
    // A mark at the very start of a segment follows the end of the segment before it.
    let (segment_at, offset_at) = cursor.place();
    let at_mark = (segment_at, offset_at) == (high_water.segment, high_water.offset)
        || (high_water.offset == 0 && high_water.segment == high_water.next_position);
    if !at_mark {
        return Ok(Some(format!(
            "position {last_position} ends at byte {offset_at} of segment {}, not where the index says",
            segment::segment_file_name(segment_at)
        )));
    }
    if last_hash != Some(high_water.last_hash) {
        return Ok(Some(format!(
            "the record at position {last_position} does not carry the hash the index remembers"
        )));
    }
    Ok(derived_mismatch)
}
