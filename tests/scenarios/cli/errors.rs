//! Every error an operator can meet: one clear line and a distinct exit code each.

use crate::support::{annals_fails, seeded};

/// The read-only and offline commands, run against `dir`.
fn commands(dir: &str) -> Vec<Vec<String>> {
    let lists: [&[&str]; 8] = [
        &["inspect", "streams"],
        &["inspect", "stream", "order-o1"],
        &["inspect", "log"],
        &["inspect", "event", "0193a4e2-7c1d-7b3e-9f00-1234567890ab"],
        &["replay", "stream", "order-o1"],
        &["replay", "all"],
        &["export", "--to", "out.ndjson"],
        &["verify"],
    ];
    lists
        .iter()
        .map(|args| {
            let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
            args.extend(["--data-dir".to_owned(), dir.to_owned()]);
            args
        })
        .collect()
}

fn run_all(dir: &str, cwd: &std::path::Path, code: i32, needles: &[&str]) {
    for args in commands(dir) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        annals_fails(&args, cwd, code, needles);
    }
}

#[test]
fn a_missing_data_directory_exits_3_and_is_not_created() {
    let temp = tempfile::tempdir().unwrap();
    run_all(
        "no-such-dir",
        temp.path(),
        3,
        &["no-such-dir", "does not exist"],
    );
    assert!(
        !temp.path().join("no-such-dir").exists(),
        "nothing was created"
    );
}

#[test]
fn an_empty_directory_exits_3_and_stays_empty() {
    let temp = tempfile::tempdir().unwrap();
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run_all(
        empty.to_str().unwrap(),
        temp.path(),
        3,
        &["not an Annals data directory"],
    );
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_locked_directory_exits_4_naming_the_pid_and_the_server_option() {
    let (temp, data) = seeded();
    let _held = crate::support::open_store(&data);
    let pid = format!("pid {}", std::process::id());
    run_all(
        data.to_str().unwrap(),
        temp.path(),
        4,
        &["locked", &pid, "--server URL"],
    );
}

#[test]
fn a_corrupt_log_exits_5() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    crate::support::seed(&data, 300);
    let first = data.join("log").join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&first, bytes).unwrap();
    let dir = data.to_str().unwrap();
    for args in [
        vec!["replay", "all", "--data-dir", dir],
        vec!["export", "--to", "out.ndjson", "--data-dir", dir],
        vec!["inspect", "log", "--limit", "300", "--data-dir", dir],
    ] {
        annals_fails(
            &args,
            temp.path(),
            5,
            &["corrupt log", "00000000000000000000.seg"],
        );
    }
    assert!(
        !temp.path().join("out.ndjson").exists(),
        "no export of a damaged log"
    );
}

#[test]
fn unknown_streams_events_and_versions_exit_7() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let not_found: [(&[&str], &str); 5] = [
        (
            &["replay", "stream", "order-nope"],
            "order-nope has no events",
        ),
        (
            &["inspect", "stream", "order-nope"],
            "order-nope has no events",
        ),
        (
            &["replay", "stream", "order-o1", "--to-version", "5"],
            "no version 5: its last version is 1",
        ),
        (
            &[
                "inspect",
                "event",
                &crate::support::event_id(99).to_string(),
            ],
            "no event has the id",
        ),
        (
            &[
                "replay",
                "stream",
                "stock-pear",
                "--as-of",
                "2026-11-05T10:00:00Z",
            ],
            "stock-pear has no events",
        ),
    ];
    for (args, needle) in not_found {
        let mut args = args.to_vec();
        args.extend(["--data-dir", dir]);
        annals_fails(&args, temp.path(), 7, &[needle]);
    }
}

#[test]
fn bad_timestamps_ids_and_categories_exit_2() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let usage: [(&[&str], &str); 6] = [
        (
            &["replay", "stream", "order-o1", "--as-of", "yesterday"],
            "invalid --as-of \"yesterday\"",
        ),
        (
            &[
                "replay",
                "stream",
                "order-o1",
                "--as-of",
                "2026-13-45T10:00:00Z",
            ],
            "RFC 3339",
        ),
        (
            &["replay", "stream", "ledger-1"],
            "no aggregate owns the category \"ledger\"",
        ),
        (&["inspect", "event", "not-a-uuid"], "invalid event id"),
        (&["inspect", "stream", " order-o1"], "invalid stream id"),
        (
            &["inspect", "stream", "order-o1", "--server", "localhost"],
            "invalid --server",
        ),
    ];
    for (args, needle) in usage {
        let mut args = args.to_vec();
        args.extend(["--data-dir", dir]);
        annals_fails(&args, temp.path(), 2, &[needle]);
    }
    // Conflicting cuts are refused by the parser, with its usual exit code.
    let output = crate::support::annals(
        &[
            "replay",
            "stream",
            "order-o1",
            "--to-version",
            "1",
            "--as-of",
            "2026-11-05T10:00:00Z",
        ],
        temp.path(),
    );
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_unreachable_server_exits_8() {
    let temp = tempfile::tempdir().unwrap();
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    annals_fails(
        &["inspect", "streams", "--server", &url],
        temp.path(),
        8,
        &["cannot reach the server", &url],
    );
    annals_fails(
        &["replay", "stream", "order-o1", "--server", &url],
        temp.path(),
        8,
        &["cannot reach the server"],
    );
}
