# The default access policy of Annals: who may take which action on what.
#
# The API gate evaluates `data.annals.allow` on every request, after authentication,
# with this input (absent members are null):
#
#   {"principal": {"sub": "alice", "iss": "https://idp", "roles": ["customer"], "customer_id": "c-1"},
#    "action": "orders.place",
#    "resource": {"customer_id": "c-1", "sku": null, "order_id": null, "stream": null, "projection": null},
#    "request": {"method": "POST", "path": "/api/v1/orders", "intent": "interactive"}}
#
# `principal` is null for an unauthenticated request. Anything not allowed below is denied.
# `reason` says why a request was denied, for the log and the 403 problem's detail.
# Replace this file with `annals serve --policy-file F`; keep the package and the `allow` rule.
package annals

import rego.v1

default allow := false

# The public actions: health, readiness, the API description, the web console's files
# (which hold no data: the console's requests carry the user's token) and who the caller
# is (`GET /api/v1/me`: a console asks it before sign-in, to learn whether the server
# wants a token; without one it answers for nobody), for anyone.
public_actions := {
	"operations.health", "operations.ready", "operations.openapi", "operations.console",
	"operations.me",
}

# What a customer may do for its own customer id (the token's `customer_id`): its
# account, its orders and its profile of personal data (register it, read it, see every
# personal field held about it, have it erased).
customer_own_actions := {
	"payments.open", "payments.deposit", "payments.read", "payments.card",
	"orders.place", "orders.cancel", "orders.read", "orders.list",
	"sagas.read",
	"customers.register", "customers.read", "customers.personal_data.read",
	"customers.personal_data.erase",
}

# What a customer may do whoever it is: read the catalogue.
customer_catalogue_actions := {"inventory.read", "inventory.list"}

clerk_actions := {
	"inventory.register", "inventory.restock", "inventory.read", "inventory.list",
	"reports.sales",
}

operator_actions := {
	"streams.read", "streams.list", "events.read", "log.read", "log.follow",
	"sagas.read", "sagas.list", "outbox.read", "operations.slo", "projections.read",
	"projections.rebuild", "projections.retry", "correlations.read",
	"reports.sales", "inventory.read", "inventory.list", "orders.read",
	"operations.metrics", "operations.workers", "operations.dependencies",
	"chaos.list", "chaos.inject", "chaos.clear",
	"customers.register", "customers.read", "customers.personal_data.read",
	"customers.personal_data.erase",
}

allow if input.action in public_actions

allow if has_role("admin")

allow if {
	has_role("clerk")
	input.action in clerk_actions
}

allow if {
	has_role("operator")
	input.action in operator_actions
}

allow if {
	has_role("customer")
	input.action in customer_catalogue_actions
}

allow if {
	has_role("customer")
	input.action in customer_own_actions
	acts_for_itself
}

# Who may raise a request to the lane its `Annals-Intent` header names, above the route's
# own (without this, the header can only lower a lane): an admin to any lane; an operator
# to the operator lane (a large page read during an incident, which would otherwise wait
# in the bulk lane). Asked only when a header names a higher lane.
default raise_intent := false

raise_intent if has_role("admin")

raise_intent if {
	has_role("operator")
	input.request.intent == "operator"
}

# The principal has `role` (there is no role without a principal).
has_role(role) if role in input.principal.roles

# The resource belongs to the customer the principal acts for, and both are known.
acts_for_itself if {
	is_string(input.principal.customer_id)
	is_string(input.resource.customer_id)
	input.principal.customer_id == input.resource.customer_id
}

# Why a request is denied; undefined when it is allowed.
reason := deny_reason if not allow

deny_reason := "authentication required" if {
	input.principal == null
} else := sprintf("customer %v may not act for %v", [input.principal.customer_id, input.resource.customer_id]) if {
	customer_own_action
	is_string(input.principal.customer_id)
	is_string(input.resource.customer_id)
} else := "a customer token without customer_id acts for nobody" if {
	customer_own_action
	not is_string(input.principal.customer_id)
} else := sprintf("%v names no customer", [input.action]) if {
	customer_own_action
} else := sprintf("no role of %v allows %v", [input.principal.sub, input.action]) if {
	true
}

# The action is one a customer may take for itself, and the principal is a customer.
customer_own_action if {
	has_role("customer")
	input.action in customer_own_actions
}
