//! The copy verifies itself: every message carries its record's chain hash, the last one
//! the log's head hash; restore and audit name the first message whose chain breaks (an
//! altered body, a wrong hash, a reorder, a hashless message after hashed ones); restore
//! with an expected head stops there and fails when the copy does not reach it; a copy
//! of an older release, without the headers, is still accepted and counted.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use eventstore::{ChainHash, EventStore, Position};
use outbox::message::{self, HASH, PREV_HASH};
use outbox::{Divergence, RestoreOptions};

use crate::common::{
    NatsServer, audit, connect, copy_edited, open_store, raw_copy, relay_config, start_relay,
    whole_log, within, workload,
};

async fn restore(
    url: &str,
    stream: &str,
    expect_head: Option<(Position, ChainHash)>,
) -> (
    Result<outbox::RestoreReport, outbox::Error>,
    EventStore,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let client = connect(url).await;
    let options = RestoreOptions {
        batch_events: 64,
        expect_head,
        ..RestoreOptions::default()
    };
    let result = within(
        Duration::from_secs(30),
        "the restore",
        outbox::restore(&client, stream, &store, &options, &mut |_, _| {}),
    )
    .await;
    (result, store, dir)
}

fn chain_break(result: Result<outbox::RestoreReport, outbox::Error>) -> (Position, u64) {
    match result {
        Err(outbox::Error::ChainBroken {
            position, sequence, ..
        }) => (position, sequence),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

fn headers_only(messages: Vec<(u64, String, HeaderMap, Bytes)>) -> Vec<(HeaderMap, Bytes)> {
    messages
        .into_iter()
        .map(|(_, _, headers, body)| (headers, body))
        .collect()
}

/// `headers` without the chain headers: a message of an older release.
fn unchained(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in headers.iter() {
        if *name != PREV_HASH && *name != HASH {
            for value in values {
                out.append(name.clone(), value.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_audit_check_the_chain_of_the_copy() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let original = open_store(dir.path());
    workload(&original, 2, 40).await;
    let mut relay = start_relay(&original, relay_config(&url, "ANNALS"));
    relay.wait_drained(&original, Duration::from_secs(30)).await;
    relay.stop().await;
    let log = whole_log(&original);
    let head = Position(log.len() as u64 - 1);
    let head_hash: ChainHash = original.verify().unwrap().head_hash.parse().unwrap();

    // Every message carries its chain; the last one's hash is the log's head hash.
    let copy = raw_copy(&url, "ANNALS").await;
    let mut prev = ChainHash::GENESIS;
    for (sequence, _, headers, _) in &copy {
        let chain = message::chain(Some(headers))
            .unwrap()
            .unwrap_or_else(|| panic!("message {sequence} carries its chain"));
        assert_eq!(chain.prev, prev, "message {sequence}");
        prev = chain.hash;
    }
    assert_eq!(prev, head_hash);

    // A good copy restores, up to the expected head.
    let (result, restored, _dir) = restore(&url, "ANNALS", Some((head, head_hash))).await;
    let report = result.expect("a restore to the expected head");
    assert_eq!(report.unhashed_messages, 0);
    assert_eq!(report.head_hash, head_hash.to_string());
    assert_eq!(whole_log(&restored), log);
    let report = audit(&url, "ANNALS", &original).await;
    assert_eq!(report.divergence, None, "{}", report.summary());
    assert_eq!(report.unhashed_messages, 0);

    // An expected head in the middle (an append boundary): the restore stops there.
    let middle = log
        .iter()
        .position(|event| event.last_in_commit && event.position.0 >= 50)
        .expect("an append ends after 50");
    let mut middle_hash = ChainHash::GENESIS;
    for event in &log[..=middle] {
        middle_hash = ChainHash::of_record(&middle_hash, event).unwrap();
    }
    let middle = Position(middle as u64);
    let (result, restored, _dir) = restore(&url, "ANNALS", Some((middle, middle_hash))).await;
    let report = result.expect("a restore to a head in the middle");
    assert_eq!(report.next_position, middle.next());
    assert_eq!(whole_log(&restored), log[..=middle.0 as usize]);

    // An expected head the copy does not reach, or reaches with another hash.
    let beyond = Position(head.0 + 10);
    match restore(&url, "ANNALS", Some((beyond, head_hash))).await.0 {
        Err(outbox::Error::ExpectedHeadNotMet { position, .. }) => assert_eq!(position, beyond),
        other => panic!("a head beyond the copy: {other:?}"),
    }
    match restore(&url, "ANNALS", Some((head, middle_hash))).await.0 {
        Err(outbox::Error::ExpectedHeadNotMet {
            position, reason, ..
        }) => {
            assert_eq!(position, head);
            assert!(reason.contains(&head_hash.to_string()), "{reason}");
        }
        other => panic!("a head with another hash: {other:?}"),
    }

    // An altered body (sequence 31, position 30), headers untouched.
    copy_edited(&url, "ANNALS", "ALTERED", |mut messages| {
        let mut body = messages[30].3.to_vec();
        body.push(b'!');
        messages[30].3 = body.into();
        headers_only(messages)
    })
    .await;
    assert_eq!(
        chain_break(restore(&url, "ALTERED", None).await.0),
        (Position(30), 31)
    );

    // A wrong hash header, the event intact: restore and audit name it.
    copy_edited(&url, "ANNALS", "WRONG_HASH", |mut messages| {
        messages[40].2.insert(HASH, "0".repeat(64));
        headers_only(messages)
    })
    .await;
    assert_eq!(
        chain_break(restore(&url, "WRONG_HASH", None).await.0),
        (Position(40), 41)
    );
    match audit(&url, "WRONG_HASH", &original).await.divergence {
        Some(Divergence::BrokenChain {
            position, sequence, ..
        }) => assert_eq!((position, sequence), (Position(40), 41)),
        other => panic!("audit of a wrong hash: {other:?}"),
    }

    // A forged event whose own hash was recomputed: the next message's link breaks.
    copy_edited(&url, "ANNALS", "FORGED", |mut messages| {
        let (headers, body) = (&messages[20].2, &messages[20].3);
        let mut event = message::decode(Some(headers), body).unwrap();
        event.payload = b"forged".to_vec();
        let chain = message::chain(Some(headers)).unwrap().unwrap();
        let forged = message::Chain::after(chain.prev, &event).unwrap();
        messages[20].2 = message::chained_headers(&event, &forged);
        messages[20].3 = event.payload.into();
        headers_only(messages)
    })
    .await;
    assert_eq!(
        chain_break(restore(&url, "FORGED", None).await.0),
        (Position(21), 22)
    );

    // Two messages swapped: the first position out of place is named.
    copy_edited(&url, "ANNALS", "REORDERED", |mut messages| {
        messages.swap(10, 11);
        headers_only(messages)
    })
    .await;
    match restore(&url, "REORDERED", None).await.0 {
        Err(outbox::Error::NotContiguous {
            expected, found, ..
        }) => assert_eq!((expected, found), (Position(10), Position(11))),
        other => panic!("a reordered copy: {other:?}"),
    }

    // A copy of an older release, without chain headers: accepted, counted.
    copy_edited(&url, "ANNALS", "UNHASHED", |messages| {
        messages
            .into_iter()
            .map(|(_, _, headers, body)| (unchained(&headers), body))
            .collect()
    })
    .await;
    let (result, restored, _dir) = restore(&url, "UNHASHED", Some((head, head_hash))).await;
    let report = result.expect("an unhashed copy restores");
    assert_eq!(report.unhashed_messages, log.len() as u64);
    assert_eq!(whole_log(&restored), log);
    let report = audit(&url, "UNHASHED", &original).await;
    assert_eq!(report.divergence, None, "{}", report.summary());
    assert_eq!(report.unhashed_messages, log.len() as u64);

    // But a hashless message after hashed ones is a break.
    copy_edited(&url, "ANNALS", "STRIPPED", |mut messages| {
        messages[5].2 = unchained(&messages[5].2);
        headers_only(messages)
    })
    .await;
    assert_eq!(
        chain_break(restore(&url, "STRIPPED", None).await.0),
        (Position(5), 6)
    );
}
