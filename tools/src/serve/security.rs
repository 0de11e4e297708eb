//! `annals serve`'s security settings: how tokens are verified, the policy, the rate
//! limits, and the rule that a server reachable from the network demands a token.
//!
//! Secure by default: with no authentication configured, the server listens only on a
//! loopback address (with a warning); asked to listen on any other address it refuses
//! to start (exit 2) and says why, unless `--insecure-no-auth` accepts the risk.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use security::Role;
use security::auth::{AuthConfig, Authenticator};
use security::policy::Policy;
use security::rate_limit::{RateLimiter, RateLimits};
use serde::Deserialize;

use crate::exit::Failure;

/// The security flags of `annals serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// Verify HS256 tokens with the shared secret in this file (development, tests; at
    /// least 32 bytes).
    #[arg(long, env = "ANNALS_AUTH_JWT_SECRET_FILE", value_name = "FILE")]
    auth_jwt_secret_file: Option<PathBuf>,
    /// Verify RS256, ES256 or EdDSA tokens with the public keys of this JWKS document;
    /// the file is re-read when it changes.
    #[arg(long, env = "ANNALS_AUTH_JWKS_FILE", value_name = "FILE")]
    auth_jwks_file: Option<PathBuf>,
    /// Verify tokens with the JWKS served at this URL (fetched at start, cached,
    /// fetched again for an unknown key id at most every 10 s).
    #[arg(long, env = "ANNALS_AUTH_JWKS_URL", value_name = "URL")]
    auth_jwks_url: Option<String>,
    /// Accept only tokens issued by this `iss`.
    #[arg(long, env = "ANNALS_AUTH_ISSUER", value_name = "ISSUER")]
    auth_issuer: Option<String>,
    /// Accept only tokens for this `aud`.
    #[arg(long, env = "ANNALS_AUTH_AUDIENCE", value_name = "AUDIENCE")]
    auth_audience: Option<String>,
    /// Decide requests with this Rego policy instead of the default one
    /// (policy/annals.rego, built in).
    #[arg(long, env = "ANNALS_POLICY_FILE", value_name = "FILE")]
    policy_file: Option<PathBuf>,
    /// Requests per second each principal may send (a token bucket per `sub`, bursts of
    /// one second) [default: no limit].
    #[arg(long, env = "ANNALS_RATE_LIMIT", value_name = "RPS")]
    rate_limit: Option<NonZeroU32>,
    /// The limit of one role, as ROLE=RPS (repeat for several roles); a principal gets
    /// the highest limit among its roles, else --rate-limit.
    #[arg(long = "rate-limit-role", value_name = "ROLE=RPS", value_parser = parse_role_limit)]
    rate_limit_roles: Vec<(Role, NonZeroU32)>,
    /// Serve without authentication on a non-loopback address: anyone who reaches the
    /// port may read every event and send any command. Only behind something that
    /// authenticates for you.
    #[arg(long, env = "ANNALS_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
}

/// The security keys a `--config` file may hold (flattened into its top level).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    pub(super) auth_jwt_secret_file: Option<PathBuf>,
    pub(super) auth_jwks_file: Option<PathBuf>,
    pub(super) auth_jwks_url: Option<String>,
    pub(super) auth_issuer: Option<String>,
    pub(super) auth_audience: Option<String>,
    pub(super) policy_file: Option<PathBuf>,
    pub(super) rate_limit: Option<NonZeroU32>,
    /// Per role: `[rate_limit_roles] customer = 20`.
    #[serde(default)]
    pub(super) rate_limit_roles: BTreeMap<Role, NonZeroU32>,
    pub(super) insecure_no_auth: Option<bool>,
}

impl SecurityFile {
    /// The keys of this part of the file.
    pub(super) const KEYS: &[&str] = &[
        "auth_jwt_secret_file",
        "auth_jwks_file",
        "auth_jwks_url",
        "auth_issuer",
        "auth_audience",
        "policy_file",
        "rate_limit",
        "rate_limit_roles",
        "insecure_no_auth",
    ];
}

/// The security settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecuritySettings {
    /// How tokens are verified; nothing configured: no authentication.
    pub auth: AuthConfig,
    /// The policy file; `None`: the built-in default policy.
    pub policy_file: Option<PathBuf>,
    /// The rate limits.
    pub rate_limits: RateLimits,
    /// Whether a non-loopback address may be served without authentication.
    pub insecure_no_auth: bool,
}

impl SecurityArgs {
    /// Flags and environment over the config file.
    pub(super) fn settings(self, file: SecurityFile) -> SecuritySettings {
        let mut per_role = file.rate_limit_roles;
        per_role.extend(self.rate_limit_roles);
        SecuritySettings {
            auth: AuthConfig {
                jwt_secret_file: self.auth_jwt_secret_file.or(file.auth_jwt_secret_file),
                jwks_file: self.auth_jwks_file.or(file.auth_jwks_file),
                jwks_url: self.auth_jwks_url.or(file.auth_jwks_url),
                issuer: self.auth_issuer.or(file.auth_issuer),
                audience: self.auth_audience.or(file.auth_audience),
                // The server's switch is set when it starts (`super::serve`).
                chaos: chaos::Chaos::inert(),
            },
            policy_file: self.policy_file.or(file.policy_file),
            rate_limits: RateLimits {
                default_per_second: self.rate_limit.or(file.rate_limit),
                per_role,
                ..RateLimits::default()
            },
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
        }
    }
}

