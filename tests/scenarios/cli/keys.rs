//! `annals keys status`, `annals keys rotate-master`, and the keys of
//! `annals export --with-keys` / `annals import`, on real data directories whose key
//! stores the privacy crate writes (the server's routes are tested with the server).

use std::path::Path;

use privacy::{Binding, KeyStore, MasterKey, Sealed};
use serde_json::Value;

use crate::support::{annals, annals_fails, annals_ok, seeded, stderr};

/// Opens the key store of `data` (never while a child process is being spawned: it
/// would inherit the lock for a moment).
fn open_keys(data: &Path, master: &MasterKey) -> KeyStore {
    let _not_spawning = test_support::not_spawning();
    KeyStore::open(data, master.clone()).unwrap()
}

fn at(subject: &str) -> (String, uuid::Uuid) {
    (
        format!("customer-{subject}"),
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, subject.as_bytes()),
    )
}

fn seal(store: &KeyStore, subject: &str, value: &str) -> Sealed {
    let key = store.create_key(subject).unwrap();
    let (stream, event_id) = at(subject);
    let binding = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.seal(key, &binding, value).unwrap()
}

fn open(store: &KeyStore, subject: &str, sealed: &Sealed) -> Result<String, privacy::Unreadable> {
    let (stream, event_id) = at(subject);
    let binding = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.open_sealed(sealed, &binding)
}

fn status(data: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "keys",
        "status",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&annals_ok(&args, data.parent().unwrap())).unwrap()
}

/// A master key file in `dir`.
fn master_file(dir: &Path, name: &str) -> (MasterKey, std::path::PathBuf) {
    let key = MasterKey::generate().unwrap();
    let path = dir.join(name);
    key.write_new(&path).unwrap();
    (key, path)
}

#[test]
fn keys_status_counts_subjects_and_keys_beside_a_holder_of_the_store() {
    let (temp, data) = seeded();
    let empty = status(&data, &[]);
    assert_eq!(empty["subjects"], 0);
    assert_eq!(empty["bucket_files"], 0);
    let (master, master_path) = master_file(temp.path(), "master.key");
    let store = open_keys(&data, &master);
    seal(&store, "alice", "Alice");
    seal(&store, "bob", "Bob");
    store.erase("bob").unwrap();
    // The store is held (as by a server): status reads its files anyway.
    let held = status(&data, &["--master-key-file", master_path.to_str().unwrap()]);
    assert_eq!(held["subjects"], 2, "{held}");
    assert_eq!(held["active_keys"], 1);
    assert_eq!(held["destroyed_keys"], 1);
    assert_eq!(held["erased_subjects"], 1);
    assert_eq!(
        held["master_fingerprints"][0]["fingerprint"],
        master.fingerprint()
    );
    assert_eq!(held["master_key_opens"], true);
    let text = annals_ok(
        &["keys", "status", "--data-dir", data.to_str().unwrap()],
        temp.path(),
    );
    assert!(text.contains("destroyed keys   1"), "{text}");
    assert!(text.contains(&master.fingerprint()), "{text}");
    assert!(!text.contains(&master.to_hex()), "never the key itself");
    // Another key: said so, exit 2.
    let (_, other) = master_file(temp.path(), "other.key");
    annals_fails(
        &[
            "keys",
            "status",
            "--data-dir",
            data.to_str().unwrap(),
            "--master-key-file",
            other.to_str().unwrap(),
        ],
        temp.path(),
        2,
        &["does not open the key store", &master.fingerprint()],
    );
    drop(store);
}

