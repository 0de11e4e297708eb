//! `annals token mint`: sign a development token with the server's HS256 secret file,
//! for scripts and for trying the API with authentication on.
//!
//! The token goes to stdout as one line and nowhere else (no log line holds it), so
//! `export ANNALS_TOKEN=$(annals token mint ...)` works.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use security::Role;
use security::auth::{self, MintClaims};

use crate::exit::Failure;

const EXAMPLES: &str = "\
Examples:
  head -c 48 /dev/urandom | base64 > jwt-secret
  annals token mint --secret-file jwt-secret --sub ops-1 --role operator
  annals token mint --secret-file jwt-secret --sub alice --role customer --customer-id cust-42 --ttl 15m
  export ANNALS_TOKEN=$(annals token mint --secret-file jwt-secret --sub root --role admin --ttl 7d)";

/// Tokens for development and scripts.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print an HS256 token signed with a secret file, valid for --ttl, on one line.
    #[command(after_help = EXAMPLES)]
    Mint(MintArgs),
}

/// The claims and signing key of the token to mint.
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// The HS256 secret file the server uses (`--auth-jwt-secret-file`): at least 32
    /// bytes, a trailing newline ignored.
    #[arg(long, env = "ANNALS_AUTH_JWT_SECRET_FILE")]
    secret_file: PathBuf,
    /// Who the token is for (the `sub` claim).
    #[arg(long)]
    sub: String,
    /// A role of the token: customer, clerk, operator or admin; repeat for several.
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// The customer a `customer` token acts for (the `customer_id` claim).
    #[arg(long)]
    customer_id: Option<String>,
    /// How long the token is valid: a number and a unit, `30s`, `15m`, `1h` or `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The `iss` claim, when the server checks one (`--auth-issuer`).
    #[arg(long, env = "ANNALS_AUTH_ISSUER")]
    issuer: Option<String>,
    /// The `aud` claim, when the server checks one (`--auth-audience`).
    #[arg(long, env = "ANNALS_AUTH_AUDIENCE")]
    audience: Option<String>,
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint(args) => {
            println!("{}", mint(&args)?);
            Ok(())
        }
    }
}

fn mint(args: &MintArgs) -> anyhow::Result<String> {
    let secret = auth::read_secret_file(&args.secret_file)
        .map_err(|error| Failure::Usage(error.to_string()))?;
    let claims = MintClaims {
        sub: args.sub.clone(),
        roles: args.roles.clone(),
        customer_id: args.customer_id.clone(),
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
    };
    auth::mint(&secret, &claims, args.ttl)
        .map_err(|error| Failure::Usage(error.to_string()))
        .context("cannot mint the token")
}

/// A TTL such as `30s`, `15m`, `1h` or `7d` (a positive whole number and one unit).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("{text:?} is not a TTL: use a number and a unit, e.g. 30s, 15m, 1h, 7d");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    match number.checked_mul(unit_seconds) {
        Some(0) => Err(format!("{text:?}: a TTL must be longer than zero")),
        Some(seconds) => Ok(Duration::from_secs(seconds)),
        None => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use security::Principal;
    use security::auth::{AuthConfig, Authenticator};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TokenCommand,
    }

    fn mint_args(arguments: &[&str]) -> MintArgs {
        let mut line = vec!["annals", "mint"];
        line.extend_from_slice(arguments);
        match Cli::try_parse_from(line)
            .expect("the arguments parse")
            .command
        {
            TokenCommand::Mint(args) => args,
        }
    }

    #[tokio::test]
    async fn the_minted_token_verifies_with_the_same_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("jwt-secret");
        std::fs::write(&secret_file, "a-secret-for-the-cli-test-of-40-bytes!!\n").unwrap();
        let secret_arg = secret_file.to_str().unwrap();
        let args = mint_args(&[
            "--secret-file",
            secret_arg,
            "--sub",
            "alice",
            "--role",
            "customer",
            "--role",
            "clerk",
            "--customer-id",
            "cust-42",
            "--ttl",
            "15m",
            "--issuer",
            "annals-dev",
            "--audience",
            "annals",
        ]);
        let token = mint(&args).unwrap();
        assert!(!token.contains('\n'));
        let config = AuthConfig {
            jwt_secret_file: Some(secret_file),
            issuer: Some("annals-dev".to_owned()),
            audience: Some("annals".to_owned()),
            ..AuthConfig::default()
        };
        let authenticator = Authenticator::new(&config).await.unwrap();
        let principal = authenticator
            .authenticate(Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(
            principal,
            Ok(Principal {
                subject: "alice".to_owned(),
                issuer: Some("annals-dev".to_owned()),
                roles: vec![Role::Customer, Role::Clerk],
                customer_id: Some("cust-42".to_owned()),
            })
        );
    }

    #[test]
    fn ttls_parse_in_seconds_minutes_hours_and_days() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "",
            "1",
            "h",
            "1w",
            "-1h",
            "1.5h",
            "0s",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_role_is_required_and_must_be_known() {
        let line = ["annals", "mint", "--secret-file", "f", "--sub", "s"];
        assert!(Cli::try_parse_from(line).is_err(), "no role");
        let line = [
            "annals",
            "mint",
            "--secret-file",
            "f",
            "--sub",
            "s",
            "--role",
            "wizard",
        ];
        let error = Cli::try_parse_from(line).unwrap_err().to_string();
        assert!(error.contains("unknown role"), "{error}");
    }

    #[test]
    fn a_short_secret_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("short");
        std::fs::write(&secret_file, "short\n").unwrap();
        let args = mint_args(&[
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--sub",
            "s",
            "--role",
            "admin",
        ]);
        let error = mint(&args).unwrap_err();
        assert!(
            error
                .downcast_ref::<Failure>()
                .is_some_and(|f| matches!(f, Failure::Usage(_)))
        );
        assert!(error.to_string().contains("at least 32"), "{error}");
    }
}
