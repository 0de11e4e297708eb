//! The web console: how it is served (over plain HTTP), and the console itself in a real
//! headless Chromium driven through chromedriver (WebDriver, with `fantoccini`), against a
//! real listening server with authentication on, the read models and the fulfilment saga
//! running, and real orders placed.
//!
//! chromedriver comes from `CHROMEDRIVER_BIN` (default: `chromedriver` on PATH); without
//! it the browser tests fail saying how to install it. Every page a test visits is checked
//! for errors (the console's own `window.annalsErrors`, which gathers uncaught errors,
//! unhandled rejections, CSP violations and `console.error`, and chromedriver's browser
//! log, which has failed requests too) and saved as a screenshot in
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use eventstore::EventStore;
use fantoccini::{Client, ClientBuilder, Locator};
use repositories::Repositories;
use security::Role;
use security::auth::{AuthConfig, Authenticator, MintClaims, mint};
use security::policy::Policy;
use security::rate_limit::{RateLimiter, RateLimits};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;

const SECRET: &[u8] = b"a development secret of at least thirty-two bytes";
const ISSUER: &str = "https://idp.test";
/// How long any condition in the browser may take to hold.
const WAIT: Duration = Duration::from_secs(20);

/// One browser at a time: the machine running the tests may have two cores.
static BROWSER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- the platform -----------------------------------------------------------------------

/// The server with authentication, the read models and the saga, on a free port.
struct Platform {
    base: String,
    http: reqwest::Client,
    store: EventStore,
    operator: String,
    customer: String,
    /// An order of `alice`, placed and fulfilled before the test begins.
    order_id: String,
    serving: common::Serving,
    driver: sagas::Driver,
    runner_stop: CancellationToken,
    runner: JoinHandle<()>,
}

fn token(sub: &str, roles: &[Role], customer_id: Option<&str>) -> String {
    let claims = MintClaims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        customer_id: customer_id.map(str::to_owned),
        issuer: Some(ISSUER.to_owned()),
        audience: None,
    };
    mint(SECRET, &claims, Duration::from_secs(3600)).unwrap()
}

impl Platform {
    /// Starts the server in `dir`, keeping the correlation index, and places an order
    /// that the saga confirms.
    async fn start(dir: &Path) -> Platform {
        Platform::start_with(dir, true).await
    }

