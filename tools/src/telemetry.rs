//! The process's telemetry: log lines to stderr (text or JSON) and, for `annals serve`,
//! OpenTelemetry traces.
//!
//! Every command logs to stderr through one global subscriber set up here, before the
//! command runs: `annals serve` at info (its `--log-format` picks text or JSON), the
//! offline tools at warn, as text. `RUST_LOG` overrides the level.
//!
//! `annals serve` also runs every span through `tracing-opentelemetry`, so that each has
//! a W3C trace id and span id: a request continues its client's `traceparent`, and every
//! log line inside a span carries `trace_id` and `span_id` (JSON: top-level keys; text:
//! at the end of the line). With an OTLP endpoint (`--otlp-endpoint`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) the spans are exported over OTLP/HTTP protobuf to
//! `<endpoint>/v1/traces` by a batch processor on a thread of its own (the blocking HTTP
//! client: no runtime needed there), under the service name `OTEL_SERVICE_NAME` (default
//! `annals`). [`Telemetry`] flushes the batch when dropped. An exporting server samples
//! at the root of each trace ([`sampler`]): a client's sampled trace is followed, and at
//! most `--traces-per-second` new ones begin a second; in a trace that is not sampled the
//! write path's small spans are not made at all (`trace_context::in_unsampled_trace`).
//!
//! Without an endpoint nothing is exported, and the many small spans of the write path
//! ([`WORK_SPANS`]: a command, an append, a saga's command, a published event, an
//! applied batch; dozens for every order) get no trace ids: the OpenTelemetry layer
//! would build and drop them for nothing. What runs inside one stores the context of the
//! span around it (the request, the saga step), so the trace still runs end to end. The subscriber's level hint is the level `RUST_LOG` lets through, so the
//! `log` records of the dependencies below it are refused before they reach it.

use std::fmt;

use anyhow::Context as _;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterFn, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::{Format, Full, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

pub mod sampler;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The service name spans are exported under when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "annals";

/// Sets up the global subscriber of the offline tools: text lines to stderr, at
/// `default_filter` unless `RUST_LOG` says otherwise.
pub fn init_tools(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(filter(default_filter))
        .with_writer(std::io::stderr)
        .init();
}

fn filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
}

/// The traces of a server: its tracer provider, shut down (the last batch exported) on
/// drop.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("warning: exporting the last spans failed: {error}");
        }
    }
}

/// The URL spans are posted to for the OTLP endpoint `endpoint`.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// A tracer provider exporting to `otlp_endpoint` (if any) under `service_name`, that
/// begins at most `traces_per_second` new traces a second ([`sampler`]; unless
/// `OTEL_TRACES_SAMPLER` names a sampler, which then decides).
pub fn provider(
    otlp_endpoint: Option<&str>,
    service_name: &str,
    traces_per_second: u32,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter to {endpoint}"))?;
        builder = builder.with_batch_exporter(exporter);
        if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
            builder =
                builder.with_sampler(sampler::TracesPerSecond::parent_based(traces_per_second));
        }
    } else {
        // Nothing is exported: spans still get ids (for the log lines and the
        // `traceparent` answers) but are not recorded, unless a client's sampled trace
        // asks for it.
        builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::AlwaysOff,
        )));
    }
    Ok(builder.build())
}

/// Sets up the global subscriber of `annals serve`: `format` lines to stderr at info
/// (unless `RUST_LOG` says otherwise), with trace ids, and spans exported to
/// `otlp_endpoint` if given, at most `traces_per_second` new traces a second.
pub fn init_server(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    traces_per_second: u32,
) -> anyhow::Result<Telemetry> {
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let provider = provider(otlp_endpoint, &service_name, traces_per_second)?;
    // Colours only for a terminal: the fields of every span are formatted as it is made
    // and as fields are recorded, and escape codes would cost that work twice.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let exporting = otlp_endpoint.is_some();
    server_dispatch(format, &provider, exporting, ansi, std::io::stderr).init();
    Ok(Telemetry { provider })
}

