//! Chaos from outside: `annals chaos inject|list|clear` against a real `annals serve
//! --chaos` (and without `--chaos`: the clear error), and every experiment shipped in
//! `experiments/` run by `annals chaos run` against a real server (and a real
//! nats-server for the NATS outage), each expected to pass. For the fsync experiment the
//! test plays the process supervisor: when the server has gone it starts it again on the
//! same port and data directory. An experiment refuses to start (exit 9) once an error
//! budget is really spent: injected 500s burn command availability.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{AnnalsServer, NatsServer, annals_command};

/// `annals chaos run`'s exit code when an error budget is below the threshold.
const BUDGET_EXHAUSTED: i32 = 9;

fn experiment(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(format!("{name}.toml"))
}

fn annals(args: &[&str]) -> Output {
    let mut command = annals_command();
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    test_support::spawn(&mut command)
        .and_then(std::process::Child::wait_with_output)
        .unwrap_or_else(|error| panic!("annals {args:?} did not run: {error}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `annals chaos run --experiment <name> --json` against `server` and returns its
/// output; while it runs, restarts the server whenever it has gone (a supervisor).
async fn run_experiment(server: &mut AnnalsServer, name: &str) -> Output {
    let url = server.url();
    let file = experiment(name);
    let file = file.to_str().expect("a UTF-8 path").to_owned();
    let running = tokio::task::spawn_blocking(move || {
        annals(&[
            "chaos",
            "run",
            "--server",
            &url,
            "--experiment",
            &file,
            "--json",
        ])
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "{name} ran for more than 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let address = format!("127.0.0.1:{}", server.port());
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            // The server has gone: start it again, as its supervisor would.
            tokio::task::block_in_place(|| server.restart());
        }
    }
    running.await.expect("the experiment's thread")
}

/// Asserts that the experiment's report says the steady state held.
fn assert_held(name: &str, output: &Output, server: &AnnalsServer) -> Value {
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}\nthe server's log:\n{}",
        output.status,
        server.log()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(report["held"], true, "{report}");
    assert_eq!(report["experiment"], name);
    for fault in report["faults"].as_array().expect("faults") {
        assert!(fault["healed_after_secs"].is_number(), "{report}");
    }
    assert_eq!(report["orders_lost"], 0, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_outage_experiment_holds() {
    let nats = NatsServer::start();
    let mut server = AnnalsServer::start(&["--chaos", "--nats-url", &nats.url()]);
    // The steady state includes a healthy relay: let it connect first.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outbox: Value = http
            .get(format!("{}/api/v1/outbox", server.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if outbox["health"]["status"] == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never got healthy: {outbox}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = run_experiment(&mut server, "nats-outage").await;
    let report = assert_held("nats-outage", &output, &server);
    assert!(report["load"]["orders"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["server_away"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fsync_experiment_restarts_the_server_and_loses_nothing() {
    let mut server = AnnalsServer::start(&["--chaos"]);
    let output = run_experiment(&mut server, "fsync-errors").await;
    let report = assert_held("fsync-errors", &output, &server);
    // The commands that met the failure, or came while the server was away, failed.
    assert!(report["load"]["errors"].as_u64().unwrap() > 0, "{report}");
    assert!(report["load"]["orders"].as_u64().unwrap() > 0, "{report}");
    assert!(server.log().contains("store.fsync"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_experiment_holds() {
    let mut server = AnnalsServer::start(&["--chaos"]);
    let output = run_experiment(&mut server, "saga-flaky").await;
    let report = assert_held("saga-flaky", &output, &server);
    assert_eq!(report["orders_unsettled"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_experiment_holds() {
    let mut server = AnnalsServer::start(&["--chaos"]);
    let output = run_experiment(&mut server, "projection-panic").await;
    let report = assert_held("projection-panic", &output, &server);
    assert!(
        report["faults"][0]["injections"].as_u64().unwrap() >= 1,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_http_experiment_holds() {
    let mut server = AnnalsServer::start(&["--chaos"]);
    let output = run_experiment(&mut server, "slow-http").await;
    assert_held("slow-http", &output, &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_refuses_to_start_on_a_spent_budget() {
    let server = AnnalsServer::start(&["--chaos"]);
    let url = server.url();
    let injected = annals(&[
        "chaos",
        "inject",
        "--server",
        &url,
        "--point",
        "http.handler",
        "--effect",
        "status_500",
        "--count",
        "20",
    ]);
    assert!(injected.status.success(), "{}", text(&injected.stderr));
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let status = http
            .post(format!("{url}/api/v1/orders"))
            .json(&json!({"customer_id": "c-1", "lines": [{"sku": "s-1", "quantity": 1}]}))
            .send()
            .await
            .expect("the server answers")
            .status();
        assert_eq!(status.as_u16(), 500);
    }
    let slo: Value = http
        .get(format!("{url}/api/v1/slo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let availability = slo["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|objective| objective["name"] == "command-availability")
        .unwrap()
        .clone();
    assert!(
        availability["error_budget_remaining"].as_f64().unwrap() < 0.5,
        "{availability}"
    );
    let file = experiment("saga-flaky");
    let output = annals(&[
        "chaos",
        "run",
        "--server",
        &url,
        "--experiment",
        file.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(BUDGET_EXHAUSTED), "{stderr}");
    assert!(
        stderr.contains("the error budget of command-availability has"),
        "{stderr}"
    );
    // Nothing was injected by the refused experiment.
    let list = annals(&["chaos", "list", "--server", &url, "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["faults"], json!([]), "{list}");
}

#[test]
fn inject_list_and_clear_faults() {
    let server = AnnalsServer::start(&["--chaos"]);
    let url = server.url();
    let injected = annals(&[
        "chaos",
        "inject",
        "--server",
        &url,
        "--point",
        "relay.publish",
        "--effect",
        "delay",
        "--delay-ms",
        "50",
        "--probability",
        "0.5",
        "--duration",
        "60",
    ]);
    let stdout = text(&injected.stdout);
    assert!(injected.status.success(), "{}", text(&injected.stderr));
    assert!(stdout.starts_with("injected fault "), "{stdout}");
    assert!(
        stdout.contains("relay.publish delay 50 ms p=0.5"),
        "{stdout}"
    );
    let listed = annals(&["chaos", "list", "--server", &url]);
    let table = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    for point in [
        "store.fsync",
        "relay.publish",
        "projection.apply",
        "http.handler",
    ] {
        assert!(table.contains(point), "{table}");
    }
    assert!(table.contains("relay.publish delay 50 ms p=0.5"), "{table}");
    let json: Value =
        serde_json::from_slice(&annals(&["chaos", "list", "--server", &url, "--json"]).stdout)
            .unwrap();
    let id = json["faults"][0]["id"].as_u64().expect("one fault");
    let cleared = annals(&["chaos", "clear", "--server", &url, "--id", &id.to_string()]);
    assert!(cleared.status.success(), "{}", text(&cleared.stderr));
    assert_eq!(text(&cleared.stdout).trim(), format!("cleared fault {id}"));
    let again = annals(&["chaos", "clear", "--server", &url, "--id", &id.to_string()]);
    assert_eq!(again.status.code(), Some(7), "{}", text(&again.stderr));
    // A fault the server refuses: its reason, as bad usage.
    let refused = annals(&[
        "chaos",
        "inject",
        "--server",
        &url,
        "--point",
        "projection.apply",
        "--effect",
        "error",
        "--count",
        "1",
    ]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("projection.apply has no error effect"),
        "{stderr}"
    );
    let all = annals(&["chaos", "clear", "--server", &url]);
    assert_eq!(text(&all.stdout).trim(), "cleared 0 faults");
}

#[test]
fn without_chaos_the_commands_say_so() {
    let server = AnnalsServer::start(&[]);
    let url = server.url();
    for args in [
        vec!["chaos", "list", "--server", &url],
        vec!["chaos", "clear", "--server", &url],
        vec![
            "chaos",
            "inject",
            "--server",
            &url,
            "--point",
            "relay.publish",
            "--effect",
            "error",
            "--count",
            "1",
        ],
    ] {
        let output = annals(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(7), "{args:?}: {stderr}");
        assert!(stderr.contains("was not started with --chaos"), "{stderr}");
    }
}
