//! Many `annals serve` nodes found through NATS service discovery (`--cluster-nats-url`):
//! `annals cluster status` lists the nodes that are up, a node killed with SIGKILL leaves
//! the list, and `--server nats://...` reads through a node that answers, passing over
//! one that does not, with a clear error when none is left.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{AnnalsServer, NatsServer};

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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = annals(
            &["cluster", "status", "--nats-url", &nats.url(), "--json"],
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
        if ids == expected {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "cluster status never listed {expected:?}; last: {ids:?}"
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
