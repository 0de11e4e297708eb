//! Crash test: a child process (`crash-writer`) appends from 16 concurrent writers and is
//! killed with SIGKILL at a random moment, round after round on the same data directory.
//! After each kill the store must open with every acknowledged append in place (same id,
//! stream, version and position), no append partly visible, positions and versions
//! gap-free, and `verify` passing. The same with the log on a JetStream stream of 3
//! replicas on a real 3-node cluster, where NATS servers are killed too.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventstore::{Direction, EventId, EventStore, Position, RecordedEvent, StoreConfig, Version};
use tempfile::TempDir;
use test_support::Random;
use uuid::Uuid;

use crate::common::{assert_log_is_contiguous, try_open};

const ROUNDS: usize = 30;

/// The child's configuration (see `src/bin/crash_writer.rs`).
fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 256 << 10,
        ..StoreConfig::default()
    }
}

/// One acknowledged append, as the child printed it.
#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    first_version: u64,
    last_version: u64,
    first_position: u64,
    ids: Vec<EventId>,
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 5, "malformed line from the child: {line:?}");
    let number = |field: &str| -> u64 {
        field
            .parse()
            .unwrap_or_else(|_| panic!("bad number in {line:?}"))
    };
    Ack {
        stream: fields[0].to_owned(),
        first_version: number(fields[1]),
        last_version: number(fields[2]),
        first_position: number(fields[3]),
        ids: fields[4]
            .split(',')
            .map(|id| id.parse().unwrap_or_else(|_| panic!("bad id in {line:?}")))
            .collect(),
    }
}

/// Runs the child on `dir` until `kill_after` says so, kills it with SIGKILL and returns
/// the acknowledgements it printed in full.
fn run_child(dir: &Path, wait_for_first_ack: bool, delay: Duration) -> Vec<Ack> {
    run_child_with(dir, &[], wait_for_first_ack, delay, || {})
}

/// [`run_child`] with more arguments for the child, and `meanwhile` run after the first
/// acknowledgement, before the delay.
fn run_child_with(
    dir: &Path,
    args: &[String],
    wait_for_first_ack: bool,
    delay: Duration,
    meanwhile: impl FnOnce(),
) -> Vec<Ack> {
    let mut child = test_support::spawn(
        Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("start crash-writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line cut by the kill has no newline: it was never fully reported.
                Ok(_) if line.ends_with('\n') => {
                    let _ = lines_tx.send(line.trim_end().to_owned());
                }
                Ok(_) => return,
            }
        }
    });
    let mut acks = Vec::new();
    if wait_for_first_ack {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => acks.push(parse_ack(&line)),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait for crash-writer");
                panic!("crash-writer ended or acknowledged nothing within 60 s (status {status})");
            }
        }
    }
    meanwhile();
    // The crash moment: a sleep is the point here, not a way to wait for something.
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL crash-writer");
    let status = child.wait().expect("wait for crash-writer");
    reader.join().expect("stdout reader");
    assert_eq!(
        status.signal(),
        Some(9),
        "crash-writer must die by SIGKILL, not end by itself ({status})"
    );
    acks.extend(lines.try_iter().map(|line| parse_ack(&line)));
    acks
}

