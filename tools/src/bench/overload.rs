//! `annals bench overload`: what a bulk flood does to interactive commands. Two phases
//! of `--duration` seconds each on the same server:
//!
//! 1. *alone*: `--connections` clients place orders (`POST /api/v1/orders`, as `bench
//!    http` does), each waiting for its answer before the next;
//! 2. *flood*: the same interactive load, while `--bulk` more clients hammer the bulk
//!    lane in a loop, without pausing: read-model rebuilds (`POST
//!    /api/v1/projections/{name}/rebuild`), an export of a long stream in pages of 1,000
//!    events (`GET /api/v1/streams/{stream}?from=..&limit=1000`, walked from its start
//!    again and again) and 1,000-event pages of the log (`GET /api/v1/log?limit=1000`).
//!    `--flood` narrows the flood to some of the three kinds (to see which one costs what).
//!    A shed bulk client waits out the answer's `Retry-After`, as a well-behaved client
//!    does; `--ignore-retry-after` makes it send again at once (a client that ignores
//!    the server, whose every request is shed at some cost).
//!
//! Before the phases it seeds skus and accounts (the orders') and `--seed-events`
//! restocks of one sku (the stream the exports read, and enough events for the log
//! pages), and before each phase it waits for the server to settle (sagas done, read
//! models caught up), so that neither phase pays for the work of what came before.
//!
//! Every interactive answer but a 2xx, and every transport error, is an interactive
//! error. A bulk request is answered (2xx), shed (503 `overloaded` with a `Retry-After`
//! header) or an error (anything else, a shed answer without `Retry-After` included).
//! The report gives both phases' interactive figures, the bulk counts, `p99_ratio`
//! (flood p99 / alone p99) and `target_met`: the ratio at most 2 and no interactive
//! error in the flood (issue 15's target). It exits 0 whether the target is met or not;
//! only a bench that could not run (a server that does not start or cannot be seeded, no
//! order placed alone) fails.
//!
//! By default it starts an `annals serve` of its own (this executable, default lanes, a
//! fresh temporary data directory here), so the figures come from one command; `--url`
//! (with `--token` when the server demands one: an admin's, since it rebuilds read
//! models) runs against a server already running instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventstore::StreamId;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;

use super::http_load::{
    OrderClient, OrdersReport, Server, bench_dir, place_orders, post, projections, run_tag, seed,
    settle,
};
use crate::progress;

/// Events in a bulk page: ten times the largest page the operator lane takes.
const BULK_PAGE: usize = 1000;

/// The target: the flood's interactive p99 at most this many times the p99 alone.
const TARGET_RATIO: f64 = 2.0;