    /// [`Platform::start`]; with `correlations` false the server keeps no correlation
    /// index (as `annals serve` without `--correlations`).
    async fn start_with(dir: &Path, correlations: bool) -> Platform {
        let secret = dir.join("jwt-secret");
        std::fs::write(&secret, SECRET).unwrap();
        let authenticator = Authenticator::new(&AuthConfig {
            jwt_secret_file: Some(secret),
            issuer: Some(ISSUER.to_owned()),
            ..AuthConfig::default()
        })
        .await
        .unwrap();
        let security = api::gate::Security::new(
            authenticator,
            Arc::new(Policy::default_policy().unwrap()),
            RateLimiter::new(RateLimits::default()),
        );
        let store = common::open_store(&dir.join("data")).await;
        let repositories = Repositories::new(store.clone());
        // The event page lists the event's correlation: keep the index
        // (`annals serve --correlations`).
        let runner_config = projections::RunnerConfig::default();
        let (projections, runner) = if correlations {
            read_models::ReadSide::start_with_correlations(&store, runner_config)
        } else {
            read_models::ReadSide::start(&store, runner_config)
        }
        .unwrap();
        let runner_stop = CancellationToken::new();
        let runner = tokio::spawn(runner.run(runner_stop.clone()));
        let services =
            sagas::FulfilmentServices::new(repositories.clone(), Duration::from_secs(30));
        let driver = sagas::Driver::start(
            store.clone(),
            Arc::new(services),
            Arc::new(sagas::SystemClock),
            sagas::DriverConfig::default(),
        )
        .unwrap();
        let state = AppState::sharing(store.clone(), repositories, ApiConfig::default())
            .with_projections(projections)
            .with_saga(driver.watch())
            .with_security(security);
        let serving = common::Serving::start(state).await;
        let mut platform = Platform {
            base: serving.base.clone(),
            http: reqwest::Client::new(),
            store,
            operator: token("oscar", &[Role::Operator], None),
            customer: token("alice", &[Role::Customer], Some("alice")),
            order_id: String::new(),
            serving,
            driver,
            runner_stop,
            runner,
        };
        let admin = token("root", &[Role::Admin], None);
        let sku = json!({"sku": "apple", "name": "Apple", "unit_price": 120});
        platform.send(&admin, "/api/v1/inventory/skus", sku).await;
        let restock = json!({"quantity": 100});
        let path = "/api/v1/inventory/skus/apple/restock";
        platform.send(&admin, path, restock).await;
        let account = json!({"customer_id": "alice"});
        platform
            .send(&admin, "/api/v1/payments/accounts", account)
            .await;
        let deposit = json!({"amount": 50_000});
        let path = "/api/v1/payments/accounts/alice/deposits";
        platform.send(&admin, path, deposit).await;
        let order = json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 3}]});
        let placed = platform.send(&admin, "/api/v1/orders", order).await;
        platform.order_id = placed["order_id"].as_str().unwrap().to_owned();
        platform.saga_finished().await;
        platform
    }

    /// `POST path body` as `token`, expecting a 2xx; its JSON answer.
    async fn send(&self, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path} {body}: {status} {answer}");
        answer
    }

    /// `GET path` as the operator, expecting a 200; its JSON answer.
    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.operator)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status.as_u16(), 200, "GET {path}: {answer}");
        answer
    }

    /// Waits until the order's saga has finished (confirmed).
    async fn saga_finished(&self) {
        let path = format!("/api/v1/sagas/fulfilment/{}", self.order_id);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.operator)
                .send()
                .await
                .unwrap();
            if response.status().as_u16() == 200 {
                let saga: Value = response.json().await.unwrap();
                if saga["finished"] == true {
                    assert_eq!(saga["state"]["phase"], "confirmed", "{saga}");
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the saga of order {} did not finish",
                self.order_id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log's head now (the next position), as the API answers it.
    async fn log_head(&self) -> u64 {
        self.get("/api/v1/log?from=0&limit=1").await["next_position"]
            .as_u64()
            .unwrap()
    }

    async fn stop(self) {
        self.serving.drain().await;
        self.driver.stop().await;
        self.runner_stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.runner)
            .await
            .expect("the runner stops")
            .unwrap();
        self.store.close().await;
    }
}

// ---- the browser ------------------------------------------------------------------------

/// chromedriver on a free loopback port, in a process group of its own (the Chromium it
/// starts joins it). On drop it ends the browser session left open, if any (chromedriver
/// then quits Chromium), and kills the group: a failed test leaves no browser behind.
struct Chromedriver {
    url: String,
    child: Child,
    /// The session a test has not closed.
    session: Option<String>,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let binary = std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start chromedriver ({binary}: {error}); the console tests need \
                     Chromium and its driver: `apt-get install chromium chromium-driver` \
                     (Debian), or set CHROMEDRIVER_BIN to a chromedriver matching your Chrome"
                )
            });
        Chromedriver {
            url: format!("http://127.0.0.1:{port}"),
            child,
            session: None,
        }
    }

    /// Waits until chromedriver takes sessions.
    async fn ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(response) = http.get(format!("{}/status", self.url)).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("chromedriver exited at start ({exit})");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = self.delete_session(&session);
        }
        // The group: chromedriver and any Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    /// `DELETE /session/{session}`, blocking (it runs in `drop`, perhaps while a test
    /// unwinds): chromedriver quits that session's Chromium.
    fn delete_session(&self, session: &str) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(())
    }
}

/// A headless Chromium session, its screenshots named after `test`.
struct Browser {
    client: Client,
    chromedriver: Chromedriver,
    session: String,
    base: String,
    test: &'static str,
    http: reqwest::Client,
}

