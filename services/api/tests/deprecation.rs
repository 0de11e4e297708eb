//! A deprecated route through a real listening server: its answers carry `Deprecation`,
//! `Sunset` and `Link` (refusals included), other routes' answers do not, and the
//! route itself works unchanged.

mod common;

use api::deprecation::{self, Deprecated};
use api::{ApiConfig, AppState};

const SKU: &[Deprecated] = &[Deprecated {
    method: "GET",
    path: "/api/v1/inventory/skus/{sku}",
    since: "2026-12-01T00:00:00Z",
    sunset: "2027-06-30T00:00:00Z",
    successor: Some("/api/v1/read-models/skus"),
}];

#[tokio::test]
async fn a_deprecated_route_says_so_on_every_answer_and_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let state = AppState::new(store, ApiConfig::default());
    let server = common::Serving::start_with(state, |app| deprecation::apply(app, SKU)).await;
    let client = reqwest::Client::new();

    let registered = client
        .post(format!("{}/api/v1/inventory/skus", server.base))
        .json(&serde_json::json!({"sku": "apple", "name": "Apple", "unit_price": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    assert!(
        registered.headers().get("deprecation").is_none(),
        "only the deprecated operation is marked, not its path's other methods"
    );

    for (sku, status) in [("apple", 200), ("pear", 404)] {
        let answer = client
            .get(format!("{}/api/v1/inventory/skus/{sku}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status);
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .unwrap_or_else(|| panic!("no {name} on the {status} of a deprecated route"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("deprecation"), "@1796083200");
        assert_eq!(header("sunset"), "Wed, 30 Jun 2027 00:00:00 GMT");
        assert_eq!(
            header("link"),
            "</api/v1/read-models/skus>; rel=\"successor-version\""
        );
    }
    server.drain().await;
}
