//! Every way a bearer token can be refused, each asserting its exact [`AuthError`], and
//! the tokens that pass.

use security::auth::{AuthConfig, AuthError, AuthSetupError, Authenticator};
use security::{Principal, Role};
use serde_json::{Value, json};

use crate::keys::{self, TestKey, bearer, claims, now, raw_token};

const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "annals";

struct Fixture {
    authenticator: Authenticator,
    rsa: TestKey,
    ec: TestKey,
    ed: TestKey,
    _dir: tempfile::TempDir,
}

/// An authenticator over a JWKS file of an RSA, a P-256 and an Ed25519 key, checking the
/// issuer and the audience.
async fn fixture() -> Fixture {
    let dir = keys::temp_dir();
    let (rsa, ec, ed) = (keys::rsa(0, "rsa-1"), keys::ec("ec-1"), keys::ed("ed-1"));
    let authenticator =
        keys::jwks_authenticator(&dir, &[&rsa, &ec, &ed], Some(ISSUER), Some(AUDIENCE)).await;
    Fixture {
        authenticator,
        rsa,
        ec,
        ed,
        _dir: dir,
    }
}

/// Valid claims for this fixture's issuer and audience, with `changes` merged in (a
/// `null` removes the claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = claims("alice");
    claims["iss"] = json!(ISSUER);
    claims["aud"] = json!(AUDIENCE);
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

impl Fixture {
    async fn check(&self, token: &str) -> Result<Principal, AuthError> {
        self.authenticator.authenticate(Some(&bearer(token))).await
    }
}

#[tokio::test]
async fn tokens_of_every_key_type_verify() {
    let fixture = fixture().await;
    for key in [&fixture.rsa, &fixture.ec, &fixture.ed] {
        let token = key.sign(&claims_with(json!({
            "roles": ["customer", "wizard", "customer"], "customer_id": "cust-7"
        })));
        let principal = fixture.check(&token).await.expect("a valid token verifies");
        assert_eq!(
            principal,
            Principal {
                subject: "alice".to_owned(),
                issuer: Some(ISSUER.to_owned()),
                roles: vec![Role::Customer],
                customer_id: Some("cust-7".to_owned()),
            },
            "{:?}: unknown roles are dropped, duplicates removed",
            key.algorithm
        );
    }
}

#[tokio::test]
async fn expired_beyond_the_leeway_is_refused_within_it_accepted() {
    let fixture = fixture().await;
    let expired = fixture
        .rsa
        .sign(&claims_with(json!({ "exp": now() - 120 })));
    assert_eq!(fixture.check(&expired).await, Err(AuthError::Expired));
    let within_leeway = fixture.rsa.sign(&claims_with(json!({ "exp": now() - 10 })));
    assert!(
        fixture.check(&within_leeway).await.is_ok(),
        "30 s of leeway for clock skew"
    );
}

#[tokio::test]
async fn not_yet_valid_is_refused() {
    let fixture = fixture().await;
    let future = fixture.ec.sign(&claims_with(json!({ "nbf": now() + 120 })));
    assert_eq!(fixture.check(&future).await, Err(AuthError::NotYetValid));
    let soon = fixture.ec.sign(&claims_with(json!({ "nbf": now() + 10 })));
    assert!(
        fixture.check(&soon).await.is_ok(),
        "30 s of leeway for clock skew"
    );
}

#[tokio::test]
async fn wrong_or_missing_audience_and_issuer_are_refused() {
    let fixture = fixture().await;
    let key = &fixture.ed;
    let wrong_audience = key.sign(&claims_with(json!({ "aud": "billing" })));
    assert_eq!(
        fixture.check(&wrong_audience).await,
        Err(AuthError::WrongAudience)
    );
    let no_audience = key.sign(&claims_with(json!({ "aud": null })));
    assert_eq!(
        fixture.check(&no_audience).await,
        Err(AuthError::MissingClaim("aud"))
    );
    let wrong_issuer = key.sign(&claims_with(json!({ "iss": "https://evil.example" })));
    assert_eq!(
        fixture.check(&wrong_issuer).await,
        Err(AuthError::WrongIssuer)
    );
    let no_issuer = key.sign(&claims_with(json!({ "iss": null })));
    assert_eq!(
        fixture.check(&no_issuer).await,
        Err(AuthError::MissingClaim("iss"))
    );
}

