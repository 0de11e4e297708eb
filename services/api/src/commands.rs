//! What every command route (`POST`) shares: reading `If-Match` and `Idempotency-Key`,
//! queueing commands on one aggregate, running the repository and shaping the answer
//! (`{stream, version, position}` with `ETag: "<version>"`). The routes themselves live
//! with their resource in [`crate::routes`].

use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eventstore::{
    Aggregate, CommandOptions, Committed, ExecuteError, Metadata, Repository, Version,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{etag, idempotency_key, if_match, traceparent};
use crate::gate::{Caller, Identity};
use crate::idempotency;
use crate::problem::{self, ApiError, DomainError, idempotency_key_reused};

/// What a command recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    /// The aggregate's stream.
    #[schema(example = "stock-apple")]
    pub stream: String,
    /// The stream's version after the command (also the `ETag`).
    pub version: u64,
    /// The log position of the command's last event.
    pub position: u64,
}

/// The headers a command reads, and what makes a retry "the same request".
#[derive(Debug)]
pub(crate) struct CommandRequest {
    if_match: Option<Version>,
    key: Option<String>,
    traceparent: Option<String>,
    fingerprint: [u8; 32],
    /// Who sent it, when the server authenticates requests.
    caller: Option<Arc<Caller>>,
}

impl CommandRequest {
    /// Reads the headers of a command on `route` (its template) sent by `identity` and
    /// fingerprints it. The fingerprint of an authenticated request includes its
    /// principal, so that nobody else can replay its answer under its idempotency key.
    pub(crate) fn new<T: Serialize>(
        route: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &T,
        identity: Identity,
    ) -> Result<Self, ApiError> {
        let if_match = if_match(headers)?;
        let key = idempotency_key(headers)?;
        let body = serde_json::to_value(body).map_err(|error| ApiError::internal(&error))?;
        let mut fingerprint = idempotency::fingerprint(route, uri.path(), if_match, &body);
        if let Some(caller) = &identity.0 {
            let principal = &caller.principal;
            let mut hasher = blake3::Hasher::new();
            hasher.update(&fingerprint);
            for part in [
                principal.issuer.as_deref().unwrap_or(""),
                &principal.subject,
            ] {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            fingerprint = *hasher.finalize().as_bytes();
        }
        Ok(CommandRequest {
            fingerprint,
            if_match,
            key,
            traceparent: traceparent(headers),
            caller: identity.0,
        })
    }

    /// The metadata of the events of the command `command_id`: correlation, trace and,
    /// when authenticated, who caused them (subject and issuer, never the token) and the
    /// action the policy allowed.
    fn metadata(&self, command_id: Uuid) -> Metadata {
        let caller = self.caller.as_deref();
        Metadata {
            correlation_id: Some(command_id),
            // The request's span, which continues the client's trace if it sent one.
            traceparent: trace_context::current().or_else(|| self.traceparent.clone()),
            principal: caller.map(|caller| caller.principal.subject.clone()),
            issuer: caller.and_then(|caller| caller.principal.issuer.clone()),
            action: caller.map(|caller| caller.action.to_owned()),
            ..Metadata::default()
        }
    }
}

/// How one command runs: its id, its expected version, its metadata.
#[derive(Debug)]
pub(crate) struct CommandContext {
    /// The API the command runs in.
    pub(crate) state: AppState,
    options: CommandOptions,
    /// Whether the command id derives from an idempotency key (so it may have run
    /// before).
    keyed: bool,
}

impl CommandContext {
    /// Runs `command` on the aggregate `id` (queued on its stream by the repository);
    /// store and domain errors become problems.
    pub(crate) async fn execute<A>(
        &self,
        repository: &Repository<A>,
        id: &str,
        command: &A::Command,
    ) -> Result<Committed<A>, ApiError>
    where
        A: Aggregate,
        A::Error: DomainError,
    {
        let stream = Repository::<A>::stream_id(id)?;
        // Not in a trace that is not sampled: nobody would see it.
        let span = if trace_context::in_unsampled_trace() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "command",
                otel.name = %format_args!("command {}", A::CATEGORY),
                aggregate = A::CATEGORY,
                stream = %stream,
                outcome = tracing::field::Empty,
                retries = 0u32,
            )
        };
        let result = repository
            .execute(id, command, &self.options)
            .instrument(span.clone())
            .await;
        span.record(
            "outcome",
            match &result {
                Ok(_) => "committed",
                Err(ExecuteError::Rejected(_)) => "rejected",
                Err(ExecuteError::NoChange) => "no-change",
                Err(ExecuteError::Store(eventstore::Error::VersionConflict { .. })) => "conflict",
                Err(ExecuteError::Store(_)) => "failed",
            },
        );
        match result {
            Ok(committed) => Ok(committed),
            Err(ExecuteError::Rejected(error)) => Err(ApiError::from(&error)),
            Err(ExecuteError::NoChange) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "no-change",
                "Conflict",
                "the command would change nothing",
            )),
            Err(ExecuteError::Store(eventstore::Error::VersionConflict { actual, .. }))
                if self.options.expected_version.is_some() =>
            {
                let mut error = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    "Precondition failed",
                    format!(
                        "If-Match names version {}, but {} is at {}",
                        self.options.expected_version.unwrap_or_default(),
                        stream,
                        actual.map_or("no version (it does not exist)".to_owned(), |v| {
                            format!("version {v}")
                        })
                    ),
                );
                if let Some(actual) = actual
                    && let Ok(value) = HeaderValue::from_str(&etag(actual))
                {
                    error = error.with_header(header::ETAG, value);
                }
                Err(error)
            }
            Err(ExecuteError::Store(error)) => Err(error.into()),
        }
    }

    /// The command's id: its events' ids derive from it (`EventId::derived(id, n)`), so
    /// a personal field is sealed for `EventId::derived(command_id, 0)`, the id its
    /// event will have (the same on a retry under the same `Idempotency-Key`).
    pub(crate) fn command_id(&self) -> Uuid {
        self.options.command_id
    }

    /// For a keyed command that ran before: the stream it wrote to.
    pub(crate) async fn earlier_stream(&self) -> Result<Option<eventstore::StreamId>, ApiError> {
        if !self.keyed {
            return Ok(None);
        }
        let first_event = eventstore::EventId::derived(self.options.command_id, 0);
        let event = self
            .state
            .store()
            .read_cached_or_blocking(move |store| store.read_event(&first_event))
            .await?;
        Ok(event.map(|event| event.stream_id))
    }
}

