//! [`Changes`]: the pending changes of one batch of events, held in memory over a read
//! model, and the typed reads that queries use on a model.
//!
//! A projection reads and writes typed values (any serde type, stored with postcard) in
//! named tables. Within a batch every key is read from sled at most once and written at
//! most once, whatever the number of events that touch it: several events of one batch
//! see each other's writes in memory, and at the end the batch becomes one
//! [`ModelBatch`], applied atomically with the checkpoint. sled costs microseconds per
//! key written, so this is where rebuild throughput comes from: a projection should keep
//! its keys few (aggregate per sku, per customer, per bucket) rather than one per event.

use std::any::Any;
use std::sync::Arc;

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

use eventstore::{Model, ModelBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApplyError, Error};
use crate::memory::Tables;

/// A value a read model stores: any serde type (encoded with postcard, so the encoding
/// is deterministic as long as the type holds no `HashMap`).
pub trait Value: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Value for T {}

/// Whether a key is in the stored model, as far as the batch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Yes,
    No,
    /// Written without being read first ([`Changes::put`]).
    Unknown,
}

#[derive(Debug)]
struct Slot<V> {
    value: Option<V>,
    stored: Stored,
    dirty: bool,
}

#[derive(Debug)]
struct Table<V> {
    /// hashbrown with its default hasher (foldhash): fast, and `entry_ref` finds or
    /// inserts a borrowed key with one lookup, allocating only on insert.
    entries: HashMap<Vec<u8>, Slot<V>>,
}

/// Where the changed keys of a batch go: a [`ModelBatch`] for the store, or the writes
/// of a [`crate::MemoryModel`].
pub(crate) trait Sink {
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]);
    fn delete(&mut self, table: &str, key: &[u8]);
}

impl Sink for ModelBatch {
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        ModelBatch::put(self, table, key, value);
    }

    fn delete(&mut self, table: &str, key: &[u8]) {
        ModelBatch::delete(self, table, key);
    }
}

/// A table of any value type, for the list of tables a batch holds.
trait AnyTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Adds the table's dirty entries to `batch`; returns how many.
    fn write(&self, table: &'static str, batch: &mut dyn Sink) -> Result<usize, ApplyError>;
}

impl<V: Value> AnyTable for Table<V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn write(&self, table: &'static str, batch: &mut dyn Sink) -> Result<usize, ApplyError> {
        let mut written = 0;
        let mut buffer = Vec::new();
        for (key, slot) in &self.entries {
            if !slot.dirty {
                continue;
            }
            match &slot.value {
                Some(value) => {
                    buffer.clear();
                    buffer = postcard::to_extend(value, buffer)
                        .map_err(|source| ApplyError::Value { table, source })?;
                    batch.put(table, key, &buffer);
                }
                // Never stored: nothing to delete.
                None if slot.stored == Stored::No => continue,
                None => batch.delete(table, key),
            }
            written += 1;
        }
        Ok(written)
    }
}

/// What the reads of a batch fall through to.
enum Base {
    /// The stored model: the runner and offline rebuilds.
    Stored(Model),
    /// A model in memory: tests of a projection's change logic ([`crate::MemoryModel`]).
    Memory(Arc<Tables>),
}

/// The changes of one batch of events to one read model: typed tables in memory over
/// the stored model. Reads fall through to the model on a miss; writes stay in memory
/// until the runner turns them into one atomic write with the checkpoint.
pub struct Changes {
    base: Base,
    tables: Vec<(&'static str, Box<dyn AnyTable>)>,
    entries: usize,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = match &self.base {
            Base::Stored(model) => model.name(),
            Base::Memory(_) => "(in memory)",
        };
        f.debug_struct("Changes")
            .field("model", &model)
            .field(
                "tables",
                &self.tables.iter().map(|t| t.0).collect::<Vec<_>>(),
            )
            .field("entries", &self.entries)
            .finish()
    }
}

impl Changes {
    /// No changes yet, over `model`.
    pub fn new(model: Model) -> Self {
        Changes {
            base: Base::Stored(model),
            tables: Vec::new(),
            entries: 0,
        }
    }

    /// No changes yet, over tables in memory.
    pub(crate) fn in_memory(tables: Arc<Tables>) -> Self {
        Changes {
            base: Base::Memory(tables),
            tables: Vec::new(),
            entries: 0,
        }
    }

    /// The stored model the changes apply to (`None` for a [`crate::MemoryModel`]).
    pub fn model(&self) -> Option<&Model> {
        match &self.base {
            Base::Stored(model) => Some(model),
            Base::Memory(_) => None,
        }
    }

