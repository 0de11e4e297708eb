//! `annals replay stream` against the known history, and `annals replay all`.

use eventstore::Aggregate;
use serde_json::Value;

use crate::support::{annals_ok, golden, history, seeded};

/// The read models every server keeps, in the order they are listed.
const KEPT: [&str; 6] = [
    "orders",
    "inventory",
    "accounts",
    "sales",
    "customers",
    "personal_data",
];

/// The state of `A` folded, in the test, from the known history's events of `stream`
/// that `keep` admits: what the CLI must print.
fn expected<A: Aggregate>(
    stream: &str,
    keep: impl Fn(&eventstore::RecordedEvent) -> bool,
) -> Value {
    let state = history()
        .iter()
        .filter(|event| event.stream_id.as_str() == stream && keep(event))
        .fold(A::default(), |state, event| {
            state.evolve(&A::decode_event(event.schema_version, &event.payload).unwrap())
        });
    serde_json::to_value(state).unwrap()
}

fn replay_json(args: &[&str], cwd: &std::path::Path) -> Value {
    let mut all = vec!["replay", "stream"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&annals_ok(&all, cwd)).unwrap()
}

#[test]
fn at_a_version_the_state_is_the_fold_of_the_events_up_to_it() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    for version in 0..=3u64 {
        let replayed = replay_json(
            &[
                "stock-apple",
                "--to-version",
                &version.to_string(),
                "--data-dir",
                dir,
            ],
            temp.path(),
        );
        assert_eq!(replayed["version"], version);
        assert_eq!(replayed["head_version"], 3);
        assert_eq!(replayed["events_applied"], version + 1);
        assert_eq!(
            replayed["state"],
            expected::<inventory::Stock>("stock-apple", |e| e.version.0 <= version),
            "stock-apple at version {version}"
        );
    }
    // Spelled out once: after the reservation, 3 of the 10 apples are held.
    let reserved = replay_json(
        &["stock-apple", "--to-version", "2", "--data-dir", dir],
        temp.path(),
    );
    assert_eq!(reserved["state"]["on_hand"], 10);
    assert_eq!(reserved["state"]["reserved"], 3);
    assert!(reserved.get("events").is_none(), "events only on request");
    let now = replay_json(&["stock-apple", "--data-dir", dir], temp.path());
    assert_eq!(now["state"]["on_hand"], 7);
    assert_eq!(now["state"]["reserved"], 0);
}

