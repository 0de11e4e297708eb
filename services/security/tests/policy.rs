//! The policy gatekeeper through its public API: the Rego tests of `policy/` and the
//! decisions of the default policy, the errors of unusable policies, failing closed.

use std::path::{Path, PathBuf};

use security::policy::{
    ACTIONS, PUBLIC_ACTIONS, Policy, PolicyError, PolicyInput, RequestInfo, Resource, rego_tests,
};
use security::{Principal, Role};

fn policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy")
}

fn principal(subject: &str, roles: &[Role], customer_id: Option<&str>) -> Principal {
    Principal {
        subject: subject.to_owned(),
        issuer: Some("https://idp".to_owned()),
        roles: roles.to_vec(),
        customer_id: customer_id.map(str::to_owned),
    }
}

fn input<'a>(
    principal: Option<&'a Principal>,
    action: &'a str,
    resource: Resource,
) -> PolicyInput<'a> {
    PolicyInput {
        principal,
        action,
        resource,
        request: RequestInfo {
            method: "GET",
            path: "/api/v1/test",
            intent: Some("interactive"),
        },
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

mod rego {
    use super::*;

    #[test]
    fn every_rego_test_of_the_policy_directory_passes() {
        let outcomes = rego_tests::run_dir(&policy_dir()).unwrap();
        assert!(
            outcomes.len() >= 20,
            "only {} Rego tests found",
            outcomes.len()
        );
        let failing: Vec<String> = outcomes
            .iter()
            .filter_map(|test| Some(format!("{}: {}", test.rule, test.failure.as_ref()?)))
            .collect();
        assert!(
            failing.is_empty(),
            "failing Rego tests:\n{}",
            failing.join("\n")
        );
    }

    #[test]
    fn the_runner_reports_a_failing_test_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "p.rego",
            "package p\nimport rego.v1\ndefault allow := false\nallow if input.ok\n",
        );
        write(
            dir.path(),
            "p_test.rego",
            "package p_test\nimport rego.v1\nimport data.p\n\
             test_passes if { p.allow with input as {\"ok\": true} }\n\
             test_fails if { p.allow with input as {\"ok\": false} }\n",
        );
        let outcomes = rego_tests::run_dir(dir.path()).unwrap();
        let summary: Vec<(&str, bool)> = outcomes
            .iter()
            .map(|test| (test.rule.as_str(), test.failure.is_none()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("data.p_test.test_passes", true),
                ("data.p_test.test_fails", false)
            ]
        );
    }

    #[test]
    fn the_runner_names_the_file_of_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "broken_test.rego",
            "package broken_test\nimport rego.v1\ntest_x if {\n",
        );
        let error = rego_tests::run_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("broken_test.rego"), "{error}");
    }

    #[test]
    fn the_rego_tests_cover_every_action() {
        // The test file's action lists are checked against the Rust list, so a new action
        // without Rego tests fails here.
        let mut engine = regorus::Engine::new();
        for name in ["annals.rego", "annals_test.rego"] {
            engine
                .add_policy_from_file(policy_dir().join(name))
                .unwrap();
        }
        let mut covered: Vec<String> = Vec::new();
        for list in ["every_private_action", "public_actions"] {
            let value = engine
                .eval_rule(format!("data.annals_test.{list}"))
                .unwrap();
            for action in value.as_array().unwrap().iter() {
                covered.push(action.as_string().unwrap().to_string());
            }
        }
        covered.sort();
        covered.dedup();
        let mut actions: Vec<String> = ACTIONS.iter().map(|action| action.to_string()).collect();
        actions.sort();
        assert_eq!(covered, actions);
    }
}

mod decide {
    use super::*;

    #[test]
    fn an_admin_may_take_every_action() {
        let policy = Policy::default_policy().unwrap();
        let admin = principal("ada", &[Role::Admin], None);
        for action in ACTIONS {
            let decision = policy
                .decide(&input(Some(&admin), action, Resource::customer("c-9")))
                .unwrap();
            assert!(decision.allow, "{action}");
            assert_eq!(decision.reason, None);
        }
    }