impl Browser {
    /// A browser of `width` × `height` CSS pixels, against the server at `base`.
    async fn open(base: &str, test: &'static str, width: u32, height: u32) -> Browser {
        let mut chromedriver = Chromedriver::start();
        chromedriver.ready().await;
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                format!("--window-size={width},{height}"),
            ]
        });
        if let Ok(chrome) = std::env::var("CHROME_BIN") {
            options["binary"] = json!(chrome);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&chromedriver.url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "chromedriver started no Chromium session ({error}); install Chromium \
                     (`apt-get install chromium chromium-driver`) or set CHROME_BIN"
                )
            });
        let session = client.session_id().await.unwrap().expect("a session id");
        chromedriver.session = Some(session.clone());
        Browser {
            client,
            chromedriver,
            session,
            base: base.to_owned(),
            test,
            http: reqwest::Client::new(),
        }
    }

    /// Opens the console and signs in with `token`.
    async fn sign_in(&self, token: &str) {
        self.client
            .goto(&format!("{}/console", self.base))
            .await
            .unwrap();
        let input = self.wait_for("#token").await;
        self.page_is_clean("sign-in").await;
        input.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("#sign-in button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for("#subject").await;
    }

    /// Goes to the console's route `hash` (e.g. `#/streams`).
    async fn visit(&self, hash: &str) {
        self.client
            .goto(&format!("{}/console{hash}", self.base))
            .await
            .unwrap();
    }

    /// The element `css`, once it exists.
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => {
                let shown = self.shown().await;
                panic!("no {css} within {WAIT:?} ({error}); the page shows:\n{shown}")
            }
        }
    }

    /// The text of the page's main part, and its errors, for a failure's message (a
    /// screenshot of it is saved as `<test>-failed.png`).
    async fn shown(&self) -> String {
        if let Ok(png) = self.client.screenshot().await {
            let dir = screenshots();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{}-failed.png", self.test)), png);
        }
        let text = match self.client.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.unwrap_or_default(),
            Err(error) => format!("(no main: {error})"),
        };
        format!("{text}\nerrors: {:?}", self.errors().await)
    }

    /// The text of `css` once `holds` is true of it (polling; `what` names the condition).
    async fn wait_text(&self, css: &str, what: &str, holds: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if holds(&text) {
                    return text;
                }
                last = text;
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = self.shown().await;
                panic!(
                    "{css}: {what} did not hold within {WAIT:?}; its text: {last:?}; the \
                     page shows:\n{shown}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The console's own error list and chromedriver's severe browser log entries.
    async fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let page = self
            .client
            .execute("return window.annalsErrors || [];", vec![])
            .await
            .unwrap();
        for error in page.as_array().into_iter().flatten() {
            errors.push(format!("page: {error}"));
        }
        let log: Value = self
            .http
            .post(format!(
                "{}/session/{}/se/log",
                self.chromedriver.url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for entry in log["value"].as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                errors.push(format!("browser: {}", entry["message"]));
            }
        }
        errors
    }

    /// Saves a screenshot of the page as `<test>-<name>.png` and fails on any error the
    /// page met.
    async fn page_is_clean(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}-{name}.png", self.test)), png).unwrap();
        let errors = self.errors().await;
        assert!(
            errors.is_empty(),
            "{name}: errors in the browser: {errors:#?}"
        );
    }

    /// The texts of every element matching `css`.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    async fn close(mut self) {
        self.client.close().await.unwrap();
        self.chromedriver.session = None;
    }
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

// ---- serving: plain HTTP ------------------------------------------------------------------

