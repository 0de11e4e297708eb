//! Where the read-only commands (`inspect`, `replay stream`) read from: a data directory
//! no server holds, or a running server's HTTP API (`--server URL`). Both give the same
//! [`EventJson`] (the API's event view), so the output does not depend on the source.
//! The server is reached over HTTP or HTTPS with a bearer token (see [`crate::remote`]);
//! `--server nats://...` finds the nodes and falls over between them ([`crate::servers`]).

use std::path::PathBuf;
use std::time::Duration;

use eventstore::{Direction, EventId, EventStore, Position, RecordedEvent, StreamId, Version};
use serde::{Deserialize, Serialize};

use crate::data_dir;
use crate::exit::Failure;
use crate::servers::{Repeat, Servers};
use hyper::Method;

/// Events read per store read or per HTTP page (the API's largest page).
const PAGE_EVENTS: usize = 1000;

/// How long connecting to a server may take, and how long a non-live request may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to read: `--data-dir` or `--server`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// The data directory, read directly; it must not be held by a running server
    /// (use --server then).
    #[arg(
        long,
        env = "ANNALS_DATA_DIR",
        default_value = "./annals-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Read through a running server's HTTP API instead of the data directory, e.g.
    /// http://127.0.0.1:8080 or https://annals.example:8443; or nats://HOST:PORT[,...]:
    /// the nodes registered there for service discovery, a ready one first, the next
    /// if one cannot be reached, does not answer in time or answers 5xx.
    #[arg(long, env = "ANNALS_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The token and CA the --server client uses.
    #[command(flatten)]
    pub client: crate::remote::ClientArgs,
}

/// One recorded event as JSON: the same shape as the HTTP API's event view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    /// The event id.
    pub id: String,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its position in the log.
    pub position: u64,
    /// Its type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The schema version of its payload.
    pub schema_version: u32,
    /// RFC 3339, UTC, microseconds.
    pub recorded_at: String,
    /// Correlation, causation, trace, principal, command id, issuer, action, on behalf of
    /// (absent members: not set).
    pub metadata: serde_json::Value,
    /// The payload: decoded JSON (the event's fields, in its type's current schema
    /// version), or a hex string.
    pub payload: serde_json::Value,
    /// `json` or `hex`.
    pub payload_encoding: String,
    /// The URN of the JSON Schema of the JSON payload; absent for hex (and from servers
    /// older than the schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<String>,
}

impl EventJson {
    /// The view of a recorded event, payload decoded by the domain crate owning it.
    pub fn of(event: &RecordedEvent) -> Self {
        let view = api::events::EventView::of(event);
        EventJson {
            id: view.id,
            stream: view.stream,
            version: view.version,
            position: view.position,
            event_type: view.event_type,
            schema_version: view.schema_version,
            recorded_at: view.recorded_at,
            metadata: serde_json::to_value(view.metadata).unwrap_or_default(),
            payload: view.payload,
            payload_encoding: view.payload_encoding.to_owned(),
            payload_schema: view.payload_schema,
        }
    }
}

/// An event for a replay: its view, and its raw payload when read from the log itself.
#[derive(Debug, Clone)]
pub struct SourcedEvent {
    /// The view.
    pub view: EventJson,
    /// The postcard payload (local reads only; a server sends the decoded view).
    pub raw: Option<Vec<u8>>,
}

/// A data directory or a server.
#[derive(Debug)]
pub enum Source {
    /// The store, opened by this process.
    Local(EventStore),
    /// A running server.
    Remote(Box<Server>),
}

impl Source {
    /// Opens the source the arguments name.
    pub fn open(args: &SourceArgs) -> anyhow::Result<Source> {
        match &args.server {
            Some(url) => Ok(Source::Remote(Box::new(Server::new(url, &args.client)?))),
            None => Ok(Source::Local(data_dir::open_existing(&args.data_dir)?)),
        }
    }

    /// Releases the data directory.
    pub async fn close(self) {
        if let Source::Local(store) = self {
            store.close().await;
        }
    }

    /// Streams of `category` (all for `None`) with their last versions, by name.
    pub async fn streams(&self, category: Option<&str>) -> anyhow::Result<Vec<(String, u64)>> {
        match self {
            Source::Local(store) => Ok(store
                .streams(category)?
                .into_iter()
                .map(|(stream, version)| (stream.to_string(), version.0))
                .collect()),
            Source::Remote(server) => server.streams(category).await,
        }
    }

