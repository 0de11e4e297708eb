//! The gate every request passes before its handler: authentication, the policy, the
//! rate limit, in that order (shared/DESIGN.md: authenticate -> authorize -> rate limit).
//!
//! 1. The bearer token is verified ([`security::auth::Authenticator`]): no token or a
//!    bad one is a 401 with `WWW-Authenticate: Bearer` and the reason in the detail.
//!    Public routes (health, readiness, the OpenAPI document) need no token, but a token
//!    sent to them must be good.
//! 2. The route's action ([`actions`]) and resource (path parameters, the body's `sku` or
//!    `customer_id`, an order's owner) go with the principal and the request to the Rego
//!    policy ([`security::policy::Policy`]): a deny is a 403 naming the action. The policy
//!    logs and counts every decision.
//! 3. The principal's token bucket ([`security::rate_limit::RateLimiter`]): over it, a 429
//!    with `Retry-After`.
//!
//! An admitted request carries its [`Caller`] (principal and action) to the handler,
//! and every command records it in its events' metadata (subject, issuer, action).
//!
//! Without authentication configured (`annals serve` on loopback, for development) the
//! gate is not installed at all: every request is admitted as before and events record
//! no principal.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use security::Principal;
use security::auth::{AuthError, Authenticator};
use security::policy::{Policy, PolicyInput, RequestInfo, Resource};
use security::rate_limit::RateLimiter;

use crate::AppState;
use crate::extract::{check_json_content_type, json_error};
use crate::lanes;
use crate::problem::ApiError;

pub(crate) mod actions;

use actions::{BodyResource, RouteAction};

/// What the gate checks with: who may call, what they may do, how often.
#[derive(Debug, Clone)]
pub struct Security {
    authenticator: Authenticator,
    policy: Arc<Policy>,
    limiter: Arc<RateLimiter>,
}

impl Security {
    /// A gate verifying tokens with `authenticator`, deciding with `policy` and limiting
    /// each principal with `limiter`.
    pub fn new(authenticator: Authenticator, policy: Arc<Policy>, limiter: RateLimiter) -> Self {
        Security {
            authenticator,
            policy,
            limiter: Arc::new(limiter),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Every route's `(method, path template, action, public)`, in the order of the table
/// (for tests and documentation).
pub fn route_actions() -> impl Iterator<Item = (&'static str, &'static str, &'static str, bool)> {
    actions::ROUTES.iter().map(|entry| {
        (
            entry.method.as_str(),
            entry.path,
            entry.action,
            entry.public,
        )
    })
}

/// Who made an admitted request, and what the policy allowed it to do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified principal.
    pub principal: Principal,
    /// The route's action, e.g. `orders.place`.
    pub action: &'static str,
}

/// The [`Caller`] of a request, if the gate admitted it with a principal (none when the
/// server runs without authentication, or for a public route called without a token).
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity(pub(crate) Option<Arc<Caller>>);

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Identity(parts.extensions.get::<Arc<Caller>>().cloned()))
    }
}

/// The middleware: admits `request` to its handler, or answers 401, 403, 429 (or the
/// 4xx of a body it could not read).
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match admit(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn admit(state: &AppState, request: Request) -> Result<Request, ApiError> {
    let Some(security) = state.security() else {
        return Ok(request);
    };
    let (mut parts, body) = request.into_parts();
    let entry = route_of(&parts)?;
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("\u{0}"));
    let principal = match (authorization, entry.public) {
        (None, true) => None,
        (authorization, _) => Some(
            security
                .authenticator
                .authenticate(authorization)
                .await
                .map_err(|error| unauthenticated(&error))?,
        ),
    };
    let mut resource = path_resource(&mut parts, state).await;
    if entry.order_owner
        && let Some(order_id) = resource.order_id.clone()
    {
        resource.customer_id = order_owner(state, order_id).await;
    }
    let (mut parts, body) = if entry.body == BodyResource::None {
        (parts, body)
    } else {
        read_body_resource(state, parts, body, entry.body, &mut resource).await?
    };
    let intent = parts
        .headers
        .get(lanes::INTENT_HEADER)
        .and_then(|value| value.to_str().ok());
    let granted = {
        let input = PolicyInput {
            principal: principal.as_ref(),
            action: entry.action,
            resource,
            request: RequestInfo {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                intent,
            },
        };
        let decision = security.policy.decide(&input).map_err(|error| {
            tracing::error!(%error, action = entry.action, "the policy failed to decide; denied");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "policy-error",
                "Policy error",
                format!(
                    "the policy could not decide on {}: denied (the server log says why)",
                    entry.action
                ),
            )
        })?;
        if !decision.allow {
            return Err(forbidden(
                entry.action,
                principal.as_ref(),
                decision.reason.as_deref(),
            ));
        }
        raised_intent(&parts, intent).filter(|_| security.policy.grants_intent(&input))
    };
    if let Some(lane) = granted {
        parts.extensions.insert(lanes::GrantedIntent(lane));
    }
    let mut request = Request::from_parts(parts, body);
    if let Some(principal) = principal {
        if let Err(wait) = security.limiter.check(&principal) {
            return Err(rate_limited(&principal, wait));
        }
        request.extensions_mut().insert(Arc::new(Caller {
            principal,
            action: entry.action,
        }));
    }
    Ok(request)
}

