//! The files of the log: creating a segment, zero-filling (preallocating) one, and syncing
//! the log directory. With the reads in `segment` (`list_segments`, `read_segment`,
//! `LogCursor`) and recovery's cut of a torn tail, this is all the file IO under the log.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::Error;
use crate::segment;

/// Opens a segment file for reading and writing.
pub(crate) fn open_segment(path: &Path) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path))
}

/// Extends `file` with zeros up to `bytes` and syncs it: the blocks are then allocated,
/// and later writes over them need no metadata journal commit on `fdatasync`.
pub(crate) fn zero_fill(file: &File, path: &Path, bytes: u64) -> Result<(), Error> {
    let mut at = file.metadata().map_err(Error::io(path))?.len();
    let zeros = vec![0u8; 1 << 20];
    while at < bytes {
        let chunk = (bytes - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], at)
            .map_err(Error::io(path))?;
        at += chunk as u64;
    }
    file.sync_all().map_err(Error::io(path))
}

/// Creates an empty segment file and makes its directory entry durable.
pub(crate) fn create_segment(log_dir: &Path, first_position: u64) -> Result<File, Error> {
    let path = log_dir.join(segment::segment_file_name(first_position));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    file.sync_all().map_err(Error::io(&path))?;
    sync_dir(log_dir)?;
    Ok(file)
}

/// fsyncs a directory, so that files created or resized in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
