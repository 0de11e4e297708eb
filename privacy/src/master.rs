//! The master key: 32 random bytes that wrap every other key of the key store. It lives
//! outside the data directory (a file the operator keeps apart, or the environment), so
//! that the data directory alone, or a copy of it, opens nothing.

use std::fmt;
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::Error;

/// The environment variable that may hold the master key, as 64 hex digits.
pub const MASTER_KEY_ENV: &str = "ANNALS_MASTER_KEY";

/// The master key. Never printed: its `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        crate::random(bytes.as_mut())?;
        Ok(MasterKey { bytes })
    }

    /// The key written as 64 hex digits (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let bad = || Error::BadMasterKey {
            reason: format!(
                "expected 64 hex digits (32 bytes), found {} characters",
                text.chars().count()
            ),
        };
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(MasterKey { bytes })
    }

    /// Reads the key from the file `path` (64 hex digits).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            Error::MasterKeyFile {
                path: path.to_owned(),
                source,
            }
        })?);
        Self::from_hex(&text).map_err(|error| match error {
            Error::BadMasterKey { reason } => Error::BadMasterKey {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// Reads the key from the file `path`, or, if there is no such file, generates one
    /// and writes it there (readable by its owner only), saying so in the log. `Ok((key,
    /// true))` when the file was created.
    pub fn from_file_or_create(path: &Path) -> Result<(Self, bool), Error> {
        match Self::from_file(path) {
            Err(Error::MasterKeyFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let key = Self::generate()?;
                key.write_new(path)?;
                tracing::warn!(
                    path = %path.display(),
                    fingerprint = %key.fingerprint(),
                    "created a new master key: keep this file apart from the data directory and back it up; without it no personal data can be read"
                );
                Ok((key, true))
            }
            other => other.map(|key| (key, false)),
        }
    }

    /// Writes the key to a new file `path` (refused if it exists), mode 0600, synced.
    pub fn write_new(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::MasterKeyFile {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let text = Zeroizing::new(self.to_hex());
        file.write_all(text.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::sync_dir(parent).map_err(io)?;
        }
        Ok(())
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A short public name of the key (16 hex digits of a keyed hash of it): what the key
    /// store records to tell which master key wraps it, and what `annals keys status`
    /// shows. It reveals nothing of the key.
    pub fn fingerprint(&self) -> String {
        let hash = blake3::derive_key("annals master key fingerprint v1", self.bytes.as_ref());
        hash[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn fingerprint_bytes(&self) -> [u8; 8] {
        let hash = blake3::derive_key("annals master key fingerprint v1", self.bytes.as_ref());
        let mut out = [0u8; 8];
        out.copy_from_slice(&hash[..8]);
        out
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_round_trips_through_its_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (created, fresh) = MasterKey::from_file_or_create(&path).unwrap();
        assert!(fresh);
        let (read, fresh) = MasterKey::from_file_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(read.fingerprint(), created.fingerprint());
        assert!(!format!("{read:?}").contains(&read.to_hex()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            MasterKey::from_hex("abc"),
            Err(Error::BadMasterKey { .. })
        ));
        assert!(created.write_new(&path).is_err(), "never overwritten");
    }
}
