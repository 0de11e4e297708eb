//! The action of every route: what the policy is asked about, and where the request names
//! its resource.
//!
//! One entry per route of [`crate::app`]; a test checks the table against the OpenAPI
//! document (every route has an action, every action a route) and against the policy's
//! list of actions (`security::policy::ACTIONS`), so a new route without a policy
//! decision fails the build's tests. docs/SECURITY.md lists the same table for people.

use axum::http::Method;

/// Where a route's resource comes from, beyond its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyResource {
    /// Only the path names the resource.
    None,
    /// The JSON body's `sku` member (registering a sku).
    Sku,
    /// The JSON body's `customer_id` member (opening an account, placing an order).
    Customer,
}

/// One route's action.
#[derive(Debug, Clone)]
pub(crate) struct RouteAction {
    /// The route's method.
    pub(crate) method: Method,
    /// The route's path template, as the router matched it (`/api/v1/orders/{order_id}`).
    pub(crate) path: &'static str,
    /// The action the policy decides, e.g. `orders.place`.
    pub(crate) action: &'static str,
    /// Whether the route answers without a token (health, readiness, the document).
    pub(crate) public: bool,
    /// Whether the resource is named in the body too.
    pub(crate) body: BodyResource,
    /// Whether the path's `order_id` stands for its owner (`resource.customer_id` is the
    /// order's customer, looked up).
    pub(crate) order_owner: bool,
}

const fn route(method: Method, path: &'static str, action: &'static str) -> RouteAction {
    RouteAction {
        method,
        path,
        action,
        public: false,
        body: BodyResource::None,
        order_owner: false,
    }
}

const fn public(path: &'static str, action: &'static str) -> RouteAction {
    RouteAction {
        method: Method::GET,
        path,
        action,
        public: true,
        body: BodyResource::None,
        order_owner: false,
    }
}

const fn with_body(mut entry: RouteAction, body: BodyResource) -> RouteAction {
    entry.body = body;
    entry
}

const fn owned_order(mut entry: RouteAction) -> RouteAction {
    entry.order_owner = true;
    entry
}

/// Every route's action.
pub(crate) const ROUTES: &[RouteAction] = &[
    with_body(
        route(Method::POST, "/api/v1/inventory/skus", "inventory.register"),
        BodyResource::Sku,
    ),
    route(
        Method::POST,
        "/api/v1/inventory/skus/{sku}/restock",
        "inventory.restock",
    ),
    route(
        Method::GET,
        "/api/v1/inventory/skus/{sku}",
        "inventory.read",
    ),
    route(Method::GET, "/api/v1/inventory/skus", "inventory.list"),
    with_body(
        route(Method::POST, "/api/v1/payments/accounts", "payments.open"),
        BodyResource::Customer,
    ),
    route(
        Method::POST,
        "/api/v1/payments/accounts/{customer_id}/deposits",
        "payments.deposit",
    ),
    route(
        Method::GET,
        "/api/v1/payments/accounts/{customer_id}",
        "payments.read",
    ),
    with_body(
        route(Method::POST, "/api/v1/payments/cards", "payments.card"),
        BodyResource::Customer,
    ),
    with_body(
        route(Method::POST, "/api/v1/customers", "customers.register"),
        BodyResource::Customer,
    ),
    route(
        Method::GET,
        "/api/v1/customers/{customer_id}",
        "customers.read",
    ),
    route(
        Method::GET,
        "/api/v1/customers/{customer_id}/personal-data",
        "customers.personal_data.read",
    ),
    route(
        Method::DELETE,
        "/api/v1/customers/{customer_id}/personal-data",
        "customers.personal_data.erase",
    ),
    with_body(
        route(Method::POST, "/api/v1/orders", "orders.place"),
        BodyResource::Customer,
    ),
    owned_order(route(
        Method::POST,
        "/api/v1/orders/{order_id}/cancel",
        "orders.cancel",
    )),
    owned_order(route(
        Method::GET,
        "/api/v1/orders/{order_id}",
        "orders.read",
    )),
    route(
        Method::GET,
        "/api/v1/customers/{customer_id}/orders",
        "orders.list",
    ),
    owned_order(route(
        Method::GET,
        "/api/v1/sagas/fulfilment/{order_id}",
        "sagas.read",
    )),
    route(Method::GET, "/api/v1/sagas/fulfilment", "sagas.list"),
    route(Method::GET, "/api/v1/streams/{stream_id}", "streams.read"),
    route(
        Method::GET,
        "/api/v1/streams/{stream_id}/state",
        "streams.read",
    ),
    route(Method::GET, "/api/v1/streams", "streams.list"),
    route(Method::GET, "/api/v1/events/{event_id}", "events.read"),
    route(Method::GET, "/api/v1/log", "log.read"),
    route(Method::GET, "/api/v1/log/live", "log.follow"),
    route(
        Method::GET,
        "/api/v1/correlations/{correlation_id}",
        "correlations.read",
    ),
    route(Method::GET, "/api/v1/reports/sales", "reports.sales"),
    route(Method::GET, "/api/v1/projections", "projections.read"),
    route(
        Method::POST,
        "/api/v1/projections/{name}/rebuild",
        "projections.rebuild",
    ),
    route(
        Method::GET,
        "/api/v1/projections/{name}/parked",
        "projections.read",
    ),
    route(
        Method::POST,
        "/api/v1/projections/{name}/retry",
        "projections.retry",
    ),
    route(Method::GET, "/api/v1/outbox", "outbox.read"),
    route(Method::GET, "/api/v1/slo", "operations.slo"),
    route(Method::GET, "/api/v1/workers", "operations.workers"),
    route(
        Method::GET,
        "/api/v1/dependencies",
        "operations.dependencies",
    ),
    public("/api/v1/me", "operations.me"),
    public("/healthz", "operations.health"),
    public("/readyz", "operations.ready"),
    public("/api/v1/openapi.json", "operations.openapi"),
    // The event schemas document the API as the OpenAPI document does: public alike.
    public("/api/v1/schemas/events", "operations.openapi"),
    public(
        "/api/v1/schemas/events/{type}/{version}",
        "operations.openapi",
    ),
    public("/console", "operations.console"),
    public("/console/{asset}", "operations.console"),
    public("/", "operations.console"),
    route(Method::GET, "/metrics", "operations.metrics"),
    route(Method::GET, "/api/v1/chaos/faults", "chaos.list"),
    route(Method::POST, "/api/v1/chaos/faults", "chaos.inject"),
    route(Method::DELETE, "/api/v1/chaos/faults", "chaos.clear"),
    route(Method::DELETE, "/api/v1/chaos/faults/{id}", "chaos.clear"),
];

