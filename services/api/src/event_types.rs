//! Every event type Annals records, with its versions: the catalog that the payload
//! decoder ([`crate::events::decode_payload`]), the schema routes and the golden tests
//! share, so that a type added to a domain crate and not here fails a test instead of
//! being shown as hex.
//!
//! An event's type name is unique across categories (`OrderPlaced` is an order's event
//! and nothing else's), so `(type, version)` names a payload shape on its own: that is the
//! key of the schema routes and of the `urn:annals:schema:event:<type>:<version>` URNs.

/// The category of the fulfilment saga's streams (`saga-fulfilment-<order id>`).
pub const FULFILMENT_CATEGORY: &str = "saga-fulfilment";

/// One version of one event type.
#[derive(Debug, Clone, Copy)]
pub struct EventType {
    /// The type name, as the envelope records it (`OrderPlaced`).
    pub name: &'static str,
    /// The stream category whose aggregate (or saga) records it (`order`).
    pub category: &'static str,
    /// The schema version.
    pub version: u32,
    /// A sample payload, encoded by the code of this version (as the log holds it).
    pub sample: fn() -> Vec<u8>,
    /// The JSON Schema of the Rust type whose JSON this version's payloads have: the
    /// category's event enum of this version (the variant named [`EventType::name`]
    /// is this type's), or a struct.
    root_schema: fn() -> serde_json::Value,
}

impl EventType {
    /// The URN of this version's JSON Schema (its `$id`, and the CloudEvents
    /// `dataschema` of events shown in this version): `urn:annals:schema:event:<type>:<version>`.
    pub fn urn(&self) -> String {
        format!("urn:annals:schema:event:{}:{}", self.name, self.version)
    }

    /// Where the schema is served: `/api/v1/schemas/events/<type>/<version>`.
    pub fn href(&self) -> String {
        format!("/api/v1/schemas/events/{}/{}", self.name, self.version)
    }

    /// The JSON Schema (draft 2020-12) of this version's JSON form, generated from the
    /// Rust types: the fields of the enum variant named after the type (the JSON a
    /// consumer sees is those fields alone), with the definitions they refer to.
    pub fn schema(&self) -> serde_json::Value {
        use serde_json::Value;
        let root = (self.root_schema)();
        let arm = root
            .get("oneOf")
            .and_then(Value::as_array)
            .and_then(|arms| {
                arms.iter()
                    .find(|arm| arm.pointer(&format!("/properties/{}", self.name)).is_some())
            });
        let (body, description) = match arm {
            Some(arm) => (
                arm["properties"][self.name].clone(),
                arm.get("description").cloned(),
            ),
            None => (root.clone(), root.get("description").cloned()),
        };
        let mut document = serde_json::Map::new();
        document.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        document.insert("$id".into(), self.urn().into());
        document.insert("title".into(), self.name.into());
        if let Some(description) = description {
            document.insert("description".into(), description);
        }
        if let Value::Object(members) = &body {
            for (name, value) in members {
                if !matches!(name.as_str(), "$schema" | "$defs" | "title" | "description") {
                    document.insert(name.clone(), value.clone());
                }
            }
        }
        let defs = referenced_definitions(&body, root.get("$defs"));
        if !defs.is_empty() {
            document.insert("$defs".into(), Value::Object(defs));
        }
        Value::Object(document)
    }
}

