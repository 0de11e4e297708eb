//! The HTTP API against a real listening server (and, where it reads better, `oneshot`
//! on the router): every route's happy path, bad input on every command route, generated
//! input, concurrency, restart and idempotency.

mod common;

mod support {
    use std::path::Path;

    use api::{ApiConfig, AppState, Problem};
    use eventstore::EventStore;

    use crate::common::Serving;
    use serde_json::Value;
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    /// A server on a free loopback port over a store in `dir`.
    pub struct TestServer {
        pub base: String,
        pub client: reqwest::Client,
        pub store: EventStore,
        pub state: AppState,
        serving: Serving,
        /// The outbox relay running beside the server, if any: its stop token and task.
        relay: Option<(CancellationToken, JoinHandle<Result<(), outbox::Error>>)>,
    }

    pub use crate::common::store_config;

    impl TestServer {
        pub async fn start(dir: &Path) -> Self {
            Self::start_with(dir, ApiConfig::default()).await
        }

        pub async fn start_with(dir: &Path, config: ApiConfig) -> Self {
            Self::start_full(dir, config, None).await
        }

        /// A server that also runs the outbox relay with `relay`, as `annals serve
        /// --nats-url` does.
        pub async fn start_with_relay(dir: &Path, relay: outbox::RelayConfig) -> Self {
            Self::start_full(dir, ApiConfig::default(), Some(relay)).await
        }

        async fn start_full(
            dir: &Path,
            config: ApiConfig,
            relay: Option<outbox::RelayConfig>,
        ) -> Self {
            let store = crate::common::open_store(dir).await;
            let mut state = AppState::new(store.clone(), config);
            let relay = relay.map(|relay_config| {
                let relay = outbox::Relay::new(store.clone(), relay_config).expect("the relay");
                state = state.clone().with_relay(relay.status());
                let stop = CancellationToken::new();
                (stop.clone(), tokio::spawn(relay.run(stop)))
            });
            let serving = Serving::start(state.clone()).await;
            TestServer {
                base: serving.base.clone(),
                client: reqwest::Client::new(),
                store,
                state,
                serving,
                relay,
            }
        }

        /// Graceful shutdown, then the relay stops, then the store closes.
        pub async fn stop(self) {
            self.serving.drain().await;
            if let Some((stop, task)) = self.relay {
                stop.cancel();
                tokio::time::timeout(std::time::Duration::from_secs(20), task)
                    .await
                    .expect("the relay stops")
                    .unwrap()
                    .expect("the relay ends without a store error");
            }
            self.store.close().await;
        }

        pub fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// The log's end: it moves only when something was written.
        pub fn head(&self) -> u64 {
            self.store.next_position().0
        }

        pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
            self.post_with(path, body, &[]).await
        }

        pub async fn post_with(
            &self,
            path: &str,
            body: &Value,
            headers: &[(&str, &str)],
        ) -> reqwest::Response {
            let mut request = self.client.post(self.url(path)).json(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send().await.unwrap()
        }

        pub async fn post_raw(
            &self,
            path: &str,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> reqwest::Response {
            let mut request = self.client.post(self.url(path)).body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.send().await.unwrap()
        }

        pub async fn get(&self, path: &str) -> reqwest::Response {
            self.client.get(self.url(path)).send().await.unwrap()
        }

        /// POSTs and expects `status`; returns the JSON body.
        pub async fn command(&self, path: &str, body: Value, status: u16) -> Value {
            let response = self.post(path, &body).await;
            assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
            response.json().await.unwrap()
        }

        pub async fn get_json(&self, path: &str) -> Value {
            let response = self.get(path).await;
            assert_eq!(response.status().as_u16(), 200, "GET {path}");
            response.json().await.unwrap()
        }

        /// A sku with `quantity` units, an account with `balance`.
        pub async fn seed(&self, sku: &str, quantity: u64, customer: &str, balance: u64) {
            self.command(
                "/api/v1/inventory/skus",
                serde_json::json!({"sku": sku, "name": "Thing", "unit_price": 120}),
                201,
            )
            .await;
            if quantity > 0 {
                self.command(
                    &format!("/api/v1/inventory/skus/{sku}/restock"),
                    serde_json::json!({"quantity": quantity}),
                    200,
                )
                .await;
            }
            self.command(
                "/api/v1/payments/accounts",
                serde_json::json!({"customer_id": customer}),
                201,
            )
            .await;
            if balance > 0 {
                self.command(
                    &format!("/api/v1/payments/accounts/{customer}/deposits"),
                    serde_json::json!({"amount": balance}),
                    200,
                )
                .await;
            }
        }

        pub async fn place_order(&self, customer: &str, sku: &str) -> String {
            let body = self
                .command(
                    "/api/v1/orders",
                    serde_json::json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}]}),
                    201,
                )
                .await;
            body["order_id"].as_str().unwrap().to_owned()
        }
    }

    /// Asserts a problem+json answer with `status`; returns it.
    pub async fn expect_problem(response: reqwest::Response, status: u16, what: &str) -> Problem {
        assert_eq!(response.status().as_u16(), status, "{what}");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{what}"
        );
        let problem: Problem = response.json().await.unwrap();
        assert_eq!(problem.status, status, "{what}");
        assert!(
            problem.problem_type.starts_with("urn:annals:problem:"),
            "{what}"
        );
        assert!(
            !problem.title.is_empty() && !problem.detail.is_empty(),
            "{what}"
        );
        problem
    }

    pub fn etag(response: &reqwest::Response) -> String {
        response.headers()["etag"].to_str().unwrap().to_owned()
    }
}

mod happy_paths {
    use serde_json::json;

    use crate::support::{TestServer, etag};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inventory_payments_and_orders() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;

        let response = server
            .post(
                "/api/v1/inventory/skus",
                &json!({"sku": "apple", "name": "Apple", "unit_price": 120}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
        assert_eq!(etag(&response), "\"0\"");
        assert_eq!(
            response.headers()["location"],
            "/api/v1/inventory/skus/apple"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"stream": "stock-apple", "version": 0, "position": 0})
        );

