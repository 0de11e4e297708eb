//! A JWKS file that is re-read when it changes (`--auth-jwks-file`).
//!
//! The file's modification time and length are looked at on the request path, at most
//! once every [`CHECK_INTERVAL`]; only a changed file is read again. A new file that is not
//! a usable key set is logged as an error and the last good set stays in use, so a
//! half-written file never locks every caller out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::error::AuthSetupError;
use super::keys::KeySet;

/// How often, at most, the file's metadata is looked at.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
pub(crate) struct JwksFile {
    path: PathBuf,
    keys: RwLock<Arc<KeySet>>,
    check: Mutex<Check>,
}

#[derive(Debug)]
struct Check {
    last_checked: Instant,
    stamp: Stamp,
}

impl JwksFile {
    /// Reads the file once; an unreadable or unusable file is a setup error.
    pub(crate) fn open(path: &Path) -> Result<JwksFile, AuthSetupError> {
        let stamp = stamp_of(path);
        let keys = load(path)?;
        Ok(JwksFile {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(keys)),
            check: Mutex::new(Check {
                last_checked: Instant::now(),
                stamp,
            }),
        })
    }

    /// The current key set, re-read first if the file changed since it was last looked at
    /// (and that was more than [`CHECK_INTERVAL`] ago).
    pub(crate) fn current(&self) -> Arc<KeySet> {
        // A request that finds another one checking does not wait: it uses the current set.
        if let Ok(mut check) = self.check.try_lock()
            && check.last_checked.elapsed() >= CHECK_INTERVAL
        {
            check.last_checked = Instant::now();
            let stamp = stamp_of(&self.path);
            if stamp != check.stamp {
                check.stamp = stamp;
                match load(&self.path) {
                    Ok(keys) => {
                        tracing::info!(
                            path = %self.path.display(),
                            keys = keys.keys.len(),
                            "JWKS file changed, keys reloaded"
                        );
                        *self
                            .keys
                            .write()
                            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(keys);
                    }
                    Err(error) => tracing::error!(
                        %error,
                        "JWKS file changed but is not usable; the previous keys stay in use"
                    ),
                }
            }
        }
        self.keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

fn stamp_of(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn load(path: &Path) -> Result<KeySet, AuthSetupError> {
    let bytes = std::fs::read(path).map_err(|source| AuthSetupError::ReadFile {
        what: "JWKS file",
        path: path.to_owned(),
        source,
    })?;
    KeySet::from_jwks_json(&bytes).map_err(|reason| AuthSetupError::InvalidJwks {
        origin: format!("file {}", path.display()),
        reason,
    })
}
