//! Consumer-driven contracts (`tests/contracts/`): files owned by the consumers of Annals,
//! each saying what that consumer relies on, played against a real `annals serve` with
//! its relay and a real nats-server. Breaking one fails the build.
//!
//! - `http-consumer/*.json`: a client of the HTTP API. Each file is a list of
//!   interactions played in order: a request, the status, headers and body fields (by
//!   JSON pointer) the client reads, values captured for later requests (`{name}`), and
//!   optionally a condition to poll for. A failure names the file, the interaction and
//!   the expectation.
//! - `python-consumer/`: a Python service that reads the JetStream stream with nats-py
//!   and validates every message against the published schemas with jsonschema
//!   (`consumer.py`, its needs in `expectations.json`). It runs with the Python of
//!   `PYTHON_CONTRACTS` (set by `.ci/run`, a venv with `ci/requirements-contracts.txt`),
//!   else `python3` on PATH; without nats-py and jsonschema the test fails saying how to
//!   install them.
//!
//! Each kind has a test that breaks it on purpose (a mutated expectation, a mutated
//! response, an expectation the stream cannot meet) and checks that it fails, naming
//! what broke: a contract test that cannot fail proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{AnnalsServer, NatsServer};

fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

/// The HTTP consumer contracts, by file name.
fn http_contracts() -> Vec<(String, Value)> {
    let dir = contracts_dir().join("http-consumer");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no contract in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let contract = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                contract,
            )
        })
        .collect()
}

/// A response as the client sees it.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// `text` with every `{name}` replaced by the captured value.
fn fill(text: &str, captured: &serde_json::Map<String, Value>) -> String {
    let mut text = text.to_owned();
    for (name, value) in captured {
        let value = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        text = text.replace(&format!("{{{name}}}"), &value);
    }
    text
}