#[test]
fn at_a_timestamp_the_state_is_what_was_recorded_by_then() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    // Order o1 was placed at 10:04 and confirmed at 10:07.
    let at_1005 = replay_json(
        &[
            "order-o1",
            "--as-of",
            "2026-11-05T10:05:00Z",
            "--events",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    assert_eq!(at_1005["version"], 0);
    assert_eq!(at_1005["state"]["status"], "Pending");
    assert_eq!(at_1005["events"].as_array().unwrap().len(), 1);
    assert_eq!(at_1005["events"][0]["type"], "OrderPlaced");
    assert_eq!(
        at_1005["state"],
        expected::<orders::Order>("order-o1", |e| e.position.0 <= 5)
    );
    // The same moment in another offset, and an offset-less UTC time.
    let in_paris = replay_json(
        &[
            "order-o1",
            "--as-of",
            "2026-11-05T11:05:00+01:00",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    assert_eq!(in_paris["version"], 0);
    let exact = replay_json(
        &["order-o1", "--as-of", "2026-11-05 10:07", "--data-dir", dir],
        temp.path(),
    );
    assert_eq!(
        exact["version"], 1,
        "an event recorded at the moment itself counts"
    );
    assert_eq!(exact["state"]["status"], "Confirmed");
    assert_eq!(exact["state"]["total"], 360);
    // Before its first event the order did not exist.
    let before = replay_json(
        &[
            "order-o1",
            "--as-of",
            "2026-11-05T10:03:59Z",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    assert_eq!(before["version"], Value::Null);
    assert_eq!(before["events_applied"], 0);
    assert_eq!(
        before["state"],
        serde_json::to_value(orders::Order::default()).unwrap()
    );
}

#[test]
fn at_a_log_position_and_for_every_aggregate() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let charged = replay_json(
        &["account-alice", "--to-position", "6", "--data-dir", dir],
        temp.path(),
    );
    assert_eq!(charged["version"], 2);
    assert_eq!(charged["position"], 6);
    assert_eq!(charged["recorded_at"], "2026-11-05T10:06:00.000000Z");
    assert_eq!(charged["state"]["balance"], 4640);
    assert_eq!(
        charged["state"],
        expected::<payments::Account>("account-alice", |e| e.position.0 <= 6)
    );
    let cancelled = replay_json(&["order-o2", "--data-dir", dir], temp.path());
    assert_eq!(cancelled["state"]["status"], "Cancelled");
    assert_eq!(cancelled["state"]["cancel_reason"], "changed my mind");
}

#[test]
fn the_human_format_names_the_cut_lists_the_events_and_prints_the_state() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let text = annals_ok(
        &[
            "replay",
            "stream",
            "order-o1",
            "--as-of",
            "2026-11-05T10:05:00Z",
            "--events",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    golden("replay_order_as_of.txt", &text);
    let before = annals_ok(
        &[
            "replay",
            "stream",
            "order-o1",
            "--to-position",
            "3",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    golden("replay_order_before.txt", &before);
}

#[test]
fn all_rebuilds_the_index_and_the_read_models_and_reports_them() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let report: Value = serde_json::from_str(&annals_ok(
        &[
            "replay",
            "all",
            "--data-dir",
            dir,
            "--no-progress",
            "--json",
        ],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(report["events"], 12);
    assert_eq!(report["streams"], 5);
    assert!(report["log_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["sagas"]["instances"], 0);
    assert_eq!(
        report["sagas"]["checkpoint"], 12,
        "no saga waits: the end of the log"
    );
    let names: Vec<&str> = report["read_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["name"].as_str().unwrap())
        .collect();
    // The six every server keeps: `correlations` only with `annals serve --correlations`.
    assert_eq!(names, KEPT);
    for model in report["read_models"].as_array().unwrap() {
        assert_eq!(model["checkpoint"], 12, "{model}");
    }
    // The rebuilt index serves reads, and the read models are active and caught up.
    let streams = annals_ok(&["inspect", "streams", "--data-dir", dir], temp.path());
    golden("inspect_streams.txt", &streams);
    let list: Value = serde_json::from_str(&annals_ok(
        &["projections", "list", "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    for status in list.as_array().unwrap() {
        assert_eq!(status["checkpoint"], 12, "{status}");
        assert_eq!(status["lag"], 0, "{status}");
    }
    let listed = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|status| status["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&list), KEPT);
    // `correlations` is rebuilt by name; once the directory holds it, it is listed.
    let rebuilt: Value = serde_json::from_str(&annals_ok(
        &[
            "projections",
            "rebuild",
            "correlations",
            "--json",
            "--data-dir",
            dir,
        ],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(rebuilt["rebuilt"][0]["name"], "correlations", "{rebuilt}");
    assert_eq!(rebuilt["rebuilt"][0]["checkpoint"], 12, "{rebuilt}");
    let list: Value = serde_json::from_str(&annals_ok(
        &["projections", "list", "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(listed(&list), [&KEPT[..], &["correlations"]].concat());
    // And `rebuild all` rebuilds it with the six.
    let all: Value = serde_json::from_str(&annals_ok(
        &["projections", "rebuild", "all", "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    let rebuilt: Vec<&str> = all["rebuilt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["name"].as_str().unwrap())
        .collect();
    assert_eq!(rebuilt, [&KEPT[..], &["correlations"]].concat());
    // The human report says what was rebuilt.
    let text = annals_ok(&["replay", "all", "--data-dir", dir], temp.path());
    assert!(text.contains("index: 12 events in 5 streams"), "{text}");
    assert!(text.contains("read models: orders v"), "{text}");
    assert!(text.contains("sagas: 0 fulfilment instances"), "{text}");
    // And the log is untouched.
    let verified: Value = serde_json::from_str(&annals_ok(
        &["verify", "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(verified["events"], 12);
}
