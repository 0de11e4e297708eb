//! Personal data over HTTP: the key store the server holds, sealing a field before a
//! command is decided, opening one when a view answers, and the erasure enforcer.
//!
//! A server started with a master key (`annals serve --master-key-file`, or
//! `ANNALS_MASTER_KEY`) holds a [`privacy::KeyStore`] ([`crate::AppState::with_key_store`]);
//! without one the personal-data routes, and an order with a `shipping_address`, answer
//! 503 `personal-data-disabled` ([`disabled`]) and everything else works.
//!
//! - **Sealing** ([`seal`]): for the event the repository will record,
//!   `EventId::derived(command_id, 0)`, in the stream the command writes, under the
//!   customer's key ([`create_key`], durable before it returns, run off the async
//!   workers). A retried request (the same `Idempotency-Key`, so the same command id)
//!   seals for the same event id.
//! - **Opening** ([`open`]): a view shows the plaintext, or `null` when the key was
//!   destroyed (`erased`) or the value cannot be read (`unreadable`: tampered, moved to
//!   another event or field, or under a key this store does not hold). An unreadable
//!   value is reported, never shown: a `warn!` naming where it is (never the value) and
//!   the counter `annals_personal_data_unreadable_total{reason}`.
//! - **Log reads never decrypt** ([`mark_erased`]): the generic event views show the
//!   sealed JSON, with `"erased": true` added where the key was destroyed.
//! - **The erasure enforcer** ([`ErasureEnforcer`]): a checkpointed subscriber of the log
//!   that destroys the keys of every `PersonalDataErased` it reads, so that a crash
//!   between the event and the key's destruction, or a log imported with erasures in it,
//!   still ends with the keys destroyed.

use axum::http::{HeaderValue, StatusCode, header};
use chrono::{DateTime, Utc};
use eventstore::{EventStore, Position, RecordedEvent};
use privacy::{Binding, KeyId, KeyStore, Sealed, SealedField, Unreadable};
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;

/// The counter of personal values that could not be read, by reason (`tampered`,
/// `unknown_key`).
pub const UNREADABLE_TOTAL: &str = "annals_personal_data_unreadable_total";

/// The counter of keys the erasure enforcer destroyed (keys an erasure request had not
/// destroyed already: after a crash, or from an imported log).
pub const ENFORCED_TOTAL: &str = "annals_personal_data_enforced_erasures_total";

/// The name of the erasure enforcer's checkpoint in the store.
pub const ENFORCER_CHECKPOINT: &str = "erasure-enforcer";

/// The event type whose keys the enforcer destroys.
const PERSONAL_DATA_ERASED: &str = "PersonalDataErased";

/// Registers the families of this module in `/metrics`, at zero.
pub(crate) fn register_metrics() {
    metrics::describe_counter!(
        UNREADABLE_TOTAL,
        "Personal values that could not be read and were shown as null, by reason (tampered: altered or moved to another event or field; unknown_key: a key this key store does not hold)."
    );
    metrics::describe_counter!(
        ENFORCED_TOTAL,
        "Customers whose keys the erasure enforcer destroyed on reading their PersonalDataErased (the erasure request had not: a crash in between, or an imported log)."
    );
    for reason in ["tampered", "unknown_key"] {
        metrics::counter!(UNREADABLE_TOTAL, "reason" => reason).increment(0);
    }
    metrics::counter!(ENFORCED_TOTAL).increment(0);
}

/// 503 `personal-data-disabled`: the server holds no key store (it was started without
/// a master key), so it can neither seal nor open personal data.
pub(crate) fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "personal-data-disabled",
        "Service unavailable",
        "this server was started without a master key, so it keeps no personal data: \
         start it with --master-key-file PATH (created if missing) or ANNALS_MASTER_KEY \
         (64 hex digits)",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("60"))
}

/// The server's key store, or the 503 of a server without one.
pub(crate) fn key_store(state: &crate::AppState) -> Result<KeyStore, ApiError> {
    state.key_store().cloned().ok_or_else(disabled)
}