fn parse_role_limit(text: &str) -> Result<(Role, NonZeroU32), String> {
    let (role, limit) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ROLE=RPS (e.g. customer=20), not {text:?}"))?;
    let role = role.trim().parse::<Role>()?;
    let limit = limit
        .trim()
        .parse::<NonZeroU32>()
        .map_err(|error| format!("bad limit {limit:?} for {role}: {error}"))?;
    Ok((role, limit))
}

/// Refuses to serve a non-loopback `listen` address without authentication, unless
/// `--insecure-no-auth`; warns about serving loopback without it.
pub fn check_exposure(listen: &str, settings: &SecuritySettings) -> anyhow::Result<()> {
    if settings.auth.is_enabled() {
        return Ok(());
    }
    let addresses: Vec<_> = listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the listen address {listen}"))?
        .collect();
    let exposed = addresses.is_empty() || addresses.iter().any(|a| !a.ip().is_loopback());
    if !exposed {
        tracing::warn!(
            %listen,
            "no authentication configured: every request is admitted (fine on loopback for \
             development; configure --auth-jwt-secret-file, --auth-jwks-file or \
             --auth-jwks-url to require tokens)"
        );
        return Ok(());
    }
    if settings.insecure_no_auth {
        tracing::warn!(
            %listen,
            "--insecure-no-auth: serving a non-loopback address WITHOUT authentication; \
             anyone who reaches the port may read every event and send any command"
        );
        return Ok(());
    }
    Err(Failure::Usage(format!(
        "refusing to listen on {listen} without authentication: anyone who reaches that \
         address could read every event and send any command. Configure tokens \
         (--auth-jwt-secret-file, --auth-jwks-file or --auth-jwks-url), or listen on a \
         loopback address (--listen 127.0.0.1:8080), or pass --insecure-no-auth if \
         something in front of the server authenticates for it"
    ))
    .into())
}

/// The gate of the API, if authentication is configured: the authenticator (keys read or
/// fetched now), the policy (compiled once), the rate limiter.
pub async fn gate(settings: &SecuritySettings) -> anyhow::Result<Option<api::gate::Security>> {
    if !settings.auth.is_enabled() {
        return Ok(None);
    }
    let authenticator = Authenticator::new(&settings.auth)
        .await
        .context("cannot set up token verification")?;
    let policy = match &settings.policy_file {
        Some(path) => Policy::from_file(path)
            .with_context(|| format!("cannot load the policy {}", path.display()))?,
        None => Policy::default_policy().context("the built-in policy does not compile")?,
    };
    tracing::info!(
        revision = policy.revision(),
        evaluator = policy.evaluator(),
        file = ?settings.policy_file,
        issuer = ?settings.auth.issuer,
        audience = ?settings.auth.audience,
        rate_limit = ?settings.rate_limits.default_per_second,
        "authentication and policy on"
    );
    let limiter = RateLimiter::new(settings.rate_limits.clone());
    Ok(Some(api::gate::Security::new(
        authenticator,
        Arc::new(policy),
        limiter,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(auth: bool, insecure: bool) -> SecuritySettings {
        SecuritySettings {
            auth: AuthConfig {
                jwt_secret_file: auth.then(|| PathBuf::from("secret")),
                ..AuthConfig::default()
            },
            insecure_no_auth: insecure,
            ..SecuritySettings::default()
        }
    }

    #[test]
    fn a_non_loopback_address_needs_auth_or_the_insecure_flag() {
        let error = check_exposure("0.0.0.0:8080", &settings(false, false)).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("without authentication"), "{message}");
        assert!(message.contains("--insecure-no-auth"), "{message}");
        check_exposure("0.0.0.0:8080", &settings(true, false)).unwrap();
        check_exposure("0.0.0.0:8080", &settings(false, true)).unwrap();
        check_exposure("127.0.0.1:8080", &settings(false, false)).unwrap();
        check_exposure("[::1]:8080", &settings(false, false)).unwrap();
        check_exposure("localhost:8080", &settings(false, false)).unwrap();
    }

    #[test]
    fn role_limits_parse() {
        assert_eq!(
            parse_role_limit("customer=20").unwrap(),
            (Role::Customer, NonZeroU32::new(20).unwrap())
        );
        assert!(parse_role_limit("customer").is_err());
        assert!(
            parse_role_limit("king=2")
                .unwrap_err()
                .contains("unknown role")
        );
        assert!(parse_role_limit("admin=0").is_err());
    }
}
