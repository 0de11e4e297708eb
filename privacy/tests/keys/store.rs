//! Creation, reopening and erasure.

use privacy::{Error, KeyStore, Unreadable};

use crate::*;

#[test]
fn keys_survive_a_reopen_and_create_key_returns_the_active_key() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let (alice, bob, sealed) = {
        let store = KeyStore::open(dir.path(), master.clone()).unwrap();
        let alice = store.create_key("alice").unwrap();
        assert_eq!(store.create_key("alice").unwrap(), alice, "the active key");
        assert_eq!(store.active_key("alice"), Some(alice));
        let bob = store.create_key("bob").unwrap();
        assert_ne!(alice, bob);
        let sealed = seal(&store, "alice", "Alice Liddell");
        (alice, bob, sealed)
    };
    let store = KeyStore::open(dir.path(), master).unwrap();
    assert_eq!(store.active_key("alice"), Some(alice));
    assert_eq!(
        store.create_key("alice").unwrap(),
        alice,
        "durable: no new key"
    );
    assert_eq!(store.active_key("bob"), Some(bob));
    assert_eq!(open(&store, "alice", &sealed).unwrap(), "Alice Liddell");
    assert_eq!(store.keys_of("alice").len(), 1);
    let status = store.status();
    assert_eq!((status.subjects, status.active_keys), (2, 2));
}

#[test]
fn a_key_is_on_disk_when_create_key_returns() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let store = KeyStore::open(dir.path(), master).unwrap();
    let key = store.create_key("carol").unwrap();
    // Read the files as another process would, the store still open.
    let on_disk = privacy::status(dir.path()).unwrap();
    assert_eq!(on_disk.active_keys, 1);
    let file = decode(&std::fs::read(bucket_path(dir.path(), bucket_of("carol"))).unwrap());
    assert!(file.entries.iter().any(|entry| entry.key_id == key));
    assert!(
        std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .all(|entry| !entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
        "no .tmp left behind"
    );
}

#[test]
fn erase_is_idempotent_survives_a_reopen_and_reads_as_erased() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let (key, sealed, at) = {
        let store = KeyStore::open(dir.path(), master.clone()).unwrap();
        let sealed = seal(&store, "dave", "Dave");
        let key = sealed.key_id;
        let first = store.erase("dave").unwrap();
        assert_eq!(first.destroyed, vec![key]);
        assert!(first.already_destroyed.is_empty());
        let second = store.erase("dave").unwrap();
        assert!(second.destroyed.is_empty());
        assert_eq!(second.already_destroyed, vec![key]);
        let Err(Unreadable::Erased { at }) = open(&store, "dave", &sealed) else {
            panic!("erased")
        };
        assert_eq!(store.active_key("dave"), None);
        assert_eq!(store.destroyed_at(key), Some(at));
        (key, sealed, at)
    };
    let store = KeyStore::open(dir.path(), master).unwrap();
    assert_eq!(
        open(&store, "dave", &sealed),
        Err(Unreadable::Erased { at }),
        "the same erasure, the same time, after a reopen"
    );
    assert_eq!(store.keys_of("dave")[0].destroyed_at, Some(at));
    let third = store.erase("dave").unwrap();
    assert!(third.destroyed.is_empty());
    assert_eq!(third.already_destroyed, vec![key]);
    // A subject erased gets a new key if asked (a new registration), never the old one.
    let fresh = store.create_key("dave").unwrap();
    assert_ne!(fresh, key);
    assert_eq!(
        open(&store, "dave", &sealed),
        Err(Unreadable::Erased { at })
    );
    let status = privacy::status(dir.path()).unwrap();
    assert_eq!((status.active_keys, status.destroyed_keys), (1, 1));
    // An unknown subject: nothing to destroy, nothing written.
    let nobody = store.erase("nobody").unwrap();
    assert!(nobody.destroyed.is_empty() && nobody.already_destroyed.is_empty());
}

