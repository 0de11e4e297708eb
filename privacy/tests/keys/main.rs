//! The key store on real files: what survives a reopen, an erasure, a damaged or foreign
//! file, a second process, a master key rotation (interrupted or not), an export and
//! import, and a `kill -9` in the middle of erasures.

mod export;
mod files;
mod rotation;
mod store;

use std::path::{Path, PathBuf};

use privacy::{Binding, KeyId, KeyStore, MasterKey, Sealed};
use serde::Deserialize;

/// A bucket file as the store writes it (MAGIC, postcard body, BLAKE3 checksum), decoded
/// by a copy of its private types so that the tests can look at the wrapped bytes.
#[derive(Debug, Deserialize)]
pub struct BucketFile {
    pub bucket: u8,
    pub master_fingerprint: [u8; 8],
    pub wrapped_epoch: Vec<u8>,
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
pub struct FileEntry {
    pub subject: String,
    pub key_id: KeyId,
    pub created_at_ms: i64,
    pub state: FileState,
}

#[derive(Debug, Deserialize)]
pub enum FileState {
    Active { wrapped: Vec<u8> },
    Destroyed { at_ms: i64 },
}

pub fn decode(bytes: &[u8]) -> BucketFile {
    assert_eq!(&bytes[..8], b"ANNKEYS1");
    postcard::from_bytes(&bytes[8..bytes.len() - 32]).expect("a bucket file")
}

/// The bucket of `subject` (as the store computes it).
pub fn bucket_of(subject: &str) -> u8 {
    blake3::derive_key("annals key store bucket v1", subject.as_bytes())[0]
}

pub fn bucket_path(data_dir: &Path, bucket: u8) -> PathBuf {
    data_dir
        .join("keys")
        .join(format!("bucket-{bucket:02x}.keys"))
}

/// Every bucket file of the store of `data_dir`, by path.
pub fn bucket_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("keys"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "keys"))
        .collect();
    files.sort();
    files
}

/// Two subjects (other than `subject`) in the same bucket as it.
pub fn bucket_mates(subject: &str, count: usize) -> Vec<String> {
    let bucket = bucket_of(subject);
    (0..)
        .map(|i| format!("mate-{i}"))
        .filter(|candidate| bucket_of(candidate) == bucket)
        .take(count)
        .collect()
}

pub fn binding_for(subject: &str) -> (String, uuid::Uuid) {
    (
        format!("customer-{subject}"),
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, subject.as_bytes()),
    )
}

/// Seals `value` for `subject`'s `name` field under its key.
pub fn seal(store: &KeyStore, subject: &str, value: &str) -> Sealed {
    let key = store.create_key(subject).unwrap();
    let (stream, event_id) = binding_for(subject);
    let at = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.seal(key, &at, value).unwrap()
}

/// Opens what [`seal`] sealed.
pub fn open(
    store: &KeyStore,
    subject: &str,
    sealed: &Sealed,
) -> Result<String, privacy::Unreadable> {
    let (stream, event_id) = binding_for(subject);
    let at = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.open_sealed(sealed, &at)
}

pub fn master() -> MasterKey {
    MasterKey::generate().unwrap()
}