#[tokio::test]
async fn an_unknown_kid_or_no_kid_among_several_keys_is_refused() {
    let fixture = fixture().await;
    let unknown = fixture
        .rsa
        .with_kid("retired-key")
        .sign(&claims_with(json!({})));
    assert_eq!(
        fixture.check(&unknown).await,
        Err(AuthError::UnknownKey(Some("retired-key".to_owned())))
    );
    let mut anonymous = fixture.rsa.clone();
    anonymous.jwk.common.key_id = None;
    let no_kid = anonymous.sign(&claims_with(json!({})));
    assert_eq!(
        fixture.check(&no_kid).await,
        Err(AuthError::UnknownKey(None))
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let fixture = fixture().await;
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(
            &json!({ "alg": alg, "kid": "rsa-1" }),
            &claims_with(json!({})),
            b"",
        );
        assert_eq!(
            fixture.check(&token).await,
            Err(AuthError::AlgorithmNotAllowed(alg.to_owned()))
        );
    }
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    // The key-confusion attack: the public key is public, so a verifier that lets the
    // token choose HMAC would accept this signature.
    let fixture = fixture().await;
    let public_pem = fixture.rsa.public_pem.clone().unwrap();
    let forger = TestKey {
        algorithm: jsonwebtoken::Algorithm::HS256,
        encoding: jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()).unwrap(),
        ..fixture.rsa.clone()
    };
    let forged = forger.sign(&claims_with(json!({ "roles": ["admin"] })));
    assert_eq!(
        fixture.check(&forged).await,
        Err(AuthError::AlgorithmNotAllowed("HS256".to_owned()))
    );
}

#[tokio::test]
async fn a_token_naming_another_algorithm_than_its_key_is_refused() {
    let fixture = fixture().await;
    // An ES256 signature presented under the RSA key's id.
    let confused = fixture.ec.with_kid("rsa-1").sign(&claims_with(json!({})));
    assert_eq!(
        fixture.check(&confused).await,
        Err(AuthError::AlgorithmNotAllowed("ES256".to_owned()))
    );
    let unknown = raw_token(
        &json!({ "alg": "XY999", "kid": "rsa-1" }),
        &claims_with(json!({})),
        b"x",
    );
    assert_eq!(
        fixture.check(&unknown).await,
        Err(AuthError::AlgorithmNotAllowed("XY999".to_owned()))
    );
}

