//! The files of the log: creating a segment, zero-filling (preallocating) one, and syncing
//! the log directory, all through the IO seam (`io::LogFs`). With the reads in `segment`
//! (`list_segments`, `read_segment`, `LogCursor`) and recovery's cut of a torn tail, this
//! is all the file IO under the log.

use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use crate::io::{LogFile, LogFs};
use crate::segment;

/// Opens the segment whose first position is `first_position` for reading and writing.
pub(crate) fn open_segment(fs: &dyn LogFs, first_position: u64) -> Result<Arc<dyn LogFile>, Error> {
    let name = segment::segment_file_name(first_position);
    fs.open(&name).map_err(Error::io(&fs.path(&name)))
}

/// Extends `file` with zeros up to `bytes` and syncs it: the blocks are then allocated,
/// and later writes over them need no metadata journal commit on `fdatasync`.
pub(crate) fn zero_fill(file: &dyn LogFile, path: &Path, bytes: u64) -> Result<(), Error> {
    let mut at = file.len().map_err(Error::io(path))?;
    let zeros = vec![0u8; bytes.saturating_sub(at).min(1 << 20) as usize];
    while at < bytes {
        let chunk = (bytes - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], at)
            .map_err(Error::io(path))?;
        at += chunk as u64;
    }
    file.sync_all().map_err(Error::io(path))
}

/// Creates an empty segment file and makes its directory entry durable.
pub(crate) fn create_segment(
    fs: &dyn LogFs,
    first_position: u64,
) -> Result<Arc<dyn LogFile>, Error> {
    let name = segment::segment_file_name(first_position);
    let path = fs.path(&name);
    let file = fs.create(&name).map_err(Error::io(&path))?;
    file.sync_all().map_err(Error::io(&path))?;
    sync_dir(fs)?;
    Ok(file)
}

/// fsyncs the log directory, so that files created, renamed or removed in it survive a
/// crash.
pub(crate) fn sync_dir(fs: &dyn LogFs) -> Result<(), Error> {
    fs.sync_dir().map_err(Error::io(&fs.path("")))
}
