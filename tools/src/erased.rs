//! How `annals inspect` and `replay` show a personal field whose key was destroyed: the
//! sealed value stays as the log holds it (`{"key_id", "ciphertext"}`), marked
//! `"erased": true` (`privacy::mark_erased`). The destroyed keys are read from the key
//! store's files, without the master key and without its lock. Through `--server` the
//! server marks its own views.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use privacy::KeyId;

use crate::source::{EventJson, SourceArgs};

/// The destroyed keys of a data directory.
#[derive(Debug, Default)]
pub struct Erased(HashMap<KeyId, DateTime<Utc>>);

impl Erased {
    /// The destroyed keys of the source's data directory (none through a server). A
    /// damaged key store is reported on stderr and marks nothing: the log is still shown.
    pub fn load(source: &SourceArgs) -> Self {
        if source.server.is_some() {
            return Erased::default();
        }
        match privacy::destroyed_keys(&source.data_dir) {
            Ok(keys) => Erased(keys),
            Err(error) => {
                eprintln!(
                    "warning: cannot read the key store, erased personal fields are not marked: {error}"
                );
                Erased::default()
            }
        }
    }

    /// Marks the sealed values of `json` whose key was destroyed.
    pub fn mark(&self, json: &mut serde_json::Value) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        privacy::mark_erased(json, &|key_id| self.0.contains_key(&key_id))
    }

    /// Marks the payload of `event`.
    pub fn mark_event(&self, event: &mut EventJson) {
        if event.payload_encoding == "json" {
            self.mark(&mut event.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event view whose payload holds two sealed values of `alice` (one nested) and
    /// one of `bob`.
    fn view(alice: KeyId, bob: KeyId) -> EventJson {
        EventJson {
            id: uuid::Uuid::now_v7().to_string(),
            stream: "customer-alice".into(),
            version: 0,
            position: 0,
            event_type: "CustomerRegistered".into(),
            schema_version: 1,
            recorded_at: "2026-12-02T00:00:00.000000Z".into(),
            metadata: serde_json::json!({}),
            payload: serde_json::json!({
                "customer_id": "alice",
                "name": {"key_id": alice.to_string(), "ciphertext": "AAAA"},
                "contact": {"address": {"key_id": alice.to_string(), "ciphertext": "BBBB"}},
                "friend": {"key_id": bob.to_string(), "ciphertext": "CCCC"},
            }),
            payload_encoding: "json".into(),
            payload_schema: None,
        }
    }

    #[test]
    fn values_under_destroyed_keys_are_marked_from_the_key_store_files_without_its_lock() {
        let data = tempfile::tempdir().unwrap();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            source: SourceArgs,
        }
        let source = <Cli as clap::Parser>::parse_from([
            "annals",
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .source;
        let store =
            privacy::KeyStore::open(data.path(), privacy::MasterKey::generate().unwrap()).unwrap();
        let alice = store.create_key("alice").unwrap();
        let bob = store.create_key("bob").unwrap();
        let mut before = view(alice, bob);
        Erased::load(&source).mark_event(&mut before);
        assert_eq!(before.payload, view(alice, bob).payload, "nothing erased yet");
        // The store stays open (held, as by a server): the files are read anyway.
        store.erase("alice").unwrap();
        let mut after = view(alice, bob);
        Erased::load(&source).mark_event(&mut after);
        assert_eq!(after.payload["name"]["erased"], true);
        assert_eq!(
            after.payload["name"]["ciphertext"], "AAAA",
            "the value stays"
        );
        assert_eq!(after.payload["contact"]["address"]["erased"], true);
        assert!(after.payload["friend"].get("erased").is_none());
        // Through a server nothing is read here.
        let remote = SourceArgs {
            server: Some("http://127.0.0.1:9".into()),
            ..source
        };
        let mut through = view(alice, bob);
        Erased::load(&remote).mark_event(&mut through);
        assert!(through.payload["name"].get("erased").is_none());
    }
}
