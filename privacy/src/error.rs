//! The errors of the key store and of sealing.

use std::path::PathBuf;

/// Why a key store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master key file could not be read or written. The operator fixes the path or
    /// its permissions.
    #[error("master key file {path}: {source}")]
    MasterKeyFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// The master key is not 64 hex digits.
    #[error("bad master key: {reason}")]
    BadMasterKey {
        /// What is wrong with it.
        reason: String,
    },

    /// A key store file is wrapped by another master key than the one given. The
    /// operator gives the right one; after an interrupted `annals keys rotate-master`,
    /// they run it again with the same old and new keys.
    #[error(
        "{path} is wrapped by master key {found}, not by the one given ({given}): start with the master key the key store was written with (if `annals keys rotate-master` was interrupted, run it again with the same keys)"
    )]
    WrongMasterKey {
        /// The key store file.
        path: PathBuf,
        /// The fingerprint of the master key that wraps it.
        found: String,
        /// The fingerprint of the master key given.
        given: String,
    },

    /// A key store file is damaged (its checksum, format or a wrapped key does not
    /// check). Nothing is guessed: the operator restores the key store from a backup
    /// (`annals export --with-keys` carries one).
    #[error("key store file {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not check.
        reason: String,
    },

    /// Another process holds the key store (the server, or another `annals keys`).
    #[error(
        "the key store {path} is in use by another process: stop `annals serve` on this data directory first"
    )]
    Locked {
        /// The key store directory.
        path: PathBuf,
    },

    /// Reading or writing the key store failed (disk full, permissions). Nothing
    /// changed: a key is created, and destroyed, whole or not at all.
    #[error("key store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// The system's random source failed.
    #[error("the system's random number source failed: {0}")]
    Random(String),

    /// The cipher refused to encrypt (never expected with valid lengths).
    #[error("encryption failed")]
    Cipher,

    /// A personal field is longer than a field may be. Over HTTP a 422.
    #[error("the personal field {field:?} has {len} bytes, more than the {max} allowed")]
    FieldTooLong {
        /// The field.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },

    /// Exported keys were wrapped by another master key than this store's. The operator
    /// imports into a store opened with the same master key as the export's.
    #[error(
        "the exported keys are wrapped by master key {found}, this key store by {given}: import with the master key of the exporting store"
    )]
    ExportedUnderOtherMaster {
        /// The exported keys' master key fingerprint.
        found: String,
        /// This store's.
        given: String,
    },
}

/// Why a sealed value could not be opened. Expected outcomes, not failures: a reader
/// shows the field as erased, or reports it as unreadable, and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// The key was destroyed: the subject's personal data was erased.
    #[error("erased on {at}")]
    Erased {
        /// When the key was destroyed.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// This key store does not know the key (it was never here, or was not imported).
    #[error("the key {key_id} is not in this key store")]
    UnknownKey {
        /// The key.
        key_id: crate::KeyId,
    },
    /// The key is here but the value does not open: the ciphertext was changed, or was
    /// moved from another event or field. Reported, never shown.
    #[error("the value does not decrypt: it was altered or moved from another event or field")]
    Tampered,
}
