//! A real 3-node NATS JetStream cluster per test: servers `n1`..`n3` of cluster
//! `annals-test` on free loopback ports (client, cluster route and HTTP monitor port
//! each), routed to each other, JetStream on with a store directory of their own and
//! `sync_interval: always`, each from a configuration file written into its temporary
//! directory. Killed on `Drop`.
//!
//! What holds:
//! - [`NatsCluster::start`] and [`NatsCluster::restart_all`] return only once every
//!   node answers `/healthz` with 200 (JetStream current with its meta leader and every
//!   stream and consumer it holds caught up), all three name the same meta leader in
//!   `/jsz`, and that leader counts three nodes and reports the other two current;
//!   otherwise they panic within [`READY_WITHIN`] with every node's log.
//! - A node keeps its ports and its store directory across [`NatsCluster::kill`] and
//!   [`NatsCluster::restart`]: a restarted node rejoins with what it had written to disk.
//! - Ports are probed free, then bound by the servers: a port taken in between makes a
//!   server exit, and `start` tries again on other ports (up to five times).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::nats_server_binary;

/// How long the cluster may take to elect its meta leader and have every running node
/// current: generous for a loaded 2-core CI machine, bounded so a broken cluster fails.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// How many nodes a [`NatsCluster`] has.
pub const NODES: usize = 3;

/// The cluster's name, in every node's `cluster { name }`.
pub const CLUSTER_NAME: &str = "annals-test";

