//! A simulated disk for tests: the log directory in memory, deterministic from a seed,
//! that loses what was never synced at a simulated power loss and damages synced data or
//! fails calls on request. Built with `cfg(test)` or the crate's `sim` feature.
//!
//! # The fault model
//!
//! Exactly this, and nothing else, happens to data on a [`SimDisk`]:
//!
//! 1. **Files.** Each file has *durable* bytes (what the platter holds) and *current*
//!    bytes (what reads see). A file is cut into 512-byte sectors ([`SECTOR`]). A write
//!    changes the current bytes at once and marks every sector it touches *volatile*; a
//!    `set_len` changes the current length at once and marks every sector it cuts away
//!    volatile (their new content is "no data", read as zeros). The file's length is
//!    volatile whenever the current length differs from the durable one.
//! 2. **Syncs.** A successful `sync_data` or `sync_all` of a file makes its volatile
//!    sectors and its length durable (both calls do the same here, as `fdatasync` persists
//!    a size that reads depend on). Nothing else ever becomes durable by itself.
//! 3. **Directory.** `create` of a new name, `rename` and `remove` change the names reads
//!    see at once and are *volatile* until a successful `sync_dir`. Creating an existing
//!    name opens it and changes nothing.
//! 4. **Power loss** ([`SimDisk::power_loss`]). A keep-probability `p` is drawn (0 with
//!    probability 1/8, 1 with probability 1/8, otherwise uniform in [0, 1)). Then each
//!    file's length change is kept (new length) or dropped (durable length) with
//!    probability `p`; each volatile sector of each file is independently kept (its
//!    current bytes; zeros past the current length) or dropped (its durable bytes; zeros
//!    past the durable length) with probability `p`, so the kept sectors form any subset,
//!    as if written in any order; then, in each file with a kept sector, with probability
//!    1/2 one kept sector is **torn** (so at most one torn sector per file): its first `k`
//!    bytes are the new ones and the rest the old ones, `k` uniform in 1..=511. Each unsynced directory operation is replayed
//!    in order onto the durable names and kept with probability `p` (one whose file is no
//!    longer under the name it used is skipped), so a renamed file may come back under
//!    its old name and a created one may vanish. Afterwards every file's durable and
//!    current bytes are the surviving ones, and a file left without a name is gone.
//!    Each of these choices is a draw keyed by the power loss's salt and by what it
//!    decides (the file's first name and how many files had that name before, the sector
//!    index; or the directory operation and how many identical ones came before it), so
//!    the fate of one file does not depend on what other files, or other threads, did.
//! 5. **The process dies** at a power loss or a [`SimDisk::process_crash`]: every file
//!    handle and every `SimDisk` handle from before fails every call with an error, so a
//!    thread of the dead store cannot touch the disk of the next one. [`SimDisk::restart`]
//!    gives the handle of the new process. A process crash loses nothing by itself: the
//!    volatile state stays volatile (the kernel still has it) until a sync or a power loss.
//! 6. **Damage to synced data**, only on request: [`SimDisk::flip_bit_in_synced`] and
//!    [`SimDisk::zero_synced_sector`] (and their random variants) change durable bytes,
//!    and the current bytes wherever the sector is not volatile, so reads see the damage at
//!    once.
//! 7. **Failed calls**, only on request ([`SimDisk::fail_next`]): the next write, `set_len`,
//!    file sync or directory sync (optionally of one file) returns `EIO` or `ENOSPC`
//!    (`io::Error::from_raw_os_error`). A failed write or `set_len` changes nothing. A
//!    failed directory sync makes nothing durable (the operations stay volatile). A
//!    **failed file sync** makes nothing durable and, like Linux's page cache, marks the
//!    file's volatile sectors clean: reads still see the new bytes, but a later successful
//!    sync does not write those sectors (only a new write to a sector makes it dirty
//!    again), so they stay volatile and a power loss may still drop them. The length is
//!    made durable by the next successful sync.
//!
//! The random choices use only the seed, the order of the calls that draw (power losses
//! and random damage) and the keys above, never time or thread identity: the same calls
//! in the same order give the same disk.
//!
//! ```
//! use eventstore::io::LogFs;
//! use eventstore::io::sim::SimDisk;
//!
//! let disk = SimDisk::new(42);
//! let file = disk.create("00000000000000000000.seg")?;
//! file.write_all_at(b"acknowledged", 0)?;
//! file.sync_data()?;
//! disk.sync_dir()?;
//! file.write_all_at(b" and more", 12)?; // Never synced.
//! let report = disk.power_loss();
//! assert!(file.len().is_err(), "the process died");
//! let after = disk.restart().read_all("00000000000000000000.seg")?;
//! assert!(after.starts_with(b"acknowledged"), "{report:?}");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

