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
/// repository (real appends: ids derived from command ids, times from the clock), some
/// with who caused them (principal, issuer, action, on behalf of: the identity block).
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
                metadata: eventstore::Metadata {
                    principal: (n % 2 == 0).then(|| format!("customer-{}", n % 7)),
                    issuer: (n % 2 == 0).then(|| "https://id.example".into()),
                    action: (n % 4 != 3).then(|| "orders.place".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let place = orders::Command::PlaceOrder {
                order_id: id.clone(),
                customer_id: format!("customer-{}", n % 7),
                lines: vec![orders::OrderLine {
                    sku: "apple".into(),
                    quantity: u64::from(n % 5 + 1),
                }],
                shipping_address: None,
            };
            repository.execute(&id, &place, &options).await.unwrap();
            if n % 3 == 0 {
                let cancel = orders::Command::CancelOrder {
                    reason: format!("reason {n}"),
                };
                let options = eventstore::CommandOptions {
                    command_id: uuid::Uuid::now_v7(),
                    metadata: eventstore::Metadata {
                        principal: Some("annals-fulfilment".into()),
                        issuer: Some("annals".into()),
                        action: Some("fulfilment.cancel-order".into()),
                        on_behalf_of: Some(format!("customer-{}", n % 7)),
                        ..Default::default()
                    },
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
            // Written as schema version 1, read as the current one: lines gain a currency,
            // and the order an absent shipping address.
            "payload_json": {
                "order_id": "o1",
                "customer_id": "alice",
                "lines": [{"sku": "apple", "quantity": 3, "currency": "EUR"}],
                "shipping_address": null
            },
            "payload_schema": "urn:annals:schema:event:OrderPlaced:3",
            "last_in_commit": true
        })
    );
    assert_eq!(lines[10]["last_in_commit"], false, "o2's two-event append");
    // Who caused an event: new members, present only when set (the line above, without
    // them, is exactly the format before they existed, and such lines still import).
    assert_eq!(lines[13]["type"], "OrderPlaced");
    assert_eq!(lines[13]["metadata"]["principal"], "customer-0");
    assert_eq!(lines[13]["metadata"]["issuer"], "https://id.example");
    assert_eq!(lines[13]["metadata"]["action"], "orders.place");
    assert!(lines[13]["metadata"].get("on_behalf_of").is_none());
    assert_eq!(lines[14]["type"], "OrderCancelled");
    assert_eq!(lines[14]["metadata"]["on_behalf_of"], "customer-0");

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
    let (file, text) = export_of(&data, temp.path());
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

/// What is in `dir`, by name, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An export of the seeded log, its text, and the temporary directory holding both.
fn seeded_export() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let (temp, data) = crate::support::seeded();
    let (file, text) = export_of(&data, temp.path());
    (temp, file, text)
}

/// Exports the log of `data` to `annals.ndjson` in `dir`; the file and its text.
fn export_of(data: &std::path::Path, dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let file = dir.join("annals.ndjson");
    annals_ok(
        &[
            "export",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            file.to_str().unwrap(),
        ],
        dir,
    );
    let text = std::fs::read_to_string(&file).unwrap();
    (file, text)
}

#[test]
fn an_import_whose_head_hash_differs_leaves_no_directory_and_no_temporary_one_behind() {
    let (temp, _, text) = seeded_export();
    let work = temp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let changed = work.join("changed.ndjson");
    std::fs::write(
        &changed,
        text.replace("\"payload\":\"deadbeef\"", "\"payload\":\"deadbeee\""),
    )
    .unwrap();
    let before = entries(&work);

    // Into a directory that does not exist: it still does not.
    let missing = work.join("copy");
    annals_fails(
        &[
            "import",
            changed.to_str().unwrap(),
            "--data-dir",
            missing.to_str().unwrap(),
        ],
        temp.path(),
        5,
        &["head hash"],
    );
    assert!(!missing.exists(), "the failed import left {missing:?}");
    assert_eq!(entries(&work), before, "nothing left beside the target");

    // Into an existing empty directory: it stays empty.
    let empty = work.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let before = entries(&work);
    annals_fails(
        &[
            "import",
            changed.to_str().unwrap(),
            "--data-dir",
            empty.to_str().unwrap(),
        ],
        temp.path(),
        5,
        &["head hash"],
    );
    assert_eq!(
        entries(&empty),
        Vec::<String>::new(),
        "the target stays empty"
    );
    assert_eq!(entries(&work), before, "nothing left beside the target");

    // The unchanged file goes into the same empty directory.
    let original = work.join("original.ndjson");
    std::fs::write(&original, &text).unwrap();
    let before = entries(&work);
    annals_ok(
        &[
            "import",
            original.to_str().unwrap(),
            "--data-dir",
            empty.to_str().unwrap(),
        ],
        temp.path(),
    );
    assert_eq!(read_log(&empty).len(), 12);
    assert_eq!(entries(&work), before, "no temporary directory left");
}

