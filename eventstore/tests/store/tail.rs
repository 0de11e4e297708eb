//! The end of the active segment after a crash: a torn write (never acknowledged) is cut,
//! however much the writer had in flight; damage to synced records is `Error::Corrupt`
//! and the files stay as they were, however close to the end it lies (issue: a flipped
//! length bit near the end once cut 1,001 acknowledged events).

use std::path::{Path, PathBuf};

use eventstore::segment::{self, Format, detect_format, parse_record};
use eventstore::{
    Error, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreConfig, StoredEvent, Version,
};
use tempfile::TempDir;

use crate::common::{event, open, read_everything, segment_files, stream, try_open};

/// Every record of a segment file: offset, length, `synced_to`, chain hash.
fn records(path: &Path) -> Vec<(usize, usize, u64, [u8; 32])> {
    let data = std::fs::read(path).unwrap();
    let format = detect_format(&data).unwrap();
    let mut offset = format.data_start();
    let mut found = Vec::new();
    while let Ok(record) = parse_record(&data[offset..], 1 << 20, format) {
        found.push((offset, record.len, record.synced_to, record.hash()));
        offset += record.len;
    }
    found
}

/// A closed store of `count` events appended one after another (each acknowledged before
/// the next), the one at `nul_at` with a payload of 2,000 NUL bytes (a sku named with NUL
/// characters), its log and its only segment.
async fn store_of(count: usize, nul_at: Option<usize>) -> (TempDir, Vec<RecordedEvent>, PathBuf) {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    for i in 0..count {
        let new = if nul_at == Some(i) {
            NewEvent::new("SkuNamed", vec![0; 2000])
        } else {
            event(i)
        };
        store
            .append(
                &stream(&format!("s-{}", i % 7)),
                ExpectedVersion::Any,
                vec![new],
            )
            .await
            .unwrap();
    }
    let log = read_everything(&store);
    store.close().await;
    drop(store);
    let segments = segment_files(dir.path());
    assert_eq!(segments.len(), 1, "everything in the active segment");
    (dir, log, segments[0].clone())
}

