//! Where a `--server` value leads, for every command that talks to a running `annals
//! serve` (`inspect`, `replay stream`, `read-models parked|retry`, `chaos
//! inject|list|clear|run`): a list of candidate servers, and one request loop over them.
//!
//! - `http://HOST:PORT` or `https://...` is one candidate.
//! - `nats://HOST:PORT[,...]` (or `tls://`, `ws://`, `wss://`) is the nodes registered
//!   there for service discovery ([`crate::cluster::discover`]), in
//!   [`crate::cluster::nodes_to_try`]'s order: healthy and ready first, least lag first.
//!
//! A request goes to the first candidate and falls over to the next when the connection
//! fails, when no answer comes within the timeout, or when the answer is a 5xx. What holds:
//! - A 4xx is an answer (404, 401, 403, 400, 409, 422): it is never passed over.
//! - A request that is not safe to send twice ([`Repeat::OnlyUnsent`]: a `POST` that
//!   creates something) goes to the next candidate only when the connection to the
//!   previous one failed before the request was sent; once sent, its answer (a 5xx too)
//!   or its timeout is the outcome.
//! - The last candidate's answer is returned as it is: one `http://` URL behaves as a
//!   plain client (its 5xx is its answer, for the caller to judge).
//! - The request and its body are bounded by the timeout per candidate; a live stream
//!   ([`Servers::open`]) only until its headers arrive.
//! - The NATS URL may hold credentials: messages show it redacted.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;

use crate::exit::Failure;
use crate::remote::{Client, ClientArgs, Response, Unreachable};

/// Whether a request may reach a second server after the first may have acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// A read, or a change that is the same done twice (`DELETE` of every fault, a
    /// read model's retry): falls over on a failed connection, a timeout or a 5xx.
    Safe,
    /// A change that a second sending would do again (`POST` of a fault): falls over only
    /// when the connection failed before anything was sent.
    OnlyUnsent,
}

/// The servers a `--server` value names, and a client for them.
#[derive(Debug)]
pub struct Servers {
    target: Target,
    client: Client,
    timeout: Duration,
    /// The candidates, found on NATS at the first request (or pinned).
    nodes: tokio::sync::OnceCell<Vec<Node>>,
}

/// What `--server` said.
#[derive(Debug)]
enum Target {
    /// One server, at this base URL.
    Http(reqwest::Url),
    /// The nodes registered with this NATS (comma-separated URLs; may hold credentials).
    Nats(String),
}

/// One candidate: its base URL and its name in messages.
#[derive(Debug, Clone)]
pub struct Node {
    /// The base URL requests' paths are appended to.
    pub base: reqwest::Url,
    /// `node ID at URL` (found on NATS), or the URL.
    pub name: String,
}

/// An answer of one server.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The server that answered.
    pub node: Node,
    /// The body: whole, or (a success of [`Servers::open`]) still to read.
    body: Body,
    /// The candidates passed over before, each with why.
    passed: Vec<String>,
}

#[derive(Debug)]
enum Body {
    Whole(Bytes),
    Streaming(Response),
}

/// Whether `url` names NATS servers rather than an HTTP server.
pub fn is_nats_url(url: &str) -> bool {
    let scheme = url.trim().split("://").next().unwrap_or_default();
    matches!(scheme, "nats" | "tls" | "ws" | "wss") && url.contains("://")
}

