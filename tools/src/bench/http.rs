//! `annals bench http`: a load generator for a running `annals serve`. It registers skus
//! and opens accounts, then keeps `--connections` clients placing orders
//! (`POST /api/v1/orders`, every one fsync'd before its response) for `--duration`
//! seconds, and reports commands/s and latency percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load after seeding.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Skus and customers to seed (orders pick among them).
    #[arg(long, default_value_t = 50)]
    entities: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
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

pub(super) async fn run(args: HttpArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.entities == 0 {
        bail!("--connections and --entities must be at least 1");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    // Seeding is idempotent, so the bench can run again on the same server: a run tag
    // keeps each run's skus and customers apart.
    let run_tag = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    for i in 0..args.entities {
        let sku = format!("bench-{run_tag}-sku-{i}");
        let customer = format!("bench-{run_tag}-customer-{i}");
        post(
            &client,
            &format!("{base}/api/v1/inventory/skus"),
            json!({"sku": sku, "name": "Bench item", "unit_price": 100 + i}),
        )
        .await
        .with_context(|| format!("cannot seed {base}: is `annals serve` running there?"))?;
        post(
            &client,
            &format!("{base}/api/v1/payments/accounts"),
            json!({"customer_id": customer}),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for connection in 0..args.connections {
        let (client, base, run_tag, entities) =
            (client.clone(), base.clone(), run_tag.clone(), args.entities);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
            let mut errors = 0u64;
            let mut n = connection as u64;
            while Instant::now() < deadline {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let body = json!({
                    "customer_id": format!("bench-{run_tag}-customer-{}", (n >> 33) % entities as u64),
                    "lines": [{"sku": format!("bench-{run_tag}-sku-{}", (n >> 17) % entities as u64), "quantity": 1 + (n >> 50) % 3}],
                });
                let begun = Instant::now();
                match post(&client, &format!("{base}/api/v1/orders"), body).await {
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
    let report = HttpReport {
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
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "http: {} connections for {:.1} s: {} orders placed ({:.0}/s), {} errors; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
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
    if report.commands == 0 {
        bail!("no command succeeded ({errors} errors)");
    }
    Ok(())
}

async fn post(client: &reqwest::Client, url: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let response = client.post(url).json(&body).send().await?;
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
