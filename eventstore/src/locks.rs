//! Async locks by name, created on first use and dropped when no request holds or
//! waits for them, so the map holds only the names in use right now.
//!
//! Commands on one stream that queue on its lock run one after another instead of
//! spending their conflict retries on each other: every [`crate::Repository`] owns one
//! [`KeyedLocks`] as its per-stream command queue. The HTTP API also uses one for its
//! idempotency keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// A lock per name (a stream id, an idempotency key).
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one name's lock; dropping it releases the lock and, if nobody else wants it,
/// the map entry.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for the lock of `name`.
    pub async fn lock(&self, name: &str) -> KeyGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        KeyGuard {
            owner: self,
            name: name.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .owner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(self.guard.take());
        // Everyone who wants this lock cloned its Arc under the map's mutex, which is
        // held here: one strong count left (the map's) means nobody does.
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_go_when_the_last_holder_does() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a").await;
        let other = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
        drop(first);
        assert_eq!(locks.len(), 1);
        drop(other);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn one_holder_at_a_time() {
        let locks = Arc::new(KeyedLocks::default());
        let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, counter) = (locks.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = locks.lock("same").await;
                let inside = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(inside, 0);
                tokio::task::yield_now().await;
                counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}
