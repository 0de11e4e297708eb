//! A personal field as the log holds it: [`Sealed`], the field's value encrypted with
//! XChaCha20-Poly1305 under its data subject's key, bound to its place (stream, event id,
//! field name) as associated data, so that a ciphertext copied into another event, or
//! under another field's name, fails to open instead of showing its value there.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The length of a nonce (XChaCha20: 192 bits, safe to draw at random for every field).
pub const NONCE_LEN: usize = 24;
/// The length of the authentication tag after the encrypted bytes.
pub const TAG_LEN: usize = 16;
/// The longest plaintext a field may have, in bytes: personal fields are names,
/// addresses and the like, and a bound keeps an event's size predictable.
pub const MAX_PLAINTEXT_LEN: usize = 1024;

/// The id of one data subject's key. Random (UUID v4): it names the key, and nothing
/// about the subject can be read from it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct KeyId(pub Uuid);

impl KeyId {
    /// A new random key id.
    pub fn random() -> Result<Self, crate::Error> {
        let mut bytes = [0u8; 16];
        crate::random(&mut bytes)?;
        Ok(KeyId(uuid::Builder::from_random_bytes(bytes).into_uuid()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a sealed value belongs: the associated data it is encrypted with. Opening it
/// with another binding fails, as a tampered ciphertext does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The stream of the event that holds the value, e.g. `customer-alice`.
    pub stream: &'a str,
    /// The id of that event.
    pub event_id: Uuid,
    /// The field's name in the event, e.g. `email`.
    pub field: &'a str,
}

impl Binding<'_> {
    /// The associated data: a domain tag, then each part with its length (so no two
    /// bindings share bytes), then the key id (so a value cannot be presented as another
    /// key's).
    fn associated_data(&self, key_id: KeyId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.stream.len() + self.field.len());
        aad.extend_from_slice(b"annals personal field v1\0");
        for part in [self.stream.as_bytes(), self.field.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(self.event_id.as_bytes());
        aad.extend_from_slice(key_id.0.as_bytes());
        aad
    }
}

/// A personal field's value, encrypted: what events hold in place of the plaintext.
///
/// Encoded with postcard as the key id's 16 bytes and the ciphertext's bytes; in JSON as
/// `{"key_id": "<uuid>", "ciphertext": "<base64>"}`. The ciphertext is the nonce, the
/// encrypted UTF-8 bytes and the tag. Only a key store holding the key opens it
/// ([`crate::KeyStore::open_sealed`]); once the key is destroyed nobody can.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sealed {
    /// The data subject's key the value is encrypted under.
    pub key_id: KeyId,
    /// Nonce, encrypted bytes and tag.
    pub ciphertext: Ciphertext,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.0.len())
            .finish()
    }
}

impl Sealed {
    /// Encrypts `plaintext` under `key` (whose id is `key_id`) for the place `binding`,
    /// with a fresh random nonce.
    pub(crate) fn seal(
        key_id: KeyId,
        key: &[u8; 32],
        binding: &Binding<'_>,
        plaintext: &str,
    ) -> Result<Sealed, crate::Error> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(crate::Error::FieldTooLong {
                field: binding.field.to_owned(),
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        crate::random(&mut nonce)?;
        let cipher = XChaCha20Poly1305::new(key.into());
        let aad = binding.associated_data(key_id);
        let encrypted = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| crate::Error::Cipher)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + encrypted.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&encrypted);
        Ok(Sealed {
            key_id,
            ciphertext: Ciphertext(bytes),
        })
    }

    /// Decrypts with `key` for the place `binding`: `None` if the ciphertext was changed,
    /// cut, or belongs to another place or key.
    pub(crate) fn open(&self, key: &[u8; 32], binding: &Binding<'_>) -> Option<String> {
        let bytes = &self.ciphertext.0;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, encrypted) = bytes.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(key.into());
        let aad = binding.associated_data(self.key_id);
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: encrypted,
                        aad: &aad,
                    },
                )
                .ok()?,
        );
        String::from_utf8(plaintext.to_vec()).ok()
    }
}

/// A sealed value with its place: what a read model keeps so that it can open the
/// value when it answers (read models keep ciphertext only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedField {
    /// The value.
    pub sealed: Sealed,
    /// The stream of the event that holds it.
    pub stream: String,
    /// The id of that event.
    pub event_id: Uuid,
    /// The field's name in the event.
    pub field: String,
}

impl SealedField {
    /// Where the value belongs, to open it with.
    pub fn binding(&self) -> Binding<'_> {
        Binding {
            stream: &self.stream,
            event_id: self.event_id,
            field: &self.field,
        }
    }
}