    #[test]
    fn a_customer_acts_for_itself() {
        let policy = Policy::default_policy().unwrap();
        let alice = principal("alice", &[Role::Customer], Some("c-1"));
        let decision = policy
            .decide(&input(
                Some(&alice),
                "orders.place",
                Resource::customer("c-1"),
            ))
            .unwrap();
        assert!(decision.allow);
    }

    #[test]
    fn a_customer_may_not_act_for_another() {
        let policy = Policy::default_policy().unwrap();
        let alice = principal("alice", &[Role::Customer], Some("c-1"));
        let decision = policy
            .decide(&input(
                Some(&alice),
                "payments.deposit",
                Resource::customer("c-2"),
            ))
            .unwrap();
        assert!(!decision.allow);
        assert_eq!(
            decision.reason.as_deref(),
            Some("customer c-1 may not act for c-2")
        );
    }

    #[test]
    fn a_role_without_the_action_is_denied_with_a_reason() {
        let policy = Policy::default_policy().unwrap();
        let clerk = principal("carol", &[Role::Clerk], None);
        let decision = policy
            .decide(&input(Some(&clerk), "log.follow", Resource::default()))
            .unwrap();
        assert!(!decision.allow);
        assert_eq!(
            decision.reason.as_deref(),
            Some("no role of carol allows log.follow")
        );
    }

    #[test]
    fn public_actions_need_no_principal_and_others_do() {
        let policy = Policy::default_policy().unwrap();
        for action in ACTIONS {
            let decision = policy
                .decide(&input(None, action, Resource::default()))
                .unwrap();
            assert_eq!(decision.allow, PUBLIC_ACTIONS.contains(action), "{action}");
            if !decision.allow {
                assert_eq!(decision.reason.as_deref(), Some("authentication required"));
            }
        }
    }

    #[test]
    fn decisions_are_counted() {
        let policy = Policy::default_policy().unwrap();
        let oscar = principal("oscar", &[Role::Operator], None);
        policy
            .decide(&input(Some(&oscar), "log.read", Resource::default()))
            .unwrap();
        policy
            .decide(&input(Some(&oscar), "streams.list", Resource::default()))
            .unwrap();
        policy
            .decide(&input(
                Some(&oscar),
                "payments.deposit",
                Resource::customer("c-1"),
            ))
            .unwrap();
        let counts = policy.counts();
        assert_eq!((counts.allowed, counts.denied, counts.errors), (2, 1, 0));
    }

    #[test]
    fn the_input_document_has_the_documented_shape() {
        let alice = principal("alice", &[Role::Customer], Some("c-1"));
        let document = input(Some(&alice), "orders.place", Resource::customer("c-1")).to_json();
        assert_eq!(
            document,
            serde_json::json!({
                "principal": {"sub": "alice", "iss": "https://idp", "roles": ["customer"], "customer_id": "c-1"},
                "action": "orders.place",
                "resource": {"customer_id": "c-1", "sku": null, "order_id": null, "stream": null, "projection": null},
                "request": {"method": "GET", "path": "/api/v1/test", "intent": "interactive"},
            })
        );
        // The regorus value the engine sees is the same document.
        let value = input(Some(&alice), "orders.place", Resource::customer("c-1")).to_value();
        assert_eq!(value, regorus::Value::from(document));
    }

