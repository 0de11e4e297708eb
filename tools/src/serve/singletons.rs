//! The singleton workers of a node whose log is on JetStream: the outbox relay and the
//! saga driver act on the shared log, so exactly one node runs each at a time, under a
//! lease in a JetStream key-value bucket (`cluster::lease`, docs/CLUSTER.md): a node
//! campaigns for the role, runs the worker while it holds the lease, stops it the moment
//! the lease is lost, and another node takes over within the lease's TTL (6 s) of a
//! holder's death. With the embedded store there is one node: the workers just run.
//!
//! Each worker is safe to run again on another node: the relay resumes after the last
//! message the JetStream copy holds, and a saga's inputs and commands are recorded in the
//! log with ids that make a repeated command have one effect.

use std::future::Future;

use anyhow::Context as _;
use cluster::lease::{LeaseConfig, Leases};
use tokio_util::sync::CancellationToken;

use super::{Settings, StoreBackend, discovery};

/// The leases of this node, when its log is on JetStream.
pub(super) async fn leases(settings: &Settings) -> anyhow::Result<Option<Leases>> {
    let StoreBackend::JetStream(log) = &settings.store else {
        return Ok(None);
    };
    let node_id = match &settings.cluster.node_id {
        Some(node_id) => node_id.clone(),
        None => discovery::node_id_of(&settings.data_dir)?,
    };
    let http_address = match &settings.cluster.advertise_url {
        Some(url) => Some(url.clone()),
        None => discovery::advertised_url(&settings.listen, settings.tls.is_some()).ok(),
    };
    let client = discovery::connect(&log.urls, &settings.nats_tls).await?;
    let js = async_nats::jetstream::new(client);
    let config = LeaseConfig {
        replicas: log.replicas,
        http_address,
        ..LeaseConfig::new(node_id)
    };
    let leases = Leases::open(&js, config)
        .await
        .context("cannot open the leases of the singleton workers")?;
    tracing::info!("the relay and the saga driver run on one node at a time, under a lease");
    Ok(Some(leases))
}

/// Runs `work` as the supervised worker `role` on this node only while it holds `role`'s
/// lease: `work` gets a token cancelled when the lease is lost (or the server stops), and
/// runs again at the next tenure.
pub(super) fn spawn<F, Fut, E>(
    workers: &mut supervisor::Supervisor,
    leases: &Leases,
    role: &'static str,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let leases = leases.clone();
    workers.spawn(role, move |stop| {
        let (leases, work) = (leases.clone(), work.clone());
        async move {
            leases
                .run_singleton(role, stop, |tenure| {
                    let run = work(tenure.token());
                    async move {
                        tracing::info!(role, "this node holds the lease: the worker runs");
                        if let Err(error) = run.await {
                            tracing::warn!(role, %error, "the singleton worker stopped with an error");
                        }
                        tracing::info!(role, "the worker stopped");
                    }
                })
                .await
                .map_err(|error| error.to_string())
        }
    });
}
