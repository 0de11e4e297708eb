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
    /// Customer profiles (sealed personal data) and their erasure: `customer-<id>`.
    pub customers: Repository<customers::Customer>,
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
            cards: repository(store.clone(), &config),
            customers: repository(store, &config),
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

    /// An order is charged at most once and refunded at most once, whatever is sent
    /// again (new command ids, a charge refused for funds after it went through), though
    /// the account's state keeps no charges: the store's durable id index does, and
    /// across a reopen too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_is_charged_and_refunded_at_most_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        let accounts = Repositories::new(store.clone()).accounts;
        let open = payments::Command::OpenAccount {
            customer_id: "alice".into(),
        };
        accounts.execute("alice", &open, &options()).await.unwrap();
        let deposit = payments::Command::Deposit { amount: 150 };
        accounts
            .execute("alice", &deposit, &options())
            .await
            .unwrap();

        let charge = payments::Command::Charge {
            order_id: "o-1".into(),
            amount: 100,
        };
        let first = accounts
            .execute("alice", &charge, &options())
            .await
            .unwrap();
        assert!(!first.outcome.duplicate);
        assert_eq!(first.state.balance(), 50);
        // Sent again, as another command: the balance (50) could not even pay it, yet
        // it answers the first charge's outcome and takes nothing.
        let again = accounts
            .execute("alice", &charge, &options())
            .await
            .unwrap();
        assert!(again.outcome.duplicate);
        assert_eq!(again.outcome.last_position, first.outcome.last_position);
        assert_eq!(again.state.balance(), 50);

        let refund = payments::Command::Refund {
            order_id: "o-1".into(),
            amount: 100,
        };
        let refunded = accounts
            .execute("alice", &refund, &options())
            .await
            .unwrap();
        assert_eq!(refunded.state.balance(), 150);
        store.close().await;

        // After a reopen, with a fresh repository (no cache): still once.
        let store = EventStore::open(dir.path(), StoreConfig::default()).unwrap();
        let accounts = Repositories::new(store.clone()).accounts;
        let again = accounts
            .execute("alice", &refund, &options())
            .await
            .unwrap();
        assert!(again.outcome.duplicate);
        let again = accounts
            .execute("alice", &charge, &options())
            .await
            .unwrap();
        assert!(again.outcome.duplicate);
        let loaded = accounts.load("alice").unwrap();
        assert_eq!(loaded.state.balance(), 150);
        assert_eq!(
            loaded.version.map(|v| v.0),
            Some(3),
            "opened, deposited, charged, refunded"
        );
        // Another order is charged as usual.
        let other = payments::Command::Charge {
            order_id: "o-2".into(),
            amount: 150,
        };
        let charged = accounts.execute("alice", &other, &options()).await.unwrap();
        assert_eq!(charged.state.balance(), 0);
        store.close().await;
    }
}
