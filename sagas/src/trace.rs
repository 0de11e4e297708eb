//! A saga's place in the traces: each step continues the trace of the event that caused
//! it, and the commands it issues carry that trace in their events' metadata.
//!
//! The trace context travels in the events' metadata as a W3C `traceparent`
//! ([`eventstore::Metadata::traceparent`]): the instance keeps the one of the last event
//! routed to it from the log, every step runs in a `saga step` span whose parent it is,
//! and every command in a `saga command` span below that step. The ids come from the
//! OpenTelemetry layer of the process's subscriber; without one, spans have no trace
//! context and nothing is stored.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The remote parent named by a W3C `traceparent`, if it is well formed.
pub fn parent(traceparent: &str) -> Option<opentelemetry::Context> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(context))
}

/// The W3C `traceparent` of the current span, if it has a trace context.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// The span of one step of the instance `id` of saga `saga`, in the trace of
/// `traceparent` (the event that caused it) if any.
pub fn step_span(saga: &'static str, id: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "saga step",
        otel.name = %format_args!("saga {saga} step"),
        saga,
        instance = id,
    );
    if let Some(parent) = traceparent.and_then(parent) {
        // Only fails without an OpenTelemetry layer: then there is no trace to continue.
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_a_remote_parent() {
        let context = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = context.span();
        let span = span.span_context();
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_sampled() && span.is_remote());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parent(bad).is_none(), "{bad}");
        }
    }
}