/// Three nats-server processes forming one JetStream cluster, each with a temporary
/// directory holding its configuration, its store and its log.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    /// `n1`, `n2`, `n3`.
    name: String,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts three routed servers with JetStream and returns once the meta group has a
    /// leader and all three are current with it.
    pub fn start() -> NatsCluster {
        let mut cluster = NatsCluster {
            nodes: (1..=NODES)
                .map(|n| Node {
                    name: format!("n{n}"),
                    client_port: 0,
                    cluster_port: 0,
                    http_port: 0,
                    dir: tempfile::tempdir().expect("a temporary directory"),
                    child: None,
                })
                .collect(),
        };
        let mut last_failure = String::new();
        for _ in 0..5 {
            let ports = free_ports(3 * NODES);
            for (i, node) in cluster.nodes.iter_mut().enumerate() {
                node.client_port = ports[3 * i];
                node.cluster_port = ports[3 * i + 1];
                node.http_port = ports[3 * i + 2];
            }
            cluster.write_configs();
            let started = (0..NODES).all(|i| cluster.spawn(i));
            if started {
                match cluster.wait_ready(READY_WITHIN) {
                    Ok(()) => return cluster,
                    // A node that exited lost a port race: try other ports. A cluster that
                    // runs but never gets ready is a real failure.
                    Err(failure) if cluster.any_exited() => last_failure = failure,
                    Err(failure) => panic!("{failure}"),
                }
            } else {
                last_failure = format!("a node did not start:\n{}", cluster.logs());
            }
            cluster.kill_all();
        }
        panic!(
            "the NATS cluster did not start on any of 5 sets of free ports; the last try: {last_failure}"
        );
    }

    /// `nats://127.0.0.1:<client port of node i>`, `i` in `0..3`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The three client URLs, comma-separated, for a client that fails over between them.
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s server name: `n1`, `n2` or `n3` (as in a stream's cluster info).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node named `name` (`n1` is 0), if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// `http://127.0.0.1:<monitor port of node i>`, for `/healthz`, `/jsz` and the like.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// Kills node `i` (SIGKILL) and waits for it; nothing if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again with the same ports and store directory (killing it first
    /// if it runs), and returns once it accepts client connections. It may not be
    /// current yet: [`wait_ready`](Self::wait_ready) waits for that.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + READY_WITHIN;
        while !self.spawn(i) {
            assert!(
                Instant::now() < deadline,
                "node {} did not come back on its ports; its log:\n{}",
                self.nodes[i].name,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills every node (SIGKILL), one after the other.
    pub fn kill_all(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }

    /// Starts every node again (killing those that run) and returns once the meta group
    /// has a leader and every node is current, its streams included.
    pub fn restart_all(&mut self) {
        self.kill_all();
        for i in 0..NODES {
            self.restart(i);
        }
        if let Err(failure) = self.wait_ready(READY_WITHIN) {
            panic!("{failure}");
        }
    }

    /// Whether node `i`'s process runs (started and not exited).
    pub fn is_running(&self, i: usize) -> bool {
        // `try_wait` needs `&mut`: the process's state says the same without reaping it.
        self.nodes[i].child.as_ref().is_some_and(|child| {
            std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .is_ok_and(|stat| !process_state_is_zombie(&stat))
        })
    }

    /// Node `i`'s JetStream store directory (kept across kills and restarts).
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("jetstream")
    }

    /// Node `i`'s log so far (every run of it, appended), for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Waits until every running node answers `/healthz` with 200 (its JetStream, streams
    /// and consumers current), all name the same meta leader in `/jsz`, and that leader
    /// reports every other running node current. Needs a quorum (two nodes) running;
    /// fails with every node's log after `limit`.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) =
                (0..NODES).find(|&i| self.nodes[i].child.is_some() && !self.is_running(i))
            {
                return Err(format!(
                    "node {} exited; the cluster's logs:\n{}",
                    self.nodes[i].name,
                    self.logs()
                ));
            }
            let waiting_for = match self.not_ready() {
                None => return Ok(()),
                Some(why) => why,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "the NATS cluster was not ready within {limit:?} ({waiting_for}); the cluster's logs:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Why the running nodes are not ready yet, or `None` when they are: each answers
    /// `/healthz` with 200, all name the same meta leader, which runs, and the leader
    /// counts a cluster of three and reports every other running node current.
    fn not_ready(&self) -> Option<String> {
        let running: Vec<usize> = (0..NODES)
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        let mut leaders = Vec::new();
        let mut waiting_for = Vec::new();
        for &i in &running {
            let name = &self.nodes[i].name;
            match self.node_meta(i) {
                Ok(meta) => leaders.push(meta["leader"].as_str().unwrap_or_default().to_owned()),
                Err(why) => waiting_for.push(format!("{name}: {why}")),
            }
        }
        if !waiting_for.is_empty() {
            return Some(waiting_for.join("; "));
        }
        let leader = leaders.first().cloned().unwrap_or_default();
        if leader.is_empty() || leaders.iter().any(|other| *other != leader) {
            return Some(format!("the nodes name the meta leaders {leaders:?}"));
        }
        let Some(leader_index) = running
            .iter()
            .copied()
            .find(|&i| self.nodes[i].name == leader)
        else {
            return Some(format!("the meta leader {leader} is not running"));
        };
        let meta = match self.node_meta(leader_index) {
            Ok(meta) => meta,
            Err(why) => return Some(format!("{leader}: {why}")),
        };
        if meta["cluster_size"].as_u64() != Some(NODES as u64) {
            return Some(format!(
                "the meta leader {leader} counts a cluster of {}",
                meta["cluster_size"]
            ));
        }
        let replicas = meta["replicas"].as_array().cloned().unwrap_or_default();
        let behind: Vec<&str> = running
            .iter()
            .map(|&i| self.nodes[i].name.as_str())
            .filter(|&name| name != leader)
            .filter(|&name| {
                !replicas
                    .iter()
                    .any(|peer| peer["name"] == name && peer["current"] == true)
            })
            .collect();
        (!behind.is_empty())
            .then(|| format!("the meta leader {leader} does not report {behind:?} current"))
    }

    /// Node `i`'s `meta_cluster` from `/jsz`, once its `/healthz` answers 200; why not,
    /// otherwise.
    fn node_meta(&self, i: usize) -> Result<serde_json::Value, String> {
        let port = self.nodes[i].http_port;
        match http_get(port, "/healthz") {
            Ok((200, _)) => {}
            Ok((status, body)) => return Err(format!("/healthz {status} {}", body.trim())),
            Err(error) => return Err(format!("/healthz: {error}")),
        }
        let jsz = match http_get(port, "/jsz") {
            Ok((200, body)) => body,
            Ok((status, body)) => return Err(format!("/jsz {status} {}", body.trim())),
            Err(error) => return Err(format!("/jsz: {error}")),
        };
        let mut jsz: serde_json::Value =
            serde_json::from_str(&jsz).map_err(|error| format!("/jsz is not JSON: {error}"))?;
        Ok(jsz["meta_cluster"].take())
    }

    /// Every node's log, each under its name, for failure messages.
    pub fn logs(&self) -> String {
        (0..NODES)
            .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("nats-server.log")
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("nats-server.conf")
    }

    fn any_exited(&self) -> bool {
        (0..NODES).any(|i| self.nodes[i].child.is_some() && !self.is_running(i))
    }

    /// Writes each node's configuration file for the current ports.
    fn write_configs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let routes = self
                .nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, other)| format!("nats-route://127.0.0.1:{}", other.cluster_port))
                .collect::<Vec<_>>()
                .join(", ");
            let config = format!(
                "# Written by test-support's NatsCluster.\n\
                 server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{http}\n\
                 jetstream {{\n  \
                   store_dir: {store:?}\n  \
                   # Fsync every write before the PubAck, as a deployment must.\n  \
                   sync_interval: always\n\
                 }}\n\
                 cluster {{\n  \
                   name: {CLUSTER_NAME}\n  \
                   listen: 127.0.0.1:{cluster}\n  \
                   routes: [{routes}]\n\
                 }}\n",
                name = node.name,
                client = node.client_port,
                http = node.http_port,
                store = self.store_dir(i).display().to_string(),
                cluster = node.cluster_port,
            );
            std::fs::write(self.config_path(i), config).expect("a configuration file");
        }
    }

    /// Spawns node `i` and waits until it accepts client and monitor connections; false
    /// (and no child) if it exited or did not within 10 s.
    fn spawn(&mut self, i: usize) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("a log file");
        let mut command = Command::new(nats_server_binary());
        command
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a log file")))
            .stderr(Stdio::from(log));
        let child = crate::spawn(&mut command).unwrap_or_else(|error| {
            panic!("cannot start {}: {error}", nats_server_binary().display())
        });
        self.nodes[i].child = Some(child);
        let node = &self.nodes[i];
        let (client, http) = (node.client_port, node.http_port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", client)).is_ok()
                && TcpStream::connect(("127.0.0.1", http)).is_ok()
            {
                return true;
            }
            if !self.is_running(i) || Instant::now() > deadline {
                self.kill(i);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether a `/proc/<pid>/stat` line says the process is a zombie (exited, not reaped)
/// or dead. The state follows the parenthesised command name.
fn process_state_is_zombie(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_none_or(|state| state == 'Z' || state == 'X')
}

/// `n` distinct loopback ports that were free a moment ago: all bound at once (so no two
/// are the same), then released for the servers to bind.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound port").port())
        .collect()
}

/// A plain HTTP/1.0 GET of `path` on the loopback `port`: the status and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {head:?}"),
            )
        })?;
    Ok((status, body.to_owned()))
}