/// Opening must fail with `Corrupt` at `offset` of `segment`, after `last_good`, and
/// leave the segment's bytes exactly as they were.
fn assert_refused(dir: &Path, segment: &Path, offset: usize, last_good: u64) {
    let before = std::fs::read(segment).unwrap();
    match try_open(dir, StoreConfig::default()) {
        Err(Error::Corrupt {
            segment: found,
            offset: at,
            after,
            reason,
        }) => {
            assert_eq!(found, segment);
            assert_eq!(at, offset as u64, "{reason}");
            assert_eq!(after.0, Some(Position(last_good)), "{reason}");
        }
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(store) => panic!(
            "opened with {} events: acknowledged events were cut",
            read_everything(&store).len()
        ),
    }
    assert!(
        std::fs::read(segment).unwrap() == before,
        "the files stay untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_length_bit_in_the_last_mib_is_corruption_and_nothing_is_cut() {
    let (dir, _, segment) = store_of(2001, None).await;
    let records = records(&segment);
    let (offset, ..) = records[1000];
    let end = records.last().map(|(at, len, ..)| at + len).unwrap();
    assert!(
        end - offset < 1 << 20,
        "the damage lies within the last MiB"
    );
    let mut data = std::fs::read(&segment).unwrap();
    // The length now claims 512 KiB more: past the data's end, under the record limit.
    data[offset + 2] ^= 0x08;
    let claimed = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
    assert!(offset + claimed > end && claimed < 1 << 20);
    std::fs::write(&segment, data).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    assert_refused(dir.path(), &segment, offset, 999);
}

#[tokio::test(flavor = "multi_thread")]
async fn damage_followed_by_a_sku_of_nul_characters_is_corruption() {
    // A client can put a block of zeros into the log; it must not pass for a lost write.
    for damage in ["length", "payload"] {
        let (dir, _, segment) = store_of(300, Some(295)).await;
        let records = records(&segment);
        let (offset, len, ..) = records[290];
        let mut data = std::fs::read(&segment).unwrap();
        match damage {
            "length" => data[offset + 1] ^= 0x02,
            _ => data[offset + len - 3] ^= 0x01,
        }
        std::fs::write(&segment, data).unwrap();
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        assert_refused(dir.path(), &segment, offset, 289);
    }
}

/// Appends to `segment` (after its last record) `count` one-event appends of about
/// `payload_bytes` each, continuing the log's chain and positions, each claiming only
/// `synced_to` bytes durable: what the writer leaves when it ran far ahead of the syncer
/// and the power went. Returns where the crafted records start.
fn write_unsynced_tail(
    segment: &Path,
    log: &[RecordedEvent],
    count: usize,
    payload_bytes: usize,
    synced_to: impl Fn(usize) -> u32,
) -> usize {
    let existing = records(segment);
    let (last_offset, last_len, _, mut hash) = *existing.last().unwrap();
    let start = last_offset + last_len;
    let mut bytes = Vec::new();
    for i in 0..count {
        let new = NewEvent::new(
            "InFlight",
            format!("{i:08} {}", "u".repeat(payload_bytes)).into_bytes(),
        );
        let position = Position((log.len() + i) as u64);
        let name = stream(&format!("in-flight-{i}"));
        let stored = StoredEvent::of(&new, &name, Version(0), position, 0);
        let stamp = synced_to(start + bytes.len());
        hash = segment::encode_record(&mut bytes, segment::FLAG_COMMIT_END, &hash, &stored, stamp)
            .unwrap();
    }
    let mut data = std::fs::read(segment).unwrap();
    data[start..start + bytes.len()].copy_from_slice(&bytes);
    std::fs::write(segment, data).unwrap();
    start
}

#[tokio::test(flavor = "multi_thread")]
async fn a_power_loss_with_more_than_8_mib_unsynced_opens_cleanly() {
    let (dir, log, segment) = store_of(50, None).await;
    let synced_end = records(&segment)
        .last()
        .map(|(at, len, ..)| (at + len) as u32)
        .unwrap();
    // 12 MiB written after the last sync that returned; a sector of the first of those
    // writes never reached the disk, the later ones did.
    let start = write_unsynced_tail(&segment, &log, 3000, 4096, |_| synced_end);
    let mut data = std::fs::read(&segment).unwrap();
    let lost = (start + 5000) / 512 * 512;
    data[lost..lost + 512].fill(0);
    std::fs::write(&segment, data).unwrap();
    // The in-flight appends wholly before the lost sector survived whole: they may stay.
    let whole_before_loss = records(&segment).len();
    assert!(
        whole_before_loss > log.len(),
        "the test needs some to survive"
    );

    let store = open(dir.path(), StoreConfig::default());
    let recovered = read_everything(&store);
    assert_eq!(recovered.len(), whole_before_loss, "cut at the lost sector");
    assert_eq!(
        &recovered[..log.len()],
        log,
        "every acknowledged event is there"
    );
    store.verify().unwrap();
    let outcome = store
        .append(
            &stream("after"),
            ExpectedVersion::NoStream,
            vec![event("after")],
        )
        .await
        .unwrap();
    assert_eq!(outcome.first_position, Position(whole_before_loss as u64));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_record_that_proves_the_damage_was_synced_makes_it_corruption() {
    let (dir, log, segment) = store_of(50, None).await;
    // The same lost sector, but the records after it were written once everything up to
    // them was durable: the sector was synced, and losing it is corruption.
    let start = write_unsynced_tail(&segment, &log, 100, 400, |at| at as u32);
    let records = records(&segment);
    let damaged = records
        .iter()
        .position(|(at, ..)| *at > start + 2000)
        .unwrap();
    let (offset, ..) = records[damaged];
    let mut data = std::fs::read(&segment).unwrap();
    data[offset..offset + 512].fill(0);
    std::fs::write(&segment, data).unwrap();
    assert_refused(dir.path(), &segment, offset, damaged as u64 - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_format_1_active_segment_is_read_and_the_writer_starts_a_format_2_segment() {
    let (dir, log, segment) = store_of(20, None).await;
    // Rewrite the segment in format 1, as a store written before format 2 left it.
    let data = std::fs::read(&segment).unwrap();
    let mut old = Vec::new();
    for (offset, ..) in records(&segment) {
        let record = parse_record(&data[offset..], 1 << 20, Format::V2).unwrap();
        old.extend_from_slice(&(record.body.len() as u32).to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(record.body).to_le_bytes());
        old.extend_from_slice(record.body);
    }
    std::fs::write(&segment, &old).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();

    let store = open(dir.path(), StoreConfig::default());
    assert_eq!(read_everything(&store), log);
    store
        .append(
            &stream("new"),
            ExpectedVersion::NoStream,
            vec![event("new")],
        )
        .await
        .unwrap();
    let segments = segment_files(dir.path());
    assert_eq!(segments.len(), 2, "a new segment for format 2");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        old,
        "the old segment is not written to"
    );
    assert_eq!(
        detect_format(&std::fs::read(&segments[1]).unwrap()),
        Ok(Format::V2)
    );
    store.verify().unwrap();
    store.close().await;
}
