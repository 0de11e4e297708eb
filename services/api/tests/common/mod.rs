//! What the API's test binaries share: a store on disk, and the app serving it on a
//! free loopback port with a graceful shutdown.

use std::path::Path;
use std::time::Duration;

use api::AppState;
use eventstore::{EventStore, StoreConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The store settings of the API tests: small segments, so tests roll them.
pub fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 4 << 20,
        ..StoreConfig::default()
    }
}

/// Opens (or creates) the store in `dir`.
pub async fn open_store(dir: &Path) -> EventStore {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || EventStore::open(dir, store_config()))
        .await
        .unwrap()
        .expect("the store opens")
}

/// The JSON body of `GET url` (whatever its status).
#[allow(dead_code)]
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url} answered no JSON: {error}"))
}

/// The Prometheus text of `GET base/metrics`.
#[allow(dead_code)]
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    let url = format!("{base}/metrics");
    client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .text()
        .await
        .unwrap_or_else(|error| panic!("GET {url} answered no text: {error}"))
}

/// The objective `name` of a `GET /api/v1/slo` answer.
#[allow(dead_code)]
pub fn objective<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["objectives"]
        .as_array()
        .expect("objectives")
        .iter()
        .find(|objective| objective["name"] == name)
        .unwrap_or_else(|| panic!("no objective {name} in {report}"))
}

/// `api::app(state)` serving on a free loopback port.
pub struct Serving {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Binds a free port and serves `state` there until [`Serving::drain`].
    pub async fn start(state: AppState) -> Serving {
        Self::start_with(state, |app| app).await
    }