        let response = server
            .post(
                "/api/v1/inventory/skus/apple/restock",
                &json!({"quantity": 10}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(etag(&response), "\"1\"");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"stream": "stock-apple", "version": 1, "position": 1})
        );

        let response = server.get("/api/v1/inventory/skus/apple").await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(etag(&response), "\"1\"");
        let sku: serde_json::Value = response.json().await.unwrap();
        assert_eq!(sku["name"], "Apple");
        assert_eq!(sku["unit_price"], 120);
        assert_eq!(sku["on_hand"], 10);
        assert_eq!(sku["available"], 10);
        assert_eq!(sku["version"], 1);

        let not_modified = server
            .client
            .get(server.url("/api/v1/inventory/skus/apple"))
            .header("if-none-match", "\"1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(not_modified.status().as_u16(), 304);

        let opened = server
            .command(
                "/api/v1/payments/accounts",
                json!({"customer_id": "alice"}),
                201,
            )
            .await;
        assert_eq!(opened["stream"], "account-alice");
        let deposited = server
            .command(
                "/api/v1/payments/accounts/alice/deposits",
                json!({"amount": 5000}),
                200,
            )
            .await;
        assert_eq!(deposited["version"], 1);
        let account = server.get_json("/api/v1/payments/accounts/alice").await;
        assert_eq!(account["balance"], 5000);
        assert_eq!(account["customer_id"], "alice");

        let response = server
            .post(
                "/api/v1/orders",
                &json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 3}]}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
        assert_eq!(etag(&response), "\"0\"");
        let placed: serde_json::Value = response.json().await.unwrap();
        let order_id = placed["order_id"].as_str().unwrap().to_owned();
        let uuid = uuid::Uuid::parse_str(&order_id).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(placed["stream"], format!("order-{order_id}"));
        assert_eq!(placed["version"], 0);
        assert_eq!(placed["position"], 4);

        let order = server.get_json(&format!("/api/v1/orders/{order_id}")).await;
        assert_eq!(order["status"], "pending");
        assert_eq!(order["lines"], json!([{"sku": "apple", "quantity": 3}]));

        let cancelled = server
            .command(
                &format!("/api/v1/orders/{order_id}/cancel"),
                json!({"reason": "changed my mind"}),
                200,
            )
            .await;
        assert_eq!(cancelled["version"], 1);
        let order = server.get_json(&format!("/api/v1/orders/{order_id}")).await;
        assert_eq!(order["status"], "cancelled");
        assert_eq!(order["cancel_reason"], "changed my mind");

        // The stream and the log, with decoded payloads.
        let stream = server.get_json("/api/v1/streams/stock-apple").await;
        assert_eq!(stream["last_version"], 1);
        assert_eq!(stream["next_from"], 2);
        let events = stream["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "SkuRegistered");
        assert_eq!(events[0]["payload_encoding"], "json");
        assert_eq!(
            events[0]["payload"],
            json!({"sku": "apple", "name": "Apple", "unit_price": 120})
        );
        assert_eq!(events[1]["payload"], json!({"quantity": 10}));
        // The payload's schema is named, and served.
        assert_eq!(
            events[0]["payload_schema"],
            "urn:annals:schema:event:SkuRegistered:1"
        );
        let schema = server
            .get_json("/api/v1/schemas/events/SkuRegistered/1")
            .await;
        assert_eq!(schema["$id"], events[0]["payload_schema"]);

        let page = server
            .get_json("/api/v1/streams/stock-apple?from=1&limit=5")
            .await;
        assert_eq!(page["events"].as_array().unwrap().len(), 1);

        let log = server.get_json("/api/v1/log").await;
        let events = log["events"].as_array().unwrap();
        assert_eq!(events.len(), 6);
        for (position, event) in events.iter().enumerate() {
            assert_eq!(event["position"], position as u64);
            assert_eq!(event["payload_encoding"], "json");
        }
        assert_eq!(log["next_from"], 6);
        assert_eq!(log["next_position"], 6);
        let page = server.get_json("/api/v1/log?from=4&limit=1").await;
        assert_eq!(page["events"][0]["type"], "OrderPlaced");
        assert_eq!(page["next_from"], 5);

        let missing = server.get("/api/v1/streams/stock-pear").await;
        crate::support::expect_problem(missing, 404, "unknown stream").await;

        // The streams, by category, and one event by its id.
        let streams = server.get_json("/api/v1/streams?category=stock").await;
        assert_eq!(
            streams,
            json!({"streams": [{"stream": "stock-apple", "last_version": 1}], "next_after": null})
        );
        let all = server.get_json("/api/v1/streams").await;
        assert_eq!(all["streams"].as_array().unwrap().len(), 3);
        let id = events[4]["id"].as_str().unwrap();
        let event = server.get_json(&format!("/api/v1/events/{id}")).await;
        assert_eq!(&event, &events[4]);
        let unknown = server
            .get("/api/v1/events/01900000-0000-7000-8000-000000000000")
            .await;
        crate::support::expect_problem(unknown, 404, "unknown event").await;
        let malformed = server.get("/api/v1/events/not-a-uuid").await;
        crate::support::expect_problem(malformed, 400, "malformed event id").await;

        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_list_pages_through_every_stream_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let mut names = Vec::new();
        for n in 0..25 {
            let category = ["ledger", "note", "ledgerbook"][n % 3];
            let name = format!("{category}-{n:02}");
            server
                .store
                .append(
                    &eventstore::StreamId::new(name.as_str()).unwrap(),
                    eventstore::ExpectedVersion::NoStream,
                    vec![eventstore::NewEvent::new("Noted", vec![n as u8 + 1])],
                )
                .await
                .unwrap();
            names.push(name);
        }
        for (category, limit) in [
            (None, 1),
            (None, 7),
            (Some("ledger"), 4),
            (Some("note"), 100),
        ] {
            let mut listed: Vec<String> = Vec::new();
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut url = format!("/api/v1/streams?limit={limit}");
                if let Some(category) = category {
                    url.push_str(&format!("&category={category}"));
                }
                if let Some(after) = &after {
                    url.push_str(&format!("&after={after}"));
                }
                let page = server.get_json(&url).await;
                let streams = page["streams"].as_array().unwrap();
                assert!(streams.len() <= limit, "{page}");
                listed.extend(
                    streams
                        .iter()
                        .map(|head| head["stream"].as_str().unwrap().to_owned()),
                );
                pages += 1;
                match page["next_after"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
            let mut expected: Vec<String> = names
                .iter()
                .filter(|name| {
                    category.is_none_or(|category| name.split('-').next() == Some(category))
                })
                .cloned()
                .collect();
            expected.sort();
            assert_eq!(listed, expected, "category {category:?}, pages of {limit}");
            assert_eq!(pages, expected.len().div_ceil(limit).max(1));
        }
        // The default page is 100 streams; the limit is checked like the other lists'.
        let all = server.get_json("/api/v1/streams").await;
        assert_eq!(all["streams"].as_array().unwrap().len(), 25);
        assert_eq!(all["next_after"], serde_json::Value::Null);
        let too_long = server.get("/api/v1/streams?limit=0").await;
        assert_eq!(too_long.status().as_u16(), 400);
        let bad_after = server.get("/api/v1/streams?after=%20x").await;
        assert_eq!(bad_after.status().as_u16(), 400);
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_categories_show_payloads_as_hex() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let stream = eventstore::StreamId::new("ledger-1").unwrap();
        server
            .store
            .append(
                &stream,
                eventstore::ExpectedVersion::NoStream,
                vec![eventstore::NewEvent::new("Noted", vec![0xde, 0xad])],
            )
            .await
            .unwrap();
        let page = server.get_json("/api/v1/streams/ledger-1").await;
        assert_eq!(page["events"][0]["payload_encoding"], "hex");
        assert_eq!(page["events"][0]["payload"], "dead");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let health = server.get_json("/healthz").await;
        assert_eq!(health["status"], "alive");
        let ready = server.get_json("/readyz").await;
        assert_eq!(ready["status"], "ready");
        assert_eq!(ready["next_position"], 0);
        // Once the shutdown begins, the server stops being ready.
        server.state.shutdown_token().cancel();
        let app = api::app(server.state.clone());
        let answer = tower::ServiceExt::oneshot(
            app,
            axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(answer.status().as_u16(), 503);
        server.stop().await;
    }
}

mod live {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::support::TestServer;

    /// Reads SSE `data:` lines until `count` events arrived.
    async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<(u64, Value)> {
        let mut buffer = String::new();
        let mut events = Vec::new();
        while events.len() < count {
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .expect("an event arrives")
                .unwrap()
                .expect("the stream goes on");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse::<u64>().unwrap());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str::<Value>(value.trim()).unwrap());
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    events.push((id, data));
                }
            }
        }
        events
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follows_the_log_from_a_position_then_live_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        server.seed("apple", 5, "alice", 0).await; // positions 0, 1, 2

        let mut response = server.get("/api/v1/log/live?from=1").await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let first = read_events(&mut response, 2).await;
        assert_eq!(first[0].0, 1);
        assert_eq!(first[0].1["type"], "Restocked");
        assert_eq!(first[1].1["type"], "AccountOpened");

        server
            .command(
                "/api/v1/inventory/skus/apple/restock",
                json!({"quantity": 1}),
                200,
            )
            .await;
        let live = read_events(&mut response, 1).await;
        assert_eq!(live[0].0, 3);
        assert_eq!(live[0].1["payload"], json!({"quantity": 1}));

        // Resuming after a Last-Event-ID.
        let mut resumed = server
            .client
            .get(server.url("/api/v1/log/live"))
            .header("last-event-id", "2")
            .send()
            .await
            .unwrap();
        let again = read_events(&mut resumed, 1).await;
        assert_eq!(again[0].0, 3);

        // An open live stream does not hold the graceful shutdown up.
        server.stop().await;
        drop(response);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_positions_are_400() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        for path in ["/api/v1/log/live?from=abc", "/api/v1/log/live?since=0"] {
            crate::support::expect_problem(server.get(path).await, 400, path).await;
        }
        // Well formed, but beyond the end of the log.
        let path = "/api/v1/log/live?from=5";
        crate::support::expect_problem(server.get(path).await, 422, path).await;
        let response = server
            .client
            .get(server.url("/api/v1/log/live"))
            .header("last-event-id", "x")
            .send()
            .await
            .unwrap();
        crate::support::expect_problem(response, 400, "bad Last-Event-ID").await;
        server.stop().await;
    }
}

