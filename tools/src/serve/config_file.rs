//! The `--config` file of `annals serve` (TOML, snake_case keys, unknown keys refused) and
//! the `--lane` setting it shares with the flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::security::SecurityFile;
use crate::telemetry::LogFormat;

/// One `--lane` flag: a lane and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LaneSetting {
    pub(super) lane: api::lanes::Lane,
    pub(super) limits: api::lanes::LaneLimits,
}

impl std::str::FromStr for LaneSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (lane, limits) = text.split_once('=').ok_or_else(|| {
            format!("{text:?} is not LANE=CONCURRENCY:QUEUE:WAIT_MS (e.g. bulk=2:8:1000)")
        })?;
        Ok(LaneSetting {
            lane: lane.parse()?,
            limits: limits.parse()?,
        })
    }
}

impl<'de> Deserialize<'de> for LaneSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The keys a `--config` file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_order_lines: Option<u64>,
    pub(super) saga_max_instances: Option<u64>,
    pub(super) blocking_io_threads: Option<u64>,
    pub(super) shutdown_timeout_secs: Option<u64>,
    pub(super) nats_url: Option<String>,
    pub(super) saga_timeout_secs: Option<u64>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) nats_tls_ca: Option<PathBuf>,
    pub(super) nats_tls_cert: Option<PathBuf>,
    pub(super) nats_tls_key: Option<PathBuf>,
    /// The service level objectives (`[[slo]]` tables); none: the defaults.
    pub(super) slo: Option<Vec<slo::Objective>>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) traces_per_second: Option<u32>,
    pub(super) metrics: Option<bool>,
    pub(super) correlations: Option<bool>,
    pub(super) worker_max_restarts: Option<u32>,
    pub(super) worker_restart_window_secs: Option<u64>,
    pub(super) poison_events: Option<projections::PoisonPolicy>,
    pub(super) projection_retries: Option<u32>,
    pub(super) psp_urls: Option<Vec<String>>,
    pub(super) psp_timeout_ms: Option<u64>,
    pub(super) psp_retries: Option<usize>,
    pub(super) psp_breaker_failures: Option<u32>,
    pub(super) psp_breaker_cool_down_ms: Option<u64>,
    pub(super) psp_currency: Option<String>,
    /// `["bulk=2:8:1000", ...]`, as `--lane`.
    pub(super) lanes: Option<Vec<LaneSetting>>,
    pub(super) request_timeout_secs: Option<u64>,
    pub(super) max_connections: Option<u32>,
    pub(super) master_key_file: Option<PathBuf>,
    pub(super) store: Option<String>,
    pub(super) store_stream: Option<String>,
    pub(super) store_replicas: Option<usize>,
}

/// Reads a `--config` file: the security keys ([`SecurityFile`]) and the others, each
/// refusing keys it does not know.
pub(super) fn read_config(path: &Path) -> anyhow::Result<(FileConfig, SecurityFile)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let bad = || format!("bad config file {}", path.display());
    let mut table: toml::Table = toml::from_str(&text).with_context(bad)?;
    let mut security = toml::Table::new();
    for key in SecurityFile::KEYS {
        if let Some(value) = table.remove(*key) {
            security.insert((*key).to_owned(), value);
        }
    }
    Ok((
        table.try_into().with_context(bad)?,
        security.try_into().with_context(bad)?,
    ))
}
