//! Tests of authentication, token minting and rate limits, one binary with a module per
//! concern. Every key is generated at run time (`keys`); no private key is checked in.

mod jwks_file;
mod jwks_url;
mod jwt;
mod keys;
mod mint;
mod rate_limit;
