//! The IO seam under the log: every byte the log reads or writes, and every directory
//! operation on `log/`, goes through [`LogFs`] (the log directory) and [`LogFile`] (one
//! open file in it). Two implementations:
//!
//! - [`real::RealFs`]: `std::fs` over a directory path, positional IO
//!   (`pread`/`pwrite`), `fdatasync`/`fsync`, and `fsync` of the directory;
//! - `sim::SimDisk` (tests and the `sim` cargo feature): a disk in memory, deterministic
//!   from a seed, that loses unsynced writes at a simulated power loss, tears sectors,
//!   damages synced data and fails writes and syncs on request. Its module doc states the
//!   fault model exactly; recovery's argument in docs/ARCHITECTURE.md relies on it.
//!
//! The contract both keep, and the one the store may rely on:
//! - reads see the latest writes (of any handle of the same file), synced or not;
//! - a write, or a length change, is durable only once a `sync_data`/`sync_all` of that
//!   file has returned `Ok` after it;
//! - a directory operation (`create` of a new name, `rename`, `remove`) is durable only
//!   once a `sync_dir` has returned `Ok` after it;
//! - an error from any call leaves nothing promised: after a failed sync the data written
//!   before it may or may not be on disk, and a later successful sync does not change
//!   that (Linux marks the failed pages clean).
//!
//! File names are plain names inside the log directory (no `/`); `path` turns one into the
//! path error messages should show.

use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub mod real;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

/// One open file of the log directory, for reading and writing at explicit offsets.
/// Handles are shared between threads (the writer writes, the syncer syncs).
pub trait LogFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past
    /// the end of the file). Like `pread`, it may read fewer bytes than asked for.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if it ends before. Not durable
    /// until a later sync of this file returns `Ok`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Makes every write and length change of this file so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes every write and length change of this file so far durable, with the rest of
    /// its metadata (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Cuts the file to `len` bytes or extends it with zeros. Not durable until a later
    /// sync of this file returns `Ok`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The file's length as reads see it now.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty as reads see it now.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file ends
    /// before.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ends before the bytes asked for",
                    ));
                }
                Ok(read) => {
                    buf = &mut buf[read..];
                    offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// The log directory: its file names, opening and creating files in it, and the directory
/// operations whose durability `sync_dir` decides.
pub trait LogFs: Send + Sync + Debug {
    /// The names of the files in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading and writing; `NotFound` if there is none.
    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;

    /// Opens a file for reading and writing, creating it empty if it is missing. An
    /// existing file is not truncated. The new name is not durable until `sync_dir`.
    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;

    /// Renames `from` to `to`, replacing `to` if it exists. Not durable until `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file's name. Not durable until `sync_dir`.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes the directory's entries durable: every `create`, `rename` and `remove` so far.
    fn sync_dir(&self) -> io::Result<()>;

    /// The whole content of a file as reads see it now.
    fn read_all(&self, name: &str) -> io::Result<Vec<u8>>;

    /// The path to show for `name` in errors and logs (the real path on disk; a
    /// recognisable made-up path in the simulation).
    fn path(&self, name: &str) -> PathBuf;
}