    /// [`Serving::start`], the app as `wrap` makes it (e.g. with another layer).
    pub async fn start_with(
        state: AppState,
        wrap: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Serving {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = state.shutdown_token();
        let stop = shutdown.clone();
        let app = wrap(api::app(state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Serving {
            base,
            shutdown,
            task,
        }
    }

    /// Stops accepting, lets in-flight requests finish (within 20 s), and returns.
    pub async fn drain(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the server drains")
            .unwrap()
            .unwrap();
    }
}

/// The app with the read models running, on a free loopback port: a store on disk, the
/// projections runner, and the server. Not every test binary uses it.
#[allow(dead_code)]
pub struct ReadSideServing {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The store the server writes.
    pub store: EventStore,
    /// The state the server serves.
    pub state: AppState,
    serving: Serving,
    runner: Runner,
}

#[allow(dead_code)]
impl ReadSideServing {
    /// Opens the store in `dir`, starts the read models over it, and serves the app of
    /// `config` with them, as `finish` makes it (e.g. with security).
    pub async fn start(
        dir: &Path,
        config: api::ApiConfig,
        finish: impl FnOnce(AppState) -> AppState,
    ) -> ReadSideServing {
        Self::start_with_runner(dir, config, projections::RunnerConfig::default(), finish).await
    }

    /// [`ReadSideServing::start`], the read models run with `runner_config`.
    pub async fn start_with_runner(
        dir: &Path,
        config: api::ApiConfig,
        runner_config: projections::RunnerConfig,
        finish: impl FnOnce(AppState) -> AppState,
    ) -> ReadSideServing {
        let store = open_store(dir).await;
        let (projections, runner) = Runner::start(&store, false, runner_config);
        let state = finish(AppState::new(store.clone(), config).with_projections(projections));
        let serving = Serving::start(state.clone()).await;
        ReadSideServing {
            base: serving.base.clone(),
            store,
            state,
            serving,
            runner,
        }
    }

    /// Drains the server, stops the runner (within 20 s) and closes the store.
    pub async fn stop(self) {
        self.serving.drain().await;
        self.runner.stop().await;
        self.store.close().await;
    }
}

/// The projections runner of a test server's read models, running on its own task.
struct Runner {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Runner {
    /// Starts the read models over `store` (with the correlation index when asked).
    fn start(
        store: &EventStore,
        correlations: bool,
        config: projections::RunnerConfig,
    ) -> (read_models::ReadSide, Runner) {
        let (read_side, runner) = if correlations {
            read_models::ReadSide::start_with_correlations(store, config)
        } else {
            read_models::ReadSide::start(store, config)
        }
        .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        (read_side, Runner { stop, task })
    }

    /// Stops it, within 20 s.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the runner stops")
            .unwrap();
    }
}

/// The platform as `annals serve` runs it, on a free loopback port: a store on disk in
/// `<dir>/data`, the read models (with the correlation index, as with `--correlations`,
/// when asked), the fulfilment saga's driver, and the server over them, its state as
/// `finish` makes it (e.g. with security or a relay). Not every test binary uses it.
#[allow(dead_code)]
pub struct PlatformServing {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The store the server writes.
    pub store: EventStore,
    serving: Serving,
    driver: sagas::Driver,
    runner: Runner,
}

#[allow(dead_code)]
impl PlatformServing {
    /// Starts it all in `dir` (see the type).
    pub async fn start(
        dir: &Path,
        correlations: bool,
        config: api::ApiConfig,
        finish: impl FnOnce(AppState) -> AppState,
    ) -> PlatformServing {
        let store = open_store(&dir.join("data")).await;
        let repositories = repositories::Repositories::new(store.clone());
        let (read_side, runner) =
            Runner::start(&store, correlations, projections::RunnerConfig::default());
        let services =
            sagas::FulfilmentServices::new(repositories.clone(), Duration::from_secs(30));
        let driver = sagas::Driver::start(
            store.clone(),
            std::sync::Arc::new(services),
            std::sync::Arc::new(sagas::SystemClock),
            sagas::DriverConfig::default(),
        )
        .unwrap();
        let state = AppState::sharing(store.clone(), repositories, config)
            .with_projections(read_side)
            .with_saga(driver.watch());
        let serving = Serving::start(finish(state)).await;
        PlatformServing {
            base: serving.base.clone(),
            store,
            serving,
            driver,
            runner,
        }
    }

    /// Drains the server, stops the saga and the read models (within 20 s) and closes
    /// the store.
    pub async fn stop(self) {
        self.serving.drain().await;
        self.driver.stop().await;
        self.runner.stop().await;
        self.store.close().await;
    }
}

/// A key store in the data directory `data_dir` under a new random master key: what a
/// server started with `--master-key-file` holds.
#[allow(dead_code)]
pub fn key_store(data_dir: &Path) -> privacy::KeyStore {
    privacy::KeyStore::open(data_dir, privacy::MasterKey::generate().unwrap()).unwrap()
}

/// The HS256 secret the secured test servers verify tokens with.
#[allow(dead_code)]
pub const SECRET: &[u8] = b"a development secret of at least thirty-two bytes";

/// The issuer of the secured test servers' tokens.
#[allow(dead_code)]
pub const ISSUER: &str = "https://idp.test";

/// A token for `sub` with `roles` (and `customer_id`), signed with [`SECRET`] by
/// [`ISSUER`], valid for ten minutes.
#[allow(dead_code)]
pub fn token(sub: &str, roles: &[security::Role], customer_id: Option<&str>) -> String {
    let claims = security::auth::MintClaims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        customer_id: customer_id.map(str::to_owned),
        issuer: Some(ISSUER.to_owned()),
        audience: None,
    };
    security::auth::mint(SECRET, &claims, Duration::from_secs(600)).unwrap()
}

/// The gate of a secured test server: tokens of [`token`] (its secret written into
/// `dir`), the default policy and `limits`.
#[allow(dead_code)]
pub async fn security(dir: &Path, limits: security::rate_limit::RateLimits) -> api::gate::Security {
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let authenticator = security::auth::Authenticator::new(&security::auth::AuthConfig {
        jwt_secret_file: Some(secret),
        issuer: Some(ISSUER.to_owned()),
        ..security::auth::AuthConfig::default()
    })
    .await
    .unwrap();
    api::gate::Security::new(
        authenticator,
        std::sync::Arc::new(security::policy::Policy::default_policy().unwrap()),
        security::rate_limit::RateLimiter::new(limits),
    )
}
