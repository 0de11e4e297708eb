//! A saga's place in the traces: each step continues the trace of the event that caused
//! it, and the commands it issues carry that trace in their events' metadata.
//!
//! The trace context travels in the events' metadata as a W3C `traceparent`
//! ([`eventstore::Metadata::traceparent`]): the instance keeps the one of the last event
//! routed to it from the log, every step runs in a `saga step` span whose parent it is,
//! and every command in a `saga command` span below that step. The ids come from the
//! OpenTelemetry layer of the process's subscriber; without one, spans have no trace
//! context and nothing is stored. Reading and writing the `traceparent` is the
//! `trace-context` crate's.

/// The span of one step of the instance `id` of saga `saga`, in the trace of
/// `traceparent` (the event that caused it) if any.
pub fn step_span(saga: &'static str, id: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "saga step",
        otel.name = %format_args!("saga {saga} step"),
        saga,
        instance = id,
    );
    trace_context::follow(&span, traceparent);
    span
}