/// The files need no token on a server with authentication, answer with their content
/// types and a policy allowing this origin only; an unknown file is a 404 problem; `/`
/// redirects to the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, content_type, contains) in [
        ("/console", "text/html; charset=utf-8", "console.js"),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "annalsErrors",
        ),
        ("/console/console.css", "text/css; charset=utf-8", ":root"),
    ] {
        let response = http
            .get(format!("{}{path}", platform.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        let body = response.text().await.unwrap();
        assert!(body.contains(contains), "{path}");
        // Nothing from another origin.
        assert!(!body.contains("https://"), "{path} names another origin");
    }
    let missing = http
        .get(format!("{}/console/secrets.txt", platform.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["type"], "urn:annals:problem:unknown-asset");
    let root = http.get(&platform.base).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 307);
    assert_eq!(root.headers()["location"], "/console");
    // Documented, public and without a lane.
    let document = serde_json::to_value(api::openapi()).unwrap();
    for path in ["/console", "/console/{asset}", "/"] {
        let get = &document["paths"][path]["get"];
        assert_eq!(get["tags"][0], "console", "{path}");
        let lane_header = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|parameter| parameter["name"] == "Annals-Intent");
        assert!(!lane_header, "{path} passes no lane");
    }
    let public: Vec<_> = api::gate::route_actions()
        .filter(|(_, _, action, public)| *action == "operations.console" && *public)
        .map(|(_, path, _, _)| path)
        .collect();
    assert_eq!(public, ["/console", "/console/{asset}", "/"]);
    platform.stop().await;
}

// ---- the console in the browser -------------------------------------------------------------

/// Every page of an operator loads without an error; the overview's log head is the
/// API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_cleanly_and_the_overview_shows_the_log_head() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "pages", 1280, 900).await;
    browser.sign_in(&platform.operator).await;

    let head = platform.log_head().await;
    browser
        .wait_text("#log-head", "the API's log head", |text| {
            text == head.to_string()
        })
        .await;
    browser.wait_for("#ready-status").await;
    browser.wait_for("#models-card table").await;
    browser.wait_for("#sagas-card table").await;
    browser.wait_for("#slo-card table").await;
    browser.page_is_clean("overview").await;

    let order_stream = format!("order-{}", platform.order_id);
    let pages = [
        (
            "streams",
            "#/streams?category=order".to_owned(),
            "#streams-table",
        ),
        (
            "stream",
            format!("#/stream/{order_stream}"),
            "#events-table",
        ),
        ("live", "#/live".to_owned(), "#live-status[data-connected]"),
        ("read-models", "#/read-models".to_owned(), "#models section"),
        (
            "sagas",
            "#/sagas?phase=confirmed".to_owned(),
            "#saga-list table",
        ),
        (
            "saga",
            format!("#/saga/{}", platform.order_id),
            "#saga-steps",
        ),
        ("relay", "#/relay".to_owned(), "#relay-off"),
    ];
    for (name, hash, ready) in pages {
        browser.visit(&hash).await;
        browser.wait_for(ready).await;
        browser.page_is_clean(name).await;
    }
    let first = platform
        .get(&format!("/api/v1/streams/{order_stream}"))
        .await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.visit(&format!("#/event/{first}")).await;
    browser.wait_for("#correlation-table").await;
    browser.page_is_clean("event").await;
    browser.close().await;
    platform.stop().await;
}

/// A stream found by a prefix of its id opens, with as many events as the API has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_found_by_prefix_opens_with_its_events() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "prefix", 1280, 900).await;
    browser.sign_in(&platform.operator).await;
    browser.visit("#/streams").await;
    let order_stream = format!("order-{}", platform.order_id);
    let prefix = &order_stream[..14];
    browser
        .wait_for("#prefix")
        .await
        .send_keys(prefix)
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("#stream-search button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let link = browser
        .wait_for(&format!(
            "#streams-table a[href=\"#/stream/{order_stream}\"]"
        ))
        .await;
    let found = browser
        .texts("#streams-table tbody tr td:first-child")
        .await;
    assert!(
        found.iter().all(|stream| stream.starts_with(prefix)),
        "{found:?}"
    );
    browser.page_is_clean("search").await;
    link.click().await.unwrap();
    let api_page = platform
        .get(&format!("/api/v1/streams/{order_stream}"))
        .await;
    let count = api_page["last_version"].as_u64().unwrap() + 1;
    browser
        .wait_text("#stream-count", "the API's event count", |text| {
            text == count.to_string()
        })
        .await;
    let rows = browser
        .client
        .find_all(Locator::Css("#events-table tr[data-version]"))
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, count);
    // The first event opened: its payload, and the order's state at version 0.
    browser
        .wait_for("#events-table details summary")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for("#events-table button.state-at-button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_text(
            "#events-table .state-at",
            "the state at version 0",
            |text| text.contains(&format!("State of {order_stream} at version 0")),
        )
        .await;
    browser.page_is_clean("stream").await;
    browser.close().await;
    platform.stop().await;
}

