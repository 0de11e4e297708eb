//! Master key rotation.

use privacy::{Error, KeyStore};

use crate::*;

/// A store with subjects spread over many buckets, one erased; its sealed values.
fn populated(dir: &std::path::Path, master: &privacy::MasterKey) -> Vec<(String, privacy::Sealed)> {
    let store = KeyStore::open(dir, master.clone()).unwrap();
    let sealed: Vec<_> = (0..40)
        .map(|i| {
            let subject = format!("subject-{i}");
            let value = format!("value {i}");
            (subject.clone(), seal(&store, &subject, &value))
        })
        .collect();
    store.erase("subject-0").unwrap();
    sealed
}

fn check_opens(store: &KeyStore, sealed: &[(String, privacy::Sealed)]) {
    for (i, (subject, value)) in sealed.iter().enumerate() {
        let opened = open(store, subject, value);
        if i == 0 {
            assert!(matches!(opened, Err(privacy::Unreadable::Erased { .. })));
        } else {
            assert_eq!(opened.unwrap(), format!("value {i}"));
        }
    }
}

#[test]
fn rotation_rewraps_every_bucket_and_only_the_new_key_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (master(), master());
    let sealed = populated(dir.path(), &old);
    let files = bucket_files(dir.path());
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let rewritten = privacy::rotate_master(dir.path(), &old, &new).unwrap();
    assert_eq!(rewritten, files.len());
    for (file, old_bytes) in files.iter().zip(&before) {
        let bytes = std::fs::read(file).unwrap();
        assert_ne!(&bytes, old_bytes);
        let decoded = decode(&bytes);
        assert_eq!(
            decoded.wrapped_epoch.len(),
            decode(old_bytes).wrapped_epoch.len()
        );
        assert_ne!(decoded.wrapped_epoch, decode(old_bytes).wrapped_epoch);
    }
    let status = privacy::status(dir.path()).unwrap();
    assert_eq!(
        status.master_fingerprints,
        vec![(new.fingerprint(), files.len())]
    );
    assert!(matches!(
        KeyStore::open(dir.path(), old.clone()),
        Err(Error::WrongMasterKey { .. })
    ));
    let store = KeyStore::open(dir.path(), new.clone()).unwrap();
    check_opens(&store, &sealed);
    drop(store);
    // Run again: nothing left to do.
    assert_eq!(privacy::rotate_master(dir.path(), &old, &new).unwrap(), 0);
    // A third key that is neither: refused, nothing changed.
    assert!(matches!(
        privacy::rotate_master(dir.path(), &master(), &master()),
        Err(Error::WrongMasterKey { .. })
    ));
    check_opens(&KeyStore::open(dir.path(), new).unwrap(), &sealed);
}

#[test]
fn an_interrupted_rotation_refuses_both_keys_until_it_is_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (master(), master());
    let sealed = populated(dir.path(), &old);
    let files = bucket_files(dir.path());
    assert!(files.len() > 10);
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    privacy::rotate_master(dir.path(), &old, &new).unwrap();
    // Interrupted: some buckets still hold the old key's files, one a stray tmp.
    for (file, bytes) in files.iter().zip(&before).step_by(3) {
        std::fs::write(file, bytes).unwrap();
    }
    std::fs::write(files[1].with_extension("tmp"), b"half").unwrap();
    let status = privacy::status(dir.path()).unwrap();
    assert_eq!(status.master_fingerprints.len(), 2, "{status:?}");
    assert!(matches!(
        KeyStore::open(dir.path(), old.clone()),
        Err(Error::WrongMasterKey { .. })
    ));
    assert!(matches!(
        KeyStore::open(dir.path(), new.clone()),
        Err(Error::WrongMasterKey { .. })
    ));
    let rewritten = privacy::rotate_master(dir.path(), &old, &new).unwrap();
    assert_eq!(rewritten, files.len().div_ceil(3));
    assert_eq!(
        privacy::status(dir.path()).unwrap().master_fingerprints,
        vec![(new.fingerprint(), files.len())]
    );
    check_opens(&KeyStore::open(dir.path(), new).unwrap(), &sealed);
}

#[test]
fn rotating_an_empty_or_missing_store_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        privacy::rotate_master(dir.path(), &master(), &master()).unwrap(),
        0
    );
    assert_eq!(privacy::status(dir.path()).unwrap().bucket_files, 0);
}
