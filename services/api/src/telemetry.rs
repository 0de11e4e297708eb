//! Every request's span and identity: the `http.request` span (method, route template,
//! request id, status) that every log line of the request is inside, its W3C trace
//! context and its `X-Request-Id`.
//!
//! The span continues the trace of a client's `traceparent` (or begins a new one), and
//! the response carries the `traceparent` of the request's span, so that a client can
//! find its request in the traces. The ids come from the OpenTelemetry layer of the
//! process's subscriber (`tracing-opentelemetry`); without one there is no trace context
//! and no `traceparent` is answered. The command stores its own span's context
//! (`trace_context::current`) in its events' metadata.
//!
//! A client's `X-Request-Id` is kept when it is sane (1 to [`MAX_REQUEST_ID_BYTES`]
//! visible ASCII characters), else the server makes one (a UUID v7). Either way it is a
//! field of the request's span, so it is on every log line of the request, and it is
//! returned on the response, errors and panics included. The layer replaces
//! tower-http's `TraceLayer` and logs as it did: a line per response at debug, an error
//! line for a 5xx.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header, read and answered.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request id header, read and answered.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client request id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The client's request id if sane, else a new UUID v7.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|value| sane(value.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a header value")
        })
}

/// Whether a client's request id is kept: 1 to [`MAX_REQUEST_ID_BYTES`] visible ASCII
/// characters (so that it is safe in a log line and a header).
fn sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.iter().all(u8::is_ascii_graphic)
}

/// The middleware: runs the request inside its span and sets `X-Request-Id` on the
/// response. Added with `Router::layer`, so it runs after routing and sees the route's
/// template.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        request_id = request_id.to_str().unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    if parent.span().span_context().is_valid() {
        // Only fails without an OpenTelemetry layer: then there is no trace to continue.
        let _ = span.set_parent(parent);
    }
    let traceparent = trace_context::of(&span);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(shed) = response.extensions().get::<crate::lanes::Shed>() {
        // Shedding is the lanes doing their job, counted in annals_lane_shed_total.
        tracing::debug!(parent: &span, status = status.as_u16(), latency_ms, reason = shed.as_str(), "request shed");
    } else if status.is_server_error() {
        tracing::error!(parent: &span, status = status.as_u16(), latency_ms, "response failed");
    } else {
        tracing::debug!(parent: &span, status = status.as_u16(), latency_ms, "finished processing request");
    }
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if let Some(value) = traceparent.and_then(|text| HeaderValue::try_from(text).ok()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_request_id_is_kept_and_any_other_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_x"));
        assert_eq!(request_id(&headers), "abc-123_x");
        for bad in ["", "a b", &"a".repeat(MAX_REQUEST_ID_BYTES + 1)] {
            headers.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let made = request_id(&headers);
            assert_ne!(made, bad);
            let made = uuid::Uuid::parse_str(made.to_str().unwrap()).unwrap();
            assert_eq!(made.get_version_num(), 7);
        }
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID_BYTES)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), MAX_REQUEST_ID_BYTES);
        assert!(uuid::Uuid::parse_str(request_id(&HeaderMap::new()).to_str().unwrap()).is_ok());
    }
}
