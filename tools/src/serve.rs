//! `annals serve`: the HTTP API over a data directory.
//!
//! Settings come from flags, else `ANNALS_*` environment variables, else a TOML file
//! (`--config`), else defaults. On SIGTERM or SIGINT the server stops accepting
//! connections, ends live event streams, lets in-flight requests finish (up to
//! `--shutdown-timeout`), then closes the store (the writer finishes its batch, the
//! index is flushed) and exits 0.
//!
//! With `--nats-url` the outbox relay runs inside the server, on the same store: it
//! publishes every committed event to NATS JetStream (a CloudEvent whose body is the
//! payload as JSON, [`crate::event_json`]; docs/NATS.md), `GET /api/v1/outbox` shows its
//! status and `/readyz` reports it (degraded while NATS is away, never unready). On
//! shutdown it stops after the HTTP server has drained and before the store closes.
//! Without a URL the relay is off, and the server says so at start. `--nats-tls-ca`
//! (and `--nats-tls-cert`/`--nats-tls-key` for a server that verifies clients) make the
//! relay's connection TLS (see [`crate::tls::NatsTlsArgs`]).
//!
//! With `--tls-cert` and `--tls-key` (both or neither) the server speaks HTTPS only
//! (rustls, [`crate::tls::TlsListener`]); the files are read before the store opens, and
//! a bad one stops the start with an error naming it.
//!
//! The fulfilment saga runs inside the server too: it follows the log, and every order
//! placed is reserved, charged and confirmed, or compensated and cancelled (see the
//! `sagas` crate). `--saga-timeout` sets its deadline. It stops after the HTTP server
//! has drained; an order in flight goes on at the next start.
//!
//! The background workers (the relay, the projections runner, the saga driver and the
//! read-model freshness sampler) run under a [`supervisor::Supervisor`]: one that
//! panics or fails is restarted with backoff, one that fails more than
//! `--worker-max-restarts` times within `--worker-restart-window` is marked failed and
//! `/readyz` names it; `GET /api/v1/workers` lists them (docs/OPERATIONS.md, "Workers and
//! restarts"). The projections runner cannot be made again in the same process (its
//! handle is the read side's), so it is never restarted: a failure marks it failed.
//!
//! If the store's writer fails (a write or an `fdatasync` of the log fails: a disk error,
//! a full disk), the server stops taking commands at once (503 `store-failed`),
//! `/readyz` and `/healthz` answer 503 naming the failure, reads go on, and after
//! [`FAILURE_GRACE`] it drains and exits with code 75 ([`crate::exit::STORE_FAILED`]), so
//! that its supervisor restarts it: only a fresh process reopens the store, and recovery
//! then re-reads what the disk really holds (docs/OPERATIONS.md).
//!
//! With `--chaos` (or `ANNALS_CHAOS=1`) one [`chaos::Chaos`] switch, enabled, is shared
//! by every fault point of the server, and `/api/v1/chaos/faults` injects and clears
//! faults (docs/OPERATIONS.md, "Fault injection"); the server says so with a `warn` at
//! start. Without it the switch is inert: the points cost one branch and the chaos
//! routes answer 404.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use api::{ApiConfig, AppState};
use eventstore::{EventStore, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::exit::Failure;
use crate::telemetry::LogFormat;

mod config_file;
mod connections;
mod discovery;
mod listen;
mod personal_data;
mod relay;
mod security;
mod singletons;
mod store;

use listen::{DEFAULT_MAX_CONNECTIONS, cancel_on_signal, serve_state};

use config_file::{LaneSetting, read_config};
pub use discovery::{ClusterArgs, ClusterSettings};
pub use personal_data::MasterKeySource;
use personal_data::open_key_store;
use relay::start_relay;
pub use security::{SecurityArgs, SecuritySettings};
pub use store::StoreBackend;

/// Serve the HTTP API.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Settings: a flag wins over its ANNALS_* environment variable, which wins over the
--config file, which wins over the default. The TOML file may set data_dir, listen,
max_body_bytes, max_order_lines, saga_max_instances, blocking_io_threads,
shutdown_timeout_secs, nats_url, saga_timeout_secs, tls_cert, tls_key,
nats_tls_ca, nats_tls_cert, nats_tls_key, log_format, otlp_endpoint, traces_per_second,
metrics (true or false), correlations (true or false), auth_jwt_secret_file,
auth_jwks_file, auth_jwks_url, auth_issuer, auth_audience,
policy_file, rate_limit, insecure_no_auth, worker_max_restarts,
worker_restart_window_secs, poison_events (fault or park), projection_retries, lanes
(a list of \"LANE=LIMITS\" strings), request_timeout_secs, max_connections, and the
tables [rate_limit_roles] and [[slo]] (the service level objectives, see
docs/OPERATIONS.md).

Without authentication the server listens on loopback only; a non-loopback --listen
needs --auth-jwt-secret-file, --auth-jwks-file or --auth-jwks-url (or --insecure-no-auth).
See docs/SECURITY.md.

Example:
  annals serve --data-dir ./annals-data --listen 127.0.0.1:8080
  annals serve --data-dir ./annals-data --nats-url nats://127.0.0.1:4222
  annals serve --tls-cert server.pem --tls-key server-key.pem --listen 127.0.0.1:8443
  annals serve --nats-url tls://nats.internal:4222 --nats-tls-ca nats-ca.pem")]
pub struct ServeArgs {
    /// The data directory, created if missing [default: ./annals-data].
    #[arg(long, env = "ANNALS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ANNALS_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The largest request body accepted, in bytes; larger is a 413 [default: 65536].
    #[arg(long, env = "ANNALS_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// The most lines an order may have; more is a 422 `too-many-lines` [default: 100].
    #[arg(long, env = "ANNALS_MAX_ORDER_LINES", value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_order_lines: Option<u64>,
    /// The most fulfilment saga instances (orders in progress) running at once; beyond
    /// it new orders wait in the log until one finishes [default: 1024].
    #[arg(long, env = "ANNALS_SAGA_MAX_INSTANCES", value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    saga_max_instances: Option<u64>,
    /// The most blocking store reads (command loads, index lookups, waits for the
    /// indexer) running at once on the blocking pool; more wait for a turn without
    /// holding an async worker [default: 64].
    #[arg(long, env = "ANNALS_BLOCKING_IO_THREADS", value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=512))]
    blocking_io_threads: Option<u64>,
    /// How long a shutdown waits for in-flight requests, in seconds [default: 30].
    #[arg(long, env = "ANNALS_SHUTDOWN_TIMEOUT_SECS", value_name = "SECONDS")]
    shutdown_timeout: Option<u64>,
    /// Run the outbox relay to this NATS server (comma-separated URLs for a cluster)
    /// inside the server [default: the relay is off].
    #[arg(long, env = "ANNALS_NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
    /// How long the fulfilment saga waits for an order to be reserved and charged
    /// before it cancels it, in seconds [default: 30].
    #[arg(long, env = "ANNALS_SAGA_TIMEOUT_SECS", value_name = "SECONDS")]
    saga_timeout: Option<u64>,
    /// Run without the fulfilment saga: orders placed stay pending (e.g. to serve a
    /// copy of a data directory for inspection without acting on it).
    #[arg(long, env = "ANNALS_NO_SAGA")]
    no_saga: bool,
    /// Fault injection: delay the charge of some orders by this many milliseconds.
    #[arg(
        long,
        env = "ANNALS_FAULT_CHARGE_DELAY_MS",
        value_name = "MS",
        hide = true
    )]
    fault_charge_delay_ms: Option<u64>,
    /// Fault injection: the share of orders whose charge is delayed, in percent.
    #[arg(long, env = "ANNALS_FAULT_CHARGE_DELAY_PERCENT", value_name = "PERCENT", hide = true,
        value_parser = clap::value_parser!(u8).range(0..=100))]
    fault_charge_delay_percent: Option<u8>,
    /// Fault injection: enable the fault points (store.fsync, store.write, relay.publish,
    /// saga.command, http.handler, projection.apply, security.jwks, psp.charge,
    /// store.index) and the routes that
    /// inject and clear faults, `/api/v1/chaos/faults` (docs/OPERATIONS.md, "Fault
    /// injection"). For test and staging servers [default: off: the points are inert and
    /// the routes answer 404].
    #[arg(long, env = "ANNALS_CHAOS")]
    chaos: bool,
    /// A background worker (relay, projections, saga driver) that fails more than this
    /// many times within --worker-restart-window is marked failed and not restarted
    /// [default: 5].
    #[arg(long, env = "ANNALS_WORKER_MAX_RESTARTS", value_name = "N")]
    worker_max_restarts: Option<u32>,
    /// The window --worker-max-restarts counts failures in, in seconds [default: 60].
    #[arg(
        long,
        env = "ANNALS_WORKER_RESTART_WINDOW_SECS",
        value_name = "SECONDS"
    )]
    worker_restart_window: Option<u64>,
    /// Tests: the size at which a segment of the log is closed, in bytes [default: 64
    /// MiB].
    #[arg(long, value_name = "BYTES", hide = true)]
    segment_bytes: Option<u64>,
    /// Tests: do not zero-fill segments ahead of writing (preallocation is on by default).
    #[arg(long, hide = true)]
    no_preallocate: bool,
    /// How log lines are written to stderr: `text`, or `json` (one object per line)
    /// [default: text].
    #[arg(long, env = "ANNALS_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector: spans are posted to
    /// URL/v1/traces, under the service name OTEL_SERVICE_NAME [default: annals]
    /// [default: no export].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// With --otlp-endpoint: begin at most this many new traces a second (a request
    /// continuing a client's sampled `traceparent` is always traced; 0: only those);
    /// OTEL_TRACES_SAMPLER, when set, decides instead [default: 100].
    #[arg(long, env = "ANNALS_TRACES_PER_SECOND", value_name = "N")]
    traces_per_second: Option<u32>,
    /// Record no metrics and answer 404 at /metrics (saves their small cost) [default:
    /// metrics on].
    #[arg(long)]
    no_metrics: bool,
    /// Keep the correlation index (the `correlations` read model), which
    /// `GET /api/v1/correlations/{id}` and the console's event page read; it applies nearly
    /// every event (about 6% of `annals bench http`), and is built from the start of the
    /// log when first kept [default: not kept; that route answers 404
    /// `correlations-not-kept`].
    #[arg(long, env = "ANNALS_CORRELATIONS")]
    correlations: bool,
    /// A TOML file with any of the settings above (snake_case keys).
    #[arg(long, env = "ANNALS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Authentication, policy and rate limits.
    #[command(flatten)]
    security: SecurityArgs,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key) [default: plain
    /// HTTP].
    #[arg(long, env = "ANNALS_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "ANNALS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// TLS towards NATS for the outbox relay.
    #[command(flatten)]
    nats_tls: crate::tls::NatsTlsArgs,
    /// What a read model does with an event it still cannot apply after its retries:
    /// `fault` (stop there, naming it) or `park` (record it, go on; list and retry it
    /// with `annals read-models parked|retry`) [default: fault].
    #[arg(long, env = "ANNALS_POISON_EVENTS", value_name = "POLICY")]
    poison_events: Option<projections::PoisonPolicy>,
    /// How many times a read model applies an event that failed again before the
    /// --poison-events policy decides [default: 3].
    #[arg(long, env = "ANNALS_PROJECTION_RETRIES", value_name = "N")]
    projection_retries: Option<u32>,
    /// Payment providers for customers with a card on file, in order (repeat the flag):
    /// a charge goes to the first whose circuit breaker is not open [default: none:
    /// every order is paid from the prepaid account].
    #[arg(long = "psp-url", value_name = "URL")]
    psp_urls: Vec<String>,
    /// The limit of one call to a payment provider, in milliseconds [default: 2000].
    #[arg(long, env = "ANNALS_PSP_TIMEOUT_MS", value_name = "MS")]
    psp_timeout_ms: Option<u64>,
    /// Retries of a retryable provider failure, per provider and charge [default: 2].
    #[arg(long, env = "ANNALS_PSP_RETRIES", value_name = "N")]
    psp_retries: Option<usize>,
    /// Charges failed in a row that open a provider's circuit breaker [default: 5].
    #[arg(long, env = "ANNALS_PSP_BREAKER_FAILURES", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    psp_breaker_failures: Option<u32>,
    /// How long an open provider breaker waits before one probe, in milliseconds
    /// [default: 10000].
    #[arg(long, env = "ANNALS_PSP_BREAKER_COOL_DOWN_MS", value_name = "MS")]
    psp_breaker_cool_down_ms: Option<u64>,
    /// The currency of every amount sent to the providers (ISO 4217, two decimals)
    /// [default: EUR].
    #[arg(long, env = "ANNALS_PSP_CURRENCY", value_name = "CODE")]
    psp_currency: Option<String>,
    /// An intent lane's limits, `LANE=CONCURRENCY:QUEUE:WAIT_MS` (lanes: interactive,
    /// operator, bulk), repeatable; a request finding its lane's queue full or waiting
    /// longer is shed with 503 and Retry-After [default: interactive=512:2048:2000,
    /// operator=16:64:2000, bulk=2:8:1000].
    #[arg(
        long = "lane",
        env = "ANNALS_LANES",
        value_delimiter = ',',
        value_name = "LANE=LIMITS"
    )]
    lanes: Vec<LaneSetting>,
    /// The longest a request may run before it is answered 503 `request-timeout`
    /// (not the live log), in seconds [default: 30].
    #[arg(long, env = "ANNALS_REQUEST_TIMEOUT_SECS", value_name = "SECONDS")]
    request_timeout: Option<u64>,
    /// The most HTTP connections open at once; beyond, new ones wait in the listen
    /// backlog until one closes [default: 1024].
    #[arg(long, env = "ANNALS_MAX_CONNECTIONS", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// The master key that wraps the keys personal data is sealed with: a file of 64
    /// hex digits, created (mode 0600) if missing; keep it apart from the data directory
    /// and back it up. Or give the key itself in ANNALS_MASTER_KEY. Without either, the
    /// server keeps no personal data (the customers' routes answer 503).
    #[arg(long, env = "ANNALS_MASTER_KEY_FILE", value_name = "PATH")]
    master_key_file: Option<PathBuf>,
    /// Where the log lives: `embedded` (segment files in the data directory), or a
    /// replicated NATS JetStream stream, `nats://H1:P1,H2:P2,H3:P3`; the data directory
    /// then holds this node's copy, indexes and read models, and any number of nodes
    /// share the log (docs/ARCHITECTURE.md, "The log on JetStream") [default: embedded].
    #[arg(long, env = "ANNALS_STORE", value_name = "embedded|nats://...")]
    store: Option<String>,
    /// With --store nats://: the JetStream stream of the log, created if missing
    /// [default: ANNALS_LOG].
    #[arg(long, env = "ANNALS_STORE_STREAM", value_name = "NAME")]
    store_stream: Option<String>,
    /// With --store nats://: the copies JetStream keeps of the log, when it creates the
    /// stream [default: 3].
    #[arg(long, env = "ANNALS_STORE_REPLICAS", value_name = "N")]
    store_replicas: Option<usize>,
    /// Service discovery over NATS.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How long a server whose store's writer failed goes on answering (commands and the
