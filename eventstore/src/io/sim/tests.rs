//! The simulated disk's fault model, property by property (see the module doc of `sim`).

use std::collections::BTreeSet;

use super::disk::sectors;
use super::*;
use crate::io::{LogFile, LogFs};

/// Seeds enough for "sometimes" and "always" to mean something.
const SEEDS: u64 = 200;

/// A disk with `name` holding `synced` (written, synced, its name synced).
fn disk_with(seed: u64, name: &str, synced: &[u8]) -> (SimDisk, Arc<dyn LogFile>) {
    let disk = SimDisk::new(seed);
    let file = disk.create(name).unwrap();
    file.write_all_at(synced, 0).unwrap();
    file.sync_data().unwrap();
    disk.sync_dir().unwrap();
    (disk, file)
}

fn sector(fill: u8) -> Vec<u8> {
    vec![fill; SECTOR as usize]
}

#[test]
fn reads_see_the_latest_writes_synced_or_not() {
    let (disk, file) = disk_with(1, "a.seg", &sector(1));
    file.write_all_at(&[2; 10], 510).unwrap();
    let other = disk.open("a.seg").unwrap();
    let mut buf = [0u8; 20];
    assert_eq!(other.read_at(&mut buf, 510).unwrap(), 10);
    assert_eq!(&buf[..10], &[2; 10]);
    assert_eq!(other.len().unwrap(), 520);
    assert_eq!(disk.read_all("a.seg").unwrap().len(), 520);
    assert_eq!(
        disk.durable_len("a.seg"),
        Some(512),
        "the longer length is unsynced"
    );
    assert_eq!(
        disk.volatile_sectors("a.seg"),
        2,
        "the write touched two sectors"
    );
}

#[test]
fn a_synced_sector_always_survives_a_power_loss() {
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &[sector(1), sector(2)].concat());
        file.write_all_at(&sector(3), 2 * SECTOR).unwrap();
        file.write_all_at(&[9; 3], 10).unwrap(); // Over synced data, never synced.
        file.sync_data().unwrap();
        file.write_all_at(&sector(4), 3 * SECTOR).unwrap(); // Never synced.
        disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        let mut expected = [sector(1), sector(2), sector(3)].concat();
        expected[10..13].copy_from_slice(&[9; 3]);
        assert_eq!(&after[..3 * SECTOR as usize], &expected[..], "seed {seed}");
    }
}

#[test]
fn an_unsynced_sector_sometimes_survives_and_sometimes_not() {
    let (mut kept, mut lost, mut other) = (0, 0, 0);
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &sector(1));
        file.write_all_at(&sector(2), 0).unwrap();
        disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        if after == sector(2) {
            kept += 1;
        } else if after == sector(1) {
            lost += 1;
        } else {
            other += 1; // Torn.
        }
    }
    assert!(
        kept > 10 && lost > 10,
        "kept {kept}, lost {lost}, torn {other}"
    );
}

#[test]
fn a_torn_sector_is_a_prefix_of_the_new_bytes_then_the_old_ones() {
    let mut torn_seen = 0;
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &sector(1));
        file.write_all_at(&sector(2), 0).unwrap();
        let report = disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        assert!(
            report.torn.len() <= 1,
            "seed {seed}: one file, one torn sector at most"
        );
        if let Some((name, index, new_bytes)) = report.torn.into_iter().next() {
            torn_seen += 1;
            assert_eq!((name.as_deref(), index), (Some("a.seg"), 0), "seed {seed}");
            assert!((1..SECTOR as usize).contains(&new_bytes), "seed {seed}");
            assert!(
                after[..new_bytes].iter().all(|byte| *byte == 2),
                "seed {seed}"
            );
            assert!(
                after[new_bytes..].iter().all(|byte| *byte == 1),
                "seed {seed}"
            );
        } else {
            assert!(after == sector(1) || after == sector(2), "seed {seed}");
        }
    }
    assert!(
        torn_seen > 10,
        "only {torn_seen} torn sectors in {SEEDS} seeds"
    );
}

