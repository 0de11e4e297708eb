# Tests of the default policy (policy/annals.rego), OPA style: every `test_*` rule must
# be true. `cargo test -p security` runs them (services/security/tests/policy.rs), and so
# does `opa test policy/` where OPA is installed.
package annals_test

import rego.v1

import data.annals

alice := {"sub": "alice", "iss": "https://idp", "roles": ["customer"], "customer_id": "c-1"}

bob := {"sub": "bob", "iss": "https://idp", "roles": ["customer"], "customer_id": "c-2"}

nobody_customer := {"sub": "nemo", "iss": "https://idp", "roles": ["customer"], "customer_id": null}

carol_clerk := {"sub": "carol", "iss": "https://idp", "roles": ["clerk"], "customer_id": null}

oscar_operator := {"sub": "oscar", "iss": "https://idp", "roles": ["operator"], "customer_id": null}

ada_admin := {"sub": "ada", "iss": "https://idp", "roles": ["admin"], "customer_id": null}

roleless := {"sub": "rex", "iss": "https://idp", "roles": [], "customer_id": null}

no_resource := {"customer_id": null, "sku": null, "order_id": null, "stream": null, "projection": null}

resource_of(customer_id) := object.union(no_resource, {"customer_id": customer_id})

request := {"method": "GET", "path": "/", "intent": null}

# The input for `principal` taking `action` on `resource`.
req(principal, action, resource) := {
	"principal": principal,
	"action": action,
	"resource": resource,
	"request": request,
}

public_actions := [
	"operations.health", "operations.ready", "operations.openapi", "operations.console",
	"operations.me",
]

customer_own_actions := [
	"payments.open", "payments.deposit", "payments.read", "payments.card",
	"orders.place", "orders.cancel", "orders.read", "orders.list", "sagas.read",
	"customers.register", "customers.read", "customers.personal_data.read",
	"customers.personal_data.erase",
]

personal_data_actions := [
	"customers.register", "customers.read", "customers.personal_data.read",
	"customers.personal_data.erase",
]

clerk_allowed := [
	"inventory.register", "inventory.restock", "inventory.read", "inventory.list",
	"reports.sales",
]

clerk_denied := [
	"payments.open", "payments.deposit", "payments.read", "payments.card", "orders.place",
	"orders.cancel", "orders.read", "orders.list", "sagas.read", "streams.read", "streams.list", "events.read",
	"log.read", "log.follow", "projections.read", "projections.rebuild", "projections.retry",
	"outbox.read", "operations.slo", "operations.metrics", "operations.workers",
	"operations.dependencies", "chaos.list", "chaos.inject", "chaos.clear", "sagas.list",
	"correlations.read", "customers.register", "customers.read",
	"customers.personal_data.read", "customers.personal_data.erase",
]

operator_allowed := [
	"streams.read", "streams.list", "events.read", "log.read", "log.follow", "sagas.read",
	"outbox.read", "projections.read", "projections.rebuild", "projections.retry", "reports.sales",
	"inventory.read", "inventory.list", "orders.read", "operations.slo", "operations.metrics",
	"operations.workers", "operations.dependencies", "chaos.list", "chaos.inject", "chaos.clear",
	"sagas.list", "correlations.read", "customers.register", "customers.read",
	"customers.personal_data.read", "customers.personal_data.erase",
]

operator_denied := [
	"inventory.register", "inventory.restock", "payments.open", "payments.deposit",
	"payments.read", "payments.card", "orders.place", "orders.cancel", "orders.list",
]

customer_denied := [
	"inventory.register", "inventory.restock", "reports.sales", "streams.read", "streams.list",
	"events.read", "log.read", "log.follow", "projections.read", "projections.rebuild",
	"projections.retry", "outbox.read", "operations.slo", "operations.metrics",
	"operations.workers", "operations.dependencies", "chaos.list", "chaos.inject", "chaos.clear",
	"sagas.list", "correlations.read",
]

every_private_action := array.concat(clerk_allowed, clerk_denied)

# Public actions: anyone, with or without a principal.

test_public_actions_without_principal if {
	every action in public_actions {
		annals.allow with input as req(null, action, no_resource)
	}
}