/// The lane the `Annals-Intent` header names, if it is of higher priority than the
/// route's (only the policy may grant that: [`security::policy::Policy::grants_intent`]).
fn raised_intent(parts: &Parts, intent: Option<&str>) -> Option<lanes::Lane> {
    let asked: lanes::Lane = intent?.parse().ok()?;
    let route = parts.extensions.get::<MatchedPath>()?;
    let lane = lanes::route_lane(&parts.method, route.as_str(), parts.uri.query())?;
    (asked < lane).then_some(asked)
}

/// The action of the route the router matched; a route missing from the table is
/// refused (the table test keeps that from happening).
fn route_of(parts: &Parts) -> Result<&'static RouteAction, ApiError> {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or_default();
    actions::find(&parts.method, path).ok_or_else(|| {
        tracing::error!(method = %parts.method, path, "a route without a policy action; denied");
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("{} {path} has no policy action: denied", parts.method),
        )
    })
}

/// The resource the path names.
async fn path_resource(parts: &mut Parts, state: &AppState) -> Resource {
    let mut resource = Resource::default();
    let Ok(params) = RawPathParams::from_request_parts(parts, state).await else {
        return resource;
    };
    for (name, value) in &params {
        let value = Some(value.to_owned());
        match name {
            "sku" => resource.sku = value,
            "customer_id" => resource.customer_id = value,
            "order_id" => resource.order_id = value,
            "stream_id" => resource.stream = value,
            "name" => resource.projection = value,
            _ => {}
        }
    }
    resource
}

/// The customer who placed `order_id`; `None` for an order never placed (or an id that
/// is no order id): the policy then sees no owner, and a customer is denied.
async fn order_owner(state: &AppState, order_id: String) -> Option<String> {
    let orders = state.inner.orders.clone();
    let loaded = tokio::task::spawn_blocking(move || orders.load(&order_id))
        .await
        .ok()?
        .ok()?;
    let owner = loaded.state.customer_id();
    (!owner.is_empty()).then(|| owner.to_owned())
}

/// Reads the body of a route that names its resource there, and puts the body back.
/// A body that is not JSON is refused here, as its handler would refuse it.
async fn read_body_resource(
    state: &AppState,
    parts: Parts,
    body: Body,
    wanted: BodyResource,
    resource: &mut Resource,
) -> Result<(Parts, Body), ApiError> {
    #[derive(serde::Deserialize)]
    struct Named {
        sku: Option<serde_json::Value>,
        customer_id: Option<serde_json::Value>,
    }
    check_json_content_type(&parts.headers)?;
    let limit = state.config().max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|error| body_error(&error, limit))?;
    let named: Named = serde_json::from_slice(&bytes).map_err(|error| json_error(&error))?;
    let text = |value: Option<serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) => Some(text),
        _ => None,
    };
    match wanted {
        BodyResource::None => {}
        BodyResource::Sku => resource.sku = text(named.sku),
        BodyResource::Customer => resource.customer_id = text(named.customer_id),
    }
    Ok((parts, Body::from(bytes)))
}

/// The answer to a body that could not be read: too large (413, as its handler would
/// say), or cut off.
fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Payload too large",
                format!("the body is over the limit of {limit} bytes"),
            );
        }
        source = cause.source();
    }
    ApiError::bad_request(
        "unreadable-body",
        format!("the body could not be read: {error}"),
    )
}

/// 401 with `WWW-Authenticate: Bearer` (RFC 6750): no error code when no token came,
/// `invalid_token` and the reason when a bad one did.
fn unauthenticated(error: &AuthError) -> ApiError {
    let detail = error.to_string();
    let challenge = match error {
        AuthError::Missing => "Bearer realm=\"annals\"".to_owned(),
        _ => format!(
            "Bearer realm=\"annals\", error=\"invalid_token\", error_description=\"{}\"",
            detail
                .chars()
                .map(
                    |c| if c == '"' || c == '\\' || !c.is_ascii_graphic() && c != ' ' {
                        '\''
                    } else {
                        c
                    }
                )
                .collect::<String>()
        ),
    };
    let mut problem = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Unauthorized",
        detail,
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        problem = problem.with_header(header::WWW_AUTHENTICATE, value);
    }
    problem
}

fn forbidden(action: &str, principal: Option<&Principal>, reason: Option<&str>) -> ApiError {
    let who = principal.map_or_else(
        || "a caller without a token".to_owned(),
        |principal| format!("{:?}", principal.subject),
    );
    let reason = reason
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        format!("the policy denies {action} to {who}{reason}"),
    )
    .with_action(action)
}

fn rate_limited(principal: &Principal, wait: std::time::Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!(
            "{:?} is over its rate limit: retry in {seconds} s",
            principal.subject
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
}
