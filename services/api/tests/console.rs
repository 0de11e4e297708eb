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

use fantoccini::Locator;
use security::Role;
use serde_json::{Value, json};

mod common;
#[path = "console/harness.rs"]
mod harness;

use harness::*;

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
    let (_turn, _dir, platform, browser) = session("pages", true, DESKTOP, |p| &p.operator).await;

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
    let (_turn, _dir, platform, browser) = session("prefix", true, DESKTOP, |p| &p.operator).await;
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
    let (_turn, _dir, platform, browser) =
        session("correlation", true, DESKTOP, |p| &p.operator).await;
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
    let (_turn, _dir, platform, browser) =
        session("correlations-not-kept", false, DESKTOP, |p| &p.operator).await;
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
    let (_turn, _dir, platform, browser) = session("rebuild", true, DESKTOP, |p| &p.operator).await;
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
    let (_turn, _dir, platform, browser) = session("live", true, DESKTOP, |p| &p.operator).await;
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
    let (_turn, _dir, platform, browser) = session("customer", true, PHONE, |p| &p.customer).await;
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
