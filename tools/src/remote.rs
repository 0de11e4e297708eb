//! The HTTP(S) client of a running server (`--server URL`): the bearer token it sends
//! (`--token`, `ANNALS_TOKEN`, `--token-file`), the CA it trusts for `https://` URLs
//! (`--ca-cert`, besides the system's roots), and what a refusal means: a 401 or a 403
//! becomes a [`Failure`] that says what to do, from the status and the problem body alone
//! ([`refusal`], a pure function). Which server a request goes to, and when it goes to
//! the next, is [`crate::servers`]' part.
//!
//! hyper with rustls (ring) rather than reqwest: reqwest's rustls feature brings
//! aws-lc-rs, and its provider-less variant makes every `reqwest::Client` of the
//! workspace panic unless a provider is installed first. The token is never printed:
//! [`Token`]'s `Debug` hides it and its header is marked sensitive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::exit::Failure;

/// A bearer token, kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token as given on the command line or in `ANNALS_TOKEN` (surrounding white
    /// space removed).
    pub fn parse(text: &str) -> Result<Token, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("a token is printable ASCII without spaces (a JWT is)".into());
        }
        Ok(Token(token.to_owned()))
    }

    /// The token in the file `path` (its first line).
    pub fn read(path: &Path) -> anyhow::Result<Token> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Failure::Usage(format!(
                "cannot read the token file {}: {error}",
                path.display()
            ))
        })?;
        Token::parse(text.lines().next().unwrap_or_default()).map_err(|reason| {
            Failure::Usage(format!("the token file {}: {reason}", path.display())).into()
        })
    }

    fn header(&self) -> anyhow::Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| Failure::Usage("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// How to talk to the server: the flags every command with `--server` takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// The bearer token sent to --server (a JWT; `annals token mint` makes one for
    /// development). Never printed.
    #[arg(
        long,
        env = "ANNALS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = Token::parse,
        conflicts_with = "token_file"
    )]
    pub token: Option<Token>,
    /// Read the bearer token from this file (its first line) instead.
    #[arg(long, env = "ANNALS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for an https:// --server, besides the
    /// system's roots (a private CA, a test certificate).
    #[arg(long, env = "ANNALS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP(S) client that sends the token with every request.
#[derive(Debug)]
pub struct Client {
    http: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    token: Option<Token>,
}

/// A successful answer, its body still to read.
#[derive(Debug)]
pub struct Response {
    body: hyper::body::Incoming,
}

/// Why a request failed before any answer.
#[derive(Debug)]
pub struct Unreachable {
    /// The error and its causes, on one line.
    pub cause: String,
    /// Whether it failed while connecting, before the request was sent (then no server
    /// can have acted on it).
    pub before_sending: bool,
}

impl Client {
    /// A client with `args`' token and CA, whose connections take at most
    /// `connect_timeout` to open.
    pub fn new(args: &ClientArgs, connect_timeout: Duration) -> anyhow::Result<Client> {
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(Token::read(path)?),
            (None, None) => None,
        };
        let tls = crate::tls::client_config(args.ca_cert.as_deref())?;
        let mut plain = HttpConnector::new();
        plain.enforce_http(false);
        plain.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(plain);
        let http =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Client { http, token })
    }

    /// Whether the client sends a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `method url` (with `body` as JSON, if any): the answer's status and headers, its
    /// body still to read; no answer at all is an [`Unreachable`] error, which says
    /// whether the request was sent.
    pub(crate) async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.header()?);
        }
        let content = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body)?)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(content))
            .with_context(|| format!("cannot make a request to {url}"))?;
        self.http.request(request).await.map_err(|error| {
            anyhow::Error::new(Unreachable {
                cause: crate::source::causes(&error),
                before_sending: error.is_connect(),
            })
        })
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for Unreachable {}

impl Response {
    /// An answer whose body is `body`.
    pub(crate) fn from_body(body: hyper::body::Incoming) -> Response {
        Response { body }
    }

    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(error)) => return Err(anyhow::anyhow!(crate::source::causes(&error))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }
}

