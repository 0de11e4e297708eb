//! The `personal_data` read model: an index from a data subject's key id to every
//! sealed personal field under it, in any event of any stream, so that the access
//! endpoint (`GET /api/v1/customers/{id}/personal-data`) finds all of a customer's data
//! without scanning the log. The fields are found through the domain crates'
//! declarations ([`crate::personal::sealed_fields`]). It keeps ciphertext only: the API
//! opens the values with the key store when it answers, and once the keys are destroyed
//! nobody can.
//!
//! One key per event and key id (the key id's 16 bytes, then the position's 8, big
//! endian), holding that event's fields under that key: a registration is one key, an
//! order with a shipping address one more, and a key id's entries are a prefix scan in
//! log order.

use chrono::{DateTime, Utc};
use eventstore::{Model, StoredEvent};
use privacy::{KeyId, SealedField};
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};

use crate::PERSONAL_DATA;
use crate::personal::sealed_fields;

/// One sealed personal field and where it is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDataField {
    /// The log position of the event that holds it.
    pub position: u64,
    /// The event's type, e.g. `CustomerRegistered`.
    pub event_type: String,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The value, sealed, with its place: the event's stream and id, the field's name.
    pub sealed: SealedField,
}

/// Key id + position -> the fields of that event under that key.
const FIELDS: &str = "fields";

fn field_key(key_id: KeyId, position: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(key_id.0.as_bytes());
    key[16..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The index of personal fields by key id (every stream with declared personal fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonalDataProjection;

impl Projection for PersonalDataProjection {
    fn name(&self) -> &str {
        PERSONAL_DATA
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let fields = sealed_fields(event)?;
        if fields.is_empty() {
            return Ok(());
        }
        let recorded_at =
            DateTime::from_timestamp_micros(event.recorded_at_micros).ok_or_else(|| {
                ApplyError::Inconsistent(format!(
                    "recorded_at {} is out of range",
                    event.recorded_at_micros
                ))
            })?;
        let mut by_key: Vec<(KeyId, Vec<PersonalDataField>)> = Vec::new();
        for sealed in fields {
            let key_id = sealed.sealed.key_id;
            let field = PersonalDataField {
                position: event.position,
                event_type: event.event_type.to_owned(),
                recorded_at,
                sealed,
            };
            match by_key.iter_mut().find(|(id, _)| *id == key_id) {
                Some((_, under)) => under.push(field),
                None => by_key.push((key_id, vec![field])),
            }
        }
        for (key_id, under) in by_key {
            changes.put(FIELDS, &field_key(key_id, event.position), under)?;
        }
        Ok(())
    }
}

/// Every sealed personal field under any of `key_ids`, in log order (by position, then
/// in the order the event's declaration lists them).
pub fn fields_of(model: &Model, key_ids: &[KeyId]) -> Result<Vec<PersonalDataField>, Error> {
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for key_id in key_ids {
        if seen.contains(key_id) {
            continue;
        }
        seen.push(*key_id);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = projections::scan::<Vec<PersonalDataField>>(
                model,
                FIELDS,
                key_id.0.as_bytes(),
                after.as_deref(),
                256,
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let full = page.len() == 256;
            found.extend(page.into_iter().flat_map(|(_, fields)| fields));
            if !full {
                break;
            }
        }
    }
    // Stable: the fields of one event keep their declared order.
    found.sort_by_key(|field| field.position);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use privacy::{Ciphertext, Sealed};
    use uuid::Uuid;

    use super::*;
    use crate::check::{event, order, rows, stock};

    fn sealed(key: u128, tag: u8) -> Sealed {
        Sealed {
            key_id: KeyId(Uuid::from_u128(key)),
            ciphertext: Ciphertext(vec![tag; 4]),
        }
    }

    fn registered(customer_id: &str, key: u128) -> crate::check::Recorded {
        event::<customers::Customer>(
            customer_id,
            customers::Event::CustomerRegistered {
                customer_id: customer_id.into(),
                name: sealed(key, 1),
                email: sealed(key, 2),
                address: sealed(key, 3),
            },
        )
    }

    fn placed(order_id: &str, address: Option<Sealed>) -> crate::check::Recorded {
        order(
            order_id,
            orders::Event::OrderPlaced {
                order_id: order_id.into(),
                customer_id: "alice".into(),
                lines: vec![],
                shipping_address: address,
            },
        )
    }

    #[test]
    fn every_declared_field_is_indexed_under_its_key_and_nothing_else() {
        let model = crate::check::check(
            &PersonalDataProjection,
            &[registered("alice", 1), registered("bob", 2)],
            &[
                placed("o1", Some(sealed(1, 4))),
                placed("o2", None),
                stock("apple", inventory::Event::Restocked { quantity: 1 }),
            ],
        )
        .unwrap();
        let entries = rows::<Vec<PersonalDataField>>(&model, FIELDS);
        // alice's registration, bob's, alice's order with an address.
        assert_eq!(entries.len(), 3);
        let alice: Vec<_> = entries
            .iter()
            .flatten()
            .filter(|field| field.sealed.sealed.key_id == KeyId(Uuid::from_u128(1)))
            .map(|field| {
                (
                    field.position,
                    field.event_type.as_str(),
                    field.sealed.stream.as_str(),
                    field.sealed.field.as_str(),
                )
            })
            .collect();
        assert_eq!(
            alice,
            vec![
                (0, "CustomerRegistered", "customer-alice", "name"),
                (0, "CustomerRegistered", "customer-alice", "email"),
                (0, "CustomerRegistered", "customer-alice", "address"),
                (2, "OrderPlaced", "order-o1", "shipping_address"),
            ]
        );
    }
}