/// The order's first event lists every event of its correlation: the order's, the
/// stock's and the account's the saga caused, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_correlation_lists_the_sagas_events_for_its_order() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "correlation", 1280, 900).await;
    browser.sign_in(&platform.operator).await;
    let order_stream = format!("order-{}", platform.order_id);
    let placed = platform
        .get(&format!("/api/v1/streams/{order_stream}"))
        .await["events"][0]
        .clone();
    let correlation = placed["metadata"]["correlation_id"].as_str().unwrap();
    let expected = platform
        .get(&format!("/api/v1/correlations/{correlation}?limit=200"))
        .await;
    let expected: Vec<String> = expected["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["position"].to_string())
        .collect();
    browser
        .visit(&format!("#/event/{}", placed["id"].as_str().unwrap()))
        .await;
    browser
        .wait_text("#correlation-id", "the correlation id", |text| {
            text == correlation
        })
        .await;
    browser.wait_for("#correlation-table").await;
    let positions = browser
        .texts("#correlation-table tbody tr td:first-child")
        .await;
    assert_eq!(positions, expected);
    let streams = browser
        .texts("#correlation-table tbody tr td:nth-child(2)")
        .await;
    for stream in [order_stream.as_str(), "stock-apple", "account-alice"] {
        assert!(
            streams.iter().any(|shown| shown == stream),
            "{stream} in {streams:?}"
        );
    }
    browser.page_is_clean("event").await;
    browser.close().await;
    platform.stop().await;
}

/// On a server that keeps no correlation index, the event page shows the route's
/// `correlations-not-kept` detail as a note, not as an error: the page logs none (a
/// line the browser itself may log for the 404 the fetch answered is not the page's,
/// and no script can silence it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_correlations_kept_the_event_page_says_how_to_keep_them() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start_with(dir.path(), false).await;
    let browser = Browser::open(&platform.base, "correlations-not-kept", 1280, 900).await;
    browser.sign_in(&platform.operator).await;
    let placed = platform
        .get(&format!("/api/v1/streams/order-{}", platform.order_id))
        .await["events"][0]
        .clone();
    browser
        .visit(&format!("#/event/{}", placed["id"].as_str().unwrap()))
        .await;
    browser
        .wait_text("#correlations-not-kept", "the note", |text| {
            text.contains("--correlations")
        })
        .await;
    assert!(browser.texts("#correlation .problem").await.is_empty());
    let errors: Vec<String> = browser
        .errors()
        .await
        .into_iter()
        .filter(|error| !(error.contains("/api/v1/correlations/") && error.contains("404")))
        .collect();
    assert!(errors.is_empty(), "errors in the browser: {errors:#?}");
    browser.close().await;
    platform.stop().await;
}

/// A rebuild started with the button completes, and the page shows the new model's
/// checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_from_the_button_completes() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "rebuild", 1280, 900).await;
    browser.sign_in(&platform.operator).await;
    browser.visit("#/read-models").await;
    let name = read_models::ORDERS;
    let before = model(&platform, name).await["active_build"].clone();
    browser
        .wait_for(&format!("#rebuild-{name}"))
        .await
        .click()
        .await
        .unwrap();
    let done = browser.wait_for(&format!("#rebuilt-{name}")).await;
    let shown: u64 = done
        .attr("data-checkpoint")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let after = model(&platform, name).await;
    assert_ne!(after["active_build"], before, "a new build took over");
    assert!(after["rebuild"].is_null(), "{after}");
    let checkpoint = after["checkpoint"].as_u64().unwrap();
    assert!(shown <= checkpoint && checkpoint <= platform.log_head().await);
    browser
        .wait_text(
            &format!("#checkpoint-{name}"),
            "the API's checkpoint",
            |text| text == checkpoint.to_string(),
        )
        .await;
    browser.page_is_clean("read-models").await;
    browser.close().await;
    platform.stop().await;
}

