//! Who is calling and what they may do.
//!
//! - [`principal`]: the authenticated caller ([`Principal`]: subject, issuer, roles, the
//!   customer a `customer` token acts for) and the [`Role`]s of the platform;
//! - [`auth`]: verifying a bearer JWT into a [`Principal`] (HS256 secret, JWKS file, JWKS
//!   URL), and minting development tokens;
//! - [`policy`]: the embedded Rego policy (regorus) that decides every request from the
//!   principal, the action, the resource and the request;
//! - [`rate_limit`]: a token bucket per principal (`sub`), with limits per role.
//!
//! This crate knows nothing of HTTP frameworks: the API's gate (`api::gate`) reads the
//! request, calls these in order and turns their errors into problem responses.

pub mod auth;
pub mod policy;
pub mod principal;
pub mod rate_limit;

pub use policy::{Decision, Policy, PolicyCounts, PolicyError, PolicyInput, RequestInfo, Resource};
pub use principal::{Principal, Role};