/// The bytes of a [`Sealed`] value: raw bytes in binary formats (postcard), base64 in
/// human-readable ones (JSON).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ciphertext(pub Vec<u8>);

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

impl Serialize for Ciphertext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&STANDARD.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Ciphertext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ciphertext;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ciphertext bytes, or base64 text")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ciphertext, E> {
                STANDARD.decode(text).map(Ciphertext).map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Ciphertext, E> {
                Ok(Ciphertext(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Ciphertext, E> {
                Ok(Ciphertext(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Ciphertext, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Ciphertext(bytes))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visit)
        } else {
            deserializer.deserialize_bytes(Visit)
        }
    }
}

impl schemars::JsonSchema for Sealed {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sealed".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Personal data, encrypted (XChaCha20-Poly1305) under the key of its data subject; only the Annals key store that holds the key can open it, and nobody can once the subject's data is erased. `erased` is set by Annals' own readers of the log when the key was destroyed.",
            "type": "object",
            "x-annals-personal": true,
            "properties": {
                "key_id": {"type": "string", "format": "uuid", "description": "The data subject's key."},
                "ciphertext": {"type": "string", "contentEncoding": "base64", "description": "Nonce (24 bytes), encrypted UTF-8 bytes and tag (16 bytes)."},
                "erased": {"type": "boolean", "const": true, "description": "Present when the key was destroyed: the value can never be read again."}
            },
            "required": ["key_id", "ciphertext"],
            "additionalProperties": false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(field: &str) -> Binding<'_> {
        Binding {
            stream: "customer-alice",
            event_id: Uuid::from_u128(7),
            field,
        }
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_place_and_under_its_key() {
        let key = [7u8; 32];
        let id = KeyId::random().unwrap();
        let sealed = Sealed::seal(id, &key, &binding("email"), "alice@example.com").unwrap();
        assert_eq!(
            sealed.open(&key, &binding("email")).as_deref(),
            Some("alice@example.com")
        );
        // Another field, another event, another stream, another key, another key id.
        assert_eq!(sealed.open(&key, &binding("name")), None);
        let moved = Binding {
            event_id: Uuid::from_u128(8),
            ..binding("email")
        };
        assert_eq!(sealed.open(&key, &moved), None);
        let elsewhere = Binding {
            stream: "customer-bob",
            ..binding("email")
        };
        assert_eq!(sealed.open(&key, &elsewhere), None);
        assert_eq!(sealed.open(&[8u8; 32], &binding("email")), None);
        let relabelled = Sealed {
            key_id: KeyId::random().unwrap(),
            ..sealed.clone()
        };
        assert_eq!(relabelled.open(&key, &binding("email")), None);
    }

    #[test]
    fn every_changed_byte_is_detected() {
        let key = [1u8; 32];
        let sealed =
            Sealed::seal(KeyId::random().unwrap(), &key, &binding("name"), "Alice").unwrap();
        for i in 0..sealed.ciphertext.0.len() {
            let mut tampered = sealed.clone();
            tampered.ciphertext.0[i] ^= 0x01;
            assert_eq!(tampered.open(&key, &binding("name")), None, "byte {i}");
        }
        let mut cut = sealed.clone();
        cut.ciphertext.0.pop();
        assert_eq!(cut.open(&key, &binding("name")), None);
    }

    #[test]
    fn the_plaintext_is_in_neither_form() {
        let key = [3u8; 32];
        let sealed = Sealed::seal(
            KeyId::random().unwrap(),
            &key,
            &binding("name"),
            "Alice Liddell",
        )
        .unwrap();
        let bytes = postcard::to_allocvec(&sealed).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"Alice"));
        assert_eq!(postcard::from_bytes::<Sealed>(&bytes).unwrap(), sealed);
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("Alice"));
        let back: Sealed = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sealed);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["key_id"], sealed.key_id.to_string());
        // Postcard: the key id's length (16) and bytes, a length, then nonce, text and tag.
        assert_eq!(
            bytes.len(),
            1 + 16 + 1 + NONCE_LEN + "Alice Liddell".len() + TAG_LEN
        );
    }

    #[test]
    fn an_oversize_field_is_refused() {
        let long = "x".repeat(MAX_PLAINTEXT_LEN + 1);
        let refused = Sealed::seal(
            KeyId::random().unwrap(),
            &[0; 32],
            &binding("address"),
            &long,
        );
        assert!(matches!(refused, Err(crate::Error::FieldTooLong { .. })));
    }
}
