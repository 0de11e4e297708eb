//! The scenario suite of Annals lives in `scenarios/` (one test binary, `cargo test -p
//! annals-tests`): black-box tests that drive the real `annals` binary, a real HTTP
//! server and a real nats-server together. This library is empty; the crates' own unit
//! and integration tests stay in their crates, and what every test shares is in
//! `test-support`.
