//! Minted development tokens verify with the same secret and carry the given claims.

use std::time::Duration;

use security::auth::{self, AuthConfig, AuthError, Authenticator, MintClaims, MintError};
use security::{Principal, Role};

use crate::keys::{self, bearer};

const SECRET: &str = "0123456789abcdef0123456789abcdef-dev";

async fn authenticator(
    issuer: Option<&str>,
    audience: Option<&str>,
) -> (Authenticator, tempfile::TempDir) {
    let dir = keys::temp_dir();
    let config = AuthConfig {
        jwt_secret_file: Some(keys::write(&dir, "secret", &format!("{SECRET}\n"))),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
        ..AuthConfig::default()
    };
    (Authenticator::new(&config).await.unwrap(), dir)
}

#[tokio::test]
async fn a_minted_token_verifies_with_the_same_secret() {
    let (authenticator, _dir) = authenticator(Some("annals-dev"), Some("annals")).await;
    let claims = MintClaims {
        sub: "carol".to_owned(),
        roles: vec![Role::Customer, Role::Clerk],
        customer_id: Some("cust-42".to_owned()),
        issuer: Some("annals-dev".to_owned()),
        audience: Some("annals".to_owned()),
    };
    let token = auth::mint(SECRET.as_bytes(), &claims, Duration::from_secs(3600)).unwrap();
    assert_eq!(token.lines().count(), 1);
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&token))).await,
        Ok(Principal {
            subject: "carol".to_owned(),
            issuer: Some("annals-dev".to_owned()),
            roles: vec![Role::Customer, Role::Clerk],
            customer_id: Some("cust-42".to_owned()),
        })
    );
}

#[tokio::test]
async fn a_minted_token_with_another_secret_is_refused_and_lives_its_ttl() {
    let (authenticator, _dir) = authenticator(None, None).await;
    let claims = MintClaims {
        sub: "dave".to_owned(),
        roles: vec![Role::Admin],
        ..MintClaims::default()
    };
    let other = auth::mint(&[b'x'; 40], &claims, Duration::from_secs(60)).unwrap();
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&other))).await,
        Err(AuthError::BadSignature)
    );
    // The TTL sets exp relative to iat (an expired token's refusal is tested in `jwt`).
    let token = auth::mint(SECRET.as_bytes(), &claims, Duration::from_secs(90)).unwrap();
    let payload: serde_json::Value =
        jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
    let lifetime = payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 90);
}

#[test]
fn minting_refuses_a_short_secret_or_an_empty_subject() {
    let claims = MintClaims {
        sub: "erin".to_owned(),
        ..MintClaims::default()
    };
    assert!(matches!(
        auth::mint(b"short", &claims, Duration::from_secs(60)),
        Err(MintError::SecretTooShort(5))
    ));
    let nobody = MintClaims::default();
    assert!(matches!(
        auth::mint(SECRET.as_bytes(), &nobody, Duration::from_secs(60)),
        Err(MintError::InvalidClaims(_))
    ));
}

#[test]
fn the_secret_file_is_read_as_the_server_reads_it() {
    let dir = keys::temp_dir();
    let path = keys::write(&dir, "secret", &format!("{SECRET}\r\n"));
    assert_eq!(auth::read_secret_file(&path).unwrap(), SECRET.as_bytes());
}
