//! `annals repair`: a corrupted sealed segment is restored from the copy that the relay of
//! a real `annals serve` made in a real nats-server, and `verify` passes with every event
//! as before; a copy that does not chain, or lacks the damaged positions, is refused
//! (exit 5) with the segment's bytes unchanged; a sound log is nothing to repair.

use std::path::{Path, PathBuf};

use eventstore::{Position, RecordedEvent};
use test_support::{AnnalsServer, NatsServer};

use crate::support::{
    annals, annals_fails, annals_ok, open_store, seed, stderr, stdout, wait_for_outbox,
};

/// The whole log of the stopped data directory `dir`.
fn read_log(dir: &Path) -> Vec<RecordedEvent> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(dir);
        let events = store.read_all(Position(0), usize::MAX).unwrap();
        store.close().await;
        events
    })
}

/// Runs `annals serve` with its relay on `nats` over `data` until the copy holds all
/// `events` of the log, then stops it.
fn copy_with_the_relay(data: &Path, nats: &NatsServer, events: u64) {
    let mut server = AnnalsServer::start_in(data, &["--nats-url", &nats.url()]);
    wait_for_outbox(&server, "the relay copying the log", |status| {
        let relay = &status["relay"];
        relay["checkpoint"] == events && relay["backlog"] == 0
    });
    server.terminate();
}

/// Flips a byte at each of `offsets` in `segment`.
fn flip(segment: &Path, offsets: &[usize]) {
    let mut bytes = std::fs::read(segment).unwrap();
    for &at in offsets {
        bytes[at] ^= 0xa5;
    }
    std::fs::write(segment, bytes).unwrap();
}

/// The sealed segments of `data` (every one but the last), oldest first.
fn sealed_segments(data: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop();
    assert!(segments.len() >= 2, "the test needs sealed segments");
    segments
}

/// The first position of the segment `path`, from its name.
fn first_position(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn args<'a>(data: &'a Path, nats: &'a str) -> Vec<&'a str> {
    vec![
        "repair",
        "--data-dir",
        data.to_str().unwrap(),
        "--nats-url",
        nats,
    ]
}

#[test]
fn repair_restores_a_corrupted_sealed_segment_from_the_relays_copy() {
    let nats = NatsServer::start();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, 600);
    copy_with_the_relay(&data, &nats, 600);
    let before = read_log(&data);
    let verified = annals_ok(
        &["verify", "--data-dir", data.to_str().unwrap()],
        temp.path(),
    );

    // Damage two places in the middle of a sealed segment.
    let segment = sealed_segments(&data).swap_remove(1);
    let len = std::fs::metadata(&segment).unwrap().len() as usize;
    flip(&segment, &[len / 3, len / 3 + 1, 2 * len / 3]);
    annals_fails(
        &["verify", "--data-dir", data.to_str().unwrap()],
        temp.path(),
        5,
        &["corrupt log"],
    );

    let url = nats.url();
    let output = annals(&args(&data, &url), temp.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(
        report.matches("replaced positions").count() >= 2,
        "{report}"
    );
    assert!(report.contains("verified: ok: 600 events"), "{report}");
    assert_eq!(
        annals_ok(
            &["verify", "--data-dir", data.to_str().unwrap()],
            temp.path()
        ),
        verified,
        "the same events, the same head hash"
    );
    assert_eq!(read_log(&data), before);
    // Repaired: nothing left to do.
    let again = annals_ok(&args(&data, &url), temp.path());
    assert!(again.contains("nothing to repair"), "{again}");
}

#[test]
fn repair_refuses_a_copy_that_does_not_chain_or_lacks_the_damage_and_touches_nothing() {
    let nats = NatsServer::start();
    let url = nats.url();
    let temp = tempfile::tempdir().unwrap();

    // The copy is of another store: its first message does not chain on.
    let copied = temp.path().join("copied");
    seed(&copied, 300);
    copy_with_the_relay(&copied, &nats, 300);
    let other = temp.path().join("other");
    seed(&other, 300);
    let segment = sealed_segments(&other).swap_remove(1);
    flip(
        &segment,
        &[std::fs::metadata(&segment).unwrap().len() as usize / 2],
    );
    let damaged = std::fs::read(&segment).unwrap();
    annals_fails(
        &args(&other, &url),
        temp.path(),
        5,
        &["repair refused", "Annals-Prev-Hash"],
    );
    assert_eq!(std::fs::read(&segment).unwrap(), damaged);

    // The copy lacks the damaged positions: the log grew after the relay stopped.
    seed(&copied, 300);
    let segment = sealed_segments(&copied).pop().unwrap();
    assert!(first_position(&segment) > 300, "{}", segment.display());
    flip(
        &segment,
        &[std::fs::metadata(&segment).unwrap().len() as usize / 2],
    );
    let damaged = std::fs::read(&segment).unwrap();
    annals_fails(
        &args(&copied, &url),
        temp.path(),
        5,
        &["repair refused", "holds nothing from position"],
    );
    assert_eq!(std::fs::read(&segment).unwrap(), damaged);
}

#[test]
fn repair_of_a_sound_log_says_so_and_needs_the_directory_to_itself() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, 200);
    // Nothing damaged: the copy is never asked (no NATS listens here).
    let unused = "nats://127.0.0.1:1";
    let report = annals_ok(&args(&data, unused), temp.path());
    assert!(report.contains("nothing to repair"), "{report}");
    let missing = temp.path().join("missing");
    annals_fails(&args(&missing, unused), temp.path(), 3, &["does not exist"]);
    let _held = open_store(&data);
    annals_fails(
        &args(&data, unused),
        temp.path(),
        4,
        &[&format!("pid {}", std::process::id())],
    );
}
