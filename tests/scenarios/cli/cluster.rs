//! Many `annals serve` nodes found through NATS service discovery (`--cluster-nats-url`):
//! `annals cluster status` lists the nodes that are up, a node killed with SIGKILL leaves
//! the list, and `--server nats://...` reads through a node that answers, passing over
//! one that does not, with a clear error when none is left.
//!
//! On the JetStream log (`--store nats://...` over a real 3-server cluster), every command
//! that takes `--server` reaches a node that answers: `read-models parked` and `inspect`
//! pass over a node that cannot be reached and one answering 500; `chaos inject` (not
//! safe to send twice) passes over a node it could not connect to; with one node stopped
//! they answer from the other.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{AnnalsServer, NatsCluster, NatsServer};

use crate::support::{annals, annals_fails, annals_ok, ndjson, stdout};

/// A node registered with `nats` as `node_id` (embedded store, its own data directory).
fn node(nats: &NatsServer, node_id: &str, extra: &[&str]) -> AnnalsServer {
    let url = nats.url();
    let mut args = vec![
        "--no-saga",
        "--cluster-nats-url",
        &url,
        "--node-id",
        node_id,
    ];
    args.extend_from_slice(extra);
    AnnalsServer::start(&args)
}

/// `annals cluster status --json` until its node ids are `expected` (sorted), or a
/// panic after 15 s; gives the nodes.
fn status_until(nats: &NatsServer, cwd: &Path, expected: &[&str]) -> Vec<Value> {
    nodes_until(&nats.url(), cwd, expected, |_| true)
}

/// `annals cluster status --nats-url nats_url --json` until its node ids are `expected`
/// (sorted) and each node is `fit`, or a panic after 15 s; gives the nodes.
fn nodes_until(
    nats_url: &str,
    cwd: &Path,
    expected: &[&str],
    fit: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = annals(
            &["cluster", "status", "--nats-url", nats_url, "--json"],
            cwd,
        );
        let nodes = if output.status.success() {
            ndjson(&stdout(&output))
        } else {
            Vec::new()
        };
        let ids: Vec<&str> = nodes
            .iter()
            .filter_map(|node| node["node_id"].as_str())
            .collect();
        if ids == expected && nodes.iter().all(&fit) {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "cluster status never listed {expected:?} as expected; last: {nodes:?}"
        );
    }
}

