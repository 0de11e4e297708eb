//! The keys file of `annals export --with-keys` (docs/EXPORT.md): the key store's keys,
//! wrapped by the master key, in a file of their own beside the export, so that an export
//! without it holds no key material at all; written mode 0600, read back by `import`
//! only for the export it belongs to.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{ExportArgs, Header, partial_path};
use crate::exit::Failure;

/// The `format` member of a keys file.
pub const KEYS_FORMAT: &str = "annals-export-keys";

/// The keys file of `annals export --with-keys`: one JSON object, apart from the events
/// so that an export without it holds no key material at all.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeysFile {
    /// Always [`KEYS_FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The head hash of the export these keys belong to.
    pub head_hash: String,
    /// Its events.
    pub events: u64,
    /// The fingerprint of the master key that wraps every key.
    pub master_fingerprint: String,
    /// When it was written.
    pub exported_at: String,
    /// Every key: active ones wrapped by the master key, destroyed ones as tombstones.
    pub keys: Vec<privacy::ExportedKey>,
}

/// `<file>.keys`.
pub(super) fn keys_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// The key store's keys, with the master key's fingerprint.
pub(super) fn export_keys(
    args: &ExportArgs,
) -> anyhow::Result<(String, Vec<privacy::ExportedKey>)> {
    let master = args.master.key()?.ok_or_else(|| {
        Failure::Usage(format!(
            "--with-keys needs the master key: --master-key-file FILE or {}",
            privacy::MASTER_KEY_ENV
        ))
    })?;
    let keys = privacy::KeyStore::open(&args.data_dir, master)
        .and_then(|store| Ok((store.master_fingerprint(), store.export_keys()?)))
        .map_err(|error| match error {
            privacy::Error::Locked { .. } => anyhow::Error::new(error).context(
                "--with-keys opens the key store, which a running server holds: stop it first",
            ),
            other => anyhow::Error::new(other).context("cannot export the keys"),
        })?;
    Ok(keys)
}

/// Writes the keys file: mode 0600, beside then renamed into place, synced.
pub(super) fn write_keys(file: &Path, keys: &KeysFile) -> anyhow::Result<()> {
    let partial = partial_path(file);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut out = options.open(&partial)?;
        serde_json::to_writer(&mut out, keys)?;
        out.write_all(b"\n")?;
        out.sync_all()?;
        std::fs::rename(&partial, file)
    };
    write().with_context(|| format!("cannot write the keys to {}", file.display()))
}

/// Reads a keys file and checks that it belongs to the export `header`.
pub(super) fn read_keys(file: &Path, header: &Header) -> anyhow::Result<KeysFile> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the keys file {}", file.display()))?;
    let keys: KeysFile = serde_json::from_str(&text)
        .ok()
        .filter(|keys: &KeysFile| keys.format == KEYS_FORMAT)
        .ok_or_else(|| {
            Failure::Corrupt(format!("{} is not an Annals keys file", file.display()))
        })?;
    if keys.head_hash != header.head_hash {
        return Err(Failure::Usage(format!(
            "the keys file {} belongs to another export (head hash {}, the export's is {})",
            file.display(),
            keys.head_hash,
            header.head_hash
        ))
        .into());
    }
    Ok(keys)
}
