//! The handlers, one module per tag of the OpenAPI document: a route's tag names the file
//! it lives in. Each module holds its routes, their request bodies and their views (the
//! JSON shapes they answer); what several routes share lives outside this directory
//! ([`crate::commands`], [`crate::queries`], [`crate::extract`], [`crate::problem`]).
//!
//! A module here may carry the name of a domain crate (`orders`, `inventory`, `payments`, `customers`):
//! inside it, `orders::...` still names the crate, since a module is not in its own scope.
//! Only this file sees both, and it names nothing but the modules.

pub(crate) mod chaos;
pub(crate) mod console;
pub(crate) mod correlations;
pub(crate) mod customers;
pub(crate) mod dependencies;
pub(crate) mod inventory;
pub(crate) mod log;
pub(crate) mod me;
pub(crate) mod operations;
pub(crate) mod orders;
pub(crate) mod payments;
pub(crate) mod read_models;
pub(crate) mod schemas;
