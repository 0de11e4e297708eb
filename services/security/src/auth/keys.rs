//! The verification keys of an authenticator: one HS256 secret, or the signing keys of a
//! JWKS document, each with the one algorithm it may verify.
//!
//! A key's algorithm comes from the key, never from the token: the JWK's `alg`, or when it
//! has none, what its type and curve imply (RSA: RS256, EC P-256: ES256, EC P-384: ES384,
//! OKP Ed25519: EdDSA). A token whose header names another algorithm is refused before any
//! signature is checked, which is what defeats algorithm-confusion attacks.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::error::AuthError;

/// The shortest HS256 secret accepted, in bytes (RFC 7518 asks for at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// One key that can verify tokens.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    /// The JWK's `kid`, if it has one.
    pub(crate) kid: Option<String>,
    /// The only algorithm this key verifies.
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key material stays out of debug output.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys an authenticator verifies with at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
}

impl KeySet {
    /// The HS256 key of a shared secret (already trimmed and length-checked).
    pub(crate) fn from_secret(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![VerifyKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret)
                    .expect("an HMAC decoding key accepts any bytes"),
            }],
        }
    }

    /// The signing keys of a JWKS document. Keys meant for encryption (`use: enc`) or of an
    /// algorithm jsonwebtoken cannot verify are skipped with a warning; a document with no
    /// usable key, or a key that cannot be parsed, is an error (the text says why).
    pub(crate) fn from_jwks_json(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(json)
            .map_err(|error| format!("not a JWKS document ({error})"))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                tracing::warn!(kid = ?kid, "JWKS key is for encryption (use: enc), skipped");
                continue;
            }
            let Some(algorithm) = algorithm_of(jwk) else {
                tracing::warn!(kid = ?kid, "JWKS key has no signing algorithm this server supports, skipped");
                continue;
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| format!("the key {kid:?} cannot be read ({error})"))?;
            keys.push(VerifyKey {
                kid,
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err("it holds no signing key (RS256, ES256, ES384, EdDSA, ...)".to_owned());
        }
        Ok(KeySet { keys })
    }

    /// The key a token with this `kid` is verified with.
    ///
    /// A set of one key whose JWK has no `kid` (the HS256 secret, a JWKS of one anonymous
    /// key) verifies every token. Otherwise the token's `kid` must name a key; a token
    /// without one is accepted only when the set has exactly one key.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&VerifyKey, AuthError> {
        match (kid, self.keys.as_slice()) {
            (_, [only]) if only.kid.is_none() => Ok(only),
            (None, [only]) => Ok(only),
            (None, _) => Err(AuthError::UnknownKey(None)),
            (Some(kid), keys) => keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or_else(|| AuthError::UnknownKey(Some(kid.to_owned()))),
        }
    }
}

/// The one algorithm a JWK verifies: its `alg`, else what its key type and curve imply.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(declared) = jwk.common.key_algorithm {
        return Algorithm::try_from(declared).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(parameters) => match parameters.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(parameters) => match parameters.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        _ => None,
    }
}
