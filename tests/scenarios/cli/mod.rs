//! End-to-end tests of the `annals` binary: real processes, real data directories.

mod errors;
mod export;
mod inspect;
mod replay;
mod server;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use eventstore::{EventStore, ExpectedVersion, NewEvent, StoreConfig, StreamId};

pub fn annals(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the annals binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn small_segments() -> StoreConfig {
    StoreConfig {
        segment_bytes: 16 * 1024,
        preallocate_segments: false,
        ..StoreConfig::default()
    }
}

/// Writes `events` single-event appends to a fresh store in `dir`.
pub fn seed(dir: &Path, events: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EventStore::open(dir, small_segments()).unwrap();
        for i in 0..events {
            let stream = StreamId::new(format!("order-{}", i % 7)).unwrap();
            let payload = format!("payload number {i}").into_bytes();
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("OrderPlaced", payload)],
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
}

#[test]
fn help_lists_every_command_with_a_summary() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(&["--help"], temp.path());
    assert!(output.status.success());
    let help = stdout(&output);
    for command in [
        "serve",
        "inspect",
        "replay",
        "export",
        "import",
        "verify",
        "projections",
        "bench",
    ] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
    assert!(help.contains("Exit codes"));
    assert!(help.contains("7 not found"), "{help}");
    assert!(
        help.contains("annals replay stream order-42 --as-of"),
        "{help}"
    );
    for (command, summary) in [
        (&["inspect", "--help"][..], "tail"),
        (&["replay", "--help"][..], "all"),
        (&["replay", "stream", "--help"][..], "Examples:"),
        (&["export", "--help"][..], "docs/EXPORT.md"),
    ] {
        let output = annals(command, temp.path());
        assert!(output.status.success());
        assert!(
            stdout(&output).contains(summary),
            "{command:?}: {}",
            stdout(&output)
        );
    }
}

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
    let _held = EventStore::open(&data, small_segments()).unwrap();
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

#[test]
fn bench_append_reports_what_it_wrote() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &[
            "bench",
            "append",
            "--writers",
            "4",
            "--events-per-commit",
            "3",
            "--events",
            "600",
            "--json",
        ],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["events"], 600);
    assert_eq!(report["commits"], 200);
    assert!(report["events_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["p99_commit_ms"].as_f64().unwrap() >= report["p50_commit_ms"].as_f64().unwrap());
}

#[test]
fn bench_replay_reads_every_event() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &["bench", "replay", "--events", "5000", "--json"],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["events"], 5000);
}

#[test]
fn bench_contend_never_assigns_a_version_twice() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &[
            "bench",
            "contend",
            "--writers",
            "8",
            "--duration",
            "0.5",
            "--json",
        ],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["versions_unique_and_contiguous"], true);
    assert!(report["commits"].as_u64().unwrap() > 0);
}

#[test]
fn bad_usage_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(&["bench", "append", "--writers", "lots"], temp.path());
    assert_eq!(output.status.code(), Some(2));
}
