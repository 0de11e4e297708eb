//! The process's log subscriber: what `annals` writes to stderr, as text or JSON lines.
//!
//! Every command logs to stderr through one global subscriber set up here, before the
//! command runs: `annals serve` at info (its `--log-format` picks text or JSON), the
//! offline tools at warn, as text. `RUST_LOG` overrides the level. Inside a request, a
//! log line carries the request's span and its fields (the `request_id` among them); in
//! JSON, the event's fields are top-level keys and the spans are under `span` and
//! `spans`.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

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

/// Sets up the global subscriber: `format` lines to stderr, at `default_filter` unless
/// `RUST_LOG` says otherwise.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
