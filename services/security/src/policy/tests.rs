//! The policy's own unit tests (the Rego policy tests are in `rego_tests`).

use super::*;

/// The default policy lets an admin raise a request to any lane and an operator to
/// the operator lane, no one else; a policy without `raise_intent` grants nothing.
#[test]
fn raising_a_request_s_lane_is_the_policy_s_to_grant() {
    let ask = |policy: &Policy, roles: &[Role], intent: &str| {
        let principal = Principal {
            subject: "someone".to_owned(),
            issuer: None,
            roles: roles.to_vec(),
            customer_id: Some("c-1".to_owned()),
        };
        policy.grants_intent(&PolicyInput {
            principal: Some(&principal),
            action: "log.read",
            resource: Resource::default(),
            request: RequestInfo {
                method: "GET",
                path: "/api/v1/log",
                intent: Some(intent),
            },
        })
    };
    let default = Policy::default_policy().unwrap();
    assert!(ask(&default, &[Role::Admin], "interactive"));
    assert!(ask(&default, &[Role::Operator], "operator"));
    assert!(!ask(&default, &[Role::Operator], "interactive"));
    assert!(!ask(&default, &[Role::Customer], "interactive"));
    assert!(!ask(&default, &[Role::Clerk], "operator"));

    let without = "package annals\nimport rego.v1\ndefault allow := false\nallow if true\n";
    let policy = Policy::from_sources("test", &[("p.rego".into(), without.into())]).unwrap();
    assert!(!ask(&policy, &[Role::Admin], "interactive"));
}

/// The compiled default policy decides as the interpreter does on inputs beyond the
/// load-time probe: other resources, requests and principals with several roles.
#[test]
fn compiled_and_interpreted_default_policies_agree() {
    let sources = [("policy/annals.rego".to_owned(), DEFAULT_POLICY.to_owned())];
    let compiled = Policy::from_sources("default", &sources).unwrap();
    let interpreted = Policy::interpreted("default", &sources).unwrap();
    assert_eq!(compiled.evaluator(), "compiled");
    assert_eq!(interpreted.evaluator(), "interpreted");
    let principal = |roles: &[Role], customer_id: Option<&str>| Principal {
        subject: "someone".to_owned(),
        issuer: None,
        roles: roles.to_vec(),
        customer_id: customer_id.map(str::to_owned),
    };
    let principals = [
        principal(&[], None),
        principal(&[Role::Customer, Role::Clerk], Some("c-9")),
        principal(&[Role::Operator, Role::Customer], None),
        principal(&[Role::Clerk], Some("c-1")),
    ];
    let resources = [
        Resource::default(),
        Resource::customer("c-9"),
        Resource {
            sku: Some("sku-1".to_owned()),
            order_id: Some("o-1".to_owned()),
            stream: Some("order-o-1".to_owned()),
            projection: Some("balances".to_owned()),
            customer_id: Some("c-1".to_owned()),
        },
    ];
    let mut compared = 0;
    for action in ACTIONS.iter().chain(&["no.such.action"]) {
        for principal in principals.iter().map(Some).chain([None]) {
            for resource in &resources {
                let input = PolicyInput {
                    principal,
                    action,
                    resource: resource.clone(),
                    request: RequestInfo {
                        method: "POST",
                        path: "/api/v1/anything",
                        intent: Some("batch"),
                    },
                };
                assert_eq!(
                    compiled.answer(&input),
                    interpreted.answer(&input),
                    "{}",
                    input.to_json()
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, (ACTIONS.len() + 1) * 5 * 3);
}
