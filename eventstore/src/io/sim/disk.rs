//! The simulated disk's state behind every handle: files with durable and current bytes,
//! the directory's current and durable names, the failures asked for, and what a power
//! loss keeps (the fault model is in the module doc of `sim`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Mutex, MutexGuard};

use super::{PowerLoss, SECTOR, SimErrno, SimOp, SimRng};

/// The state behind every handle of one disk.
pub(super) struct Disk {
    pub(super) rng: SimRng,
    /// The live process; handles of earlier ones fail.
    pub(super) process: u64,
    /// Files by inode number; numbers are given out in order, so iteration is
    /// deterministic.
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) next_inode: u64,
    /// The names reads see.
    pub(super) names: BTreeMap<String, u64>,
    /// The names as of the last successful `sync_dir`.
    pub(super) durable_names: BTreeMap<String, u64>,
    /// Directory operations since then, in order.
    pub(super) dir_ops: Vec<DirOp>,
    /// How many files each name has been given at creation, for `Inode::origin`.
    pub(super) created: BTreeMap<String, u64>,
    /// Failures asked for, each used by the first call it matches.
    pub(super) faults: Vec<Fault>,
}

/// One file, named or not.
#[derive(Default)]
pub(super) struct Inode {
    /// Who the file is, whatever threads did in between: a hash of the name it was
    /// created with and how many files that name was given before. A power loss decides
    /// the fate of a sector from this, the sector index and the power loss's salt.
    pub(super) origin: u64,
    /// What the platter holds: what a power loss certainly leaves.
    pub(super) durable: Vec<u8>,
    /// What reads see.
    pub(super) current: Vec<u8>,
    /// Sectors written (or cut) since the last successful sync.
    pub(super) dirty: BTreeSet<u64>,
    /// Sectors whose sync failed: still volatile, but no sync writes them again.
    pub(super) failed: BTreeSet<u64>,
}

/// A directory operation not yet made durable by `sync_dir`; each names the file it
/// moved, so that a replay after a power loss can skip one that no longer applies.
pub(super) enum DirOp {
    Create {
        name: String,
        inode: u64,
    },
    Rename {
        from: String,
        to: String,
        inode: u64,
    },
    Remove {
        name: String,
        inode: u64,
    },
}

/// A failure asked for: the next `op` (on `file`, if named) fails with `errno`.
pub(super) struct Fault {
    pub(super) op: SimOp,
    pub(super) errno: SimErrno,
    pub(super) file: Option<String>,
}

/// The error of every call through a handle of a dead process.
pub(super) fn dead_process() -> io::Error {
    io::Error::other(
        "simulated disk: this handle belongs to a process that died at a power loss or crash \
         (use SimDisk::restart for the new process)",
    )
}

/// The error for a name the directory does not hold.
pub(super) fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simulated disk: no file named {name:?}"),
    )
}

/// FNV-1a, 64 bits: a stable hash of a name.
pub(super) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A random draw decided by `salt` and `key` alone, whatever else was drawn before.
fn keyed(salt: u64, key: [u64; 3]) -> SimRng {
    let state = key
        .iter()
        .fold(salt, |state, part| SimRng::new(state ^ part).next_u64());
    SimRng::new(state)
}

/// What a keyed draw decides.
const LENGTH: u64 = 1;
const KEEP: u64 = 2;
const TEAR: u64 = 3;
const TEAR_RANK: u64 = 4;
const TEAR_BYTES: u64 = 5;
const DIR_OP: u64 = 6;

/// The sectors that bytes `from..to` touch.
pub(super) fn sectors(from: u64, to: u64) -> std::ops::Range<u64> {
    if to <= from {
        0..0
    } else {
        from / SECTOR..to.div_ceil(SECTOR)
    }
}