    /// Up to `limit` events of `stream` from version `from` (all for `None`), and the
    /// stream's last version. A stream with no events is [`Failure::NotFound`].
    pub async fn stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: Option<u64>,
    ) -> anyhow::Result<(u64, Vec<SourcedEvent>)> {
        let limit = limit.unwrap_or(u64::MAX);
        let mut events = Vec::new();
        let mut next = from;
        let head = match self {
            Source::Local(store) => {
                let Some(head) = store.stream_head(stream)? else {
                    return Err(unknown_stream(stream));
                };
                while (events.len() as u64) < limit && next <= head.0 {
                    let want = (limit - events.len() as u64).min(PAGE_EVENTS as u64) as usize;
                    let page =
                        store.read_stream(stream, Version(next), Direction::Forward, want)?;
                    let Some(last) = page.last() else { break };
                    next = last.version.0 + 1;
                    events.extend(page.into_iter().map(|event| SourcedEvent {
                        view: EventJson::of(&event),
                        raw: Some(event.payload),
                    }));
                }
                head.0
            }
            Source::Remote(server) => loop {
                let want = (limit - events.len() as u64).min(PAGE_EVENTS as u64);
                let page = server.stream_page(stream, next, want.max(1)).await?;
                let done = page.events.is_empty()
                    || page.next_from > page.last_version
                    || events.len() as u64 + page.events.len() as u64 >= limit;
                next = page.next_from;
                events.extend(
                    page.events
                        .into_iter()
                        .map(|view| SourcedEvent { view, raw: None }),
                );
                if done {
                    events.truncate(limit.min(usize::MAX as u64) as usize);
                    break page.last_version;
                }
            },
        };
        Ok((head, events))
    }

    /// Up to `limit` events of the log from position `from`, calling `visit` on each.
    pub async fn log(
        &self,
        from: u64,
        limit: u64,
        visit: &mut dyn FnMut(EventJson) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut next = from;
        let mut seen = 0u64;
        while seen < limit {
            let want = (limit - seen).min(PAGE_EVENTS as u64) as usize;
            let page: Vec<EventJson> = match self {
                Source::Local(store) => store
                    .read_all(Position(next), want)?
                    .iter()
                    .map(EventJson::of)
                    .collect(),
                Source::Remote(server) => server.log_page(next, want).await?.events,
            };
            let Some(last) = page.last() else { break };
            next = last.position + 1;
            seen += page.len() as u64;
            for event in page {
                visit(event)?;
            }
        }
        Ok(())
    }

    /// The event with this id; [`Failure::NotFound`] if there is none.
    pub async fn event(&self, id: &str) -> anyhow::Result<EventJson> {
        let parsed: EventId = id.parse().map_err(|_| {
            Failure::Usage(format!(
                "invalid event id {:?}: event ids are UUID v7, e.g. 0193a4e2-7c1d-7b3e-9f00-1234567890ab",
                id.chars().take(64).collect::<String>()
            ))
        })?;
        match self {
            Source::Local(store) => match store.read_event(&parsed)? {
                Some(event) => Ok(EventJson::of(&event)),
                None => Err(Failure::NotFound(format!("no event has the id {parsed}")).into()),
            },
            Source::Remote(server) => server.event(&parsed).await,
        }
    }

    /// Follows the log from `from` (the end of the log for `None`), calling `visit` on
    /// each event until it returns false or the source ends.
    pub async fn tail(
        &self,
        from: Option<u64>,
        visit: &mut dyn FnMut(EventJson) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        match self {
            Source::Local(store) => {
                let end = store.next_position().0;
                let from = from.unwrap_or(end);
                if from > end {
                    return Err(Failure::Usage(format!(
                        "--from {from} is beyond the end of the log ({end})"
                    ))
                    .into());
                }
                let mut subscription = store.subscribe(Position(from));
                while let Some(event) = subscription.next().await {
                    if !visit(EventJson::of(&event?))? {
                        break;
                    }
                }
                Ok(())
            }
            Source::Remote(server) => server.tail(from, visit).await,
        }
    }
}

fn unknown_stream(stream: &StreamId) -> anyhow::Error {
    Failure::NotFound(format!(
        "stream {stream} has no events (list them with `annals inspect streams`)"
    ))
    .into()
}

/// A page of one stream, as the API sends it.
#[derive(Debug, Deserialize)]
pub struct StreamPage {
    /// The stream's last version.
    pub last_version: u64,
    /// The events.
    pub events: Vec<EventJson>,
    /// The `from` of the next page.
    pub next_from: u64,
}

/// A page of the log, as the API sends it.
#[derive(Debug, Deserialize)]
pub struct LogPage {
    /// The events.
    pub events: Vec<EventJson>,
}