    /// How many keys the batch holds in memory (read or written): what bounds its size.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The value under `key` in `table`, reading the model only if the batch does not
    /// hold the key yet. Does not mark the key as changed.
    pub fn get<V: Value>(
        &mut self,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<&V>, ApplyError> {
        let slot = self.slot::<V>(table, key)?;
        Ok(slot.value.as_ref())
    }

    /// The value under `key` in `table` for changing in place: set it, change it or set
    /// it to `None` to delete the key. Reads the model only if the batch does not hold
    /// the key yet; the key is written at the end of the batch.
    pub fn entry<V: Value>(
        &mut self,
        table: &'static str,
        key: &[u8],
    ) -> Result<&mut Option<V>, ApplyError> {
        let slot = self.slot::<V>(table, key)?;
        slot.dirty = true;
        Ok(&mut slot.value)
    }

    /// Sets `key` in `table` to `value` without reading the model: for keys the event
    /// creates.
    pub fn put<V: Value>(
        &mut self,
        table: &'static str,
        key: &[u8],
        value: V,
    ) -> Result<(), ApplyError> {
        let (tables, entries) = (&mut self.tables, &mut self.entries);
        let table = table_of::<V>(tables, table)?;
        match table.entries.entry_ref(key) {
            EntryRef::Occupied(mut found) => {
                let slot = found.get_mut();
                slot.value = Some(value);
                slot.dirty = true;
            }
            EntryRef::Vacant(missing) => {
                missing.insert(Slot {
                    value: Some(value),
                    stored: Stored::Unknown,
                    dirty: true,
                });
                *entries += 1;
            }
        }
        Ok(())
    }

    /// Removes `key` from `table` without reading the model.
    pub fn delete<V: Value>(&mut self, table: &'static str, key: &[u8]) -> Result<(), ApplyError> {
        let (tables, entries) = (&mut self.tables, &mut self.entries);
        let table = table_of::<V>(tables, table)?;
        match table.entries.entry_ref(key) {
            EntryRef::Occupied(mut found) => {
                let slot = found.get_mut();
                slot.value = None;
                slot.dirty = true;
            }
            EntryRef::Vacant(missing) => {
                missing.insert(Slot {
                    value: None,
                    stored: Stored::Unknown,
                    dirty: true,
                });
                *entries += 1;
            }
        }
        Ok(())
    }

    fn slot<V: Value>(
        &mut self,
        name: &'static str,
        key: &[u8],
    ) -> Result<&mut Slot<V>, ApplyError> {
        let (tables, base, entries) = (&mut self.tables, &self.base, &mut self.entries);
        let table = table_of::<V>(tables, name)?;
        match table.entries.entry_ref(key) {
            EntryRef::Occupied(found) => Ok(found.into_mut()),
            EntryRef::Vacant(missing) => {
                let bytes = match base {
                    Base::Stored(model) => model.get(name, key)?,
                    Base::Memory(memory) => {
                        memory.get(name).and_then(|rows| rows.get(key)).cloned()
                    }
                };
                let (value, stored) = match bytes {
                    Some(bytes) => (
                        Some(
                            postcard::from_bytes(&bytes).map_err(|source| ApplyError::Value {
                                table: name,
                                source,
                            })?,
                        ),
                        Stored::Yes,
                    ),
                    None => (None, Stored::No),
                };
                *entries += 1;
                Ok(missing.insert(Slot {
                    value,
                    stored,
                    dirty: false,
                }))
            }
        }
    }

    /// Adds the changed keys to `batch`, for [`Model::apply`].
    pub(crate) fn write(&self, batch: &mut ModelBatch) -> Result<(), ApplyError> {
        self.write_to(batch)
    }

    /// Hands the changed keys to `sink`.
    pub(crate) fn write_to(&self, sink: &mut dyn Sink) -> Result<(), ApplyError> {
        for (name, table) in &self.tables {
            table.write(name, sink)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn into_batch(self) -> Result<(Model, ModelBatch), ApplyError> {
        let mut batch = ModelBatch::default();
        self.write(&mut batch)?;
        let Base::Stored(model) = self.base else {
            panic!("into_batch is for changes over a stored model");
        };
        Ok((model, batch))
    }
}

fn table_of<'t, V: Value>(
    tables: &'t mut Vec<(&'static str, Box<dyn AnyTable>)>,
    name: &'static str,
) -> Result<&'t mut Table<V>, ApplyError> {
    // Table names are constants: the same pointer, as a rule.
    let index = match tables
        .iter()
        .position(|(table, _)| std::ptr::eq(*table, name) || *table == name)
    {
        Some(index) => index,
        None => {
            tables.push((
                name,
                Box::new(Table::<V> {
                    entries: HashMap::default(),
                }),
            ));
            tables.len() - 1
        }
    };
    tables[index]
        .1
        .as_any_mut()
        .downcast_mut::<Table<V>>()
        .ok_or(ApplyError::TableType(name))
}