/// probes with 503 `store-failed`, reads as usual) before it drains and exits with
/// [`crate::exit::STORE_FAILED`]: time for the answers in flight and for a readiness
/// probe or two to see the failure.
pub const FAILURE_GRACE: Duration = Duration::from_secs(2);

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The listen address.
    pub listen: String,
    /// The request body limit.
    pub max_body_bytes: usize,
    /// The most lines per order.
    pub max_order_lines: usize,
    /// The most saga instances running at once.
    pub saga_max_instances: usize,
    /// The most blocking store reads running at once.
    pub blocking_io_threads: usize,
    /// The drain timeout.
    pub shutdown_timeout: Duration,
    /// Where the outbox relay publishes; `None`: the relay is off.
    pub nats_url: Option<String>,
    /// Whether the fulfilment saga runs.
    pub saga: bool,
    /// The fulfilment saga's deadline.
    pub saga_timeout: Duration,
    /// Faults the saga injects on purpose (tests, demos).
    pub faults: sagas::Faults,
    /// Whether the fault points can be armed (`--chaos`).
    pub chaos: bool,
    /// The store's segment size (tests); `None`: the store's default.
    pub segment_bytes: Option<u64>,
    /// Whether segments are zero-filled ahead of writing.
    pub preallocate_segments: bool,
    /// Authentication, policy and rate limits.
    pub security: SecuritySettings,
    /// The certificate and key HTTPS is served with; `None`: plain HTTP.
    pub tls: Option<crate::tls::ServerFiles>,
    /// TLS towards NATS for the outbox relay.
    pub nats_tls: outbox::NatsTls,
    /// The service level objectives measured (docs/OPERATIONS.md, "Watching Annals").
    pub slos: Vec<slo::Objective>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The OTLP/HTTP collector spans are exported to; `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// The most new traces begun a second when exporting.
    pub traces_per_second: u32,
    /// Whether metrics are recorded and served at `/metrics`.
    pub metrics: bool,
    /// Whether the `correlations` read model is kept (`--correlations`).
    pub correlations: bool,
    /// How the background workers are restarted.
    pub workers: supervisor::SupervisorConfig,
    /// The read models' runner: what it does with poison events (the rest default).
    pub projections: projections::RunnerConfig,
    /// The payment providers cards on file are charged through; `None`: no card
    /// payments (every order is paid from the prepaid account).
    pub payment_providers: Option<psp::ChainConfig>,
    /// The intent lanes' limits and the request timeout.
    pub lanes: api::lanes::LanesConfig,
    /// The most HTTP connections open at once (`connections`).
    pub max_connections: usize,
    /// Where the master key comes from; `None`: no personal data.
    pub master_key: Option<MasterKeySource>,
    /// Where the log lives.
    pub store: StoreBackend,
    /// Service discovery (`--cluster-nats-url`, `--node-id`, `--advertise-url`).
    pub cluster: ClusterSettings,
}

impl ServeArgs {
    /// Flags and environment over the config file over defaults.
    fn settings(self) -> anyhow::Result<Settings> {
        let (file, security_file) = match &self.config {
            Some(path) => read_config(path)?,
            None => Default::default(),
        };
        let defaults = ApiConfig::default();
        let mut lanes = defaults.lanes.clone();
        // The file's lanes first, then the flags' over them.
        for setting in file.lanes.iter().flatten().chain(&self.lanes) {
            lanes.set(setting.lane, setting.limits);
        }
        if let Some(seconds) = self.request_timeout.or(file.request_timeout_secs) {
            lanes.request_timeout = Duration::from_secs(seconds.max(1));
        }
        let master_key = match self.master_key_file.or(file.master_key_file) {
            Some(path) => Some(MasterKeySource::File(path)),
            None if std::env::var_os(privacy::MASTER_KEY_ENV).is_some() => {
                Some(MasterKeySource::Environment)
            }
            None => None,
        };
        let store = StoreBackend::parse(
            self.store.or(file.store).as_deref(),
            self.store_stream.or(file.store_stream),
            self.store_replicas.or(file.store_replicas),
        )?;
        // A node whose log is on JetStream is found through the same servers.
        let mut cluster = self.cluster.settings()?;
        if let (None, StoreBackend::JetStream(log)) = (&cluster.nats_url, &store) {
            cluster.nats_url = Some(log.urls.clone());
        }
        Ok(Settings {
            store,
            cluster,
            master_key,
            lanes,
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .map_or(DEFAULT_MAX_CONNECTIONS, |max| max as usize),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./annals-data")),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            max_order_lines: self
                .max_order_lines
                .or(file.max_order_lines)
                .map_or(defaults.max_order_lines, |n| n as usize),
            saga_max_instances: self
                .saga_max_instances
                .or(file.saga_max_instances)
                .map_or(sagas::DriverConfig::default().max_instances, |n| n as usize),
            blocking_io_threads: self
                .blocking_io_threads
                .or(file.blocking_io_threads)
                .map_or(StoreConfig::default().blocking_io, |n| n as usize),
            shutdown_timeout: Duration::from_secs(
                self.shutdown_timeout
                    .or(file.shutdown_timeout_secs)
                    .unwrap_or(30),
            ),
            nats_url: self.nats_url.or(file.nats_url),
            saga: !self.no_saga,
            saga_timeout: Duration::from_secs(
                self.saga_timeout.or(file.saga_timeout_secs).unwrap_or(30),
            ),
            faults: sagas::Faults {
                charge_delay: Duration::from_millis(self.fault_charge_delay_ms.unwrap_or(0)),
                charge_delay_percent: self.fault_charge_delay_percent.unwrap_or(0),
            },
            chaos: self.chaos,
            segment_bytes: self.segment_bytes,
            preallocate_segments: !self.no_preallocate,
            security: self.security.settings(security_file),
            tls: crate::tls::ServerFiles::pair(
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
            )?,
            nats_tls: crate::tls::NatsTlsArgs {
                nats_tls_ca: self.nats_tls.nats_tls_ca.or(file.nats_tls_ca),
                nats_tls_cert: self.nats_tls.nats_tls_cert.or(file.nats_tls_cert),
                nats_tls_key: self.nats_tls.nats_tls_key.or(file.nats_tls_key),
            }
            .settings()?,
            slos: match file.slo {
                Some(objectives) => {
                    // Checked now, so that a bad objective stops the start naming it.
                    slo::Slos::new(objectives.clone()).map_err(|error| {
                        anyhow::anyhow!("bad [[slo]] in the config file: {error}")
                    })?;
                    objectives
                }
                None => slo::Objective::defaults(),
            },
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            otlp_endpoint: self
                .otlp_endpoint
                .or(file.otlp_endpoint)
                .filter(|url| !url.is_empty()),
            traces_per_second: self
                .traces_per_second
                .or(file.traces_per_second)
                .unwrap_or(crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND),
            metrics: !self.no_metrics && file.metrics.unwrap_or(true),
            correlations: self.correlations || file.correlations.unwrap_or(false),
            workers: {
                let defaults = supervisor::SupervisorConfig::default();
                supervisor::SupervisorConfig {
                    max_restarts: self
                        .worker_max_restarts
                        .or(file.worker_max_restarts)
                        .unwrap_or(defaults.max_restarts),
                    window: self
                        .worker_restart_window
                        .or(file.worker_restart_window_secs)
                        .map_or(defaults.window, Duration::from_secs),
                    ..defaults
                }
            },
            projections: {
                let defaults = projections::RunnerConfig::default();
                projections::RunnerConfig {
                    poison_policy: self
                        .poison_events
                        .or(file.poison_events)
                        .unwrap_or(defaults.poison_policy),
                    poison_retries: self
                        .projection_retries
                        .or(file.projection_retries)
                        .unwrap_or(defaults.poison_retries),
                    ..defaults
                }
            },
            payment_providers: {
                let urls = if self.psp_urls.is_empty() {
                    file.psp_urls.unwrap_or_default()
                } else {
                    self.psp_urls
                };
                if urls.is_empty() {
                    None
                } else {
                    let defaults = psp::ChainConfig::new(urls);
                    let config = psp::ChainConfig {
                        timeout: self
                            .psp_timeout_ms
                            .or(file.psp_timeout_ms)
                            .map_or(defaults.timeout, Duration::from_millis),
                        retries: self
                            .psp_retries
                            .or(file.psp_retries)
                            .unwrap_or(defaults.retries),
                        failure_threshold: self
                            .psp_breaker_failures
                            .or(file.psp_breaker_failures)
                            .unwrap_or(defaults.failure_threshold),
                        cool_down: self
                            .psp_breaker_cool_down_ms
                            .or(file.psp_breaker_cool_down_ms)
                            .map_or(defaults.cool_down, Duration::from_millis),
                        currency: self
                            .psp_currency
                            .or(file.psp_currency)
                            .unwrap_or_else(|| defaults.currency.clone()),
                        ..defaults
                    };
                    // Checked now, so that a bad URL stops the start naming it.
                    psp::Chain::new(&config)
                        .map_err(|error| anyhow::anyhow!("bad payment providers: {error}"))?;
                    Some(config)
                }
            },
        })
    }
}

/// Reads the settings, sets up the log subscriber and traces as they say, and runs the
/// server on a runtime of its own until SIGTERM or SIGINT.
pub fn run_blocking(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings();
    let (log_format, otlp_endpoint, traces_per_second) = match &settings {
        Ok(settings) => (
            settings.log_format,
            settings.otlp_endpoint.as_deref(),
            settings.traces_per_second,
        ),
        Err(_) => (LogFormat::default(), None, 0),
    };
    // Dropped after the runtime: the last spans are exported from outside it.
    let _telemetry = crate::telemetry::init_server(log_format, otlp_endpoint, traces_per_second)?;
    let settings = settings?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
}

/// Runs the server until SIGTERM or SIGINT, then drains and closes the store; or until
/// its store's writer fails, then drains, closes it and fails with
/// [`Failure::StoreFailed`] (exit code 75).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    serve(settings, shutdown).await
}

/// Serves with `settings` until `shutdown` is cancelled, or until the store's writer
/// fails (then it cancels `shutdown` itself, after [`FAILURE_GRACE`], and fails with
/// [`Failure::StoreFailed`]).
pub async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A bad certificate or key stops the start before the store opens.
    let tls = settings
        .tls
        .as_ref()
        .map(crate::tls::ServerFiles::server_config)
        .transpose()?;
    security::check_exposure(&settings.listen, &settings.security)?;
    let payment_providers = settings
        .payment_providers
        .as_ref()
        .map(psp::Chain::new)
        .transpose()
        .map_err(|error| anyhow::anyhow!("bad payment providers: {error}"))?;
    // One switch for every fault point of the server, inert unless `--chaos`.
    let chaos = if settings.chaos {
        tracing::warn!(
            "fault injection is ON (--chaos): faults can be injected at \
             /api/v1/chaos/faults by operators and admins; do not run production like this"
        );
        chaos::Chaos::enabled()
    } else {
        chaos::Chaos::inert()
    };
    let payment_providers = payment_providers.map(|chain| chain.with_chaos(chaos.clone()));
    let mut security_settings = settings.security.clone();
    security_settings.auth.chaos = chaos.clone();
    let gate = security::gate(&security_settings).await?;
    let defaults = StoreConfig::default();
    let store_config = StoreConfig {
        create_if_missing: true,
        segment_bytes: settings.segment_bytes.unwrap_or(defaults.segment_bytes),
        preallocate_segments: settings.preallocate_segments,
        blocking_io: settings.blocking_io_threads,
        chaos: chaos.clone(),
        ..defaults
    };
    let store = store::open(&settings, store_config).await?;

    // The key store of personal data, beside the log, if the server has a master key.
    let key_store = match open_key_store(&settings).await {
        Ok(key_store) => key_store,
        Err(error) => {
            store.close().await;
            return Err(error);
        }
    };

    // The read models follow the log in a worker of their own; they stop before the
    // store closes.
    let runner_config = projections::RunnerConfig {
        chaos: chaos.clone(),
        ..settings.projections.clone()
    };
    // `correlations` only on request: it applies nearly every event.
    let started = if settings.correlations {
        read_models::ReadSide::start_with_correlations(&store, runner_config)
    } else {
        read_models::ReadSide::start(&store, runner_config)
    };
    let (projections, mut runner) = match started {
        Ok(started) => started,
        Err(error) => {
            store.close().await;
            return Err(error).context("cannot start the read models");
        }
    };
    // The outbox relay, if configured, publishes in a worker of its own; it stops after
    // the HTTP server has drained and before the store closes.
    let relay = match start_relay(&settings, &store, &chaos) {
        Ok(relay) => relay,
        Err(error) => {
            store.close().await;
            return Err(error);
        }
    };
    let config = ApiConfig {
        max_body_bytes: settings.max_body_bytes,
        max_order_lines: settings.max_order_lines,
        metrics: settings.metrics,
        lanes: settings.lanes.clone(),
        ..ApiConfig::default()
    };
    // One repository per aggregate for the whole process: the API and the saga share
    // them, so their commands on one aggregate queue on its stream.
    let repositories = repositories::Repositories::new(store.clone());
    let mut state = AppState::sharing(store.clone(), repositories.clone(), config)
        .with_projections(projections)
        .with_chaos(chaos.clone());
    if let Some(relay) = &relay {
        state = state.with_relay(relay.status());
    }
    if let Some(gate) = gate {
        state = state.with_security(gate);
    }
    if let Some(key_store) = &key_store {
        state = state.with_key_store(key_store.clone());
    }
    let slos = std::sync::Arc::new(
        slo::Slos::new(settings.slos.clone())
            .expect("the objectives were checked with the settings"),
    );
    state = state.with_slos(slos.clone());
    let mut services = sagas::FulfilmentServices::new(repositories, settings.saga_timeout)
        .with_faults(settings.faults.clone())
        .with_chaos(chaos.clone());
    if let Some(chain) = payment_providers {
        tracing::info!(providers = ?settings.payment_providers.as_ref().map(|config| &config.urls), "card payments on: cards on file are charged through the payment providers");
        services = services.with_card_payments(chain.clone());
        state = state.with_payment_providers(chain);
    }
    let driver = if settings.saga {
        let started = sagas::DriverWorker::<sagas::Fulfilment, _>::new(
            store.clone(),
            std::sync::Arc::new(services),
            std::sync::Arc::new(sagas::SystemClock),
            sagas::DriverConfig {
                // Each finished saga counts for the saga-completion objective.
                on_finished: Some(api::slo::saga_completions(slos.clone())),
                max_instances: settings.saga_max_instances,
                ..sagas::DriverConfig::default()
            },
        );
        match started {
            Ok(driver) => {
                tracing::info!(timeout = ?settings.saga_timeout, "fulfilment saga on");
                Some(driver)
            }
            Err(error) => {
                store.close().await;
                return Err(error).context("cannot start the fulfilment saga");
            }
        }
    } else {
        tracing::info!("fulfilment saga off (--no-saga): orders placed stay pending");
        None
    };
    if let Some(driver) = &driver {
        state = state.with_saga(driver.watch());
    }
    let mut workers = supervisor::Supervisor::new(settings.workers.clone());
    state = state.with_workers(workers.workers());
    // The runner is made once with the read side the API holds: it runs once, and a
    // failure of the runner itself marks it failed (the supervisor's `Restart::Never`).
    // Each read model inside it retries the events it fails on and reports itself as a
    // worker, `projection:<name>`.
    runner.report_to(&workers.workers());
    let mut runner = Some(runner);
    workers.spawn_with("projections", supervisor::Restart::Never, move |stop| {
        let runner = runner.take();
        async move {
            let Some(runner) = runner else {
                return Err("the projection runner cannot be started again in this process");
            };
            runner.run(stop).await;
            Ok(())
        }
    });
    // Read-model freshness, sampled once a second while the server runs.
    let sampled = state.clone();
    workers.spawn("slo-sampler", move |stop| {
        let sampling =
            api::slo::sample_freshness(sampled.clone(), slos.clone(), Duration::from_secs(1), stop);
        async move {
            sampling.await;
            Ok::<(), std::convert::Infallible>(())
        }
    });
    let mut workers_timeout = Duration::from_secs(10);
    // With the log on JetStream the relay and the saga driver run on one node at a time,
    // under a lease (`singletons`); on one machine they simply run.
    let leases = match singletons::leases(&settings).await {
        Ok(leases) => leases,
        Err(error) => {
            workers.shutdown(workers_timeout).await;
            store.close().await;
            return Err(error);
        }
    };
    if let Some(relay) = relay {
        workers_timeout = workers_timeout.max(relay.stop_timeout);
        match &leases {
            None => workers.spawn("relay", move |stop| relay.relay.clone().run(stop)),
            Some(leases) => singletons::spawn(&mut workers, leases, "relay", move |stop| {
                relay.relay.clone().run(stop)
            }),
        }
    }
    if let Some(driver) = driver {
        let name = format!("saga:{}", <sagas::Fulfilment as sagas::Saga>::NAME);
        match &leases {
            None => workers.spawn(name, move |stop| driver.run(stop)),
            Some(leases) => {
                singletons::spawn(&mut workers, leases, "saga", move |stop| driver.run(stop))
            }
        }
    }
    // Destroys the keys of every erasure the log records, from its position in the key
    // store: an erasure cut short by a crash, imported with a log, or older than a
    // restored key store, ends with the keys gone.
    if let Some(key_store) = key_store {
        let enforcer = api::personal_data::ErasureEnforcer::new(store.clone(), key_store);
        workers.spawn("erasure-enforcer", move |stop| enforcer.clone().run(stop));
    }
    // Registered for service discovery once every worker runs; unregistered once the
    // HTTP server has stopped.
    let roles = leases
        .as_ref()
        .map_or_else(discovery::Roles::default, cluster::lease::Leases::roles);
    let node = match discovery::register(&settings, &state, roles).await {
        Ok(node) => node,
        Err(error) => {
            workers.shutdown(workers_timeout).await;
            store.close().await;
            return Err(error);
        }
    };
    let watch = tokio::spawn(stop_on_failure(
        store.clone(),
        settings.data_dir.clone(),
        shutdown.clone(),
    ));
    let result = serve_state(&settings, tls, state, shutdown).await;
    watch.abort();
    drop(node);
    // Every worker stops (the saga's instances where they are, the relay after the
    // acknowledgements due, each saving its checkpoint) before the store closes.
    let late = workers.shutdown(workers_timeout).await;
    if late.is_empty() {
        tracing::info!("workers stopped");
    } else {
        tracing::warn!(workers = ?late, timeout = ?workers_timeout, "workers did not stop in time; closing the store anyway");
    }
    store.close().await;
    tracing::info!("store closed");
    if let Some(reason) = store.failure() {
        if let Err(error) = &result {
            tracing::error!(error = %format!("{error:#}"), "the HTTP server failed too");
        }
        return Err(Failure::StoreFailed(format!(
            "the event store's writer failed ({reason}); exiting with code {} so that the \
             supervisor restarts the server: only a fresh process reopens {}, and recovery \
             re-reads the disk; check the disk first (dmesg, free space), see \
             docs/OPERATIONS.md",
            crate::exit::STORE_FAILED,
            settings.data_dir.display()
        ))
        .into());
    }
    result
}

/// Waits for the store's writer to fail; then says so in the log, lets the server answer
/// for [`FAILURE_GRACE`] (commands and probes 503 `store-failed`, reads as usual) and
/// begins the shutdown. Returns when `shutdown` is cancelled for another reason.
async fn stop_on_failure(store: EventStore, data_dir: PathBuf, shutdown: CancellationToken) {
    let reason = tokio::select! {
        reason = store.failed() => reason,
        () = shutdown.cancelled() => return,
    };
    tracing::error!(
        %reason,
        data_dir = %data_dir.display(),
        grace = ?FAILURE_GRACE,
        exit_code = crate::exit::STORE_FAILED,
        "the event store's writer failed: no more commands are taken (503 store-failed), \
         /readyz and /healthz answer 503; the server exits after the grace so that its \
         supervisor restarts it (only a fresh process reopens the store); check the disk \
         (dmesg, free space), then `annals verify` if in doubt"
    );
    tokio::time::sleep(FAILURE_GRACE).await;
    shutdown.cancel();
}

#[cfg(test)]
mod tests;
