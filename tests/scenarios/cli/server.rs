//! The read-only commands through a real `annals serve` (`--server URL`), while the data
//! directory is locked by it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;
use test_support::AnnalsServer;

use crate::support::{annals_fails, annals_ok, event_id, golden, ndjson, seeded};

/// A real `annals serve` over `data`. The saga is off: the server must not act on the
/// seeded orders the tests compare against.
fn serve(data: &std::path::Path) -> AnnalsServer {
    AnnalsServer::start_in(data, &["--no-saga"])
}

#[test]
fn inspect_and_replay_through_a_running_server_match_the_offline_output() {
    let (temp, data) = seeded();
    let server = serve(&data);
    let url = server.url();
    let url = url.as_str();
    let dir = data.to_str().unwrap();

    // Offline, the directory is held: the message says what to do.
    annals_fails(
        &["inspect", "streams", "--data-dir", dir],
        temp.path(),
        4,
        &[&format!("pid {}", server.pid()), "--server URL"],
    );

    // Through the server: the same tables as offline.
    golden(
        "inspect_streams.txt",
        &annals_ok(&["inspect", "streams", "--server", url], temp.path()),
    );
    golden(
        "inspect_stream_stock_apple.txt",
        &annals_ok(
            &["inspect", "stream", "stock-apple", "--server", url],
            temp.path(),
        ),
    );
    golden(
        "inspect_log.txt",
        &annals_ok(
            &[
                "inspect", "log", "--from", "3", "--limit", "9", "--server", url,
            ],
            temp.path(),
        ),
    );
    golden(
        "inspect_event.txt",
        &annals_ok(
            &[
                "inspect",
                "event",
                &event_id(4).to_string(),
                "--server",
                url,
            ],
            temp.path(),
        ),
    );
    golden(
        "replay_order_as_of.txt",
        &annals_ok(
            &[
                "replay",
                "stream",
                "order-o1",
                "--as-of",
                "2026-11-05T10:05:00Z",
                "--events",
                "--server",
                url,
            ],
            temp.path(),
        ),
    );
    let orders = ndjson(&annals_ok(
        &[
            "inspect",
            "streams",
            "--category",
            "order",
            "--json",
            "--server",
            url,
        ],
        temp.path(),
    ));
    assert_eq!(orders.len(), 2);
    let replayed: Value = serde_json::from_str(&annals_ok(
        &[
            "replay",
            "stream",
            "stock-apple",
            "--to-version",
            "2",
            "--json",
            "--server",
            url,
        ],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(replayed["state"]["reserved"], 3);
    assert_eq!(replayed["head_version"], 3);

    // Errors through the server keep their codes.
    annals_fails(
        &["replay", "stream", "order-nope", "--server", url],
        temp.path(),
        7,
        &["order-nope has no events"],
    );
    annals_fails(
        &[
            "inspect",
            "event",
            &event_id(99).to_string(),
            "--server",
            url,
        ],
        temp.path(),
        7,
        &["no event has the id"],
    );
}

#[test]
fn tail_through_a_server_prints_the_backlog_then_new_events_live() {
    let (_temp, data) = seeded();
    let server = serve(&data);
    let mut tail = test_support::annals_command();
    tail.args([
        "inspect", "tail", "--from", "0", "--limit", "13", "--json", "--server",
    ])
    .arg(server.url())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut tail = test_support::spawn(&mut tail).unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    // The twelve events already in the log: the tail is connected and caught up.
    for position in 0..12u64 {
        let line = lines.next().expect("a line").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["position"], position);
    }
    // A new event, written through the API, arrives live; then the limit ends the tail.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "{}/api/v1/inventory/skus/apple/restock",
                server.url()
            ))
            .json(&serde_json::json!({"quantity": 5}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
    let line = lines.next().expect("the live event").unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["position"], 12);
    assert_eq!(event["stream"], "stock-apple");
    assert_eq!(event["payload"], serde_json::json!({"quantity": 5}));
    assert!(lines.next().is_none(), "the tail stops after --limit");
    assert!(tail.wait().unwrap().success());
}
