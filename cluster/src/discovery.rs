//! Service discovery over the NATS service API ("micro"): every `annals serve` given a
//! cluster NATS URL registers itself as one instance of the service [`SERVICE_NAME`]
//! ([`register`]), and `annals cluster status` or the CLI's `--server nats://...` finds
//! the nodes that are up ([`discover`]).
//!
//! What a registered node answers:
//! - `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (bare, `.annals` and `.annals.<id>`), by
//!   the library: name `annals`, the node's version, and the metadata `node_id`, `http`
//!   (its HTTP base URL) and `store` (`embedded` or `nats`). The `data` of the `status`
//!   endpoint in `$SRV.STATS` is the node's [`NodeStatus`].
//! - `annals.node.<node_id>.status` ([`status_subject`]): the node's [`NodeStatus`] now,
//!   as JSON.
//!
//! What holds: a node answers only while its [`Registration`] lives; dropping it (or
//! [`Registration::stop`]) unsubscribes every subject, so the node leaves the next
//! [`discover`]. A node that dies without that (`kill -9`) leaves with its NATS
//! connection, which the NATS server drops at once on a closed socket, or after its
//! ping timeout on a lost one. Nothing here carries a NATS URL: the metadata is the node
//! id, the HTTP URL and the store kind only, so credentials in a URL never leave the
//! node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Service, ServiceExt};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// The name every Annals node registers under (`$SRV.PING.annals`).
pub const SERVICE_NAME: &str = "annals";

/// The subject of a node's `status` endpoint.
pub fn status_subject(node_id: &str) -> String {
    format!("annals.node.{node_id}.status")
}

/// What a node says about itself at registration: fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id: letters, digits, `-` and `_` (it is part of a subject).
    pub node_id: String,
    /// The node's version (semver, the `annals` crate's version).
    pub version: String,
    /// The node's HTTP base URL, e.g. `http://10.0.0.5:8080` (no credentials).
    pub http: String,
    /// Where its log lives: `embedded` or `nats`.
    pub store: String,
}

/// A node's state now, as its `status` endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// Its HTTP base URL.
    pub http: String,
    /// What its `/healthz` says: alive, and the store's writer has not failed.
    pub healthy: bool,
    /// What its `/readyz` says: it can take traffic.
    pub ready: bool,
    /// The singleton roles it holds now (`saga`, `relay`), from its leases.
    pub roles: Vec<String>,
    /// Events its slowest read model is behind the log head.
    pub lag: u64,
    /// The position the next appended event will get.
    pub log_head: u64,
}

/// A node found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id (its `node_id` metadata).
    pub node_id: String,
    /// The id the service library gave this registration (new at every start).
    pub service_id: String,
    /// The node's version.
    pub version: String,
    /// Its HTTP base URL (its `http` metadata).
    pub http: String,
    /// Its store kind (its `store` metadata).
    pub store: String,
    /// Its status, if its `status` endpoint answered.
    pub status: Option<NodeStatus>,
    /// Why there is no status: the endpoint did not answer in time, or answered
    /// something else than a status.
    pub error: Option<String>,
}

impl NodeReport {
    /// Healthy and ready, by its own status.
    pub fn usable(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|status| status.healthy && status.ready)
    }
}

/// Why discovery failed. Every variant is for the operator to read: the NATS server
/// cannot be reached, or a node id is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The node id cannot be part of a subject: choose another (`--node-id`).
    #[error(
        "invalid node id {0:?}: use letters, digits, '-' and '_' only (it becomes part of a NATS subject)"
    )]
    InvalidNodeId(String),
    /// The service could not be added or its endpoint subscribed: NATS refused or the
    /// connection is gone; the caller retries or gives up.
    #[error("cannot register the node with NATS: {0}")]
    Register(String),
    /// The ping could not be sent: the connection to NATS is gone.
    #[error("cannot ask NATS for the nodes: {0}")]
    Discover(String),
}

/// A node's registration: it answers pings and its status endpoint while this lives.
#[derive(Debug)]
pub struct Registration {
    node_id: String,
    service: Option<Service>,
    endpoint: JoinHandle<()>,
}

