//! Integration tests of the projections crate: the runner over a real store, with the
//! `Tally` sales projection (the crash child's, `src/bin/projection_crash/tally.rs`).

#[path = "../src/bin/projection_crash/tally.rs"]
#[allow(dead_code)]
mod tally;

#[path = "projections/common.rs"]
mod common;
#[path = "projections/crash.rs"]
mod crash;
#[path = "projections/parking.rs"]
mod parking;
#[path = "projections/poison.rs"]
mod poison;
#[path = "projections/read_your_writes.rs"]
mod read_your_writes;
#[path = "projections/rebuild.rs"]
mod rebuild;