#[derive(Debug, Deserialize)]
struct StreamList {
    streams: Vec<StreamHead>,
    /// The `after` of the next page; absent on the last page.
    next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamHead {
    stream: String,
    last_version: u64,
}

/// A running `annals serve`, through its HTTP API: the one at an `http(s)://` URL, or
/// any of the nodes registered with the NATS at a `nats://` URL, tried in
/// [`crate::servers`]' order with its failover (every request here is a read).
#[derive(Debug)]
pub struct Server {
    servers: Servers,
}

impl Server {
    /// A client of the server at `url` (`http://host:port` or `https://host:port`; or
    /// `nats://host:port[,...]`: the nodes registered there), with the token and CA of
    /// `client`.
    pub fn new(url: &str, client: &crate::remote::ClientArgs) -> anyhow::Result<Server> {
        Ok(Server {
            servers: Servers::new(url, client, SERVER_TIMEOUT)?,
        })
    }

    /// `GET` the path `segments` with `query` as JSON from the first server that
    /// answers; a refusal or an error status is a [`Failure`].
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let path = crate::servers::path(segments, query);
        let (answer, _) = self
            .servers
            .json(Method::GET, &path, None, Repeat::Safe)
            .await?;
        Ok(answer)
    }

    /// Every stream, following the server's pages.
    async fn streams(&self, category: Option<&str>) -> anyhow::Result<Vec<(String, u64)>> {
        let mut streams = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(category) = category {
                query.push(("category", category.to_owned()));
            }
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page: StreamList = self.get(&["api", "v1", "streams"], &query).await?;
            streams.extend(
                page.streams
                    .into_iter()
                    .map(|head| (head.stream, head.last_version)),
            );
            match page.next_after {
                // Pages move forward in name order; a server that says otherwise would
                // have this loop forever.
                Some(next) if after.as_ref().is_some_and(|after| &next <= after) => {
                    return Err(Failure::Server(format!(
                        "the server's stream list does not move forward: after {after:?} it gave {next:?}",
                        after = after.as_deref().unwrap_or_default()
                    ))
                    .into());
                }
                Some(next) => after = Some(next),
                None => return Ok(streams),
            }
        }
    }

    async fn stream_page(
        &self,
        stream: &StreamId,
        from: u64,
        limit: u64,
    ) -> anyhow::Result<StreamPage> {
        let query = [("from", from.to_string()), ("limit", limit.to_string())];
        self.get(&["api", "v1", "streams", stream.as_str()], &query)
            .await
            .map_err(|error| match error.downcast_ref::<Failure>() {
                Some(Failure::NotFound(_)) => unknown_stream(stream),
                _ => error,
            })
    }

    async fn log_page(&self, from: u64, limit: usize) -> anyhow::Result<LogPage> {
        let query = [("from", from.to_string()), ("limit", limit.to_string())];
        self.get(&["api", "v1", "log"], &query).await
    }

    async fn event(&self, id: &EventId) -> anyhow::Result<EventJson> {
        self.get(&["api", "v1", "events", &id.to_string()], &[])
            .await
    }

    /// Reads the server's live log (Server-Sent Events) until `visit` returns false or
    /// the server ends the stream.
    async fn tail(
        &self,
        from: Option<u64>,
        visit: &mut dyn FnMut(EventJson) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let query: Vec<(&str, String)> = from
            .map(|from| ("from", from.to_string()))
            .into_iter()
            .collect();
        let path = crate::servers::path(&["api", "v1", "log", "live"], &query);
        let (mut response, node) = self.servers.open(&path).await?;
        let node = node.name;
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|error| {
                Failure::Server(format!("the live log from {node} broke off: {error:#}"))
            })?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            buffer.extend_from_slice(&chunk);
            // An event ends with a blank line.
            while let Some(end) = find_blank_line(&buffer) {
                let block: Vec<u8> = buffer.drain(..end.1).collect();
                let text = String::from_utf8_lossy(&block[..end.0]).into_owned();
                if let Some(event) = parse_sse_event(&text)?
                    && !visit(event)?
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Where the first blank line of `buffer` is: (end of the event's text, end of the blank
/// line).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// One Server-Sent Event: an event's JSON (`None` for a comment or keep-alive), or the
/// problem of an `error` event as a failure.
fn parse_sse_event(text: &str) -> anyhow::Result<Option<EventJson>> {
    let mut kind = "message";
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    if kind == "error" {
        let detail = serde_json::from_str::<serde_json::Value>(&data)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or(data);
        return Err(Failure::Server(format!("the server ended the live log: {detail}")).into());
    }
    serde_json::from_str(&data).map(Some).map_err(|error| {
        Failure::Server(format!(
            "the server sent an event annals cannot read: {error}"
        ))
        .into()
    })
}

/// An error and its causes, on one line.
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