    #[test]
    fn decisions_from_many_threads_agree() {
        let policy = std::sync::Arc::new(Policy::default_policy().unwrap());
        let handles: Vec<_> = (0..4)
            .map(|thread| {
                let policy = policy.clone();
                std::thread::spawn(move || {
                    let alice = principal("alice", &[Role::Customer], Some("c-1"));
                    for round in 0..50 {
                        let owner = if (thread + round) % 2 == 0 {
                            "c-1"
                        } else {
                            "c-2"
                        };
                        let decision = policy
                            .decide(&input(
                                Some(&alice),
                                "orders.read",
                                Resource::customer(owner),
                            ))
                            .unwrap();
                        assert_eq!(decision.allow, owner == "c-1");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let counts = policy.counts();
        assert_eq!(counts.allowed + counts.denied, 200);
    }
}

mod load {
    use super::*;

    #[test]
    fn the_default_policy_has_a_revision() {
        let policy = Policy::default_policy().unwrap();
        assert!(
            policy.revision().starts_with("blake3:"),
            "{}",
            policy.revision()
        );
        assert_eq!(
            policy.revision(),
            Policy::default_policy().unwrap().revision()
        );
        assert_eq!(policy.origin(), "default");
    }

    #[test]
    fn the_default_policy_is_compiled() {
        let policy = Policy::default_policy().unwrap();
        assert_eq!(policy.evaluator(), "compiled");
    }

    #[test]
    fn a_policy_the_compiler_cannot_take_is_interpreted_and_decides_alike() {
        // The RVM compiler does not take `with` yet; the interpreter decides instead.
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "with.rego",
            "package annals\nimport rego.v1\ndefault allow := false\n\
             allow if { readable with input.action as \"log.read\" }\n\
             readable if { input.action == \"log.read\"; input.principal != null }\n",
        );
        let policy = Policy::from_file(&path).unwrap();
        assert_eq!(policy.evaluator(), "interpreted");
        let oscar = principal("oscar", &[Role::Operator], None);
        assert!(
            policy
                .decide(&input(Some(&oscar), "events.read", Resource::default()))
                .unwrap()
                .allow
        );
        assert!(
            !policy
                .decide(&input(None, "events.read", Resource::default()))
                .unwrap()
                .allow
        );
    }

    #[test]
    fn a_policy_file_replaces_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "open.rego",
            "package annals\nimport rego.v1\ndefault allow := false\nallow if input.action == \"log.read\"\n",
        );
        let policy = Policy::from_file(&path).unwrap();
        assert_ne!(
            policy.revision(),
            Policy::default_policy().unwrap().revision()
        );
        let decision = policy
            .decide(&input(None, "log.read", Resource::default()))
            .unwrap();
        assert!(decision.allow);
        let decision = policy
            .decide(&input(None, "operations.health", Resource::default()))
            .unwrap();
        assert!(!decision.allow);
        assert_eq!(decision.reason, None, "this policy has no reason rule");
    }

    #[test]
    fn a_bad_policy_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "bad.rego",
            "package annals\nimport rego.v1\n\nallow if {\n  input.action ==\n}\n",
        );
        let error = Policy::from_file(&path).unwrap_err();
        assert!(matches!(error, PolicyError::Load { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("bad.rego:"), "{message}");
        assert!(
            message.contains(&format!("{}:", path.display())),
            "{message}"
        );
    }

    #[test]
    fn a_missing_policy_file_is_a_read_error() {
        let error = Policy::from_file(Path::new("/nonexistent/annals.rego")).unwrap_err();
        assert!(matches!(error, PolicyError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/annals.rego"));
    }

    #[test]
    fn a_policy_without_the_allow_rule_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "other.rego",
            "package other\nimport rego.v1\nallow := true\n",
        );
        let error = Policy::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("data.annals.allow"), "{error}");
    }

    #[test]
    fn a_non_boolean_allow_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "string.rego",
            "package annals\nimport rego.v1\nallow := \"yes\"\n",
        );
        let error = Policy::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("must be a boolean"), "{error}");
    }

    #[test]
    fn a_policy_that_fails_while_deciding_denies_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "conflict.rego",
            "package annals\nimport rego.v1\n\
             allow := true if input.action == \"log.read\"\n\
             allow := false if input.action == \"log.read\"\n",
        );
        let policy = Policy::from_file(&path).unwrap();
        let error = policy
            .decide(&input(None, "log.read", Resource::default()))
            .unwrap_err();
        assert!(
            matches!(error, PolicyError::Evaluation { ref action, .. } if action == "log.read"),
            "{error:?}"
        );
        assert_eq!(policy.counts().errors, 1);
        // It keeps deciding the inputs it can.
        assert!(
            !policy
                .decide(&input(None, "log.follow", Resource::default()))
                .unwrap()
                .allow
        );
    }
}