#[test]
fn a_torn_sector_past_the_durable_end_keeps_zeros_as_its_old_bytes() {
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &[]);
        file.write_all_at(&sector(7), 0).unwrap();
        let report = disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        // The file's new length may be lost as well, and the torn sector with it.
        if let (Some((_, _, new_bytes)), false) = (report.torn.first(), after.is_empty()) {
            let new_bytes = *new_bytes;
            assert!(
                after[..new_bytes].iter().all(|byte| *byte == 7),
                "seed {seed}"
            );
            assert!(
                after[new_bytes..].iter().all(|byte| *byte == 0),
                "seed {seed}"
            );
        }
    }
}

/// A workload with every kind of volatile change, then a power loss: the durable state.
fn scripted_run(seed: u64) -> (PowerLoss, BTreeMap<String, Vec<u8>>) {
    let disk = SimDisk::new(seed);
    let a = disk.create("a.seg").unwrap();
    a.write_all_at(&[1; 3000], 0).unwrap();
    a.sync_data().unwrap();
    disk.sync_dir().unwrap();
    for round in 0..20u8 {
        a.write_all_at(&[round; 700], 3000 + u64::from(round) * 700)
            .unwrap();
    }
    a.set_len(1000).unwrap();
    let spare = disk.create("spare.tmp").unwrap();
    spare.write_all_at(&[5; 4096], 0).unwrap();
    spare.sync_all().unwrap();
    disk.rename("spare.tmp", "b.seg").unwrap();
    let report = disk.power_loss();
    (report, disk.snapshot())
}

#[test]
fn the_same_seed_gives_the_same_disk() {
    for seed in 0..20 {
        assert_eq!(scripted_run(seed), scripted_run(seed), "seed {seed}");
    }
    let outcomes: BTreeSet<Vec<u8>> = (0..20)
        .map(|seed| scripted_run(seed).1["a.seg"].clone())
        .collect();
    assert!(
        outcomes.len() > 5,
        "seeds should differ: {} outcomes",
        outcomes.len()
    );
}

#[test]
fn one_files_fate_does_not_depend_on_what_other_files_wrote() {
    let survivor = |seed, busy_neighbour: bool| {
        let disk = SimDisk::new(seed);
        let neighbour = disk.create("spare.tmp").unwrap();
        let (_, file) = (disk.sync_dir(), disk.create("a.seg").unwrap());
        for round in 0..8u8 {
            file.write_all_at(&sector(round + 1), u64::from(round) * SECTOR)
                .unwrap();
            if busy_neighbour {
                neighbour
                    .write_all_at(&sector(round), u64::from(round) * 3 * SECTOR)
                    .unwrap();
            }
        }
        file.sync_data().unwrap();
        file.write_all_at(&vec![9; 5 * SECTOR as usize], 100)
            .unwrap();
        disk.sync_dir().unwrap();
        disk.power_loss();
        disk.restart().read_all("a.seg").unwrap()
    };
    for seed in 0..SEEDS {
        let (alone, beside_busy) = (survivor(seed, false), survivor(seed, true));
        assert!(
            alone == beside_busy,
            "seed {seed}: {alone:?}\n{beside_busy:?}"
        );
    }
}

#[test]
fn a_failed_sync_does_not_make_data_durable() {
    let mut lost = 0;
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &sector(1));
        file.write_all_at(&sector(2), 0).unwrap();
        disk.fail_next(SimOp::Sync, SimErrno::Eio);
        let error = file.sync_data().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(EIO));
        assert_eq!(
            disk.read_all("a.seg").unwrap(),
            sector(2),
            "reads still see it"
        );
        // Like Linux, the next sync succeeds without writing the failed sector.
        file.sync_data().unwrap();
        assert_eq!(disk.snapshot()["a.seg"], sector(1), "seed {seed}");
        assert_eq!(disk.volatile_sectors("a.seg"), 1);
        disk.power_loss();
        if disk.restart().read_all("a.seg").unwrap() == sector(1) {
            lost += 1;
        }
    }
    assert!(
        lost > 10,
        "a failed sync's data was lost in only {lost} seeds"
    );
}