/// The subscriber of a server whose spans `provider` traces (all of them when
/// `exporting`), writing `format` lines to `writer`.
fn server_dispatch<W>(
    format: LogFormat,
    provider: &SdkTracerProvider,
    exporting: bool,
    ansi: bool,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("annals"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        // Nothing here reads OpenTelemetry's own current context (parents come from
        // the tracing span tree), so entering a span, at every poll of an instrumented
        // future, need not attach one.
        .with_context_activation(false);
    let filter = filter("info");
    let most_verbose = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel.with_filter(traced_spans(exporting, most_verbose)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => registry
            .with(
                fmt.event_format(WithTraceIds(Format::<Full>::default()))
                    .with_filter(log_line_spans(most_verbose)),
            )
            .into(),
        LogFormat::Json => registry
            .with(
                fmt.fmt_fields(JsonFields::new())
                    .event_format(WithTraceIds(
                        Format::<Full>::default()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(true),
                    ))
                    .with_filter(log_line_spans(most_verbose)),
            )
            .into(),
    }
}

/// The spans of the write path, dozens for every order: a command, an append, a saga's
/// command, a published event, a read model's applied batch. They are in the traces;
/// the log lines never name them.
pub const WORK_SPANS: [&str; 5] = [
    "command",
    "append",
    "saga command",
    "relay publish",
    "project",
];

fn is_work_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && WORK_SPANS.contains(&metadata.name())
}

/// Which spans the log lines name: every span but the [`WORK_SPANS`], whose fields the
/// log would format for every one of them (a fifth of `bench http`). A line logged inside
/// one names the span around it (the request, the saga step) and that span's `span_id`;
/// its `trace_id` is the same. Callsites are decided once (a `FilterFn` caches them).
///
/// `most_verbose` is the level `RUST_LOG` (or the default) lets through, told to the
/// subscriber as its hint: without one, every `log` record of the dependencies (sled
/// writes debug and trace records on its hot path) would be offered to the subscriber
/// and refused one by one.
fn log_line_spans(most_verbose: LevelFilter) -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(move |metadata| metadata.level() <= &most_verbose && !is_work_span(metadata))
        .with_max_level_hint(most_verbose)
}

/// Which spans get trace ids: every span that `most_verbose` lets through when
/// `exporting`, else all but the [`WORK_SPANS`], which would be built and thrown away
/// (`trace_context::current` inside one answers the context of the span around it). The
/// hint as for [`log_line_spans`].
fn traced_spans(
    exporting: bool,
    most_verbose: LevelFilter,
) -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(move |metadata| {
        metadata.level() <= &most_verbose && (exporting || !is_work_span(metadata))
    })
    .with_max_level_hint(most_verbose)
}

/// A line format that adds the current span's `trace_id` and `span_id` to the lines of
/// `F`: as two more keys of a JSON object, or at the end of a text line.
#[derive(Debug)]
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = trace_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match body.strip_suffix('}') {
            Some(object) if body.starts_with('{') => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                ids.0, ids.1
            ),
            _ => writeln!(writer, "{body} trace_id={} span_id={}", ids.0, ids.1),
        }
    }
}

