//! What can go wrong when a request is authenticated ([`AuthError`]: the caller's fault,
//! a 401) and when the authenticator is set up ([`AuthSetupError`]: the operator's fault,
//! the server does not start).
//!
//! No message here ever contains a token: a token in a log line is a credential leaked.

use std::path::PathBuf;

/// Why a request's bearer token was refused. The API answers every variant with 401,
/// `WWW-Authenticate: Bearer` and the Display text as the problem's detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request has no `Authorization` header: the client should send one.
    #[error("the request has no Authorization header: send `Authorization: Bearer <token>`")]
    Missing,
    /// The `Authorization` header is not a `Bearer` token (for example Basic).
    #[error("the Authorization header is not a Bearer token: send `Authorization: Bearer <token>`")]
    NotBearer,
    /// The token is not a well-formed JWT, or a claim has the wrong type; the text says what.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// The token's `exp` has passed (beyond the leeway): the client gets a new token.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    /// The token's `iss` is not the configured issuer.
    #[error("the token's issuer (iss) is not the one this server accepts")]
    WrongIssuer,
    /// The token's `aud` does not name the configured audience.
    #[error("the token's audience (aud) is not this server")]
    WrongAudience,
    /// No key of the server matches the token's `kid` (`None`: the token names no key
    /// and the server has several, so it cannot tell which one to use).
    #[error("{}", match .0 {
        Some(kid) => format!("no key with the token's key id (kid) {kid:?} is known to this server"),
        None => "the token names no key id (kid) and this server has several keys".to_owned(),
    })]
    UnknownKey(Option<String>),
    /// The token's `alg` is `none`, unknown, or not the algorithm of the key it names:
    /// the classic key-confusion attack (an HS256 token against an RSA key) ends here.
    #[error("the token's algorithm {0:?} is not allowed for its key")]
    AlgorithmNotAllowed(String),
    /// The signature does not verify: the token was altered or signed by another key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// A required claim (`sub`, `exp`, or `iss`/`aud` when configured) is absent or empty.
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
}

/// Why an [`Authenticator`](super::Authenticator) could not be built: a configuration
/// mistake the operator fixes before the server can start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `new` was called with no key source: check [`AuthConfig::is_enabled`](super::AuthConfig::is_enabled) first.
    #[error(
        "no authentication key source is configured: give a JWT secret file, a JWKS file or a JWKS URL"
    )]
    NotConfigured,
    /// More than one key source is configured; exactly one is used.
    #[error(
        "more than one authentication key source is configured ({0}): give exactly one of the JWT secret file, the JWKS file and the JWKS URL"
    )]
    SeveralSources(String),
    /// A key file could not be read.
    #[error("cannot read the {what} {}: {source}; check that the file exists and is readable", path.display())]
    ReadFile {
        /// Which file: "JWT secret file" or "JWKS file".
        what: &'static str,
        /// The file's path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The HS256 secret is too short to be safe.
    #[error(
        "the JWT secret file {} holds {length} bytes: use at least 32 random bytes (for example `head -c 48 /dev/urandom | base64 > {}`)",
        path.display(), path.display()
    )]
    SecretTooShort {
        /// The secret file's path.
        path: PathBuf,
        /// The secret's length after trimming the trailing newline.
        length: usize,
    },
    /// A JWKS document (file or URL) is not a usable key set; `reason` says why.
    #[error("the JWKS {origin} is not usable: {reason}")]
    InvalidJwks {
        /// "file PATH" or "URL URL".
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWKS URL could not be fetched at start.
    #[error(
        "cannot fetch the JWKS URL {url}: {reason}; check that the identity provider is reachable"
    )]
    FetchJwks {
        /// The URL.
        url: String,
        /// What went wrong (connection, status, body).
        reason: String,
    },
}

/// Why [`mint`](super::mint) could not sign a token.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The secret is shorter than 32 bytes: the server would refuse it too.
    #[error("the secret holds {0} bytes: use at least 32 random bytes")]
    SecretTooShort(usize),
    /// A claim is not acceptable (an empty `sub`).
    #[error("cannot mint a token: {0}")]
    InvalidClaims(&'static str),
    /// jsonwebtoken could not sign (should not happen with an HS256 secret).
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}