mod bad_input {
    use serde_json::{Value, json};

    use crate::support::{TestServer, expect_problem};

    /// A command route: its path, a valid body, a body with a wrongly typed field and
    /// paths with bad ids.
    struct Route {
        path: String,
        valid: Value,
        wrong_type: Value,
        bad_paths: Vec<String>,
    }

    fn routes(order_id: &str) -> Vec<Route> {
        vec![
            Route {
                path: "/api/v1/inventory/skus".into(),
                valid: json!({"sku": "pear", "name": "Pear", "unit_price": 90}),
                wrong_type: json!({"sku": "pear", "name": "Pear", "unit_price": "90"}),
                bad_paths: vec![],
            },
            Route {
                path: "/api/v1/inventory/skus/apple/restock".into(),
                valid: json!({"quantity": 1}),
                wrong_type: json!({"quantity": -1}),
                bad_paths: vec![
                    "/api/v1/inventory/skus/bad%20sku/restock".into(),
                    "/api/v1/inventory/skus/%C3%A4pfel/restock".into(),
                    format!("/api/v1/inventory/skus/{}/restock", "a".repeat(65)),
                    "/api/v1/inventory/skus/-x/restock".into(),
                    "/api/v1/inventory/skus/%FF/restock".into(),
                ],
            },
            Route {
                path: "/api/v1/payments/accounts".into(),
                valid: json!({"customer_id": "bob"}),
                wrong_type: json!({"customer_id": 7}),
                bad_paths: vec![],
            },
            Route {
                path: "/api/v1/payments/accounts/alice/deposits".into(),
                valid: json!({"amount": 100}),
                wrong_type: json!({"amount": 1.5}),
                bad_paths: vec![
                    "/api/v1/payments/accounts/al%00ice/deposits".into(),
                    "/api/v1/payments/accounts/a%2Fb/deposits".into(),
                ],
            },
            Route {
                path: "/api/v1/orders".into(),
                valid: json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 1}]}),
                wrong_type: json!({"customer_id": "alice", "lines": {"sku": "apple"}}),
                bad_paths: vec![],
            },
            Route {
                path: format!("/api/v1/orders/{order_id}/cancel"),
                valid: json!({"reason": "no"}),
                wrong_type: json!({"reason": null}),
                bad_paths: vec![
                    "/api/v1/orders/not-a-uuid/cancel".into(),
                    "/api/v1/orders/12345/cancel".into(),
                ],
            },
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_command_route_refuses_bad_input_with_4xx_problems_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = api::ApiConfig {
            max_body_bytes: 1024,
            ..api::ApiConfig::default()
        };
        let server = TestServer::start_with(dir.path(), config).await;
        server.seed("apple", 5, "alice", 500).await;
        let order_id = server.place_order("alice", "apple").await;
        let head = server.head();

        for route in routes(&order_id) {
            let path = route.path.as_str();
            let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
                (
                    "malformed JSON",
                    Some("application/json"),
                    b"{\"a\":".to_vec(),
                    400,
                ),
                (
                    "not JSON at all",
                    Some("application/json"),
                    b"hello".to_vec(),
                    400,
                ),
                (
                    "trailing garbage",
                    Some("application/json"),
                    {
                        let mut body = serde_json::to_vec(&route.valid).unwrap();
                        body.extend_from_slice(b" x");
                        body
                    },
                    400,
                ),
                ("empty body", Some("application/json"), Vec::new(), 400),
                (
                    "a JSON array",
                    Some("application/json"),
                    b"[]".to_vec(),
                    400,
                ),
                (
                    "the object's values as an array",
                    Some("application/json"),
                    {
                        let values: Vec<Value> =
                            route.valid.as_object().unwrap().values().cloned().collect();
                        serde_json::to_vec(&values).unwrap()
                    },
                    400,
                ),
                (
                    "a JSON string",
                    Some("application/json"),
                    b"\"x\"".to_vec(),
                    400,
                ),
                (
                    "wrong types",
                    Some("application/json"),
                    serde_json::to_vec(&route.wrong_type).unwrap(),
                    400,
                ),
                (
                    "missing fields",
                    Some("application/json"),
                    b"{}".to_vec(),
                    400,
                ),
                (
                    "unknown field",
                    Some("application/json"),
                    {
                        let mut body = route.valid.clone();
                        body["surprise"] = json!(1);
                        serde_json::to_vec(&body).unwrap()
                    },
                    400,
                ),
                (
                    "oversize body",
                    Some("application/json"),
                    {
                        let mut body = route.valid.clone();
                        body["padding"] = json!("x".repeat(2048));
                        serde_json::to_vec(&body).unwrap()
                    },
                    413,
                ),
                (
                    "text/plain",
                    Some("text/plain"),
                    serde_json::to_vec(&route.valid).unwrap(),
                    415,
                ),
                (
                    "no content type",
                    None,
                    serde_json::to_vec(&route.valid).unwrap(),
                    415,
                ),
                (
                    "form content type",
                    Some("application/x-www-form-urlencoded"),
                    b"a=b".to_vec(),
                    415,
                ),
            ];
            for (what, content_type, body, status) in cases {
                let response = server.post_raw(path, content_type, body).await;
                expect_problem(response, status, &format!("{what} on {path}")).await;
            }
            for bad_path in &route.bad_paths {
                let response = server.post(bad_path, &route.valid).await;
                expect_problem(response, 400, &format!("bad id in {bad_path}")).await;
            }
            // Bad headers.
            for (name, value) in [
                ("if-match", "\"3"),
                ("if-match", "W/\"3\""),
                ("if-match", "*"),
                ("idempotency-key", ""),
                ("idempotency-key", "has space"),
            ] {
                let response = server.post_with(path, &route.valid, &[(name, value)]).await;
                expect_problem(response, 400, &format!("{name}: {value} on {path}")).await;
            }
        }
        // Ids in bodies are checked like ids in paths.
        for (path, body) in [
            (
                "/api/v1/inventory/skus",
                json!({"sku": "a b", "name": "x", "unit_price": 1}),
            ),
            (
                "/api/v1/inventory/skus",
                json!({"sku": "", "name": "x", "unit_price": 1}),
            ),
            ("/api/v1/payments/accounts", json!({"customer_id": "x/y"})),
            (
                "/api/v1/orders",
                json!({"customer_id": "alice", "lines": [{"sku": "ä", "quantity": 1}]}),
            ),
        ] {
            expect_problem(server.post(path, &body).await, 400, &format!("{body}")).await;
        }
        assert_eq!(server.head(), head, "bad input wrote nothing");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn domain_rules_not_found_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        server.seed("apple", 5, "alice", 500).await;
        let head = server.head();
        let cases: Vec<(&str, Value, u16, &str)> = vec![
            (
                "/api/v1/inventory/skus/apple/restock",
                json!({"quantity": 0}),
                422,
                "zero-quantity",
            ),
            (
                "/api/v1/inventory/skus",
                json!({"sku": "pear", "name": " ", "unit_price": 1}),
                422,
                "blank-name",
            ),
            (
                "/api/v1/inventory/skus",
                json!({"sku": "pear", "name": "Pear", "unit_price": 0}),
                422,
                "zero-price",
            ),
            (
                "/api/v1/inventory/skus",
                json!({"sku": "apple", "name": "Apple", "unit_price": 1}),
                409,
                "sku-already-registered",
            ),
            (
                "/api/v1/inventory/skus/pear/restock",
                json!({"quantity": 1}),
                404,
                "unknown-sku",
            ),
            // Every integer of a body is an int64 (the document's format): above it, a
            // 400 before any domain rule.
            (
                "/api/v1/inventory/skus/apple/restock",
                json!({"quantity": u64::MAX}),
                400,
                "invalid-body",
            ),
            (
                "/api/v1/payments/accounts",
                json!({"customer_id": "alice"}),
                409,
                "account-already-open",
            ),
            (
                "/api/v1/payments/accounts/bob/deposits",
                json!({"amount": 1}),
                404,
                "unknown-account",
            ),
            (
                "/api/v1/payments/accounts/alice/deposits",
                json!({"amount": 0}),
                422,
                "zero-amount",
            ),
            (
                "/api/v1/orders",
                json!({"customer_id": "alice", "lines": []}),
                422,
                "no-lines",
            ),
            (
                "/api/v1/orders",
                json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 0}]}),
                422,
                "zero-quantity",
            ),
            (
                "/api/v1/orders",
                json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 1}, {"sku": "apple", "quantity": 2}]}),
                422,
                "duplicate-sku",
            ),
            (
                "/api/v1/orders/0192d4e0-7b1a-7c3e-8f00-000000000000/cancel",
                json!({"reason": "x"}),
                404,
                "unknown-order",
            ),
        ];
        for (path, body, status, slug) in cases {
            let problem = expect_problem(server.post(path, &body).await, status, path).await;
            assert_eq!(
                problem.problem_type,
                format!("urn:annals:problem:{slug}"),
                "{path} {body}"
            );
        }
        let order_id = server.place_order("alice", "apple").await;
        let head = head + 1;
        let cancel = format!("/api/v1/orders/{order_id}/cancel");
        expect_problem(
            server.post(&cancel, &json!({"reason": ""})).await,
            422,
            "blank reason",
        )
        .await;
        server.command(&cancel, json!({"reason": "no"}), 200).await;
        let problem = expect_problem(
            server.post(&cancel, &json!({"reason": "again"})).await,
            409,
            "not pending",
        )
        .await;
        assert!(problem.detail.contains("cancelled"), "{}", problem.detail);
        assert_eq!(
            server.head(),
            head + 1,
            "only the order and its cancel were written"
        );

        for path in [
            "/api/v1/inventory/skus/pear",
            "/api/v1/payments/accounts/bob",
            "/api/v1/orders/0192d4e0-7b1a-7c3e-8f00-000000000000",
            "/api/v1/nothing-here",
            "/nothing-here",
        ] {
            expect_problem(server.get(path).await, 404, path).await;
        }
        for path in [
            "/api/v1/inventory/skus/bad%20sku",
            "/api/v1/orders/nope",
            "/api/v1/streams/%20x",
        ] {
            expect_problem(server.get(path).await, 400, path).await;
        }
        for path in [
            "/api/v1/log?limit=0",
            "/api/v1/log?limit=1001",
            "/api/v1/log?from=-1",
            "/api/v1/log?form=1",
        ] {
            expect_problem(server.get(path).await, 400, path).await;
        }
        let response = server.get("/api/v1/orders").await;
        expect_problem(response, 405, "GET on a POST route").await;
        let response = server
            .client
            .delete(server.url("/api/v1/inventory/skus/apple"))
            .send()
            .await
            .unwrap();
        expect_problem(response, 405, "DELETE").await;
        server.stop().await;
    }
}

