//! `annals inspect` over a data directory holding the known history: golden tables,
//! parsed NDJSON; and who caused an event (principal, issuer, action, on behalf of).

use crate::support::{annals_ok, event_id, golden, history, ndjson, seeded};

#[test]
fn streams_lists_every_stream_with_its_last_version() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let table = annals_ok(&["inspect", "streams", "--data-dir", dir], temp.path());
    golden("inspect_streams.txt", &table);

    let orders = annals_ok(
        &[
            "inspect",
            "streams",
            "--category",
            "order",
            "--json",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    assert_eq!(
        ndjson(&orders),
        vec![
            serde_json::json!({"stream": "order-o1", "last_version": 1}),
            serde_json::json!({"stream": "order-o2", "last_version": 1}),
        ]
    );
}

#[test]
fn stream_shows_its_events_with_decoded_payloads() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let table = annals_ok(
        &["inspect", "stream", "stock-apple", "--data-dir", dir],
        temp.path(),
    );
    golden("inspect_stream_stock_apple.txt", &table);

    let page = annals_ok(
        &[
            "inspect",
            "stream",
            "stock-apple",
            "--from",
            "1",
            "--limit",
            "2",
            "--json",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    let events = ndjson(&page);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[0]["position"], 1);
    assert_eq!(events[0]["payload"], serde_json::json!({"quantity": 10}));
    assert_eq!(events[1]["type"], "StockReserved");
    assert_eq!(events[1]["recorded_at"], "2026-11-05T10:05:00.000000Z");
}

#[test]
fn log_pages_through_every_stream_in_position_order() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let table = annals_ok(
        &[
            "inspect",
            "log",
            "--from",
            "3",
            "--limit",
            "9",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    golden("inspect_log.txt", &table);

    let all = ndjson(&annals_ok(
        &["inspect", "log", "--json", "--data-dir", dir],
        temp.path(),
    ));
    let known = history();
    assert_eq!(all.len(), known.len());
    for (line, event) in all.iter().zip(&known) {
        assert_eq!(line["position"], event.position.0);
        assert_eq!(line["id"], event.id.to_string());
        assert_eq!(line["stream"], event.stream_id.as_str());
        assert_eq!(line["type"], event.event_type.as_str());
    }
    assert_eq!(all[11]["payload_encoding"], "hex");
    assert_eq!(all[11]["payload"], "deadbeef");
    let tail = ndjson(&annals_ok(
        &[
            "inspect",
            "log",
            "--from",
            "10",
            "--limit",
            "100",
            "--json",
            "--data-dir",
            dir,
        ],
        temp.path(),
    ));
    assert_eq!(tail.len(), 2, "the log ends at position 11");
}

#[test]
fn event_shows_envelope_metadata_and_payload() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let id = event_id(4).to_string();
    let details = annals_ok(&["inspect", "event", &id, "--data-dir", dir], temp.path());
    golden("inspect_event.txt", &details);

    let json: serde_json::Value = serde_json::from_str(&annals_ok(
        &["inspect", "event", &id, "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(json["stream"], "order-o1");
    assert_eq!(
        json["metadata"]["correlation_id"],
        crate::support::CORRELATION
    );
    assert_eq!(json["metadata"]["principal"], "alice");
    assert_eq!(json["payload"]["lines"][0]["sku"], "apple");
}

#[test]
fn event_shows_who_caused_it() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let event = eventstore::NewEvent::new("StockReserved", vec![0xff]).with_metadata(
        eventstore::Metadata {
            principal: Some("annals-fulfilment".into()),
            issuer: Some("annals".into()),
            action: Some("fulfilment.reserve".into()),
            on_behalf_of: Some("alice".into()),
            ..eventstore::Metadata::default()
        },
    );
    let id = event.id.to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = crate::support::open_store(&data);
        let stream = eventstore::StreamId::new("other-1").unwrap();
        store
            .append(&stream, eventstore::ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
        store.close().await;
    });
    let dir = data.to_str().unwrap();
    let details = annals_ok(&["inspect", "event", &id, "--data-dir", dir], temp.path());
    // Field by field, the names padded to one width: compared with the padding collapsed.
    let words = details.split_whitespace().collect::<Vec<_>>().join(" ");
    for field in [
        "principal: annals-fulfilment",
        "issuer: annals",
        "action: fulfilment.reserve",
        "on behalf of: alice",
    ] {
        assert!(words.contains(field), "{field:?} in\n{details}");
    }
    let json: serde_json::Value = serde_json::from_str(&annals_ok(
        &["inspect", "event", &id, "--json", "--data-dir", dir],
        temp.path(),
    ))
    .unwrap();
    assert_eq!(
        json["metadata"],
        serde_json::json!({
            "principal": "annals-fulfilment",
            "issuer": "annals",
            "action": "fulfilment.reserve",
            "on_behalf_of": "alice",
        })
    );
}

#[test]
fn tail_prints_the_log_from_a_position_and_stops_at_the_limit() {
    let (temp, data) = seeded();
    let dir = data.to_str().unwrap();
    let lines = annals_ok(
        &[
            "inspect",
            "tail",
            "--from",
            "9",
            "--limit",
            "3",
            "--data-dir",
            dir,
        ],
        temp.path(),
    );
    golden("inspect_tail.txt", &lines);
    let json = ndjson(&annals_ok(
        &[
            "inspect",
            "tail",
            "--from",
            "0",
            "--limit",
            "12",
            "--json",
            "--data-dir",
            dir,
        ],
        temp.path(),
    ));
    assert_eq!(json.len(), 12);
    assert_eq!(json[11]["stream"], "ledger-1");
}
