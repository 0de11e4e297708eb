//! After a writer failure: a real write error (EFBIG from the file-size limit), the
//! store's report of it (`failure`, `failed`), and the refusal to reopen the directory in
//! the same process.
//!
//! The disk is made to fail for real: the test runs itself again as a child process under
//! `sh -c 'trap "" XFSZ; ulimit -f BLOCKS; exec ...'`. In the child, a write that would
//! grow a file past the limit fails with EFBIG (SIGXFSZ is ignored, and that is inherited
//! through `exec`), so an append of the segment fails in the writer. The limit is set in
//! a child, not here, because it would hold for every file every test of this binary
//! writes.

use std::process::{Command, Stdio};

use eventstore::{Error, ExpectedVersion, NewEvent, StoreConfig};

use crate::common::{open, stream, try_open, within};

/// Set in the child: the data directory it fails in.
const CHILD: &str = "ANNALS_FAILURE_TEST_DIR";
/// The file-size limit of the child, in `ulimit -f` blocks (512 bytes for dash, 1024 for
/// bash: either way far below the segment size and far above the index's files).
const LIMIT_BLOCKS: u64 = 1024;
/// Each event's payload: a few of them cross the limit.
const PAYLOAD_BYTES: usize = 48 * 1024;

fn config() -> StoreConfig {
    StoreConfig {
        // No preallocation and a segment far above the limit: the append itself is the
        // write that crosses it.
        preallocate_segments: false,
        segment_bytes: 64 << 20,
        ..StoreConfig::default()
    }
}

#[test]
fn after_a_failed_write_the_store_reports_it_and_only_a_new_process_reopens() {
    if let Some(dir) = std::env::var_os(CHILD) {
        fail_and_try_to_reopen(std::path::Path::new(&dir));
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let test = std::env::current_exe().unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {LIMIT_BLOCKS}; exec \"$0\" \"$@\""
        ))
        .arg(&test)
        .args([
            "--exact",
            "failure::after_a_failed_write_the_store_reports_it_and_only_a_new_process_reopens",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = test_support::spawn(&mut command).unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the child failed:\n{printed}");
    assert!(
        printed.contains("1 passed"),
        "the child ran no test:\n{printed}"
    );

    // This process never failed on the directory: it opens, recovery cuts the part of
    // the failed append that reached the file, and every acknowledged event is there.
    let acknowledged: u64 = std::fs::read_to_string(dir.join("acknowledged"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(acknowledged > 0, "the child acknowledged nothing");
    let store = open(&dir, config());
    assert_eq!(store.next_position().0, acknowledged, "{printed}");
    store.verify().unwrap();
}

/// The child: appends until a write fails, checks what the store reports, and that the
/// directory cannot be reopened in this process under any spelling.
fn fail_and_try_to_reopen(dir: &std::path::Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(dir, config());
        let watcher = tokio::spawn({
            let store = store.clone();
            async move { store.failed().await }
        });
        let stream = stream("order-1");
        let mut acknowledged = 0u64;
        let error = loop {
            let event = NewEvent::new("Grown", vec![b'x'; PAYLOAD_BYTES]);
            match store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
            {
                Ok(outcome) => {
                    acknowledged = outcome.last_position.0 + 1;
                    assert!(
                        acknowledged < 10_000,
                        "no write failed: is the file-size limit set?"
                    );
                }
                Err(error) => break error,
            }
        };
        assert!(matches!(error, Error::WriterStopped(_)), "{error}");
        let reason = within("failed() to return", watcher).await.unwrap();
        assert!(reason.contains("File too large"), "{reason}");
        assert_eq!(store.failure().as_deref(), Some(reason.as_str()));
        assert!(!store.writer_alive());
        // Later appends fail the same way; durable reads go on.
        let later = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Late", vec![1])],
            )
            .await
            .unwrap_err();
        assert!(matches!(later, Error::WriterStopped(_)), "{later}");
        assert_eq!(store.next_position().0, acknowledged);

        // Not while the store is open, nor after it is closed and dropped, nor under
        // another name of the same directory.
        let refused = |error: Result<_, Error>| match error {
            Err(Error::RestartRequired { reason: why, .. }) => {
                assert_eq!(why, reason);
            }
            Err(other) => panic!("expected RestartRequired, got {other}"),
            Ok(_) => panic!("the failed directory was reopened in the same process"),
        };
        refused(try_open(dir, config()));
        store.close().await;
        drop(store);
        refused(try_open(dir, config()));
        refused(try_open(&dir.join("log").join(".."), config()));
        let message = try_open(dir, config()).err().unwrap().to_string();
        assert!(message.contains("restart the process"), "{message}");
        std::fs::write(dir.join("acknowledged"), acknowledged.to_string()).unwrap();
    });
}
