//! What a consumer in another language reads: every message is a CloudEvent in the NATS
//! binding's binary content mode, its body the payload as JSON where the relay's decoder
//! knows the event (else the bytes, and also when the JSON form would not fit the
//! server's `max_payload`); and the copy stays exact: it restores to the same log and
//! hash chain and audits identical, an altered exact copy (`Annals-Payload`) breaks the
//! chain, and a copy in format 1 (an older relay) still restores and audits.

use std::time::Duration;

use async_nats::HeaderMap;
use eventstore::{ExpectedVersion, NewEvent, Position, StreamId};
use outbox::cloudevents::{self, JsonData, JsonPayloads};
use outbox::message::{self, FORMAT, PAYLOAD};
use outbox::{RelayConfig, RestoreOptions};

use crate::common::{
    NatsServer, audit, connect, copy_edited, open_store, raw_copy, relay_config, start_relay,
    whole_log, within, workload,
};

/// A decoder for the test workload: `OrderPlaced` payloads (UTF-8 text) become
/// `{"text": ...}`, every other event has no JSON.
fn test_json() -> JsonPayloads {
    JsonPayloads::new(|event| {
        if event.event_type != "OrderPlaced" {
            return None;
        }
        let text = String::from_utf8(event.payload.clone()).ok()?;
        Some(JsonData {
            data: serde_json::json!({ "text": text }),
            dataschema: Some(format!("urn:annals:schema:event:{}:1", event.event_type)),
        })
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

async fn restore_into(url: &str, stream: &str, dir: &std::path::Path) -> outbox::RestoreReport {
    let store = open_store(dir);
    let client = connect(url).await;
    let result = within(
        Duration::from_secs(60),
        "the restore",
        outbox::restore(
            &client,
            stream,
            &store,
            &RestoreOptions::default(),
            &mut |_, _| {},
        ),
    )
    .await;
    store.close().await;
    result.expect("the restore")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_cloudevents_with_json_and_the_copy_stays_exact() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let original = open_store(dir.path());
    workload(&original, 2, 30).await;
    // An event whose JSON form and exact copy together exceed the server's 1 MiB
    // max_payload, though its bytes fit: it goes as bytes.
    let big = vec![b'x'; 600_000];
    original
        .append(
            &StreamId::new("order-big").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new("OrderPlaced", big.clone())],
        )
        .await
        .unwrap();
    let config = RelayConfig {
        json_payloads: test_json(),
        ..relay_config(&url, "ANNALS")
    };
    let mut relay = start_relay(&original, config);
    relay.wait_drained(&original, Duration::from_secs(30)).await;
    relay.stop().await;
    let log = whole_log(&original);
    let copy = raw_copy(&url, "ANNALS").await;
    assert_eq!(copy.len(), log.len());

    // What a consumer sees, message by message.
    let (mut json_bodies, mut byte_bodies) = (0, 0);
    for ((sequence, subject, headers, body), event) in copy.iter().zip(&log) {
        let at = format!("message {sequence}");
        assert_eq!(
            header(headers, "ce-specversion"),
            Some(cloudevents::SPEC_VERSION),
            "{at}"
        );
        let id = event.id.to_string();
        assert_eq!(header(headers, "ce-id"), Some(id.as_str()), "{at}");
        assert_eq!(header(headers, "Nats-Msg-Id"), Some(id.as_str()), "{at}");
        let source = format!("/annals/{}", event.stream_id.category());
        assert_eq!(header(headers, "ce-source"), Some(source.as_str()), "{at}");
        let ce_type = format!(
            "annals.{}.{}",
            event.stream_id.category(),
            event.event_type.replace([' ', '.'], "_")
        );
        assert_eq!(header(headers, "ce-type"), Some(ce_type.as_str()), "{at}");
        assert!(
            subject.ends_with(&ce_type["annals.".len()..]),
            "{at}: {subject}"
        );
        assert_eq!(
            header(headers, "ce-time"),
            header(headers, "Annals-Recorded-At"),
            "{at}"
        );
        assert_eq!(
            header(headers, "ce-subject"),
            Some(message::encode_text(event.stream_id.as_str()).as_str()),
            "{at}"
        );
        assert_eq!(header(headers, "Annals-Format"), Some("2"), "{at}");
        let is_big = event.payload.len() == big.len();
        if event.event_type == "OrderPlaced" && !is_big {
            json_bodies += 1;
            assert_eq!(
                header(headers, "ce-datacontenttype"),
                Some("application/json"),
                "{at}"
            );
            assert_eq!(
                header(headers, "ce-dataschema"),
                Some("urn:annals:schema:event:OrderPlaced:1"),
                "{at}"
            );
            let data: serde_json::Value = serde_json::from_slice(body).unwrap();
            let text = String::from_utf8(event.payload.clone()).unwrap();
            assert_eq!(data, serde_json::json!({ "text": text }), "{at}");
            assert!(header(headers, "Annals-Payload").is_some(), "{at}");
        } else {
            byte_bodies += 1;
            assert_eq!(
                header(headers, "ce-datacontenttype"),
                Some("application/octet-stream"),
                "{at}"
            );
            assert_eq!(header(headers, "ce-dataschema"), None, "{at}");
            assert_eq!(header(headers, "Annals-Payload"), None, "{at}");
            assert_eq!(&body[..], &event.payload[..], "{at}");
        }
        assert_eq!(
            &message::decode(Some(headers), body).unwrap(),
            event,
            "{at}"
        );
    }
    assert!(
        json_bodies > 10 && byte_bodies > 10,
        "{json_bodies} / {byte_bodies}"
    );
    assert_eq!(
        header(&copy.last().unwrap().2, "ce-datacontenttype"),
        Some("application/octet-stream"),
        "the event too big for JSON goes as bytes"
    );

    // Exact: the copy restores to the same log and head hash, and audits identical.
    let head_hash = original.verify().unwrap().head_hash;
    let restored_dir = tempfile::tempdir().unwrap();
    let report = restore_into(&url, "ANNALS", restored_dir.path()).await;
    assert_eq!(report.head_hash, head_hash);
    assert_eq!(report.unhashed_messages, 0);
    let restored = open_store(restored_dir.path());
    assert_eq!(whole_log(&restored), log);
    restored.close().await;
    let audited = audit(&url, "ANNALS", &original).await;
    assert_eq!(audited.divergence, None, "{}", audited.summary());

    // The exact copy altered in a JSON message: the chain breaks there. (The JSON body
    // is derived and not read back: altering only it changes nothing restored.)
    let altered = copy
        .iter()
        .position(|(_, _, headers, _)| header(headers, "Annals-Payload").is_some())
        .unwrap();
    copy_edited(&url, "ANNALS", "ALTERED", |mut messages| {
        messages[altered].2.insert(PAYLOAD, "AAAA");
        messages
            .into_iter()
            .map(|(_, _, headers, body)| (headers, body))
            .collect()
    })
    .await;
    let client = connect(&url).await;
    let scratch = tempfile::tempdir().unwrap();
    let store = open_store(scratch.path());
    match outbox::restore(
        &client,
        "ALTERED",
        &store,
        &RestoreOptions::default(),
        &mut |_, _| {},
    )
    .await
    {
        Err(outbox::Error::ChainBroken { position, .. }) => {
            assert_eq!(position, Position(altered as u64))
        }
        other => panic!("an altered Annals-Payload: {other:?}"),
    }
    store.close().await;

    // The same copy in format 1, as an older relay wrote it (no ce-*, the body the
    // payload): it restores to the same log and audits identical.
    copy_edited(&url, "ANNALS", "FORMAT1", |messages| {
        messages
            .into_iter()
            .map(|(_, _, headers, body)| {
                let event = message::decode(Some(&headers), &body).unwrap();
                let mut old = HeaderMap::new();
                for (name, values) in headers.iter() {
                    let name_text = name.to_string();
                    if !name_text.starts_with("ce-") && name_text != "Annals-Payload" {
                        for value in values {
                            old.append(name.clone(), value.clone());
                        }
                    }
                }
                old.insert(FORMAT, "1");
                (old, event.payload.into())
            })
            .collect()
    })
    .await;
    let old_dir = tempfile::tempdir().unwrap();
    let report = restore_into(&url, "FORMAT1", old_dir.path()).await;
    assert_eq!(report.head_hash, head_hash);
    let restored = open_store(old_dir.path());
    assert_eq!(whole_log(&restored), log);
    restored.close().await;
    let audited = audit(&url, "FORMAT1", &original).await;
    assert_eq!(audited.divergence, None, "{}", audited.summary());
}
