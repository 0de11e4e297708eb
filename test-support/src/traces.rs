//! Spans kept in memory, for the tests that check traces: [`MemoryTraces`] is an
//! OpenTelemetry tracer provider whose every finished span goes at once to an
//! in-memory exporter, and the `tracing` dispatcher that feeds it through
//! `tracing-opentelemetry`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// Every finished span, in memory.
#[derive(Debug, Clone)]
pub struct MemoryTraces {
    exporter: InMemorySpanExporter,
    /// Kept so that the pipeline stays open while the dispatcher is in use.
    _provider: SdkTracerProvider,
    /// A subscriber (a registry with the OpenTelemetry layer) to set as the default.
    pub dispatch: tracing::Dispatch,
}

impl MemoryTraces {
    /// A new pipeline; set [`MemoryTraces::dispatch`] as the default (for a scope, a
    /// thread or the process) to record into it.
    pub fn new() -> MemoryTraces {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        MemoryTraces {
            exporter,
            _provider: provider,
            dispatch,
        }
    }

    /// Sets this pipeline as the process's default subscriber (once per process).
    pub fn install_globally(&self) {
        tracing::dispatcher::set_global_default(self.dispatch.clone())
            .expect("no other global subscriber in this test binary");
    }

    /// Every span finished so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter
            .get_finished_spans()
            .expect("the in-memory exporter answers")
    }
}

impl Default for MemoryTraces {
    fn default() -> Self {
        MemoryTraces::new()
    }
}