#[tokio::test]
async fn a_tampered_payload_or_a_foreign_signature_is_refused() {
    let fixture = fixture().await;
    let token = fixture
        .rsa
        .sign(&claims_with(json!({ "roles": ["customer"] })));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let elevated = raw_token(&json!({}), &claims_with(json!({ "roles": ["admin"] })), b"");
    parts[1] = elevated.split('.').nth(1).unwrap().to_owned();
    assert_eq!(
        fixture.check(&parts.join(".")).await,
        Err(AuthError::BadSignature)
    );

    // Signed by another RSA key that claims the trusted key's id.
    let impostor = keys::rsa(1, "rsa-1").sign(&claims_with(json!({})));
    assert_eq!(fixture.check(&impostor).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn missing_sub_or_exp_is_refused() {
    let fixture = fixture().await;
    let no_sub = fixture.ed.sign(&claims_with(json!({ "sub": null })));
    assert_eq!(
        fixture.check(&no_sub).await,
        Err(AuthError::MissingClaim("sub"))
    );
    let empty_sub = fixture.ed.sign(&claims_with(json!({ "sub": "" })));
    assert_eq!(
        fixture.check(&empty_sub).await,
        Err(AuthError::MissingClaim("sub"))
    );
    let no_exp = fixture.ed.sign(&claims_with(json!({ "exp": null })));
    assert_eq!(
        fixture.check(&no_exp).await,
        Err(AuthError::MissingClaim("exp"))
    );
}

#[tokio::test]
async fn the_authorization_header_must_be_a_bearer_jwt() {
    let fixture = fixture().await;
    let authenticate = |header: Option<&'static str>| fixture.authenticator.authenticate(header);
    assert_eq!(authenticate(None).await, Err(AuthError::Missing));
    assert_eq!(
        authenticate(Some("Basic YWxpY2U6c2VjcmV0")).await,
        Err(AuthError::NotBearer)
    );
    assert!(matches!(
        authenticate(Some("Bearer")).await,
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        authenticate(Some("Bearer abc")).await,
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        authenticate(Some("Bearer a.b.c")).await,
        Err(AuthError::Malformed(_))
    ));
    let token = fixture.rsa.sign(&claims_with(json!({})));
    let lowercase = format!("bearer {token}");
    assert!(
        fixture
            .authenticator
            .authenticate(Some(&lowercase))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_wrong_role_type_is_malformed_and_no_error_contains_the_token() {
    let fixture = fixture().await;
    let token = fixture.ed.sign(&claims_with(json!({ "roles": "admin" })));
    let error = fixture.check(&token).await.unwrap_err();
    assert!(matches!(error, AuthError::Malformed(_)), "{error:?}");
    for part in token.split('.') {
        assert!(
            !error.to_string().contains(part),
            "the error must not repeat the token"
        );
    }
}

#[tokio::test]
async fn an_hs256_secret_file_verifies_its_tokens() {
    let dir = keys::temp_dir();
    let secret = "a-development-secret-of-more-than-32-bytes";
    let path = keys::write(&dir, "secret", &format!("{secret}\n"));
    let config = AuthConfig {
        jwt_secret_file: Some(path),
        ..AuthConfig::default()
    };
    let authenticator = Authenticator::new(&config).await.unwrap();
    let key = TestKey {
        algorithm: jsonwebtoken::Algorithm::HS256,
        encoding: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        ..keys::ed("unused")
    };
    let mut anonymous = key.clone();
    anonymous.jwk.common.key_id = None;
    let token = anonymous.sign(&claims("bob"));
    let principal = authenticator
        .authenticate(Some(&bearer(&token)))
        .await
        .unwrap();
    assert_eq!(
        (principal.subject.as_str(), principal.roles),
        ("bob", vec![Role::Operator])
    );
    // Any other algorithm is refused against the shared secret.
    let ed_token = keys::ed("ed").sign(&claims("bob"));
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&ed_token))).await,
        Err(AuthError::AlgorithmNotAllowed("EdDSA".to_owned()))
    );
}

#[tokio::test]
async fn setup_errors_name_the_problem() {
    let dir = keys::temp_dir();
    let short = keys::write(&dir, "short", "too-short\n");
    let setup = |config: AuthConfig| async move { Authenticator::new(&config).await.unwrap_err() };

    let error = setup(AuthConfig {
        jwt_secret_file: Some(short),
        ..AuthConfig::default()
    })
    .await;
    assert!(
        matches!(error, AuthSetupError::SecretTooShort { length: 9, .. }),
        "{error}"
    );

    let missing = dir.path().join("absent.json");
    let error = setup(AuthConfig {
        jwks_file: Some(missing),
        ..AuthConfig::default()
    })
    .await;
    assert!(
        matches!(
            error,
            AuthSetupError::ReadFile {
                what: "JWKS file",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("absent.json"), "{error}");

    let garbage = keys::write(&dir, "garbage.json", "{\"keys\": 5}");
    let error = setup(AuthConfig {
        jwks_file: Some(garbage),
        ..AuthConfig::default()
    })
    .await;
    assert!(
        matches!(error, AuthSetupError::InvalidJwks { .. }),
        "{error}"
    );

    let empty = keys::write(&dir, "empty.json", "{\"keys\": []}");
    let error = setup(AuthConfig {
        jwks_file: Some(empty),
        ..AuthConfig::default()
    })
    .await;
    assert!(
        matches!(error, AuthSetupError::InvalidJwks { .. }),
        "{error}"
    );

    let error = setup(AuthConfig::default()).await;
    assert!(matches!(error, AuthSetupError::NotConfigured), "{error}");

    let two = AuthConfig {
        jwks_file: Some(dir.path().join("a")),
        jwks_url: Some("http://127.0.0.1:1/jwks".to_owned()),
        ..AuthConfig::default()
    };
    assert!(!AuthConfig::default().is_enabled() && two.is_enabled());
    assert!(matches!(
        setup(two).await,
        AuthSetupError::SeveralSources(_)
    ));
}