/// An export header announcing `events` events, then `body`.
fn with_header(text: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = text.lines().next().unwrap().as_bytes().to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    bytes
}

/// A line of 64 MiB: far beyond the longest line the largest event can make.
const LONG_LINE_BYTES: usize = 64 << 20;

#[test]
fn an_over_long_line_is_refused_naming_its_line_without_reading_it_whole() {
    let (temp, _, text) = seeded_export();
    let events: Vec<&str> = text.lines().skip(1).take(2).collect();
    let mut body = format!("{}\n{}\n", events[0], events[1]).into_bytes();
    body.extend(std::iter::repeat_n(b'x', LONG_LINE_BYTES));
    body.push(b'\n');
    let long = temp.path().join("long.ndjson");
    std::fs::write(&long, with_header(&text, &body)).unwrap();
    let target = temp.path().join("copy");
    annals_fails(
        &[
            "import",
            long.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        temp.path(),
        5,
        &["line 4", "longer than"],
    );
    assert!(!target.exists());
}

/// The peak resident memory of a running process, in bytes (Linux's `VmHWM`).
fn peak_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn an_over_long_line_on_standard_input_does_not_use_memory_proportional_to_it() {
    use std::io::Write;
    use std::process::Stdio;

    let (temp, _, text) = seeded_export();
    let target = temp.path().join("copy");
    let mut command = test_support::annals_command();
    command
        .args(["import", "-", "--data-dir", target.to_str().unwrap()])
        .current_dir(temp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = test_support::spawn(&mut command).unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // The line never ends while the child runs: a reader that keeps the whole line holds
    // all of it now, while one with a bounded buffer has already given up. Writes fail
    // with a broken pipe once it has.
    let _ = stdin.write_all(&with_header(&text, b""));
    let chunk = vec![b'x'; 1 << 20];
    let mut peak = 0;
    for _ in 0..LONG_LINE_BYTES / chunk.len() {
        if stdin.write_all(&chunk).is_err() {
            break;
        }
    }
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        peak = peak.max(peak_memory(pid).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        peak < 32 << 20,
        "the import held {} MiB for a {} MiB line",
        peak >> 20,
        LONG_LINE_BYTES >> 20
    );
    assert_eq!(output.status.code(), Some(5), "{message}");
    assert!(
        message.contains("line 2") && message.contains("longer than"),
        "{message}"
    );
    assert!(!target.exists());
}

#[test]
fn a_commit_that_never_ends_is_refused_naming_the_line_where_it_started() {
    let (temp, _, text) = seeded_export();
    let events: Vec<&str> = text.lines().skip(1).collect();
    // The first two events as they are, then one append of a stream that never ends:
    // each event is cut from its commit (`last_in_commit` false) and continues the same
    // stream, with payloads large enough that the append soon outgrows the largest one
    // the store accepts.
    let mut body = format!("{}\n{}\n", events[0], events[1]);
    let first: serde_json::Value = serde_json::from_str(events[2]).unwrap();
    let payload = "ab".repeat(64 << 10);
    for n in 0..200u64 {
        let mut event = first.clone();
        event["position"] = (2 + n).into();
        event["version"] = (first["version"].as_u64().unwrap() + n).into();
        event["id"] = uuid::Uuid::now_v7().to_string().into();
        event["payload"] = payload.clone().into();
        event["last_in_commit"] = false.into();
        body.push_str(&event.to_string());
        body.push('\n');
    }
    let endless = temp.path().join("endless.ndjson");
    std::fs::write(&endless, with_header(&text, body.as_bytes())).unwrap();
    let target = temp.path().join("copy");
    annals_fails(
        &[
            "import",
            endless.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        temp.path(),
        5,
        &["line 4", "never ends"],
    );
    assert!(!target.exists());
}