test_public_actions_for_every_role if {
	every principal in [alice, carol_clerk, oscar_operator, ada_admin, roleless] {
		every action in public_actions {
			annals.allow with input as req(principal, action, no_resource)
		}
	}
}

# Everything else needs a principal.

test_private_actions_need_a_principal if {
	every action in every_private_action {
		not annals.allow with input as req(null, action, resource_of("c-1"))
	}
}

test_unauthenticated_reason if {
	annals.reason == "authentication required" with input as req(null, "log.read", no_resource)
}

test_principal_without_roles_is_denied if {
	every action in every_private_action {
		not annals.allow with input as req(roleless, action, resource_of("c-1"))
	}
}

test_unknown_action_is_denied if {
	not annals.allow with input as req(oscar_operator, "bank.rob", no_resource)
	not annals.allow with input as req(alice, "bank.rob", resource_of("c-1"))
}

# Admin: everything.

test_admin_may_do_everything if {
	every action in array.concat(every_private_action, public_actions) {
		annals.allow with input as req(ada_admin, action, resource_of("c-9"))
	}
}

test_admin_acts_for_any_customer if {
	annals.allow with input as req(ada_admin, "orders.place", resource_of("c-1"))
	annals.allow with input as req(ada_admin, "payments.deposit", resource_of("c-2"))
}

# Customers: the catalogue, and their own account and orders only.

test_customer_reads_the_catalogue if {
	annals.allow with input as req(alice, "inventory.read", object.union(no_resource, {"sku": "sku-1"}))
	annals.allow with input as req(alice, "inventory.list", no_resource)
}

test_customer_acts_for_itself if {
	every action in customer_own_actions {
		annals.allow with input as req(alice, action, resource_of("c-1"))
	}
}

test_customer_may_not_act_for_another_customer if {
	every action in customer_own_actions {
		not annals.allow with input as req(alice, action, resource_of("c-2"))
	}
}

test_customer_mismatch_reason if {
	annals.reason == "customer c-1 may not act for c-2" with input as req(alice, "orders.place", resource_of("c-2"))
}

test_other_customer_acts_for_itself_not_for_alice if {
	annals.allow with input as req(bob, "orders.place", resource_of("c-2"))
	not annals.allow with input as req(bob, "orders.read", resource_of("c-1"))
}

test_customer_without_customer_id_acts_for_nobody if {
	every action in customer_own_actions {
		not annals.allow with input as req(nobody_customer, action, resource_of("c-1"))
		not annals.allow with input as req(nobody_customer, action, no_resource)
	}
}

test_customer_resource_without_customer_is_denied if {
	every action in customer_own_actions {
		not annals.allow with input as req(alice, action, no_resource)
	}
}

test_customer_denied_operations if {
	every action in customer_denied {
		not annals.allow with input as req(alice, action, resource_of("c-1"))
	}
}

# Clerks: the inventory and the sales report.

test_clerk_allowed if {
	every action in clerk_allowed {
		annals.allow with input as req(carol_clerk, action, object.union(no_resource, {"sku": "sku-1"}))
	}
}

test_clerk_denied if {
	every action in clerk_denied {
		not annals.allow with input as req(carol_clerk, action, resource_of("c-1"))
	}
}

test_clerk_denied_reason if {
	annals.reason == "no role of carol allows log.read" with input as req(carol_clerk, "log.read", no_resource)
}

# Operators: support work, reading and rebuilding, no money and no stock.

test_operator_allowed if {
	every action in operator_allowed {
		annals.allow with input as req(oscar_operator, action, resource_of("c-1"))
	}
}

test_operator_denied if {
	every action in operator_denied {
		not annals.allow with input as req(oscar_operator, action, resource_of("c-1"))
	}
}

# Several roles: the union of what each allows.

test_roles_add_up if {
	clerk_customer := object.union(alice, {"roles": ["customer", "clerk"]})
	annals.allow with input as req(clerk_customer, "inventory.restock", no_resource)
	annals.allow with input as req(clerk_customer, "orders.place", resource_of("c-1"))
	not annals.allow with input as req(clerk_customer, "orders.place", resource_of("c-2"))
}

test_allowed_has_no_reason if {
	not annals.reason with input as req(ada_admin, "log.read", no_resource)
}

# Metrics (`GET /metrics`): operators and admins scrape, nobody else.

