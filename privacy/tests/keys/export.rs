//! Export and import of wrapped keys.

use privacy::{Error, KeyStore, Unreadable};

use crate::*;

#[test]
fn imported_keys_open_the_data_in_a_fresh_store_with_the_same_master() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = master();
    let source = KeyStore::open(from.path(), master.clone()).unwrap();
    let alice = seal(&source, "alice", "Alice");
    let bob = seal(&source, "bob", "Bob");
    source.erase("bob").unwrap();
    let exported = source.export_keys().unwrap();
    assert_eq!(exported.len(), 2);
    let bob_exported = exported.iter().find(|k| k.subject == "bob").unwrap();
    assert!(bob_exported.wrapped.is_none(), "a tombstone carries no key");
    // No key material of the store in the export's JSON beyond the master-wrapped keys.
    let json = serde_json::to_string(&exported).unwrap();
    assert!(json.contains(&master.fingerprint()));
    assert!(!json.contains(&master.to_hex()));

    let target = KeyStore::open(to.path(), master.clone()).unwrap();
    assert_eq!(target.import_keys(&exported).unwrap(), 2);
    assert_eq!(open(&target, "alice", &alice).unwrap(), "Alice");
    assert!(matches!(
        open(&target, "bob", &bob),
        Err(Unreadable::Erased { .. })
    ));
    assert_eq!(target.import_keys(&exported).unwrap(), 0, "idempotent");
    drop(target);
    let target = KeyStore::open(to.path(), master).unwrap();
    assert_eq!(open(&target, "alice", &alice).unwrap(), "Alice");
    assert_eq!(target.active_key("alice"), Some(alice.key_id));
}

#[test]
fn a_tombstone_destroys_an_active_key_on_import_never_the_reverse() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = master();
    let first = KeyStore::open(a.path(), master.clone()).unwrap();
    let carol = seal(&first, "carol", "Carol");
    let mates = bucket_mates("carol", 1);
    let mate = seal(&first, &mates[0], "mate");
    let active = first.export_keys().unwrap();
    first.erase("carol").unwrap();
    let erased = first.export_keys().unwrap();

    // b has the keys active, then imports the tombstone: destroyed.
    let second = KeyStore::open(b.path(), master.clone()).unwrap();
    second.import_keys(&active).unwrap();
    assert_eq!(open(&second, "carol", &carol).unwrap(), "Carol");
    let path = bucket_path(b.path(), bucket_of("carol"));
    let before = decode(&std::fs::read(&path).unwrap());
    assert_eq!(second.import_keys(&erased).unwrap(), 1);
    assert!(matches!(
        open(&second, "carol", &carol),
        Err(Unreadable::Erased { .. })
    ));
    assert_eq!(open(&second, &mates[0], &mate).unwrap(), "mate");
    let after = decode(&std::fs::read(&path).unwrap());
    assert_ne!(
        before.wrapped_epoch, after.wrapped_epoch,
        "a new epoch key, as an erasure"
    );

    // The reverse: importing the active key again undoes nothing.
    assert_eq!(second.import_keys(&active).unwrap(), 0);
    assert!(matches!(
        open(&second, "carol", &carol),
        Err(Unreadable::Erased { .. })
    ));
    drop(second);
    let second = KeyStore::open(b.path(), master).unwrap();
    assert!(matches!(
        open(&second, "carol", &carol),
        Err(Unreadable::Erased { .. })
    ));
    assert_eq!(open(&second, &mates[0], &mate).unwrap(), "mate");
}

#[test]
fn keys_exported_under_another_master_are_refused_and_nothing_changes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = KeyStore::open(a.path(), master()).unwrap();
    seal(&source, "dan", "Dan");
    let exported = source.export_keys().unwrap();
    let target = KeyStore::open(b.path(), master()).unwrap();
    assert!(matches!(
        target.import_keys(&exported),
        Err(Error::ExportedUnderOtherMaster { .. })
    ));
    assert_eq!(target.status().subjects, 0);
    assert_eq!(privacy::status(b.path()).unwrap().bucket_files, 0);
}

#[test]
fn an_altered_exported_key_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = master();
    let source = KeyStore::open(a.path(), master.clone()).unwrap();
    seal(&source, "eve", "Eve");
    let mut exported = source.export_keys().unwrap();
    // Moved to another subject: the wrapping binds the key to its subject.
    exported[0].subject = "mallory".into();
    let target = KeyStore::open(b.path(), master).unwrap();
    assert!(matches!(
        target.import_keys(&exported),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(target.status().subjects, 0);
}