#[test]
fn a_sector_written_again_after_a_failed_sync_is_synced_whole() {
    let (disk, file) = disk_with(1, "a.seg", &sector(1));
    file.write_all_at(&sector(2), 0).unwrap();
    disk.fail_next(SimOp::Sync, SimErrno::Enospc);
    assert_eq!(file.sync_all().unwrap_err().raw_os_error(), Some(ENOSPC));
    file.write_all_at(&[3], 0).unwrap();
    file.sync_data().unwrap();
    let mut expected = sector(2);
    expected[0] = 3;
    assert_eq!(disk.snapshot()["a.seg"], expected);
    assert_eq!(disk.volatile_sectors("a.seg"), 0);
}

#[test]
fn a_failed_write_changes_nothing_and_faults_can_name_one_file() {
    let (disk, a) = disk_with(1, "a.seg", &sector(1));
    let b = disk.create("b.seg").unwrap();
    disk.fail_next_of("b.seg", SimOp::Write, SimErrno::Enospc);
    a.write_all_at(&[2], 0).unwrap();
    let error = b.write_all_at(&[2; 100], 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(ENOSPC));
    assert_eq!(b.len().unwrap(), 0, "the failed write wrote nothing");
    b.write_all_at(&[2; 100], 0).unwrap();
    assert_eq!(b.len().unwrap(), 100, "a fault is used once");
    disk.fail_next(SimOp::SetLen, SimErrno::Eio);
    assert!(b.set_len(0).is_err());
    assert_eq!(b.len().unwrap(), 100);
    disk.fail_next(SimOp::SyncDir, SimErrno::Eio);
    assert!(disk.sync_dir().is_err());
    assert_eq!(
        disk.durable_len("b.seg"),
        None,
        "a failed directory sync made nothing durable"
    );
    disk.sync_dir().unwrap();
    assert_eq!(disk.durable_len("b.seg"), Some(0));
    disk.fail_next(SimOp::Sync, SimErrno::Eio);
    disk.clear_faults();
    b.sync_data().unwrap();
    assert_eq!(disk.durable_len("b.seg"), Some(100));
}

#[test]
fn a_renamed_file_whose_directory_was_not_synced_may_come_back_under_its_old_name() {
    let (mut old_name, mut new_name) = (0, 0);
    for seed in 0..SEEDS {
        let (disk, _file) = disk_with(seed, "spare.tmp", &sector(1));
        disk.rename("spare.tmp", "b.seg").unwrap();
        assert_eq!(disk.files(), ["b.seg"]);
        disk.power_loss();
        let names = disk.restart().list().unwrap();
        match names.as_slice() {
            [name] if name == "spare.tmp" => old_name += 1,
            [name] if name == "b.seg" => new_name += 1,
            other => panic!("seed {seed}: {other:?}"),
        }
        assert_eq!(disk.contents(&names[0]).unwrap(), sector(1), "seed {seed}");
    }
    assert!(
        old_name > 10 && new_name > 10,
        "old {old_name}, new {new_name}"
    );
    // Once the directory is synced, the new name is certain.
    for seed in 0..SEEDS {
        let (disk, _file) = disk_with(seed, "spare.tmp", &sector(1));
        disk.rename("spare.tmp", "b.seg").unwrap();
        disk.sync_dir().unwrap();
        disk.power_loss();
        assert_eq!(disk.restart().list().unwrap(), ["b.seg"], "seed {seed}");
    }
}

#[test]
fn a_created_or_removed_name_is_volatile_until_the_directory_is_synced() {
    let (mut created, mut vanished) = (0, 0);
    for seed in 0..SEEDS {
        let (disk, _file) = disk_with(seed, "a.seg", &sector(1));
        let b = disk.create("b.seg").unwrap();
        b.write_all_at(&sector(2), 0).unwrap();
        b.sync_all().unwrap(); // The data is synced, its name is not.
        disk.remove("a.seg").unwrap();
        disk.power_loss();
        let names = disk.restart().list().unwrap();
        if names.contains(&"b.seg".to_owned()) {
            created += 1;
            assert_eq!(disk.contents("b.seg").unwrap(), sector(2), "seed {seed}");
        } else {
            vanished += 1;
        }
        if names.contains(&"a.seg".to_owned()) {
            assert_eq!(disk.contents("a.seg").unwrap(), sector(1), "seed {seed}");
        }
    }
    assert!(
        created > 10 && vanished > 10,
        "created {created}, vanished {vanished}"
    );
}