test_metrics_for_operators_and_admins_only if {
	annals.allow with input as req(oscar_operator, "operations.metrics", no_resource)
	annals.allow with input as req(ada_admin, "operations.metrics", no_resource)
	not annals.allow with input as req(carol_clerk, "operations.metrics", no_resource)
	not annals.allow with input as req(alice, "operations.metrics", resource_of("c-1"))
	not annals.allow with input as req(roleless, "operations.metrics", no_resource)
	not annals.allow with input as req(null, "operations.metrics", no_resource)
}

# Fault injection (`/api/v1/chaos/faults`, a server with --chaos): operators and admins only.

test_chaos_for_operators_and_admins_only if {
	every action in ["chaos.list", "chaos.inject", "chaos.clear"] {
		annals.allow with input as req(oscar_operator, action, no_resource)
		annals.allow with input as req(ada_admin, action, no_resource)
		not annals.allow with input as req(carol_clerk, action, no_resource)
		not annals.allow with input as req(alice, action, resource_of("c-1"))
		not annals.allow with input as req(roleless, action, no_resource)
		not annals.allow with input as req(null, action, no_resource)
	}
}

# The input for `principal` asking for the lane `intent` with `action`.
with_intent(principal, action, intent) := object.union(
	req(principal, action, no_resource),
	{"request": {"method": "GET", "path": "/api/v1/log", "intent": intent}},
)

test_an_admin_may_raise_a_request_to_any_lane if {
	every intent in ["interactive", "operator"] {
		annals.raise_intent with input as with_intent(ada_admin, "log.read", intent)
	}
}

test_an_operator_may_raise_a_request_to_the_operator_lane_only if {
	annals.raise_intent with input as with_intent(oscar_operator, "log.read", "operator")
	not annals.raise_intent with input as with_intent(oscar_operator, "log.read", "interactive")
}

test_no_one_else_may_raise_a_request if {
	every principal in [alice, carol_clerk, roleless] {
		every intent in ["interactive", "operator"] {
			not annals.raise_intent with input as with_intent(principal, "orders.read", intent)
		}
	}
	not annals.raise_intent with input as object.union(
		req(null, "operations.health", no_resource),
		{"request": {"method": "GET", "path": "/healthz", "intent": "interactive"}},
	)
}

# Who am I (`GET /api/v1/me`): anyone, with or without a token (the public actions'
# tests above); what it answers is each principal's own decisions.

# A correlation's events and the list of fulfilment sagas: operators and admins only.

test_correlations_and_saga_lists_for_operators_and_admins_only if {
	every action in ["correlations.read", "sagas.list"] {
		annals.allow with input as req(oscar_operator, action, no_resource)
		annals.allow with input as req(ada_admin, action, no_resource)
		not annals.allow with input as req(carol_clerk, action, no_resource)
		not annals.allow with input as req(alice, action, resource_of("c-1"))
		not annals.allow with input as req(roleless, action, no_resource)
		not annals.allow with input as req(null, action, no_resource)
	}
}

# Personal data (`/api/v1/customers...`): operators and admins for any customer, a
# customer for itself only; nobody else, and nobody without a token.

test_personal_data_for_operators_admins_and_the_customer_itself if {
	every action in personal_data_actions {
		annals.allow with input as req(oscar_operator, action, resource_of("c-1"))
		annals.allow with input as req(ada_admin, action, resource_of("c-1"))
		annals.allow with input as req(alice, action, resource_of("c-1"))
		annals.allow with input as req(bob, action, resource_of("c-2"))
	}
}

test_personal_data_of_another_customer_is_denied if {
	every action in personal_data_actions {
		not annals.allow with input as req(alice, action, resource_of("c-2"))
		not annals.allow with input as req(bob, action, resource_of("c-1"))
		not annals.allow with input as req(nobody_customer, action, resource_of("c-1"))
		not annals.allow with input as req(carol_clerk, action, resource_of("c-1"))
		not annals.allow with input as req(roleless, action, resource_of("c-1"))
		not annals.allow with input as req(null, action, resource_of("c-1"))
	}
	annals.reason == "customer c-1 may not act for c-2" with input as req(alice, "customers.personal_data.read", resource_of("c-2"))
}
