//! Annals beyond one machine, on NATS: `lease` (a singleton worker, such as the saga
//! driver or the outbox relay, runs on exactly one node at a time, through a lease in a
//! JetStream key-value bucket) and `discovery` (every node registers as a NATS service;
//! `annals cluster status` and the CLI's `--server nats://` find the nodes through it).

pub mod discovery;
pub mod lease;
