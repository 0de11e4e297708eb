//! The console tests' harness: the platform (a server with authentication, or without
//! it, the read models and the saga, a relay to NATS if asked, and a fulfilled order)
//! and a headless Chromium driven through chromedriver (a phone's screen emulated, keys
//! pressed through WebDriver actions).

use super::common;
pub(crate) use super::common::token;
use api::{ApiConfig, AppState};
use eventstore::EventStore;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use security::Role;
use security::rate_limit::RateLimits;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any condition in the browser may take to hold.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// One browser at a time: the machine running the tests may have two cores.
pub(crate) static BROWSER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A desktop window, in CSS pixels.
pub(crate) const DESKTOP: (u32, u32) = (1280, 900);

/// A phone-sized window, in CSS pixels.
pub(crate) const PHONE: (u32, u32) = (390, 844);

/// What a browser test holds while it runs: its turn at the browser, the data directory,
/// the platform, and a browser signed in.
pub(crate) type Session = (
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    Platform,
    Browser,
);

/// How a test's server is set up; [`Setup::default`] is a server with authentication,
/// the read models and the saga, keeping no correlation index and running no relay.
#[derive(Debug, Clone, Default)]
pub(crate) struct Setup {
    /// Keep the correlation index (`annals serve --correlations`).
    pub(crate) correlations: bool,
    /// Serve without authentication, as `annals serve` does on loopback with no token
    /// source configured: the console then asks for no token.
    pub(crate) open: bool,
    /// Run the outbox relay to this NATS server (`annals serve --nats-url`).
    pub(crate) nats_url: Option<String>,
}

/// Waits for the browser's turn, starts a platform (keeping the correlation index if
/// `correlations`) and opens a browser of `window` size for `test`, signed in with the
/// token `who` picks from the platform's (the operator's or the customer's).
pub(crate) async fn session(
    test: &'static str,
    correlations: bool,
    window: (u32, u32),
    who: fn(&Platform) -> &str,
) -> Session {
    let setup = Setup {
        correlations,
        ..Setup::default()
    };
    session_with(test, setup, window, who).await
}

/// [`session`] on a server set up as `setup`; on an open server the browser opens the
/// console without signing in (`who` is not asked).
pub(crate) async fn session_with(
    test: &'static str,
    setup: Setup,
    window: (u32, u32),
    who: fn(&Platform) -> &str,
) -> Session {
    let turn = BROWSER_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let open = setup.open;
    let platform = Platform::start_with(dir.path(), setup).await;
    let browser = Browser::open(&platform.base, test, window.0, window.1).await;
    if open {
        browser.visit("").await;
        browser.wait_for("#nav a").await;
    } else {
        browser.sign_in(who(&platform)).await;
    }
    (turn, dir, platform, browser)
}

// ---- the platform -----------------------------------------------------------------------

/// The server with authentication, the read models and the saga, on a free port.
pub(crate) struct Platform {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) store: EventStore,
    pub(crate) operator: String,
    pub(crate) customer: String,
    /// An order of `alice`, placed and fulfilled before the test begins.
    pub(crate) order_id: String,
    pub(crate) platform: common::PlatformServing,
    /// The outbox relay, when the platform runs one: its stop and its task.
    pub(crate) relay: Option<(CancellationToken, JoinHandle<Result<(), outbox::Error>>)>,
}

impl Platform {
    /// Starts the server in `dir`, keeping the correlation index, and places an order
    /// that the saga confirms.
    pub(crate) async fn start(dir: &Path) -> Platform {
        let setup = Setup {
            correlations: true,
            ..Setup::default()
        };
        Platform::start_with(dir, setup).await
    }

