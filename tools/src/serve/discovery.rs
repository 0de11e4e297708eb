//! The server's registration for service discovery (`--cluster-nats-url`): it registers
//! as one node of the NATS service `annals` ([`cluster::discovery::register`]) with its
//! node id, version, advertised HTTP URL and store kind, and answers its status: healthy
//! and ready as `/healthz` and `/readyz` say ([`api::liveness`], [`api::readiness`]), the
//! lag of its slowest read model, the log head, and the singleton roles it holds
//! ([`Roles`], filled by the leases).
//!
//! What holds: the NATS URL (it may carry credentials) is never logged nor advertised;
//! only its redacted form is ([`outbox::config::redact`]). The node id is the flag's, else
//! the one kept in the data directory's file `node-id`, else a new one written there, so
//! a node keeps its id across restarts. A NATS server away at start does not stop the
//! server: the client connects (and registers) in the background and reconnects forever.

use std::path::Path;

use anyhow::Context as _;
use api::AppState;
use cluster::discovery::{NodeInfo, NodeStatus, Registration};

/// The singleton roles (`saga`, `relay`) this node holds now; the leases fill it, the
/// status reads it.
pub(crate) type Roles = cluster::lease::Roles;

/// The name of the data directory's file that keeps the node id.
const NODE_ID_FILE: &str = "node-id";

/// The service discovery flags of `annals serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Register this node for service discovery with this NATS server (comma-separated
    /// URLs for a cluster): `annals cluster status` and `--server nats://...` find it
    /// there. The URL may hold credentials; it is never logged [default: not registered].
    #[arg(
        long,
        env = "ANNALS_CLUSTER_NATS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    cluster_nats_url: Option<String>,
    /// This node's id in the cluster: letters, digits, '-' and '_' [default: the one kept
    /// in the data directory's file `node-id`, made on first start].
    #[arg(long, env = "ANNALS_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// The HTTP base URL other nodes and the CLI reach this node at [default: from
    /// --listen, https with --tls-cert; an unspecified address (0.0.0.0) is replaced by
    /// the host name].
    #[arg(long, env = "ANNALS_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
}

/// The service discovery settings in force.
#[derive(Clone, PartialEq, Default)]
pub struct ClusterSettings {
    /// The NATS server(s) to register with; `None`: not registered. May hold
    /// credentials: never printed ([`std::fmt::Debug`] redacts it).
    pub nats_url: Option<String>,
    /// The node id given; `None`: the data directory's.
    pub node_id: Option<String>,
    /// The HTTP URL given; `None`: from the listen address.
    pub advertise_url: Option<String>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field(
                "nats_url",
                &self.nats_url.as_deref().map(outbox::config::redact),
            )
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .finish()
    }
}

impl ClusterArgs {
    /// The settings, the node id checked.
    pub(super) fn settings(self) -> anyhow::Result<ClusterSettings> {
        if let Some(node_id) = &self.node_id
            && !cluster::discovery::valid_node_id(node_id)
        {
            return Err(cluster::discovery::DiscoveryError::InvalidNodeId(node_id.clone()).into());
        }
        let nats_url = self.cluster_nats_url.filter(|url| !url.trim().is_empty());
        if let Some(url) = &nats_url {
            crate::cluster::server_addresses(url)?;
        }
        Ok(ClusterSettings {
            nats_url,
            node_id: self.node_id,
            advertise_url: self.advertise_url,
        })
    }
}

/// The node's registration while the server runs; dropping it unregisters.
pub(super) struct Node {
    _registration: Registration,
    /// Kept for the leases to fill.
    pub(super) _roles: Roles,
}

/// Registers the server (whose API state is `state`) for service discovery if
/// `settings` name a cluster NATS URL; says so if not.
pub(super) async fn register(
    settings: &super::Settings,
    state: &AppState,
    roles: Roles,
) -> anyhow::Result<Option<Node>> {
    let cluster = &settings.cluster;
    let Some(url) = &cluster.nats_url else {
        tracing::info!("service discovery off (no --cluster-nats-url)");
        return Ok(None);
    };
    let node_id = match &cluster.node_id {
        Some(node_id) => node_id.clone(),
        None => node_id_of(&settings.data_dir)?,
    };
    let http = match &cluster.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => advertised_url(&settings.listen, settings.tls.is_some())?,
    };
    let client = connect(url, &settings.nats_tls).await?;
    let node = NodeInfo {
        node_id: node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        http: http.clone(),
        store: match settings.store {
            super::StoreBackend::Embedded => "embedded",
            super::StoreBackend::JetStream(_) => "nats",
        }
        .to_owned(),
    };
    let status = status_of(state.clone(), node_id.clone(), http, roles.clone());
    let registration = cluster::discovery::register(client, node, status).await?;
    tracing::info!(
        %node_id,
        nats_url = %outbox::config::redact(url),
        "service discovery on"
    );
    Ok(Some(Node {
        _registration: registration,
        _roles: roles,
    }))
}

