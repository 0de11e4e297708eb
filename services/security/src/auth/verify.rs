//! One token checked against one key: the JWT header read before any key is chosen, the
//! signature and the claims verified, jsonwebtoken's errors turned into [`AuthError`]s.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::error::AuthError;
use super::keys::VerifyKey;
use crate::{Principal, Role};

/// What a token's header says, read without trusting it: which key it names and which
/// algorithm it claims.
#[derive(Debug)]
pub(crate) struct TokenHeader {
    pub(crate) kid: Option<String>,
    /// The `alg` as written; `none` and unknown names are refused at parse time.
    pub(crate) algorithm: Algorithm,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenHeader {
    /// Reads the header of a compact JWT (three base64url parts joined by dots).
    ///
    /// jsonwebtoken cannot parse `alg: none` at all (it has no such algorithm), so the
    /// header is read here first, to name that refusal for what it is.
    pub(crate) fn parse(token: &str) -> Result<TokenHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWT has three parts separated by dots".to_owned(),
            ));
        };
        let json = URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed("the JWT header is not base64url".to_owned()))?;
        let raw: RawHeader = serde_json::from_slice(&json).map_err(|error| {
            AuthError::Malformed(format!(
                "the JWT header is not a JSON object with an alg ({error})"
            ))
        })?;
        if raw.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgorithmNotAllowed(raw.alg));
        }
        let algorithm =
            Algorithm::from_str(&raw.alg).map_err(|_| AuthError::AlgorithmNotAllowed(raw.alg))?;
        Ok(TokenHeader {
            kid: raw.kid,
            algorithm,
        })
    }
}

/// The claims this server reads; any others are ignored. `exp`, `nbf`, `iss` and `aud`
/// are checked by jsonwebtoken from the same payload.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    iss: Option<String>,
    roles: Option<Vec<String>>,
    customer_id: Option<String>,
}

/// Verifies `token` with `key`: the algorithm must be the key's, then the signature, then
/// the claims (`validation` holds the configured checks; its algorithm is set here).
pub(crate) fn verify(
    token: &str,
    header: &TokenHeader,
    key: &VerifyKey,
    validation: &Validation,
) -> Result<Principal, AuthError> {
    if header.algorithm != key.algorithm {
        return Err(AuthError::AlgorithmNotAllowed(format!(
            "{:?}",
            header.algorithm
        )));
    }
    let mut validation = validation.clone();
    validation.algorithms = vec![key.algorithm];
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|error| auth_error(error, header))?
        .claims;
    let subject = claims
        .sub
        .filter(|sub| !sub.is_empty())
        .ok_or(AuthError::MissingClaim("sub"))?;
    let mut roles: Vec<Role> = claims
        .roles
        .unwrap_or_default()
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    Ok(Principal {
        subject,
        issuer: claims.iss,
        roles,
        customer_id: claims.customer_id,
    })
}

fn auth_error(error: jsonwebtoken::errors::Error, header: &TokenHeader) -> AuthError {
    match error.into_kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed(format!("{:?}", header.algorithm))
        }
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim_name(&claim)),
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("the {claim} claim has the wrong type"))
        }
        ErrorKind::InvalidToken => AuthError::Malformed("not a JWT".to_owned()),
        ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url".to_owned()),
        ErrorKind::Utf8(_) => AuthError::Malformed("the payload is not UTF-8".to_owned()),
        ErrorKind::Json(error) => {
            AuthError::Malformed(format!("the claims are not the expected JSON ({error})"))
        }
        other => {
            // A key that cannot verify this algorithm: the server's key set is at fault,
            // the caller sees a signature that does not verify.
            tracing::warn!(error = ?other, "a token could not be checked with its key");
            AuthError::BadSignature
        }
    }
}

/// The static name of a claim jsonwebtoken reports as missing.
fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "required",
    }
}
