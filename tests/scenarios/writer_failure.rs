//! After a writer failure, from outside: a real `annals serve` whose disk really fails.
//!
//! The server runs under `sh -c 'trap "" XFSZ; ulimit -f BLOCKS; exec annals serve ...'`:
//! once its log segment would grow past the file-size limit, the write fails with EFBIG
//! (SIGXFSZ is ignored, which `exec` keeps), as a full or failing disk would fail it.
//! Segments are large and not preallocated (hidden flags), so the append itself is the
//! write that fails. Then: the command that met the failure and every later command get
//! 503 `store-failed`, both probes fail naming the failure, reads go on, and the process
//! exits with code 75. Started again without the limit, it opens, and every acknowledged
//! event is there at its position; `annals verify` passes.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{AnnalsServer, annals_binary, free_port, run_annals};

/// The server's file-size limit in `ulimit -f` blocks (dash, `/bin/sh` on Debian, counts
/// 512 bytes: 1 MiB; bash counts 1,024 bytes). The index and the server's other files stay
/// far below it; the log crosses it after six commands.
const LIMIT_BLOCKS: u64 = 2048;
/// The length of each sku's name: what makes the log grow. The read model of stock
/// levels keeps the name too, but sled keeps values this large in blob files of their
/// own, so its main file stays below the limit while the log segment crosses it. The
/// fewer commands it takes, the fewer of sled's own small writes come before it: with
/// 24 KiB names the index's file crossed first, and with 56 KiB now and then too (its
/// file grows by whole segments); at 160 KiB the log crosses after six commands. The
/// `.seg` check below catches the other order.
const NAME_BYTES: usize = 160 * 1024;
/// Large, unpreallocated segments: the limit is crossed inside the first one; bodies
/// large enough for the names.
const STORE_ARGS: [&str; 6] = [
    "--segment-bytes",
    "268435456",
    "--no-preallocate",
    "--no-saga",
    "--max-body-bytes",
    "524288",
];
/// `annals serve`'s exit code after a writer failure (README, docs/OPERATIONS.md).
const STORE_FAILED_EXIT: i32 = 75;
/// How long the server may take to start or to exit.
const PATIENCE: Duration = Duration::from_secs(60);

/// `annals serve` under the file-size limit, its output collected; killed on `Drop`.
struct LimitedServer {
    child: Child,
    url: String,
    output: Arc<Mutex<Vec<u8>>>,
}

impl LimitedServer {
    async fn start(data_dir: &Path, http: &reqwest::Client) -> LimitedServer {
        // A free port can be taken before the server binds it: try another.
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!(
                    "trap '' XFSZ; ulimit -f {LIMIT_BLOCKS}; exec \"$0\" \"$@\""
                ))
                .arg(annals_binary())
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(data_dir)
                .args(STORE_ARGS)
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                // Pipes, not a file: the file-size limit holds for every file it writes.
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = test_support::spawn(&mut command).expect("sh runs");
            let output = Arc::new(Mutex::new(Vec::new()));
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let output = output.clone();
                std::thread::spawn(move || collect(pipe, &output));
            }
            let mut server = LimitedServer {
                child,
                url: format!("http://127.0.0.1:{port}"),
                output,
            };
            if server.ready(http).await {
                return server;
            }
        }
        panic!("annals serve under a file-size limit did not start on any of 5 ports");
    }

    /// Waits for `/readyz` to answer 200; false if the server exited first.
    async fn ready(&mut self, http: &reqwest::Client) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(answer) = http.get(format!("{}/readyz", self.url)).send().await
                && answer.status() == 200
            {
                return true;
            }
            if self
                .child
                .try_wait()
                .expect("wait for the server")
                .is_some()
            {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit and returns its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {PATIENCE:?} of its store's failure; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("not poisoned")).into_owned()
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(mut pipe: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut buffer) {
        if read == 0 {
            break;
        }
        output
            .lock()
            .expect("not poisoned")
            .extend_from_slice(&buffer[..read]);
    }
}