    /// [`Platform::start`], the server set up as `setup`.
    pub(crate) async fn start_with(dir: &Path, setup: Setup) -> Platform {
        let security = if setup.open {
            None
        } else {
            Some(common::security(dir, RateLimits::default()).await)
        };
        let mut relay = None;
        let finish = |mut state: AppState| {
            if let Some(security) = security {
                state = state.with_security(security);
            }
            if let Some(url) = setup.nats_url {
                // Short timeouts and a quick breaker, so that an outage shows within seconds;
                // once open, the breaker stays open for the rest of a test (never half open
                // while a test looks at it).
                let publisher = outbox::Relay::new(
                    state.store().clone(),
                    outbox::RelayConfig {
                        connect_timeout: Duration::from_secs(2),
                        request_timeout: Duration::from_secs(2),
                        ack_timeout: Duration::from_secs(2),
                        backoff_min: Duration::from_millis(20),
                        backoff_max: Duration::from_millis(200),
                        breaker_failure_threshold: 2,
                        breaker_cool_down: Duration::from_secs(120),
                        status_interval: Duration::from_millis(100),
                        shutdown_grace: Duration::from_millis(500),
                        ..outbox::RelayConfig::new(url)
                    },
                )
                .unwrap();
                state = state.with_relay(publisher.status());
                let stop = CancellationToken::new();
                let task = tokio::spawn(publisher.run(stop.clone()));
                relay = Some((stop, task));
            }
            state
        };
        let platform =
            common::PlatformServing::start(dir, setup.correlations, ApiConfig::default(), finish)
                .await;
        let mut platform = Platform {
            base: platform.base.clone(),
            http: reqwest::Client::new(),
            store: platform.store.clone(),
            operator: token("oscar", &[Role::Operator], None),
            customer: token("alice", &[Role::Customer], Some("alice")),
            order_id: String::new(),
            platform,
            relay,
        };
        let admin = token("root", &[Role::Admin], None);
        let sku = json!({"sku": "apple", "name": "Apple", "unit_price": 120});
        platform.send(&admin, "/api/v1/inventory/skus", sku).await;
        let restock = json!({"quantity": 1000});
        let path = "/api/v1/inventory/skus/apple/restock";
        platform.send(&admin, path, restock).await;
        let account = json!({"customer_id": "alice"});
        platform
            .send(&admin, "/api/v1/payments/accounts", account)
            .await;
        let deposit = json!({"amount": 50_000});
        let path = "/api/v1/payments/accounts/alice/deposits";
        platform.send(&admin, path, deposit).await;
        platform.order_id = platform.place_order(3).await;
        platform.saga_finished().await;
        platform
    }

