//! Test keys made at run time (RSA 2048, P-256, Ed25519), their public JWKs, and tokens
//! signed with them.

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use security::auth::{AuthConfig, Authenticator};
use serde_json::{Value, json};

/// A private key to sign with and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// The public key as PEM (RSA only): the "secret" of the key-confusion attack.
    pub public_pem: Option<String>,
}

impl TestKey {
    /// Signs `claims` with a header naming this key's `kid` (if any) and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a test token")
    }

    /// The same key under another key id.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        let mut key = self.clone();
        key.jwk.common.key_id = Some(kid.to_owned());
        key
    }
}

/// An RSA 2048 key (RS256). Generating one takes a while, so there are two per test run,
/// `index` 0 and 1, shared by every test.
pub fn rsa(index: usize, kid: &str) -> TestKey {
    static KEYS: [OnceLock<(Vec<u8>, String)>; 2] = [OnceLock::new(), OnceLock::new()];
    let (der, public_pem) = KEYS[index].get_or_init(|| {
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let der = private
            .to_pkcs1_der()
            .expect("PKCS#1 DER")
            .as_bytes()
            .to_vec();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM");
        (der, public_pem)
    });
    let encoding = EncodingKey::from_rsa_der(der);
    test_key(Algorithm::RS256, encoding, kid, Some(public_pem.clone()))
}

/// A fresh P-256 key (ES256).
pub fn ec(kid: &str) -> TestKey {
    use p256::pkcs8::EncodePrivateKey;
    let secret = loop {
        if let Ok(secret) = p256::SecretKey::from_slice(&random_32()) {
            break secret;
        }
    };
    let der = secret.to_pkcs8_der().expect("PKCS#8 DER");
    test_key(
        Algorithm::ES256,
        EncodingKey::from_ec_der(der.as_bytes()),
        kid,
        None,
    )
}

/// A fresh Ed25519 key (EdDSA).
pub fn ed(kid: &str) -> TestKey {
    // A PKCS#8 v1 document of an Ed25519 seed is this fixed prefix and the 32 bytes: the
    // form jsonwebtoken derives the public JWK from.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&random_32());
    test_key(Algorithm::EdDSA, EncodingKey::from_ed_der(&der), kid, None)
}

fn test_key(
    algorithm: Algorithm,
    encoding: EncodingKey,
    kid: &str,
    public_pem: Option<String>,
) -> TestKey {
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        algorithm,
        encoding,
        jwk,
        public_pem,
    }
}

fn random_32() -> [u8; 32] {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes
}

/// A JWKS document of the public keys.
pub fn jwks(keys: &[&TestKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|key| key.jwk.clone()).collect(),
    })
    .expect("JWKS JSON")
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Valid claims for `sub`: an operator, expiring in five minutes.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "roles": ["operator"], "exp": now() + 300 })
}

/// A token whose header and payload are given as JSON and whose signature is `signature`
/// (for tokens no library would make, such as `alg: none`).
pub fn raw_token(header: &Value, payload: &Value, signature: &[u8]) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    format!(
        "{}.{}.{}",
        part(header),
        part(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// A directory that lives as long as the test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Writes `contents` to `name` in `dir`.
pub fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("writing a test file");
    path
}

/// An authenticator over a JWKS file holding `keys`, with `issuer` and `audience` checks.
pub async fn jwks_authenticator(
    dir: &tempfile::TempDir,
    keys: &[&TestKey],
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Authenticator {
    let config = AuthConfig {
        jwks_file: Some(write(dir, "jwks.json", &jwks(keys))),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
        ..AuthConfig::default()
    };
    Authenticator::new(&config)
        .await
        .expect("authenticator over a JWKS file")
}

/// `Authorization` header value of `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
