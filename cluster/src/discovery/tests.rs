//! Discovery against a real nats-server: nodes registered on their own connections are
//! found with their metadata and status, and a node whose registration is dropped is
//! not found any more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::NatsServer;

use super::*;

/// How long a discovery waits for pings and statuses in these tests.
const WAIT: Duration = Duration::from_millis(500);

fn node(node_id: &str, port: u16) -> NodeInfo {
    NodeInfo {
        node_id: node_id.to_owned(),
        version: "0.1.0".to_owned(),
        http: format!("http://127.0.0.1:{port}"),
        store: "embedded".to_owned(),
    }
}

fn status_of(
    info: &NodeInfo,
    roles: &Arc<Mutex<Vec<String>>>,
    lag: u64,
) -> impl Fn() -> NodeStatus + Send + Sync + 'static {
    let info = info.clone();
    let roles = roles.clone();
    move || NodeStatus {
        node_id: info.node_id.clone(),
        http: info.http.clone(),
        healthy: true,
        ready: lag == 0,
        roles: roles.lock().unwrap().clone(),
        lag,
        log_head: 42,
    }
}

/// Discovers until `done` holds of the nodes found, or panics after 10 s with the last
/// list.
async fn discover_until(
    client: &async_nats::Client,
    done: impl Fn(&[NodeReport]) -> bool,
) -> Vec<NodeReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = discover(client, WAIT).await.expect("discover");
        if done(&nodes) {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "discovery never settled: {nodes:?}"
        );
    }
}

#[tokio::test]
async fn two_registered_nodes_are_found_with_their_metadata_and_status_and_a_dropped_one_leaves() {
    let nats = NatsServer::start();
    let roles = Arc::new(Mutex::new(vec!["saga".to_owned()]));
    let a = node("node-a", 8081);
    let b = node("node-b", 8082);
    let registration_a = register(
        async_nats::connect(nats.url()).await.unwrap(),
        a.clone(),
        status_of(&a, &roles, 0),
    )
    .await
    .expect("register a");
    let registration_b = register(
        async_nats::connect(nats.url()).await.unwrap(),
        b.clone(),
        status_of(&b, &Arc::new(Mutex::new(Vec::new())), 7),
    )
    .await
    .expect("register b");
    assert_eq!(registration_a.node_id(), "node-a");

    let observer = async_nats::connect(nats.url()).await.unwrap();
    let nodes = discover_until(&observer, |nodes| nodes.len() == 2).await;
    assert_eq!(nodes[0].node_id, "node-a");
    assert_eq!(nodes[0].http, "http://127.0.0.1:8081");
    assert_eq!(nodes[0].store, "embedded");
    assert_eq!(nodes[0].version, "0.1.0");
    let status_a = nodes[0].status.clone().expect("a's status");
    assert_eq!(status_a.roles, vec!["saga".to_owned()]);
    assert!(status_a.healthy && status_a.ready);
    assert_eq!(status_a.log_head, 42);
    assert!(nodes[0].usable());
    assert_eq!(nodes[1].node_id, "node-b");
    let status_b = nodes[1].status.clone().expect("b's status");
    assert_eq!((status_b.lag, status_b.ready), (7, false));
    assert!(!nodes[1].usable());

    // The status is asked anew each time: a role taken shows at the next discovery.
    roles.lock().unwrap().push("relay".to_owned());
    let nodes = discover(&observer, WAIT).await.unwrap();
    assert_eq!(
        nodes[0].status.as_ref().unwrap().roles,
        vec!["saga".to_owned(), "relay".to_owned()]
    );

    // $SRV.STATS carries the status as the endpoint's data.
    let stats = observer
        .request(
            format!("$SRV.STATS.{SERVICE_NAME}.{}", nodes[1].service_id),
            bytes::Bytes::new(),
        )
        .await
        .expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(
        stats["endpoints"][0]["data"]["node_id"], "node-b",
        "{stats}"
    );
    assert_eq!(
        stats["endpoints"][0]["subject"],
        "annals.node.node-b.status"
    );

    drop(registration_a);
    let nodes = discover_until(&observer, |nodes| nodes.len() == 1).await;
    assert_eq!(nodes[0].node_id, "node-b");
    registration_b.stop().await;
    discover_until(&observer, <[NodeReport]>::is_empty).await;
}

#[tokio::test]
async fn a_node_id_that_cannot_be_a_subject_is_refused() {
    let nats = NatsServer::start_without_jetstream();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bad = node("a.b", 1);
    let status = status_of(&bad, &Arc::new(Mutex::new(Vec::new())), 0);
    let error = register(client, bad, status).await.unwrap_err();
    assert!(matches!(error, DiscoveryError::InvalidNodeId(_)), "{error}");
    assert!(!valid_node_id("") && !valid_node_id("a b") && !valid_node_id("a*"));
    assert!(valid_node_id("node-1_x"));
}

#[tokio::test]
async fn no_node_is_an_empty_list() {
    let nats = NatsServer::start_without_jetstream();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let started = Instant::now();
    assert!(discover(&client, WAIT).await.unwrap().is_empty());
    assert!(
        started.elapsed() >= WAIT,
        "the ping waits its whole timeout for answers"
    );
}
