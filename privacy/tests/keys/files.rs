//! Damaged and stray files.

use privacy::{Error, KeyStore};

use crate::*;

#[test]
fn any_flipped_byte_of_a_bucket_file_is_a_typed_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    {
        let store = KeyStore::open(dir.path(), master.clone()).unwrap();
        seal(&store, "hana", "Hana");
        store.create_key("ivan").unwrap();
        store.erase("ivan").unwrap();
    }
    let path = bucket_path(dir.path(), bucket_of("hana"));
    let intact = std::fs::read(&path).unwrap();
    // Every byte: the header, the body, the checksum.
    for at in 0..intact.len() {
        let mut bytes = intact.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match KeyStore::open(dir.path(), master.clone()) {
            Err(Error::Corrupt { path: bad, .. }) => assert_eq!(bad, path),
            other => panic!("byte {at} flipped: expected Corrupt, got {other:?}"),
        }
        assert!(
            matches!(privacy::status(dir.path()), Err(Error::Corrupt { .. })),
            "status reads the same check"
        );
        assert!(matches!(
            privacy::destroyed_keys(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
    // Cut short, empty.
    for len in [0, 8, intact.len() - 1] {
        std::fs::write(&path, &intact[..len]).unwrap();
        assert!(matches!(
            KeyStore::open(dir.path(), master.clone()),
            Err(Error::Corrupt { .. })
        ));
    }
    std::fs::write(&path, &intact).unwrap();
    assert!(KeyStore::open(dir.path(), master).is_ok());
}

#[test]
fn a_bucket_file_under_another_bucket_name_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    KeyStore::open(dir.path(), master.clone())
        .unwrap()
        .create_key("jules")
        .unwrap();
    let bucket = bucket_of("jules");
    let path = bucket_path(dir.path(), bucket);
    std::fs::rename(&path, bucket_path(dir.path(), bucket.wrapping_add(1))).unwrap();
    assert!(matches!(
        KeyStore::open(dir.path(), master),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn a_stray_tmp_of_an_interrupted_write_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let master = master();
    let sealed = {
        let store = KeyStore::open(dir.path(), master.clone()).unwrap();
        seal(&store, "kim", "Kim")
    };
    let path = bucket_path(dir.path(), bucket_of("kim"));
    // A half-written replacement that never reached its rename.
    let tmp = path.with_extension("tmp");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
    // A reader without the lock leaves it (the writer may be mid-write) and is not
    // confused by it.
    assert_eq!(privacy::status(dir.path()).unwrap().active_keys, 1);
    assert!(tmp.exists());
    let store = KeyStore::open(dir.path(), master).unwrap();
    assert!(!tmp.exists(), "removed on open");
    assert_eq!(open(&store, "kim", &sealed).unwrap(), "Kim");
}