mod conditional {
    use serde_json::json;

    use crate::support::{TestServer, etag, expect_problem};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn if_match_makes_a_command_conditional() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        server.seed("apple", 5, "alice", 0).await; // stock-apple at version 1
        let path = "/api/v1/inventory/skus/apple/restock";
        let head = server.head();

        let stale = server
            .post_with(path, &json!({"quantity": 1}), &[("if-match", "\"0\"")])
            .await;
        assert_eq!(etag(&stale), "\"1\"", "a 412 names the current version");
        let problem = expect_problem(stale, 412, "stale If-Match").await;
        assert_eq!(
            problem.problem_type,
            "urn:annals:problem:precondition-failed"
        );
        assert_eq!(server.head(), head);

        let fresh = server
            .post_with(path, &json!({"quantity": 1}), &[("if-match", "\"1\"")])
            .await;
        assert_eq!(fresh.status().as_u16(), 200);
        assert_eq!(etag(&fresh), "\"2\"");

        // On a stream that does not exist, any version is stale.
        let response = server
            .post_with(
                "/api/v1/inventory/skus",
                &json!({"sku": "pear", "name": "Pear", "unit_price": 1}),
                &[("if-match", "\"0\"")],
            )
            .await;
        expect_problem(response, 412, "If-Match on a new sku").await;
        server.stop().await;
    }
}

