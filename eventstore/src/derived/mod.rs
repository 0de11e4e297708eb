//! Everything the store keeps in sled, all of it derived from the log and rebuilt from it:
//! the indexes (`index`: stream runs, heads, event ids, the sparse position map, the
//! high-water mark, checkpoints), aggregate snapshots (`snapshot`) and read-model storage
//! (`readmodel`). The rest of the crate is the log itself, whose segment files are the
//! only source of truth.
//!
//! **Invariant:** only this module imports sled (besides `error`, which wraps its error
//! type). Deleting `<data-dir>/index` loses nothing: the next open rebuilds it.

pub mod index;
pub mod readmodel;
pub mod snapshot;
