//! The 3-node cluster harness against real nats-servers: an R3 stream keeps every
//! acknowledged message, gap-free and in order, through a node killed with SIGKILL and
//! restarted, through each other node killed in turn, and through a whole-cluster
//! restart; and the configurations shipped in `deploy/nats-cluster/` parse.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use test_support::{NatsCluster, nats_server_binary};

const STREAM: &str = "CLUSTERED";
const SUBJECT: &str = "clustered.events";

/// How long one step (a publish, a read, a replica catching up) may keep failing while
/// the cluster elects a leader: longer than an election on a loaded machine, bounded.
const STEP_WITHIN: Duration = Duration::from_secs(30);

/// A cluster operation that blocks (kills, restarts, waits on the monitor port), run so
/// the client's tasks keep running meanwhile.
fn blocking<T>(operation: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(operation)
}

/// A client of all three nodes that reconnects quickly, and its JetStream context with a
/// short request timeout, so that a request to a dead leader fails fast and is retried.
async fn connect(cluster: &NatsCluster) -> jetstream::Context {
    let urls: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(5) as u64))
        .connect(urls)
        .await
        .expect("a client of the cluster");
    let mut context = jetstream::new(client);
    context.set_timeout(Duration::from_secs(2));
    context
}

async fn create_r3_stream(context: &jetstream::Context) {
    context
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![SUBJECT.to_owned()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("an R3 file stream");
}

fn payload(n: u64) -> String {
    format!("message {n}")
}

/// Publishes message `n` (id `m<n>`) until it is acknowledged, retrying while the stream
/// has no leader; the id makes a retry of a stored message a duplicate, not a second
/// copy. Asserts it is the stream's message `n + 1`.
async fn publish(context: &jetstream::Context, n: u64, cluster: &NatsCluster) {
    let deadline = Instant::now() + STEP_WITHIN;
    loop {
        let attempt = async {
            context
                .send_publish(
                    SUBJECT,
                    PublishMessage::build()
                        .payload(payload(n).into())
                        .message_id(format!("m{n}")),
                )
                .await?
                .await
        };
        match attempt.await {
            Ok(ack) => {
                assert_eq!(
                    ack.sequence,
                    n + 1,
                    "message {n} was stored at another sequence: {ack:?}"
                );
                return;
            }
            Err(error) => {
                if Instant::now() > deadline {
                    panic!(
                        "message {n} was not acknowledged within {STEP_WITHIN:?}, the last error: {error}\n{}",
                        cluster.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the stream from its leader (retrying until one is elected) and asserts it holds
/// exactly messages `0..count`, at sequences `1..=count`.
async fn assert_holds(context: &jetstream::Context, count: u64, cluster: &NatsCluster) {
    let deadline = Instant::now() + STEP_WITHIN;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match read_all(context, count).await {
            Ok(()) => return,
            Err(error) => last_error = error,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the stream could not be read within {STEP_WITHIN:?}: {last_error}\n{}",
        cluster.logs()
    );
}

/// `Err` for what a leader election explains (a request failed); a wrong message or
/// count panics at once.
async fn read_all(context: &jetstream::Context, count: u64) -> Result<(), String> {
    let mut stream = context
        .get_stream(STREAM)
        .await
        .map_err(|error| error.to_string())?;
    let state = stream
        .info()
        .await
        .map_err(|error| error.to_string())?
        .state
        .clone();
    assert_eq!(
        (state.messages, state.first_sequence, state.last_sequence),
        (count, 1, count),
        "the stream's (messages, first, last) sequence"
    );
    for sequence in 1..=count {
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|error| format!("message {sequence}: {error}"))?;
        assert_eq!(message.sequence, sequence);
        assert_eq!(
            String::from_utf8_lossy(&message.payload),
            payload(sequence - 1),
            "the message at sequence {sequence}"
        );
    }
    Ok(())
}

/// Waits until node `i` holds a current replica of the stream: it leads it, or the
/// leader reports it current with no lag.
async fn wait_until_current(context: &jetstream::Context, cluster: &NatsCluster, i: usize) {
    let name = cluster.name(i);
    let deadline = Instant::now() + STEP_WITHIN;
    let mut last_seen = String::new();
    while Instant::now() < deadline {
        match context.get_stream(STREAM).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => {
                    let cluster_info = info.cluster.clone().unwrap_or_default();
                    let current = cluster_info.leader.as_deref() == Some(name)
                        || cluster_info.replicas.iter().any(|peer| {
                            peer.name == name
                                && peer.current
                                && !peer.offline
                                && peer.lag.unwrap_or(0) == 0
                        });
                    if current {
                        return;
                    }
                    last_seen = format!("{cluster_info:?}");
                }
                Err(error) => last_seen = error.to_string(),
            },
            Err(error) => last_seen = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name}'s replica was not current within {STEP_WITHIN:?}; the last stream cluster info: {last_seen}\n{}",
        cluster.logs()
    );
}

/// The index of the node leading the stream.
async fn stream_leader(context: &jetstream::Context, cluster: &NatsCluster) -> usize {
    let mut stream = context.get_stream(STREAM).await.expect("the stream");
    let info = stream.info().await.expect("the stream's info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .expect("a stream leader");
    cluster.index_of(&leader).expect("a node of the cluster")
}

/// An R3 stream loses no acknowledged message and stays gap-free when its leader is
/// killed mid-stream, the node comes back and catches up, and each of the other two is
/// then killed in turn (the restarted node in every remaining quorum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_survives_each_node_killed_in_turn() {
    let started = Instant::now();
    let mut cluster = blocking(NatsCluster::start);
    println!("the cluster was ready after {:?}", started.elapsed());
    let context = connect(&cluster).await;
    create_r3_stream(&context).await;
    for n in 0..100 {
        publish(&context, n, &cluster).await;
    }

    let leader = stream_leader(&context, &cluster).await;
    blocking(|| cluster.kill(leader));
    assert!(!cluster.is_running(leader));
    for n in 100..200 {
        publish(&context, n, &cluster).await;
    }
    println!(
        "200 messages acknowledged, {} killed, after {:?}",
        cluster.name(leader),
        started.elapsed()
    );

    blocking(|| cluster.restart(leader));
    assert!(cluster.is_running(leader));
    wait_until_current(&context, &cluster, leader).await;
    assert_holds(&context, 200, &cluster).await;
    println!(
        "{} restarted and current after {:?}",
        cluster.name(leader),
        started.elapsed()
    );

    for other in (0..3).filter(|&i| i != leader) {
        blocking(|| cluster.kill(other));
        assert_holds(&context, 200, &cluster).await;
        blocking(|| cluster.restart(other));
        wait_until_current(&context, &cluster, other).await;
        println!(
            "{} killed, the stream read, restarted and current after {:?}",
            cluster.name(other),
            started.elapsed()
        );
    }
    blocking(|| cluster.wait_ready(Duration::from_secs(30))).unwrap_or_else(|e| panic!("{e}"));
    assert_holds(&context, 200, &cluster).await;
    println!("the test took {:?}", started.elapsed());
}

/// Every acknowledged message of an R3 stream survives all three nodes killed at once
/// (SIGKILL, so only what was fsync'd remains) and restarted; the stream then goes on at
/// the next sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_survives_a_whole_cluster_restart() {
    let started = Instant::now();
    let mut cluster = blocking(NatsCluster::start);
    let context = connect(&cluster).await;
    create_r3_stream(&context).await;
    for n in 0..100 {
        publish(&context, n, &cluster).await;
    }

    blocking(|| cluster.kill_all());
    assert!((0..3).all(|i| !cluster.is_running(i)));
    blocking(|| cluster.restart_all());
    assert!((0..3).all(|i| cluster.is_running(i)));
    println!("the cluster was back after {:?}", started.elapsed());

    assert_holds(&context, 100, &cluster).await;
    publish(&context, 100, &cluster).await;
    assert_holds(&context, 101, &cluster).await;
    println!("the test took {:?}", started.elapsed());
}

/// The three configurations shipped in `deploy/nats-cluster/` parse (`nats-server -t`).
#[test]
fn the_deployed_cluster_configurations_parse() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats-cluster");
    for node in ["n1", "n2", "n3"] {
        let config = deploy.join(format!("{node}.conf"));
        let text = std::fs::read_to_string(&config)
            .unwrap_or_else(|error| panic!("{}: {error}", config.display()));
        assert!(
            text.contains("\n  sync_interval: always\n"),
            "{} does not fsync every write",
            config.display()
        );
        let output = test_support::output(
            std::process::Command::new(nats_server_binary())
                .arg("-c")
                .arg(&config)
                .arg("-t")
                .current_dir(&deploy),
        )
        .expect("nats-server runs");
        assert!(
            output.status.success(),
            "nats-server -c {} -t failed: {}{}",
            config.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
