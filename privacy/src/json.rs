//! Sealed values inside an event's JSON: how Annals' own readers of the log (the HTTP
//! log routes, the console, `annals inspect` and `replay`) show that a value was erased.

use serde_json::Value;
use uuid::Uuid;

use crate::KeyId;

/// The key id of `value` if it is a sealed value's JSON form (`{"key_id", "ciphertext"}`).
pub fn sealed_key_id(value: &Value) -> Option<KeyId> {
    key_id_of(value.as_object()?)
}

fn key_id_of(object: &serde_json::Map<String, Value>) -> Option<KeyId> {
    if !object.contains_key("ciphertext") {
        return None;
    }
    let id = object.get("key_id")?.as_str()?;
    Uuid::parse_str(id).ok().map(KeyId)
}

/// Adds `"erased": true` to every sealed value in `json` (at any depth) whose key
/// `destroyed` says was destroyed; returns how many it marked. The ciphertext stays: the
/// JSON is still the event's, only annotated.
pub fn mark_erased(json: &mut Value, destroyed: &dyn Fn(KeyId) -> bool) -> usize {
    match json {
        Value::Object(object) => {
            if let Some(key_id) = key_id_of(object)
                && destroyed(key_id)
            {
                object.insert("erased".into(), Value::Bool(true));
                return 1;
            }
            object
                .values_mut()
                .map(|value| mark_erased(value, destroyed))
                .sum()
        }
        Value::Array(items) => items
            .iter_mut()
            .map(|value| mark_erased(value, destroyed))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sealed_values_under_destroyed_keys_are_marked() {
        let gone = Uuid::from_u128(1);
        let kept = Uuid::from_u128(2);
        let mut json = serde_json::json!({
            "customer_id": "alice",
            "name": {"key_id": gone.to_string(), "ciphertext": "AAAA"},
            "email": {"key_id": kept.to_string(), "ciphertext": "BBBB"},
            "nested": [{"address": {"key_id": gone.to_string(), "ciphertext": "CCCC"}}],
            "not_sealed": {"key_id": gone.to_string()},
        });
        let marked = mark_erased(&mut json, &|id| id.0 == gone);
        assert_eq!(marked, 2);
        assert_eq!(json["name"]["erased"], true);
        assert_eq!(json["name"]["ciphertext"], "AAAA");
        assert!(json["email"].get("erased").is_none());
        assert_eq!(json["nested"][0]["address"]["erased"], true);
        assert!(json["not_sealed"].get("erased").is_none());
    }
}