/// The action of the route `method path` (the matched template), if it has one.
pub(crate) fn find(method: &Method, path: &str) -> Option<&'static RouteAction> {
    ROUTES
        .iter()
        .find(|entry| entry.method == method && entry.path == path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route of the document, as `METHOD path`.
    fn documented_routes() -> BTreeSet<String> {
        let document = crate::openapi();
        let mut routes = BTreeSet::new();
        for (path, item) in &document.paths.paths {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    routes.insert(format!("{method} {path}"));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_has_an_action_and_every_action_a_route() {
        let table: BTreeSet<String> = ROUTES
            .iter()
            .map(|entry| format!("{} {}", entry.method, entry.path))
            .collect();
        let documented = documented_routes();
        let missing: Vec<_> = documented.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "routes without an action (add them to gate/actions.rs, the policy and \
             docs/SECURITY.md): {missing:?}"
        );
        let stale: Vec<_> = table.difference(&documented).collect();
        assert!(
            stale.is_empty(),
            "actions of routes that do not exist: {stale:?}"
        );
        assert_eq!(table.len(), ROUTES.len(), "a route is listed twice");
    }

    #[test]
    fn the_table_and_the_policy_name_the_same_actions() {
        let table: BTreeSet<&str> = ROUTES.iter().map(|entry| entry.action).collect();
        let policy: BTreeSet<&str> = security::policy::ACTIONS.iter().copied().collect();
        assert_eq!(table, policy);
        // One action per route, but for `projections.read` (the projections' status and
        // a projection's parked events are the same kind of reading), `chaos.clear`
        // (ending every fault or one), `streams.read` (a stream's events and the state
        // folded from them show the same thing), `operations.console` (the console's
        // page, its files and the redirect to it) and `operations.openapi` (the OpenAPI
        // document and the event schemas: the API's description).
        for (action, routes) in [
            ("projections.read", 2),
            ("chaos.clear", 2),
            ("streams.read", 2),
            ("operations.console", 3),
            ("operations.openapi", 3),
        ] {
            let shared = ROUTES.iter().filter(|entry| entry.action == action).count();
            assert_eq!(shared, routes, "{action}");
        }
        assert_eq!(
            table.len(),
            ROUTES.len() - 7,
            "three pairs of routes and two triples share an action"
        );
    }
}
