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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::sealed::{Binding, KeyId, Sealed};
use crate::{Error, MasterKey, Unreadable, files};

mod bucket;
mod offline;

use bucket::*;
pub use offline::{destroyed_keys, rotate_master, rotate_master_with_progress, status};

/// The number of bucket files: an erasure rewrites one of them, so a store of a million
/// subjects rewrites about four thousand keys per erasure.
pub const BUCKETS: usize = 256;

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

    /// Whether the subject's personal data was erased: it has keys, and every one of
    /// them is destroyed. New personal data about an erased subject is refused by the API,
    /// so an erasure stays whole.
    pub fn is_erased(&self, subject: &str) -> bool {
        let state = self.read();
        state.by_subject.get(subject).is_some_and(|ids| {
            !ids.is_empty()
                && ids.iter().all(|id| {
                    matches!(
                        state.keys.get(id).map(|key| &key.material),
                        Some(Material::Destroyed(_))
                    )
                })
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

    /// How far in the log the erasure enforcer has destroyed the keys of every erasure
    /// it read: the position after the last event it applied, `None` if it never ran on
    /// this key store. Kept in the key store (`keys/ENFORCED`), not in sled, so that a
    /// key store restored from an older backup comes with its older position and the
    /// enforcer reads, and applies again, every erasure made since. A missing or
    /// unreadable file means "from the start": applying an erasure twice is harmless.
    pub fn enforced_through(&self) -> Option<u64> {
        std::fs::read_to_string(self.inner.dir.join("ENFORCED"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records that every erasure before log position `position` has been applied
    /// (durable when this returns). Blocking IO.
    pub fn set_enforced_through(&self, position: u64) -> Result<(), Error> {
        let path = self.inner.dir.join("ENFORCED");
        files::replace(&path, format!("{position}\n").as_bytes())
            .map_err(|source| Error::Io { path, source })
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enforced_position_is_kept_with_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let keys = KeyStore::open(dir.path(), master.clone()).unwrap();
        assert_eq!(keys.enforced_through(), None);
        keys.set_enforced_through(42).unwrap();
        drop(keys);
        let keys = KeyStore::open(dir.path(), master).unwrap();
        assert_eq!(keys.enforced_through(), Some(42));
        std::fs::write(dir.path().join("keys/ENFORCED"), b"garbage").unwrap();
        assert_eq!(keys.enforced_through(), None, "unreadable: from the start");
    }
}