#[test]
fn set_len_is_volatile_until_the_file_is_synced() {
    let (mut cut, mut uncut) = (0, 0);
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &[sector(1), sector(2)].concat());
        file.set_len(100).unwrap();
        file.set_len(2 * SECTOR).unwrap(); // Cut, then extended with zeros.
        assert_eq!(&disk.read_all("a.seg").unwrap()[100..], &[0; 924][..]);
        disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        assert_eq!(after.len(), 2 * SECTOR as usize, "seed {seed}");
        assert_eq!(&after[..100], &[1; 100][..], "seed {seed}");
        if after[SECTOR as usize..] == sector(2)[..] {
            uncut += 1;
        } else if after[SECTOR as usize..] == sector(0)[..] {
            cut += 1;
        }
    }
    assert!(cut > 10 && uncut > 10, "cut {cut}, uncut {uncut}");
    for seed in 0..SEEDS {
        let (disk, file) = disk_with(seed, "a.seg", &[sector(1), sector(2)].concat());
        file.set_len(100).unwrap();
        file.sync_data().unwrap();
        disk.power_loss();
        assert_eq!(
            disk.restart().read_all("a.seg").unwrap(),
            vec![1; 100],
            "seed {seed}"
        );
    }
}

#[test]
fn handles_from_before_a_power_loss_or_crash_fail_every_call() {
    let (disk, file) = disk_with(1, "a.seg", &sector(1));
    file.write_all_at(&sector(2), 0).unwrap();
    disk.process_crash();
    let mut buf = [0u8; 1];
    assert!(file.read_at(&mut buf, 0).is_err());
    assert!(file.write_all_at(&buf, 0).is_err());
    assert!(file.sync_data().is_err());
    assert!(file.set_len(0).is_err());
    assert!(file.len().is_err());
    assert!(disk.list().is_err());
    assert!(disk.create("b.seg").is_err());
    assert!(disk.sync_dir().is_err());
    // A crash of the process loses nothing; the write is still volatile.
    let next = disk.restart();
    assert_eq!(next.read_all("a.seg").unwrap(), sector(2));
    assert_eq!(disk.volatile_sectors("a.seg"), 1);
    let reopened = next.open("a.seg").unwrap();
    next.power_loss();
    assert!(reopened.len().is_err());
    assert!(next.open("a.seg").is_err());
    assert!(next.restart().open("a.seg").is_ok());
}

#[test]
fn damage_to_synced_data_is_where_it_was_asked_for() {
    let (disk, file) = disk_with(1, "a.seg", &[sector(1), sector(2)].concat());
    disk.flip_bit_in_synced("a.seg", 3, 2).unwrap();
    assert_eq!(disk.snapshot()["a.seg"][3], 1 ^ 4);
    assert_eq!(
        disk.read_all("a.seg").unwrap()[3],
        1 ^ 4,
        "reads see it at once"
    );
    file.write_all_at(&[9; 10], SECTOR).unwrap(); // Sector 1 is now volatile.
    disk.zero_synced_sector("a.seg", 1).unwrap();
    assert_eq!(disk.snapshot()["a.seg"][SECTOR as usize..], sector(0)[..]);
    assert_eq!(
        disk.read_all("a.seg").unwrap()[SECTOR as usize],
        9,
        "newer bytes win"
    );
    assert!(
        disk.flip_bit_in_synced("a.seg", 2 * SECTOR, 0).is_err(),
        "past the synced end"
    );
    assert!(disk.zero_synced_sector("missing.seg", 0).is_err());
}

