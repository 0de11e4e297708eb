//! `GET /api/v1/me` (tag `operations`): who the caller is and what the policy lets it
//! do, so that a console shows only what its user may use.
//!
//! Each entry of `allowed` is the decision [`security::policy::Policy::decide`] makes
//! (the gate's own call, so there is no second copy of the rules) for this principal, on
//! the action's route (its method and path template, from the gate's table) with an
//! empty resource, but for the customer's own actions, whose resource is the principal's
//! customer. Each is logged and counted as every decision is. A decision that fails
//! counts as a denial (`false`), as it would at the gate.
//!
//! The route is public: a console asks it before anyone signs in, to learn whether the
//! server wants a token. Without a token it answers for nobody (`authenticated` false,
//! each entry the policy's decision for no principal: on the default policy, all
//! `false`); with a token that does not verify it is a 401, as on every route.
//!
//! On a server without the gate (no authentication configured: `annals serve` on
//! loopback) every request is admitted, so every entry is `true` and the caller is not
//! authenticated.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use security::Principal;
use security::policy::{Policy, PolicyInput, RequestInfo, Resource};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::gate::{Identity, actions};

/// The actions `allowed` answers for, and whether each acts for a customer (its resource
/// is then the principal's own customer).
const ASKED: &[(&str, bool)] = &[
    ("log.read", false),
    ("log.follow", false),
    ("streams.list", false),
    ("streams.read", false),
    ("events.read", false),
    ("projections.read", false),
    ("projections.rebuild", false),
    ("sagas.read", true),
    ("sagas.list", false),
    ("outbox.read", false),
    ("operations.dependencies", false),
    ("operations.slo", false),
    ("operations.workers", false),
    ("operations.metrics", false),
    ("correlations.read", false),
];

/// Who the caller is and what it may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// Whether the request carried a verified token (false on a server without
    /// authentication).
    pub authenticated: bool,
    /// The token's subject.
    pub subject: Option<String>,
    /// The token's roles.
    pub roles: Vec<String>,
    /// The customer a customer token acts for.
    pub customer_id: Option<String>,
    /// For each of the console's actions, whether the policy allows it to this caller.
    #[schema(example = json!({"log.read": true, "projections.rebuild": false}))]
    pub allowed: BTreeMap<&'static str, bool>,
}

/// Who the caller is (from its verified token, if it sent one) and, for each action a
/// console offers, whether the policy allows it to the caller. Anyone may ask.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "operations",
    responses(
        (status = 200, description = "The caller and what it may do", body = Me),
    )
)]
pub(crate) async fn me(State(state): State<AppState>, Identity(caller): Identity) -> Response {
    let principal = caller.as_ref().map(|caller| &caller.principal);
    let allowed = ASKED
        .iter()
        .map(|&(action, for_customer)| {
            let allow = match state.security() {
                None => true,
                Some(security) => decide(security.policy(), principal, action, for_customer),
            };
            (action, allow)
        })
        .collect();
    axum::Json(Me {
        authenticated: principal.is_some(),
        subject: principal.map(|principal| principal.subject.clone()),
        roles: principal.map_or_else(Vec::new, |principal| {
            principal
                .roles
                .iter()
                .map(|role| role.as_str().to_owned())
                .collect()
        }),
        customer_id: principal.and_then(|principal| principal.customer_id.clone()),
        allowed,
    })
    .into_response()
}

/// The policy's decision on `principal` taking `action` on its route, with an empty
/// resource (the principal's customer for a customer's action); a failure denies.
fn decide(
    policy: &Policy,
    principal: Option<&Principal>,
    action: &str,
    for_customer: bool,
) -> bool {
    let route = actions::ROUTES.iter().find(|entry| entry.action == action);
    let resource = Resource {
        customer_id: principal
            .filter(|_| for_customer)
            .and_then(|principal| principal.customer_id.clone()),
        ..Resource::default()
    };
    let input = PolicyInput {
        principal,
        action,
        resource,
        request: RequestInfo {
            method: route.map_or("GET", |route| route.method.as_str()),
            path: route.map_or("/api/v1/me", |route| route.path),
            intent: None,
        },
    };
    // The policy logs a failure; `false` is what the gate would make of it.
    policy.decide(&input).is_ok_and(|decision| decision.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action `allowed` answers for is a route's action, and the customer's own
    /// ones are marked so.
    #[test]
    fn the_asked_actions_are_routes_actions() {
        for (action, for_customer) in ASKED {
            assert!(
                actions::ROUTES.iter().any(|entry| entry.action == *action),
                "{action} is no route's action"
            );
            assert_eq!(
                *for_customer,
                actions::ROUTES
                    .iter()
                    .any(|entry| entry.action == *action && entry.order_owner),
                "{action}"
            );
        }
    }
}
