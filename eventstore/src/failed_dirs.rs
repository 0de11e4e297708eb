//! The data directories whose writer failed in this process: a process-global registry
//! that [`EventStore::open`](crate::EventStore::open) consults before it takes the lock.
//!
//! Why a store that failed must not be reopened by the same process: when a write or an
//! `fdatasync` of a segment fails, Linux marks the failed dirty pages clean and keeps them
//! in the page cache (it reports the error once, to one `fsync`). A reopen in the same
//! process (the same page cache) would read those pages back as if they were on disk,
//! recover from them and acknowledge appends after them. A fresh process on a fresh boot,
//! or at least after the kernel has dropped those pages, re-reads what the disk holds; a
//! fresh process is also what a supervisor restart gives. So a failure is recorded here,
//! by the directory's canonical path (and the path as it was given, in case the failing
//! disk cannot resolve it any more), and any later open of that directory in this process
//! fails with [`Error::RestartRequired`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use crate::error::Error;

/// Failed data directories of this process, with why they failed.
static FAILED: LazyLock<Mutex<HashMap<PathBuf, String>>> = LazyLock::new(Default::default);

/// Records that the writer of the store in `dir` failed because of `reason`.
pub(crate) fn record(dir: &Path, reason: &str) {
    let mut failed = FAILED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for path in spellings(dir) {
        failed.entry(path).or_insert_with(|| reason.to_owned());
    }
}

/// Refuses `dir` if a writer of this process failed on it.
pub(crate) fn refuse_if_failed(dir: &Path) -> Result<(), Error> {
    let failed = FAILED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for path in spellings(dir) {
        if let Some(reason) = failed.get(&path) {
            return Err(Error::RestartRequired {
                dir: dir.to_path_buf(),
                reason: reason.clone(),
            });
        }
    }
    Ok(())
}

/// The names of `dir` to record and look up: its canonical path, when it can be
/// resolved, and the path as given.
fn spellings(dir: &Path) -> Vec<PathBuf> {
    let mut paths = vec![dir.to_path_buf()];
    if let Ok(canonical) = std::fs::canonicalize(dir)
        && canonical != dir
    {
        paths.push(canonical);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_directory_is_refused_under_any_spelling() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("data");
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let other = scratch.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        refuse_if_failed(&dir).unwrap();

        record(
            &dir,
            "I/O error on 00000000000000000000.seg: File too large",
        );
        let error = refuse_if_failed(&dir.join("log").join("..")).unwrap_err();
        assert!(
            matches!(&error, Error::RestartRequired { reason, .. } if reason.contains("File too large")),
            "{error}"
        );
        std::os::unix::fs::symlink(&dir, scratch.path().join("link")).unwrap();
        assert!(refuse_if_failed(&scratch.path().join("link")).is_err());
        refuse_if_failed(&other).unwrap();
    }
}
