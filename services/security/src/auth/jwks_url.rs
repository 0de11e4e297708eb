//! A JWKS fetched from the identity provider's URL (`--auth-jwks-url`), cached, and
//! fetched again when a token names a key id the cache does not know (the provider has
//! rotated its keys), at most once every [`REFRESH_INTERVAL`].
//!
//! The limit protects the provider and the server from a client that sends tokens with
//! made-up key ids: a second unknown `kid` within the interval is refused without a fetch.
//! A failed refresh keeps the cached keys.
//!
//! Every fetch passes the `security.jwks` fault point ([`super::AuthConfig::chaos`],
//! inert without `--chaos`): an injected `error` fails it as a network error does, a
//! `delay` waits before it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::error::AuthSetupError;
use super::keys::KeySet;

/// The shortest time between two fetches caused by unknown key ids.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct JwksUrl {
    url: String,
    client: reqwest::Client,
    chaos: chaos::Chaos,
    keys: RwLock<Arc<KeySet>>,
    /// When the last refresh started; `None` until the first one. Held across the fetch so
    /// that concurrent requests with unknown key ids cause one fetch, not many.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksUrl {
    /// Fetches the key set once; a failure is a setup error (the server does not start
    /// without keys).
    pub(crate) async fn fetch(url: &str, chaos: chaos::Chaos) -> Result<JwksUrl, AuthSetupError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|error| AuthSetupError::FetchJwks {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        let keys = download(&client, url, &chaos).await?;
        Ok(JwksUrl {
            url: url.to_owned(),
            client,
            chaos,
            keys: RwLock::new(Arc::new(keys)),
            last_refresh: tokio::sync::Mutex::new(None),
        })
    }

    /// The cached key set.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Fetches the key set again unless the last refresh was less than
    /// [`REFRESH_INTERVAL`] ago; returns the key set to use either way.
    pub(crate) async fn refresh(&self) -> Arc<KeySet> {
        let mut last_refresh = self.last_refresh.lock().await;
        if last_refresh.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return self.current();
        }
        *last_refresh = Some(Instant::now());
        match download(&self.client, &self.url, &self.chaos).await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.keys.len(), "JWKS refreshed");
                let keys = Arc::new(keys);
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner()) = keys.clone();
                keys
            }
            Err(error) => {
                tracing::error!(%error, "JWKS refresh failed; the cached keys stay in use");
                self.current()
            }
        }
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    chaos: &chaos::Chaos,
) -> Result<KeySet, AuthSetupError> {
    let fetch_error = |reason: String| AuthSetupError::FetchJwks {
        url: url.to_owned(),
        reason,
    };
    match chaos.check(chaos::Point::SecurityJwks) {
        Some(chaos::Effect::Error) => {
            return Err(fetch_error(
                chaos::Injected(chaos::Point::SecurityJwks).to_string(),
            ));
        }
        Some(chaos::Effect::Delay(delay)) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| fetch_error(error.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fetch_error(format!("the server answered {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| fetch_error(error.to_string()))?;
    KeySet::from_jwks_json(&body).map_err(|reason| AuthSetupError::InvalidJwks {
        origin: format!("URL {url}"),
        reason,
    })
}