/// The node's status now, from the API state: what the probes say, the slowest read
/// model's lag, the log head and the roles held.
fn status_of(
    state: AppState,
    node_id: String,
    http: String,
    roles: Roles,
) -> impl Fn() -> NodeStatus + Send + Sync + 'static {
    move || {
        let lag = state
            .projections()
            .map(|projections| {
                projections
                    .status()
                    .iter()
                    .map(|status| status.lag)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        NodeStatus {
            node_id: node_id.clone(),
            http: http.clone(),
            healthy: api::liveness(&state).is_ok(),
            ready: api::readiness(&state).is_ok(),
            roles: roles.held(),
            lag,
            log_head: state.store().next_position().0,
        }
    }
}

/// Connects to the cluster's NATS in the background: the server starts even while NATS
/// is away, and the registration takes effect once connected.
pub(super) async fn connect(
    url: &str,
    tls: &outbox::NatsTls,
) -> anyhow::Result<async_nats::Client> {
    let addresses = crate::cluster::server_addresses(url)?;
    let mut options = async_nats::ConnectOptions::new()
        .name("annals-discovery")
        .retry_on_initial_connect()
        .max_reconnects(None);
    if tls.is_configured() {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    options.connect(addresses).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot connect to the cluster NATS {}: {error}",
            outbox::config::redact(url)
        )
    })
}

/// The node id kept in `data_dir`, made and written there on first start.
pub(super) fn node_id_of(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let node_id = text.trim().to_owned();
            if !cluster::discovery::valid_node_id(&node_id) {
                anyhow::bail!(
                    "the node id in {} ({node_id:?}) is invalid: use letters, digits, '-' and \
                     '_', or remove the file for a new one",
                    path.display()
                );
            }
            Ok(node_id)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node_id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            std::fs::write(&path, format!("{node_id}\n"))
                .with_context(|| format!("cannot write the node id to {}", path.display()))?;
            Ok(node_id)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read the node id in {}", path.display()))
        }
    }
}

/// The HTTP base URL of a server listening on `listen`: its address, or the host name
/// for an unspecified one (`0.0.0.0`, `[::]`).
pub(super) fn advertised_url(listen: &str, tls: bool) -> anyhow::Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let address: std::net::SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "cannot tell the URL to advertise from --listen {listen}: give --advertise-url"
        )
    })?;
    if address.port() == 0 {
        anyhow::bail!("--listen {listen} has no fixed port to advertise: give --advertise-url");
    }
    if address.ip().is_unspecified() {
        let host = host_name().ok_or_else(|| {
            anyhow::anyhow!(
                "--listen {listen} is every address and the host name is unknown: give \
                 --advertise-url"
            )
        })?;
        return Ok(format!("{scheme}://{host}:{}", address.port()));
    }
    Ok(format!("{scheme}://{address}"))
}

/// The host name, from the kernel (Linux) or `HOSTNAME`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_url_comes_from_the_listen_address() {
        assert_eq!(
            advertised_url("127.0.0.1:8080", false).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            advertised_url("[::1]:8443", true).unwrap(),
            "https://[::1]:8443"
        );
        assert!(advertised_url("127.0.0.1:0", false).is_err());
        assert!(advertised_url("localhost:80", false).is_err());
        let every = advertised_url("0.0.0.0:8080", false).unwrap();
        assert!(
            every.starts_with("http://") && every.ends_with(":8080"),
            "{every}"
        );
        assert!(!every.contains("0.0.0.0"), "{every}");
    }

    #[test]
    fn the_node_id_is_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = node_id_of(dir.path()).unwrap();
        assert!(cluster::discovery::valid_node_id(&first), "{first}");
        assert_eq!(node_id_of(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(NODE_ID_FILE), "a.b\n").unwrap();
        assert!(node_id_of(dir.path()).is_err());
    }

    #[test]
    fn the_nats_url_is_never_printed() {
        let settings = ClusterSettings {
            nats_url: Some("nats://user:secret@127.0.0.1:4222".into()),
            ..ClusterSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(
            crate::cluster::server_addresses("nats://a:1, nats://b:2")
                .unwrap()
                .len()
                == 2
        );
    }
}
