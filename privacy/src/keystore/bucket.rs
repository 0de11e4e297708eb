//! The key store's files: the bucket file format (a checksummed postcard body after a
//! magic), how keys are wrapped (XChaCha20-Poly1305 with associated data naming what is
//! wrapped), reading every bucket of a directory, and the directory's lock.

use std::fs::File;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::files;
use crate::sealed::{KeyId, NONCE_LEN, TAG_LEN};

const MAGIC: &[u8; 8] = b"ANNKEYS1";
const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// A bucket file's content.
#[derive(Serialize, Deserialize)]
pub(super) struct BucketFile {
    pub(super) bucket: u8,
    pub(super) master_fingerprint: [u8; 8],
    pub(super) wrapped_epoch: Vec<u8>,
    pub(super) entries: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct FileEntry {
    pub(super) subject: String,
    pub(super) key_id: KeyId,
    pub(super) created_at_ms: i64,
    pub(super) state: FileState,
}

#[derive(Serialize, Deserialize)]
pub(super) enum FileState {
    Active { wrapped: Vec<u8> },
    Destroyed { at_ms: i64 },
}

/// The bucket of `subject`.
pub(super) fn bucket_of(subject: &str) -> u8 {
    blake3::derive_key("annals key store bucket v1", subject.as_bytes())[0]
}

pub(super) fn bucket_path(dir: &Path, bucket: u8) -> PathBuf {
    dir.join(format!("bucket-{bucket:02x}.keys"))
}

pub(super) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Now, at the precision the files keep (milliseconds): a time the store reports
/// (a key's creation, an erasure's `Erased { at }`) is the same before and after a
/// reopen.
pub(super) fn now() -> DateTime<Utc> {
    from_millis(millis(Utc::now()))
}

pub(super) fn wrap(wrapping: &[u8; 32], key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random(&mut nonce)?;
    let encrypted = XChaCha20Poly1305::new(wrapping.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: key, aad })
        .map_err(|_| Error::Cipher)?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&encrypted);
    Ok(out)
}

pub(super) fn unwrap(
    wrapping: &[u8; 32],
    wrapped: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    if wrapped.len() != WRAPPED_LEN {
        return None;
    }
    let (nonce, encrypted) = wrapped.split_at(NONCE_LEN);
    let plain = Zeroizing::new(
        XChaCha20Poly1305::new(wrapping.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: encrypted,
                    aad,
                },
            )
            .ok()?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(plain.get(..32)?);
    Some(key)
}

pub(super) fn epoch_aad(bucket: u8) -> Vec<u8> {
    let mut aad = b"annals epoch key v1\0".to_vec();
    aad.push(bucket);
    aad
}

pub(super) fn subject_key_aad(purpose: &[u8], key_id: KeyId, subject: &str) -> Vec<u8> {
    let mut aad = purpose.to_vec();
    aad.extend_from_slice(key_id.0.as_bytes());
    aad.extend_from_slice(&(subject.len() as u32).to_le_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

pub(super) const SUBJECT_KEY: &[u8] = b"annals subject key v1\0";
pub(super) const EXPORTED_KEY: &[u8] = b"annals exported key v1\0";

pub(super) fn encode(file: &BucketFile) -> Result<Vec<u8>, Error> {
    let body = postcard::to_allocvec(file).map_err(|error| Error::Corrupt {
        path: PathBuf::new(),
        reason: format!("cannot encode: {error}"),
    })?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + body.len() + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&body);
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    Ok(bytes)
}

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<BucketFile, Error> {
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a key store file (bad header)"));
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(content).as_bytes() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    postcard::from_bytes(&content[MAGIC.len()..])
        .map_err(|error| corrupt(&format!("cannot decode: {error}")))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads every bucket file of `dir`, removing stray `.tmp` files of interrupted writes.
pub(super) fn read_buckets(dir: &Path) -> Result<Vec<(PathBuf, BucketFile)>, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            // A write that never reached its rename: the bucket it would have replaced
            // is intact.
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if name.starts_with("bucket-") && name.ends_with(".keys") {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let file = decode(&path, &bytes)?;
            if bucket_path(dir, file.bucket) != path {
                return Err(Error::Corrupt {
                    path,
                    reason: format!("holds bucket {:02x}", file.bucket),
                });
            }
            files.push((path, file));
        }
    }
    files.sort_by_key(|(_, file)| file.bucket);
    Ok(files)
}

pub(super) fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

pub(super) fn create_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        if let Some(parent) = dir.parent() {
            files::sync_dir(parent).map_err(io)?;
        }
    }
    Ok(())
}