/// `value` with every string filled in.
fn fill_value(value: &Value, captured: &serde_json::Map<String, Value>) -> Value {
    match value {
        Value::String(text) => Value::String(fill(text, captured)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| fill_value(v, captured)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_value(v, captured)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What is wrong with `actual` under `rule` (`equals`, `one_of`, `type`, `format`,
/// `prefix`); `None` when it holds.
fn mismatch(rule: &Value, actual: Option<&Value>) -> Option<String> {
    let Some(actual) = actual else {
        return Some("is missing".into());
    };
    let rule = rule.as_object()?;
    for (kind, want) in rule {
        let problem = match kind.as_str() {
            "equals" => (actual != want).then(|| format!("is {actual}, expected {want}")),
            "one_of" => (!want.as_array().is_some_and(|all| all.contains(actual)))
                .then(|| format!("is {actual}, expected one of {want}")),
            "type" => {
                let got = type_name(actual);
                let fits = want == got || (want == "number" && got == "integer");
                (!fits).then(|| format!("is {actual} ({got}), expected a {want}"))
            }
            "prefix" => {
                let prefix = want.as_str().unwrap_or_default();
                (!actual.as_str().is_some_and(|text| text.starts_with(prefix)))
                    .then(|| format!("is {actual}, expected a text starting {prefix:?}"))
            }
            "format" => {
                let text = actual.as_str().unwrap_or_default();
                let fits = match want.as_str() {
                    Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
                    Some("etag") => {
                        text.len() > 2
                            && text.starts_with('"')
                            && text.ends_with('"')
                            && text[1..text.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    }
                    _ => false,
                };
                (!fits).then(|| format!("is {actual}, expected the format {want}"))
            }
            other => Some(format!("has an unknown rule {other:?} in the contract")),
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

/// Every expectation of `expected` (status, headers, body pointers) that `response`
/// breaks, each named.
fn check_response(
    expected: &Value,
    response: &Response,
    captured: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let expected = fill_value(expected, captured);
    let mut broken = Vec::new();
    if let Some(status) = expected.get("status")
        && *status != json!(response.status)
    {
        broken.push(format!(
            "status is {}, expected {status} (body {})",
            response.status, response.body
        ));
    }
    if let Some(headers) = expected.get("headers").and_then(Value::as_object) {
        for (name, rule) in headers {
            let actual = response
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|text| Value::String(text.to_owned()));
            if let Some(problem) = mismatch(rule, actual.as_ref()) {
                broken.push(format!("header {name} {problem}"));
            }
        }
    }
    if let Some(fields) = expected.get("body").and_then(Value::as_object) {
        for (pointer, rule) in fields {
            if let Some(problem) = mismatch(rule, response.body.pointer(pointer)) {
                broken.push(format!("body {pointer} {problem}"));
            }
        }
    }
    broken
}

async fn send(client: &reqwest::Client, base: &str, request: &Value) -> Response {
    let method = request["method"].as_str().unwrap_or("GET");
    let url = format!("{base}{}", request["path"].as_str().unwrap_or("/"));
    let mut builder = client.request(method.parse().unwrap(), &url);
    if let Some(body) = request.get("body") {
        builder = builder.json(body);
    }
    let response = builder
        .send()
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Response {
        status,
        headers,
        body,
    }
}

/// Plays `contract` against the server at `base`; returns every broken expectation,
/// each naming its interaction. Stops at the first interaction that breaks (later ones
/// may depend on it).
async fn play(base: &str, file: &str, contract: &Value) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut captured = serde_json::Map::new();
    let interactions = contract["interactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!interactions.is_empty(), "{file}: no interactions");
    for interaction in &interactions {
        let name = interaction["name"].as_str().unwrap_or("?");
        let request = fill_value(&interaction["request"], &captured);
        let deadline = Instant::now()
            + Duration::from_secs(interaction["within_seconds"].as_u64().unwrap_or(0));
        let response = loop {
            let response = send(&client, base, &request).await;
            let done = match interaction.get("until").and_then(Value::as_object) {
                None => true,
                Some(until) => until.iter().all(|(pointer, rule)| {
                    mismatch(rule, response.body.pointer(pointer)).is_none()
                }),
            };
            if done || Instant::now() >= deadline {
                if !done {
                    return vec![format!(
                        "{file}: \"{name}\": {} not met within {}s (last body {})",
                        interaction["until"], interaction["within_seconds"], response.body
                    )];
                }
                break response;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(captures) = interaction.get("capture").and_then(Value::as_object) {
            for (key, pointer) in captures {
                let pointer = pointer.as_str().unwrap_or_default();
                match response.body.pointer(pointer) {
                    Some(value) => {
                        captured.insert(key.clone(), value.clone());
                    }
                    None => {
                        return vec![format!(
                            "{file}: \"{name}\": nothing to capture as {key} at {pointer} (status {}, body {})",
                            response.status, response.body
                        )];
                    }
                }
            }
        }
        let broken = check_response(&interaction["response"], &response, &captured);
        if !broken.is_empty() {
            return broken
                .into_iter()
                .map(|problem| format!("{file}: \"{name}\": {problem}"))
                .collect();
        }
    }
    Vec::new()
}

/// The Python that runs the Python consumer: `PYTHON_CONTRACTS`, else `python3`; it must
/// import nats-py and jsonschema.
fn contract_python() -> PathBuf {
    let python = std::env::var_os("PYTHON_CONTRACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let hint = "the Python consumer contract needs a Python 3 with nats-py and jsonschema: \
                python3 -m venv /tmp/contracts && /tmp/contracts/bin/pip install --require-hashes \
                -r ci/requirements-contracts.txt && export PYTHON_CONTRACTS=/tmp/contracts/bin/python \
                (.ci/run does this)";
    let probe = test_support::output(
        Command::new(&python).args(["-c", "import nats, jsonschema, nats.js.api"]),
    );
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{} cannot import nats-py and jsonschema ({}); {hint}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("cannot run {}: {error}; {hint}", python.display()),
    }
}

/// Runs the Python consumer with `expectations`; returns whether it passed and what it
/// printed.
fn run_python_consumer(nats: &str, api: &str, expectations: &Path) -> (bool, String) {
    let script = contracts_dir().join("python-consumer").join("consumer.py");
    let output = test_support::output(
        Command::new(contract_python())
            .arg(&script)
            .args(["--nats-url", nats, "--api-url", api, "--expectations"])
            .arg(expectations),
    )
    .expect("the Python consumer runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// Every contract holds against one real server with its relay and a real nats-server:
/// the HTTP client's interactions (which also write the events), then the Python
/// consumer of the stream. A copy of the Python consumer's expectations with one more
/// need that Annals does not meet fails, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_contracts_hold() {
    let nats = NatsServer::start();
    let server = tokio::task::block_in_place(|| AnnalsServer::start(&["--nats-url", &nats.url()]));
    let base = server.url();
    for (file, contract) in http_contracts() {
        let broken = play(&base, &file, &contract).await;
        assert!(
            broken.is_empty(),
            "the HTTP consumer contract is broken:\n  {}",
            broken.join("\n  ")
        );
    }
    // The relay has published every event.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = client
            .get(format!("{base}/api/v1/outbox"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["relay"]["backlog"] == 0 && status["relay"]["published"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not drain: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let expectations = contracts_dir()
        .join("python-consumer")
        .join("expectations.json");
    let (passed, printed) =
        tokio::task::block_in_place(|| run_python_consumer(&nats.url(), &base, &expectations));
    assert!(passed, "the Python consumer contract is broken:\n{printed}");
    assert!(printed.contains("python-consumer: ok"), "{printed}");

    // The consumer can fail: a need Annals does not meet (a header it does not send, an
    // event type it does not publish, a field of another type) is named.
    let mut needs: Value =
        serde_json::from_str(&std::fs::read_to_string(&expectations).unwrap()).unwrap();
    needs["headers"]["ce-partitionkey"] = json!({"pattern": ".+"});
    needs["events"]["annals.order.OrderShipped"] = json!({"carrier": "string"});
    needs["events"]["annals.order.OrderConfirmed"]["total"] = json!("string");
    let scratch = tempfile::tempdir().unwrap();
    let broken = scratch.path().join("expectations.json");
    std::fs::write(&broken, needs.to_string()).unwrap();
    let (passed, printed) =
        tokio::task::block_in_place(|| run_python_consumer(&nats.url(), &base, &broken));
    assert!(!passed, "a broken Python contract passed:\n{printed}");
    for needle in [
        "header ce-partitionkey is missing",
        "no message of type annals.order.OrderShipped",
        "data field 'total' is 360, expected a string",
    ] {
        assert!(printed.contains(needle), "{needle:?} not in:\n{printed}");
    }
}

/// The HTTP contract can fail: a mutated expectation played against a real server, and
/// mutated responses checked against the real expectations, are each named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_http_contract_fails_naming_the_expectation() {
    let (file, contract) = http_contracts()
        .into_iter()
        .find(|(file, _)| file == "orders.json")
        .expect("orders.json");
    let server = tokio::task::block_in_place(|| AnnalsServer::start(&[]));

    // The client now expects the total as a text: the server does not say so.
    let mut expecting_more = contract.clone();
    let follow = expecting_more["interactions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|interaction| interaction["name"] == "follow the order until the saga confirms it")
        .unwrap();
    follow["response"]["body"]["/total"] = json!({"type": "string"});
    let broken = play(&server.url(), &file, &expecting_more).await;
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(
        broken[0].contains("\"follow the order until the saga confirms it\": body /total is")
            && broken[0].contains("expected a \"string\""),
        "{broken:?}"
    );

    // Responses that changed under the client: each change is named.
    let place = &contract["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|interaction| interaction["name"] == "place an order")
        .unwrap()["response"];
    let order_id = "01a23398-8963-7253-ae4a-060361bd50c5";
    let captured: serde_json::Map<String, Value> = [("order_id".to_owned(), json!(order_id))]
        .into_iter()
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("etag", "\"0\"".parse().unwrap());
    headers.insert(
        "location",
        format!("/api/v1/orders/{order_id}").parse().unwrap(),
    );
    let good = Response {
        status: 201,
        headers,
        body: json!({"order_id": order_id, "stream": format!("order-{order_id}"), "version": 0, "position": 4}),
    };
    assert_eq!(
        check_response(place, &good, &captured),
        Vec::<String>::new()
    );
    let mut renamed = good.clone();
    renamed.body =
        json!({"id": order_id, "stream": format!("order-{order_id}"), "version": 0, "position": 4});
    assert_eq!(
        check_response(place, &renamed, &captured),
        vec!["body /order_id is missing".to_owned()]
    );
    let mut status = good.clone();
    status.status = 200;
    assert!(
        check_response(place, &status, &captured)[0].starts_with("status is 200, expected 201")
    );
    let mut no_etag = good.clone();
    no_etag.headers.remove("etag");
    assert_eq!(
        check_response(place, &no_etag, &captured),
        vec!["header etag is missing".to_owned()]
    );
    let mut weak_etag = good.clone();
    weak_etag.headers.insert("etag", "W/\"0\"".parse().unwrap());
    assert!(
        check_response(place, &weak_etag, &captured)[0].contains("expected the format \"etag\"")
    );
}
