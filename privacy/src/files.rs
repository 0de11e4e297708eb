//! Durable file replacement: how every key store file is written.

use std::io::Write;
use std::path::Path;

/// Syncs the directory `dir`, so that a rename or a new file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces the file `path` with `bytes`, all or nothing across a crash: the bytes go to
/// `<path>.tmp`, which is synced, renamed over `path`, and the directory synced. A crash
/// leaves either the old file or the new one (and perhaps a stray `.tmp`, which the next
/// open removes).
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
