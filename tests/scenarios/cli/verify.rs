//! `annals verify`: a sound log passes and is counted; a missing, locked or corrupt
//! directory exits with its own code and one clear line.

use crate::support::{annals, open_store, seed, stderr, stdout};

#[test]
fn verify_passes_on_a_sound_log_and_counts_its_events() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, 300);
    let output = annals(
        &["verify", "--data-dir", data.to_str().unwrap(), "--json"],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["events"], 300);
    assert!(
        report["segments"].as_u64().unwrap() > 1,
        "small segments roll"
    );
}

#[test]
fn verify_of_a_missing_directory_exits_3() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(&["verify", "--data-dir", "no-such-dir"], temp.path());
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("does not exist"));
    assert!(
        !temp.path().join("no-such-dir").exists(),
        "nothing was created"
    );
}

#[test]
fn verify_of_a_locked_directory_exits_4_and_names_the_pid() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, 5);
    let _held = open_store(&data);
    let output = annals(
        &["verify", "--data-dir", data.to_str().unwrap()],
        temp.path(),
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("pid {}", std::process::id())),
        "{}",
        stderr(&output)
    );
}

#[test]
fn verify_of_a_corrupt_log_exits_5_and_says_where() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, 300);
    // Flip one byte in the middle of the first (sealed) segment.
    let first = data.join("log").join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&first, bytes).unwrap();
    let output = annals(
        &["verify", "--data-dir", data.to_str().unwrap()],
        temp.path(),
    );
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("corrupt log") && message.contains("00000000000000000000.seg"),
        "{message}"
    );
    assert_eq!(
        message.lines().count(),
        1,
        "one clear line, no backtrace: {message}"
    );
}