    /// `POST path body` as `token`, expecting a 2xx; its JSON answer.
    pub(crate) async fn send(&self, token: &str, path: &str, body: Value) -> Value {
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
    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, answer) = self.operator_get(path).await;
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// `GET path` as the operator: its status and JSON answer (null if not JSON).
    async fn operator_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.operator)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the order's saga has finished (confirmed).
    pub(crate) async fn saga_finished(&self) {
        self.saga_ends(&self.order_id, "confirmed").await;
    }

    /// Places an order of `quantity` apples for `alice`; its id.
    pub(crate) async fn place_order(&self, quantity: u32) -> String {
        let admin = token("root", &[Role::Admin], None);
        let order =
            json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": quantity}]});
        let placed = self.send(&admin, "/api/v1/orders", order).await;
        placed["order_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the saga of `order_id` has finished in `phase` (`confirmed` or
    /// `cancelled`).
    pub(crate) async fn saga_ends(&self, order_id: &str, phase: &str) {
        let path = format!("/api/v1/sagas/fulfilment/{order_id}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, saga) = self.operator_get(&path).await;
            if status == 200 && saga["finished"] == true {
                assert_eq!(saga["state"]["phase"], phase, "{saga}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the saga of order {order_id} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log's head now (the next position), as the API answers it.
    pub(crate) async fn log_head(&self) -> u64 {
        self.get("/api/v1/log?from=0&limit=1").await["next_position"]
            .as_u64()
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        if let Some((stop, task)) = self.relay {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the relay stops")
                .unwrap()
                .unwrap();
        }
        self.platform.stop().await;
    }
}

// ---- the browser ------------------------------------------------------------------------

/// chromedriver on a free loopback port, in a process group of its own (the Chromium it
/// starts joins it). On drop it ends the browser session left open, if any (chromedriver
/// then quits Chromium), and kills the group: a failed test leaves no browser behind.
pub(crate) struct Chromedriver {
    pub(crate) url: String,
    pub(crate) child: Child,
    /// The session a test has not closed.
    pub(crate) session: Option<String>,
}

impl Chromedriver {
    pub(crate) fn start() -> Chromedriver {
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
    pub(crate) async fn ready(&mut self) {
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
    pub(crate) fn delete_session(&self, session: &str) -> std::io::Result<()> {
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
pub(crate) struct Browser {
    pub(crate) client: Client,
    pub(crate) chromedriver: Chromedriver,
    pub(crate) session: String,
    pub(crate) base: String,
    pub(crate) test: &'static str,
    pub(crate) http: reqwest::Client,
}

impl Browser {
    /// A browser of `width` × `height` CSS pixels, against the server at `base`.
    pub(crate) async fn open(base: &str, test: &'static str, width: u32, height: u32) -> Browser {
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
        if (width, height) == PHONE {
            // Chromium keeps a window at least 500 pixels wide: a phone's screen is
            // emulated (its viewport, touch, and the page's viewport meta tag honoured).
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}
            });
        }
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
    pub(crate) async fn sign_in(&self, token: &str) {
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
    pub(crate) async fn visit(&self, hash: &str) {
        self.client
            .goto(&format!("{}/console{hash}", self.base))
            .await
            .unwrap();
    }

    /// The element `css`, once it exists.
    pub(crate) async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
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
    pub(crate) async fn shown(&self) -> String {
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
    pub(crate) async fn wait_text(
        &self,
        css: &str,
        what: &str,
        holds: impl Fn(&str) -> bool,
    ) -> String {
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
    pub(crate) async fn errors(&self) -> Vec<String> {
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
    pub(crate) async fn page_is_clean(&self, name: &str) {
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
    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    /// Presses `keys` together and releases them (WebDriver key actions: what has the
    /// focus gets them), e.g. `&[Key::Shift, Key::Tab]`.
    pub(crate) async fn press(&self, keys: &[Key]) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys {
            actions = actions.then(KeyAction::Down {
                value: (*key).into(),
            });
        }
        for key in keys.iter().rev() {
            actions = actions.then(KeyAction::Up {
                value: (*key).into(),
            });
        }
        self.client.perform_actions(actions).await.unwrap();
    }

    /// Loads the console's overview again, as a fresh page (nothing focused); the
    /// `data-page` of each navigation link it offers, in order.
    pub(crate) async fn fresh_page(&self) -> Vec<String> {
        self.visit("#/").await;
        self.client.refresh().await.unwrap();
        self.wait_for("#log-head").await;
        let mut pages = Vec::new();
        for link in self
            .client
            .find_all(Locator::Css("#nav a[data-page]"))
            .await
            .unwrap()
        {
            pages.push(link.attr("data-page").await.unwrap().unwrap());
        }
        pages
    }

    /// What has the focus: `tag`, `id`, `page` (a nav link's `data-page`), `text`, and
    /// `indicated`, whether it shows a focus indicator (an outline or a box shadow).
    pub(crate) async fn focused(&self) -> Value {
        self.client
            .execute(
                "const element = document.activeElement || document.body; \
                 const style = getComputedStyle(element); \
                 const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0; \
                 return { tag: element.tagName.toLowerCase(), id: element.id, \
                   page: element.getAttribute('data-page'), text: element.textContent.trim(), \
                   indicated: outline || style.boxShadow !== 'none' };",
                vec![],
            )
            .await
            .unwrap()
    }

    /// Waits until what has the focus is as `holds` wants it; that element's description
    /// ([`Browser::focused`]).
    pub(crate) async fn wait_focus(&self, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let focused = self.focused().await;
            if holds(&focused) {
                return focused;
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = self.shown().await;
                panic!(
                    "the focus is not on {what} within {WAIT:?} but on {focused}; the page shows:\n{shown}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How the page is laid out: the window's `width` and the document's `scroll_width`
    /// (wider: it scrolls sideways), and the boxes (`shown`, `left`, `right`, `top`) of
    /// each navigation link (`nav`), the page's `heading`, and the first `content` shown
    /// under it; `too_wide` lists elements reaching past the window's right edge.
    pub(crate) async fn layout(&self) -> Value {
        self.client
            .execute(
                "const width = window.innerWidth; \
                 const box = (element) => { \
                   if (!element) return { shown: false }; \
                   const r = element.getBoundingClientRect(); \
                   const shown = r.width > 0 && r.height > 0 && getComputedStyle(element).visibility !== 'hidden'; \
                   return { shown, left: r.left, right: r.right, top: r.top, text: element.textContent.trim().slice(0, 40) }; \
                 }; \
                 const describe = (element) => element.tagName.toLowerCase() + (element.id ? '#' + element.id : '') \
                   + (element.getAttribute('class') ? '.' + element.getAttribute('class').split(' ').join('.') : '') \
                   + ' right ' + Math.round(element.getBoundingClientRect().right); \
                 const main = document.getElementById('main'); \
                 const heading = main.querySelector('h1'); \
                 const content = [...main.children].filter((child) => child !== heading).map(box).find((found) => found.shown); \
                 return { width, scroll_width: document.documentElement.scrollWidth, \
                   nav: [...document.querySelectorAll('#nav a')].map(box), heading: box(heading), \
                   content: content || { shown: false }, \
                   too_wide: [...document.querySelectorAll('body *')] \
                     .filter((element) => element.getBoundingClientRect().right > width + 0.5) \
                     .slice(0, 20).map(describe) };",
                vec![],
            )
            .await
            .unwrap()
    }

    pub(crate) async fn close(mut self) {
        self.client.close().await.unwrap();
        self.chromedriver.session = None;
    }
}

pub(crate) fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}