/// The checks after each crash.
fn check_after_crash(store: &EventStore, acks: &[Ack], this_round: &[Ack]) -> usize {
    let log: Vec<RecordedEvent> = store
        .read_all(Position(0), usize::MAX)
        .expect("read the log");
    assert_log_is_contiguous(&log);
    let report = store.verify().expect("verify after a crash");
    assert_eq!(report.events, log.len() as u64);
    assert_eq!(store.next_position(), Position(log.len() as u64));

    // Every acknowledged append, of every round so far, is where it was acknowledged.
    for ack in acks {
        assert_eq!(
            ack.last_version - ack.first_version + 1,
            ack.ids.len() as u64,
            "{ack:?}"
        );
        for (i, id) in ack.ids.iter().enumerate() {
            let position = (ack.first_position + i as u64) as usize;
            let Some(event) = log.get(position) else {
                panic!(
                    "acknowledged {ack:?} is lost: the log ends at {}",
                    log.len()
                );
            };
            assert_eq!(event.id, *id, "acknowledged event at position {position}");
            assert_eq!(event.stream_id.as_str(), ack.stream);
            assert_eq!(event.version, Version(ack.first_version + i as u64));
        }
    }

    // Every append in the log, acknowledged or not, is complete: its events carry
    // `<commit> <index> <count>` and must all be there, in order, adjacent.
    let mut commits: BTreeMap<Uuid, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in &log {
        let commit = event.metadata.correlation_id.expect("a commit id");
        commits.entry(commit).or_default().push(event);
    }
    for (commit, events) in &commits {
        let count = events.len();
        for (i, event) in events.iter().enumerate() {
            let payload = std::str::from_utf8(&event.payload).expect("text payload");
            assert_eq!(
                payload,
                format!("{commit} {i} {count}"),
                "commit {commit} is incomplete or out of order"
            );
            assert_eq!(event.position.0, events[0].position.0 + i as u64);
            assert_eq!(event.version.0, events[0].version.0 + i as u64);
            assert_eq!(event.stream_id, events[0].stream_id);
            assert_eq!(event.last_in_commit, i + 1 == count);
        }
    }

    // The index agrees with the log after recovery.
    let mut by_stream: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for event in &log {
        by_stream
            .entry(event.stream_id.as_str())
            .or_default()
            .push(event);
    }
    let streams = store.streams(Some("crash")).expect("list streams");
    assert_eq!(streams.len(), by_stream.len());
    for (stream, head) in streams {
        let expected = &by_stream[stream.as_str()];
        assert_eq!(head, expected.last().unwrap().version);
        // The newest events, which the index caught up on after the kill (reading
        // whole streams every round would make the rounds ever slower).
        let tail = &expected[expected.len().saturating_sub(300)..];
        let read = store
            .read_stream(&stream, tail[0].version, Direction::Forward, usize::MAX)
            .expect("read a stream");
        assert_eq!(read.len(), tail.len(), "{stream}");
        assert!(read.iter().zip(tail).all(|(a, b)| a == *b), "{stream}");
    }
    for ack in this_round.iter().step_by(7) {
        let found = store
            .read_event(&ack.ids[0])
            .expect("read by id")
            .expect("an acknowledged id is found");
        assert_eq!(found.position, Position(ack.first_position));
    }
    log.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_and_no_append_is_half_there() {
    // The kill times, from a seed printed so that a failing run can be repeated.
    let mut random = Random::seeded("crash test");
    let dir = TempDir::new().unwrap();
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut events = 0;
    for round in 0..ROUNDS {
        // Most rounds kill the child 20-150 ms after its first acknowledgement; every
        // fifth kills it 5-65 ms after it starts, perhaps while it is still recovering.
        let early = round % 5 == 4;
        let delay = if early {
            Duration::from_millis(5 + random.below(61))
        } else {
            Duration::from_millis(20 + random.below(131))
        };
        let round_acks = run_child(dir.path(), !early, delay);
        acks.extend(round_acks.iter().cloned());

        let store = try_open(dir.path(), config())
            .unwrap_or_else(|error| panic!("round {round}: reopening after the kill: {error}"));
        let now = check_after_crash(&store, &acks, &round_acks);
        assert!(
            now >= events,
            "round {round}: the log shrank from {events} to {now}"
        );
        events = now;
        store.close().await;
        drop(store);
    }
    assert!(
        acks.len() > ROUNDS,
        "the child acknowledged too little to test anything ({} appends)",
        acks.len()
    );
    eprintln!(
        "crash test: {ROUNDS} kills, {} acknowledged appends, {events} events, {:?}",
        acks.len(),
        started.elapsed()
    );
}

/// The crash test with the log on JetStream: the node (the child) is killed round after
/// round, and every third round one NATS server too (restarted after the round); the
/// restarted node's copy holds every acknowledged append where it was acknowledged, and a
/// new node derives the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_acknowledged_appends_survive_sigkill_of_the_node_and_of_a_nats_server() {
    const ROUNDS: usize = 12;
    let mut random = Random::seeded("jetstream crash test");
    let mut cluster = test_support::NatsCluster::start();
    let log = crate::common::replicated(&cluster.urls(), 3);
    let args = [
        cluster.urls(),
        log.stream.clone(),
        log.subject_prefix.clone(),
    ];
    let dir = TempDir::new().unwrap();
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut events = 0;
    for round in 0..ROUNDS {
        let early = round % 5 == 4;
        let delay = if early {
            Duration::from_millis(5 + random.below(61))
        } else {
            Duration::from_millis(50 + random.below(200))
        };
        let victim = (round % 3 == 2).then(|| random.below(3) as usize);
        let round_acks = run_child_with(dir.path(), &args, !early, delay, || {
            if let Some(victim) = victim {
                cluster.kill(victim);
            }
        });
        if let Some(victim) = victim {
            cluster.restart(victim);
        }
        acks.extend(round_acks.iter().cloned());
        let store = crate::common::open_replicated(dir.path(), config(), &log).await;
        let now = check_after_crash(&store, &acks, &round_acks);
        assert!(
            now >= events,
            "round {round}: the log shrank from {events} to {now}"
        );
        events = now;
        store.close().await;
        drop(store);
    }
    assert!(
        acks.len() > ROUNDS,
        "the child acknowledged too little to test anything ({} appends)",
        acks.len()
    );
    let other = TempDir::new().unwrap();
    let node = crate::common::open_replicated(other.path(), config(), &log).await;
    let again = crate::common::open_replicated(dir.path(), config(), &log).await;
    assert_eq!(
        node.read_all(Position(0), usize::MAX).unwrap(),
        again.read_all(Position(0), usize::MAX).unwrap(),
        "a new node derives the same log"
    );
    node.close().await;
    again.close().await;
    eprintln!(
        "jetstream crash test: {ROUNDS} kills, {} acknowledged appends, {events} events, {:?}",
        acks.len(),
        started.elapsed()
    );
}

/// A node killed right after its copy applied its first commits opens again: an empty
/// copy has its follower's mark from the start, so a copy holding events is never
/// taken for a log of its own (before, the first mark could be lost with the index's
/// unflushed writes while the copy's events were synced, and the node refused to open:
/// "holds a log but no mark").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_a_node_killed_at_its_first_commits_opens_again() {
    let cluster = test_support::NatsCluster::start();
    let log = crate::common::replicated(&cluster.urls(), 3);
    let args = [
        cluster.urls(),
        log.stream.clone(),
        log.subject_prefix.clone(),
    ];
    for round in 0..3 {
        let dir = TempDir::new().unwrap();
        let acks = run_child_with(dir.path(), &args, true, Duration::ZERO, || {});
        let store = crate::common::open_replicated(dir.path(), config(), &log).await;
        check_after_crash(&store, &acks, &acks);
        assert!(!acks.is_empty(), "round {round}: nothing acknowledged");
        store.close().await;
    }
}
