//! The data directory's `LOCK` file: an OS file lock held while a process has the store
//! open, holding that process's pid, so a second process gets a clear "locked by pid N".

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::Error;

/// Takes the data directory's lock, writing our pid into it; names the holder's pid if
/// another process has it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(Error::io(&path)(error)),
    }
    file.set_len(0).map_err(Error::io(&path))?;
    file.rewind().map_err(Error::io(&path))?;
    write!(file, "{}", std::process::id()).map_err(Error::io(&path))?;
    Ok(file)
}
