//! `crash-writer <data-dir> [<nats-urls> <stream> <subject-prefix>]`: the child process
//! of the eventstore crash test (`tests/store/crash.rs`), which kills it with SIGKILL at a
//! random moment. With the NATS arguments the log is that JetStream stream (3 replicas)
//! and the data directory holds this node's copy; NATS servers may then be killed under
//! it too, so a failed append is sent again, with the same event ids, until it is
//! acknowledged (a re-send of a stored append is answered with the original).
//!
//! It opens the store and runs 16 writers, each appending commits of 1 to 5 events to its
//! own stream (with `Exact`/`NoStream`: one writer per stream, so a conflict is a bug)
//! and now and then to a shared stream (with `Any`). After each acknowledged append it
//! prints one line and flushes it:
//!
//! ```text
//! <stream> <first version> <last version> <first position> <event id>,<event id>,...
//! ```
//!
//! Every event carries its commit's id as correlation id and `<commit id> <index> <count>`
//! as payload, so the test can check that every commit in the log is complete, whether or
//! not its acknowledgement was printed before the kill.

use std::io::Write;
use std::path::PathBuf;

use eventstore::{
    EventStore, ExpectedVersion, Metadata, NewEvent, ReplicatedConfig, StoreConfig, StreamId,
};
use uuid::Uuid;

const WRITERS: u64 = 16;

/// The store configuration; the test opens the store with the same one.
fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 256 << 10,
        ..StoreConfig::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: crash-writer <data-dir> [<nats-urls> <stream> <subject-prefix>]");
        std::process::exit(2);
    };
    let log = args.next().map(|urls| ReplicatedConfig {
        urls,
        stream: args.next().expect("a stream name"),
        subject_prefix: args.next().expect("a subject prefix"),
        replicas: 3,
        ..ReplicatedConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(PathBuf::from(dir), log));
}

async fn run(dir: PathBuf, log: Option<ReplicatedConfig>) {
    let retry = log.is_some();
    let opened = match log {
        None => EventStore::open(&dir, config()),
        Some(log) => EventStore::open_replicated(&dir, config(), log).await,
    };
    let store = match opened {
        Ok(store) => store,
        Err(error) => {
            eprintln!("crash-writer: cannot open {}: {error}", dir.display());
            std::process::exit(1);
        }
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write(store.clone(), writer, retry)))
        .collect();
    for writer in writers {
        // A writer only ends by panicking, which is a failure the test must see.
        if writer.await.is_err() {
            std::process::exit(1);
        }
    }
}

/// A xorshift step: enough randomness to vary commit sizes and streams.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn write(store: EventStore, writer: u64, retry: bool) {
    let own = StreamId::new(format!("crash-{writer}")).expect("a valid stream id");
    let shared = StreamId::new("crash-shared").expect("a valid stream id");
    let mut head = store.stream_head(&own).expect("the head of the own stream");
    let mut random =
        (u64::from(std::process::id()) << 8 | writer).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        let count = 1 + next(&mut random) % 5;
        let to_shared = next(&mut random).is_multiple_of(5);
        let commit = Uuid::now_v7();
        let events: Vec<NewEvent> = (0..count)
            .map(|i| {
                NewEvent::new("CrashTested", format!("{commit} {i} {count}").into_bytes())
                    .with_metadata(Metadata {
                        correlation_id: Some(commit),
                        ..Metadata::default()
                    })
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|event| event.id.to_string()).collect();
        let (stream, expected) = if to_shared {
            (&shared, ExpectedVersion::Any)
        } else {
            (
                &own,
                head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
            )
        };
        let outcome = loop {
            match store.append(stream, expected, events.clone()).await {
                Ok(outcome) => break outcome,
                Err(error) if retry && !error.is_conflict() => {
                    eprintln!("crash-writer: append to {stream} failed, sending it again: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("append to {stream} failed: {error}"),
            }
        };
        if !to_shared {
            head = Some(outcome.last_version);
        }
        let line = format!(
            "{stream} {} {} {} {}\n",
            outcome.first_version,
            outcome.last_version,
            outcome.first_position,
            ids.join(",")
        );
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The test stopped listening; nothing more to report.
            std::process::exit(0);
        }
    }
}
