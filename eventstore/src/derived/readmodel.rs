//! Storage for read models (CQRS projections), kept beside the index in sled so that only
//! this crate imports sled.
//!
//! Each projection version gets its own sled tree (`readmodel/<name>/<version>`), holding
//! its tables (keys prefixed by the table name and a 0 byte) and its checkpoint. A
//! [`ModelBatch`] of changes is applied together with the new checkpoint in one atomic
//! sled batch, so a crash leaves a read model either before or after a batch of events,
//! never in between: re-applying from the checkpoint never doubles an effect.
//!
//! Which version of a projection serves queries is recorded in the `readmodels` tree;
//! [`ReadModels::activate`] switches it atomically (blue-green rebuilds). Read models are
//! derived data: deleting them costs a rebuild from the log, nothing more.

use std::ops::Bound;

use crate::derived::index::be_u64;
use crate::error::Error;
use crate::ids::Position;

const CHECKPOINT_KEY: &[u8] = b"\xff\xffcheckpoint";

/// A key and its value, as [`Model::scan`] returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The read models of one store.
#[derive(Debug, Clone)]
pub struct ReadModels {
    db: sled::Db,
    /// projection name -> active version (4 bytes, big-endian).
    active: sled::Tree,
}

/// One version of one projection's read model.
#[derive(Debug, Clone)]
pub struct Model {
    name: String,
    version: u32,
    tree: sled::Tree,
}

/// Changes to a model, applied atomically with a checkpoint by [`Model::apply`].
#[derive(Debug, Default)]
pub struct ModelBatch {
    batch: sled::Batch,
    changes: usize,
}

fn tree_name(name: &str, version: u32) -> String {
    format!("readmodel/{name}/{version}")
}

fn table_key(table: &str, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(table.len() + 1 + key.len());
    full.extend_from_slice(table.as_bytes());
    full.push(0);
    full.extend_from_slice(key);
    full
}

impl ReadModels {
    pub(crate) fn new(db: sled::Db) -> Result<Self, Error> {
        Ok(ReadModels {
            active: db.open_tree("readmodels")?,
            db,
        })
    }

    /// Opens (creating if needed) version `version` of the projection `name`.
    pub fn model(&self, name: &str, version: u32) -> Result<Model, Error> {
        Ok(Model {
            name: name.to_owned(),
            version,
            tree: self.db.open_tree(tree_name(name, version))?,
        })
    }

    /// The version of `name` that serves queries, if one was activated.
    pub fn active_version(&self, name: &str) -> Result<Option<u32>, Error> {
        Ok(self
            .active
            .get(name.as_bytes())?
            .filter(|v| v.len() == 4)
            .map(|v| u32::from_be_bytes(v.as_ref().try_into().expect("4 bytes"))))
    }

    /// Makes `version` the one that serves queries, in one atomic write.
    pub fn activate(&self, name: &str, version: u32) -> Result<(), Error> {
        self.active
            .insert(name.as_bytes(), &version.to_be_bytes()[..])?;
        Ok(())
    }

    /// Deletes a version's tree (an old version after a switch, or a failed rebuild).
    pub fn drop_model(&self, name: &str, version: u32) -> Result<(), Error> {
        self.db.drop_tree(tree_name(name, version))?;
        Ok(())
    }

    /// Every stored model version, as (name, version).
    pub fn stored_models(&self) -> Vec<(String, u32)> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|raw| {
                let text = String::from_utf8(raw.to_vec()).ok()?;
                let rest = text.strip_prefix("readmodel/")?;
                let (name, version) = rest.rsplit_once('/')?;
                Some((name.to_owned(), version.parse().ok()?))
            })
            .collect()
    }
}

impl Model {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The projection's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The position up to which (exclusive) events have been applied; `Position(0)` for
    /// a model that has applied nothing.
    pub fn checkpoint(&self) -> Result<Position, Error> {
        Ok(Position(
            self.tree
                .get(CHECKPOINT_KEY)?
                .filter(|v| v.len() == 8)
                .map_or(0, |v| be_u64(&v)),
        ))
    }