fn key_store_error(error: privacy::Error) -> ApiError {
    match error {
        privacy::Error::FieldTooLong { field, len, max } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field-too-long",
            "Domain rule violated",
            format!("{field} has {len} bytes, more than the {max} allowed"),
        ),
        other => ApiError::internal(&other),
    }
}

/// The customer's key for new data: its active key, or a new one, durable before this
/// returns (blocking IO, run off the async workers).
pub(crate) async fn create_key(key_store: &KeyStore, customer_id: &str) -> Result<KeyId, ApiError> {
    if let Some(key_id) = key_store.active_key(customer_id) {
        return Ok(key_id);
    }
    let key_store = key_store.clone();
    let customer_id = customer_id.to_owned();
    tokio::task::spawn_blocking(move || key_store.create_key(&customer_id))
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(key_store_error)
}

/// Seals `plaintext` under `key_id` for `binding`. A key destroyed between its creation
/// and now (an erasure ran in between) is a 409: the customer's data was erased.
pub(crate) fn seal(
    key_store: &KeyStore,
    key_id: KeyId,
    binding: &Binding<'_>,
    plaintext: &str,
) -> Result<Sealed, ApiError> {
    key_store
        .seal(key_id, binding, plaintext)
        .map_err(|error| match error {
            privacy::SealError::Unreadable(Unreadable::Erased { .. }) => ApiError::new(
                StatusCode::CONFLICT,
                "personal-data-erased",
                "Conflict",
                "the customer's personal data was erased: no new personal data is kept \
                 under its id",
            ),
            privacy::SealError::Unreadable(other) => ApiError::internal(&other),
            privacy::SealError::Store(error) => key_store_error(error),
        })
}

/// A personal value as a view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The plaintext; `None` when erased or unreadable.
    pub(crate) value: Option<String>,
    /// When the key was destroyed, if it was.
    pub(crate) erased_at: Option<DateTime<Utc>>,
    /// Why the value cannot be read (`tampered`, `unknown_key`), if it cannot.
    pub(crate) unreadable: Option<&'static str>,
}

/// Opens `sealed` found at `binding`. An unreadable value is reported (a warning naming
/// its place and key, never its bytes, and [`UNREADABLE_TOTAL`]) and shown as `None`.
pub(crate) fn open(key_store: &KeyStore, sealed: &Sealed, binding: &Binding<'_>) -> Opened {
    match key_store.open_sealed(sealed, binding) {
        Ok(value) => Opened {
            value: Some(value),
            erased_at: None,
            unreadable: None,
        },
        Err(Unreadable::Erased { at }) => Opened {
            value: None,
            erased_at: Some(at),
            unreadable: None,
        },
        Err(unreadable) => {
            let reason = match unreadable {
                Unreadable::UnknownKey { .. } => "unknown_key",
                _ => "tampered",
            };
            tracing::warn!(
                stream = binding.stream,
                event_id = %binding.event_id,
                field = binding.field,
                key_id = %sealed.key_id,
                reason,
                "a personal value cannot be read ({unreadable}); it is shown as null"
            );
            metrics::counter!(UNREADABLE_TOTAL, "reason" => reason).increment(1);
            Opened {
                value: None,
                erased_at: None,
                unreadable: Some(reason),
            }
        }
    }
}

/// Opens a read model's sealed field ([`open`] at its own place).
pub(crate) fn open_field(key_store: &KeyStore, field: &SealedField) -> Opened {
    open(key_store, &field.sealed, &field.binding())
}

/// Adds `"erased": true` to the sealed values of `json` whose key `key_store` destroyed
/// (nothing without a key store). The JSON stays the event's: ciphertext, never opened.
pub(crate) fn mark_erased(key_store: Option<&KeyStore>, json: &mut serde_json::Value) {
    if let Some(key_store) = key_store {
        privacy::mark_erased(json, &|key_id| key_store.destroyed_at(key_id).is_some());
    }
}