/// The path `segments` (each percent-encoded) with `query`, e.g.
/// `/api/v1/streams/stock-apple?from=0`.
pub fn path(segments: &[&str], query: &[(&str, String)]) -> String {
    let mut url = reqwest::Url::parse("http://annals.invalid/").expect("a valid URL");
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear();
        path.extend(segments);
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

impl Servers {
    /// The servers `url` names (`http(s)://host:port`, or `nats://host:port[,...]`: the
    /// nodes registered there), reached with `client`'s token and CA; `timeout` bounds
    /// connecting to each and each request to it.
    pub fn new(url: &str, client: &ClientArgs, timeout: Duration) -> anyhow::Result<Servers> {
        let target = if is_nats_url(url) {
            crate::cluster::server_addresses(url)?;
            Target::Nats(url.to_owned())
        } else {
            let base = reqwest::Url::parse(url)
                .ok()
                .filter(|base| matches!(base.scheme(), "http" | "https") && base.has_host())
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "invalid --server {url:?}: expected an http URL such as \
                         http://127.0.0.1:8080, or nats://HOST:PORT to find the nodes there"
                    ))
                })?;
            Target::Http(base)
        };
        Ok(Servers {
            target,
            client: Client::new(client, timeout)?,
            timeout,
            nodes: tokio::sync::OnceCell::new(),
        })
    }

    /// Whether the servers were found on NATS (several may answer).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Nats(_))
    }

    /// Whether the client sends a token.
    pub fn has_token(&self) -> bool {
        self.client.has_token()
    }

    /// The servers in messages: the URL, or the NATS they are found through (redacted).
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Http(base) => base.to_string(),
            Target::Nats(url) => format!("the nodes on NATS {}", outbox::config::redact(url)),
        }
    }

    /// The candidates, in order; found on NATS at the first call.
    pub async fn nodes(&self) -> anyhow::Result<&[Node]> {
        let nodes = self
            .nodes
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Http(base) => Ok::<_, anyhow::Error>(vec![Node {
                        base: base.clone(),
                        name: base.as_str().trim_end_matches('/').to_owned(),
                    }]),
                    Target::Nats(url) => {
                        let wait = crate::cluster::DISCOVERY_WAIT;
                        let found = crate::cluster::discover(url, wait).await?;
                        let nodes: Vec<Node> = crate::cluster::nodes_to_try(found)
                            .into_iter()
                            .filter_map(|node| {
                                let base = reqwest::Url::parse(&node.http).ok()?;
                                Some(Node {
                                    name: format!("node {} at {}", node.node_id, node.http),
                                    base,
                                })
                            })
                            .collect();
                        if nodes.is_empty() {
                            return Err(crate::cluster::no_node(url, wait).into());
                        }
                        tracing::debug!(nodes = ?nodes.iter().map(|node| &node.name).collect::<Vec<_>>(), "nodes found on NATS");
                        Ok(nodes)
                    }
                }
            })
            .await?;
        Ok(nodes)
    }

    /// Keeps only the first candidate that answers `GET path` with a success (or a 4xx),
    /// for a command whose requests must all reach the same server (a chaos experiment:
    /// faults live in one node's process). Gives that server.
    pub async fn pin(&mut self, path: &str) -> anyhow::Result<Node> {
        let reply = self.send(Method::GET, path, None, Repeat::Safe).await?;
        let node = reply.node.clone();
        if self.is_cluster() {
            tracing::info!(node = %node.name, "staying on this node");
        }
        self.nodes = tokio::sync::OnceCell::new_with(Some(vec![node.clone()]));
        Ok(node)
    }

    /// `method path` (with `body` as JSON) to the first candidate that answers, as the
    /// module says: the status and the JSON body (`null` when empty or not JSON) of the
    /// answer, whatever its status, and the server that gave it. No answer from the last
    /// candidate is a [`Failure::Server`] naming every candidate tried.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> anyhow::Result<(u16, Value, Node)> {
        let reply = self.send(method, path, body, repeat).await?;
        let value = reply.json_or_null();
        Ok((reply.status, value, reply.node))
    }

    /// `method path` as [`Servers::call`]; a status other than a success is the
    /// [`Failure`] it stands for ([`crate::remote::refusal`]); the JSON answer is read as
    /// `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> anyhow::Result<(T, Node)> {
        let reply = self.send(method.clone(), path, body, repeat).await?;
        let reply = self.success(reply, &method, path)?;
        let Body::Whole(bytes) = &reply.body else {
            unreachable!("send reads the whole body")
        };
        let answer = serde_json::from_slice(bytes).map_err(|error| {
            Failure::Server(format!(
                "the answer of {} to {method} {path} is not what annals expects: {error}",
                reply.node.name
            ))
        })?;
        Ok((answer, reply.node))
    }

    /// `GET path` for a body to read as it comes (a live stream): the answer's body of a
    /// success, and the server that gave it; any other status is the [`Failure`] it
    /// stands for. Falls over as a [`Repeat::Safe`] request until the headers arrived.
    pub async fn open(&self, path: &str) -> anyhow::Result<(Response, Node)> {
        let reply = self
            .exchange(Method::GET, path, None, Repeat::Safe, true)
            .await?;
        let reply = self.success(reply, &Method::GET, path)?;
        match reply.body {
            Body::Streaming(response) => Ok((response, reply.node)),
            Body::Whole(_) => unreachable!("a success of a streaming exchange streams"),
        }
    }

    /// `reply` if it is a success, else the failure its status stands for, after the
    /// candidates passed over.
    fn success(&self, reply: Reply, method: &Method, path: &str) -> anyhow::Result<Reply> {
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let failure = crate::remote::refusal(
            reply.status,
            &format!("{method} {path}"),
            self.has_token(),
            &reply.json_or_null(),
        );
        if reply.passed.is_empty() || reply.status < 500 {
            return Err(failure.into());
        }
        Err(self
            .none_answered(&reply.passed, &format!("{}: {failure}", reply.node.name))
            .into())
    }

    fn none_answered(&self, passed: &[String], last: &str) -> Failure {
        let mut tried = passed.to_vec();
        tried.push(last.to_owned());
        Failure::Server(format!(
            "no node of {} answered: {}",
            self.describe(),
            tried.join("; ")
        ))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> anyhow::Result<Reply> {
        self.exchange(method, path, body, repeat, false).await
    }

    /// The request loop: each candidate in turn until one answers as the module says;
    /// the body is read whole within the timeout, except a success when `streaming`.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
        streaming: bool,
    ) -> anyhow::Result<Reply> {
        let nodes = self.nodes().await?;
        let mut passed: Vec<String> = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let last = index + 1 == nodes.len();
            let url = format!("{}{path}", node.base.as_str().trim_end_matches('/'));
            let attempt = async {
                let response = self.client.send(method.clone(), &url, body).await?;
                let status = response.status().as_u16();
                let body = if streaming && (200..300).contains(&status) {
                    Body::Streaming(Response::from_body(response.into_body()))
                } else {
                    let collected = response.into_body().collect().await.map_err(|error| {
                        anyhow::Error::new(Unreachable {
                            cause: crate::source::causes(&error),
                            before_sending: false,
                        })
                    })?;
                    Body::Whole(collected.to_bytes())
                };
                Ok::<_, anyhow::Error>((status, body))
            };
            let failure = match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok((status, body))) => {
                    let reply = Reply {
                        status,
                        node: node.clone(),
                        body,
                        passed,
                    };
                    if last || !passes_over(Outcome::Answered(status), repeat) {
                        tracing::debug!(node = %node.name, %method, %path, status, "answered");
                        return Ok(reply);
                    }
                    let failure = crate::remote::refusal(
                        status,
                        &format!("{method} {path}"),
                        self.has_token(),
                        &reply.json_or_null(),
                    );
                    passed = reply.passed;
                    failure.to_string()
                }
                Ok(Err(error)) => {
                    let unreachable = error.downcast::<Unreachable>()?;
                    let outcome = Outcome::Unreachable {
                        before_sending: unreachable.before_sending,
                    };
                    if last || !passes_over(outcome, repeat) {
                        return Err(self.unreachable(node, &passed, &unreachable.cause).into());
                    }
                    format!("cannot reach it: {}", unreachable.cause)
                }
                Err(_) => {
                    let failure = format!("no answer to {method} {path} within {:?}", self.timeout);
                    if last || !passes_over(Outcome::TimedOut, repeat) {
                        return Err(self.unreachable(node, &passed, &failure).into());
                    }
                    failure
                }
            };
            tracing::debug!(node = %node.name, %failure, "trying the next node");
            passed.push(format!("{}: {failure}", node.name));
        }
        unreachable!("there is at least one candidate")
    }

    /// No answer from `node`, the candidates `passed` over before.
    fn unreachable(&self, node: &Node, passed: &[String], cause: &str) -> Failure {
        if self.is_cluster() {
            let cause = if cause.starts_with("no answer") {
                cause.to_owned()
            } else {
                format!("cannot reach it: {cause}")
            };
            self.none_answered(passed, &format!("{}: {cause}", node.name))
        } else if cause.starts_with("no answer") {
            Failure::Server(format!("the server at {}: {cause}", node.base))
        } else {
            Failure::Server(format!("cannot reach the server at {}: {cause}", node.base))
        }
    }
}