mod disk;
mod file;
mod rng;
#[cfg(test)]
mod tests;

use disk::{Disk, Fault, lock, not_found};
pub use file::SimFile;
pub use rng::SimRng;

/// The unit a power loss keeps, drops or tears: 512 bytes.
pub const SECTOR: u64 = 512;

/// `EIO` on Linux.
const EIO: i32 = 5;
/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

/// The calls [`SimDisk::fail_next`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOp {
    /// `LogFile::write_all_at`.
    Write,
    /// `LogFile::set_len`.
    SetLen,
    /// `LogFile::sync_data` and `LogFile::sync_all`.
    Sync,
    /// `LogFs::sync_dir` (a file name given with it is ignored).
    SyncDir,
}

/// The error a failed call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimErrno {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
}

impl SimErrno {
    /// The `io::Error` a real file system call would return.
    pub fn to_io_error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            SimErrno::Eio => EIO,
            SimErrno::Enospc => ENOSPC,
        })
    }
}

/// Where a random fault struck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file's name.
    pub name: String,
    /// The byte changed (a flipped bit) or the first byte of the zeroed sector.
    pub offset: u64,
    /// The bit flipped within that byte; `None` for a zeroed sector.
    pub bit: Option<u8>,
}

/// What one power loss did, for a failing test to print.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerLoss {
    /// The probability with which each volatile change was kept.
    pub keep_probability: f64,
    /// Volatile sectors kept (the torn one included).
    pub kept_sectors: usize,
    /// Volatile sectors dropped.
    pub dropped_sectors: usize,
    /// The torn sectors, at most one per file: file name (`None` if the file lost its
    /// name), sector index, and how many of its first bytes are new.
    pub torn: Vec<(Option<String>, u64, usize)>,
    /// Unsynced directory operations kept.
    pub kept_dir_ops: usize,
    /// Unsynced directory operations dropped (or skipped as no longer applicable).
    pub dropped_dir_ops: usize,
}