impl Registration {
    /// The registered node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Stops answering and unsubscribes (as dropping does).
    pub async fn stop(mut self) {
        self.endpoint.abort();
        if let Some(service) = self.service.take() {
            let _ = service.stop().await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.endpoint.abort();
        if let Some(service) = self.service.take() {
            // `Service::stop` does nothing that waits: one poll finishes it.
            let _ = service.stop().now_or_never();
        }
    }
}

/// Registers `node` on `client` as an instance of [`SERVICE_NAME`], answering its
/// `status` endpoint (and the `data` of `$SRV.STATS`) with `status()`, called at every
/// request (keep it cheap: in-memory reads).
pub async fn register(
    client: async_nats::Client,
    node: NodeInfo,
    status: impl Fn() -> NodeStatus + Send + Sync + 'static,
) -> Result<Registration, DiscoveryError> {
    if !valid_node_id(&node.node_id) {
        return Err(DiscoveryError::InvalidNodeId(node.node_id));
    }
    let status: Arc<dyn Fn() -> NodeStatus + Send + Sync> = Arc::new(status);
    let for_stats = status.clone();
    let metadata = HashMap::from([
        ("node_id".to_owned(), node.node_id.clone()),
        ("http".to_owned(), node.http.clone()),
        ("store".to_owned(), node.store.clone()),
    ]);
    let service = client
        .service_builder()
        .description("An Annals event store node (HTTP API at the `http` metadata)")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| {
            serde_json::to_value(for_stats()).unwrap_or(serde_json::Value::Null)
        })
        .start(SERVICE_NAME, &node.version)
        .await
        .map_err(|error| DiscoveryError::Register(error.to_string()))?;
    let mut endpoint = match service
        .endpoint_builder()
        .name("status")
        .add(status_subject(&node.node_id))
        .await
    {
        Ok(endpoint) => endpoint,
        Err(error) => {
            let _ = service.stop().await;
            return Err(DiscoveryError::Register(error.to_string()));
        }
    };
    let node_id = node.node_id.clone();
    let answering = node_id.clone();
    let endpoint_task = tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let answer = serde_json::to_vec(&status())
                .map(bytes::Bytes::from)
                .map_err(|error| async_nats::service::error::Error {
                    status: error.to_string(),
                    code: 500,
                });
            if let Err(error) = request.respond(answer).await {
                tracing::debug!(node_id = %answering, %error, "cannot answer a status request");
            }
        }
    });
    tracing::info!(node_id = %node_id, http = %node.http, "registered with NATS service discovery");
    Ok(Registration {
        node_id,
        service: Some(service),
        endpoint: endpoint_task,
    })
}

/// Whether `node_id` can be a subject token and a service metadata value.
pub fn valid_node_id(node_id: &str) -> bool {
    !node_id.is_empty()
        && node_id.len() <= 128
        && node_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The answer of `$SRV.PING` (the fields used here).
#[derive(Debug, Deserialize)]
struct Pong {
    name: String,
    id: String,
    version: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

/// Every node answering `$SRV.PING.annals` within `timeout`, each with its status (asked
/// of every node at once, each answer within `timeout` too), sorted by node id. No node
/// is an empty list, not an error.
pub async fn discover(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<Vec<NodeReport>, DiscoveryError> {
    let pongs = ping(client, timeout).await?;
    let asks = pongs.into_iter().map(|pong| async move {
        let metadata = pong.metadata.unwrap_or_default();
        let field = |name: &str| metadata.get(name).cloned().unwrap_or_default();
        let node_id = field("node_id");
        let (status, error) = if valid_node_id(&node_id) {
            match node_status(client, &node_id, timeout).await {
                Ok(status) => (Some(status), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, Some(format!("invalid node id {node_id:?}")))
        };
        NodeReport {
            node_id,
            service_id: pong.id,
            version: pong.version,
            http: field("http"),
            store: field("store"),
            status,
            error,
        }
    });
    let mut nodes = futures_util::future::join_all(asks).await;
    nodes.sort_by(|a, b| {
        (a.node_id.as_str(), a.service_id.as_str()).cmp(&(b.node_id.as_str(), &b.service_id))
    });
    Ok(nodes)
}

/// Every answer to `$SRV.PING.annals` within `timeout` (one per registration).
async fn ping(client: &async_nats::Client, timeout: Duration) -> Result<Vec<Pong>, DiscoveryError> {
    let failed = |error: &dyn std::fmt::Display| DiscoveryError::Discover(error.to_string());
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|error| failed(&error))?;
    client
        .publish_with_reply(
            format!("$SRV.PING.{SERVICE_NAME}"),
            inbox,
            bytes::Bytes::new(),
        )
        .await
        .map_err(|error| failed(&error))?;
    client.flush().await.map_err(|error| failed(&error))?;
    let mut pongs: Vec<Pong> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        match serde_json::from_slice::<Pong>(&message.payload) {
            Ok(pong) if pong.name == SERVICE_NAME => {
                if !pongs.iter().any(|seen| seen.id == pong.id) {
                    pongs.push(pong);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "an answer to the ping is not a service's"),
        }
    }
    Ok(pongs)
}

/// The status of node `node_id`, or why there is none.
async fn node_status(
    client: &async_nats::Client,
    node_id: &str,
    timeout: Duration,
) -> Result<NodeStatus, String> {
    let request = client.request(status_subject(node_id), bytes::Bytes::new());
    let message = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => return Err(format!("its status endpoint failed: {error}")),
        Err(_) => {
            return Err(format!(
                "its status endpoint did not answer within {timeout:?}"
            ));
        }
    };
    serde_json::from_slice(&message.payload)
        .map_err(|error| format!("its status endpoint answered something else: {error}"))
}

#[cfg(test)]
mod tests;