/// What sending a request to one candidate came to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// An answer with this status.
    Answered(u16),
    /// No answer: the connection failed, before the request was sent or after.
    Unreachable { before_sending: bool },
    /// No answer within the timeout.
    TimedOut,
}

/// Whether a request that came to `outcome` goes to the next candidate (if there is
/// one): a 4xx (or a success) is an answer; a request not safe to repeat goes on only
/// when nothing was sent.
fn passes_over(outcome: Outcome, repeat: Repeat) -> bool {
    match (outcome, repeat) {
        (Outcome::Answered(status), Repeat::Safe) => status >= 500,
        (Outcome::Unreachable { .. } | Outcome::TimedOut, Repeat::Safe) => true,
        (Outcome::Unreachable { before_sending }, Repeat::OnlyUnsent) => before_sending,
        (Outcome::Answered(_) | Outcome::TimedOut, Repeat::OnlyUnsent) => false,
    }
}

impl Reply {
    /// The body as JSON; `null` when it is empty, not JSON, or still to read.
    fn json_or_null(&self) -> Value {
        match &self.body {
            Body::Whole(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            Body::Streaming(_) => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_passes_over_no_answer_and_5xx_but_never_an_answer() {
        let safe = |outcome| passes_over(outcome, Repeat::Safe);
        for status in [500, 502, 503, 504] {
            assert!(safe(Outcome::Answered(status)), "{status}");
        }
        for status in [200, 204, 400, 401, 403, 404, 409, 422, 429] {
            assert!(!safe(Outcome::Answered(status)), "{status}");
        }
        assert!(safe(Outcome::Unreachable {
            before_sending: true
        }));
        assert!(safe(Outcome::Unreachable {
            before_sending: false
        }));
        assert!(safe(Outcome::TimedOut));
    }

    #[test]
    fn a_change_not_safe_to_repeat_passes_over_only_what_was_never_sent() {
        let once = |outcome| passes_over(outcome, Repeat::OnlyUnsent);
        assert!(once(Outcome::Unreachable {
            before_sending: true
        }));
        assert!(!once(Outcome::Unreachable {
            before_sending: false
        }));
        assert!(!once(Outcome::TimedOut));
        for status in [200, 404, 422, 500, 503] {
            assert!(!once(Outcome::Answered(status)), "{status}");
        }
    }

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        assert_eq!(
            path(
                &["api", "v1", "streams", "order-a/b c"],
                &[("from", "0".into())]
            ),
            "/api/v1/streams/order-a%2Fb%20c?from=0"
        );
        assert_eq!(path(&["api", "v1", "log"], &[]), "/api/v1/log");
    }

    #[test]
    fn nats_urls_are_told_from_http_urls() {
        assert!(is_nats_url("nats://127.0.0.1:4222,nats://127.0.0.1:4223"));
        assert!(is_nats_url("tls://n1:4222"));
        assert!(!is_nats_url("http://127.0.0.1:8080"));
        assert!(!is_nats_url("nats"));
    }

    #[test]
    fn an_invalid_server_is_a_usage_error() {
        let error =
            Servers::new("ftp://x", &ClientArgs::default(), Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(error.downcast_ref::<Failure>(), Some(Failure::Usage(_))),
            "{error}"
        );
    }
}