/// Why the erasure enforcer stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    /// The store failed to read the log or its checkpoint.
    #[error("the erasure enforcer cannot read the log: {0}")]
    Store(#[from] eventstore::Error),
    /// The key store failed to destroy a customer's keys.
    #[error("the erasure enforcer cannot destroy the keys of {customer_id}: {source}")]
    KeyStore {
        /// The customer.
        customer_id: String,
        /// What failed.
        source: privacy::Error,
    },
    /// A blocking task failed.
    #[error("the erasure enforcer's blocking task failed: {0}")]
    Task(String),
}

/// The erasure enforcer: follows the log from its checkpoint and destroys the keys of
/// the customer of every `PersonalDataErased` it reads (a no-op when the erasure request
/// destroyed them already). The checkpoint moves past an erasure only once its keys are
/// destroyed, so a crash in between makes the next start destroy them.
#[derive(Debug, Clone)]
pub struct ErasureEnforcer {
    store: EventStore,
    key_store: KeyStore,
    /// Events read between two saves of the checkpoint when no erasure comes: the
    /// checkpoint only saves re-reading, so it need not move with every event.
    checkpoint_every: u64,
}

impl ErasureEnforcer {
    /// An enforcer of the erasures recorded in `store` on the keys of `key_store`.
    pub fn new(store: EventStore, key_store: KeyStore) -> Self {
        ErasureEnforcer {
            store,
            key_store,
            checkpoint_every: 4096,
        }
    }

    /// Runs until `stop` is cancelled or the store closes, then saves its checkpoint.
    pub async fn run(self, stop: CancellationToken) -> Result<(), EnforcerError> {
        let store = self.store.clone();
        let from = tokio::task::spawn_blocking(move || store.load_checkpoint(ENFORCER_CHECKPOINT))
            .await
            .map_err(|error| EnforcerError::Task(error.to_string()))??
            .unwrap_or_default();
        let mut subscription = self.store.subscribe(from);
        let mut next = from;
        let mut unsaved = 0u64;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = subscription.next() => event,
            };
            let Some(event) = event else { break };
            let event = event?;
            next = Position(event.position.0 + 1);
            if event.event_type == PERSONAL_DATA_ERASED {
                self.enforce(&event).await?;
                self.save(next).await?;
                unsaved = 0;
            } else {
                unsaved += 1;
                if unsaved >= self.checkpoint_every {
                    self.save(next).await?;
                    unsaved = 0;
                }
            }
        }
        if unsaved > 0 {
            self.save(next).await?;
        }
        Ok(())
    }

    /// Destroys the keys of the customer `event` erased.
    async fn enforce(&self, event: &RecordedEvent) -> Result<(), EnforcerError> {
        let customer_id = erased_customer(event);
        let key_store = self.key_store.clone();
        let subject = customer_id.clone();
        let erasure = tokio::task::spawn_blocking(move || key_store.erase(&subject))
            .await
            .map_err(|error| EnforcerError::Task(error.to_string()))?
            .map_err(|source| EnforcerError::KeyStore {
                customer_id: customer_id.clone(),
                source,
            })?;
        if !erasure.destroyed.is_empty() {
            metrics::counter!(ENFORCED_TOTAL).increment(1);
            tracing::warn!(
                customer_id,
                position = event.position.0,
                keys = erasure.destroyed.len(),
                "the erasure enforcer destroyed the keys of an erasure recorded in the log \
                 (the erasure request had not: a crash in between, or an imported log)"
            );
        }
        Ok(())
    }

    async fn save(&self, next: Position) -> Result<(), EnforcerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save_checkpoint(ENFORCER_CHECKPOINT, next))
            .await
            .map_err(|error| EnforcerError::Task(error.to_string()))??;
        Ok(())
    }
}

/// The customer a `PersonalDataErased` event is about: its payload's `customer_id`, or,
/// for a payload this build cannot decode, its stream's id after `customer-`.
fn erased_customer(event: &RecordedEvent) -> String {
    use eventstore::Aggregate;
    match customers::Customer::decode_event(event.schema_version, &event.payload) {
        Ok(customers::Event::PersonalDataErased { customer_id, .. }) => customer_id,
        _ => event
            .stream_id
            .as_str()
            .strip_prefix("customer-")
            .unwrap_or(event.stream_id.as_str())
            .to_owned(),
    }
}
