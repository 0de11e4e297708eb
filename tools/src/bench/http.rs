//! `annals bench http`: a load generator for `annals serve`. It registers skus and opens
//! accounts, then keeps `--connections` clients placing orders (`POST /api/v1/orders`,
//! every one fsync'd before its response) for `--duration` seconds, and reports
//! commands/s and latency percentiles.
//!
//! Against a running server (`--url`), with `--token` (or `ANNALS_TOKEN`) when it
//! demands one. With `--compare-security` it starts two servers of its own on
//! temporary data directories, one without authentication and one with tokens, the
//! default policy and a rate limit per principal, and measures them alternately for
//! `--rounds` rounds: the throughput with security on as a share of the throughput
//! with it off, in one run. The two take turns going first (ABBA), and after each
//! measurement the bench waits for that server to settle (its sagas done, its read
//! models caught up), so that neither measurement pays for the other's work. There each connection orders for one customer with that
//! customer's own token, so every request is authenticated, decided and counted
//! against its principal's bucket. `--compare-observability` does the same with two
//! servers logging at `info`, one exporting traces over OTLP/HTTP to a local receiver
//! (`otlp_sink`) and recording metrics, one with neither.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use security::Role;
use security::auth::{MintClaims, mint};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The bearer token to send (a token whose principal may register skus, open
    /// accounts and place orders for any customer: an admin's).
    #[arg(long, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load after seeding.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Skus and customers to seed (orders pick among them).
    #[arg(long, default_value_t = 50)]
    entities: usize,
    /// Start two servers (security off, security on) and measure them alternately.
    #[arg(long, conflicts_with_all = ["url", "token", "compare_observability"])]
    compare_security: bool,
    /// Start two servers (observability off: no traces exported, no metrics; on: traces
    /// exported to a local OTLP receiver, metrics recorded) and measure them alternately.
    #[arg(long, conflicts_with_all = ["url", "token"])]
    compare_observability: bool,
    /// With --compare-security or --compare-observability: measurements of each server.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Serialize)]
struct HttpReport {
    bench: &'static str,
    connections: usize,
    seconds: f64,
    commands: u64,
    errors: u64,
    commands_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct ComparisonReport {
    bench: &'static str,
    rounds: usize,
    /// Every round with the feature compared off, then every round with it on (measured
    /// alternately, in ABBA order, each after the other server has settled).
    off: Vec<HttpReport>,
    on: Vec<HttpReport>,
    median_off_per_second: f64,
    median_on_per_second: f64,
    /// `median_on / median_off`.
    ratio: f64,
}

/// Who the load sends as: nobody, one token for everything, or (compare mode) an admin
/// to seed and one customer token per customer.
#[derive(Debug, Clone)]
enum Tokens {
    None,
    One(String),
    PerCustomer {
        admin: String,
        customers: Vec<String>,
    },
}

impl Tokens {
    fn seeding(&self) -> Option<&str> {
        match self {
            Tokens::None => None,
            Tokens::One(token) => Some(token),
            Tokens::PerCustomer { admin, .. } => Some(admin),
        }
    }
}

pub(super) async fn run(args: HttpArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.entities == 0 {
        bail!("--connections and --entities must be at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.compare_security {
        return compare_security(&args).await;
    }
    if args.compare_observability {
        return compare_observability(&args).await;
    }
    let tokens = args.token.clone().map_or(Tokens::None, Tokens::One);
    let report = load(&args, &args.url, &run_tag(), &tokens, false).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report("http", &report);
    }
    if report.commands == 0 {
        bail!("no command succeeded ({} errors)", report.errors);
    }
    Ok(())
}

fn print_report(label: &str, report: &HttpReport) {
    println!(
        "{label}: {} connections for {:.1} s: {} orders placed ({:.0}/s), {} errors; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        report.connections,
        report.seconds,
        report.commands,
        report.commands_per_second,
        report.errors,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.max_ms
    );
}

/// A tag that keeps one run's skus and customers apart from earlier runs' (seeding is
/// idempotent, so the bench can run again on the same server).
pub(crate) fn run_tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[24..].to_owned()
}

/// The customer `i` of the run `run_tag`.
fn customer(run_tag: &str, i: usize) -> String {
    format!("bench-{run_tag}-customer-{i}")
}

/// The requests that seed a run: `(path, body)` of each sku to register and each
/// account to open, `entities` of each (idempotent: seeding again changes nothing).
/// `annals chaos run` seeds its load with them too.
pub(crate) fn seeds(run_tag: &str, entities: usize) -> Vec<(&'static str, serde_json::Value)> {
    let mut seeds = Vec::with_capacity(2 * entities);
    for i in 0..entities {
        let sku = format!("bench-{run_tag}-sku-{i}");
        seeds.push((
            "/api/v1/inventory/skus",
            json!({"sku": sku, "name": "Bench item", "unit_price": 100 + i}),
        ));
        seeds.push((
            "/api/v1/payments/accounts",
            json!({"customer_id": customer(run_tag, i)}),
        ));
    }
    seeds
}

/// The next of a sequence of pseudo-random numbers (a 64-bit LCG: cheap and enough to
/// spread orders over skus and customers).
pub(crate) fn next_random(n: u64) -> u64 {
    n.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// The body of an order of the run `run_tag`, chosen by the random number `n`: one line
/// of 1 to 3 units of a seeded sku, for a seeded customer (`fixed`, if given).
pub(crate) fn order_body(
    run_tag: &str,
    entities: usize,
    n: u64,
    fixed: Option<usize>,
) -> serde_json::Value {
    let customer_index = fixed.unwrap_or(((n >> 33) % entities as u64) as usize);
    json!({
        "customer_id": customer(run_tag, customer_index),
        "lines": [{"sku": format!("bench-{run_tag}-sku-{}", (n >> 17) % entities as u64), "quantity": 1 + (n >> 50) % 3}],
    })
}

/// Seeds skus and accounts on `base`, then places orders from `--connections` clients
/// for `--duration` seconds. With `fixed_customers`, connection `i` orders only for
/// customer `i % entities` (with that customer's token, if there are such).
async fn load(
    args: &HttpArgs,
    base: &str,
    run_tag: &str,
    tokens: &Tokens,
    fixed_customers: bool,
) -> anyhow::Result<HttpReport> {
    let base = base.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let seeding = tokens.seeding();
    for (path, body) in seeds(run_tag, args.entities) {
        post(&client, &format!("{base}{path}"), seeding, body)
            .await
            .with_context(|| format!("cannot seed {base}: is `annals serve` running there?"))?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for connection in 0..args.connections {
        let (client, base, run_tag, entities) = (
            client.clone(),
            base.clone(),
            run_tag.to_owned(),
            args.entities,
        );
        let fixed = fixed_customers.then_some(connection % entities);
        let token = match (tokens, fixed) {
            (Tokens::None, _) => None,
            (Tokens::One(token), _) => Some(token.clone()),
            (Tokens::PerCustomer { customers, .. }, Some(customer)) => {
                Some(customers[customer].clone())
            }
            (Tokens::PerCustomer { admin, .. }, None) => Some(admin.clone()),
        };
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            let mut errors = 0u64;
            let mut n = connection as u64;
            while Instant::now() < deadline {
                n = next_random(n);
                let body = order_body(&run_tag, entities, n, fixed);
                let begun = Instant::now();
                let url = format!("{base}/api/v1/orders");
                match post(&client, &url, token.as_deref(), body).await {
                    Ok(()) => latencies.record(begun.elapsed().as_micros() as u64)?,
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    let mut errors = 0;
    for task in tasks {
        let (task_latencies, task_errors) = task.await??;
        latencies.add(task_latencies)?;
        errors += task_errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(HttpReport {
        bench: "http",
        connections: args.connections,
        seconds,
        commands: latencies.len(),
        errors,
        commands_per_second: latencies.len() as f64 / seconds,
        p50_ms: ms(latencies.value_at_quantile(0.50)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        p999_ms: ms(latencies.value_at_quantile(0.999)),
        max_ms: ms(latencies.max()),
    })
}

/// The security comparison: two servers of this binary, security off and on, measured
/// in turn.
async fn compare_security(args: &HttpArgs) -> anyhow::Result<()> {
    let dir = bench_dir()?;
    let secret = dir.path().join("jwt-secret");
    let secret_bytes = uuid::Uuid::new_v4().simple().to_string().repeat(2);
    std::fs::write(&secret, &secret_bytes).context("cannot write the bench's secret")?;
    let off = Server::start(&dir.path().join("off"), &[], "warn").await?;
    let on = Server::start(
        &dir.path().join("on"),
        &[
            "--auth-jwt-secret-file",
            secret
                .to_str()
                .context("a temporary path that is not UTF-8")?,
            // High enough never to refuse this load, so that what is measured is the
            // cost of the check.
            "--rate-limit",
            "100000",
        ],
        "warn",
    )
    .await?;
    let mint_for = |sub: String, roles: Vec<Role>, customer_id: Option<String>| {
        let claims = MintClaims {
            sub,
            roles,
            customer_id,
            issuer: None,
            audience: None,
        };
        mint(secret_bytes.as_bytes(), &claims, Duration::from_secs(3600))
            .context("cannot mint the bench's tokens")
    };
    // Each customer orders with a token of its own: a principal per customer.
    let on_side = || -> anyhow::Result<(String, Tokens)> {
        let tag = run_tag();
        let customers = (0..args.entities)
            .map(|i| {
                let id = customer(&tag, i);
                mint_for(id.clone(), vec![Role::Customer], Some(id))
            })
            .collect::<anyhow::Result<_>>()?;
        let admin = mint_for("bench-admin".into(), vec![Role::Admin], None)?;
        Ok((tag, Tokens::PerCustomer { admin, customers }))
    };
    let (off_reports, on_reports) = alternate(args, "security", &off, &on, on_side).await?;
    off.stop().await;
    on.stop().await;
    let report = ComparisonReport::new("http-security", args.rounds, off_reports, on_reports);
    report.print(args.json, "security", "")
}

/// The observability comparison: two servers of this binary, one with traces exported
/// over OTLP/HTTP to a local receiver and metrics recorded, one with neither (no
/// `--otlp-endpoint`, `--no-metrics`), both logging at the default level, measured in
/// turn.
async fn compare_observability(args: &HttpArgs) -> anyhow::Result<()> {
    let dir = bench_dir()?;
    let sink = super::otlp_sink::OtlpSink::start().await?;
    let off = Server::start(&dir.path().join("off"), &["--no-metrics"], "info").await?;
    let on = Server::start(
        &dir.path().join("on"),
        &["--otlp-endpoint", &sink.endpoint],
        "info",
    )
    .await?;
    let on_side = || Ok((run_tag(), Tokens::None));
    let (off_reports, on_reports) = alternate(args, "observability", &off, &on, on_side).await?;
    off.stop().await;
    on.stop().await;
    let (exports, bytes) = sink.received();
    if exports == 0 {
        bail!("the observed server exported no spans: the comparison would mean nothing");
    }
    let report = ComparisonReport::new("http-observability", args.rounds, off_reports, on_reports);
    report.print(
        args.json,
        "observability",
        &format!(" ({exports} exports, {bytes} bytes of spans)"),
    )
}

/// A temporary directory for a comparison's servers, here.
fn bench_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("annals-bench-http-")
        .tempdir_in(std::env::current_dir()?)
        .context("cannot make a temporary directory here")
}

/// Measures `off` and `on` alternately for `--rounds` rounds; `on_side` gives each of
/// the on side's measurements its run tag and tokens (the off side sends none).
async fn alternate(
    args: &HttpArgs,
    what: &str,
    off: &Server,
    on: &Server,
    on_side: impl Fn() -> anyhow::Result<(String, Tokens)>,
) -> anyhow::Result<(Vec<HttpReport>, Vec<HttpReport>)> {
    let mut off_reports = Vec::new();
    let mut on_reports = Vec::new();
    for round in 0..args.rounds {
        // Off first in odd rounds, on first in even ones, so that neither side is always
        // measured second, on a disk still writing back what the other wrote.
        let sides = [(false, off.base.as_str()), (true, on.base.as_str())];
        let order = if round % 2 == 0 {
            [sides[0], sides[1]]
        } else {
            [sides[1], sides[0]]
        };
        for (switched_on, base) in order {
            let (run_tag, tokens) = if switched_on {
                on_side()?
            } else {
                (run_tag(), Tokens::None)
            };
            let report = load(args, base, &run_tag, &tokens, true).await?;
            if !args.json {
                let label = if switched_on { "on " } else { "off" };
                print_report(&format!("round {} {what} {label}", round + 1), &report);
            }
            // The orders' sagas and the read models finish their work before the next
            // measurement, so that it does not pay for this one.
            settle(base, tokens.seeding()).await?;
            if switched_on {
                on_reports.push(report);
            } else {
                off_reports.push(report);
            }
        }
    }
    Ok((off_reports, on_reports))
}

impl ComparisonReport {
    fn new(
        bench: &'static str,
        rounds: usize,
        off: Vec<HttpReport>,
        on: Vec<HttpReport>,
    ) -> ComparisonReport {
        let median = |reports: &[HttpReport]| {
            let mut rates: Vec<f64> = reports.iter().map(|r| r.commands_per_second).collect();
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        ComparisonReport {
            bench,
            rounds,
            median_off_per_second: median(&off),
            median_on_per_second: median(&on),
            ratio: median(&on) / median(&off),
            off,
            on,
        }
    }

    fn print(&self, json: bool, what: &str, more: &str) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            println!(
                "{what} on / off: {:.0} / {:.0} orders/s (medians of {} rounds): {:.1}%{more}",
                self.median_on_per_second,
                self.median_off_per_second,
                self.rounds,
                self.ratio * 100.0
            );
        }
        Ok(())
    }
}

/// Waits until the server at `base` is idle: its log head has not moved for half a
/// second (the sagas of the orders placed are done) and every read model has caught up.
async fn settle(base: &str, token: Option<&str>) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_head = None;
    loop {
        if Instant::now() > deadline {
            bail!("the server at {base} was still busy 120 s after the load stopped");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready: serde_json::Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await?
            .json()
            .await?;
        let head = ready["next_position"].as_u64();
        let mut projections = client.get(format!("{base}/api/v1/projections"));
        if let Some(token) = token {
            projections = projections.bearer_auth(token);
        }
        let projections: serde_json::Value = projections
            .send()
            .await?
            .error_for_status()
            .context("cannot read the projections' status")?
            .json()
            .await?;
        let caught_up = projections["projections"]
            .as_array()
            .is_some_and(|list| list.iter().all(|projection| projection["lag"] == 0));
        if head.is_some() && head == last_head && caught_up {
            return Ok(());
        }
        last_head = head;
    }
}

/// An `annals serve` child process on a free loopback port.
struct Server {
    base: String,
    child: tokio::process::Child,
}

impl Server {
    /// Starts a server on `data_dir` with the `extra` flags, logging at `log_level`.
    async fn start(data_dir: &Path, extra: &[&str], log_level: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &listen])
            .args(extra)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start annals serve")?;
        let base = format!("http://{listen}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{base}/readyz")).send().await;
            if matches!(&ready, Ok(response) if response.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the server at {base} did not get ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Server { base, child })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the server drains and closes its store.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    // Read the body, so the connection is reused.
    response.bytes().await?;
    Ok(())
}
