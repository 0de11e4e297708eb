//! What the benches that drive a server over HTTP share (`bench http`, `bench overload`,
//! and the load of `annals chaos run`): a run's skus and customers, seeding them, clients
//! placing orders until a deadline with their latencies in one histogram, an `annals
//! serve` child of the bench's own on a free port, and waiting for a server to settle.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use super::millis;

/// A tag that keeps one run's skus and customers apart from earlier runs' (seeding is
/// idempotent, so a bench can run again on the same server).
pub(crate) fn run_tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[24..].to_owned()
}

/// The customer `i` of the run `run_tag`.
pub(super) fn customer(run_tag: &str, i: usize) -> String {
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

/// Registers the skus and opens the accounts of [`seeds`] on `base`.
pub(super) async fn seed(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    run_tag: &str,
    entities: usize,
) -> anyhow::Result<()> {
    for (path, body) in seeds(run_tag, entities) {
        post(client, &format!("{base}{path}"), token, body)
            .await
            .with_context(|| format!("cannot seed {base}: is `annals serve` running there?"))?;
    }
    Ok(())
}

/// The profile request of customer `i` of the run `run_tag` (`bench http
/// --personal-data`): `POST /api/v1/customers` with a name, an email and an address,
/// each sealed by the server under the customer's own key.
pub(super) fn profile(run_tag: &str, i: usize) -> serde_json::Value {
    json!({
        "customer_id": customer(run_tag, i),
        "name": format!("Bench Customer {i}"),
        "email": format!("customer-{i}@{run_tag}.bench.example"),
        "address": format!("{i} Bench Street, Loadtown"),
    })
}

/// Registers the profiles of [`profile`] on `base`: each customer's key is created and
/// its profile sealed here, before the timed orders.
pub(super) async fn seed_profiles(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    run_tag: &str,
    entities: usize,
) -> anyhow::Result<()> {
    for i in 0..entities {
        post(
            client,
            &format!("{base}/api/v1/customers"),
            token,
            profile(run_tag, i),
        )
        .await
        .with_context(|| {
            format!("cannot register the bench's customers on {base}: does it run with --master-key-file?")
        })?;
    }
    Ok(())
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

/// One client placing orders: the token it sends, and the customer it always orders
/// for (by default a random one each time).
#[derive(Debug, Clone, Default)]
pub(super) struct OrderClient {
    pub(super) token: Option<String>,
    pub(super) fixed_customer: Option<usize>,
}

/// Orders placed from many clients for a while: how many, how many failed (any non-2xx
/// answer or transport error), and the latency percentiles of those that succeeded.
#[derive(Debug, Clone, Serialize)]
pub(super) struct OrdersReport {
    pub(super) connections: usize,
    pub(super) seconds: f64,
    pub(super) commands: u64,
    pub(super) errors: u64,
    pub(super) commands_per_second: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) max_ms: f64,
}

impl OrdersReport {
    /// One line: `label: N connections for S s: ...`.
    pub(super) fn print(&self, label: &str) {
        println!(
            "{label}: {} connections for {:.1} s: {} orders placed ({:.0}/s), {} errors; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.connections,
            self.seconds,
            self.commands,
            self.commands_per_second,
            self.errors,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        );
    }
}

/// Places orders of the run `run_tag` (seeded with `entities` skus and customers) on
/// `base` from every one of `clients` at once, each waiting for its answer before the
/// next, for `duration`.
pub(super) async fn place_orders(
    client: &reqwest::Client,
    base: &str,
    run_tag: &str,
    entities: usize,
    clients: Vec<OrderClient>,
    duration: Duration,
) -> anyhow::Result<OrdersReport> {
    place_orders_with(client, base, run_tag, entities, clients, duration, false).await
}

/// As [`place_orders`]; with `personal_data`, every order carries a `shipping_address`
/// (personal data, sealed by the server under the ordering customer's key).
pub(super) async fn place_orders_with(
    client: &reqwest::Client,
    base: &str,
    run_tag: &str,
    entities: usize,
    clients: Vec<OrderClient>,
    duration: Duration,
    personal_data: bool,
) -> anyhow::Result<OrdersReport> {
    let connections = clients.len();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for (connection, order_client) in clients.into_iter().enumerate() {
        let (client, url, run_tag) = (
            client.clone(),
            format!("{base}/api/v1/orders"),
            run_tag.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            let mut errors = 0u64;
            let mut n = connection as u64;
            while Instant::now() < deadline {
                n = next_random(n);
                let mut body = order_body(&run_tag, entities, n, order_client.fixed_customer);
                if personal_data {
                    body["shipping_address"] = json!(format!("Dock {}, Loadtown", n % 97));
                }
                let begun = Instant::now();
                match post(&client, &url, order_client.token.as_deref(), body).await {
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
    Ok(OrdersReport {
        connections,
        seconds,
        commands: latencies.len(),
        errors,
        commands_per_second: latencies.len() as f64 / seconds,
        p50_ms: millis(latencies.value_at_quantile(0.50)),
        p99_ms: millis(latencies.value_at_quantile(0.99)),
        p999_ms: millis(latencies.value_at_quantile(0.999)),
        max_ms: millis(latencies.max()),
    })
}

/// A temporary directory for a bench's servers, here, named `prefix...`.
pub(super) fn bench_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::current_dir()?)
        .context("cannot make a temporary directory here")
}

/// Waits until the server at `base` is idle: its log head has not moved for half a
/// second (the sagas of the orders placed are done) and every read model has caught up.
pub(super) async fn settle(base: &str, token: Option<&str>) -> anyhow::Result<()> {
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
        let projections = projections(&client, base, token).await?;
        let caught_up = projections["projections"]
            .as_array()
            .is_some_and(|list| list.iter().all(|projection| projection["lag"] == 0));
        if head.is_some() && head == last_head && caught_up {
            return Ok(());
        }
        last_head = head;
    }
}

/// `GET /api/v1/projections` of the server at `base`: every read model with its status.
pub(super) async fn projections(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = client.get(format!("{base}/api/v1/projections"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("cannot list the read models of {base}"))?
        .json()
        .await
        .with_context(|| format!("{base} listed its read models in a body that is not JSON"))
}

/// An `annals serve` child process (this executable) on a free loopback port, killed if
/// dropped before [`Server::stop`].
pub(super) struct Server {
    pub(super) base: String,
    child: tokio::process::Child,
}

impl Server {
    /// Starts a server on `data_dir` with the `extra` flags, logging at `log_level`.
    pub(super) async fn start(
        data_dir: &Path,
        extra: &[&str],
        log_level: &str,
    ) -> anyhow::Result<Self> {
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

    /// Stops the server the polite way (SIGTERM: it drains and closes its store), waiting
    /// up to 30 s.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Posts `body` to `url` (with `token`, if any); any answer but a 2xx is an error
/// naming the status and the body.
pub(super) async fn post(
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