mod concurrency {
    use std::sync::Arc;

    use serde_json::json;

    use crate::support::TestServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixty_four_clients_restocking_one_sku_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(TestServer::start(dir.path()).await);
        server.seed("apple", 0, "alice", 0).await;
        let mut clients = Vec::new();
        for quantity in 1..=64u64 {
            let server = server.clone();
            clients.push(tokio::spawn(async move {
                // A client of its own: its own connection.
                let client = reqwest::Client::new();
                let response = client
                    .post(server.url("/api/v1/inventory/skus/apple/restock"))
                    .json(&json!({"quantity": quantity}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                body["version"].as_u64().unwrap()
            }));
        }
        let mut versions = Vec::new();
        for client in clients {
            versions.push(client.await.unwrap());
        }
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=64).collect::<Vec<u64>>(),
            "each got its own version"
        );
        let sku = server.get_json("/api/v1/inventory/skus/apple").await;
        assert_eq!(sku["on_hand"], (1..=64u64).sum::<u64>());
        assert_eq!(sku["version"], 64);
        Arc::into_inner(server).unwrap().stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixty_four_clients_racing_if_match_on_one_order_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(TestServer::start(dir.path()).await);
        server.seed("apple", 5, "alice", 0).await;
        let order_id = server.place_order("alice", "apple").await;
        let mut clients = Vec::new();
        for client_number in 0..64 {
            let (server, order_id) = (server.clone(), order_id.clone());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let response = client
                    .post(server.url(&format!("/api/v1/orders/{order_id}/cancel")))
                    .header("if-match", "\"0\"")
                    .json(&json!({"reason": format!("client {client_number}")}))
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for client in clients {
            statuses.push(client.await.unwrap());
        }
        assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 1);
        assert_eq!(statuses.iter().filter(|&&status| status == 412).count(), 63);
        let order = server.get_json(&format!("/api/v1/orders/{order_id}")).await;
        assert_eq!(order["version"], 1);
        assert_eq!(order["status"], "cancelled");

