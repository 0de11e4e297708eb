//! The key store of personal data in `annals serve`: where the master key comes from
//! (`--master-key-file`, created if missing, or `ANNALS_MASTER_KEY`) and opening the key
//! store beside the log with it (docs/PRIVACY.md).

use std::path::PathBuf;

use anyhow::Context;

use super::Settings;

/// Where the master key comes from (never the key itself: settings are printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `--master-key-file PATH`: read, or created if missing.
    File(PathBuf),
    /// The environment variable `ANNALS_MASTER_KEY`.
    Environment,
}

/// Opens the key store of the data directory with the master key of `settings`, if
/// one is configured; says which master key (its fingerprint, never the key).
pub(super) async fn open_key_store(
    settings: &Settings,
) -> anyhow::Result<Option<privacy::KeyStore>> {
    let Some(source) = settings.master_key.clone() else {
        tracing::warn!(
            "no master key (--master-key-file or ANNALS_MASTER_KEY): the server keeps no \
             personal data, and the customers' routes answer 503 personal-data-disabled"
        );
        return Ok(None);
    };
    let data_dir = settings.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let master = match &source {
            MasterKeySource::File(path) => privacy::MasterKey::from_file_or_create(path)
                .map(|(key, _created)| key)
                .with_context(|| format!("cannot read the master key file {}", path.display()))?,
            MasterKeySource::Environment => {
                let text = zeroize::Zeroizing::new(
                    std::env::var(privacy::MASTER_KEY_ENV).unwrap_or_default(),
                );
                privacy::MasterKey::from_hex(&text)
                    .with_context(|| format!("bad master key in {}", privacy::MASTER_KEY_ENV))?
            }
        };
        let fingerprint = master.fingerprint();
        let key_store = privacy::KeyStore::open(&data_dir, master).with_context(|| {
            format!(
                "cannot open the key store in {}",
                data_dir.join(privacy::KeyStore::DIR).display()
            )
        })?;
        anyhow::Ok((key_store, fingerprint))
    })
    .await
    .context("opening the key store panicked")??;
    let (key_store, fingerprint) = opened;
    tracing::info!(
        master_key = %fingerprint,
        dir = %key_store.dir().display(),
        "personal data on: sealed under per-customer keys in the key store"
    );
    Ok(Some(key_store))
}
