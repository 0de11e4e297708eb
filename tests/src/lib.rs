//! End-to-end tests of Annals across crates: real binaries, real servers, real files.
//! The store's own crash, corruption and model tests live in `eventstore/tests`; the
//! HTTP tests in `services/api/tests`. Cross-crate scenarios (relay, sagas) come here.
