//! Minting HS256 tokens for development and scripts (`annals token mint`), with the claims
//! the authenticator reads.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::error::MintError;
use super::keys::MIN_SECRET_BYTES;
use crate::Role;

/// The claims of a minted token; `iat` and `exp` are set from the clock and the TTL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MintClaims {
    /// Who the token is for (`sub`); must not be empty.
    pub sub: String,
    /// The `roles` claim.
    pub roles: Vec<Role>,
    /// The customer a `customer` token acts for.
    pub customer_id: Option<String>,
    /// The `iss` claim, when the server checks one.
    pub issuer: Option<String>,
    /// The `aud` claim, when the server checks one.
    pub audience: Option<String>,
}

#[derive(Serialize)]
struct Payload<'a> {
    sub: &'a str,
    roles: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// Signs an HS256 token with `secret` for `claims`, valid for `ttl` from now.
pub fn mint(secret: &[u8], claims: &MintClaims, ttl: Duration) -> Result<String, MintError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(MintError::SecretTooShort(secret.len()));
    }
    if claims.sub.is_empty() {
        return Err(MintError::InvalidClaims("the subject (sub) is empty"));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let payload = Payload {
        sub: &claims.sub,
        roles: claims.roles.iter().map(|role| role.as_str()).collect(),
        customer_id: claims.customer_id.as_deref(),
        iss: claims.issuer.as_deref(),
        aud: claims.audience.as_deref(),
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    let key = EncodingKey::from_secret(secret)?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &key,
    )?)
}
