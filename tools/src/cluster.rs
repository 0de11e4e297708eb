//! `annals cluster status`: the Annals nodes registered with a NATS server for service
//! discovery (`annals serve --cluster-nats-url`), each with its version, HTTP URL,
//! health, readiness, roles and read-model lag; and [`nodes_to_try`], the order in which
//! `--server nats://...` tries them.
//!
//! The NATS URL may hold credentials: messages show it redacted only.

use std::time::Duration;

use cluster::discovery::NodeReport;

use crate::exit::Failure;

/// How long discovery waits for the nodes' answers (to the ping, then to the status).
pub const DISCOVERY_WAIT: Duration = Duration::from_millis(500);

/// How long connecting to NATS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster of Annals nodes, through NATS service discovery.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// List the nodes registered with NATS (`annals serve --cluster-nats-url`): node id,
    /// version, HTTP URL, healthy/ready, roles held, read-model lag. Exits 8 when no
    /// node answers.
    #[command(after_help = "Examples:
  annals cluster status --nats-url nats://127.0.0.1:4222
  annals cluster status --nats-url nats://n1:4222,nats://n2:4222 --json")]
    Status(StatusArgs),
}

/// `annals cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The NATS server the nodes registered with (comma-separated URLs for a cluster).
    #[arg(
        long,
        env = "ANNALS_CLUSTER_NATS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    nats_url: String,
    /// Print one JSON object per node (NDJSON).
    #[arg(long)]
    json: bool,
    /// How long to wait for the nodes' answers, in milliseconds [default: 500].
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
}

/// Runs `annals cluster ...`.
pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status(args) => crate::data_dir::runtime()?.block_on(status(args)),
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let wait = args.wait_ms.map_or(DISCOVERY_WAIT, Duration::from_millis);
    let nodes = discover(&args.nats_url, wait).await?;
    if nodes.is_empty() {
        return Err(no_node(&args.nats_url, wait).into());
    }
    if args.json {
        for node in &nodes {
            println!("{}", serde_json::to_string(node)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes.iter().map(row).collect();
    print!(
        "{}",
        crate::output::table(
            &[
                "NODE", "VERSION", "HTTP", "STORE", "HEALTHY", "READY", "ROLES", "LAG"
            ],
            &[7],
            &rows
        )
    );
    Ok(())
}

/// One node as a row of the table.
fn row(node: &NodeReport) -> Vec<String> {
    let yes_no = |value: bool| if value { "yes" } else { "no" }.to_owned();
    let (healthy, ready, roles, lag) = match &node.status {
        Some(status) => (
            yes_no(status.healthy),
            yes_no(status.ready),
            if status.roles.is_empty() {
                "-".to_owned()
            } else {
                status.roles.join(",")
            },
            status.lag.to_string(),
        ),
        None => {
            let unknown = format!("? ({})", node.error.as_deref().unwrap_or("no status"));
            (unknown, "?".into(), "?".into(), "?".into())
        }
    };
    vec![
        node.node_id.clone(),
        node.version.clone(),
        node.http.clone(),
        node.store.clone(),
        healthy,
        ready,
        roles,
        lag,
    ]
}

/// The failure of finding no node.
pub fn no_node(nats_url: &str, wait: Duration) -> Failure {
    Failure::Server(format!(
        "no Annals node answered on NATS {} within {wait:?}: is any `annals serve \
         --cluster-nats-url` running against this NATS?",
        outbox::config::redact(nats_url)
    ))
}

/// The nodes registered with the NATS at `nats_url`, sorted by node id.
pub async fn discover(nats_url: &str, wait: Duration) -> anyhow::Result<Vec<NodeReport>> {
    let addresses = server_addresses(nats_url)?;
    let unreachable = |reason: String| {
        Failure::Server(format!(
            "cannot reach NATS {} to find the nodes: {reason}",
            outbox::config::redact(nats_url)
        ))
    };
    let options = async_nats::ConnectOptions::new()
        .name("annals-cli")
        .connection_timeout(CONNECT_TIMEOUT);
    let client = match tokio::time::timeout(
        CONNECT_TIMEOUT + Duration::from_secs(1),
        options.connect(addresses),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return Err(unreachable(error.to_string()).into()),
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")).into()),
    };
    let nodes = cluster::discovery::discover(&client, wait)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    Ok(nodes)
}

/// The addresses of a comma-separated list of NATS URLs; an error names the list
/// redacted.
pub(crate) fn server_addresses(url: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(|part| part.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            crate::exit::Failure::Usage(format!(
                "invalid NATS URL {}: {error}",
                outbox::config::redact(url)
            ))
            .into()
        })
}

/// The order `--server nats://...` tries the nodes in: healthy and ready ones first,
/// least lag first; then those answering otherwise; then those with no status.
pub fn nodes_to_try(mut nodes: Vec<NodeReport>) -> Vec<NodeReport> {
    nodes.retain(|node| !node.http.is_empty());
    nodes.sort_by_key(|node| {
        let rank = match &node.status {
            Some(status) if status.healthy && status.ready => 0,
            Some(_) => 1,
            None => 2,
        };
        let lag = node.status.as_ref().map_or(u64::MAX, |status| status.lag);
        (rank, lag, node.node_id.clone())
    });
    nodes
}

#[cfg(test)]
mod tests {
    use cluster::discovery::NodeStatus;

    use super::*;

    fn report(node_id: &str, status: Option<(bool, bool, u64)>) -> NodeReport {
        let http = format!("http://{node_id}:8080");
        NodeReport {
            node_id: node_id.to_owned(),
            service_id: format!("id-{node_id}"),
            version: "0.1.0".into(),
            http: http.clone(),
            store: "embedded".into(),
            status: status.map(|(healthy, ready, lag)| NodeStatus {
                node_id: node_id.to_owned(),
                http,
                healthy,
                ready,
                roles: Vec::new(),
                lag,
                log_head: 10,
            }),
            error: None,
        }
    }

    #[test]
    fn ready_nodes_come_first_least_lag_first() {
        let nodes = vec![
            report("a", None),
            report("b", Some((true, false, 0))),
            report("c", Some((true, true, 5))),
            report("d", Some((true, true, 1))),
        ];
        let order: Vec<String> = nodes_to_try(nodes)
            .into_iter()
            .map(|node| node.node_id)
            .collect();
        assert_eq!(order, ["d", "c", "b", "a"]);
    }

    #[test]
    fn no_node_names_the_nats_url_without_its_credentials() {
        let failure = no_node("nats://ops:secret@n1:4222", DISCOVERY_WAIT);
        let text = failure.to_string();
        assert!(
            !text.contains("secret") && text.contains("n1:4222"),
            "{text}"
        );
    }
}