/// Locks the disk; a test that panicked while holding it leaves it usable.
pub(super) fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    /// Checks that `process` is alive.
    pub(super) fn alive(&self, process: u64) -> io::Result<()> {
        if process == self.process {
            Ok(())
        } else {
            Err(dead_process())
        }
    }

    /// Takes the first failure asked for that matches this call.
    pub(super) fn take_fault(&mut self, op: SimOp, inode: Option<u64>) -> io::Result<()> {
        let names = &self.names;
        let matches = |fault: &Fault| {
            fault.op == op
                && match (&fault.file, inode) {
                    (None, _) | (Some(_), None) => true,
                    (Some(file), Some(inode)) => names.get(file) == Some(&inode),
                }
        };
        match self.faults.iter().position(matches) {
            Some(index) => Err(self.faults.remove(index).errno.to_io_error()),
            None => Ok(()),
        }
    }

    /// The file `inode` for a call of `process`, if that process is alive.
    pub(super) fn inode(&mut self, process: u64, inode: u64) -> io::Result<&mut Inode> {
        self.alive(process)?;
        self.inodes.get_mut(&inode).ok_or_else(dead_process)
    }

    /// The file the current directory names `name`.
    pub(super) fn lookup(&self, name: &str) -> io::Result<u64> {
        self.names.get(name).copied().ok_or_else(|| not_found(name))
    }

    /// Changes synced bytes `range` of `name` with `change`: the durable bytes, and the
    /// current ones wherever the sector is not volatile.
    pub(super) fn damage(
        &mut self,
        name: &str,
        range: std::ops::Range<u64>,
        change: impl Fn(&mut u8),
    ) -> io::Result<()> {
        let number = self.lookup(name)?;
        let inode = self
            .inodes
            .get_mut(&number)
            .ok_or_else(|| not_found(name))?;
        if range.end > inode.durable.len() as u64 || range.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "simulated disk: bytes {range:?} of {name:?} are not synced data (durable length {})",
                    inode.durable.len()
                ),
            ));
        }
        for at in range {
            change(&mut inode.durable[at as usize]);
            let sector = at / SECTOR;
            let volatile = inode.dirty.contains(&sector) || inode.failed.contains(&sector);
            if !volatile && let Some(byte) = inode.current.get_mut(at as usize) {
                change(byte);
            }
        }
        Ok(())
    }

    /// A file (by current name) with synced data that `eligible` accepts, drawn at random.
    pub(super) fn random_synced_file(
        &mut self,
        eligible: &dyn Fn(&str) -> bool,
    ) -> Option<(String, u64)> {
        let candidates: Vec<(String, u64)> = self
            .names
            .iter()
            .filter(|(name, _)| eligible(name))
            .filter_map(|(name, number)| {
                let len = self.inodes.get(number)?.durable.len() as u64;
                (len > 0).then(|| (name.clone(), len))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let pick = self.rng.below(candidates.len() as u64) as usize;
        candidates.into_iter().nth(pick)
    }

    /// Kills the live process: every handle from before fails from now on. Files without
    /// a name in either the current or the durable directory, and not named by a pending
    /// operation, are gone with the process that held them open.
    pub(super) fn end_process(&mut self) {
        self.process += 1;
        let mut named: BTreeSet<u64> = self.names.values().copied().collect();
        named.extend(self.durable_names.values().copied());
        for op in &self.dir_ops {
            named.insert(match op {
                DirOp::Create { inode, .. }
                | DirOp::Rename { inode, .. }
                | DirOp::Remove { inode, .. } => *inode,
            });
        }
        self.inodes.retain(|number, _| named.contains(number));
    }

    /// Cuts the power, as the module doc of `sim` says, and ends the process. Each
    /// decision is a keyed draw (the power loss's salt with the file's origin and the
    /// sector, or with the directory operation), so one file's fate does not depend on
    /// how many volatile sectors other files had or in which order threads wrote them.
    pub(super) fn power_loss(&mut self) -> PowerLoss {
        let keep_probability = match self.rng.below(8) {
            0 => 0.0,
            1 => 1.0,
            _ => self.rng.unit(),
        };
        let salt = self.rng.next_u64();
        let mut report = PowerLoss {
            keep_probability,
            kept_sectors: 0,
            dropped_sectors: 0,
            torn: Vec::new(),
            kept_dir_ops: 0,
            dropped_dir_ops: 0,
        };
        // Files: what survives of each one's volatile length and sectors, and in each
        // file whose draw says so, its kept sector of lowest rank torn.
        let mut torn = Vec::new();
        for (&number, inode) in &mut self.inodes {
            let volatile: BTreeSet<u64> = inode.dirty.union(&inode.failed).copied().collect();
            if volatile.is_empty() && inode.current.len() == inode.durable.len() {
                continue;
            }
            let keep_length = keyed(salt, [inode.origin, LENGTH, 0]).chance(keep_probability);
            let length = if keep_length {
                inode.current.len()
            } else {
                inode.durable.len()
            };
            let mut survived = inode.durable.clone();
            survived.resize(length, 0);
            let mut lowest: Option<(u64, u64)> = None;
            for sector in volatile {
                if !keyed(salt, [inode.origin, KEEP, sector]).chance(keep_probability) {
                    report.dropped_sectors += 1;
                    continue;
                }
                report.kept_sectors += 1;
                let start = (sector * SECTOR) as usize;
                let end = (start + SECTOR as usize).min(length);
                if start < end {
                    // Only a sector the surviving length still holds can show a tear.
                    let rank = keyed(salt, [inode.origin, TEAR_RANK, sector]).next_u64();
                    if lowest.is_none_or(|(_, lowest_rank)| rank < lowest_rank) {
                        lowest = Some((sector, rank));
                    }
                    let written = inode.current.len().clamp(start, end);
                    if written > start {
                        survived[start..written].copy_from_slice(&inode.current[start..written]);
                    }
                    survived[written..end].fill(0);
                }
            }
            let tear = keyed(salt, [inode.origin, TEAR, 0]).chance(0.5);
            if let (Some((sector, _)), true) = (lowest, tear) {
                let new_bytes =
                    1 + keyed(salt, [inode.origin, TEAR_BYTES, sector]).below(SECTOR - 1) as usize;
                let start = (sector * SECTOR) as usize;
                let end = (start + SECTOR as usize).min(survived.len());
                let from = (start + new_bytes).min(end);
                let old_end = inode.durable.len().clamp(from, end);
                if old_end > from {
                    survived[from..old_end].copy_from_slice(&inode.durable[from..old_end]);
                }
                survived[old_end..end].fill(0);
                torn.push((number, sector, new_bytes));
            }
            inode.current = survived;
        }
        for inode in self.inodes.values_mut() {
            inode.durable.clone_from(&inode.current);
            inode.dirty.clear();
            inode.failed.clear();
        }
        // The directory: unsynced operations replayed onto the durable names, each kept
        // or dropped by a draw keyed on what it did and how often the same was done before.
        let mut names = self.durable_names.clone();
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for op in std::mem::take(&mut self.dir_ops) {
            let description = match &op {
                DirOp::Create { name, .. } => format!("create {name}"),
                DirOp::Rename { from, to, .. } => format!("rename {from} {to}"),
                DirOp::Remove { name, .. } => format!("remove {name}"),
            };
            let occurrence = seen.entry(description.clone()).or_default();
            *occurrence += 1;
            let key = [name_hash(&description), DIR_OP, *occurrence];
            if !keyed(salt, key).chance(keep_probability) {
                report.dropped_dir_ops += 1;
                continue;
            }
            let applied = match op {
                DirOp::Create { name, inode } => {
                    !names.contains_key(&name) && names.insert(name, inode).is_none()
                }
                DirOp::Rename { from, to, inode } => {
                    if names.get(&from) == Some(&inode) {
                        names.remove(&from);
                        names.insert(to, inode);
                        true
                    } else {
                        false
                    }
                }
                DirOp::Remove { name, inode } => {
                    names.get(&name) == Some(&inode) && names.remove(&name).is_some()
                }
            };
            if applied {
                report.kept_dir_ops += 1;
            } else {
                report.dropped_dir_ops += 1;
            }
        }
        report.torn = torn
            .into_iter()
            .map(|(number, sector, new_bytes)| {
                let name = names
                    .iter()
                    .find(|(_, inode)| **inode == number)
                    .map(|(name, _)| name.clone());
                (name, sector, new_bytes)
            })
            .collect();
        self.names.clone_from(&names);
        self.durable_names = names;
        self.end_process();
        report
    }

    /// The durable length of the file the current directory names `name`.
    pub(super) fn durable_len_by_current_name(&self, name: &str) -> Option<u64> {
        let inode = self.names.get(name)?;
        Some(self.inodes.get(inode)?.durable.len() as u64)
    }
}
