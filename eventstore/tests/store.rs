//! The event store's integration tests: one test binary, one module per concern, all on
//! real files in temporary directories.
//!
//! - `model`: random operation sequences checked against a plain `Vec` of events.
//! - `crash`: a child process appending concurrently is killed with SIGKILL, again and
//!   again; every acknowledged append must survive, and no append may be half there.
//! - `corruption`: damaged, torn and padded segments, a missing or locked data directory,
//!   and malformed appends each get their typed error or their clean recovery.
//! - `consistency`: an index ahead of a restored older log is rebuilt from the log, and
//!   `verify` refuses stream versions that skip or repeat.
//! - `subscription`: catch-up then live with no gap or duplicate, and backpressure that
//!   slows only the slow subscriber.
//! - `basics`: expected versions, atomic appends, durable dedup, paging, categories,
//!   lookups by id, concurrent appends and reads across many segments.
//! - `repair`: the first damaged range found and replaced from a copy only when the
//!   copy chains onto the intact records around it and fills it exactly; else refused.
//! - `repository`: a counter aggregate through `Repository`.
//! - `tail`: the end of the active segment after a crash: a torn write of any size is
//!   cut, damage to synced records (even next to the end) is refused untouched.
//! - `memory`: the writer's bounded memory (the growing id filter, the stream-head cache)
//!   still gives exact answers; the stream list page by page.
//! - `failure`: a real write error (a file-size limit, in a child process): the store
//!   reports it, and the same process cannot reopen the directory; a new one can.
//! - `nowait`: a read from async code that waits for a lagging index leaves the async
//!   worker free (a current-thread runtime keeps running other tasks meanwhile).
//! - `spans`: the `append` span, in the caller's trace, with its events, bytes, time
//!   queued and time to fsync; a command span's count of conflict retries.

#[path = "store/common.rs"]
mod common;

#[path = "store/basics.rs"]
mod basics;
#[path = "store/consistency.rs"]
mod consistency;
#[path = "store/corruption.rs"]
mod corruption;
#[path = "store/crash.rs"]
mod crash;
#[path = "store/failure.rs"]
mod failure;
#[path = "store/memory.rs"]
mod memory;
#[path = "store/model.rs"]
mod model;
#[path = "store/nowait.rs"]
mod nowait;
#[path = "store/repair.rs"]
mod repair;
#[path = "store/replicated.rs"]
mod replicated;
#[path = "store/repository.rs"]
mod repository;
#[path = "store/spans.rs"]
mod spans;
#[path = "store/subscription.rs"]
mod subscription;
#[path = "store/tail.rs"]
mod tail;
