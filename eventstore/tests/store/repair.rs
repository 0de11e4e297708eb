//! Repair from a copy (`eventstore::repair`): the first damaged range of records is found
//! and replaced with the copy's events only when they chain onto the intact records
//! around it and fill it exactly; anything else is refused with the files untouched.

use std::path::Path;

use eventstore::repair::{self, RangeEnd, Refusal, Repaired, Replacement};
use eventstore::{Error, Position, RecordedEvent, StoreConfig};
use tempfile::TempDir;

use crate::common::{Filling, open, read_everything, segment_files, segments_of};

fn config() -> StoreConfig {
    segments_of(32 << 10)
}

/// A closed store of single- and multi-event appends over several 32 KiB segments, and
/// its log.
async fn filled_store(tag: &str) -> (TempDir, Vec<RecordedEvent>) {
    let filling = Filling {
        prefix: "repair",
        tag,
        appends: 300,
        streams: 4,
        max_events: 3,
        pad: 150,
        min_segments: 4,
    };
    crate::common::filled_store(config(), filling).await
}

/// Replaces the first damaged range with the events of `copy`; `None` if nothing is
/// damaged.
fn repair_once(dir: &Path, copy: &[RecordedEvent]) -> Option<Result<Repaired, Refusal>> {
    let lock = repair::lock(dir).unwrap();
    let range = repair::find_damage(&lock, &StoreConfig::default()).unwrap()?;
    let mut replacement = Replacement::new(range.clone());
    for event in &copy[range.first_position.0 as usize..] {
        if replacement.is_complete() {
            break;
        }
        if let Err(refusal) = replacement.push(event) {
            return Some(Err(refusal));
        }
    }
    Some(repair::apply(&lock, replacement).unwrap())
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

async fn verified_log(dir: &Path) -> Vec<RecordedEvent> {
    let store = open(dir, config());
    store.verify().unwrap();
    let log = read_everything(&store);
    store.close().await;
    log
}

#[tokio::test]
async fn damage_in_the_middle_of_a_sealed_segment_is_replaced_from_the_copy() {
    let (dir, log) = filled_store("a").await;
    let sealed = &segment_files(dir.path())[1];
    let original = std::fs::read(sealed).unwrap();
    let middle = original.len() / 2;
    flip(sealed, middle);
    flip(sealed, middle + 700);

    let lock = repair::lock(dir.path()).unwrap();
    let range = repair::find_damage(&lock, &StoreConfig::default())
        .unwrap()
        .expect("damage found");
    drop(lock);
    assert_eq!(&range.segment, sealed);
    assert!(range.start as usize <= middle);
    let RangeEnd::Before { offset, .. } = range.end else {
        panic!("an intact record follows: {range:?}");
    };
    // The record after the first damaged one is intact: the range stops there, and the
    // second damage is a range of its own.
    assert!(
        (offset as usize) > middle && (offset as usize) <= middle + 700,
        "{range}"
    );
    assert_eq!(range.events(), Some(1), "{range}");

    let done = repair_once(dir.path(), &log).unwrap().unwrap();
    assert_eq!(done.first_position, range.first_position);
    let second = repair_once(dir.path(), &log).unwrap().unwrap();
    assert!(second.start > done.end);
    assert!(
        repair_once(dir.path(), &log).is_none(),
        "nothing left to repair"
    );
    // Only the range changed, and only in `synced_to` (0 now, which claims nothing).
    let repaired = std::fs::read(sealed).unwrap();
    assert_eq!(repaired.len(), original.len());
    assert_eq!(
        repaired[..done.start as usize],
        original[..done.start as usize]
    );
    assert_eq!(
        repaired[done.end as usize..second.start as usize],
        original[done.end as usize..second.start as usize]
    );
    assert_eq!(
        repaired[second.end as usize..],
        original[second.end as usize..]
    );
    assert_eq!(verified_log(dir.path()).await, log);
}

#[tokio::test]
async fn damage_to_the_end_of_a_sealed_segment_and_in_another_are_both_repaired() {
    let (dir, log) = filled_store("b").await;
    let segments = segment_files(dir.path());
    let len = std::fs::metadata(&segments[0]).unwrap().len() as usize;
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[len - 300..].fill(0);
    std::fs::write(&segments[0], bytes).unwrap();
    flip(&segments[2], 100);

    let first = repair_once(dir.path(), &log).unwrap().unwrap();
    assert_eq!(first.segment, segments[0]);
    assert_eq!(first.end as usize, len);
    let second = repair_once(dir.path(), &log).unwrap().unwrap();
    assert_eq!(second.segment, segments[2]);
    assert!(repair_once(dir.path(), &log).is_none());
    assert_eq!(verified_log(dir.path()).await, log);
}

#[tokio::test]
async fn a_copy_of_another_log_is_refused_and_nothing_is_touched() {
    let (dir, _) = filled_store("c").await;
    let (_other_dir, other_log) = filled_store("d").await;
    let sealed = &segment_files(dir.path())[1];
    flip(
        sealed,
        std::fs::metadata(sealed).unwrap().len() as usize / 2,
    );
    let damaged = std::fs::read(sealed).unwrap();

    let refusal = repair_once(dir.path(), &other_log).unwrap().unwrap_err();
    assert!(refusal.0.contains("chain hash"), "{refusal}");
    assert_eq!(std::fs::read(sealed).unwrap(), damaged);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".repair"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_sound_log_or_a_torn_tail_is_nothing_to_repair() {
    let (dir, log) = filled_store("e").await;
    assert!(repair_once(dir.path(), &log).is_none());
    // A torn write at the end of the last segment is open's business, not repair's.
    let last = segment_files(dir.path()).pop().unwrap();
    let data = std::fs::read(&last).unwrap();
    let end = data.iter().rposition(|byte| *byte != 0).unwrap() + 1;
    let mut torn = data.clone();
    torn[end - 40..end].fill(0);
    std::fs::write(&last, torn).unwrap();
    assert!(repair_once(dir.path(), &log).is_none());
}

#[tokio::test]
async fn repair_needs_the_directory_to_itself_and_events_in_their_places() {
    let (dir, log) = filled_store("f").await;
    let store = open(dir.path(), config());
    assert!(matches!(
        repair::lock(dir.path()),
        Err(Error::Locked { .. })
    ));
    store.close().await;
    drop(store);
    let missing = dir.path().join("missing");
    assert!(matches!(
        repair::lock(&missing),
        Err(Error::MissingDataDir(_))
    ));
    // An event of the copy out of its place is refused.
    let sealed = &segment_files(dir.path())[1];
    flip(sealed, 200);
    let lock = repair::lock(dir.path()).unwrap();
    let range = repair::find_damage(&lock, &StoreConfig::default())
        .unwrap()
        .unwrap();
    let mut replacement = Replacement::new(range.clone());
    let skipped = &log[range.first_position.0 as usize + 1];
    let refusal = replacement.push(skipped).unwrap_err();
    assert!(
        refusal
            .0
            .contains(&format!("needs position {}", range.first_position)),
        "{refusal}"
    );
    assert_eq!(replacement.next_position(), range.first_position);
    // Too few events: the range is not whole, and apply refuses.
    let refusal = repair::apply(&lock, replacement).unwrap().unwrap_err();
    assert!(refusal.0.contains("runs to position"), "{refusal}");
    assert_ne!(Position(0), range.first_position);
}