/// One projection's status, as the API answers it.
async fn model(platform: &Platform, name: &str) -> Value {
    platform.get("/api/v1/projections").await["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["name"] == name)
        .unwrap_or_else(|| panic!("no projection {name}"))
        .clone()
}

/// The live tail shows an event appended while it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_tail_shows_an_event_appended_meanwhile() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "live", 1280, 900).await;
    browser.sign_in(&platform.operator).await;
    browser.visit("#/live").await;
    browser.wait_for("#live-status[data-connected]").await;
    let admin = token("root", &[Role::Admin], None);
    let deposited = platform
        .send(
            &admin,
            "/api/v1/payments/accounts/alice/deposits",
            json!({"amount": 1}),
        )
        .await;
    let position = deposited["position"].as_u64().unwrap();
    let row = browser
        .wait_for(&format!("#live-events li[data-position=\"{position}\"]"))
        .await;
    let text = row.text().await.unwrap();
    assert!(text.contains("account-alice"), "{text}");
    browser.page_is_clean("live").await;
    // Paused, it shows nothing new; resumed, it goes on after the last event it showed.
    let pause = browser.wait_for("#live-pause").await;
    pause.click().await.unwrap();
    browser
        .wait_text("#live-status", "paused", |text| text.starts_with("Paused"))
        .await;
    let deposited = platform
        .send(
            &admin,
            "/api/v1/payments/accounts/alice/deposits",
            json!({"amount": 2}),
        )
        .await;
    let while_paused = deposited["position"].as_u64().unwrap();
    let shown = browser.texts("#live-events li").await;
    assert_eq!(shown.len(), 1, "nothing new while paused: {shown:?}");
    browser.page_is_clean("live-paused").await;
    pause.click().await.unwrap();
    browser
        .wait_for(&format!(
            "#live-events li[data-position=\"{while_paused}\"]"
        ))
        .await;
    // Filtered by another category, the event is hidden.
    browser
        .wait_for("#live-category")
        .await
        .send_keys("order")
        .await
        .unwrap();
    browser
        .wait_text("#live-events", "the deposit filtered out", |text| {
            !text.contains("account-alice")
        })
        .await;
    browser.page_is_clean("live-filtered").await;
    browser.close().await;
    platform.stop().await;
}

/// A customer, on a phone-sized screen, is offered no operator page, and one opened by
/// its address says it is not permitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_does_not_see_the_operator_pages() {
    let _turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(dir.path()).await;
    let browser = Browser::open(&platform.base, "customer", 390, 844).await;
    browser.sign_in(&platform.customer).await;
    browser.page_is_clean("home").await;
    let offered: Vec<String> = {
        let mut pages = Vec::new();
        for element in browser
            .client
            .find_all(Locator::Css("#nav a[data-page]"))
            .await
            .unwrap()
        {
            pages.push(element.attr("data-page").await.unwrap().unwrap());
        }
        pages
    };
    for operator_page in ["overview", "streams", "live", "read-models", "relay"] {
        assert!(
            !offered.iter().any(|page| page == operator_page),
            "a customer is offered {operator_page}: {offered:?}"
        );
    }
    for (name, hash) in [
        ("streams", "#/streams"),
        ("read-models", "#/read-models"),
        ("live", "#/live"),
        ("relay", "#/relay"),
    ] {
        browser.visit(hash).await;
        browser.wait_for("#not-permitted").await;
        browser.page_is_clean(&format!("denied-{name}")).await;
    }
    browser.close().await;
    platform.stop().await;
}
