//! A JWKS URL is fetched at start, and again on an unknown key id at most every 10 s,
//! against a real local HTTP server that counts its requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use security::auth::{AuthConfig, AuthError, AuthSetupError, Authenticator};

use crate::keys::{self, bearer, claims};

/// An identity provider serving a JWKS document it can change, counting the fetches.
struct Provider {
    url: String,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = (Arc<Mutex<String>>, Arc<AtomicUsize>);

async fn serve_jwks(State((jwks, fetches)): State<Shared>) -> String {
    fetches.fetch_add(1, Ordering::SeqCst);
    jwks.lock().unwrap().clone()
}

async fn provider(jwks: String) -> Provider {
    let jwks = Arc::new(Mutex::new(jwks));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/.well-known/jwks.json", get(serve_jwks))
        .with_state((jwks.clone(), fetches.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Provider {
        url,
        jwks,
        fetches,
        server,
    }
}

#[tokio::test]
async fn an_unknown_kid_refreshes_once_within_ten_seconds() {
    let old_key = keys::ed("2026-10");
    let new_key = keys::rsa(0, "2026-11");
    let provider = provider(keys::jwks(&[&old_key])).await;
    let config = AuthConfig {
        jwks_url: Some(provider.url.clone()),
        ..AuthConfig::default()
    };
    let authenticator = Authenticator::new(&config).await.unwrap();
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        1,
        "fetched once at start"
    );

    let old_token = old_key.sign(&claims("alice"));
    assert!(
        authenticator
            .authenticate(Some(&bearer(&old_token)))
            .await
            .is_ok()
    );
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        1,
        "a known kid is served from the cache"
    );

    // The provider rotates: a token of the new key triggers one refresh and verifies.
    *provider.jwks.lock().unwrap() = keys::jwks(&[&old_key, &new_key]);
    let new_token = new_key.sign(&claims("bob"));
    let principal = authenticator
        .authenticate(Some(&bearer(&new_token)))
        .await
        .unwrap();
    assert_eq!(principal.subject, "bob");
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        2,
        "one refresh for the new kid"
    );

    // Another unknown kid within 10 s is refused without a fetch.
    let stranger = keys::ec("made-up").sign(&claims("mallory"));
    assert_eq!(
        authenticator.authenticate(Some(&bearer(&stranger))).await,
        Err(AuthError::UnknownKey(Some("made-up".to_owned())))
    );
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        2,
        "no second fetch within 10 s"
    );
    assert!(
        authenticator
            .authenticate(Some(&bearer(&new_token)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_unreachable_or_broken_jwks_url_is_a_setup_error() {
    let provider = provider("not json".to_owned()).await;
    let config = AuthConfig {
        jwks_url: Some(provider.url.clone()),
        ..AuthConfig::default()
    };
    let error = Authenticator::new(&config).await.unwrap_err();
    assert!(
        matches!(error, AuthSetupError::InvalidJwks { .. }),
        "{error}"
    );

    drop(provider);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let config = AuthConfig {
        jwks_url: Some(closed.clone()),
        ..AuthConfig::default()
    };
    let error = Authenticator::new(&config).await.unwrap_err();
    assert!(
        matches!(&error, AuthSetupError::FetchJwks { url, .. } if *url == closed),
        "{error}"
    );
}
