//! [`MemoryModel`]: a read model held in memory, so that a projection's change logic can
//! be tested without a store: events in, rows out.
//!
//! [`MemoryModel::apply`] runs a projection over events exactly as the runner does (one
//! [`Changes`] per batch, every key read at most once, the dirty keys written at the end
//! with postcard), only the reads fall through to a map instead of sled. The rows a test
//! reads back are the values the runner would store.

use std::collections::BTreeMap;
use std::sync::Arc;

use eventstore::StoredEvent;

use crate::changes::{Changes, Sink, Value, decode};
use crate::error::{ApplyError, Error};
use crate::projection::Projection;

/// Table name -> key -> postcard bytes.
pub(crate) type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A read model in memory: tables of keys and postcard-encoded values, like a stored
/// model without its checkpoint.
#[derive(Debug, Clone, Default)]
pub struct MemoryModel {
    /// Shared with the [`Changes`] of the batch being applied, which reads through to it.
    tables: Arc<Tables>,
}

impl MemoryModel {
    /// An empty model.
    pub fn new() -> Self {
        MemoryModel::default()
    }

    /// Applies `events` to the model as one batch, in order, as the runner would: either
    /// every event applies and the batch's changes are written, or the first error is
    /// returned and the model stays as it was.
    pub fn apply<'a>(
        &mut self,
        projection: &dyn Projection,
        events: impl IntoIterator<Item = &'a StoredEvent<'a>>,
    ) -> Result<(), ApplyError> {
        let mut changes = Changes::in_memory(self.tables.clone());
        for event in events {
            projection.apply(event, &mut changes)?;
        }
        let mut writes = Writes::default();
        changes.write_to(&mut writes)?;
        drop(changes);
        let tables = Arc::make_mut(&mut self.tables);
        for (table, key, value) in writes.0 {
            let rows = tables.entry(table).or_default();
            match value {
                Some(value) => {
                    rows.insert(key, value);
                }
                None => {
                    rows.remove(&key);
                }
            }
        }
        tables.retain(|_, rows| !rows.is_empty());
        Ok(())
    }

    /// The value under `key` in `table`.
    pub fn get<V: Value>(&self, table: &str, key: &[u8]) -> Result<Option<V>, Error> {
        self.tables
            .get(table)
            .and_then(|rows| rows.get(key))
            .map(|bytes| decode(table, bytes))
            .transpose()
    }

    /// Every row of `table`, in key order.
    pub fn rows<V: Value>(&self, table: &str) -> Result<Vec<(Vec<u8>, V)>, Error> {
        self.tables
            .get(table)
            .into_iter()
            .flatten()
            .map(|(key, bytes)| Ok((key.clone(), decode(table, bytes)?)))
            .collect()
    }

    /// The names of the tables that hold rows, in order.
    pub fn tables(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }
}

/// The writes of one batch, in the order [`Changes`] hands them over.
#[derive(Debug, Default)]
struct Writes(Vec<(String, Vec<u8>, Option<Vec<u8>>)>);

impl Sink for Writes {
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        self.0
            .push((table.to_owned(), key.to_vec(), Some(value.to_vec())));
    }

    fn delete(&mut self, table: &str, key: &[u8]) {
        self.0.push((table.to_owned(), key.to_vec(), None));
    }
}
