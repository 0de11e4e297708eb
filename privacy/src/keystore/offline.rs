//! What is done to a key store's files without opening the store: its status and its
//! destroyed keys read while a server may hold it (no master key, no lock), and the
//! rotation of its master key (under the lock, the store closed).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::bucket::*;
use super::{KeyInfo, KeyStore, Status, status_of};
use crate::sealed::KeyId;
use crate::{Error, MasterKey, files};

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
