//! Telling a torn tail from corruption at the end of the last segment: the judgment
//! recovery applies, and the argument for it (docs/ARCHITECTURE.md, "Torn tail or
//! corruption: the argument").

use crate::segment::{Damage, Format, HEADER_BYTES, SECTOR_BYTES, parse_record};

/// What recovery found at the end of the last segment, to be judged by [`judge_tail`].
#[derive(Debug)]
pub struct Tail<'a> {
    /// The segment's bytes up to its last non-zero byte (zeros after it are unwritten
    /// preallocation).
    pub data: &'a [u8],
    /// The segment's format.
    pub format: Format,
    /// Where the last complete append ends: everything from here on would be cut.
    pub committed: usize,
    /// Where the damage is (the end of the data when the segment ends inside an append).
    pub damage_at: usize,
    /// The damage, or `None` when the segment just ends inside an append.
    pub damage: Option<&'a Damage>,
    /// The largest `synced_to` of the good records before the damage.
    pub proven_synced: u64,
    /// The largest record body.
    pub max_record_bytes: usize,
}

/// Whether the end of the last segment is a torn write (unacknowledged, safe to cut) or
/// corruption of synced data (`Err` with the reason), which must be reported, never cut.
///
/// The argument (docs/ARCHITECTURE.md, "Torn tail or corruption"): a power loss changes
/// only bytes written after the last `fdatasync` that returned, and changes them only by
/// losing them, whole 512-byte sectors (which then read as zeros, since the writer only
/// ever writes into zero-filled space) and at most one torn sector (the new bytes up to
/// some point, zeros after it). So the tail is torn only if
/// 1. no intact record anywhere in the segment was written when the damaged place was
///    already synced (its `synced_to` reaches past the start of the damaged append), and
/// 2. the damage itself is what losing sectors looks like: a short segment, a zeroed or
///    cut header, a record running on into zeros, or a record whose checksum fails and
///    one of whose sector pieces ends in zeros. A header that fails its checksum while its
///    sector has no zeros, an impossible length behind a good header checksum, or a
///    record that passes its checksums but does not decode cannot come from a power loss.
pub fn judge_tail(tail: &Tail<'_>) -> Result<(), String> {
    let data = tail.data;
    let mut proven = tail.proven_synced;
    let mut proof_at = None;
    if tail.format == Format::V2 && tail.damage.is_some() {
        let mut at = tail.damage_at + 1;
        while at + HEADER_BYTES <= data.len() {
            let header = &data[at..at + HEADER_BYTES];
            let stored_crc = u32::from_le_bytes(header[12..].try_into().expect("4 bytes"));
            if crc32fast::hash(&header[..12]) == stored_crc
                && let Ok(record) = parse_record(&data[at..], tail.max_record_bytes, tail.format)
            {
                if record.synced_to > proven {
                    proven = record.synced_to;
                    proof_at = Some(at);
                }
                at += record.len;
                continue;
            }
            at += 1;
        }
    }
    if proven > tail.committed as u64 {
        let by = proof_at.map_or_else(
            || "a record before it".to_owned(),
            |at| format!("an intact record at byte {at}"),
        );
        return Err(format!(
            "synced data is damaged: {by} was written when this segment was durable through byte {proven}, past the damage at byte {}",
            tail.damage_at
        ));
    }
    let header_bytes = tail.format.header_bytes();
    let zero_to_sector_end = |from: usize, end: usize| {
        let sector_end = (from / SECTOR_BYTES + 1) * SECTOR_BYTES;
        data.get(from..sector_end.min(end).min(data.len()))
            .is_none_or(|bytes| bytes.iter().all(|byte| *byte == 0))
    };
    match tail.damage {
        None
        | Some(Damage::IncompleteHeader)
        | Some(Damage::ZeroHeader)
        | Some(Damage::PastEnd) => Ok(()),
        // A format-1 header has no checksum of its own: a cut one shows as a wrong length.
        Some(Damage::HeaderChecksum) | Some(Damage::ImpossibleLength(_))
            if tail.format == Format::V1 || matches!(tail.damage, Some(Damage::HeaderChecksum)) =>
        {
            let header_end = tail.damage_at + header_bytes;
            // Past the data is zeros: the data ends at its last non-zero byte.
            let lost = (tail.damage_at..header_end).any(|at| {
                data.get(at).is_none_or(|byte| *byte == 0) && zero_to_sector_end(at, usize::MAX)
            });
            if lost {
                Ok(())
            } else {
                Err("a record header fails its checksum and shows no sign of a lost write".into())
            }
        }
        Some(Damage::Checksum) => {
            let mut len_bytes = [0u8; 4];
            for (i, byte) in len_bytes.iter_mut().enumerate() {
                *byte = data.get(tail.damage_at + i).copied().unwrap_or(0);
            }
            let body_len = u32::from_le_bytes(len_bytes) as usize;
            let body_start = tail.damage_at + header_bytes;
            let record_end = body_start + body_len;
            // A lost or torn sector leaves the record's piece of it ending in zeros.
            let mut piece_start = body_start;
            while piece_start < record_end {
                let piece_end = ((piece_start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(record_end);
                if data.get(piece_end - 1).is_none_or(|byte| *byte == 0) {
                    return Ok(());
                }
                piece_start = piece_end;
            }
            Err("a record fails its checksum and shows no sign of a lost write".into())
        }
        Some(
            damage
            @ (Damage::HeaderChecksum | Damage::ImpossibleLength(_) | Damage::Undecodable(_)),
        ) => Err(format!("{damage}, which a lost write cannot cause")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::StoredEvent;
    use crate::segment::{
        FLAG_COMMIT_END, GENESIS_HASH, SEGMENT_HEADER_BYTES, encode_record, segment_header,
    };

    fn event(position: u64, payload: &[u8]) -> StoredEvent<'_> {
        crate::segment::test_event(position, payload)
    }

    /// A segment of `count` small records of `payload`, each claiming `synced_to`.
    fn segment_of(count: u64, payload: &[u8], synced_to: impl Fn(usize) -> u32) -> Vec<u8> {
        let mut data = segment_header().to_vec();
        let mut hash = GENESIS_HASH;
        for position in 0..count {
            let stamp = synced_to(data.len());
            hash = encode_record(
                &mut data,
                FLAG_COMMIT_END,
                &hash,
                &event(position, payload),
                stamp,
            )
            .unwrap();
        }
        data
    }

    fn tail<'a>(data: &'a [u8], at: usize, damage: Option<&'a Damage>) -> Tail<'a> {
        Tail {
            data,
            format: Format::V2,
            committed: at,
            damage_at: at,
            damage,
            proven_synced: 0,
            max_record_bytes: 1 << 20,
        }
    }

    fn offsets(data: &[u8]) -> Vec<usize> {
        let mut at = SEGMENT_HEADER_BYTES;
        let mut offsets = Vec::new();
        while let Ok(record) = parse_record(&data[at..], 1 << 20, Format::V2) {
            offsets.push(at);
            at += record.len;
        }
        offsets
    }

    #[test]
    fn a_flipped_length_bit_is_corruption_however_close_to_the_end() {
        let mut data = segment_of(40, &[7; 100], |_| 0);
        let at = *offsets(&data).last().unwrap();
        data[at + 1] ^= 0x01;
        let damage = parse_record(&data[at..], 1 << 20, Format::V2).unwrap_err();
        assert_eq!(damage, Damage::HeaderChecksum);
        assert!(judge_tail(&tail(&data, at, Some(&damage))).is_err());
    }

    #[test]
    fn a_flipped_body_bit_is_corruption_even_with_zero_payloads_after_it() {
        let mut data = segment_of(10, &[9; 300], |_| 0);
        let at = offsets(&data)[3];
        data.extend(segment_of(1, &[0; 2000], |_| 0)[SEGMENT_HEADER_BYTES..].iter());
        data[at + 40] ^= 0x10;
        let damage = parse_record(&data[at..], 1 << 20, Format::V2).unwrap_err();
        assert_eq!(damage, Damage::Checksum);
        assert!(judge_tail(&tail(&data, at, Some(&damage))).is_err());
    }

    #[test]
    fn lost_sectors_are_a_torn_tail() {
        let data = segment_of(20, &[5; 200], |_| 0);
        let records = offsets(&data);
        // The sector holding the start of record 12 never reached the disk.
        let at = records[12];
        let mut lost = data.clone();
        let sector = at / SECTOR_BYTES * SECTOR_BYTES;
        lost[sector..sector + SECTOR_BYTES].fill(0);
        let first_damaged = records.iter().copied().find(|r| r + 300 > sector).unwrap();
        let damage = parse_record(&lost[first_damaged..], 1 << 20, Format::V2).unwrap_err();
        assert_eq!(
            judge_tail(&tail(&lost, first_damaged, Some(&damage))),
            Ok(())
        );
        // Torn: the sector's new bytes up to some point, zeros after.
        let mut torn = data.clone();
        torn[at + 20..sector + SECTOR_BYTES].fill(0);
        let damage = parse_record(&torn[at..], 1 << 20, Format::V2).unwrap_err();
        assert_eq!(damage, Damage::Checksum);
        assert_eq!(judge_tail(&tail(&torn, at, Some(&damage))), Ok(()));
    }

    #[test]
    fn a_header_cut_by_the_end_of_the_data_is_a_torn_tail() {
        // The sector after the header's first bytes was lost, and nothing follows: the
        // data (which ends at its last non-zero byte) ends inside the header.
        let data = segment_of(10, &[5; 200], |_| 0);
        let at = offsets(&data)[6];
        let cut = &data[..at + 3];
        assert_eq!(
            judge_tail(&tail(cut, at, Some(&Damage::HeaderChecksum))),
            Ok(())
        );
        assert_eq!(judge_tail(&tail(cut, at, Some(&Damage::Checksum))), Ok(()));
    }

    #[test]
    fn a_later_record_that_was_written_after_the_damage_was_synced_proves_corruption() {
        // Every record claims everything before it was synced.
        let data = segment_of(20, &[5; 200], |len| len as u32);
        let at = offsets(&data)[12];
        let mut lost = data.clone();
        lost[at..at + SECTOR_BYTES].fill(0);
        let damage = parse_record(&lost[at..], 1 << 20, Format::V2).unwrap_err();
        let verdict = judge_tail(&tail(&lost, at, Some(&damage)));
        assert!(verdict.unwrap_err().contains("synced data is damaged"));
    }
}