#[test]
fn random_damage_is_seeded_and_only_in_eligible_synced_data() {
    let run = |seed| {
        let (disk, _file) = disk_with(seed, "a.seg", &vec![0xAA; 3000]);
        let other = disk.create("LOCK").unwrap();
        other.write_all_at(&[1; 100], 0).unwrap();
        other.sync_data().unwrap();
        disk.sync_dir().unwrap();
        let only_segments = |name: &str| name.ends_with(".seg");
        let flip = disk.flip_random_synced_bit(only_segments).unwrap();
        let zero = disk.zero_random_synced_sector(only_segments).unwrap();
        (flip, zero, disk.snapshot())
    };
    for seed in 0..20 {
        let (flip, zero, snapshot) = run(seed);
        assert_eq!(run(seed), (flip.clone(), zero.clone(), snapshot.clone()));
        assert_eq!((flip.name.as_str(), zero.name.as_str()), ("a.seg", "a.seg"));
        assert!(flip.offset < 3000 && zero.offset < 3000 && zero.offset % SECTOR == 0);
        assert_eq!(snapshot["LOCK"], vec![1; 100]);
    }
    let disk = SimDisk::new(1);
    disk.create("a.seg").unwrap(); // Nothing synced.
    assert_eq!(disk.flip_random_synced_bit(|_| true), None);
}

/// The test's own account of one simulated file: the bytes as of the last successful
/// sync, the sectors written or cut since, and the sectors whose sync failed (which no
/// later sync writes, as on Linux).
#[derive(Default)]
struct Model {
    synced: Vec<u8>,
    dirty: BTreeSet<u64>,
    failed: BTreeSet<u64>,
}

impl Model {
    fn touch(&mut self, sectors: std::ops::Range<u64>) {
        for sector in sectors {
            self.dirty.insert(sector);
            self.failed.remove(&sector);
        }
    }

    fn sync_failed(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        self.failed.extend(dirty);
    }

    fn synced(&mut self, current: Vec<u8>) {
        let mut synced = current;
        for sector in &self.failed {
            let start = (sector * SECTOR) as usize;
            for at in start..(start + SECTOR as usize).min(synced.len()) {
                synced[at] = self.synced.get(at).copied().unwrap_or(0);
            }
        }
        self.synced = synced;
        self.dirty.clear();
    }

    fn volatile(&self, sector: u64) -> bool {
        self.dirty.contains(&sector) || self.failed.contains(&sector)
    }
}

#[test]
fn random_workloads_never_lose_what_was_synced_and_left_alone() {
    for seed in 0..SEEDS {
        let mut rng = SimRng::new(seed ^ 0x5eed);
        let disk = SimDisk::new(seed);
        let file = disk.create("a.seg").unwrap();
        disk.sync_dir().unwrap();
        let mut model = Model::default();
        for step in 0..40u64 {
            let current_len = file.len().unwrap();
            match rng.below(6) {
                0..=2 => {
                    let offset = rng.below(current_len + 2000);
                    let len = 1 + rng.below(1500);
                    let fill = (step % 250 + 1) as u8;
                    file.write_all_at(&vec![fill; len as usize], offset)
                        .unwrap();
                    model.touch(sectors(offset, offset + len));
                }
                3 => {
                    let len = rng.below(current_len + 1000);
                    file.set_len(len).unwrap();
                    model.touch(sectors(len, current_len));
                }
                4 if rng.chance(0.3) => {
                    disk.fail_next(SimOp::Sync, SimErrno::Eio);
                    assert!(file.sync_data().is_err());
                    model.sync_failed();
                }
                _ => {
                    file.sync_all().unwrap();
                    model.synced(disk.contents("a.seg").unwrap());
                }
            }
            assert_eq!(
                disk.snapshot()["a.seg"],
                model.synced,
                "seed {seed}, step {step}"
            );
        }
        let before = disk.contents("a.seg").unwrap();
        let report = disk.power_loss();
        let after = disk.restart().read_all("a.seg").unwrap();
        let synced = &model.synced;
        assert!(
            after.len() == synced.len() || after.len() == before.len(),
            "seed {seed}: length {} is neither {} nor {} ({report:?})",
            after.len(),
            synced.len(),
            before.len()
        );
        for (at, byte) in after.iter().enumerate() {
            let old = synced.get(at).copied().unwrap_or(0);
            let new = before.get(at).copied().unwrap_or(0);
            if model.volatile(at as u64 / SECTOR) {
                assert!(
                    *byte == old || *byte == new,
                    "seed {seed}: byte {at} from nowhere"
                );
            } else {
                assert_eq!(
                    *byte, old,
                    "seed {seed}: synced byte {at} changed ({report:?})"
                );
            }
        }
    }
}
