//! A JWKS file is re-read when it changes, and a broken new file keeps the old keys.

use std::time::{Duration, Instant};

use security::Principal;
use security::auth::{AuthError, Authenticator};

use crate::keys::{self, bearer, claims};

/// Authenticates `token` until `accept(result)` holds or `within` has passed; the file is
/// looked at once a second, so this polls instead of sleeping a fixed time.
async fn eventually(
    authenticator: &Authenticator,
    token: &str,
    within: Duration,
    accept: impl Fn(&Result<Principal, AuthError>) -> bool,
) -> Result<Principal, AuthError> {
    let deadline = Instant::now() + within;
    loop {
        let result = authenticator.authenticate(Some(&bearer(token))).await;
        if accept(&result) || Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rewritten_jwks_file_is_picked_up_and_the_old_key_dropped() {
    let dir = keys::temp_dir();
    let key_a = keys::ed("key-a");
    let key_b = keys::ec("key-b");
    let authenticator = keys::jwks_authenticator(&dir, &[&key_a], None, None).await;
    let token_a = key_a.sign(&claims("alice"));
    let token_b = key_b.sign(&claims("bob"));
    assert!(
        authenticator
            .authenticate(Some(&bearer(&token_a)))
            .await
            .is_ok()
    );
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&token_b))).await,
        Err(AuthError::UnknownKey(Some("key-b".to_owned())))
    );

    keys::write(&dir, "jwks.json", &keys::jwks(&[&key_b]));
    let started = Instant::now();
    let result = eventually(
        &authenticator,
        &token_b,
        Duration::from_secs(3),
        Result::is_ok,
    )
    .await;
    assert_eq!(
        result.map(|principal| principal.subject),
        Ok("bob".to_owned())
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "reloaded within ~1-2 s"
    );
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&token_a))).await,
        Err(AuthError::UnknownKey(Some("key-a".to_owned())))
    );
}

#[tokio::test]
async fn a_broken_jwks_file_keeps_the_last_good_keys() {
    let dir = keys::temp_dir();
    let key_a = keys::ed("key-a");
    let authenticator = keys::jwks_authenticator(&dir, &[&key_a], None, None).await;
    let token_a = key_a.sign(&claims("alice"));

    keys::write(&dir, "jwks.json", "{ half a document");
    // Give the check two chances to see the broken file; the old key keeps working.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..2 {
        assert!(
            authenticator
                .authenticate(Some(&bearer(&token_a)))
                .await
                .is_ok()
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // Once the file is good again its keys are used.
    let key_b = keys::ed("key-b");
    keys::write(&dir, "jwks.json", &keys::jwks(&[&key_b]));
    let token_b = key_b.sign(&claims("bob"));
    let result = eventually(
        &authenticator,
        &token_b,
        Duration::from_secs(3),
        Result::is_ok,
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
}