        // The same on a sku that keeps moving: each version is won exactly once.
        let mut clients = Vec::new();
        for _ in 0..64 {
            let server = server.clone();
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                client
                    .post(server.url("/api/v1/inventory/skus/apple/restock"))
                    .header("if-match", "\"1\"")
                    .json(&json!({"quantity": 1}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut wins = 0;
        for client in clients {
            let status = client.await.unwrap();
            assert!(status == 200 || status == 412, "{status}");
            wins += usize::from(status == 200);
        }
        assert_eq!(wins, 1);
        Arc::into_inner(server).unwrap().stop().await;
    }
}

mod idempotency {
    use eventstore::{CommandOptions, Repository};
    use serde_json::json;

    use crate::support::{TestServer, etag, expect_problem};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_gets_the_first_response_and_another_body_is_422() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        server.seed("apple", 5, "alice", 500).await;
        let key = [("idempotency-key", "order-attempt-1")];
        let body = json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 2}]});

        let first = server.post_with("/api/v1/orders", &body, &key).await;
        assert_eq!(first.status().as_u16(), 201);
        let first_etag = etag(&first);
        let first_location = first.headers()["location"].clone();
        let first_body: serde_json::Value = first.json().await.unwrap();
        let head = server.head();

        for _ in 0..3 {
            let retry = server.post_with("/api/v1/orders", &body, &key).await;
            assert_eq!(retry.status().as_u16(), 201);
            assert_eq!(retry.headers()["idempotent-replayed"], "true");
            assert_eq!(etag(&retry), first_etag);
            assert_eq!(retry.headers()["location"], first_location);
            let retry_body: serde_json::Value = retry.json().await.unwrap();
            assert_eq!(retry_body, first_body);
        }
        assert_eq!(server.head(), head, "retries wrote nothing");

        // The quoted form of the key is the same key.
        let quoted = server
            .post_with(
                "/api/v1/orders",
                &body,
                &[("idempotency-key", "\"order-attempt-1\"")],
            )
            .await;
        assert_eq!(quoted.status().as_u16(), 201);
        assert_eq!(
            quoted.json::<serde_json::Value>().await.unwrap(),
            first_body
        );

        let other_body =
            json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 3}]});
        let problem = expect_problem(
            server.post_with("/api/v1/orders", &other_body, &key).await,
            422,
            "same key, other body",
        )
        .await;
        assert_eq!(
            problem.problem_type,
            "urn:annals:problem:idempotency-key-reused"
        );
        let other_route = server
            .post_with(
                "/api/v1/payments/accounts/alice/deposits",
                &json!({"amount": 1}),
                &key,
            )
            .await;
        expect_problem(other_route, 422, "same key, other route").await;
        assert_eq!(server.head(), head);

        // Concurrent first attempts with one key: one command, one answer.
        let key = [("idempotency-key", "deposit-1")];
        let deposit = "/api/v1/payments/accounts/alice/deposits";
        let ten = json!({"amount": 10});
        let answers =
            futures_util::future::join_all((0..8).map(|_| server.post_with(deposit, &ten, &key)))
                .await;
        let mut bodies = Vec::new();
        for answer in answers {
            assert_eq!(answer.status().as_u16(), 200);
            bodies.push(answer.json::<serde_json::Value>().await.unwrap());
        }
        assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
        let account = server.get_json("/api/v1/payments/accounts/alice").await;
        assert_eq!(account["balance"], 510);

        // A refused command is not recorded: the key may be used again.
        let key = [("idempotency-key", "too-much")];
        let refused = server
            .post_with(
                "/api/v1/inventory/skus/apple/restock",
                &json!({"quantity": 0}),
                &key,
            )
            .await;
        expect_problem(refused, 422, "refused").await;
        let accepted = server
            .post_with(
                "/api/v1/inventory/skus/apple/restock",
                &json!({"quantity": 1}),
                &key,
            )
            .await;
        assert_eq!(accepted.status().as_u16(), 200);
        server.stop().await;
    }

    /// The server stopped after a keyed command was appended but before its answer was
    /// recorded: the retry must not run it twice, and must name the same order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_after_a_crash_between_command_and_record_runs_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        server.seed("apple", 5, "alice", 500).await;

        let key = "crashed-order";
        let order_id = uuid::Uuid::now_v7().to_string();
        let command = orders::Command::PlaceOrder {
            order_id: order_id.clone(),
            customer_id: "alice".into(),
            lines: vec![orders::OrderLine {
                sku: "apple".into(),
                quantity: 1,
            }],
            shipping_address: None,
        };
        let options = CommandOptions {
            command_id: api::idempotency::command_id(key),
            ..CommandOptions::default()
        };
        let committed = Repository::<orders::Order>::new(server.store.clone())
            .execute(&order_id, &command, &options)
            .await
            .unwrap();
        let head = server.head();

        let body = json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 1}]});
        let retry = server
            .post_with("/api/v1/orders", &body, &[("idempotency-key", key)])
            .await;
        assert_eq!(retry.status().as_u16(), 201);
        let answer: serde_json::Value = retry.json().await.unwrap();
        assert_eq!(answer["order_id"], order_id);
        assert_eq!(answer["position"], committed.outcome.last_position.0);
        assert_eq!(
            server.head(),
            head + 1,
            "only the idempotency record was written"
        );

        // The same for a restock.
        let key = "crashed-restock";
        let options = CommandOptions {
            command_id: api::idempotency::command_id(key),
            ..CommandOptions::default()
        };
        Repository::<inventory::Stock>::new(server.store.clone())
            .execute(
                "apple",
                &inventory::Command::Restock { quantity: 7 },
                &options,
            )
            .await
            .unwrap();
        let retry = server
            .post_with(
                "/api/v1/inventory/skus/apple/restock",
                &json!({"quantity": 7}),
                &[("idempotency-key", key)],
            )
            .await;
        assert_eq!(retry.status().as_u16(), 200);
        let sku = server.get_json("/api/v1/inventory/skus/apple").await;
        assert_eq!(sku["on_hand"], 12, "the restock counted once");
        server.stop().await;
    }
}

mod restart {
    use serde_json::{Value, json};

    use crate::support::TestServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_commands_and_idempotency_records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let mut acknowledged: Vec<Value> = Vec::new();
        acknowledged.push(
            server
                .command(
                    "/api/v1/inventory/skus",
                    json!({"sku": "apple", "name": "Apple", "unit_price": 120}),
                    201,
                )
                .await,
        );
        for quantity in 1..=5 {
            acknowledged.push(
                server
                    .command(
                        "/api/v1/inventory/skus/apple/restock",
                        json!({"quantity": quantity}),
                        200,
                    )
                    .await,
            );
        }
        acknowledged.push(
            server
                .command(
                    "/api/v1/payments/accounts",
                    json!({"customer_id": "alice"}),
                    201,
                )
                .await,
        );
        let key = [("idempotency-key", "7d3c9a52-restart")];
        let order = json!({"customer_id": "alice", "lines": [{"sku": "apple", "quantity": 4}]});
        let first = server.post_with("/api/v1/orders", &order, &key).await;
        assert_eq!(first.status().as_u16(), 201);
        let first: Value = first.json().await.unwrap();
        acknowledged.push(first.clone());
        let head = server.head();
        server.stop().await;

