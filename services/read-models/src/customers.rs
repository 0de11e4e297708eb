//! The `customers` read model: each customer's profile as the log holds it (sealed
//! fields with their places, never plaintext), its stream version, and whether its
//! personal data was erased and when; one key per customer. The API opens the fields
//! with the key store when it answers (`GET /api/v1/customers/{id}`).

use chrono::{DateTime, Utc};
use eventstore::{Aggregate, Model, StoredEvent};
use privacy::{KeyId, SealedField};
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CUSTOMERS, decode, entity};

/// One customer's profile: sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerProfile {
    /// The customer.
    pub customer_id: String,
    /// The name, sealed, with its place (stream `customer-<id>`, the `CustomerRegistered`
    /// event's id, field `name`).
    pub name: SealedField,
    /// The email address, sealed, with its place.
    pub email: SealedField,
    /// The postal address, sealed, with its place.
    pub address: SealedField,
    /// The version of the customer's stream: its last event's.
    pub version: u64,
    /// The log position of the stream's last event.
    pub position: u64,
    /// Whether the customer's personal data was erased (`PersonalDataErased`).
    pub erased: bool,
    /// When it was erased: the `PersonalDataErased` event's `recorded_at`.
    pub erased_at: Option<DateTime<Utc>>,
    /// The erasure's event, once erased: its id, version and position, and the keys it
    /// destroyed (what `DELETE .../personal-data` answers again when sent twice).
    pub erasure: Option<ErasureRecord>,
}

/// Where a customer's erasure was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRecord {
    /// The `PersonalDataErased` event's id.
    pub event_id: Uuid,
    /// Its stream version.
    pub version: u64,
    /// Its log position.
    pub position: u64,
    /// The keys destroyed.
    pub key_ids: Vec<KeyId>,
}

/// Customer id -> profile.
const PROFILES: &str = "profiles";

/// Customer profiles (`customer-*` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomersProjection;

impl Projection for CustomersProjection {
    fn name(&self) -> &str {
        CUSTOMERS
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(customer_id) = entity(event.stream_id, customers::Customer::CATEGORY) else {
            return Ok(());
        };
        let event_id = Uuid::from_bytes(event.id);
        let place = |sealed: privacy::Sealed, field: &str| SealedField {
            sealed,
            stream: event.stream_id.to_owned(),
            event_id,
            field: field.to_owned(),
        };
        match decode::<customers::Customer>(event)? {
            customers::Event::CustomerRegistered {
                customer_id: _,
                name,
                email,
                address,
            } => {
                let profile = CustomerProfile {
                    customer_id: customer_id.to_owned(),
                    name: place(name, "name"),
                    email: place(email, "email"),
                    address: place(address, "address"),
                    version: event.version,
                    position: event.position,
                    erased: false,
                    erased_at: None,
                    erasure: None,
                };
                changes.put(PROFILES, customer_id.as_bytes(), profile)
            }
            customers::Event::PersonalDataErased { key_ids, .. } => {
                let profile = changes
                    .entry::<CustomerProfile>(PROFILES, customer_id.as_bytes())?
                    .as_mut()
                    .ok_or_else(|| {
                        ApplyError::Inconsistent(format!(
                            "customer {customer_id:?} is erased but was never registered"
                        ))
                    })?;
                profile.version = event.version;
                profile.position = event.position;
                profile.erased = true;
                profile.erased_at = DateTime::from_timestamp_micros(event.recorded_at_micros);
                profile.erasure = Some(ErasureRecord {
                    event_id,
                    version: event.version,
                    position: event.position,
                    key_ids,
                });
                Ok(())
            }
        }
    }
}

/// The profile of `customer_id`, if registered (erased ones too, marked).
pub fn customer(model: &Model, customer_id: &str) -> Result<Option<CustomerProfile>, Error> {
    projections::read(model, PROFILES, customer_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use customers::Event;
    use privacy::{Ciphertext, Sealed};

    use super::*;
    use crate::check::{check, event, order, rows};

    fn sealed(tag: u8) -> Sealed {
        Sealed {
            key_id: KeyId(Uuid::from_u128(7)),
            ciphertext: Ciphertext(vec![tag; 4]),
        }
    }

    fn registered(customer_id: &str) -> crate::check::Recorded {
        event::<customers::Customer>(
            customer_id,
            Event::CustomerRegistered {
                customer_id: customer_id.into(),
                name: sealed(1),
                email: sealed(2),
                address: sealed(3),
            },
        )
    }

    fn erased(customer_id: &str) -> crate::check::Recorded {
        event::<customers::Customer>(
            customer_id,
            Event::PersonalDataErased {
                customer_id: customer_id.into(),
                reason: "asked".into(),
                erased_by: "operator".into(),
                key_ids: vec![KeyId(Uuid::from_u128(7))],
            },
        )
    }

    #[test]
    fn a_registered_customer_has_its_sealed_profile_with_places() {
        let model = check(&CustomersProjection, &[], &[registered("alice")]).unwrap();
        let profiles = rows::<CustomerProfile>(&model, PROFILES);
        assert_eq!(profiles.len(), 1);
        let profile = &profiles[0];
        assert_eq!(profile.customer_id, "alice");
        assert_eq!(profile.email.sealed, sealed(2));
        assert_eq!(profile.email.stream, "customer-alice");
        assert_eq!(profile.email.field, "email");
        assert_eq!(profile.address.field, "address");
        assert!(!profile.erased);
        assert_eq!(profile.erased_at, None);
    }

    #[test]
    fn an_erasure_marks_the_profile_and_keeps_the_ciphertext() {
        let model = check(
            &CustomersProjection,
            &[registered("alice"), registered("bob")],
            &[erased("alice")],
        )
        .unwrap();
        let profiles = rows::<CustomerProfile>(&model, PROFILES);
        let alice = &profiles[0];
        assert!(alice.erased);
        assert_eq!(alice.erased_at, DateTime::from_timestamp_micros(0));
        assert_eq!(alice.position, 2);
        assert_eq!(alice.name.sealed, sealed(1));
        let erasure = alice.erasure.as_ref().unwrap();
        assert_eq!(erasure.key_ids, vec![KeyId(Uuid::from_u128(7))]);
        assert!(!profiles[1].erased, "bob is untouched");
    }

    #[test]
    fn erasing_a_customer_never_registered_is_inconsistent() {
        let (error, _) = check(&CustomersProjection, &[], &[erased("alice")]).unwrap_err();
        assert!(matches!(error, ApplyError::Inconsistent(_)), "{error}");
    }

    #[test]
    fn events_of_other_streams_are_ignored() {
        let model = check(
            &CustomersProjection,
            &[],
            &[order("o1", orders::Event::OrderConfirmed { total: 1 })],
        )
        .unwrap();
        assert!(model.tables().is_empty());
    }
}