/// The value under `key` in `table` of a model, for queries.
pub fn read<V: Value>(model: &Model, table: &str, key: &[u8]) -> Result<Option<V>, Error> {
    model
        .get(table, key)?
        .map(|bytes| decode(table, &bytes))
        .transpose()
}

/// Up to `limit` entries of `table` whose keys start with `prefix`, after the key `after`
/// (exclusive) when given: a page of a listing, in key order.
pub fn scan<V: Value>(
    model: &Model,
    table: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, V)>, Error> {
    model
        .scan(table, prefix, after, limit)?
        .into_iter()
        .map(|(key, bytes)| Ok((key, decode(table, &bytes)?)))
        .collect()
}

pub(crate) fn decode<V: Value>(table: &str, bytes: &[u8]) -> Result<V, Error> {
    postcard::from_bytes(bytes).map_err(|source| Error::Value {
        table: table.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventStore, Position, StoreConfig};

    fn store() -> (tempfile::TempDir, tokio::runtime::Runtime, EventStore) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = {
            let _entered = runtime.enter();
            EventStore::open(dir.path(), StoreConfig::default()).unwrap()
        };
        (dir, runtime, store)
    }

    #[test]
    fn writes_within_a_batch_are_seen_and_each_key_is_written_once() {
        let (_dir, _runtime, store) = store();
        let model = store.read_models().unwrap().model("counts", 1).unwrap();
        let mut changes = Changes::new(model.clone());
        for _ in 0..5 {
            *changes
                .entry::<u64>("count", b"a")
                .unwrap()
                .get_or_insert(0) += 1;
        }
        assert_eq!(changes.get::<u64>("count", b"a").unwrap(), Some(&5));
        assert_eq!(changes.entries(), 1);
        let (model, batch) = changes.into_batch().unwrap();
        assert_eq!(batch.len(), 1);
        model.apply(batch, Position(5)).unwrap();
        assert_eq!(read::<u64>(&model, "count", b"a").unwrap(), Some(5));

        // The next batch reads the stored value once and builds on it.
        let mut changes = Changes::new(model.clone());
        *changes
            .entry::<u64>("count", b"a")
            .unwrap()
            .as_mut()
            .unwrap() += 10;
        let (model, batch) = changes.into_batch().unwrap();
        model.apply(batch, Position(6)).unwrap();
        assert_eq!(read::<u64>(&model, "count", b"a").unwrap(), Some(15));
    }

    #[test]
    fn a_key_created_and_deleted_in_one_batch_writes_nothing() {
        let (_dir, _runtime, store) = store();
        let model = store.read_models().unwrap().model("open", 1).unwrap();
        let mut changes = Changes::new(model);
        *changes.entry::<String>("open", b"k").unwrap() = Some("x".into());
        *changes.entry::<String>("open", b"k").unwrap() = None;
        let (_, batch) = changes.into_batch().unwrap();
        assert!(batch.is_empty());
    }

    #[test]
    fn a_put_then_delete_of_an_unread_key_still_deletes() {
        let (_dir, _runtime, store) = store();
        let model = store.read_models().unwrap().model("open", 1).unwrap();
        let mut seed = Changes::new(model.clone());
        seed.put("open", b"k", 1u64).unwrap();
        let (model, batch) = seed.into_batch().unwrap();
        model.apply(batch, Position(1)).unwrap();

        let mut changes = Changes::new(model.clone());
        changes.put("open", b"k", 2u64).unwrap();
        changes.delete::<u64>("open", b"k").unwrap();
        let (model, batch) = changes.into_batch().unwrap();
        model.apply(batch, Position(2)).unwrap();
        assert_eq!(read::<u64>(&model, "open", b"k").unwrap(), None);
    }

    #[test]
    fn one_table_cannot_hold_two_value_types() {
        let (_dir, _runtime, store) = store();
        let model = store.read_models().unwrap().model("mixed", 1).unwrap();
        let mut changes = Changes::new(model);
        changes.put("t", b"k", 1u64).unwrap();
        assert!(matches!(
            changes.put("t", b"k", "text".to_owned()),
            Err(ApplyError::TableType("t"))
        ));
    }
}