#[derive(Debug, clap::Args)]
pub struct OverloadArgs {
    /// A running server's base URL; without it the bench starts an `annals serve` of
    /// its own (default lanes, a fresh temporary data directory here).
    #[arg(long)]
    url: Option<String>,
    /// With --url: the bearer token to send (an admin's: the flood rebuilds read models).
    #[arg(long, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Interactive clients placing orders, in both phases.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Bulk clients flooding the bulk lane in the second phase.
    #[arg(long, default_value_t = 64)]
    bulk: usize,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Skus and customers to seed (orders pick among them).
    #[arg(long, default_value_t = 50)]
    entities: usize,
    /// What the bulk clients send, in turn (comma-separated): read-model rebuilds, export
    /// pages, log pages; by default all three.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BulkKind::Rebuild, BulkKind::Export, BulkKind::Log])]
    flood: Vec<BulkKind>,
    /// Restocks of one sku appended before the phases: the stream the exports read, and
    /// the events of the log pages (at least 1,000 make every page full).
    #[arg(long, default_value_t = 2000)]
    seed_events: usize,
    /// Bulk clients send again at once when shed, instead of waiting out `Retry-After`.
    #[arg(long)]
    ignore_retry_after: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct OverloadReport {
    bench: &'static str,
    /// The server measured: `own` (started by the bench) or its URL.
    server: String,
    /// The interactive load alone.
    alone: OrdersReport,
    /// The same interactive load under the bulk flood.
    flood: OrdersReport,
    /// What the bulk clients sent, in turn.
    flood_kinds: Vec<BulkKind>,
    /// Whether shed bulk clients waited out `Retry-After` (`false`: `--ignore-retry-after`).
    bulk_honours_retry_after: bool,
    bulk: BulkReport,
    /// `flood.p99_ms / alone.p99_ms`.
    p99_ratio: f64,
    /// `p99_ratio` at most 2 and no interactive error in the flood.
    target_met: bool,
}

/// What the bulk clients of the flood got.
#[derive(Debug, Default, Serialize)]
struct BulkReport {
    clients: usize,
    /// Every bulk request sent: answered + shed + errors.
    requests: u64,
    /// Answered with a 2xx.
    answered: u64,
    /// Of those answered: rebuilds started (or joined), export pages, log pages.
    rebuilds: u64,
    export_pages: u64,
    log_pages: u64,
    /// Shed: 503 `overloaded` with `Retry-After`.
    shed: u64,
    /// Anything else (a shed answer without `Retry-After` too).
    errors: u64,
    /// The first error, to say what went wrong.
    first_error: Option<String>,
}

pub(super) async fn run(args: OverloadArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.entities == 0 {
        bail!("--connections and --entities must be at least 1");
    }
    if args.flood.is_empty() {
        bail!("--flood names no kind of bulk request: rebuild, export or log");
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a number of seconds above 0");
    }
    let report = match &args.url {
        Some(url) => measure(&args, url.trim_end_matches('/'), args.token.as_deref()).await?,
        None => {
            let dir = bench_dir("annals-bench-overload-")?;
            let server = Server::start(&dir.path().join("data"), &[], "warn").await?;
            let measured = measure(&args, &server.base, None).await;
            server.stop().await;
            measured?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(report: &OverloadReport) {
    report.alone.print("alone");
    report.flood.print("flood");
    let bulk = &report.bulk;
    println!(
        "bulk: {} clients ({}) sent {} requests: {} answered ({} rebuilds, {} export pages, {} log pages), {} shed, {} errors{}",
        bulk.clients,
        if report.bulk_honours_retry_after {
            "waiting out Retry-After"
        } else {
            "ignoring Retry-After"
        },
        bulk.requests,
        bulk.answered,
        bulk.rebuilds,
        bulk.export_pages,
        bulk.log_pages,
        bulk.shed,
        bulk.errors,
        bulk.first_error
            .as_deref()
            .map(|error| format!(" (first: {error})"))
            .unwrap_or_default()
    );
    println!(
        "interactive p99 flood / alone: {:.2} / {:.2} ms = {:.2}x, {} interactive errors in the flood: target (at most {TARGET_RATIO}x, no errors) {}",
        report.flood.p99_ms,
        report.alone.p99_ms,
        report.p99_ratio,
        report.flood.errors,
        if report.target_met { "met" } else { "not met" }
    );
}

/// Seeds `base`, then measures the interactive load alone and under the flood.
async fn measure(
    args: &OverloadArgs,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<OverloadReport> {
    let tag = run_tag();
    let interactive = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(60))
        .build()?;
    let bar = spinner("seeding skus, accounts and the exported stream");
    seed(&interactive, base, token, &tag, args.entities).await?;
    let export = seed_export(&interactive, base, token, &tag, args.seed_events).await?;
    let rebuilds = projection_names(&interactive, base, token).await?;
    bar.set_message("waiting for the server to settle");
    settle(base, token).await?;
    bar.finish_and_clear();

    let duration = Duration::from_secs_f64(args.duration);
    let clients = || {
        vec![
            OrderClient {
                token: token.map(str::to_owned),
                fixed_customer: None,
            };
            args.connections
        ]
    };
    let ticker = phase_bar("alone: interactive orders", duration);
    let alone = place_orders(&interactive, base, &tag, args.entities, clients(), duration).await?;
    ticker.finish_and_clear();
    if alone.commands == 0 {
        bail!(
            "no order was placed without the flood ({} errors): nothing to compare with",
            alone.errors
        );
    }
    let settling = spinner("waiting for the server to settle");
    settle(base, token).await?;
    settling.finish_and_clear();

    let flood = Flood {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(args.bulk)
            .timeout(Duration::from_secs(60))
            .build()?,
        base: base.to_owned(),
        token: token.map(str::to_owned),
        export,
        rebuilds,
        kinds: args.flood.clone(),
        honour_retry_after: !args.ignore_retry_after,
        stop: Arc::new(AtomicBool::new(false)),
        counts: Arc::new(BulkCounts::default()),
    };
    let bulk_tasks: Vec<_> = (0..args.bulk)
        .map(|client| tokio::spawn(flood.clone().client_loop(client)))
        .collect();
    let ticker = phase_bar("flood: interactive orders under the bulk flood", duration);
    let flooded = place_orders(&interactive, base, &tag, args.entities, clients(), duration).await;
    flood.stop.store(true, Ordering::Relaxed);
    for task in bulk_tasks {
        task.await.context("a bulk client panicked")?;
    }
    ticker.finish_and_clear();
    let flooded = flooded?;
    let p99_ratio = flooded.p99_ms / alone.p99_ms;
    Ok(OverloadReport {
        bench: "overload",
        server: args.url.clone().unwrap_or_else(|| "own".into()),
        target_met: p99_ratio <= TARGET_RATIO && flooded.errors == 0 && flooded.commands > 0,
        p99_ratio,
        flood_kinds: args.flood.clone(),
        bulk_honours_retry_after: !args.ignore_retry_after,
        bulk: flood.counts.report(args.bulk),
        alone,
        flood: flooded,
    })
}

/// A spinner saying what the bench waits for, on stderr (hidden when stderr is not a
/// terminal).
fn spinner(message: &'static str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner.set_message(message);
    spinner
}

/// A bar counting a phase's seconds, on stderr (hidden when stderr is not a terminal).
fn phase_bar(message: &'static str, duration: Duration) -> ProgressBar {
    let bar = progress::bar(duration.as_secs().max(1), "s");
    bar.set_message(message);
    let ticking = bar.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        while !ticking.is_finished() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            ticking.set_position(started.elapsed().as_secs().min(duration.as_secs()));
        }
    });
    bar
}

/// Registers a sku of the run and restocks it `events` times (from 16 clients at once:
/// the server queues them on the stream), and returns its stream: the one the flood
/// exports.
async fn seed_export(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    run_tag: &str,
    events: usize,
) -> anyhow::Result<StreamId> {
    let sku = format!("bench-{run_tag}-export");
    post(
        client,
        &format!("{base}/api/v1/inventory/skus"),
        token,
        json!({"sku": sku, "name": "Exported item", "unit_price": 100}),
    )
    .await
    .with_context(|| format!("cannot seed {base}"))?;
    let restock = format!("{base}/api/v1/inventory/skus/{sku}/restock");
    let remaining = Arc::new(AtomicU64::new(events as u64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, restock, remaining) = (client.clone(), restock.clone(), remaining.clone());
        let token = token.map(str::to_owned);
        tasks.spawn(async move {
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                post(&client, &restock, token.as_deref(), json!({"quantity": 1})).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task?.with_context(|| format!("cannot seed the exported stream on {base}"))?;
    }
    Ok(StreamId::for_entity(
        <inventory::Stock as eventstore::Aggregate>::CATEGORY,
        &sku,
    )?)
}

/// The names of the server's read models (what the flood rebuilds).
async fn projection_names(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let list = projections(client, base, token).await?;
    let names: Vec<String> = list["projections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|projection| projection["name"].as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        bail!("{base} lists no read models to rebuild");
    }
    Ok(names)
}

/// The bulk clients' counters, shared by all of them.
#[derive(Debug, Default)]
struct BulkCounts {
    rebuilds: AtomicU64,
    export_pages: AtomicU64,
    log_pages: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl BulkCounts {
    fn error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(error);
    }

    fn report(&self, clients: usize) -> BulkReport {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let answered = load(&self.rebuilds) + load(&self.export_pages) + load(&self.log_pages);
        BulkReport {
            clients,
            requests: answered + load(&self.shed) + load(&self.errors),
            answered,
            rebuilds: load(&self.rebuilds),
            export_pages: load(&self.export_pages),
            log_pages: load(&self.log_pages),
            shed: load(&self.shed),
            errors: load(&self.errors),
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The bulk flood: what its clients ask for, and when to stop.
#[derive(Clone)]
struct Flood {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The stream the exports walk.
    export: StreamId,
    /// The read models to rebuild, in turn.
    rebuilds: Vec<String>,
    /// What to send, in turn.
    kinds: Vec<BulkKind>,
    /// Whether a shed client waits out `Retry-After` before it sends again.
    honour_retry_after: bool,
    stop: Arc<AtomicBool>,
    counts: Arc<BulkCounts>,
}

/// What a bulk request got.
enum Answer {
    /// A page of the exported stream.
    Page(ExportPage),
    /// Shed, to be sent again after `retry_after`.
    Shed { retry_after: Duration },
    /// Any other 2xx.
    Other,
}

/// Where a page of the exported stream ends: all the flood reads of it.
#[derive(serde::Deserialize)]
struct ExportPage {
    next_from: u64,
    last_version: u64,
}

/// One kind of bulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum BulkKind {
    /// `POST /api/v1/projections/{name}/rebuild`, the read models in turn.
    Rebuild,
    /// The next 1,000-event page of the exported stream.
    Export,
    /// `GET /api/v1/log?limit=1000`.
    Log,
}

impl Flood {
    /// Bulk client `client`: the kinds of `--flood` in turn (each client starting at
    /// another), as fast as the answers come, until told to stop.
    async fn client_loop(self, client: usize) {
        let mut export_from = 0u64;
        let mut turn = client;
        while !self.stop.load(Ordering::Relaxed) {
            let kind = self.kinds[turn % self.kinds.len()];
            let request = match kind {
                BulkKind::Rebuild => {
                    let name = &self.rebuilds[(turn / self.kinds.len()) % self.rebuilds.len()];
                    self.client
                        .post(format!("{}/api/v1/projections/{name}/rebuild", self.base))
                }
                BulkKind::Export => self.client.get(format!(
                    "{}/api/v1/streams/{}?from={export_from}&limit={BULK_PAGE}",
                    self.base, self.export
                )),
                BulkKind::Log => self
                    .client
                    .get(format!("{}/api/v1/log?limit={BULK_PAGE}", self.base)),
            };
            turn += 1;
            let request = match &self.token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            match self.answer(kind, request).await {
                Ok(Answer::Page(page)) => {
                    // Walk the stream to its end, then export it again from the start.
                    export_from = if page.next_from > page.last_version {
                        0
                    } else {
                        page.next_from
                    };
                }
                Ok(Answer::Other) => {}
                Ok(Answer::Shed { retry_after }) => {
                    if self.honour_retry_after {
                        self.wait_unless_stopped(retry_after).await;
                    }
                }
                Err(error) => self.counts.error(format!("{error:#}")),
            }
        }
    }

    /// Sleeps `wait`, or less if the flood stops meanwhile.
    async fn wait_unless_stopped(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
    }

    /// Sends one bulk request and counts its answer; where an export page ends comes
    /// back (the next page's start), other bodies are read and dropped.
    async fn answer(
        &self,
        kind: BulkKind,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<Answer> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let counter = match kind {
                BulkKind::Rebuild => &self.counts.rebuilds,
                BulkKind::Export => &self.counts.export_pages,
                BulkKind::Log => &self.counts.log_pages,
            };
            let body = response.bytes().await?;
            let page = match kind {
                // Only the two numbers: the events are skipped, not built into values
                // (the load generator shares the machine with the server).
                BulkKind::Export => Answer::Page(serde_json::from_slice(&body)?),
                BulkKind::Rebuild | BulkKind::Log => Answer::Other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(page);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && problem["type"] == "urn:annals:problem:overloaded"
        {
            let Some(retry_after) = retry_after else {
                bail!("a {kind:?} was shed (503 overloaded) without a Retry-After in seconds");
            };
            self.counts.shed.fetch_add(1, Ordering::Relaxed);
            return Ok(Answer::Shed { retry_after });
        }
        bail!("a {kind:?} answered {status}: {problem}");
    }
}