    /// The value under `key` in `table`.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree.get(table_key(table, key))?.map(|v| v.to_vec()))
    }

    /// Up to `limit` entries of `table` whose keys start with `prefix`, after `after`
    /// (exclusive) when given: for paging.
    pub fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        let full_prefix = table_key(table, prefix);
        let start = match after {
            Some(after) => Bound::Excluded(table_key(table, after)),
            None => Bound::Included(full_prefix.clone()),
        };
        let skip = table.len() + 1;
        let mut entries = Vec::new();
        for entry in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = entry?;
            if !key.starts_with(&full_prefix) || entries.len() >= limit {
                break;
            }
            entries.push((key[skip..].to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Applies `changes` and moves the checkpoint to `checkpoint`, atomically.
    pub fn apply(&self, mut changes: ModelBatch, checkpoint: Position) -> Result<(), Error> {
        changes
            .batch
            .insert(CHECKPOINT_KEY, &checkpoint.0.to_be_bytes()[..]);
        self.tree.apply_batch(changes.batch)?;
        Ok(())
    }

    /// A digest of every entry (tables and checkpoint excluded), to compare two builds of
    /// the same model byte for byte.
    pub fn digest(&self) -> Result<String, Error> {
        let mut hasher = blake3::Hasher::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            if key.as_ref() == CHECKPOINT_KEY {
                continue;
            }
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(&value);
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// Removes every entry, checkpoint included (a rebuild in place).
    pub fn clear(&self) -> Result<(), Error> {
        self.tree.clear()?;
        Ok(())
    }
}

impl ModelBatch {
    /// Sets `key` in `table` to `value`.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        self.batch.insert(table_key(table, key), value);
        self.changes += 1;
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: &str, key: &[u8]) {
        self.batch.remove(table_key(table, key));
        self.changes += 1;
    }

    /// How many changes the batch holds.
    pub fn len(&self) -> usize {
        self.changes
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> (tempfile::TempDir, ReadModels) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, ReadModels::new(db).unwrap())
    }

    #[test]
    fn changes_and_checkpoint_land_together() {
        let (_dir, models) = models();
        let model = models.model("orders", 1).unwrap();
        assert_eq!(model.checkpoint().unwrap(), Position(0));
        let mut batch = ModelBatch::default();
        batch.put("by_id", b"a", b"1");
        batch.put("by_id", b"b", b"2");
        batch.put("other", b"a", b"x");
        model.apply(batch, Position(7)).unwrap();
        assert_eq!(model.checkpoint().unwrap(), Position(7));
        assert_eq!(
            model.get("by_id", b"b").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        let all = model.scan("by_id", b"", None, 10).unwrap();
        assert_eq!(all.len(), 2, "tables do not leak into each other");
        let page = model.scan("by_id", b"", Some(b"a"), 10).unwrap();
        assert_eq!(page, vec![(b"b".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn versions_are_separate_and_switch_atomically() {
        let (_dir, models) = models();
        let blue = models.model("sales", 1).unwrap();
        let green = models.model("sales", 2).unwrap();
        let mut batch = ModelBatch::default();
        batch.put("t", b"k", b"v");
        blue.apply(batch, Position(1)).unwrap();
        assert_eq!(green.get("t", b"k").unwrap(), None);
        models.activate("sales", 1).unwrap();
        assert_eq!(models.active_version("sales").unwrap(), Some(1));
        models.activate("sales", 2).unwrap();
        models.drop_model("sales", 1).unwrap();
        assert_eq!(models.active_version("sales").unwrap(), Some(2));
        assert_eq!(models.stored_models(), vec![("sales".to_owned(), 2)]);
    }

    #[test]
    fn digests_compare_contents_not_checkpoints() {
        let (_dir, models) = models();
        let (a, b) = (models.model("x", 1).unwrap(), models.model("x", 2).unwrap());
        for (model, checkpoint) in [(&a, 5), (&b, 9)] {
            let mut batch = ModelBatch::default();
            batch.put("t", b"k", b"v");
            model.apply(batch, Position(checkpoint)).unwrap();
        }
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        let mut batch = ModelBatch::default();
        batch.put("t", b"k", b"w");
        b.apply(batch, Position(10)).unwrap();
        assert_ne!(a.digest().unwrap(), b.digest().unwrap());
    }
}