/// The root JSON Schema of `T` (draft 2020-12, schemars' default).
fn root_schema<T: schemars::JsonSchema>() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The members of `defs` that `schema` refers to (`"$ref": "#/$defs/<name>"`), directly
/// or through each other.
fn referenced_definitions(
    schema: &serde_json::Value,
    defs: Option<&serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    fn refs(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(members) => {
                for (name, member) in members {
                    match (name.as_str(), member) {
                        ("$ref", serde_json::Value::String(target)) => {
                            if let Some(def) = target.strip_prefix("#/$defs/") {
                                found.push(def.to_owned());
                            }
                        }
                        _ => refs(member, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }
    let mut kept = serde_json::Map::new();
    let Some(defs) = defs.and_then(serde_json::Value::as_object) else {
        return kept;
    };
    let mut pending = Vec::new();
    refs(schema, &mut pending);
    while let Some(name) = pending.pop() {
        if kept.contains_key(&name) {
            continue;
        }
        if let Some(def) = defs.get(&name) {
            refs(def, &mut pending);
            kept.insert(name, def.clone());
        }
    }
    kept
}

/// The entry of `(event_type, version)`, if Annals has such an event.
pub fn find(event_type: &str, version: u32) -> Option<&'static EventType> {
    EVENT_TYPES
        .iter()
        .find(|entry| entry.name == event_type && entry.version == version)
}

/// The newest schema version of `event_type`: the shape in which the current code
/// writes it, and to which older stored versions are upcast when read.
pub fn current_version(event_type: &str) -> Option<u32> {
    EVENT_TYPES
        .iter()
        .filter(|entry| entry.name == event_type)
        .map(|entry| entry.version)
        .max()
}

/// The URN of the JSON Schema of `event_type` in `schema_version`
/// (`urn:annals:schema:event:OrderPlaced:2`), `None` for a type or version Annals does
/// not have. The JSON of a stored event ([`crate::events::decode_payload`]) is in the
/// type's current version: its schema is [`crate::events::payload_schema`].
pub fn schema_urn(event_type: &str, schema_version: u32) -> Option<String> {
    find(event_type, schema_version).map(EventType::urn)
}

/// Every (type, version), by category and then in the order of the domain crate's enum.
pub const EVENT_TYPES: &[EventType] = &[
    // Orders: schema version 1 (lines without a currency) and 2 (no shipping address),
    // read upcast; version 3 since. The version is the aggregate's, so each order event
    // type has all three.
    EventType {
        name: "OrderPlaced",
        category: "order",
        version: 1,
        root_schema: root_schema::<orders::v1::Event>,
        sample: samples::order_placed_v1,
    },
    EventType {
        name: "OrderConfirmed",
        category: "order",
        version: 1,
        root_schema: root_schema::<orders::v1::Event>,
        sample: samples::order_confirmed_v1,
    },
    EventType {
        name: "OrderCancelled",
        category: "order",
        version: 1,
        root_schema: root_schema::<orders::v1::Event>,
        sample: samples::order_cancelled_v1,
    },
    EventType {
        name: "OrderPlaced",
        category: "order",
        version: 2,
        root_schema: root_schema::<orders::v2::Event>,
        sample: samples::order_placed_v2,
    },
    EventType {
        name: "OrderConfirmed",
        category: "order",
        version: 2,
        root_schema: root_schema::<orders::v2::Event>,
        sample: samples::order_confirmed_v2,
    },
    EventType {
        name: "OrderCancelled",
        category: "order",
        version: 2,
        root_schema: root_schema::<orders::v2::Event>,
        sample: samples::order_cancelled_v2,
    },
    EventType {
        name: "OrderPlaced",
        category: "order",
        version: 3,
        root_schema: root_schema::<orders::Event>,
        sample: samples::order_placed,
    },
    EventType {
        name: "OrderConfirmed",
        category: "order",
        version: 3,
        root_schema: root_schema::<orders::Event>,
        sample: samples::order_confirmed,
    },
    EventType {
        name: "OrderCancelled",
        category: "order",
        version: 3,
        root_schema: root_schema::<orders::Event>,
        sample: samples::order_cancelled,
    },
    EventType {
        name: "SkuRegistered",
        category: "stock",
        version: 1,
        root_schema: root_schema::<inventory::Event>,
        sample: samples::sku_registered,
    },
    EventType {
        name: "Restocked",
        category: "stock",
        version: 1,
        root_schema: root_schema::<inventory::Event>,
        sample: samples::restocked,
    },
    EventType {
        name: "StockReserved",
        category: "stock",
        version: 1,
        root_schema: root_schema::<inventory::Event>,
        sample: samples::stock_reserved,
    },
    EventType {
        name: "StockReleased",
        category: "stock",
        version: 1,
        root_schema: root_schema::<inventory::Event>,
        sample: samples::stock_released,
    },
    EventType {
        name: "ReservationConfirmed",
        category: "stock",
        version: 1,
        root_schema: root_schema::<inventory::Event>,
        sample: samples::reservation_confirmed,
    },
    EventType {
        name: "AccountOpened",
        category: "account",
        version: 1,
        root_schema: root_schema::<payments::Event>,
        sample: samples::account_opened,
    },
    EventType {
        name: "Deposited",
        category: "account",
        version: 1,
        root_schema: root_schema::<payments::Event>,
        sample: samples::deposited,
    },
    EventType {
        name: "Charged",
        category: "account",
        version: 1,
        root_schema: root_schema::<payments::Event>,
        sample: samples::charged,
    },
    EventType {
        name: "Refunded",
        category: "account",
        version: 1,
        root_schema: root_schema::<payments::Event>,
        sample: samples::refunded,
    },
    EventType {
        name: "CardRegistered",
        category: "card",
        version: 1,
        root_schema: root_schema::<payments::card::Event>,
        sample: samples::card_registered,
    },
    // Customers: every field of a profile but its id is personal data, sealed
    // (customers::PERSONAL_FIELDS); the schemas mark it (`x-annals-personal`).
    EventType {
        name: "CustomerRegistered",
        category: "customer",
        version: 1,
        root_schema: root_schema::<customers::Event>,
        sample: samples::customer_registered,
    },
    EventType {
        name: "PersonalDataErased",
        category: "customer",
        version: 1,
        root_schema: root_schema::<customers::Event>,
        sample: samples::personal_data_erased,
    },
    EventType {
        name: crate::idempotency::EVENT_TYPE,
        category: crate::idempotency::CATEGORY,
        version: 1,
        root_schema: root_schema::<crate::idempotency::RecordView>,
        sample: samples::idempotent_response_recorded,
    },
    EventType {
        name: "FulfilmentStarted",
        category: FULFILMENT_CATEGORY,
        version: 1,
        root_schema: root_schema::<sagas::fulfilment::Input>,
        sample: samples::fulfilment_started,
    },
    EventType {
        name: "FulfilmentCancelRequested",
        category: FULFILMENT_CATEGORY,
        version: 1,
        root_schema: root_schema::<sagas::fulfilment::Input>,
        sample: samples::fulfilment_cancel_requested,
    },
    EventType {
        name: "FulfilmentCommandAnswered",
        category: FULFILMENT_CATEGORY,
        version: 1,
        root_schema: root_schema::<sagas::fulfilment::Input>,
        sample: samples::fulfilment_command_answered,
    },
    EventType {
        name: "FulfilmentDeadlinePassed",
        category: FULFILMENT_CATEGORY,
        version: 1,
        root_schema: root_schema::<sagas::fulfilment::Input>,
        sample: samples::fulfilment_deadline_passed,
    },
];

/// The category of `stream` in [`EVENT_TYPES`]: its prefix before the first `-`, except
/// for saga streams, whose category names the saga too (`saga-fulfilment`).
pub fn category_of(stream: &eventstore::StreamId) -> &str {
    match stream.category() {
        "saga" if stream.as_str().starts_with("saga-fulfilment-") => FULFILMENT_CATEGORY,
        category => category,
    }
}

/// A payload of `category` stored with `schema_version`, decoded by the crate that owns
/// the category into the JSON a consumer sees; `None` for a category no crate here knows.
pub fn decode_json(
    category: &str,
    schema_version: u32,
    payload: &[u8],
) -> Option<Result<serde_json::Value, eventstore::Error>> {
    Some(match category {
        "stock" => inventory::event_to_json(schema_version, payload),
        "account" => payments::event_to_json(schema_version, payload),
        "card" => payments::card::event_to_json(schema_version, payload),
        "order" => orders::event_to_json(schema_version, payload),
        "customer" => customers::event_to_json(schema_version, payload),
        crate::idempotency::CATEGORY => crate::idempotency::event_to_json(schema_version, payload),
        FULFILMENT_CATEGORY => sagas::fulfilment::input_to_json(payload),
        _ => return None,
    })
}

/// One sample payload per (type, version): small, and with every optional member set, so
/// that the golden files show every field. Never change a sample of a version that has
/// been released: its golden bytes are what logs written then hold.
mod samples {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).expect("a sample event always encodes")
    }

    fn apple(quantity: u64) -> orders::OrderLine {
        orders::OrderLine {
            sku: "apple".into(),
            quantity,
        }
    }

    pub(super) fn order_placed_v1() -> Vec<u8> {
        encode(&orders::v1::Event::OrderPlaced {
            order_id: "o1".into(),
            customer_id: "alice".into(),
            lines: vec![apple(3)],
        })
    }

    pub(super) fn order_confirmed_v1() -> Vec<u8> {
        encode(&orders::v1::Event::OrderConfirmed { total: 360 })
    }

    pub(super) fn order_cancelled_v1() -> Vec<u8> {
        encode(&orders::v1::Event::OrderCancelled {
            reason: "changed my mind".into(),
        })
    }

    pub(super) fn order_placed_v2() -> Vec<u8> {
        encode(&orders::v2::Event::OrderPlaced {
            order_id: "o1".into(),
            customer_id: "alice".into(),
            lines: vec![orders::PlacedLine::in_default_currency(&apple(3))],
        })
    }

    pub(super) fn order_confirmed_v2() -> Vec<u8> {
        encode(&orders::v2::Event::OrderConfirmed { total: 360 })
    }

    pub(super) fn order_cancelled_v2() -> Vec<u8> {
        encode(&orders::v2::Event::OrderCancelled {
            reason: "changed my mind".into(),
        })
    }

    /// A sealed value with made-up bytes: samples are never opened, and the golden
    /// files show the shape (key id, base64 ciphertext), not a real encryption.
    fn sealed(tag: u8) -> privacy::Sealed {
        privacy::Sealed {
            key_id: privacy::KeyId(Uuid::from_u128(0x0193_a4e2_7c1d_4b3e_9f00_0000_0000_a11c)),
            ciphertext: privacy::Ciphertext(vec![tag; 8]),
        }
    }

    pub(super) fn order_placed() -> Vec<u8> {
        encode(&orders::Event::OrderPlaced {
            order_id: "o1".into(),
            customer_id: "alice".into(),
            lines: vec![orders::PlacedLine::in_default_currency(&apple(3))],
            shipping_address: Some(sealed(0x5a)),
        })
    }

    pub(super) fn order_confirmed() -> Vec<u8> {
        encode(&orders::Event::OrderConfirmed { total: 360 })
    }

    pub(super) fn order_cancelled() -> Vec<u8> {
        encode(&orders::Event::OrderCancelled {
            reason: "changed my mind".into(),
        })
    }

    pub(super) fn sku_registered() -> Vec<u8> {
        encode(&inventory::Event::SkuRegistered {
            sku: "apple".into(),
            name: "Apple".into(),
            unit_price: 120,
        })
    }

    pub(super) fn restocked() -> Vec<u8> {
        encode(&inventory::Event::Restocked { quantity: 10 })
    }

    pub(super) fn stock_reserved() -> Vec<u8> {
        encode(&inventory::Event::StockReserved {
            order_id: "o1".into(),
            quantity: 3,
            unit_price: 120,
        })
    }

    pub(super) fn stock_released() -> Vec<u8> {
        encode(&inventory::Event::StockReleased {
            order_id: "o1".into(),
            quantity: 3,
        })
    }

    pub(super) fn reservation_confirmed() -> Vec<u8> {
        encode(&inventory::Event::ReservationConfirmed {
            order_id: "o1".into(),
            quantity: 3,
        })
    }

    pub(super) fn account_opened() -> Vec<u8> {
        encode(&payments::Event::AccountOpened {
            customer_id: "alice".into(),
        })
    }

    pub(super) fn deposited() -> Vec<u8> {
        encode(&payments::Event::Deposited { amount: 5000 })
    }

    pub(super) fn charged() -> Vec<u8> {
        encode(&payments::Event::Charged {
            order_id: "o1".into(),
            amount: 360,
        })
    }

    pub(super) fn refunded() -> Vec<u8> {
        encode(&payments::Event::Refunded {
            order_id: "o1".into(),
            amount: 360,
        })
    }

    pub(super) fn card_registered() -> Vec<u8> {
        encode(&payments::card::Event::CardRegistered {
            customer_id: "alice".into(),
            card: "tok_alice".into(),
        })
    }

    pub(super) fn customer_registered() -> Vec<u8> {
        encode(&customers::Event::CustomerRegistered {
            customer_id: "alice".into(),
            name: sealed(0x6e),
            email: sealed(0x65),
            address: sealed(0x61),
        })
    }

    pub(super) fn personal_data_erased() -> Vec<u8> {
        encode(&customers::Event::PersonalDataErased {
            customer_id: "alice".into(),
            reason: "ticket 42: the customer asked".into(),
            erased_by: "operator-1".into(),
            key_ids: vec![sealed(0).key_id],
        })
    }

    pub(super) fn idempotent_response_recorded() -> Vec<u8> {
        encode(&crate::idempotency::Record {
            key: "order-o1".into(),
            fingerprint: [7; 32],
            status: 201,
            etag: Some("\"0\"".into()),
            location: Some("/api/v1/orders/o1".into()),
            body: br#"{"version":0}"#.to_vec(),
        })
    }

    fn deadline() -> DateTime<Utc> {
        DateTime::from_timestamp(1_793_000_000, 123_456_000).expect("a valid time")
    }

    pub(super) fn fulfilment_started() -> Vec<u8> {
        encode(&sagas::fulfilment::Input::Started {
            order_id: "o1".into(),
            customer_id: "alice".into(),
            lines: vec![apple(3)],
            deadline: deadline(),
            correlation_id: Some(Uuid::from_u128(0x0193_a4e2_7c1d_7b3e_9f00_0000_0000_c0de)),
        })
    }

    pub(super) fn fulfilment_cancel_requested() -> Vec<u8> {
        encode(&sagas::fulfilment::Input::CancelRequested {
            reason: "changed my mind".into(),
        })
    }

    pub(super) fn fulfilment_command_answered() -> Vec<u8> {
        encode(&sagas::fulfilment::Input::Answered {
            key: "reserve/apple".into(),
            outcome: sagas::fulfilment::Outcome::Reserved {
                quantity: 3,
                unit_price: 120,
            },
        })
    }

    pub(super) fn fulfilment_deadline_passed() -> Vec<u8> {
        encode(&sagas::fulfilment::Input::DeadlinePassed {
            key: sagas::fulfilment::DEADLINE.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// `docs/schemas/` of the repository.
    pub(crate) fn schemas_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
    }

    /// Compares `actual` with the file at `path`. Only `UPDATE_GOLDEN=1`, exactly,
    /// rewrites it (a test run never changes the tree otherwise). The message on a
    /// difference is `hint`.
    pub(crate) fn compare_golden(path: &std::path::Path, actual: &str, hint: &str) {
        match std::env::var("UPDATE_GOLDEN").as_deref() {
            Ok("1") => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, actual).unwrap();
            }
            Ok(value) => panic!(
                "UPDATE_GOLDEN={value:?}: only UPDATE_GOLDEN=1 rewrites golden files; unset it to compare"
            ),
            Err(_) => {
                let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
                    panic!(
                        "missing golden file {}; run with UPDATE_GOLDEN=1 to write it",
                        path.display()
                    )
                });
                assert!(
                    expected == actual,
                    "{} differs from what the code gives now. {hint}\n--- expected\n{expected}\n--- actual\n{actual}",
                    path.display()
                );
            }
        }
    }

    /// Type names are unique across categories: the schema routes and URNs are keyed on
    /// (type, version) alone.
    #[test]
    fn type_names_are_unique_across_categories() {
        let mut owners = std::collections::BTreeMap::new();
        for event_type in EVENT_TYPES {
            let owner = owners.entry(event_type.name).or_insert(event_type.category);
            assert_eq!(
                *owner, event_type.category,
                "{} is recorded by two categories",
                event_type.name
            );
        }
        let versions: BTreeSet<_> = EVENT_TYPES.iter().map(|t| (t.name, t.version)).collect();
        assert_eq!(versions.len(), EVENT_TYPES.len(), "a (type, version) twice");
    }

    /// Every variant of every event enum this catalog points at has its entry, in the
    /// same category and version: a variant added to a domain crate and not here fails.
    #[test]
    fn every_variant_of_the_event_enums_is_in_the_catalog() {
        for entry in EVENT_TYPES {
            let root = (entry.root_schema)();
            for arm in root["oneOf"].as_array().into_iter().flatten() {
                for variant in arm["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, _)| name)
                {
                    assert!(
                        find(variant, entry.version)
                            .is_some_and(|found| found.category == entry.category),
                        "{variant} (version {} of {}) is not in EVENT_TYPES",
                        entry.version,
                        entry.category
                    );
                }
            }
        }
    }

    /// The golden files pin, for every (type, version), the postcard bytes that code of
    /// that version writes for a sample event, and the JSON the current code shows for
    /// those bytes (`json`, in the type's current version `json_version`: an older
    /// version's bytes are shown upcast). The bytes in the file are decoded, not the ones encoded now: a log
    /// written by any past version must stay readable for as long as it exists.
    #[test]
    fn golden_bytes_and_json_of_every_event_type_and_version() {
        for event_type in EVENT_TYPES {
            let bytes = (event_type.sample)();
            let path = schemas_dir().join(format!(
                "golden/{}.v{}.json",
                event_type.name, event_type.version
            ));
            let json = decode_json(event_type.category, event_type.version, &bytes)
                .expect("a known category")
                .unwrap_or_else(|error| panic!("{}: {error}", event_type.name));
            let golden = serde_json::json!({
                "type": event_type.name,
                "version": event_type.version,
                "category": event_type.category,
                "postcard_hex": crate::events::hex(&bytes),
                // What the current code shows for these bytes: an older version upcast.
                "json": json,
                "json_version": current_version(event_type.name),
            });
            let text = serde_json::to_string_pretty(&golden).unwrap() + "\n";
            compare_golden(
                &path,
                &text,
                "The stored format of an event type changed: logs already written would be \
                 misread. Keep the old shape decodable (a new schema version and an upcaster), \
                 or if only the JSON changed on purpose run with UPDATE_GOLDEN=1 and review the diff.",
            );
            // The bytes of the file, as a log holds them, decode to the file's JSON.
            let pinned: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let pinned_bytes = from_hex(pinned["postcard_hex"].as_str().unwrap());
            let decoded = decode_json(event_type.category, event_type.version, &pinned_bytes)
                .unwrap()
                .unwrap_or_else(|error| panic!("{}: {error}", event_type.name));
            assert_eq!(decoded, pinned["json"], "{}", event_type.name);
        }
    }

    /// The schemas in `docs/schemas/events/` are the ones the Rust types give now. A
    /// difference means the JSON a consumer sees changed: that needs a new schema version
    /// (and an upcaster from the old one), unless the change is compatible.
    #[test]
    fn checked_in_schemas_match_the_rust_types() {
        let dir = schemas_dir().join("events");
        for event_type in EVENT_TYPES {
            let path = dir.join(format!(
                "{}.v{}.schema.json",
                event_type.name, event_type.version
            ));
            let text = serde_json::to_string_pretty(&event_type.schema()).unwrap() + "\n";
            compare_golden(
                &path,
                &text,
                "The JSON form of this event type no longer matches its published schema. \
                 Bump the schema version of its aggregate and add an upcaster from the old \
                 version (docs/EVENTS.md), or, if the change is intended and compatible (a \
                 description, say), run with UPDATE_GOLDEN=1 and review the diff.",
            );
        }
        // No schema file is left over from a type or version that is gone.
        let mut expected: BTreeSet<String> = EVENT_TYPES
            .iter()
            .map(|t| format!("{}.v{}.schema.json", t.name, t.version))
            .collect();
        if std::env::var("UPDATE_GOLDEN").is_err() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(
                    expected.remove(&name),
                    "{name} names no event type and version"
                );
            }
        }
    }

    /// Each schema accepts the JSON of its sample (for the current versions, which is
    /// what a stored sample is shown as): checked for the members and their JSON types.
    #[test]
    fn schemas_describe_the_json_of_the_samples() {
        for event_type in EVENT_TYPES {
            if current_version(event_type.name) != Some(event_type.version) {
                continue;
            }
            let schema = event_type.schema();
            let json = decode_json(
                event_type.category,
                event_type.version,
                &(event_type.sample)(),
            )
            .unwrap()
            .unwrap();
            let properties = schema["properties"].as_object().unwrap();
            let members = json.as_object().unwrap();
            for required in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    members.contains_key(required.as_str().unwrap()),
                    "{}: {required} missing from {json}",
                    event_type.name
                );
            }
            for name in members.keys() {
                assert!(
                    properties.contains_key(name),
                    "{}: {name} is not in the schema",
                    event_type.name
                );
            }
            assert_eq!(schema["$id"], event_type.urn());
        }
    }

    /// The personal fields the domain crates declare are exactly the members whose
    /// schema is a sealed value (`Sealed`, marked `x-annals-personal`), in the current
    /// version of every type: a sealed field left out of a declaration, or a declaration
    /// naming a field that is not sealed, fails here.
    #[test]
    fn declared_personal_fields_are_the_sealed_members_of_the_schemas() {
        let declared: BTreeSet<(&str, &str)> = customers::PERSONAL_FIELDS
            .iter()
            .chain(orders::PERSONAL_FIELDS)
            .map(|field| (field.event_type, field.field))
            .collect();
        let mut sealed = BTreeSet::new();
        for event_type in EVENT_TYPES {
            if current_version(event_type.name) != Some(event_type.version) {
                continue;
            }
            let schema = event_type.schema();
            if let Some(personal) = schema.pointer("/$defs/Sealed/x-annals-personal") {
                assert_eq!(personal, true, "{}", event_type.name);
            }
            for (name, member) in schema["properties"].as_object().into_iter().flatten() {
                if member.to_string().contains("\"#/$defs/Sealed\"") {
                    sealed.insert((event_type.name, name.clone()));
                }
            }
        }
        let sealed: BTreeSet<(&str, &str)> = sealed
            .iter()
            .map(|(event_type, name)| (*event_type, name.as_str()))
            .collect();
        assert_eq!(sealed, declared);
        assert!(declared.contains(&("CustomerRegistered", "email")));
        assert!(declared.contains(&("OrderPlaced", "shipping_address")));
    }

    fn from_hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }
}