/// A simulated disk holding one log directory. Cheap to clone: clones share the disk and
/// belong to the same process (see the module doc's fault model).
#[derive(Clone)]
pub struct SimDisk {
    disk: Arc<Mutex<Disk>>,
    /// The process this handle belongs to; it works only while that one is alive.
    process: u64,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl SimDisk {
    /// An empty disk whose random choices all follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            disk: Arc::new(Mutex::new(Disk {
                rng: SimRng::new(seed),
                process: 0,
                inodes: BTreeMap::new(),
                next_inode: 0,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dir_ops: Vec::new(),
                created: BTreeMap::new(),
                faults: Vec::new(),
            })),
            process: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    /// The handle of the process running now (the one started after the last power loss
    /// or crash), to open the store again with.
    pub fn restart(&self) -> SimDisk {
        let process = self.lock().process;
        Self {
            disk: self.disk.clone(),
            process,
        }
    }

    /// Cuts the power: what was never synced is kept or lost as the module doc says, and
    /// every handle from before fails from now on. Returns what happened, for a failing
    /// test to print.
    pub fn power_loss(&self) -> PowerLoss {
        self.lock().power_loss()
    }

    /// Kills the process but not the machine: every handle from before fails from now on,
    /// and nothing is lost (what was volatile stays volatile).
    pub fn process_crash(&self) {
        self.lock().end_process();
    }

    /// Flips bit `bit` (0-7) of byte `offset` of `name`'s synced data.
    pub fn flip_bit_in_synced(&self, name: &str, offset: u64, bit: u8) -> io::Result<()> {
        let mask = 1u8 << (bit % 8);
        self.lock()
            .damage(name, offset..offset + 1, |byte| *byte ^= mask)
    }

    /// Zeroes sector `sector` of `name`'s synced data (the part of it the durable length
    /// covers).
    pub fn zero_synced_sector(&self, name: &str, sector: u64) -> io::Result<()> {
        let mut disk = self.lock();
        let len = disk
            .durable_len_by_current_name(name)
            .ok_or_else(|| not_found(name))?;
        let start = sector * SECTOR;
        disk.damage(name, start..(start + SECTOR).min(len), |byte| *byte = 0)
    }

    /// Flips one random bit of the synced data of a random file that `eligible` accepts;
    /// `None` if no such file holds synced data.
    pub fn flip_random_synced_bit(&self, eligible: impl Fn(&str) -> bool) -> Option<Damage> {
        let mut disk = self.lock();
        let (name, len) = disk.random_synced_file(&eligible)?;
        let offset = disk.rng.below(len);
        let bit = disk.rng.below(8) as u8;
        let mask = 1u8 << bit;
        disk.damage(&name, offset..offset + 1, |byte| *byte ^= mask)
            .ok()?;
        Some(Damage {
            name,
            offset,
            bit: Some(bit),
        })
    }

    /// Zeroes one random sector of the synced data of a random file that `eligible`
    /// accepts; `None` if no such file holds synced data.
    pub fn zero_random_synced_sector(&self, eligible: impl Fn(&str) -> bool) -> Option<Damage> {
        let mut disk = self.lock();
        let (name, len) = disk.random_synced_file(&eligible)?;
        let start = disk.rng.below(len.div_ceil(SECTOR)) * SECTOR;
        disk.damage(&name, start..(start + SECTOR).min(len), |byte| *byte = 0)
            .ok()?;
        Some(Damage {
            name,
            offset: start,
            bit: None,
        })
    }

    /// Makes the next `op` on any file fail with `errno`. Failures asked for queue up;
    /// each is used by the first call it matches.
    pub fn fail_next(&self, op: SimOp, errno: SimErrno) {
        self.lock().faults.push(Fault {
            op,
            errno,
            file: None,
        });
    }

    /// Makes the next `op` on the file now or later named `name` fail with `errno`.
    pub fn fail_next_of(&self, name: &str, op: SimOp, errno: SimErrno) {
        self.lock().faults.push(Fault {
            op,
            errno,
            file: Some(name.to_owned()),
        });
    }

    /// Forgets every failure asked for and not yet used.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The durable length of the file the durable directory names `name` (what a power
    /// loss now would certainly leave), `None` if the durable directory has no such name.
    pub fn durable_len(&self, name: &str) -> Option<u64> {
        let disk = self.lock();
        let inode = disk.durable_names.get(name)?;
        Some(disk.inodes.get(inode)?.durable.len() as u64)
    }

    /// The durable state: every durably named file with its durable bytes.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let disk = self.lock();
        disk.durable_names
            .iter()
            .filter_map(|(name, inode)| {
                Some((name.clone(), disk.inodes.get(inode)?.durable.clone()))
            })
            .collect()
    }

    /// The names reads see now, sorted.
    pub fn files(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    /// The bytes of `name` as reads see them now, whatever process is alive.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.lock();
        let inode = disk.names.get(name)?;
        Some(disk.inodes.get(inode)?.current.clone())
    }

    /// How many sectors of `name` are volatile (written or cut, not yet durably synced).
    pub fn volatile_sectors(&self, name: &str) -> usize {
        let disk = self.lock();
        disk.names
            .get(name)
            .and_then(|inode| disk.inodes.get(inode))
            .map_or(0, |inode| inode.dirty.union(&inode.failed).count())
    }
}
