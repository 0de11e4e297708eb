//! The authenticated caller of a request, and the roles of the platform.
//!
//! A [`Principal`] is what a verified token says about its bearer. Its subject and
//! issuer (never the token) are what the event log records as the cause of an event.

use serde::{Deserialize, Serialize};

/// What a principal may be; a token carries any number of them in its `roles` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Acts on and reads only its own account and orders (the token's `customer_id`).
    Customer,
    /// Registers and restocks skus.
    Clerk,
    /// Reads the log, streams, events, sagas, the outbox and projections; starts rebuilds.
    Operator,
    /// May do everything.
    Admin,
}

impl Role {
    /// Every role, in order of increasing power.
    pub const ALL: [Role; 4] = [Role::Customer, Role::Clerk, Role::Operator, Role::Admin];

    /// The role's name as tokens and the policy spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Clerk => "clerk",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!("unknown role {text:?}: the roles are customer, clerk, operator, admin")
            })
    }
}

/// The authenticated caller: what its verified token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The token's `sub`: who is calling.
    #[serde(rename = "sub")]
    pub subject: String,
    /// The token's `iss`, if it has one.
    #[serde(rename = "iss")]
    pub issuer: Option<String>,
    /// The token's `roles` (unknown role names are dropped, not an error).
    pub roles: Vec<Role>,
    /// The customer a `customer` token acts for.
    pub customer_id: Option<String>,
}

impl Principal {
    /// Whether the principal has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
