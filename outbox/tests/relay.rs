//! The outbox's integration tests: one test binary, one module per concern, each test
//! against its own real nats-server (a free port on 127.0.0.1, its own store directory,
//! killed on drop), found through `NATS_SERVER_BIN` or PATH. No server, no pass: the tests
//! fail with a message saying how to install one.
//!
//! - `delivery`: every event of a concurrent workload arrives exactly once, in position
//!   order, identical to the log; a restarted relay adds nothing twice.
//! - `kill`: the relay (in a child process, with writers) is killed with SIGKILL at random
//!   moments, with downtimes longer than the duplicate window; the copy ends up exact.
//! - `outage`: NATS stopped under write load: appends go on, the backlog grows, the
//!   breaker opens; NATS restarted: the backlog drains by itself, nothing lost.
//! - `restore`: a restore reproduces the log (same events, same head hash, verify
//!   passes); audit finds an altered, a removed and a repeated message; the principal,
//!   issuer, action and on-behalf-of travel in the headers and come back exactly.
//! - `chain`: every message carries its chain hash; restore and audit name the first
//!   break (altered body, wrong hash, forged event, reorder, stripped headers); restore
//!   stops at an expected head or fails; a copy without the headers is still accepted.
//! - `cloudevents`: what a consumer in another language reads (the `ce-*` headers, a
//!   JSON body where the decoder knows the event, bytes otherwise and when JSON would not
//!   fit `max_payload`), and that the copy stays exact: restore and audit of format 2,
//!   an altered `Annals-Payload` breaks the chain, a format-1 copy still restores.
//! - `tail`: a copy that lost its last messages fails the audit at the first missing
//!   position, and a restarted relay republishes the lost range (no gap, no duplicate).
//! - `bad_input`: a malformed URL, nobody listening, no JetStream, an incompatible
//!   stream, a missing stream, a foreign message: each a typed error, no panic.

#[path = "relay/common.rs"]
mod common;

#[path = "relay/bad_input.rs"]
mod bad_input;
#[path = "relay/chain.rs"]
mod chain;
#[path = "relay/cloudevents.rs"]
mod cloudevents;
#[path = "relay/delivery.rs"]
mod delivery;
#[path = "relay/kill.rs"]
mod kill;
#[path = "relay/outage.rs"]
mod outage;
#[path = "relay/restore.rs"]
mod restore;
#[path = "relay/tail.rs"]
mod tail;