/// The trace and span id of the span the event being formatted is in, if any.
fn trace_ids<S, N>(
    ctx: &FmtContext<'_, S, N>,
) -> Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx.event_scope()?.next()?;
    let id = span.id();
    drop(span);
    let context = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&id, dispatch)
    })?;
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| (span_context.trace_id(), span_context.span_id()))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use opentelemetry::trace::{Span as _, Tracer as _};

    use super::*;

    /// One HTTP request as a local OTLP receiver saw it.
    struct Received {
        request_line: String,
        content_type: String,
        body: Vec<u8>,
    }

    /// A tiny OTLP/HTTP receiver on a free loopback port: answers every request 200 and
    /// hands it over. Returns its base URL.
    fn receiver() -> (String, mpsc::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sender, received) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut content_type) = (0, String::new());
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "content-type" => content_type = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .unwrap();
                let received = Received {
                    request_line: request_line.trim_end().to_owned(),
                    content_type,
                    body,
                };
                if sender.send(received).is_err() {
                    return;
                }
            }
        });
        (url, received)
    }

    #[test]
    fn spans_arrive_at_an_otlp_http_receiver() {
        let (url, received) = receiver();
        let provider = provider(
            Some(&format!("{url}/")),
            "annals-wire-test",
            sampler::DEFAULT_TRACES_PER_SECOND,
        )
        .unwrap();
        let tracer = provider.tracer("test");
        let mut span = tracer.start("wire-test-span");
        span.end();
        provider.force_flush().unwrap();
        let request = received
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the spans arrive");
        assert_eq!(request.request_line, "POST /v1/traces HTTP/1.1");
        assert_eq!(request.content_type, "application/x-protobuf");
        // Protobuf keeps strings as they are: the span's and the service's names.
        let body = String::from_utf8_lossy(&request.body);
        assert!(body.contains("wire-test-span"), "{body:?}");
        assert!(body.contains("annals-wire-test"), "{body:?}");
        provider.shutdown().unwrap();
    }

    #[test]
    fn an_exporting_server_begins_at_most_its_budget_of_new_traces() {
        let (url, received) = receiver();
        let provider = provider(Some(&url), "annals-budget-test", 3).unwrap();
        let tracer = provider.tracer("test");
        for _ in 0..50 {
            tracer.start("budget-test-root").end();
        }
        provider.force_flush().unwrap();
        let mut exported = 0;
        while let Ok(request) = received.recv_timeout(std::time::Duration::from_secs(2)) {
            exported += String::from_utf8_lossy(&request.body)
                .matches("budget-test-root")
                .count();
        }
        // Fifty roots begun within a second or so: the budget's burst, and at most one
        // more per third of a second that passed.
        assert!((3..=6).contains(&exported), "{exported} traces exported");
        provider.shutdown().unwrap();
    }

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        /// The JSON lines written so far.
        fn json(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    /// A request's span with a command's span inside, under the server's subscriber:
    /// the request's and the command's stored `traceparent`, and the line logged inside
    /// the command.
    fn a_command(exporting: bool) -> (String, String, serde_json::Value) {
        let provider = provider(None, "annals", sampler::DEFAULT_TRACES_PER_SECOND).unwrap();
        let lines = Lines::default();
        let writer = lines.clone();
        let dispatch = server_dispatch(LogFormat::Json, &provider, exporting, false, move || {
            writer.clone()
        });
        let (request, stored) = tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("http.request");
            let _entered = request.enter();
            let command = tracing::info_span!("command", aggregate = "order");
            let stored = command.in_scope(|| {
                tracing::info!("inside the command");
                trace_context::current().unwrap()
            });
            (trace_context::current().unwrap(), stored)
        });
        let line = lines.json().pop().unwrap();
        (request, stored, line)
    }

    #[test]
    fn without_an_exporter_a_command_stores_the_requests_context() {
        let (request, stored, line) = a_command(false);
        assert_eq!(stored, request);
        assert_eq!(line["span"]["name"], "http.request", "{line}");
    }

    #[test]
    fn an_exporter_traces_the_work_spans_and_the_log_lines_do_not_name_them() {
        let (request, stored, line) = a_command(true);
        assert_ne!(
            stored, request,
            "the events store the command's own context"
        );
        let trace = |traceparent: &str| traceparent.split('-').nth(1).unwrap().to_owned();
        assert_eq!(trace(&stored), trace(&request), "one trace");
        assert_eq!(line["span"]["name"], "http.request", "{line}");
        assert_eq!(line["message"], "inside the command", "{line}");
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        let provider = provider(None, "annals", sampler::DEFAULT_TRACES_PER_SECOND).unwrap();
        let mut span = provider.tracer("test").start("nowhere");
        assert!(span.span_context().is_valid());
        span.end();
        provider.shutdown().unwrap();
    }
}
