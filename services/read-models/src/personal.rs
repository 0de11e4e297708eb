//! The sealed personal fields of a stored event, found through the declarations of the
//! domain crates (`customers::PERSONAL_FIELDS`, `orders::PERSONAL_FIELDS`): the event is
//! decoded by its aggregate and the declared fields are taken from it, so a field added
//! to a declaration is found everywhere without another change here, and nothing is
//! guessed from the shape of the JSON.

use eventstore::{Aggregate, StoredEvent};
use privacy::{PersonalField, Sealed, SealedField};
use projections::ApplyError;
use uuid::Uuid;

use crate::{decode, entity};

/// One category's declaration: its personal fields and how to decode its events.
struct Declared {
    category: &'static str,
    fields: &'static [PersonalField],
    /// The event as JSON in serde's externally tagged form (`{"<Type>": {fields}}`).
    decode: fn(&StoredEvent<'_>) -> Result<serde_json::Value, ApplyError>,
}

/// Every category with personal fields. A new domain crate with personal data is one
/// more line here.
const DECLARED: &[Declared] = &[
    Declared {
        category: customers::Customer::CATEGORY,
        fields: customers::PERSONAL_FIELDS,
        decode: tagged::<customers::Customer>,
    },
    Declared {
        category: orders::Order::CATEGORY,
        fields: orders::PERSONAL_FIELDS,
        decode: tagged::<orders::Order>,
    },
];

fn tagged<A: Aggregate>(event: &StoredEvent<'_>) -> Result<serde_json::Value, ApplyError>
where
    A::Event: serde::Serialize,
{
    let decoded = decode::<A>(event)?;
    serde_json::to_value(&decoded).map_err(|error| ApplyError::Decode {
        event_type: event.event_type.to_owned(),
        reason: error.to_string(),
    })
}

/// The sealed values of the declared personal fields of `event`, each with its place
/// (the event's stream and id, the field's name), in the order declared; empty for an
/// event without personal fields, and for an optional field that is absent. A declared
/// field that is not in the event, or is not a sealed value, is
/// [`ApplyError::Inconsistent`]: the declaration and the event type disagree.
pub fn sealed_fields(event: &StoredEvent<'_>) -> Result<Vec<SealedField>, ApplyError> {
    let Some(declared) = DECLARED
        .iter()
        .find(|declared| entity(event.stream_id, declared.category).is_some())
    else {
        return Ok(Vec::new());
    };
    let mut fields = declared
        .fields
        .iter()
        .filter(|field| field.event_type == event.event_type)
        .peekable();
    if fields.peek().is_none() {
        return Ok(Vec::new());
    }
    let json = (declared.decode)(event)?;
    let mut found = Vec::new();
    for field in fields {
        let value = json
            .get(field.event_type)
            .and_then(|body| body.get(field.field))
            .ok_or_else(|| {
                ApplyError::Inconsistent(format!(
                    "the personal field {}.{} is not in the event",
                    field.event_type, field.field
                ))
            })?;
        let sealed: Option<Sealed> = serde_json::from_value(value.clone()).map_err(|error| {
            ApplyError::Inconsistent(format!(
                "the personal field {}.{} is not a sealed value: {error}",
                field.event_type, field.field
            ))
        })?;
        if let Some(sealed) = sealed {
            found.push(SealedField {
                sealed,
                stream: event.stream_id.to_owned(),
                event_id: Uuid::from_bytes(event.id),
                field: field.field.to_owned(),
            });
        }
    }
    Ok(found)
}