#[test]
fn cluster_status_lists_the_nodes_up_and_server_nats_reads_through_one_that_answers() {
    let temp = tempfile::tempdir().unwrap();
    let cwd = temp.path();
    let nats = NatsServer::start_without_jetstream();
    // A node advertising a URL nothing listens on: it is ready, lags no more than the
    // others and sorts first, so `--server nats://` tries it first and must pass over it.
    let dead_url = format!("http://127.0.0.1:{}", test_support::free_port());
    let mut unreachable = node(&nats, "node-0", &["--advertise-url", &dead_url]);
    let mut a = node(&nats, "node-a", &[]);
    let mut b = node(&nats, "node-b", &[]);

    let nodes = status_until(&nats, cwd, &["node-0", "node-a", "node-b"]);
    let node_a = &nodes[1];
    assert_eq!(node_a["http"], a.url(), "{node_a}");
    assert_eq!(node_a["store"], "embedded");
    assert_eq!(node_a["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(node_a["status"]["healthy"], true, "{node_a}");
    assert_eq!(node_a["status"]["ready"], true, "{node_a}");
    assert_eq!(node_a["status"]["roles"], serde_json::json!([]));
    assert_eq!(node_a["status"]["lag"], 0);
    assert_eq!(nodes[0]["http"], dead_url);
    let table = annals_ok(&["cluster", "status", "--nats-url", &nats.url()], cwd);
    assert!(
        table.contains("NODE") && table.contains("node-b") && table.contains(&b.url()),
        "{table}"
    );

    // Read through whichever node answers: the unreachable one is passed over.
    let server = nats.url();
    let log = annals_ok(&["inspect", "log", "--server", &server, "--json"], cwd);
    assert_eq!(log, "", "the stores are empty");
    annals_ok(&["inspect", "streams", "--server", &server], cwd);

    // A node killed with SIGKILL leaves the list (its NATS connection closes with it).
    let killed = Instant::now();
    a.kill();
    status_until(&nats, cwd, &["node-0", "node-b"]);
    let left_after = killed.elapsed();
    annals_ok(&["inspect", "log", "--server", &server], cwd);

    // With no node left that answers over HTTP: a clear error naming each node tried.
    b.kill();
    status_until(&nats, cwd, &["node-0"]);
    annals_fails(
        &["inspect", "log", "--server", &server],
        cwd,
        8,
        &[
            "no node of the nodes on NATS",
            "node node-0 at",
            "cannot reach",
        ],
    );
    // With no node at all: cluster status and --server say so.
    unreachable.kill();
    status_until(&nats, cwd, &[]);
    annals_fails(
        &["cluster", "status", "--nats-url", &nats.url()],
        cwd,
        8,
        &["no Annals node answered on NATS"],
    );
    annals_fails(
        &["inspect", "log", "--server", &server],
        cwd,
        8,
        &["no Annals node answered on NATS"],
    );
    eprintln!("a killed node left the list after {left_after:?}");
    assert!(
        left_after < Duration::from_secs(15),
        "a killed node left the list after {left_after:?}"
    );
}

#[test]
fn the_node_id_is_kept_in_the_data_directory_and_the_nats_credentials_are_never_logged() {
    let temp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_without_jetstream();
    // A server without authorization accepts any credentials: enough to see where they
    // would show.
    let url = nats.url().replace("nats://", "nats://ops:s3cret@");
    let mut server = AnnalsServer::start(&["--no-saga", "--cluster-nats-url", &url]);
    let node_id = std::fs::read_to_string(server.data_dir().join("node-id"))
        .expect("the node id is written to the data directory")
        .trim()
        .to_owned();
    status_until(&nats, temp.path(), &[node_id.as_str()]);
    server.restart();
    status_until(&nats, temp.path(), &[node_id.as_str()]);
    let log = server.log();
    assert!(
        !log.contains("s3cret"),
        "the NATS password is in the log:\n{log}"
    );
    let status = annals_ok(
        &["cluster", "status", "--nats-url", &url, "--json"],
        temp.path(),
    );
    assert!(!status.contains("s3cret"), "{status}");
}

/// A node on the JetStream log of `cluster`, registered there as `node_id`.
fn store_node(cluster: &NatsCluster, node_id: &str, extra: &[&str]) -> AnnalsServer {
    let urls = cluster.urls();
    let mut args = vec!["--store", urls.as_str(), "--no-saga", "--node-id", node_id];
    args.extend_from_slice(extra);
    AnnalsServer::start(&args)
}

#[test]
fn every_server_command_reaches_a_node_of_the_jetstream_log_that_answers() {
    let temp = tempfile::tempdir().unwrap();
    let cwd = temp.path();
    let cluster = NatsCluster::start();
    // Tried first (ready, no lag, first by id) but unreachable over HTTP: every command
    // must pass over it.
    let dead_url = format!("http://127.0.0.1:{}", test_support::free_port());
    let _unreachable = store_node(&cluster, "node-0", &["--advertise-url", &dead_url]);
    let a = store_node(&cluster, "node-a", &["--chaos"]);
    let mut b = store_node(&cluster, "node-b", &[]);
    let server = cluster.urls();
    let ready = |node: &Value| node["status"]["ready"] == true && node["status"]["lag"] == 0;
    nodes_until(&server, cwd, &["node-0", "node-a", "node-b"], ready);
    let on_a = format!("on node node-a at {}", a.url());
    let on_b = format!("on node node-b at {}", b.url());

    // A read passes over the node it cannot reach.
    let parked = annals_ok(
        &["read-models", "parked", "orders", "--server", &server],
        cwd,
    );
    assert_eq!(parked.trim(), format!("orders {on_a} has parked no events"));
    // A fault is not safe to send twice, but nothing was sent to node-0: node-a takes it.
    // Its command and query routes answer 500 from now on.
    let injected = annals_ok(
        &[
            "chaos",
            "inject",
            "--server",
            &server,
            "--point",
            "http.handler",
            "--effect",
            "status_500",
            "--duration",
            "120",
        ],
        cwd,
    );
    assert!(
        injected.starts_with(&format!("injected fault 1 {on_a}:")),
        "{injected}"
    );
    // A read passes over node-0 (unreachable) and node-a (500): node-b answers.
    let parked = annals_ok(
        &["read-models", "parked", "orders", "--server", &server],
        cwd,
    );
    assert_eq!(parked.trim(), format!("orders {on_b} has parked no events"));
    let retried = annals_ok(
        &["read-models", "retry", "orders", "--server", &server],
        cwd,
    );
    assert!(
        retried.starts_with(&format!("orders {on_b}: retried 0")),
        "{retried}"
    );
    annals_ok(&["inspect", "streams", "--server", &server], cwd);
    // Fault ids are per node.
    annals_fails(
        &["chaos", "clear", "--server", &server, "--id", "1"],
        cwd,
        2,
        &["fault ids are per node"],
    );

    // node-b stopped: no node answers a read; the error names each and why.
    b.kill();
    nodes_until(&server, cwd, &["node-0", "node-a"], ready);
    annals_fails(
        &["read-models", "parked", "orders", "--server", &server],
        cwd,
        8,
        &[
            "no node of the nodes on NATS",
            "node node-0 at",
            "cannot reach it",
            "node node-a at",
            "answered 500",
        ],
    );
    // Clearing every fault is safe to repeat: node-a clears; then it answers again.
    let cleared = annals_ok(&["chaos", "clear", "--server", &server], cwd);
    assert_eq!(cleared.trim(), format!("cleared 1 faults {on_a}"));
    let parked = annals_ok(
        &["read-models", "parked", "orders", "--server", &server],
        cwd,
    );
    assert_eq!(parked.trim(), format!("orders {on_a} has parked no events"));
    let listed = annals_ok(&["chaos", "list", "--server", &server], cwd);
    assert!(
        listed.starts_with(&format!("the faults of node node-a at {}", a.url())),
        "{listed}"
    );
}
