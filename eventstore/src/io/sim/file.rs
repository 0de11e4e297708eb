//! The simulated disk's handles as the IO seam: `LogFs` for `SimDisk` (the directory)
//! and `SimFile`, one open file, for `LogFile`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::disk::{DirOp, Disk, Inode, lock, name_hash, sectors};
use super::{SECTOR, SimDisk, SimOp};
use crate::io::{LogFile, LogFs};

/// One open file of a [`SimDisk`].
pub struct SimFile {
    disk: Arc<Mutex<Disk>>,
    process: u64,
    inode: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("process", &self.process)
            .field("inode", &self.inode)
            .finish_non_exhaustive()
    }
}

impl LogFs for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let disk = self.lock();
        disk.alive(self.process)?;
        Ok(disk.names.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let disk = self.lock();
        disk.alive(self.process)?;
        let inode = disk.lookup(name)?;
        Ok(Arc::new(SimFile {
            disk: self.disk.clone(),
            process: self.process,
            inode,
        }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let mut disk = self.lock();
        disk.alive(self.process)?;
        let inode = match disk.names.get(name) {
            Some(inode) => *inode,
            None => {
                let inode = disk.next_inode;
                disk.next_inode += 1;
                let count = disk.created.entry(name.to_owned()).or_default();
                let origin = name_hash(name) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                *count += 1;
                disk.inodes.insert(
                    inode,
                    Inode {
                        origin,
                        ..Inode::default()
                    },
                );
                disk.names.insert(name.to_owned(), inode);
                disk.dir_ops.push(DirOp::Create {
                    name: name.to_owned(),
                    inode,
                });
                inode
            }
        };
        Ok(Arc::new(SimFile {
            disk: self.disk.clone(),
            process: self.process,
            inode,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.alive(self.process)?;
        let inode = disk.lookup(from)?;
        if from != to {
            disk.names.remove(from);
            disk.names.insert(to.to_owned(), inode);
            disk.dir_ops.push(DirOp::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
                inode,
            });
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.alive(self.process)?;
        let inode = disk.lookup(name)?;
        disk.names.remove(name);
        disk.dir_ops.push(DirOp::Remove {
            name: name.to_owned(),
            inode,
        });
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.alive(self.process)?;
        disk.take_fault(SimOp::SyncDir, None)?;
        disk.durable_names = disk.names.clone();
        disk.dir_ops.clear();
        Ok(())
    }

    fn read_all(&self, name: &str) -> io::Result<Vec<u8>> {
        let disk = self.lock();
        disk.alive(self.process)?;
        let inode = disk.lookup(name)?;
        Ok(disk.inodes[&inode].current.clone())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("<simulated disk>").join(name)
    }
}

impl SimFile {
    /// Makes the file's volatile sectors and length durable (`sync_data` and `sync_all`).
    fn sync(&self) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.inode(self.process, self.inode)?;
        if let Err(error) = disk.take_fault(SimOp::Sync, Some(self.inode)) {
            // Like Linux: the failed pages are marked clean, so no later sync writes them.
            let inode = disk.inode(self.process, self.inode)?;
            let dirty = std::mem::take(&mut inode.dirty);
            inode.failed.extend(dirty);
            return Err(error);
        }
        let inode = disk.inode(self.process, self.inode)?;
        let len = inode.current.len();
        inode.durable.resize(len, 0);
        for sector in std::mem::take(&mut inode.dirty) {
            let start = (sector * SECTOR) as usize;
            let end = (start + SECTOR as usize).min(len);
            if start < end {
                inode.durable[start..end].copy_from_slice(&inode.current[start..end]);
            }
        }
        inode.failed.retain(|sector| sector * SECTOR < len as u64);
        Ok(())
    }
}

impl LogFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut disk = lock(&self.disk);
        let current = &disk.inode(self.process, self.inode)?.current;
        let Some(available) = current.get(offset.min(current.len() as u64) as usize..) else {
            return Ok(0);
        };
        let read = available.len().min(buf.len());
        buf[..read].copy_from_slice(&available[..read]);
        Ok(read)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.inode(self.process, self.inode)?;
        disk.take_fault(SimOp::Write, Some(self.inode))?;
        let inode = disk.inode(self.process, self.inode)?;
        if buf.is_empty() {
            return Ok(());
        }
        let start = offset as usize;
        let end = start + buf.len();
        if inode.current.len() < end {
            inode.current.resize(end, 0);
        }
        inode.current[start..end].copy_from_slice(buf);
        for sector in sectors(offset, end as u64) {
            inode.dirty.insert(sector);
            inode.failed.remove(&sector);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.inode(self.process, self.inode)?;
        disk.take_fault(SimOp::SetLen, Some(self.inode))?;
        let inode = disk.inode(self.process, self.inode)?;
        let old = inode.current.len() as u64;
        for sector in sectors(len, old) {
            inode.dirty.insert(sector);
            inode.failed.remove(&sector);
        }
        inode.current.resize(len as usize, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut disk = lock(&self.disk);
        Ok(disk.inode(self.process, self.inode)?.current.len() as u64)
    }
}