        let server = TestServer::start(dir.path()).await;
        assert_eq!(server.head(), head);
        for ack in &acknowledged {
            let stream = ack["stream"].as_str().unwrap();
            let version = ack["version"].as_u64().unwrap();
            let page = server
                .get_json(&format!("/api/v1/streams/{stream}?from={version}&limit=1"))
                .await;
            assert_eq!(page["events"][0]["version"], version, "{ack}");
            assert_eq!(page["events"][0]["position"], ack["position"], "{ack}");
        }
        let sku = server.get_json("/api/v1/inventory/skus/apple").await;
        assert_eq!(sku["on_hand"], 15);
        let order_id = first["order_id"].as_str().unwrap();
        let placed = server.get_json(&format!("/api/v1/orders/{order_id}")).await;
        assert_eq!(placed["status"], "pending");

        let replay = server.post_with("/api/v1/orders", &order, &key).await;
        assert_eq!(replay.status().as_u16(), 201);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(replay.json::<Value>().await.unwrap(), first);
        assert_eq!(server.head(), head, "the replay wrote nothing");
        server.stop().await;
    }
}

mod openapi {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use crate::support::store_config;

    /// Every route of the API, as (method, path template).
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/api/v1/sagas/fulfilment/{order_id}"),
        ("get", "/api/v1/sagas/fulfilment"),
        ("post", "/api/v1/inventory/skus"),
        ("get", "/api/v1/inventory/skus/{sku}"),
        ("post", "/api/v1/inventory/skus/{sku}/restock"),
        ("post", "/api/v1/payments/accounts"),
        ("get", "/api/v1/payments/accounts/{customer_id}"),
        ("post", "/api/v1/payments/cards"),
        ("post", "/api/v1/payments/accounts/{customer_id}/deposits"),
        ("post", "/api/v1/orders"),
        ("get", "/api/v1/orders/{order_id}"),
        ("post", "/api/v1/orders/{order_id}/cancel"),
        ("get", "/api/v1/streams/{stream_id}"),
        ("get", "/api/v1/streams/{stream_id}/state"),
        ("get", "/api/v1/streams"),
        ("get", "/api/v1/events/{event_id}"),
        ("get", "/api/v1/log"),
        ("get", "/api/v1/log/live"),
        ("get", "/api/v1/correlations/{correlation_id}"),
        ("get", "/api/v1/me"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/v1/outbox"),
        ("get", "/api/v1/workers"),
        ("get", "/api/v1/dependencies"),
        ("get", "/api/v1/slo"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/schemas/events"),
        ("get", "/api/v1/schemas/events/{type}/{version}"),
        ("get", "/metrics"),
        ("get", "/console"),
        ("get", "/console/{asset}"),
        ("get", "/"),
        ("get", "/api/v1/customers/{customer_id}/orders"),
        ("post", "/api/v1/customers"),
        ("get", "/api/v1/customers/{customer_id}"),
        ("get", "/api/v1/customers/{customer_id}/personal-data"),
        ("delete", "/api/v1/customers/{customer_id}/personal-data"),
        ("get", "/api/v1/inventory/skus"),
        ("get", "/api/v1/reports/sales"),
        ("get", "/api/v1/projections"),
        ("post", "/api/v1/projections/{name}/rebuild"),
        ("get", "/api/v1/projections/{name}/parked"),
        ("post", "/api/v1/projections/{name}/retry"),
        ("get", "/api/v1/chaos/faults"),
        ("post", "/api/v1/chaos/faults"),
        ("delete", "/api/v1/chaos/faults"),
        ("delete", "/api/v1/chaos/faults/{id}"),
    ];

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_served_document_lists_every_route_and_every_listed_route_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = eventstore::EventStore::open(dir.path(), store_config()).unwrap();
        // With fault injection on, so that the chaos routes are routed too.
        let state = api::AppState::new(store.clone(), api::ApiConfig::default())
            .with_chaos(chaos::Chaos::enabled());
        let app = api::app(state);

        let response = app
            .clone()
            .oneshot(
                Request::get("/api/v1/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let paths = document["paths"].as_object().unwrap();

        let mut listed = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    listed.push((method.clone(), path.clone()));
                }
            }
        }
        listed.sort();
        let mut expected: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);

        for (method, path) in ROUTES {
            let operation = &paths[*path][*method];
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{path}"
            );
            if *method == "post" && !path.ends_with("/rebuild") && !path.ends_with("/retry") {
                assert!(
                    operation["requestBody"].is_object(),
                    "{path} has a request body"
                );
            }
            // The router knows the route: a request to it is not a "no route" 404.
            let concrete = path
                .replace("{sku}", "apple")
                .replace("{customer_id}", "alice")
                .replace("{order_id}", "0192d4e0-7b1a-7c3e-8f00-000000000000")
                .replace("{correlation_id}", "0192d4e0-7b1a-7c3e-8f00-000000000000")
                .replace("{stream_id}", "stock-apple")
                .replace("{name}", "orders")
                .replace("{id}", "1")
                .replace("{type}", "OrderPlaced")
                .replace("{version}", "2");
            if *path == "/api/v1/log/live" {
                continue; // an endless stream; covered by the live tests
            }
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("no-route") && status != 405,
                "{method} {concrete}: {status} {text}"
            );
        }
        assert_eq!(api::openapi().paths.paths.len(), paths.len());
        store.close().await;
    }
}

mod outbox_relay {
    use std::time::Duration;

    use serde_json::json;

    use crate::support::TestServer;

    /// A relay publishing to an address where nothing listens, retrying fast.
    fn unreachable_relay() -> outbox::RelayConfig {
        outbox::RelayConfig {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
            ack_timeout: Duration::from_millis(300),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            breaker_failure_threshold: 2,
            breaker_cool_down: Duration::from_millis(100),
            status_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
            ..outbox::RelayConfig::new("nats://127.0.0.1:1")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_away_commands_succeed_the_backlog_grows_and_readyz_says_degraded() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_with_relay(dir.path(), unreachable_relay()).await;

        // Commands do not wait for NATS.
        server.seed("apple", 5, "alice", 1000).await;
        let order = server.place_order("alice", "apple").await;
        server
            .command(
                &format!("/api/v1/orders/{order}/cancel"),
                json!({"reason": "changed my mind"}),
                200,
            )
            .await;

        // The relay has tried and failed at least once.
        let mut status = server.state.relay().expect("a relay").clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|status| status.last_error.is_some()),
        )
        .await
        .expect("the relay reports a failure within 10 s")
        .unwrap();

