//! The write side of Annals: one [`Repository`] per aggregate, built once per process and
//! shared by every writer in it (the HTTP API and the fulfilment saga).
//!
//! A repository is also its aggregate's per-stream command queue (see
//! [`eventstore::aggregate`]): commands on one stream through one repository, or any of
//! its clones, run one after another. Building the repositories in one place and handing
//! the same [`Repositories`] to every writer is what makes the API and the saga queue on
//! the same stream instead of racing on it; no caller takes a lock of its own.
//!
//! ```no_run
//! # fn demo(store: eventstore::EventStore) {
//! use repositories::{Repositories, RepositoryConfig};
//! let repositories = Repositories::with_config(store, RepositoryConfig::default());
//! // Hand clones of `repositories` to the API and to the saga: they share queues and caches.
//! # let _ = repositories.clone();
//! # }
//! ```

use eventstore::{EventStore, Repository};

/// How the shared repositories run commands. One setting for every writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// How many times a command is decided again after a version conflict. Writers that
    /// share these repositories queue and never conflict with each other; a conflict
    /// means a writer outside them (another process, a tool, a test) moved the stream.
    /// A retry costs one reload, so the bound is generous: 32, what the saga needed on
    /// hot skus before the queue was shared, so no command fails for contention that a
    /// reload would resolve.
    pub conflict_retries: u32,
    /// How many recently commanded aggregates of each kind are kept in memory (0: none).
    /// A cached state is used only while the stream's head is still its version, checked
    /// before every decision, and the append expects that version: a stale entry costs a
    /// reload, never a wrong decision. It saves reading hot streams (a busy sku) for every
    /// command.
    pub cache_streams: usize,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            conflict_retries: 32,
            cache_streams: 16_384,
        }
    }
}

/// The repositories of every aggregate of the reference domain. Cheap to clone: clones
/// share their per-stream queues and state caches.
#[derive(Debug, Clone)]
pub struct Repositories {
    /// Inventory: `stock-<sku>`.
    pub stock: Repository<inventory::Stock>,
    /// Payments: `account-<customer>`.
    pub accounts: Repository<payments::Account>,
    /// Orders: `order-<id>`.
    pub orders: Repository<orders::Order>,
    /// Cards on file: `card-<customer>`.
    pub cards: Repository<payments::card::Card>,
}

impl Repositories {
    /// The repositories over `store`, with [`RepositoryConfig::default`].
    pub fn new(store: EventStore) -> Self {
        Self::with_config(store, RepositoryConfig::default())
    }

    /// The repositories over `store`, run as `config` says.
    pub fn with_config(store: EventStore, config: RepositoryConfig) -> Self {
        Repositories {
            stock: repository(store.clone(), &config),
            accounts: repository(store.clone(), &config),
            orders: repository(store.clone(), &config),
            cards: repository(store, &config),
        }
    }
}

fn repository<A: eventstore::Aggregate>(
    store: EventStore,
    config: &RepositoryConfig,
) -> Repository<A> {
    let repository = Repository::new(store).with_conflict_retries(config.conflict_retries);
    if config.cache_streams == 0 {
        repository
    } else {
        repository.with_cache(config.cache_streams)
    }
}

#[cfg(test)]
mod tests {
    use eventstore::{CommandOptions, StoreConfig};

    use super::*;

    fn options() -> CommandOptions {
        CommandOptions {
            command_id: uuid::Uuid::now_v7(),
            ..CommandOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_sharing_the_repositories_queue_instead_of_conflicting() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        // No retries at all: a conflict between two writers would fail a command.
        let shared = Repositories::with_config(
            store.clone(),
            RepositoryConfig {
                conflict_retries: 0,
                ..RepositoryConfig::default()
            },
        );
        let register = inventory::Command::RegisterSku {
            sku: "hot".into(),
            name: "A busy sku".into(),
            unit_price: 100,
        };
        shared
            .stock
            .execute("hot", &register, &options())
            .await
            .unwrap();
        // Two "writers" (say the API and the saga), each with its own clone.
        let mut tasks = Vec::new();
        for writer in [shared.clone(), shared.clone()] {
            for _ in 0..8 {
                let writer = writer.clone();
                tasks.push(tokio::spawn(async move {
                    let restock = inventory::Command::Restock { quantity: 1 };
                    writer.stock.execute("hot", &restock, &options()).await
                }));
            }
        }
        for task in tasks {
            task.await.unwrap().expect("queued, never conflicting");
        }
        let loaded = shared.stock.load("hot").unwrap();
        assert_eq!(loaded.version.map(|v| v.0), Some(16));
        store.close().await;
    }
}