/// A response's status, body as JSON (or `null`) and `Retry-After`.
async fn answer(response: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

fn register(sku: &str) -> Value {
    json!({"sku": sku, "name": format!("{sku} {}", "n".repeat(NAME_BYTES)), "unit_price": 100})
}

/// Asserts a 503 `store-failed` problem.
fn assert_store_failed(what: &str, (status, body, retry_after): &(u16, Value, Option<String>)) {
    assert_eq!(*status, 503, "{what}: {body}");
    assert_eq!(
        body["type"], "urn:annals:problem:store-failed",
        "{what}: {body}"
    );
    assert!(retry_after.is_some(), "{what}: no Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_stops_commands_fails_the_probes_and_exits_for_a_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let http = reqwest::Client::new();
    let mut server = LimitedServer::start(&data_dir, &http).await;
    let url = server.url.clone();

    // Commands until one fails: every one before it is acknowledged with its position.
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let failed = loop {
        let sku = format!("sku-{}", acknowledged.len());
        let response = http
            .post(format!("{url}/api/v1/inventory/skus"))
            .json(&register(&sku))
            .send()
            .await
            .expect("the server answers");
        let (status, body, retry_after) = answer(response).await;
        if status != 201 {
            break (status, body, retry_after);
        }
        assert_eq!(body["position"], acknowledged.len() as u64, "{body}");
        acknowledged.push((sku, body["position"].as_u64().unwrap()));
        assert!(
            acknowledged.len() < 2_000,
            "no write failed: is the file-size limit in force? output:\n{}",
            server.output()
        );
    };
    assert!(
        acknowledged.len() > 3,
        "the limit hit too early; output:\n{}",
        server.output()
    );
    assert_store_failed("the command that met the failure", &failed);

    // During the grace: commands refused, probes failing with the reason, reads on.
    let later = http
        .post(format!("{url}/api/v1/inventory/skus/sku-0/restock"))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_store_failed("a later command", &answer(later).await);
    let readiness = answer(http.get(format!("{url}/readyz")).send().await.unwrap()).await;
    assert_store_failed("/readyz", &readiness);
    let detail = readiness.1["detail"].as_str().unwrap_or_default();
    // The log's write failed (a segment), not the index's.
    assert!(
        detail.contains(".seg") && detail.contains("File too large"),
        "{detail}"
    );
    let liveness = answer(http.get(format!("{url}/healthz")).send().await.unwrap()).await;
    assert_store_failed("/healthz", &liveness);
    let read = http
        .get(format!("{url}/api/v1/inventory/skus/sku-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads go on");

    // Then the process exits with its own code, having said what happened and what to do.
    let code = server.exit_code().await;
    let output = server.output();
    assert_eq!(code, Some(STORE_FAILED_EXIT), "{output}");
    assert!(
        output.contains("the event store's writer failed") && output.contains("File too large"),
        "{output}"
    );
    assert!(output.contains("error: "), "the one-line error: {output}");
    drop(server);

    // A new process, without the limit, opens the log and holds every acknowledged event.
    let mut restarted = AnnalsServer::start_in(&data_dir, &STORE_ARGS);
    let url = restarted.url();
    let (status, readiness, _) =
        answer(http.get(format!("{url}/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{readiness}");
    assert_eq!(
        readiness["next_position"],
        acknowledged.len() as u64,
        "nothing acknowledged lost, the failed append not there"
    );
    for (sku, position) in &acknowledged {
        let (status, page, _) = answer(
            http.get(format!("{url}/api/v1/streams/stock-{sku}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{sku}: {page}");
        assert_eq!(page["events"][0]["position"], *position, "{sku}: {page}");
        assert_eq!(page["events"][0]["type"], "SkuRegistered", "{sku}");
    }
    // And the store takes commands again.
    let response = http
        .post(format!("{url}/api/v1/inventory/skus/sku-0/restock"))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    restarted.terminate();
    let verified = run_annals(
        &["verify", "--data-dir", data_dir.to_str().unwrap()],
        scratch.path(),
    );
    assert!(
        verified.status.success(),
        "annals verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}