        let outbox = server.get_json("/api/v1/outbox").await;
        assert_eq!(outbox["enabled"], true, "{outbox}");
        let relay = &outbox["relay"];
        assert!(relay["backlog"].as_u64().unwrap() > 0, "{outbox}");
        assert_eq!(relay["backlog"].as_u64(), Some(server.head()), "{outbox}");
        assert_eq!(relay["checkpoint"], 0, "{outbox}");
        assert_eq!(relay["connected"], false, "{outbox}");
        assert!(
            !relay["last_error"].as_str().unwrap().is_empty(),
            "{outbox}"
        );
        assert!(relay["last_error_at"].is_string(), "{outbox}");
        assert_eq!(outbox["health"]["status"], "degraded", "{outbox}");

        let ready = server.get("/readyz").await;
        assert_eq!(ready.status().as_u16(), 200);
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["outbox"]["status"], "degraded", "{ready}");
        assert!(
            !ready["outbox"]["reason"].as_str().unwrap().is_empty(),
            "{ready}"
        );

        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_relay_the_outbox_route_says_disabled_and_readyz_omits_it() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let outbox = server.get_json("/api/v1/outbox").await;
        assert_eq!(outbox, json!({"enabled": false}));
        let ready = server.get_json("/readyz").await;
        assert!(ready.get("outbox").is_none(), "{ready}");
        server.stop().await;
    }
}

mod generated {
    use std::sync::Arc;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::Value;

    use crate::support::TestServer;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![Just("apple"), Just("alice"), Just(""), Just("a b")]
                .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("sku".to_owned()),
                        Just("name".to_owned()),
                        Just("unit_price".to_owned()),
                        Just("quantity".to_owned()),
                        Just("customer_id".to_owned()),
                        Just("amount".to_owned()),
                        Just("lines".to_owned()),
                        Just("reason".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Percent-encodes every byte that is not a letter or digit.
    fn encode(segment: &str) -> String {
        segment
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// Percent-encodes a query, keeping `=` and `&`.
    fn encode_query(query: &str) -> String {
        query
            .split('&')
            .map(|pair| pair.split('=').map(encode).collect::<Vec<_>>().join("="))
            .collect::<Vec<_>>()
            .join("&")
    }

    const TEMPLATES: &[(&str, &str)] = &[
        ("POST", "/api/v1/inventory/skus"),
        ("POST", "/api/v1/inventory/skus/{}/restock"),
        ("GET", "/api/v1/inventory/skus/{}"),
        ("POST", "/api/v1/payments/accounts"),
        ("POST", "/api/v1/payments/accounts/{}/deposits"),
        ("GET", "/api/v1/payments/accounts/{}"),
        ("POST", "/api/v1/orders"),
        ("POST", "/api/v1/orders/{}/cancel"),
        ("GET", "/api/v1/orders/{}"),
        ("GET", "/api/v1/streams/{}"),
        ("GET", "/api/v1/log?{}"),
        ("PUT", "/api/v1/orders/{}"),
    ];

    #[derive(Debug, Clone)]
    struct Input {
        template: usize,
        segment: String,
        content_type: Option<&'static str>,
        body: Result<Value, Vec<u8>>,
        if_match: Option<String>,
        idempotency_key: Option<String>,
    }

    fn input() -> impl Strategy<Value = Input> {
        (
            0..TEMPLATES.len(),
            prop_oneof![
                Just("apple".to_owned()),
                Just("alice".to_owned()),
                Just("0192d4e0-7b1a-7c3e-8f00-000000000000".to_owned()),
                ".{0,80}",
                "(from|limit|x)=-?[0-9]{0,22}",
            ],
            prop_oneof![
                Just(Some("application/json")),
                Just(Some("application/problem+json")),
                Just(Some("text/plain")),
                Just(None),
            ],
            prop_oneof![
                json_value().prop_map(Ok),
                prop::collection::vec(any::<u8>(), 0..64).prop_map(Err),
            ],
            proptest::option::of(".{0,10}"),
            proptest::option::of("[ -~]{0,10}"),
        )
            .prop_map(
                |(template, segment, content_type, body, if_match, idempotency_key)| Input {
                    template,
                    segment,
                    content_type,
                    body,
                    if_match,
                    idempotency_key,
                },
            )
    }

    /// Random paths, bodies, content types and headers never make a 500.
    #[test]
    fn generated_requests_never_get_a_500() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(runtime.block_on(async {
            let server = TestServer::start(dir.path()).await;
            server.seed("apple", 5, "alice", 500).await;
            server
        }));
        let mut runner = TestRunner::new(Config {
            cases: 300,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&input(), |input| {
            let (method, template) = TEMPLATES[input.template];
            let segment = if template.contains('?') {
                encode_query(&input.segment)
            } else {
                encode(&input.segment)
            };
            let path = template.replace("{}", &segment);
            let body = match &input.body {
                Ok(json) => serde_json::to_vec(json).unwrap(),
                Err(bytes) => bytes.clone(),
            };
            let status = runtime.block_on(async {
                let mut request = server
                    .client
                    .request(method.parse().unwrap(), server.url(&path))
                    .body(body);
                if let Some(content_type) = input.content_type {
                    request = request.header("content-type", content_type);
                }
                if let Some(value) = input
                    .if_match
                    .as_ref()
                    .and_then(|v| reqwest::header::HeaderValue::from_str(v).ok())
                {
                    request = request.header("if-match", value);
                }
                if let Some(value) = input
                    .idempotency_key
                    .as_ref()
                    .and_then(|v| reqwest::header::HeaderValue::from_str(v).ok())
                {
                    request = request.header("idempotency-key", value);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                if status >= 400 {
                    let content_type = response.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    assert_eq!(content_type, "application/problem+json", "{method} {path}");
                }
                status
            });
            prop_assert!(status < 500, "{} {} -> {}", method, path, status);
            Ok(())
        });
        runtime.block_on(async {
            // The server still answers, and still works.
            let health = server.get("/healthz").await;
            assert_eq!(health.status().as_u16(), 200);
        });
        let server = Arc::into_inner(server).unwrap();
        runtime.block_on(server.stop());
        result.unwrap();
    }
}
