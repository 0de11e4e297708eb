//! Personal data in an immutable log.
//!
//! Events may never change, yet a person may ask to be forgotten. Annals squares the two
//! by crypto-shredding: a personal field (a customer's name, email, address) never
//! reaches the log in plaintext. It is [`Sealed`]: encrypted with XChaCha20-Poly1305
//! under a key of its own data subject, bound to its stream, event id and field name.
//! The keys live in the [`KeyStore`] beside the log (`<data-dir>/keys`), wrapped by a
//! [`MasterKey`] that lives outside the data directory. Erasing a subject destroys its
//! keys ([`KeyStore::erase`]): every copy of its data (the log, read models, exports,
//! the NATS copy) becomes ciphertext nobody can open, while the events, the hash chain
//! and every aggregate stay as they were.
//!
//! - `sealed`: [`Sealed`], [`KeyId`], [`Binding`]: the value in the event, and where it
//!   belongs;
//! - `master`: [`MasterKey`], from a file or the environment;
//! - `keystore`: [`KeyStore`]: bucket files, durable creation, erasure with a new epoch
//!   key per erased bucket, master key rotation, export and import of wrapped keys;
//! - `personal`: [`PersonalField`]: the declaration of a personal field, which each
//!   domain crate makes next to its event types;
//! - `json`: [`mark_erased`]: how Annals' readers of the log show an erased value;
//! - `error`: [`Error`] (the store failed) and [`Unreadable`] (a value cannot be shown:
//!   erased, unknown key, tampered).
//!
//! ```
//! # fn demo() -> Result<(), privacy::Error> {
//! use privacy::{Binding, KeyStore, MasterKey, Unreadable};
//! let data_dir = tempfile::tempdir().unwrap();
//! let keys = KeyStore::open(data_dir.path(), MasterKey::generate()?)?;
//! let key = keys.create_key("alice")?;
//! let at = Binding { stream: "customer-alice", event_id: uuid::Uuid::now_v7(), field: "email" };
//! let sealed = keys.seal(key, &at, "alice@example.com").unwrap();
//! assert_eq!(keys.open_sealed(&sealed, &at).unwrap(), "alice@example.com");
//! keys.erase("alice")?;
//! assert!(matches!(keys.open_sealed(&sealed, &at), Err(Unreadable::Erased { .. })));
//! # Ok(()) }
//! # demo().unwrap();
//! ```

mod error;
mod files;
mod json;
mod keystore;
mod master;
mod personal;
mod sealed;

pub use error::{Error, Unreadable};
pub use json::{mark_erased, sealed_key_id};
pub use keystore::{
    BUCKETS, Erasure, ExportedKey, KeyInfo, KeyStore, SealError, Status, destroyed_keys,
    rotate_master, rotate_master_with_progress, status,
};
pub use master::{MASTER_KEY_ENV, MasterKey};
pub use personal::PersonalField;
pub use sealed::{Binding, Ciphertext, KeyId, MAX_PLAINTEXT_LEN, Sealed, SealedField};

/// Fills `bytes` from the system's random source.
fn random(bytes: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(bytes).map_err(|error| Error::Random(error.to_string()))
}