/// A command's successful answer.
#[derive(Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    etag: String,
    location: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    /// An answer with `status`, the `ETag` of `version` and `body` as JSON.
    pub(crate) fn new<T: Serialize>(
        status: StatusCode,
        version: Version,
        body: &T,
    ) -> Result<Self, ApiError> {
        Ok(Reply {
            status,
            etag: etag(version),
            location: None,
            body: serde_json::to_vec(body).map_err(|error| ApiError::internal(&error))?,
        })
    }

    /// The usual answer: `{stream, version, position}` of what `committed` recorded.
    pub(crate) fn accepted<A>(
        status: StatusCode,
        committed: &Committed<A>,
    ) -> Result<Self, ApiError> {
        let outcome = &committed.outcome;
        Reply::new(
            status,
            outcome.last_version,
            &CommandAccepted {
                stream: committed.stream.to_string(),
                version: outcome.last_version.0,
                position: outcome.last_position.0,
            },
        )
    }

    /// The same answer with a `Location` header.
    pub(crate) fn with_location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }

    fn into_response(self, replayed: bool) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, value);
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }

    fn from_record(record: idempotency::Record) -> Self {
        Reply {
            status: StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK),
            etag: record.etag.unwrap_or_default(),
            location: record.location,
            body: record.body,
        }
    }
}

/// Runs one command request: with an `Idempotency-Key`, answers a retry from the
/// key's record (or refuses another request under the same key), else runs `command`
/// and records its answer.
///
/// After the store's writer has failed, no command runs: every one is refused with a 503
/// `store-failed` (the server is about to exit and be restarted), and so is the command
/// whose append met the failure.
pub(crate) async fn run<F, Fut>(
    state: &AppState,
    request: CommandRequest,
    command: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(CommandContext) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    if state.store().failure().is_some() {
        return Err(refused_after_failure());
    }
    let result = run_command(state, request, command).await;
    match result {
        // A command that met the failure (its append, or its idempotency record, found
        // the writer stopped) answers like every command after it.
        Err(error)
            if error.status() == StatusCode::SERVICE_UNAVAILABLE
                && state.store().failure().is_some() =>
        {
            Err(refused_after_failure())
        }
        result => result,
    }
}

/// The answer to a command once the store's writer has failed. The reason goes to the
/// log and to `/readyz`; the client learns that the write did not happen.
fn refused_after_failure() -> ApiError {
    problem::store_failed(
        "the event store failed to write to its disk and takes no more commands; \
         this command was not recorded, and the server restarts: retry it later",
    )
}

async fn run_command<F, Fut>(
    state: &AppState,
    request: CommandRequest,
    command: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(CommandContext) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let metadata = |command_id: Uuid| request.metadata(command_id);
    let Some(key) = request.key.clone() else {
        let command_id = Uuid::now_v7();
        let context = CommandContext {
            state: state.clone(),
            options: CommandOptions {
                command_id,
                expected_version: request.if_match,
                metadata: metadata(command_id),
            },
            keyed: false,
        };
        return Ok(command(context).await?.into_response(false));
    };

    let lock_name = idempotency::stream_of(&key);
    let _one_at_a_time = state.inner.key_locks.lock(lock_name.as_str()).await;
    if let Some(record) = idempotency::find(state.store(), &key).await? {
        return replay(record, &request);
    }
    let command_id = idempotency::command_id(&key);
    let context = CommandContext {
        state: state.clone(),
        options: CommandOptions {
            command_id,
            expected_version: request.if_match,
            metadata: metadata(command_id),
        },
        keyed: true,
    };
    // If the key's command ran before on another stream, the store refuses it as an
    // idempotency mismatch: a 422, like any other request under a used key.
    let reply = command(context).await?;
    let record = idempotency::Record {
        key,
        fingerprint: request.fingerprint,
        status: reply.status.as_u16(),
        etag: Some(reply.etag.clone()),
        location: reply.location.clone(),
        body: reply.body.clone(),
    };
    match idempotency::save(state.store(), &record, command_id).await? {
        None => Ok(reply.into_response(false)),
        Some(earlier) => replay(earlier, &request),
    }
}

fn replay(record: idempotency::Record, request: &CommandRequest) -> Result<Response, ApiError> {
    if record.fingerprint != request.fingerprint {
        return Err(idempotency_key_reused());
    }
    Ok(Reply::from_record(record).into_response(true))
}

/// The headers every command reads (for the OpenAPI document).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct CommandHeaders {
    /// `"<version>"` (or the version without quotes): run only if the aggregate is at
    /// this version (else 412).
    #[param(rename = "If-Match")]
    if_match: Option<String>,
    /// Makes the request safe to retry: the same key and request get the first
    /// response; the same key with another request is a 422.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}
