//! Authentication: a request's `Authorization: Bearer <JWT>` verified into a
//! [`Principal`], and development tokens minted with a shared secret.
//!
//! Exactly one key source is configured ([`AuthConfig`]):
//! - a JWT secret file: HS256 with the file's bytes (a trailing newline trimmed, at least
//!   32 bytes), for development and tests ([`mint`] signs tokens for it);
//! - a JWKS file: the public keys of an identity provider (RS256, ES256, EdDSA, ...),
//!   re-read when the file changes (`jwks_file`);
//! - a JWKS URL: fetched at start, cached, fetched again on an unknown key id at most
//!   every 10 s (`jwks_url`).
//!
//! Verifying a token, in order: the header must be `Bearer`; the JWT header's `alg` must
//! not be `none`; the key is chosen by the token's `kid` (`keys`); the token's `alg` must
//! be the key's own algorithm; the signature must verify; then the claims: `exp` required,
//! `nbf` checked when present, both with [`LEEWAY`] for clock skew; `iss` and `aud` required
//! and checked when configured; `sub` required and non-empty; `roles` an array of role
//! names (unknown names dropped); `customer_id` optional. Each refusal is one
//! [`AuthError`] variant whose text is the 401's detail. No token is ever logged.

mod error;
mod jwks_file;
mod jwks_url;
mod keys;
mod mint;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};

pub use error::{AuthError, AuthSetupError, MintError};
pub use keys::MIN_SECRET_BYTES;
pub use mint::{MintClaims, mint};

use crate::Principal;
use keys::KeySet;

/// How far `exp` and `nbf` may be off, for the clocks of the issuer and this server.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Where the keys come from and which claims are checked (`annals serve --auth-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `--auth-jwt-secret-file`: an HS256 shared secret.
    pub jwt_secret_file: Option<PathBuf>,
    /// `--auth-jwks-file`: a JWKS document of public keys, re-read when it changes.
    pub jwks_file: Option<PathBuf>,
    /// `--auth-jwks-url`: a JWKS document fetched from the identity provider (http or,
    /// when reqwest is built with TLS, https).
    pub jwks_url: Option<String>,
    /// `--auth-issuer`: the `iss` every token must carry.
    pub issuer: Option<String>,
    /// `--auth-audience`: the audience every token's `aud` must name.
    pub audience: Option<String>,
    /// The `security.jwks` fault point of the JWKS URL's fetches, inert unless the server
    /// runs with `--chaos`.
    pub chaos: chaos::Chaos,
}

impl AuthConfig {
    /// Whether any key source is configured, that is whether requests are authenticated.
    pub fn is_enabled(&self) -> bool {
        self.jwt_secret_file.is_some() || self.jwks_file.is_some() || self.jwks_url.is_some()
    }
}

/// Verifies bearer tokens. Cheap to clone: the keys and settings are shared.
#[derive(Clone, Debug)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: KeySource,
    /// The claim checks of every token; only the algorithm is set per token.
    validation: Validation,
}

#[derive(Debug)]
enum KeySource {
    Secret(Arc<KeySet>),
    File(jwks_file::JwksFile),
    Url(jwks_url::JwksUrl),
}

impl Authenticator {
    /// Reads the secret / the JWKS file / fetches the JWKS URL once. A missing, unreadable
    /// or unusable source is an [`AuthSetupError`] naming it and what to do.
    pub async fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let configured: Vec<&str> = [
            config.jwt_secret_file.as_ref().map(|_| "JWT secret file"),
            config.jwks_file.as_ref().map(|_| "JWKS file"),
            config.jwks_url.as_ref().map(|_| "JWKS URL"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if configured.len() > 1 {
            return Err(AuthSetupError::SeveralSources(configured.join(", ")));
        }
        let source = if let Some(path) = &config.jwt_secret_file {
            KeySource::Secret(Arc::new(KeySet::from_secret(&read_secret_file(path)?)))
        } else if let Some(path) = &config.jwks_file {
            KeySource::File(jwks_file::JwksFile::open(path)?)
        } else if let Some(url) = &config.jwks_url {
            KeySource::Url(jwks_url::JwksUrl::fetch(url, config.chaos.clone()).await?)
        } else {
            return Err(AuthSetupError::NotConfigured);
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = config.audience.is_some();
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Authenticator {
            inner: Arc::new(Inner { source, validation }),
        })
    }

    /// Verifies a `Bearer` JWT. `header`: the raw `Authorization` header value, if any.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(header)?;
        let token_header = verify::TokenHeader::parse(token)?;
        let kid = token_header.kid.as_deref();
        let keys = match &self.inner.source {
            KeySource::Secret(keys) => keys.clone(),
            KeySource::File(file) => file.current(),
            KeySource::Url(url) => {
                let keys = url.current();
                match keys.select(kid) {
                    Err(AuthError::UnknownKey(Some(_))) => url.refresh().await,
                    _ => keys,
                }
            }
        };
        let key = keys.select(kid)?;
        verify::verify(token, &token_header, key, &self.inner.validation)
    }
}

/// The token of an `Authorization: Bearer <token>` header value (the scheme's case is
/// ignored, as RFC 9110 asks).
fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("the Bearer token is empty".to_owned()));
    }
    Ok(token)
}

/// Reads an HS256 secret file as the server and `annals token mint` both use it: the
/// bytes with trailing newlines trimmed, at least [`MIN_SECRET_BYTES`] long.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let mut secret = std::fs::read(path).map_err(|source| AuthSetupError::ReadFile {
        what: "JWT secret file",
        path: path.to_owned(),
        source,
    })?;
    while secret
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthSetupError::SecretTooShort {
            path: path.to_owned(),
            length: secret.len(),
        });
    }
    Ok(secret)
}
