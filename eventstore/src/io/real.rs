//! The real implementation of the IO seam: `std::fs` over the log directory, with
//! positional reads and writes (`pread`/`pwrite` through `FileExt`), `fdatasync`/`fsync`
//! for files and an `fsync` of the directory itself for its entries.

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

impl LogFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
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
