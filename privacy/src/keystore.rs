//! The key store: one key per data subject, beside the log and never in it.
//!
//! ## Layout
//! `<data-dir>/keys/` holds up to 256 bucket files, `bucket-XX.keys`; a subject's keys
//! live in the bucket named by the first byte of a hash of the subject's id. A bucket
//! file holds:
//! - the bucket's *epoch key*, wrapped (XChaCha20-Poly1305) by the master key, with the
//!   master key's fingerprint;
//! - each key of its subjects: subject id, key id, creation time, and either the key
//!   wrapped by the epoch key or, once destroyed, only the time it was destroyed (a
//!   tombstone, so that readers say "erased" rather than "unknown");
//! - a BLAKE3 checksum of all of the above.
//!
//! ## Writes
//! A file is never changed in place: every change writes the whole bucket to a new file,
//! syncs it, renames it over the old one and syncs the directory (`files::replace`). A
//! crash leaves the old bucket or the new one, never a mix: a key is created whole or
//! not at all, and destroyed whole or not at all. [`KeyStore::create_key`] returns only
//! after that sync, so a key is durable before any event that uses it is appended.
//!
//! ## Erasure
//! [`KeyStore::erase`] drops the subject's wrapped keys and, in the same rewrite, draws a
//! new epoch key for the bucket and rewraps the bucket's other keys with it. The old
//! file's bytes may survive in freed disk blocks (no file system promises to overwrite
//! them), but the destroyed key in them is wrapped by the old epoch key, which no file
//! of the store holds any more: the store's files alone cannot give it back. What
//! remains is someone who kept both a raw image of the disk and the master key; rotating
//! the master key (`annals keys rotate-master`) and destroying the old one closes that
//! too. docs/PRIVACY.md says what this does and does not cover.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::sealed::{Binding, KeyId, NONCE_LEN, Sealed, TAG_LEN};
use crate::{Error, MasterKey, Unreadable, files};

/// The number of bucket files: an erasure rewrites one of them, so a store of a million
/// subjects rewrites about four thousand keys per erasure.
pub const BUCKETS: usize = 256;
const MAGIC: &[u8; 8] = b"ANNKEYS1";
const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// One key of the store, as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The data subject (a customer id).
    pub subject: String,
    /// The key's id.
    pub key_id: KeyId,
    /// When the key was made.
    pub created_at: DateTime<Utc>,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// What [`KeyStore::erase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The keys destroyed now.
    pub destroyed: Vec<KeyId>,
    /// The subject's keys destroyed by an earlier erasure.
    pub already_destroyed: Vec<KeyId>,
}

/// What `annals keys status` shows: counts and fingerprints, never a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The key store directory.
    pub dir: PathBuf,
    /// The fingerprints of the master keys that wrap the bucket files, with how many
    /// files each wraps (one entry, unless a rotation was interrupted).
    pub master_fingerprints: Vec<(String, usize)>,
    /// Bucket files present.
    pub bucket_files: usize,
    /// Data subjects with at least one key.
    pub subjects: usize,
    /// Keys that can open data.
    pub active_keys: usize,
    /// Keys destroyed by erasures.
    pub destroyed_keys: usize,
    /// Of `subjects`, those whose every key is destroyed.
    pub erased_subjects: usize,
}

/// A key as `annals export --with-keys` carries it: wrapped by the master key itself
/// (not by a bucket's epoch key), so that a store opened with the same master key can
/// import it. A destroyed key travels as its tombstone, with no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// The data subject.
    pub subject: String,
    /// The key's id.
    pub key_id: KeyId,
    /// When the key was made.
    pub created_at: DateTime<Utc>,
    /// The fingerprint of the master key that wraps `wrapped`.
    pub master_fingerprint: String,
    /// The key, wrapped by the master key (nonce, encrypted key, tag; base64 in JSON);
    /// `None` for a destroyed key.
    pub wrapped: Option<crate::sealed::Ciphertext>,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// The key store of one data directory. Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.inner.dir)
            .field("master", &self.inner.master)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    master: MasterKey,
    /// Held for the store's life: one process at a time.
    _lock: File,
    /// One writer per bucket at a time; the state below is changed only after the
    /// bucket's file is durable.
    writers: Vec<Mutex<()>>,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<KeyId, Key>,
    by_subject: HashMap<String, Vec<KeyId>>,
    epochs: HashMap<u8, Zeroizing<[u8; 32]>>,
}

