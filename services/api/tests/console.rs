//! The web console: how it is served (over plain HTTP), and the console itself in a real
//! headless Chromium driven through chromedriver (WebDriver, with `fantoccini`), against a
//! real listening server with authentication on (one test: off), the read models and the
//! fulfilment saga running, and real orders placed; on a desktop and on a phone-sized
//! screen, with the mouse and with the keyboard alone; a read model faulted by a real
//! event; a relay to a real nats-server (`NATS_SERVER_BIN`) that is then stopped.
//!
//! chromedriver comes from `CHROMEDRIVER_BIN` (default: `chromedriver` on PATH); without
//! it the browser tests fail saying how to install it. Every page a test visits is checked
//! for errors (the console's own `window.annalsErrors`, which gathers uncaught errors,
//! unhandled rejections, CSP violations and `console.error`, and chromedriver's browser
//! log, which has failed requests too) and saved as a screenshot in
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`. Nothing is written into the source tree,
//! but the README's screenshot when [`SCREENSHOT_VARIABLE`] asks for it.

use eventstore::{ExpectedVersion, NewEvent, StreamId};
use fantoccini::Locator;
use fantoccini::key::Key;
use security::Role;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use test_support::NatsServer;

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
    visit_operator_pages(&platform, &browser, async |_| {}).await;
    browser.close().await;
    platform.stop().await;
}

/// What the overview shows once every card has loaded.
const OVERVIEW_LOADED: &str = "main:has(#log-head):has(#ready-status):has(#relay-card > *:not(.muted))\
    :has(#models-card table):has(#sagas-card table):has(#slo-card table)";

/// Each page of an operator: its name, its route, and what it shows once loaded. The
/// stream, event and saga are the platform's order's; the event's correlation is kept.
async fn operator_pages(platform: &Platform) -> Vec<(&'static str, String, &'static str)> {
    let order_stream = format!("order-{}", platform.order_id);
    let first_event = platform
        .get(&format!("/api/v1/streams/{order_stream}"))
        .await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    vec![
        ("overview", "#/".to_owned(), OVERVIEW_LOADED),
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
        (
            "event",
            format!("#/event/{first_event}"),
            "#correlation-table",
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
        ("relay", "#/relay".to_owned(), "#outbox :is(#relay-off, dl)"),
    ]
}

/// Visits each of [`operator_pages`] and waits until it has loaded; `check` looks at it
/// (given its name), then the page is saved and checked for errors.
async fn visit_operator_pages(platform: &Platform, browser: &Browser, check: impl AsyncFn(&str)) {
    for (name, hash, ready) in operator_pages(platform).await {
        browser.visit(&hash).await;
        browser.wait_for(ready).await;
        check(name).await;
        browser.page_is_clean(name).await;
    }
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

/// On a phone-sized screen every page of an operator fits the screen's width (nothing
/// scrolls sideways), every navigation link is on the screen, and the page's heading and
/// content show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_every_page_fits_the_screen() {
    let (_turn, _dir, platform, browser) = session("phone", true, PHONE, |p| &p.operator).await;
    visit_operator_pages(&platform, &browser, async |name| {
        fits_a_phone(&browser, name).await;
    })
    .await;
    browser.close().await;
    platform.stop().await;
}

/// Checks that the page `name` fits a phone's screen: nothing wider than the screen,
/// every navigation link on it, the heading on the first screen and content under it.
async fn fits_a_phone(browser: &Browser, name: &str) {
    let layout = browser.layout().await;
    let width = layout["width"].as_f64().unwrap();
    assert_eq!(width, f64::from(PHONE.0), "{name}: the window's width");
    assert!(
        layout["scroll_width"].as_f64().unwrap() <= width,
        "{name}: the page is wider than the screen; too wide: {:#}",
        layout["too_wide"]
    );
    let links = layout["nav"].as_array().unwrap();
    assert!(links.len() >= 6, "{name}: the navigation: {links:?}");
    for link in links {
        assert!(
            link["shown"] == true && link["right"].as_f64().unwrap() <= width,
            "{name}: a navigation link off the screen: {link}"
        );
    }
    let heading = &layout["heading"];
    assert!(
        heading["shown"] == true && heading["top"].as_f64().unwrap() < f64::from(PHONE.1),
        "{name}: the heading is not on the first screen: {heading}"
    );
    assert!(
        layout["content"]["shown"] == true,
        "{name}: the page shows nothing under its heading: {}",
        layout["content"]
    );
}

/// With the keyboard alone: from a fresh page, Tab goes through the skip link, the
/// navigation links in order and the sign-out button, each showing a focus indicator;
/// the skip link takes the focus to the page's heading, and Shift+Tab from there back to
/// the navigation; Enter on a link opens its page with the focus on its heading; Tab
/// reaches a read model's rebuild button, Space starts the rebuild, it completes, and
/// the button keeps the focus all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_usable_with_the_keyboard() {
    let (_turn, _dir, platform, browser) =
        session("keyboard", false, DESKTOP, |p| &p.operator).await;
    let pages = browser.fresh_page().await;

    // Tab through the header.
    let mut stops = Vec::new();
    for _ in 0..20 {
        browser.press(&[Key::Tab]).await;
        let focused = browser.focused().await;
        assert!(
            focused["indicated"] == true,
            "no focus indicator on {focused}"
        );
        let last = focused["id"] == "sign-out";
        stops.push(focused);
        if last {
            break;
        }
    }
    assert_eq!(stops[0]["id"], "skip", "the first stop: {stops:#?}");
    let visited: Vec<String> = stops
        .iter()
        .filter_map(|stop| stop["page"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(visited, pages, "the navigation links in order: {stops:#?}");
    assert_eq!(stops.last().unwrap()["id"], "sign-out", "{stops:#?}");
    browser.page_is_clean("header").await;

    // The skip link, then back to the navigation.
    browser.fresh_page().await;
    browser.press(&[Key::Tab]).await;
    browser.press(&[Key::Enter]).await;
    browser
        .wait_focus("the overview's heading", |focused| {
            focused["tag"] == "h1" && focused["text"] == "Overview"
        })
        .await;
    for _ in 0..20 {
        browser.press(&[Key::Shift, Key::Tab]).await;
        if browser.focused().await["page"] == "read-models" {
            break;
        }
    }
    let focused = browser.focused().await;
    assert_eq!(focused["page"], "read-models", "{focused}");
    assert!(focused["indicated"] == true, "{focused}");

    // Enter opens the page; its heading has the focus.
    browser.press(&[Key::Enter]).await;
    browser
        .wait_focus("the read models' heading", |focused| {
            focused["tag"] == "h1" && focused["text"] == "Read models"
        })
        .await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.fragment(), Some("/read-models"));

    // Tab to the rebuild button; Space starts the rebuild.
    let name = read_models::ORDERS;
    let button = format!("rebuild-{name}");
    browser.wait_for(&format!("#{button}")).await;
    for _ in 0..40 {
        browser.press(&[Key::Tab]).await;
        let focused = browser.focused().await;
        assert!(
            focused["indicated"] == true,
            "no focus indicator on {focused}"
        );
        if focused["id"] == button.as_str() {
            break;
        }
    }
    assert_eq!(browser.focused().await["id"], button.as_str());
    let before = model(&platform, name).await["active_build"].clone();
    browser.press(&[Key::Space]).await;
    browser.wait_for(&format!("#rebuilt-{name}")).await;
    let after = model(&platform, name).await;
    assert_ne!(after["active_build"], before, "a new build took over");
    let focused = browser.focused().await;
    assert_eq!(focused["id"], button.as_str(), "the button keeps the focus");
    browser.page_is_clean("rebuilt").await;
    browser.close().await;
    platform.stop().await;
}

/// A read model that meets an event it cannot apply (a deposit into an account that was
/// never opened, written past the domain's checks) faults; the read models page shows it
/// faulted at that event, with its type, its stream and a link to it, and the overview
/// shows it faulted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulted_read_model_shows_the_event_it_failed_on() {
    let (_turn, _dir, platform, browser) =
        session("faulted", false, DESKTOP, |p| &p.operator).await;
    let deposit = payments::Event::Deposited { amount: 7 };
    let position = platform
        .store
        .append(
            &StreamId::new("account-ghost").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "Deposited",
                postcard::to_allocvec(&deposit).unwrap(),
            )],
        )
        .await
        .unwrap()
        .first_position
        .0;
    let name = read_models::ACCOUNTS;
    let faulted = model_when(&platform, name, |model| model["state"] == "faulted").await;
    assert_eq!(faulted["fault_position"], position, "{faulted}");
    let event_id = platform
        .get(&format!("/api/v1/log?from={position}&limit=1"))
        .await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    browser.visit("#/read-models").await;
    let shown = browser
        .wait_text(&format!("#fault-{name}"), "the fault", |text| {
            text.contains(&format!("at position {position}"))
        })
        .await;
    for expected in ["Deposited", "account-ghost", "not open"] {
        assert!(shown.contains(expected), "{expected} in {shown:?}");
    }
    let heading = browser.texts(&format!("[data-model={name}] h2")).await;
    assert_eq!(heading, [format!("{name} faulted")]);
    let link = browser.wait_for(&format!("#fault-event-{name}")).await;
    assert_eq!(
        link.attr("href").await.unwrap().unwrap(),
        format!("#/event/{event_id}")
    );
    browser.page_is_clean("read-models").await;
    link.click().await.unwrap();
    browser
        .wait_text("#event-type", "the event's type", |text| {
            text == "Deposited"
        })
        .await;
    browser
        .wait_text("#event-stream", "the event's stream", |text| {
            text == "account-ghost"
        })
        .await;
    browser.page_is_clean("event").await;
    browser.visit("#/").await;
    browser
        .wait_text("#models-card", "the model faulted", |text| {
            text.contains("faulted")
        })
        .await;
    browser.page_is_clean("overview").await;
    browser.close().await;
    platform.stop().await;
}

/// One projection's status once `holds` is true of it (polling the API).
async fn model_when(platform: &Platform, name: &str, holds: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = model(platform, name).await;
        if holds(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} did not get there: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Set to a path (relative to the workspace's root, e.g. `docs/console-overview.png`),
/// [`the_relay_page_follows_the_relay_through_a_nats_outage`] places forty orders over
/// half a minute instead of five at once, and saves its overview there: the README's
/// screenshot.
const SCREENSHOT_VARIABLE: &str = "ANNALS_CONSOLE_SCREENSHOT";

/// With a relay to a real nats-server: orders go through the saga (one cancelled: more
/// apples than there are) and the overview shows them by phase with the relay caught up;
/// the relay page shows its checkpoint at the log's head, no backlog, its breaker closed.
/// With nats-server stopped, events appended meanwhile wait in the backlog and the page
/// shows the relay degraded and its breaker open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_page_follows_the_relay_through_a_nats_outage() {
    let mut nats = NatsServer::start();
    let setup = Setup {
        correlations: true,
        nats_url: Some(nats.url()),
        ..Setup::default()
    };
    let (_turn, _dir, platform, browser) =
        session_with("relay", setup, DESKTOP, |p| &p.operator).await;
    let screenshot = std::env::var_os(SCREENSHOT_VARIABLE).map(|path| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    });
    if screenshot.is_some() {
        // Tall enough for every card of the overview.
        browser.client.set_window_size(1280, 1000).await.unwrap();
    }
    browser.visit("#/").await;
    let count = if screenshot.is_some() { 40 } else { 5 };
    let mut confirmed = Vec::new();
    for number in 0..count {
        confirmed.push(platform.place_order(1 + number % 3).await);
        if screenshot.is_some() {
            // Not a wait for anything: the load is spread out so that the overview's
            // chart of events per second has a shape.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let cancelled = platform.place_order(5_000).await;
    for order_id in &confirmed {
        platform.saga_ends(order_id, "confirmed").await;
    }
    platform.saga_ends(&cancelled, "cancelled").await;
    let head = platform.log_head().await;
    let relay = platform.get("/api/v1/outbox").await;
    browser
        .wait_text(
            "#sagas-card [data-phase=confirmed]",
            "the orders confirmed",
            |text| text == (count + 1).to_string(),
        )
        .await;
    browser
        .wait_text(
            "#sagas-card [data-phase=cancelled]",
            "the order cancelled",
            |text| text == "1",
        )
        .await;
    browser
        .wait_text("#relay-checkpoint", "the relay caught up", |text| {
            text == head.to_string()
        })
        .await;
    browser
        .wait_text("#log-head", "the log's head", |text| {
            text == head.to_string()
        })
        .await;
    browser.page_is_clean("overview").await;
    if let Some(path) = screenshot {
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("the overview is saved as {}", path.display());
    }

    browser.visit("#/relay").await;
    browser
        .wait_text("#relay-checkpoint", "the relay caught up", |text| {
            text == head.to_string()
        })
        .await;
    browser
        .wait_text("#relay-backlog", "no backlog", |text| text == "0 events")
        .await;
    browser
        .wait_text("#relay-breaker", "the breaker closed", |text| {
            text == "closed"
        })
        .await;
    browser
        .wait_text("#relay-health", "the relay healthy", |text| {
            text == "healthy"
        })
        .await;
    assert!(relay["relay"]["published"].as_u64().unwrap() > 0, "{relay}");
    browser.page_is_clean("relay").await;

    nats.stop();
    let admin = token("root", &[Role::Admin], None);
    for amount in 1..=3 {
        platform
            .send(
                &admin,
                "/api/v1/payments/accounts/alice/deposits",
                json!({ "amount": amount }),
            )
            .await;
    }
    browser
        .wait_text("#relay-backlog", "the backlog of the deposits", |text| {
            text.trim_end_matches(" events")
                .parse::<u64>()
                .is_ok_and(|backlog| backlog >= 3)
        })
        .await;
    browser
        .wait_text("#relay-health", "the relay degraded", |text| {
            text.starts_with("degraded")
        })
        .await;
    browser
        .wait_text("#relay-breaker", "the breaker open", |text| text == "open")
        .await;
    browser.page_is_clean("relay-outage").await;
    browser.close().await;
    platform.stop().await;
}

/// On a server without authentication (as `annals serve` runs on loopback with no token
/// source) the console asks for no token, says so, and every page loads cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_the_console_asks_for_no_token() {
    let setup = Setup {
        correlations: true,
        open: true,
        ..Setup::default()
    };
    let (_turn, _dir, platform, browser) =
        session_with("open", setup, DESKTOP, |p| &p.operator).await;
    browser
        .wait_text("#subject", "no authentication", |text| {
            text == "no authentication"
        })
        .await;
    let asked = browser.texts("#token, #sign-in, #sign-out").await;
    assert!(asked.is_empty(), "{asked:?}");
    visit_operator_pages(&platform, &browser, async |_| {}).await;
    browser.close().await;
    platform.stop().await;
}
