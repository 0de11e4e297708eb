//! `annals export` and `annals import`: a lossless round trip.

use std::path::Path;

use eventstore::{Position, RecordedEvent, Repository};
use serde_json::Value;

use crate::support::{annals_fails, annals_ok, history, open_store, seed_history};

/// Every event of the log in `dir`.
fn read_log(dir: &Path) -> Vec<RecordedEvent> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(dir);
        let events = store.read_all(Position(0), usize::MAX).unwrap();
        store.close().await;
        events
    })
}

/// The known history, then orders placed and cancelled through the aggregate
/// repository (real appends: ids derived from command ids, times from the clock).
fn seed_history_and_commands(dir: &Path) {
    seed_history(dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(dir);
        let repository = Repository::<orders::Order>::new(store.clone());
        for n in 0..150u32 {
            let id = format!("r{n}");
            let options = eventstore::CommandOptions {
                command_id: uuid::Uuid::now_v7(),
                ..Default::default()
            };
            let place = orders::Command::PlaceOrder {
                order_id: id.clone(),
                customer_id: format!("customer-{}", n % 7),
                lines: vec![orders::OrderLine {
                    sku: "apple".into(),
                    quantity: u64::from(n % 5 + 1),
                }],
            };
            repository.execute(&id, &place, &options).await.unwrap();
            if n % 3 == 0 {
                let cancel = orders::Command::CancelOrder {
                    reason: format!("reason {n}"),
                };
                let options = eventstore::CommandOptions {
                    command_id: uuid::Uuid::now_v7(),
                    ..Default::default()
                };
                repository.execute(&id, &cancel, &options).await.unwrap();
            }
        }
        store.close().await;
    });
}

#[test]
fn export_then_import_reproduces_the_log_event_by_event_and_its_hash_chain() {
    let temp = tempfile::tempdir().unwrap();
    let (source, copy) = (temp.path().join("source"), temp.path().join("copy"));
    seed_history_and_commands(&source);
    let file = temp.path().join("annals.ndjson");
    let exported: Value = serde_json::from_str(&annals_ok(
        &[
            "export",
            "--data-dir",
            source.to_str().unwrap(),
            "--to",
            file.to_str().unwrap(),
            "--json",
        ],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(exported["events"], 12 + 200);
    assert!(!temp.path().join("annals.ndjson.partial").exists());

    // The documented format: a header line, then one line per event.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = crate::support::ndjson(&text);
    assert_eq!(lines.len(), 1 + 212);
    assert_eq!(lines[0]["format"], "annals-export");
    assert_eq!(lines[0]["version"], 1);
    assert_eq!(lines[0]["events"], 212);
    assert_eq!(lines[0]["head_hash"], exported["head_hash"]);
    assert_eq!(
        lines[5],
        serde_json::json!({
            "position": 4,
            "id": crate::support::event_id(4).to_string(),
            "stream": "order-o1",
            "version": 0,
            "type": "OrderPlaced",
            "schema_version": 1,
            "recorded_at": "2026-11-05T10:04:00.000000Z",
            "metadata": {
                "correlation_id": crate::support::CORRELATION,
                "causation_id": null,
                "traceparent": null,
                "principal": "alice",
                "command_id": "0193a4e2-7c1d-7b3e-9f00-0000000000c1"
            },
            "payload": crate::support::hex(&history()[4].payload),
            "last_in_commit": true
        })
    );
    assert_eq!(lines[10]["last_in_commit"], false, "o2's two-event append");

    let imported: Value = serde_json::from_str(&annals_ok(
        &[
            "import",
            file.to_str().unwrap(),
            "--data-dir",
            copy.to_str().unwrap(),
            "--json",
        ],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(imported["events"], 212);
    assert_eq!(imported["verified"], true);

    let (original, restored) = (read_log(&source), read_log(&copy));
    assert_eq!(original.len(), 212);
    assert_eq!(restored.len(), original.len());
    for (left, right) in original.iter().zip(&restored) {
        assert_eq!(left, right, "position {}", left.position);
    }
    let verify = |dir: &Path| -> Value {
        serde_json::from_str(&annals_ok(
            &["verify", "--json", "--data-dir", dir.to_str().unwrap()],
            temp.path(),
        ))
        .unwrap()
    };
    assert_eq!(verify(&copy)["head_hash"], verify(&source)["head_hash"]);
    assert_eq!(verify(&copy)["head_hash"], exported["head_hash"]);
}

#[test]
fn import_refuses_a_damaged_truncated_or_foreign_file_and_a_non_empty_directory() {
    let (temp, data) = crate::support::seeded();
    let file = temp.path().join("annals.ndjson");
    annals_ok(
        &[
            "export",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            file.to_str().unwrap(),
        ],
        temp.path(),
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let target = |name: &str| temp.path().join(name).to_str().unwrap().to_owned();

    // Into a directory that holds events: bad usage.
    annals_fails(
        &[
            "import",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        temp.path(),
        2,
        &["already holds 12 events"],
    );
    // Truncated at a line boundary.
    let truncated = temp.path().join("truncated.ndjson");
    let keep: Vec<&str> = text.lines().take(8).collect();
    std::fs::write(&truncated, keep.join("\n") + "\n").unwrap();
    annals_fails(
        &[
            "import",
            truncated.to_str().unwrap(),
            "--data-dir",
            &target("t"),
        ],
        temp.path(),
        5,
        &["truncated"],
    );
    // A payload changed: the hash chain of the import differs from the export's.
    let changed = temp.path().join("changed.ndjson");
    std::fs::write(
        &changed,
        text.replace("\"payload\":\"deadbeef\"", "\"payload\":\"deadbeee\""),
    )
    .unwrap();
    annals_fails(
        &[
            "import",
            changed.to_str().unwrap(),
            "--data-dir",
            &target("c"),
        ],
        temp.path(),
        5,
        &["head hash"],
    );
    // A line that is not an event.
    let garbled = temp.path().join("garbled.ndjson");
    std::fs::write(
        &garbled,
        text.replacen("\"type\":\"Restocked\"", "\"type\":", 1),
    )
    .unwrap();
    annals_fails(
        &[
            "import",
            garbled.to_str().unwrap(),
            "--data-dir",
            &target("g"),
        ],
        temp.path(),
        5,
        &["line 3"],
    );
    // Not an export at all.
    let foreign = temp.path().join("foreign.ndjson");
    std::fs::write(&foreign, "{\"hello\":1}\n").unwrap();
    annals_fails(
        &[
            "import",
            foreign.to_str().unwrap(),
            "--data-dir",
            &target("f"),
        ],
        temp.path(),
        5,
        &["not an Annals export"],
    );
}