/// The failure an unsuccessful `status` to `request` (e.g. `GET /api/v1/log`) stands
/// for, with the problem body's detail: 401 and 403 say what to do about the token, 404
/// is not found, 400 bad usage, anything else a server failure. `token_sent` says
/// whether the request carried a token.
pub fn refusal(
    status: u16,
    request: &str,
    token_sent: bool,
    problem: &serde_json::Value,
) -> Failure {
    let detail = problem["detail"]
        .as_str()
        .or_else(|| problem["title"].as_str())
        .map(str::to_owned);
    let reason = detail.clone().unwrap_or_else(|| format!("status {status}"));
    match status {
        401 if token_sent => Failure::Unauthenticated(format!(
            "the server refused the token ({reason}): pass a valid --token or ANNALS_TOKEN \
             (annals token mint ... for development)"
        )),
        401 => Failure::Unauthenticated(format!(
            "the server requires a token ({reason}): pass --token or ANNALS_TOKEN \
             (annals token mint ... for development)"
        )),
        403 => {
            let action = problem["action"]
                .as_str()
                .map_or_else(|| request.to_owned(), str::to_owned);
            Failure::Forbidden(format!(
                "the server's policy denies {action} to this token's principal ({reason})"
            ))
        }
        404 => Failure::NotFound(reason),
        400 => Failure::Usage(reason),
        _ => Failure::Server(format!(
            "the server answered {status} to {request}: {reason}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refused_token_says_to_pass_a_valid_one() {
        let problem = json!({"type": "about:blank", "title": "Unauthorized", "status": 401,
            "detail": "the token expired at 2026-11-30T10:00:00Z"});
        let failure = refusal(401, "GET /api/v1/log", true, &problem);
        assert!(matches!(failure, Failure::Unauthenticated(_)));
        assert_eq!(
            failure.to_string(),
            "the server refused the token (the token expired at 2026-11-30T10:00:00Z): pass a \
             valid --token or ANNALS_TOKEN (annals token mint ... for development)"
        );
    }

    #[test]
    fn a_missing_token_says_to_pass_one() {
        let failure = refusal(
            401,
            "GET /api/v1/log",
            false,
            &json!({"detail": "no bearer token"}),
        );
        assert!(matches!(failure, Failure::Unauthenticated(_)));
        assert!(
            failure.to_string().starts_with(
                "the server requires a token (no bearer token): pass --token or ANNALS_TOKEN"
            ),
            "{failure}"
        );
    }

    #[test]
    fn a_denial_names_the_action_from_the_problem_or_the_request() {
        let problem = json!({"status": 403, "detail": "customers read only their own orders",
            "action": "log.read"});
        let failure = refusal(403, "GET /api/v1/log", true, &problem);
        assert!(matches!(failure, Failure::Forbidden(_)));
        assert_eq!(
            failure.to_string(),
            "the server's policy denies log.read to this token's principal (customers read only \
             their own orders)"
        );
        let bare = refusal(
            403,
            "GET /api/v1/log?from=0",
            true,
            &serde_json::Value::Null,
        );
        assert_eq!(
            bare.to_string(),
            "the server's policy denies GET /api/v1/log?from=0 to this token's principal \
             (status 403)"
        );
    }

    #[test]
    fn other_statuses_keep_their_meaning() {
        assert!(matches!(
            refusal(404, "GET /x", true, &json!({"detail": "no such event"})),
            Failure::NotFound(detail) if detail == "no such event"
        ));
        assert!(matches!(
            refusal(400, "GET /x", true, &json!({})),
            Failure::Usage(_)
        ));
        let failure = refusal(503, "GET /x", false, &json!({"detail": "store-failed"}));
        assert!(matches!(failure, Failure::Server(_)));
        assert_eq!(
            failure.to_string(),
            "the server answered 503 to GET /x: store-failed"
        );
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(Token::parse("  ").is_err());
        assert!(Token::parse("a b").is_err());
        let token = Token::parse(" eyJhbGciOiJIUzI1NiJ9.e30.sig \n").unwrap();
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert!(token.header().unwrap().is_sensitive());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc.def.ghi\n").unwrap();
        assert_eq!(Token::read(&file).unwrap().0, "abc.def.ghi");
        let missing = dir.path().join("missing");
        let error = Token::read(&missing).unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }
}