/// Substring search.
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn an_erasure_rewrites_its_bucket_without_the_old_wrapped_key_or_epoch_key() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let mates = bucket_mates("erin", 2);
    let store = KeyStore::open(dir.path(), master.clone()).unwrap();
    let erin = seal(&store, "erin", "Erin");
    let kept: Vec<_> = mates
        .iter()
        .map(|mate| {
            (
                mate.clone(),
                seal(&store, mate, &format!("value of {mate}")),
            )
        })
        .collect();
    let path = bucket_path(dir.path(), bucket_of("erin"));
    let before = std::fs::read(&path).unwrap();
    let old = decode(&before);
    assert_eq!(old.entries.len(), 3, "erin and her two bucket mates");
    let old_wrapped: Vec<Vec<u8>> = old
        .entries
        .iter()
        .map(|entry| match &entry.state {
            FileState::Active { wrapped } => wrapped.clone(),
            FileState::Destroyed { .. } => panic!("nothing destroyed yet"),
        })
        .collect();
    let erin_wrapped = old
        .entries
        .iter()
        .zip(&old_wrapped)
        .find(|(entry, _)| entry.key_id == erin.key_id)
        .unwrap()
        .1
        .clone();
    assert!(holds(&before, &erin_wrapped) && holds(&before, &old.wrapped_epoch));

    store.erase("erin").unwrap();
    let after = std::fs::read(&path).unwrap();
    assert!(
        !holds(&after, &erin_wrapped),
        "the destroyed key's wrapped bytes are gone"
    );
    assert!(
        !holds(&after, &old.wrapped_epoch),
        "the old epoch key is gone"
    );
    for wrapped in &old_wrapped {
        assert!(
            !holds(&after, wrapped),
            "every key is rewrapped under the new epoch"
        );
    }
    let new = decode(&after);
    assert_ne!(new.wrapped_epoch, old.wrapped_epoch);
    let erin_entry = new
        .entries
        .iter()
        .find(|e| e.key_id == erin.key_id)
        .unwrap();
    assert!(matches!(erin_entry.state, FileState::Destroyed { .. }));
    // The bucket mates still open, now and after a reopen.
    for (mate, sealed) in &kept {
        assert_eq!(
            open(&store, mate, sealed).unwrap(),
            format!("value of {mate}")
        );
    }
    drop(store);
    let store = KeyStore::open(dir.path(), master).unwrap();
    for (mate, sealed) in &kept {
        assert_eq!(
            open(&store, mate, sealed).unwrap(),
            format!("value of {mate}")
        );
    }
    assert!(matches!(
        open(&store, "erin", &erin),
        Err(Unreadable::Erased { .. })
    ));
}

#[test]
fn another_master_key_is_refused_with_both_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let right = master();
    KeyStore::open(dir.path(), right.clone())
        .unwrap()
        .create_key("frank")
        .unwrap();
    let wrong = master();
    match KeyStore::open(dir.path(), wrong.clone()) {
        Err(Error::WrongMasterKey { found, given, .. }) => {
            assert_eq!(found, right.fingerprint());
            assert_eq!(given, wrong.fingerprint());
        }
        other => panic!("expected WrongMasterKey, got {other:?}"),
    }
    assert!(KeyStore::open(dir.path(), right).is_ok());
}

#[test]
fn a_second_open_of_the_same_store_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let first = KeyStore::open(dir.path(), master.clone()).unwrap();
    assert!(matches!(
        KeyStore::open(dir.path(), master.clone()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        privacy::rotate_master(dir.path(), &master, &self::master()),
        Err(Error::Locked { .. })
    ));
    // Readers without the lock still read.
    first.create_key("gina").unwrap();
    assert_eq!(privacy::status(dir.path()).unwrap().active_keys, 1);
    drop(first);
    assert!(
        KeyStore::open(dir.path(), master).is_ok(),
        "released on drop"
    );
}