struct Key {
    subject: String,
    created_at: DateTime<Utc>,
    material: Material,
}

enum Material {
    Active(Zeroizing<[u8; 32]>),
    Destroyed(DateTime<Utc>),
}

/// A bucket file's content.
#[derive(Serialize, Deserialize)]
struct BucketFile {
    bucket: u8,
    master_fingerprint: [u8; 8],
    wrapped_epoch: Vec<u8>,
    entries: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    subject: String,
    key_id: KeyId,
    created_at_ms: i64,
    state: FileState,
}

#[derive(Serialize, Deserialize)]
enum FileState {
    Active { wrapped: Vec<u8> },
    Destroyed { at_ms: i64 },
}

/// The bucket of `subject`.
fn bucket_of(subject: &str) -> u8 {
    blake3::derive_key("annals key store bucket v1", subject.as_bytes())[0]
}

fn bucket_path(dir: &Path, bucket: u8) -> PathBuf {
    dir.join(format!("bucket-{bucket:02x}.keys"))
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Now, at the precision the files keep (milliseconds): a time the store reports
/// (a key's creation, an erasure's `Erased { at }`) is the same before and after a
/// reopen.
fn now() -> DateTime<Utc> {
    from_millis(millis(Utc::now()))
}

fn wrap(wrapping: &[u8; 32], key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, Error> {
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

fn unwrap(wrapping: &[u8; 32], wrapped: &[u8], aad: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
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

fn epoch_aad(bucket: u8) -> Vec<u8> {
    let mut aad = b"annals epoch key v1\0".to_vec();
    aad.push(bucket);
    aad
}

fn subject_key_aad(purpose: &[u8], key_id: KeyId, subject: &str) -> Vec<u8> {
    let mut aad = purpose.to_vec();
    aad.extend_from_slice(key_id.0.as_bytes());
    aad.extend_from_slice(&(subject.len() as u32).to_le_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

const SUBJECT_KEY: &[u8] = b"annals subject key v1\0";
const EXPORTED_KEY: &[u8] = b"annals exported key v1\0";

fn encode(file: &BucketFile) -> Result<Vec<u8>, Error> {
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

fn decode(path: &Path, bytes: &[u8]) -> Result<BucketFile, Error> {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads every bucket file of `dir`, removing stray `.tmp` files of interrupted writes.
fn read_buckets(dir: &Path) -> Result<Vec<(PathBuf, BucketFile)>, Error> {
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

fn lock(dir: &Path) -> Result<File, Error> {
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

fn create_dir(dir: &Path) -> Result<(), Error> {
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

impl KeyStore {
    /// The name of the key store's directory inside a data directory.
    pub const DIR: &'static str = "keys";

    /// Opens (creating if needed) the key store of the data directory `data_dir`
    /// (`<data_dir>/keys`), whose keys `master` wraps.
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<KeyStore, Error> {
        let dir = data_dir.join(Self::DIR);
        create_dir(&dir)?;
        let lock = lock(&dir)?;
        let mut state = State::default();
        for (path, file) in read_buckets(&dir)? {
            if file.master_fingerprint != master.fingerprint_bytes() {
                return Err(Error::WrongMasterKey {
                    path,
                    found: hex(&file.master_fingerprint),
                    given: master.fingerprint(),
                });
            }
            let epoch = unwrap(master.bytes(), &file.wrapped_epoch, &epoch_aad(file.bucket))
                .ok_or_else(|| Error::Corrupt {
                    path: path.clone(),
                    reason: "its epoch key does not unwrap".into(),
                })?;
            for entry in file.entries {
                let material = match entry.state {
                    FileState::Active { wrapped } => {
                        let aad = subject_key_aad(SUBJECT_KEY, entry.key_id, &entry.subject);
                        Material::Active(unwrap(&epoch, &wrapped, &aad).ok_or_else(|| {
                            Error::Corrupt {
                                path: path.clone(),
                                reason: format!("the key {} does not unwrap", entry.key_id),
                            }
                        })?)
                    }
                    FileState::Destroyed { at_ms } => Material::Destroyed(from_millis(at_ms)),
                };
                state
                    .by_subject
                    .entry(entry.subject.clone())
                    .or_default()
                    .push(entry.key_id);
                state.keys.insert(
                    entry.key_id,
                    Key {
                        subject: entry.subject,
                        created_at: from_millis(entry.created_at_ms),
                        material,
                    },
                );
            }
            state.epochs.insert(file.bucket, epoch);
        }
        Ok(KeyStore {
            inner: Arc::new(Inner {
                dir,
                master,
                _lock: lock,
                writers: (0..BUCKETS).map(|_| Mutex::new(())).collect(),
                state: RwLock::new(state),
            }),
        })
    }

    /// The key store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The fingerprint of the master key in use.
    pub fn master_fingerprint(&self) -> String {
        self.inner.master.fingerprint()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The subject's key that new data is sealed with, if it has one.
    pub fn active_key(&self, subject: &str) -> Option<KeyId> {
        let state = self.read();
        state
            .by_subject
            .get(subject)?
            .iter()
            .rev()
            .copied()
            .find(|id| {
                matches!(
                    state.keys.get(id).map(|key| &key.material),
                    Some(Material::Active(_))
                )
            })
    }

    /// The subject's key for new data: its active key, or a new one, durable (synced to
    /// disk) before this returns. Blocking IO: call it off the async workers.
    pub fn create_key(&self, subject: &str) -> Result<KeyId, Error> {
        if let Some(key_id) = self.active_key(subject) {
            return Ok(key_id);
        }
        let bucket = bucket_of(subject);
        let _writer = self.inner.writers[bucket as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(key_id) = self.active_key(subject) {
            return Ok(key_id);
        }
        let mut material = Zeroizing::new([0u8; 32]);
        crate::random(material.as_mut())?;
        let key_id = KeyId::random()?;
        let created_at = now();
        let epoch = match self.read().epochs.get(&bucket) {
            Some(epoch) => epoch.clone(),
            None => {
                let mut fresh = Zeroizing::new([0u8; 32]);
                crate::random(fresh.as_mut())?;
                fresh
            }
        };
        let mut file = self.bucket_file(bucket, &epoch, None)?;
        file.entries.push(FileEntry {
            subject: subject.to_owned(),
            key_id,
            created_at_ms: millis(created_at),
            state: FileState::Active {
                wrapped: wrap(
                    &epoch,
                    &material,
                    &subject_key_aad(SUBJECT_KEY, key_id, subject),
                )?,
            },
        });
        self.write_bucket(bucket, &file)?;
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        state.epochs.insert(bucket, epoch);
        state
            .by_subject
            .entry(subject.to_owned())
            .or_default()
            .push(key_id);
        state.keys.insert(
            key_id,
            Key {
                subject: subject.to_owned(),
                created_at,
                material: Material::Active(material),
            },
        );
        Ok(key_id)
    }

    /// The bucket's file as it stands, its keys wrapped by `epoch` (the bucket's current
    /// one, or a new one), leaving out the material of `destroy`'s keys.
    fn bucket_file(
        &self,
        bucket: u8,
        epoch: &[u8; 32],
        destroy: Option<(&str, DateTime<Utc>)>,
    ) -> Result<BucketFile, Error> {
        let state = self.read();
        let mut entries = Vec::new();
        let mut members: Vec<(&KeyId, &Key)> = state
            .keys
            .iter()
            .filter(|(_, key)| bucket_of(&key.subject) == bucket)
            .collect();
        members.sort_by_key(|(id, key)| (key.created_at, **id));
        for (key_id, key) in members {
            let state = match &key.material {
                Material::Active(_) if destroy.is_some_and(|(s, _)| s == key.subject) => {
                    FileState::Destroyed {
                        at_ms: millis(destroy.map(|(_, at)| at).unwrap_or_default()),
                    }
                }
                Material::Active(material) => FileState::Active {
                    wrapped: wrap(
                        epoch,
                        material,
                        &subject_key_aad(SUBJECT_KEY, *key_id, &key.subject),
                    )?,
                },
                Material::Destroyed(at) => FileState::Destroyed { at_ms: millis(*at) },
            };
            entries.push(FileEntry {
                subject: key.subject.clone(),
                key_id: *key_id,
                created_at_ms: millis(key.created_at),
                state,
            });
        }
        Ok(BucketFile {
            bucket,
            master_fingerprint: self.inner.master.fingerprint_bytes(),
            wrapped_epoch: wrap(self.inner.master.bytes(), epoch, &epoch_aad(bucket))?,
            entries,
        })
    }

    fn write_bucket(&self, bucket: u8, file: &BucketFile) -> Result<(), Error> {
        let path = bucket_path(&self.inner.dir, bucket);
        let bytes = encode(file)?;
        files::replace(&path, &bytes).map_err(|source| Error::Io { path, source })
    }

    /// Destroys every key of `subject`: durable (synced) before this returns, whole or
    /// not at all across a crash. The bucket gets a new epoch key in the same write, so
    /// no file of the store can give the destroyed keys back (see the module's docs).
    /// Idempotent: a second erasure destroys nothing more. Blocking IO.
    pub fn erase(&self, subject: &str) -> Result<Erasure, Error> {
        let bucket = bucket_of(subject);
        let _writer = self.inner.writers[bucket as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (destroyed, already_destroyed): (Vec<KeyId>, Vec<KeyId>) = {
            let state = self.read();
            let ids = state.by_subject.get(subject).cloned().unwrap_or_default();
            ids.into_iter().partition(|id| {
                matches!(
                    state.keys.get(id).map(|k| &k.material),
                    Some(Material::Active(_))
                )
            })
        };
        if destroyed.is_empty() {
            return Ok(Erasure {
                destroyed,
                already_destroyed,
            });
        }
        let at = now();
        let mut epoch = Zeroizing::new([0u8; 32]);
        crate::random(epoch.as_mut())?;
        let file = self.bucket_file(bucket, &epoch, Some((subject, at)))?;
        self.write_bucket(bucket, &file)?;
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        state.epochs.insert(bucket, epoch);
        for id in &destroyed {
            if let Some(key) = state.keys.get_mut(id) {
                // Dropping the material zeroes it.
                key.material = Material::Destroyed(at);
            }
        }
        Ok(Erasure {
            destroyed,
            already_destroyed,
        })
    }

    /// Seals `plaintext` for the place `binding` under the key `key_id` (from
    /// [`KeyStore::create_key`]). Fails only if the key is not active (destroyed by an
    /// erasure since, or unknown).
    pub fn seal(
        &self,
        key_id: KeyId,
        binding: &Binding<'_>,
        plaintext: &str,
    ) -> Result<Sealed, SealError> {
        let state = self.read();
        match state.keys.get(&key_id).map(|key| &key.material) {
            Some(Material::Active(material)) => {
                Sealed::seal(key_id, material, binding, plaintext).map_err(SealError::Store)
            }
            Some(Material::Destroyed(at)) => {
                Err(SealError::Unreadable(Unreadable::Erased { at: *at }))
            }
            None => Err(SealError::Unreadable(Unreadable::UnknownKey { key_id })),
        }
    }

    /// Opens a sealed value found at `binding`: its plaintext, or why not (erased,
    /// unknown key, tampered or moved).
    pub fn open_sealed(
        &self,
        sealed: &Sealed,
        binding: &Binding<'_>,
    ) -> Result<String, Unreadable> {
        let state = self.read();
        match state.keys.get(&sealed.key_id).map(|key| &key.material) {
            Some(Material::Active(material)) => {
                sealed.open(material, binding).ok_or(Unreadable::Tampered)
            }
            Some(Material::Destroyed(at)) => Err(Unreadable::Erased { at: *at }),
            None => Err(Unreadable::UnknownKey {
                key_id: sealed.key_id,
            }),
        }
    }

    /// Whether the key was destroyed, and when: `None` for an active or unknown key.
    pub fn destroyed_at(&self, key_id: KeyId) -> Option<DateTime<Utc>> {
        match self.read().keys.get(&key_id)?.material {
            Material::Destroyed(at) => Some(at),
            Material::Active(_) => None,
        }
    }

    /// The subject a key belongs to.
    pub fn subject_of(&self, key_id: KeyId) -> Option<String> {
        self.read().keys.get(&key_id).map(|key| key.subject.clone())
    }

    /// Every key of `subject`, oldest first.
    pub fn keys_of(&self, subject: &str) -> Vec<KeyInfo> {
        let state = self.read();
        let mut keys: Vec<KeyInfo> = state
            .by_subject
            .get(subject)
            .into_iter()
            .flatten()
            .filter_map(|id| state.keys.get(id).map(|key| info(*id, key)))
            .collect();
        keys.sort_by_key(|key| (key.created_at, key.key_id));
        keys
    }

    /// Counts of subjects and keys (no key material).
    pub fn status(&self) -> Status {
        let state = self.read();
        status_of(
            &self.inner.dir,
            vec![(self.inner.master.fingerprint(), state.epochs.len())],
            state.epochs.len(),
            state
                .keys
                .iter()
                .map(|(id, key)| info(*id, key))
                .collect::<Vec<_>>()
                .as_slice(),
        )
    }

    /// Every key, for `annals export --with-keys`: active ones wrapped by the master key,
    /// destroyed ones as tombstones.
    pub fn export_keys(&self) -> Result<Vec<ExportedKey>, Error> {
        let state = self.read();
        let mut out = Vec::with_capacity(state.keys.len());
        for (id, key) in &state.keys {
            let (wrapped, destroyed_at) = match &key.material {
                Material::Active(material) => (
                    Some(crate::sealed::Ciphertext(wrap(
                        self.inner.master.bytes(),
                        material,
                        &subject_key_aad(EXPORTED_KEY, *id, &key.subject),
                    )?)),
                    None,
                ),
                Material::Destroyed(at) => (None, Some(*at)),
            };
            out.push(ExportedKey {
                subject: key.subject.clone(),
                key_id: *id,
                created_at: key.created_at,
                master_fingerprint: self.inner.master.fingerprint(),
                wrapped,
                destroyed_at,
            });
        }
        out.sort_by_key(|key| (key.created_at, key.key_id));
        Ok(out)
    }

    /// Imports exported keys (all wrapped by this store's master key). A key already
    /// here is left as it is, except that a tombstone destroys it: an erasure is never
    /// undone by an import. Durable when this returns. Returns how many keys were added
    /// or destroyed.
    pub fn import_keys(&self, keys: &[ExportedKey]) -> Result<usize, Error> {
        let mine = self.inner.master.fingerprint();
        let mut by_bucket: HashMap<u8, Vec<&ExportedKey>> = HashMap::new();
        for key in keys {
            if key.master_fingerprint != mine {
                return Err(Error::ExportedUnderOtherMaster {
                    found: key.master_fingerprint.clone(),
                    given: mine,
                });
            }
            by_bucket
                .entry(bucket_of(&key.subject))
                .or_default()
                .push(key);
        }
        let mut changed = 0;
        let mut buckets: Vec<_> = by_bucket.into_iter().collect();
        buckets.sort_by_key(|(bucket, _)| *bucket);
        for (bucket, keys) in buckets {
            let _writer = self.inner.writers[bucket as usize]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut added: Vec<(KeyId, Key)> = Vec::new();
            {
                let state = self.read();
                for key in keys {
                    let material = match (&key.wrapped, key.destroyed_at) {
                        (_, Some(at)) => Material::Destroyed(at),
                        (Some(wrapped), None) => Material::Active(
                            unwrap(
                                self.inner.master.bytes(),
                                &wrapped.0,
                                &subject_key_aad(EXPORTED_KEY, key.key_id, &key.subject),
                            )
                            .ok_or_else(|| Error::Corrupt {
                                path: PathBuf::from("<exported keys>"),
                                reason: format!("the key {} does not unwrap", key.key_id),
                            })?,
                        ),
                        (None, None) => continue,
                    };
                    let here = state.keys.get(&key.key_id).map(|k| &k.material);
                    let wanted = matches!(
                        (here, &material),
                        (None, _) | (Some(Material::Active(_)), Material::Destroyed(_))
                    );
                    if wanted {
                        added.push((
                            key.key_id,
                            Key {
                                subject: key.subject.clone(),
                                created_at: key.created_at,
                                material,
                            },
                        ));
                    }
                }
            }
            if added.is_empty() {
                continue;
            }
            let destroys = added
                .iter()
                .any(|(_, key)| matches!(key.material, Material::Destroyed(_)));
            // Apply to a copy of the state, write, then swap in: the store's state
            // changes only after the file is durable.
            let epoch = {
                let state = self.read();
                match (destroys, state.epochs.get(&bucket)) {
                    (false, Some(epoch)) => epoch.clone(),
                    _ => {
                        let mut fresh = Zeroizing::new([0u8; 32]);
                        crate::random(fresh.as_mut())?;
                        fresh
                    }
                }
            };
            let mut file = self.bucket_file(bucket, &epoch, None)?;
            for (key_id, key) in &added {
                file.entries.retain(|entry| entry.key_id != *key_id);
                file.entries.push(FileEntry {
                    subject: key.subject.clone(),
                    key_id: *key_id,
                    created_at_ms: millis(key.created_at),
                    state: match &key.material {
                        Material::Active(material) => FileState::Active {
                            wrapped: wrap(
                                &epoch,
                                material,
                                &subject_key_aad(SUBJECT_KEY, *key_id, &key.subject),
                            )?,
                        },
                        Material::Destroyed(at) => FileState::Destroyed { at_ms: millis(*at) },
                    },
                });
            }
            self.write_bucket(bucket, &file)?;
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            state.epochs.insert(bucket, epoch);
            for (key_id, key) in added {
                let ids = state.by_subject.entry(key.subject.clone()).or_default();
                if !ids.contains(&key_id) {
                    ids.push(key_id);
                }
                state.keys.insert(key_id, key);
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn info(key_id: KeyId, key: &Key) -> KeyInfo {
    KeyInfo {
        subject: key.subject.clone(),
        key_id,
        created_at: key.created_at,
        destroyed_at: match key.material {
            Material::Destroyed(at) => Some(at),
            Material::Active(_) => None,
        },
    }
}

fn status_of(
    dir: &Path,
    master_fingerprints: Vec<(String, usize)>,
    bucket_files: usize,
    keys: &[KeyInfo],
) -> Status {
    let mut subjects: HashMap<&str, bool> = HashMap::new();
    for key in keys {
        let all_destroyed = subjects.entry(&key.subject).or_insert(true);
        *all_destroyed &= key.destroyed_at.is_some();
    }
    Status {
        dir: dir.to_owned(),
        master_fingerprints,
        bucket_files,
        subjects: subjects.len(),
        active_keys: keys.iter().filter(|k| k.destroyed_at.is_none()).count(),
        destroyed_keys: keys.iter().filter(|k| k.destroyed_at.is_some()).count(),
        erased_subjects: subjects.values().filter(|erased| **erased).count(),
    }
}

/// Why [`KeyStore::seal`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key cannot seal: destroyed or unknown.
    #[error(transparent)]
    Unreadable(Unreadable),
    /// The value cannot be sealed (too long, no randomness).
    #[error(transparent)]
    Store(Error),
}

/// The destroyed keys of the key store of `data_dir` and when each was destroyed, read
/// from its files without the master key and without the store's lock: what offline
/// readers (`annals inspect`, `replay`) need to show a value as erased.
pub fn destroyed_keys(data_dir: &Path) -> Result<HashMap<KeyId, DateTime<Utc>>, Error> {
    let dir = data_dir.join(KeyStore::DIR);
    let mut out = HashMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    for key in key_infos(&dir)?.1 {
        if let Some(at) = key.destroyed_at {
            out.insert(key.key_id, at);
        }
    }
    Ok(out)
}

/// The status of the key store of `data_dir` read from its files, without the master
/// key and without taking the store's lock (the server may be running): what
/// `annals keys status` shows.
pub fn status(data_dir: &Path) -> Result<Status, Error> {
    let dir = data_dir.join(KeyStore::DIR);
    if !dir.exists() {
        return Ok(status_of(&dir, Vec::new(), 0, &[]));
    }
    let (fingerprints, keys, count) = key_infos(&dir)?;
    Ok(status_of(&dir, fingerprints, count, &keys))
}

/// Rewraps every bucket of the key store of `data_dir` from the master key `old` to
/// `new` (each bucket also gets a new epoch key). The store must not be open (stop the
/// server). Safe to run again after an interruption: buckets already under `new` are
/// left alone. Returns how many bucket files were rewritten.
pub fn rotate_master(data_dir: &Path, old: &MasterKey, new: &MasterKey) -> Result<usize, Error> {
    rotate_master_with_progress(data_dir, old, new, &mut |_, _| {})
}

/// [`rotate_master`], calling `progress(done, total)` after each bucket file (done or
/// already under `new`) of `total`.
pub fn rotate_master_with_progress(
    data_dir: &Path,
    old: &MasterKey,
    new: &MasterKey,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, Error> {
    let dir = data_dir.join(KeyStore::DIR);
    create_dir(&dir)?;
    let _lock = lock(&dir)?;
    let mut rewritten = 0;
    let buckets = read_buckets(&dir)?;
    let total = buckets.len();
    for (done, (path, file)) in buckets.into_iter().enumerate() {
        progress(done, total);
        if file.master_fingerprint == new.fingerprint_bytes() {
            continue;
        }
        if file.master_fingerprint != old.fingerprint_bytes() {
            return Err(Error::WrongMasterKey {
                path,
                found: hex(&file.master_fingerprint),
                given: old.fingerprint(),
            });
        }
        let corrupt = |what: String| Error::Corrupt {
            path: path.clone(),
            reason: what,
        };
        let epoch = unwrap(old.bytes(), &file.wrapped_epoch, &epoch_aad(file.bucket))
            .ok_or_else(|| corrupt("its epoch key does not unwrap".into()))?;
        let mut fresh = Zeroizing::new([0u8; 32]);
        crate::random(fresh.as_mut())?;
        let mut entries = Vec::with_capacity(file.entries.len());
        for entry in file.entries {
            let state = match entry.state {
                FileState::Active { wrapped } => {
                    let aad = subject_key_aad(SUBJECT_KEY, entry.key_id, &entry.subject);
                    let key = unwrap(&epoch, &wrapped, &aad).ok_or_else(|| {
                        corrupt(format!("the key {} does not unwrap", entry.key_id))
                    })?;
                    FileState::Active {
                        wrapped: wrap(&fresh, &key, &aad)?,
                    }
                }
                destroyed => destroyed,
            };
            entries.push(FileEntry { state, ..entry });
        }
        let rotated = BucketFile {
            bucket: file.bucket,
            master_fingerprint: new.fingerprint_bytes(),
            wrapped_epoch: wrap(new.bytes(), &fresh, &epoch_aad(file.bucket))?,
            entries,
        };
        files::replace(&path, &encode(&rotated)?).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        rewritten += 1;
    }
    progress(total, total);
    Ok(rewritten)
}

/// Every key of the bucket files in `dir`, read without unwrapping: the master key
/// fingerprints (with how many files each wraps), the keys, and the number of files.
#[allow(clippy::type_complexity)]
fn key_infos(dir: &Path) -> Result<(Vec<(String, usize)>, Vec<KeyInfo>, usize), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut fingerprints: Vec<(String, usize)> = Vec::new();
    let mut keys = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("bucket-") && name.ends_with(".keys")) {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let file = decode(&path, &bytes)?;
        count += 1;
        let fingerprint = hex(&file.master_fingerprint);
        match fingerprints.iter_mut().find(|(f, _)| *f == fingerprint) {
            Some((_, n)) => *n += 1,
            None => fingerprints.push((fingerprint, 1)),
        }
        for entry in file.entries {
            keys.push(KeyInfo {
                subject: entry.subject,
                key_id: entry.key_id,
                created_at: from_millis(entry.created_at_ms),
                destroyed_at: match entry.state {
                    FileState::Destroyed { at_ms } => Some(from_millis(at_ms)),
                    FileState::Active { .. } => None,
                },
            });
        }
    }
    Ok((fingerprints, keys, count))
}
