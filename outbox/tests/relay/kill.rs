//! Kill test: a child process (`relay-child`: writers plus the relay) is killed with
//! SIGKILL at random moments while it publishes, round after round on the same data
//! directory and stream. Every other round stays down longer than the stream's duplicate
//! window, so only the relay's own resume (after the last message in the stream) can keep
//! a publish that landed before the kill from landing twice. At the end an in-process
//! relay drains the rest, and the copy must hold every event exactly once, in order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use test_support::Random;

use crate::common::{
    NatsServer, SPAWNING, assert_exact_copy, open_store, read_copy, relay_config, start_relay,
    whole_log, within,
};

const ROUNDS: u64 = 6;
const STREAM: &str = "KILLED";
/// The stream's duplicate window; the long downtimes exceed it.
const DUPLICATE_WINDOW: Duration = Duration::from_millis(1000);

fn spawn_child(dir: &std::path::Path, url: &str) -> Child {
    let _spawning = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    Command::new(env!("CARGO_BIN_EXE_relay-child"))
        .arg(dir)
        .arg(url)
        .arg(STREAM)
        .arg(DUPLICATE_WINDOW.as_millis().to_string())
        .arg("4")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn relay-child")
}

/// The number of messages in the stream (0 before it exists).
async fn stream_messages(jetstream: &jetstream::Context) -> u64 {
    match jetstream.get_stream(STREAM).await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_at_random_moments_neither_duplicates_nor_loses() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The kill moments, from a seed printed so that a failing run can be repeated
    // (ANNALS_TEST_SEED).
    let mut random = Random::seeded("relay kill test");
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = jetstream::new(client);
    for round in 0..ROUNDS {
        let before = stream_messages(&jetstream).await;
        let mut child = spawn_child(dir.path(), &server.url());
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the child's first line");
        assert_eq!(
            line.trim(),
            "relaying",
            "relay-child did not start: {line:?}"
        );
        // Wait until this round publishes, then kill at a random moment within it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while stream_messages(&jetstream).await <= before {
            assert!(
                Instant::now() < deadline,
                "round {round}: the relay published nothing"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(random.below(600))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the child");
        if round % 2 == 1 {
            // Down for longer than the duplicate window: NATS has forgotten the ids.
            tokio::time::sleep(DUPLICATE_WINDOW + Duration::from_millis(300)).await;
        }
    }

    // Drain the rest in-process, with the same stream settings.
    let store = open_store(dir.path());
    let config = outbox::RelayConfig {
        duplicate_window: DUPLICATE_WINDOW,
        ..relay_config(&server.url(), STREAM)
    };
    let mut relay = start_relay(&store, config);
    relay.wait_drained(&store, Duration::from_secs(30)).await;
    relay.stop().await;
    let log = whole_log(&store);
    let copy = within(
        Duration::from_secs(30),
        "reading the copy",
        read_copy(&server.url(), STREAM),
    )
    .await;
    eprintln!(
        "kill test: {} events in the log, {} messages in the copy",
        log.len(),
        copy.len()
    );
    assert_exact_copy(&copy, &log);
    store.verify().expect("the log verifies");
}
