//! A read model's application of a batch of events, in the traces.
//!
//! Each batch a projection applies (live, at catch-up, in a rebuild) runs in a
//! `project <projection>` span from its first event until its batch is written. One batch
//! serves many traces, so the span is the root of a trace of its own and *links* to the
//! trace context each event stores ([`eventstore::Metadata::traceparent`], through
//! `trace_context::link`): up to [`MAX_LINKS`] per span, skipping an event whose context
//! is the one linked just before (the events of one append share it); the rest are
//! counted in `links_dropped`. Without a subscriber that wants the span, nothing but two
//! counters is kept per event.

use eventstore::StoredEvent;

/// The most links one batch's span carries (OpenTelemetry keeps 128 by default).
pub(crate) const MAX_LINKS: u32 = 32;

/// The span of one batch of one projection, with what it has seen so far.
pub(crate) struct BatchSpan {
    span: tracing::Span,
    events: u64,
    first: u64,
    last: u64,
    links: u32,
    dropped: u64,
    /// The trace context linked last (a reused buffer).
    linked: String,
}

impl BatchSpan {
    /// Opens the span of a batch of `projection`.
    pub fn begin(projection: &str) -> BatchSpan {
        let span = tracing::info_span!(
            parent: None,
            "project",
            otel.name = %format_args!("project {projection}"),
            otel.status_code = tracing::field::Empty,
            projection,
            events = tracing::field::Empty,
            first_position = tracing::field::Empty,
            last_position = tracing::field::Empty,
            links = tracing::field::Empty,
            links_dropped = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        BatchSpan {
            span,
            events: 0,
            first: 0,
            last: 0,
            links: 0,
            dropped: 0,
            linked: String::new(),
        }
    }

    /// Counts `event` into the batch and links to its trace.
    pub fn event(&mut self, event: &StoredEvent<'_>) {
        if self.events == 0 {
            self.first = event.position;
        }
        self.last = event.position;
        self.events += 1;
        let Some(traceparent) = event.metadata.traceparent else {
            return;
        };
        if self.span.is_disabled() || traceparent == self.linked {
            return;
        }
        if self.links >= MAX_LINKS {
            self.dropped += 1;
            return;
        }
        trace_context::link(&self.span, Some(traceparent));
        self.links += 1;
        self.linked.clear();
        self.linked.push_str(traceparent);
    }

    /// Marks the batch as failed with `error`.
    pub fn fault(&self, error: &str) {
        self.span.record("otel.status_code", "ERROR");
        self.span.record("error", error);
    }

    /// Records what the batch held and closes the span.
    pub fn end(self) {
        if self.span.is_disabled() {
            return;
        }
        self.span.record("events", self.events);
        self.span.record("first_position", self.first);
        self.span.record("last_position", self.last);
        self.span.record("links", self.links);
        self.span.record("links_dropped", self.dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::{EventId, Metadata, Position, RecordedEvent, StreamId, Version};
    use test_support::traces::MemoryTraces;

    fn recorded(position: u64, traceparent: Option<String>) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new(),
            stream_id: StreamId::new("order-1").unwrap(),
            version: Version(position),
            position: Position(position),
            event_type: "Placed".into(),
            schema_version: 1,
            recorded_at: Default::default(),
            metadata: Metadata {
                traceparent,
                ..Metadata::default()
            },
            payload: Vec::new(),
            last_in_commit: true,
        }
    }

    fn trace_of(position: u64) -> String {
        format!("{:032x}", position + 1)
    }

    /// Positions 10 to 49; those ending in 5 store no trace, 11 stores the one of 10.
    fn traceparent_of(position: u64) -> Option<String> {
        match position {
            _ if position % 10 == 5 => None,
            11 => traceparent_of(10),
            _ => Some(format!("00-{}-00f067aa0ba902b7-01", trace_of(position))),
        }
    }

    #[test]
    fn a_batch_links_to_its_events_traces_up_to_the_cap() {
        let traces = MemoryTraces::new();
        let events: Vec<RecordedEvent> = (10..50)
            .map(|position| recorded(position, traceparent_of(position)))
            .collect();
        tracing::dispatcher::with_default(&traces.dispatch, || {
            let mut batch = BatchSpan::begin("orders");
            for event in &events {
                batch.event(&event.to_stored());
            }
            batch.end();
        });
        let spans = traces.spans();
        let [span] = &spans[..] else {
            panic!("one span: {spans:?}")
        };
        assert_eq!(span.name, "project orders");
        assert_eq!(
            span.parent_span_id,
            opentelemetry::trace::SpanId::INVALID,
            "a root"
        );
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attribute("projection").as_deref(), Some("orders"));
        assert_eq!(attribute("events").as_deref(), Some("40"));
        assert_eq!(attribute("first_position").as_deref(), Some("10"));
        assert_eq!(attribute("last_position").as_deref(), Some("49"));
        assert_eq!(attribute("links").as_deref(), Some("32"));
        // 36 events store a trace, 35 differ from the one before: 32 linked, 3 dropped.
        assert_eq!(attribute("links_dropped").as_deref(), Some("3"));
        let linked: Vec<String> = span
            .links
            .iter()
            .map(|link| link.span_context.trace_id().to_string())
            .collect();
        let expected: Vec<String> = (10..50)
            .filter(|position| position % 10 != 5 && *position != 11)
            .take(32)
            .map(trace_of)
            .collect();
        assert_eq!(linked, expected);
        assert!(!linked.contains(&span.span_context.trace_id().to_string()));
    }

    /// Without an OpenTelemetry layer the span has no context to link from: the batch
    /// still counts its events, and nothing fails.
    #[test]
    fn without_an_opentelemetry_layer_a_batch_only_counts() {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let mut batch = BatchSpan::begin("orders");
            let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            for position in [7, 8] {
                batch.event(&recorded(position, Some(traceparent.into())).to_stored());
            }
            batch.event(&recorded(9, None).to_stored());
            assert_eq!((batch.events, batch.first, batch.last), (3, 7, 9));
            assert_eq!((batch.links, batch.dropped), (1, 0));
            batch.fault("faulted at position 9: test");
            batch.end();
        });
    }
}
