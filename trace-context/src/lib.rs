//! The W3C trace context as Annals carries it: a `traceparent` string
//! (`00-<trace id>-<span id>-<flags>`) in each event's metadata
//! (`eventstore::Metadata::traceparent`) and in each NATS message's header.
//!
//! One place reads and writes it for every component that continues or links to a
//! trace: the API stores the command's context in the events it writes, the saga's steps
//! continue the trace of the event that caused them ([`follow`]), the relay's publish
//! does the same, and a read model's application of a batch links to the traces of its
//! events ([`link`]). The ids come from the OpenTelemetry layer of the process's
//! subscriber (`tracing-opentelemetry`); without one, spans have no trace context, the
//! functions that read one answer `None` and those that set one do nothing.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span context a `traceparent` names (as a remote one), if it is well formed and
/// valid: version `00`, 32 and 16 hex digits of ids that are not all zero, two of flags.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The remote parent named by a `traceparent`, if it is well formed.
pub fn parent(traceparent: &str) -> Option<opentelemetry::Context> {
    span_context(traceparent)
        .map(|context| opentelemetry::Context::new().with_remote_span_context(context))
}

/// The `traceparent` of a span context, if it is valid.
pub fn format(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of `span`, if it has a trace context, else of the nearest span
/// around it that has one: a subscriber may trace only some spans (the server without an
/// exporter leaves out the many small ones of the write path), and what runs inside an
/// untraced span belongs to the trace of the span around it.
pub fn of(span: &tracing::Span) -> Option<String> {
    nearest(span).and_then(|context| format(&context))
}

/// Whether the current span is in a trace that is not sampled (not recorded, not
/// exported): then the small spans of the write path (a command, an append, a saga's
/// command) are not made at all, since nobody would see them, and what runs inside
/// belongs to the span around. Without a trace context (no OpenTelemetry layer) it
/// answers `false`: spans are made, for whatever other subscriber wants them.
pub fn in_unsampled_trace() -> bool {
    let current = tracing::Span::current();
    !current.is_none() && nearest(&current).is_some_and(|context| !context.is_sampled())
}

/// The trace context of `span`, or of the nearest span around it that has one.
fn nearest(span: &tracing::Span) -> Option<SpanContext> {
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        return Some(own);
    }
    let mut found = None;
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return;
        };
        let Some(span) = tracing_subscriber::registry::LookupSpan::span(registry, id) else {
            return;
        };
        found = span.scope().skip(1).find_map(|around| {
            let context = tracing_opentelemetry::get_otel_context(&around.id(), dispatch)?;
            let around = context.span().span_context().clone();
            around.is_valid().then_some(around)
        });
    });
    found
}

/// The `traceparent` of the current span: what a command stores in its events' metadata.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// Makes `span` continue the trace of `traceparent` (when there is one and it is well
/// formed), as the child of the span it names.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(parent) {
        // Only fails without an OpenTelemetry layer: then there is no trace to continue.
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the trace of `traceparent` (when there is one and it is well formed):
/// for work done on behalf of many traces at once, such as applying a batch of events.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = traceparent.and_then(span_context) {
        span.add_link(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::traces::MemoryTraces;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_names_a_remote_parent() {
        let context = parent(TRACEPARENT).unwrap();
        let span = context.span();
        let span = span.span_context();
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_sampled() && span.is_remote());
        assert_eq!(format(span).as_deref(), Some(TRACEPARENT));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_a_trace_known_to_be_unsampled_is_unsampled() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let traces = MemoryTraces::new();
        tracing::dispatcher::with_default(&traces.dispatch, || {
            assert!(!in_unsampled_trace(), "outside any span");
            for (traceparent, expected) in [(TRACEPARENT, false), (unsampled, true)] {
                let request = tracing::info_span!("request");
                follow(&request, Some(traceparent));
                request.in_scope(|| {
                    assert_eq!(in_unsampled_trace(), expected, "{traceparent}");
                    // Inside a span the layer does not trace, the span around decides.
                    tracing::info_span!("inner").in_scope(|| {
                        assert_eq!(in_unsampled_trace(), expected, "{traceparent}");
                    });
                });
            }
        });
        // Without an OpenTelemetry layer there is no trace to know about.
        let plain = tracing_subscriber::registry();
        tracing::subscriber::with_default(plain, || {
            tracing::info_span!("request").in_scope(|| assert!(!in_unsampled_trace()));
        });
    }

    #[test]
    fn spans_follow_and_link_to_stored_traces() {
        let traces = MemoryTraces::new();
        tracing::dispatcher::with_default(&traces.dispatch, || {
            assert_eq!(current(), None, "no span, no context");
            let child = tracing::info_span!("child");
            follow(&child, Some(TRACEPARENT));
            let written = child.in_scope(current).unwrap();
            assert!(written.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert_ne!(written, TRACEPARENT, "the child's own span id");
            drop(child);
            let batch = tracing::info_span!("batch");
            link(&batch, Some(TRACEPARENT));
            link(&batch, Some("not a traceparent"));
            link(&batch, None);
            drop(batch);
        });
        let spans = traces.spans();
        let child = spans.iter().find(|span| span.name == "child").unwrap();
        assert_eq!(child.parent_span_id.to_string(), "00f067aa0ba902b7");
        let batch = spans.iter().find(|span| span.name == "batch").unwrap();
        assert_ne!(
            batch.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "a link does not join the trace"
        );
        let links: Vec<String> = batch
            .links
            .iter()
            .map(|link| link.span_context.trace_id().to_string())
            .collect();
        assert_eq!(links, ["4bf92f3577b34da6a3ce929d0e0e4736"]);
    }
}
