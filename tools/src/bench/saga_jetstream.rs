//! `annals bench saga --store nats://... --nodes N`: the fulfilment saga of
//! [`super::saga`] on N Annals nodes (1 to 3) in this process sharing one replicated
//! JetStream stream, each an `EventStore::open_replicated` on a temporary copy directory
//! of its own, with its own repositories, as `annals serve` builds them.
//!
//! The run's stream is fresh (a unique name and subject prefix, from
//! [`super::append_jetstream`]) and deleted at the end, whether the run succeeded or not.
//! Node 0 opens first and is seeded (skus, accounts); the others open after, so each has
//! caught its copy up with the seeding before the first order (`open_replicated` returns
//! once the copy holds the stream as it was at the call).
//!
//! What holds:
//! - **One saga driver**, on node 0, started exactly as on one machine; in production the
//!   lease (`annals serve`'s singleton `saga`) picks the node. Its commands (reserve,
//!   charge, confirm) go through node 0's repositories, shared with node 0's orders.
//! - **Orders round-robin**: the n-th order is placed through node `n % N`'s order
//!   repository, with one `--in-flight` bound over all nodes.
//! - **Complete on node 0**: an order is complete when its `OrderConfirmed` is in node 0's
//!   copy. The driver appends it there, and an append returns only once the appending
//!   node's copy applied it, so node 0 sees every confirmation first and one subscription
//!   sees all orders; following the placing node would add that node's copy lag to the
//!   measurement. The latency is from the `OrderPlaced` to the `OrderConfirmed` as
//!   recorded in the log (the times JetStream stored them), the same on every copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventstore::{EventStore, ReplicatedConfig, StoreConfig};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::BenchDir;
use super::append_jetstream::{delete_scratch, load_average, scratch};
use super::saga::{SagaArgs, SagaReport, follow, place, seed};

/// How long the follower waits for any event before it calls the saga stalled: far
/// above any append's wait (`ReplicatedConfig::timeout`) and any saga step.
const STALL: Duration = Duration::from_secs(60);

/// The report on one machine, and where the log was.
#[derive(Debug, Serialize)]
struct JetStreamSagaReport {
    #[serde(flatten)]
    saga: SagaReport,
    store: &'static str,
    /// Annals nodes sharing the stream.
    nodes: usize,
    replicas: usize,
    /// The 1-minute load average of the machine before and after the run.
    load_average: [f64; 2],
}

pub(super) async fn run(
    args: &SagaArgs,
    config: ReplicatedConfig,
    nodes: usize,
) -> anyhow::Result<()> {
    let before = load_average();
    let config = scratch(&config, "saga");
    let mut stores = Vec::with_capacity(nodes);
    let mut dirs = Vec::with_capacity(nodes);
    let measured = measure(args, &config, nodes, &mut stores, &mut dirs).await;
    for store in &stores {
        store.close().await;
    }
    let deleted = delete_scratch(&config).await;
    let (saga, outcome) = measured?;
    deleted?;
    let report = JetStreamSagaReport {
        saga,
        store: "jetstream",
        nodes,
        replicas: config.replicas,
        load_average: [before, load_average()],
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "saga on JetStream (R{}, {} nodes): {} (load average {:.2} -> {:.2})",
            report.replicas,
            report.nodes,
            report.saga.text(),
            report.load_average[0],
            report.load_average[1],
        );
    }
    outcome.all_confirmed()
}

/// Opens the nodes into `stores` (their copies in `dirs`), seeds, and runs the saga; the
/// caller closes whatever was opened.
async fn measure(
    args: &SagaArgs,
    config: &ReplicatedConfig,
    nodes: usize,
    stores: &mut Vec<EventStore>,
    dirs: &mut Vec<BenchDir>,
) -> anyhow::Result<(SagaReport, super::saga::Outcome)> {
    let open = |dirs: &mut Vec<BenchDir>| -> anyhow::Result<_> {
        let dir = BenchDir::new(None)?;
        let path = dir.path.clone();
        dirs.push(dir);
        Ok(path)
    };
    let path = open(dirs)?;
    stores.push(open_node(path, config, 0).await?);
    seed(&stores[0], args).await?;
    for node in 1..nodes {
        let path = open(dirs)?;
        stores.push(open_node(path, config, node).await?);
    }
    // Each node's repositories, as `annals serve` builds them: its API and (on node 0)
    // the saga share them.
    let repositories: Vec<_> = stores
        .iter()
        .map(|store| repositories::Repositories::new(store.clone()))
        .collect();
    let services = sagas::FulfilmentServices::new(repositories[0].clone(), Duration::from_secs(30));
    let driver = sagas::Driver::start(
        stores[0].clone(),
        Arc::new(services),
        Arc::new(sagas::SystemClock),
        sagas::DriverConfig::default(),
    )
    .context("cannot start the saga driver")?;

    let first = stores[0].next_position();
    let slots = Arc::new(Semaphore::new(args.in_flight));
    let follower = tokio::spawn(follow(
        stores[0].clone(),
        first,
        args.orders,
        slots.clone(),
        Some(STALL),
    ));
    let started = Instant::now();
    let orders: Vec<_> = repositories
        .iter()
        .map(|node| node.orders.clone())
        .collect();
    let placed = place(&orders, args, &slots).await;
    let followed = match placed {
        Ok(()) => follower
            .await
            .context("the follower panicked")
            .and_then(|followed| followed),
        Err(error) => {
            follower.abort();
            Err(error)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let events = stores[0].next_position().0 - first.0;
    driver.stop().await;
    let outcome = followed?;
    Ok((SagaReport::new(args, &outcome, seconds, events), outcome))
}

async fn open_node(
    path: std::path::PathBuf,
    config: &ReplicatedConfig,
    node: usize,
) -> anyhow::Result<EventStore> {
    EventStore::open_replicated(&path, StoreConfig::default(), config.clone())
        .await
        .with_context(|| {
            format!(
                "cannot open node {node} on JetStream stream {} (its copy in {})",
                config.stream,
                path.display()
            )
        })
}
