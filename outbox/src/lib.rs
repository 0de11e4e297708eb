//! The outbox of Annals: the relay from the log to NATS JetStream, restore from the
//! JetStream copy, and audit of the copy against the log.
//!
//! The log is the outbox. The [`Relay`] tails durable events from where the JetStream copy
//! ends and publishes each one, in log order, with `Nats-Msg-Id` = event id and headers
//! that carry every field of the event ([`message`]; `docs/NATS.md`): a CloudEvent in
//! the NATS binding's binary content mode, its body the payload as JSON when the
//! [`JsonPayloads`] it is given knows the event ([`cloudevents`]). Publishes are
//! pipelined; the checkpoint moves over acknowledged events only. At every (re)start the
//! relay reads the last message of the stream and resumes after it, so a crash between
//! publish and checkpoint never duplicates, however long the relay was down. NATS outages
//! are retried with backoff and jitter behind a circuit breaker ([`breaker`]); the backlog
//! waits in the log, and [`StatusHandle`] reports it all while the relay runs.
//!
//! ```no_run
//! # async fn demo(store: eventstore::EventStore) -> Result<(), outbox::Error> {
//! use outbox::{Relay, RelayConfig};
//! let relay = Relay::new(store, RelayConfig::new("nats://127.0.0.1:4222"))?;
//! let status = relay.status();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let task = tokio::spawn(relay.run(shutdown.clone()));
//! println!("backlog: {}", status.current().backlog);
//! shutdown.cancel();
//! task.await.expect("the relay task")?;
//! # Ok(()) }
//! ```
//!
//! [`restore()`] rebuilds an empty node from the copy (same ids, positions and hash chain,
//! verified at the end); [`audit()`] compares a log with the copy and names the first
//! divergence; [`read_range()`] reads a range of positions, chain-checked, for `annals
//! repair`. Every NATS connection takes its TLS settings from one [`NatsTls`]. Only the
//! `eventstore` crate touches the log's files; this crate goes
//! through its API.

pub mod audit;
pub mod cloudevents;
/// The circuit breaker, shared with the payment provider chain (the `breaker` crate).
pub use ::breaker;
pub mod config;
pub mod error;
pub mod message;
pub mod nats;
pub mod range;
pub mod relay;
pub mod restore;
pub mod status;
pub mod tls;

pub use audit::{AuditOptions, AuditReport, Divergence, audit};
pub use breaker::BreakerState;
pub use cloudevents::{JsonData, JsonPayloads};
pub use config::{RelayConfig, Storage};
pub use error::Error;
pub use nats::connect;
pub use range::{RangeOptions, RangeRead, read_range};
pub use relay::{CheckReport, Relay};
pub use restore::{RestoreOptions, RestoreReport, restore};
pub use status::{Health, OfflineStatus, RelayState, RelayStatus, StatusHandle, offline_status};
pub use tls::NatsTls;
