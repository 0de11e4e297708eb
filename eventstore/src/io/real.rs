//! The real implementation of the IO seam: `std::fs` over the log directory, with
//! positional reads and writes (`pread`/`pwrite` through `FileExt`), `fdatasync`/`fsync`
//! for files and an `fsync` of the directory itself for its entries.
//!
//! [`without_waiting`] turns this thread's reads into page-cache-only ones (`preadv2`
//! with `RWF_NOWAIT`): a read that would wait for the disk (or for the store's indexer)
//! fails with [`io::ErrorKind::WouldBlock`] instead, so async code can read what is
//! ready on its worker and take only the rest to a blocking thread.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LogFile, LogFs};

/// The log directory on a real file system.
#[derive(Debug, Clone)]
pub struct RealFs {
    dir: PathBuf,
}

impl RealFs {
    /// The directory `dir`, which must exist (nothing is created here).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory this works in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One open file of a [`RealFs`].
#[derive(Debug)]
pub struct RealFile {
    file: File,
}

impl RealFile {
    /// Wraps an open file (opened for reading and writing).
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

thread_local! {
    /// Whether this thread's reads may only take what the page cache holds.
    static NO_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `read` with every [`RealFile`] read on this thread served from the page cache
/// only: a read that would have to wait for the disk (or a file system that cannot
/// promise not to) fails with [`io::ErrorKind::WouldBlock`]. Reads may still come back
/// short (part of the range cached); callers that loop until full then meet the error.
pub fn without_waiting<T>(read: impl FnOnce() -> T) -> T {
    /// Restores waiting reads however `read` ends, a panic included.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_WAIT.set(self.0);
        }
    }
    let _restore = Restore(NO_WAIT.replace(true));
    read()
}

/// Whether this thread's reads may wait (not inside [`without_waiting`]). The store's
/// wait for its indexer asks too, and fails with `WouldBlock` instead of waiting.
pub(crate) fn may_wait() -> bool {
    !NO_WAIT.get()
}

impl LogFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if !NO_WAIT.get() {
            return self.file.read_at(buf, offset);
        }
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(&self.file, &mut [io::IoSliceMut::new(buf)], offset, flags) {
            Ok(read) => Ok(read),
            // EAGAIN: not all cached. EOPNOTSUPP: this file system cannot tell.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(errno) => Err(errno.into()),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl LogFs for RealFs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            // A name that is not UTF-8 is none of the log's files.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(RealFile::new(file)))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(RealFile::new(file)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn read_all(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, RealFs) {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let fs = RealFs::new(temp.path());
        (temp, fs)
    }

    #[test]
    fn positional_writes_and_reads_round_trip() {
        let (_temp, fs) = dir();
        let file = fs.create("a.seg").unwrap();
        file.write_all_at(b"hello", 3).unwrap();
        file.sync_data().unwrap();
        assert_eq!(file.len().unwrap(), 8);
        let mut buf = [0u8; 8];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"\0\0\0hello");
        assert_eq!(
            file.read_at(&mut buf, 8).unwrap(),
            0,
            "nothing past the end"
        );
        let error = file.read_exact_at(&mut buf, 4).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(fs.read_all("a.seg").unwrap(), b"\0\0\0hello");
    }

    /// A read that may not wait takes what the page cache holds and fails with
    /// `WouldBlock` for what it does not (dropped from the cache with `fadvise` after a
    /// sync); a waiting read brings it in, and the setting ends with the closure.
    #[test]
    fn reads_without_waiting_take_only_what_the_page_cache_holds() {
        let (_temp, fs) = dir();
        let file = fs.create("a.seg").unwrap();
        file.write_all_at(&vec![7u8; 1 << 20], 0).unwrap();
        file.sync_data().unwrap();
        let file = RealFile::new(File::open(fs.dir().join("a.seg")).unwrap());
        rustix::fs::fadvise(&file.file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut buf = vec![0u8; 4096];

        let error = without_waiting(|| file.read_at(&mut buf, 512 * 1024)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(may_wait(), "only inside the closure");

        assert_eq!(file.read_at(&mut buf, 512 * 1024).unwrap(), 4096);
        buf.fill(0);
        let read = without_waiting(|| file.read_at(&mut buf, 512 * 1024)).unwrap();
        assert_eq!(read, 4096);
        assert!(buf.iter().all(|&b| b == 7));
    }

    #[test]
    fn create_keeps_an_existing_file_and_open_needs_one() {
        let (_temp, fs) = dir();
        fs.create("a.seg")
            .unwrap()
            .write_all_at(b"kept", 0)
            .unwrap();
        assert_eq!(fs.create("a.seg").unwrap().len().unwrap(), 4);
        assert_eq!(
            fs.open("missing.seg").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn set_len_cuts_and_extends_with_zeros() {
        let (_temp, fs) = dir();
        let file = fs.create("a.seg").unwrap();
        file.write_all_at(b"abcdef", 0).unwrap();
        file.set_len(2).unwrap();
        file.set_len(4).unwrap();
        file.sync_all().unwrap();
        assert_eq!(fs.read_all("a.seg").unwrap(), b"ab\0\0");
    }

    #[test]
    fn directory_operations_show_in_the_sorted_list() {
        let (_temp, fs) = dir();
        fs.create("b.seg").unwrap();
        fs.create("spare.tmp").unwrap();
        fs.rename("spare.tmp", "a.seg").unwrap();
        fs.create("c.seg").unwrap();
        fs.remove("c.seg").unwrap();
        fs.sync_dir().unwrap();
        assert_eq!(fs.list().unwrap(), ["a.seg", "b.seg"]);
        assert_eq!(fs.path("a.seg"), fs.dir().join("a.seg"));
    }
}