#[test]
fn rotate_master_rewraps_under_a_new_key_file_and_refuses_a_held_store() {
    let (temp, data) = seeded();
    let (old, old_path) = master_file(temp.path(), "master.key");
    let sealed = {
        let store = open_keys(&data, &old);
        (0..20)
            .map(|i| {
                (
                    format!("s{i}"),
                    seal(&store, &format!("s{i}"), &format!("v{i}")),
                )
            })
            .collect::<Vec<_>>()
    };
    let new_path = temp.path().join("master.key.new");
    let data_arg = data.to_str().unwrap();
    // Held by another process (as by a server): refused, and told what to do.
    let holder = open_keys(&data, &old);
    annals_fails(
        &[
            "keys",
            "rotate-master",
            "--data-dir",
            data_arg,
            "--master-key-file",
            old_path.to_str().unwrap(),
            "--new-master-key-file",
            new_path.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
        4,
        &["stop `annals serve`"],
    );
    assert!(!new_path.exists(), "no new key made for a refused rotation");
    drop(holder);
    let report: Value = serde_json::from_str(&annals_ok(
        &[
            "keys",
            "rotate-master",
            "--data-dir",
            data_arg,
            "--master-key-file",
            old_path.to_str().unwrap(),
            "--new-master-key-file",
            new_path.to_str().unwrap(),
            "--json",
        ],
        temp.path(),
    ))
    .unwrap();
    let new = MasterKey::from_file(&new_path).unwrap();
    assert_eq!(report["created"], true);
    assert_eq!(report["new_fingerprint"], new.fingerprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let after = status(&data, &[]);
    assert_eq!(after["master_fingerprints"].as_array().unwrap().len(), 1);
    assert_eq!(
        after["master_fingerprints"][0]["fingerprint"],
        new.fingerprint()
    );
    // The human form says what to do next.
    let again = annals_ok(
        &[
            "keys",
            "rotate-master",
            "--data-dir",
            data_arg,
            "--master-key-file",
            old_path.to_str().unwrap(),
            "--new-master-key-file",
            new_path.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
    );
    assert!(again.contains("rewrapped 0 bucket files"), "{again}");
    assert!(again.contains("destroy the old key"), "{again}");
    // The old key no longer opens it; the new one opens every value.
    assert!(matches!(
        KeyStore::open(&data, old.clone()),
        Err(privacy::Error::WrongMasterKey { .. })
    ));
    let store = open_keys(&data, &new);
    for (i, (subject, value)) in sealed.iter().enumerate() {
        assert_eq!(open(&store, subject, value).unwrap(), format!("v{i}"));
    }
    drop(store);
    // ANNALS_MASTER_KEY stands in for --master-key-file.
    let mut command = test_support::annals_command();
    command
        .args(["keys", "status", "--data-dir", data_arg])
        .env(privacy::MASTER_KEY_ENV, new.to_hex())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = test_support::spawn(&mut command)
        .and_then(std::process::Child::wait_with_output)
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("opens this key store"));
}

#[test]
fn export_with_keys_then_import_opens_the_same_sealed_values() {
    let (temp, data) = seeded();
    let (master, master_path) = master_file(temp.path(), "master.key");
    let (alice, bob) = {
        let store = open_keys(&data, &master);
        let alice = seal(&store, "alice", "Alice Liddell");
        let bob = seal(&store, "bob", "Bob");
        store.erase("bob").unwrap();
        (alice, bob)
    };
    let export = temp.path().join("annals.ndjson");
    let data_arg = data.to_str().unwrap();
    let export_arg = export.to_str().unwrap();
    let master_arg = master_path.to_str().unwrap();

    // Without --with-keys: no key material at all.
    annals_ok(
        &[
            "export",
            "--data-dir",
            data_arg,
            "--to",
            export_arg,
            "--no-progress",
        ],
        temp.path(),
    );
    let keys_file = temp.path().join("annals.ndjson.keys");
    assert!(!keys_file.exists());
    let text = std::fs::read_to_string(&export).unwrap();
    for id in [alice.key_id, bob.key_id] {
        assert!(
            !text.contains(&id.to_string()),
            "no key id of the store in a keyless export"
        );
    }
    assert!(!text.contains("wrapped") && !text.contains(&master.fingerprint()));

    // --with-keys needs the master key.
    annals_fails(
        &[
            "export",
            "--data-dir",
            data_arg,
            "--to",
            export_arg,
            "--with-keys",
            "--no-progress",
        ],
        temp.path(),
        2,
        &["--master-key-file"],
    );
    let out = annals_ok(
        &[
            "export",
            "--data-dir",
            data_arg,
            "--to",
            export_arg,
            "--with-keys",
            "--master-key-file",
            master_arg,
            "--no-progress",
        ],
        temp.path(),
    );
    assert!(out.contains("exported 2 keys"), "{out}");
    assert!(keys_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let keys_text = std::fs::read_to_string(&keys_file).unwrap();
    assert!(!keys_text.contains(&master.to_hex()));

    // Import without the master key: refused, nothing made.
    let restored = temp.path().join("restored");
    let restored_arg = restored.to_str().unwrap();
    annals_fails(
        &[
            "import",
            export_arg,
            "--data-dir",
            restored_arg,
            "--no-progress",
        ],
        temp.path(),
        2,
        &["holds the export's keys", "--master-key-file"],
    );
    assert!(!restored.exists());
    // Under another master key: refused.
    let (_, other) = master_file(temp.path(), "other.key");
    annals_fails(
        &[
            "import",
            export_arg,
            "--data-dir",
            restored_arg,
            "--master-key-file",
            other.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
        2,
        &["wrapped by master key"],
    );
    assert!(!restored.exists());
    let out = annals_ok(
        &[
            "import",
            export_arg,
            "--data-dir",
            restored_arg,
            "--master-key-file",
            master_arg,
            "--no-progress",
        ],
        temp.path(),
    );
    assert!(out.contains("imported 2 keys"), "{out}");
    let store = open_keys(&restored, &master);
    assert_eq!(open(&store, "alice", &alice).unwrap(), "Alice Liddell");
    assert!(matches!(
        open(&store, "bob", &bob),
        Err(privacy::Unreadable::Erased { .. })
    ));
    drop(store);

    // A keyless export imports with no key store at all.
    let plain = temp.path().join("plain.ndjson");
    annals_ok(
        &[
            "export",
            "--data-dir",
            data_arg,
            "--to",
            plain.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
    );
    let bare = temp.path().join("bare");
    annals_ok(
        &[
            "import",
            plain.to_str().unwrap(),
            "--data-dir",
            bare.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
    );
    assert_eq!(privacy::status(&bare).unwrap().subjects, 0);
}

#[test]
fn a_key_store_held_by_another_process_is_a_clear_error_for_export_with_keys() {
    let (temp, data) = seeded();
    let (master, master_path) = master_file(temp.path(), "master.key");
    let holder = open_keys(&data, &master);
    let output = annals(
        &[
            "export",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            temp.path().join("x.ndjson").to_str().unwrap(),
            "--with-keys",
            "--master-key-file",
            master_path.to_str().unwrap(),
            "--no-progress",
        ],
        temp.path(),
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("stop it first"),
        "{}",
        stderr(&output)
    );
    drop(holder);
}
