//! The OpenAPI document against the server it describes: schemathesis, a property-based
//! client, generates requests from `/api/v1/openapi.json` (valid ones, which must be
//! accepted, and invalid ones, which must be refused) and checks every answer against
//! the document (statuses, headers, bodies, the live log's events), with all its checks.
//! The server is real: listening on a free loopback port, a store on disk with data in
//! it, the read models (the correlation index too) and the fulfilment saga running, and
//! the gate on, so every route is reached with an admin's token and schemathesis also
//! checks that a request without it is refused.
//!
//! schemathesis is found through `SCHEMATHESIS_BIN` (`.ci/run` installs the version
//! pinned in `ci/requirements-schemathesis.txt`), else on `PATH`; without it the test
//! fails and says what to install. The run is reproducible (a fixed seed, no example
//! database) and bounded (examples per operation, a one-second read of the live log).
//!
//! Nothing is excluded. The chaos routes are described in the document and answered
//! here as by a server without `--chaos` (404), so the run cannot inject faults into
//! the server it checks.
//!
//! Also: the regression of issue 17, a `from` above the document's maximum.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::{ApiConfig, AppState};
use security::Role;
use security::rate_limit::RateLimits;
use serde_json::json;

mod common;

/// The seed of every run: a failure found once is found again.
const SEED: &str = "17";

/// Test cases per operation and phase: enough to reach every constraint, few enough
/// for about a minute on two cores.
const MAX_EXAMPLES: &str = "25";

/// Seconds a request may take: far above what any takes, so that a loaded machine does
/// not fail the run. Reads of the live log (an event stream that does not end by itself)
/// end after one second (`schemathesis.toml`).
const REQUEST_TIMEOUT: &str = "10";

/// The schemathesis command: `SCHEMATHESIS_BIN`, else `schemathesis` on `PATH`.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS_BIN").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SCHEMATHESIS_BIN={} is not a file; install schemathesis (.ci/run does: \
             pip install --require-hashes -r ci/requirements-schemathesis.txt into a venv)",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("schemathesis"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "schemathesis is not installed: set SCHEMATHESIS_BIN to its `schemathesis` \
                 command, or put it on PATH (python3 -m venv v && v/bin/pip install \
                 --require-hashes -r ci/requirements-schemathesis.txt, as .ci/run does)"
            )
        })
}

/// A server as `annals serve --correlations` runs it with authentication on.
async fn start_server(dir: &Path) -> common::PlatformServing {
    let config = ApiConfig {
        // A read-your-writes wait for a position the log has not reached ends in a
        // 503 after this; schemathesis asks for such positions often.
        projection_wait_timeout: Duration::from_millis(200),
        ..ApiConfig::default()
    };
    let security = common::security(dir, RateLimits::default()).await;
    // With a master key, as `annals serve --master-key-file`: the customers' routes work.
    let key_store = common::key_store(&dir.join("data"));
    common::PlatformServing::start(dir, true, config, |state| {
        state.with_security(security).with_key_store(key_store)
    })
    .await
}

/// Some data for the generated requests to meet: a sku, an account with money, a card,
/// an order (and the saga it starts).
async fn seed(client: &reqwest::Client, base: &str, token: &str) {
    let commands = [
        (
            "/api/v1/inventory/skus",
            json!({"sku": "apple", "name": "Apple", "unit_price": 120}),
        ),
        (
            "/api/v1/inventory/skus/apple/restock",
            json!({"quantity": 50}),
        ),
        ("/api/v1/payments/accounts", json!({"customer_id": "alice"})),
        (
            "/api/v1/customers",
            json!({"customer_id": "alice", "name": "Alice Liddell",
                   "email": "alice@example.com", "address": "1 Rabbit Hole, Oxford"}),
        ),
        (
            "/api/v1/payments/accounts/alice/deposits",
            json!({"amount": 10_000}),
        ),
        (
            "/api/v1/payments/cards",
            json!({"customer_id": "alice", "card": "tok_alice"}),
        ),
        (
            "/api/v1/orders",
            json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 2}]}),
        ),
    ];
    for (path, body) in commands {
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "POST {path}: {}",
            response.text().await.unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let program = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let token = common::token("schemathesis", &[Role::Admin], None);
    let client = reqwest::Client::new();
    seed(&client, &server.base, &token).await;

    let mut command = Command::new(&program);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/v1/openapi.json", server.base)])
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", REQUEST_TIMEOUT])
        .args(["--workers", "2"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .env("NO_COLOR", "1");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{} could not run: {error}", program.display()));
    let took = started.elapsed();
    server.stop().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures ({}, {took:.0?}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("schemathesis found nothing in {took:.0?}:\n{stdout}");
}

/// A `from` above the largest `int64` (the document's `format: int64`) is refused: the
/// server took it before, reading from a position the document says cannot be asked
/// for.
#[tokio::test]
async fn a_from_beyond_int64_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let serving = common::Serving::start(AppState::new(store.clone(), ApiConfig::default())).await;
    let client = reqwest::Client::new();
    for path in [
        "/api/v1/log?from=9223372036854775808",
        "/api/v1/log/live?from=9223372036854775808",
        "/api/v1/streams/stock-apple?from=9223372036854775808",
    ] {
        let response = client
            .get(format!("{}{path}", serving.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "GET {path}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:annals:problem:invalid-query",
            "{problem}"
        );
    }
    let largest = client
        .get(format!(
            "{}/api/v1/log?from=9223372036854775807",
            serving.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(largest.status(), 200);
    let live = client
        .get(format!("{}/api/v1/log/live", serving.base))
        .header("Last-Event-ID", "9223372036854775808")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 400, "Last-Event-ID beyond int64");
    serving.drain().await;
    store.close().await;
}
