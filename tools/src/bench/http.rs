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
//!
//! `--personal-data` registers every customer with a profile (name, email, address)
//! while seeding (not timed) and gives every timed order a `shipping_address`: personal
//! data the server seals under the customer's key, so the server needs a master key
//! (`annals serve --master-key-file`). `--compare-personal-data` starts two servers, each
//! with a master key of its own, and measures plain orders on one against orders with
//! personal data on the other, alternately, as the other comparisons do.

use std::time::Duration;

use anyhow::{Context, bail};
use security::Role;
use security::auth::{MintClaims, mint};
use serde::Serialize;

use super::http_load::{
    OrderClient, OrdersReport, Server, bench_dir, customer, place_orders_with, run_tag, seed,
    seed_profiles, settle,
};

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
    /// Register every customer with a profile (name, email, address) while seeding (not
    /// timed), and give every timed order a `shipping_address`: personal data, sealed by
    /// the server under each customer's key. The server needs a master key (`annals
    /// serve --master-key-file`).
    #[arg(long, conflicts_with_all = ["compare_security", "compare_observability"])]
    personal_data: bool,
    /// Start two servers, each with a master key of its own, and measure them
    /// alternately: plain orders on one, orders with personal data (as
    /// `--personal-data`) on the other.
    #[arg(long, conflicts_with_all = ["url", "token", "compare_security", "compare_observability", "personal_data"])]
    compare_personal_data: bool,
    /// Start two servers (security off, security on) and measure them alternately.
    #[arg(long, conflicts_with_all = ["url", "token", "compare_observability"])]
    compare_security: bool,
    /// Start two servers (observability off: no traces exported, no metrics; on: traces
    /// exported to a local OTLP receiver, metrics recorded) and measure them alternately.
    #[arg(long, conflicts_with_all = ["url", "token"])]
    compare_observability: bool,
    /// With --compare-security, --compare-observability or --compare-personal-data:
    /// measurements of each server.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// With --compare-observability: the observed server's `--traces-per-second` (a
    /// large number: every order traced and exported).
    #[arg(long, value_name = "N", default_value_t = crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND)]
    traces_per_second: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Serialize)]
struct HttpReport {
    bench: &'static str,
    /// Whether the customers had profiles and the orders a `shipping_address`.
    personal_data: bool,
    #[serde(flatten)]
    orders: OrdersReport,
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
    if args.compare_personal_data {
        return compare_personal_data(&args).await;
    }
    let tokens = args.token.clone().map_or(Tokens::None, Tokens::One);
    let report = load(
        &args,
        &args.url,
        &run_tag(),
        &tokens,
        false,
        args.personal_data,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.orders.print("http");
    }
    if report.orders.commands == 0 {
        bail!("no command succeeded ({} errors)", report.orders.errors);
    }
    Ok(())
}

/// Seeds skus and accounts on `base` (and, with `personal_data`, the customers'
/// profiles), then places orders from `--connections` clients for `--duration` seconds
/// (with `personal_data`, each with a `shipping_address`). With `fixed_customers`,
/// connection `i` orders only for customer `i % entities` (with that customer's token,
/// if there are such).
async fn load(
    args: &HttpArgs,
    base: &str,
    run_tag: &str,
    tokens: &Tokens,
    fixed_customers: bool,
    personal_data: bool,
) -> anyhow::Result<HttpReport> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    seed(&client, base, tokens.seeding(), run_tag, args.entities).await?;
    if personal_data {
        seed_profiles(&client, base, tokens.seeding(), run_tag, args.entities).await?;
    }
    let clients = (0..args.connections)
        .map(|connection| {
            let fixed_customer = fixed_customers.then_some(connection % args.entities);
            let token = match (tokens, fixed_customer) {
                (Tokens::None, _) => None,
                (Tokens::One(token), _) => Some(token.clone()),
                (Tokens::PerCustomer { customers, .. }, Some(customer)) => {
                    Some(customers[customer].clone())
                }
                (Tokens::PerCustomer { admin, .. }, None) => Some(admin.clone()),
            };
            OrderClient {
                token,
                fixed_customer,
            }
        })
        .collect();
    let duration = Duration::from_secs_f64(args.duration);
    let orders = place_orders_with(
        &client,
        base,
        run_tag,
        args.entities,
        clients,
        duration,
        personal_data,
    )
    .await?;
    Ok(HttpReport {
        bench: "http",
        personal_data,
        orders,
    })
}

/// The security comparison: two servers of this binary, security off and on, measured
/// in turn.
async fn compare_security(args: &HttpArgs) -> anyhow::Result<()> {
    let dir = bench_dir("annals-bench-http-")?;
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
    let (off_reports, on_reports) = alternate(args, "security", &off, &on, on_side, false).await?;
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
    let dir = bench_dir("annals-bench-http-")?;
    let sink = super::otlp_sink::OtlpSink::start().await?;
    let off = Server::start(&dir.path().join("off"), &["--no-metrics"], "info").await?;
    let traces_per_second = args.traces_per_second.to_string();
    let on = Server::start(
        &dir.path().join("on"),
        &[
            "--otlp-endpoint",
            &sink.endpoint,
            "--traces-per-second",
            &traces_per_second,
        ],
        "info",
    )
    .await?;
    let on_side = || Ok((run_tag(), Tokens::None));
    let (off_reports, on_reports) =
        alternate(args, "observability", &off, &on, on_side, false).await?;
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

/// The personal data comparison: two servers of this binary, each with a master key of
/// its own (in the bench's temporary directory, outside the data directory), one placing
/// plain orders for customers without profiles, the other registering every customer
/// with a profile and giving every order a `shipping_address`, measured in turn.
async fn compare_personal_data(args: &HttpArgs) -> anyhow::Result<()> {
    let dir = bench_dir("annals-bench-http-")?;
    let start = |side: &'static str| {
        let data_dir = dir.path().join(side);
        let master_key = dir.path().join(format!("{side}-master.key"));
        async move {
            let master_key = master_key
                .to_str()
                .context("a temporary path that is not UTF-8")?
                .to_owned();
            Server::start(&data_dir, &["--master-key-file", &master_key], "warn").await
        }
    };
    let off = start("off").await?;
    let on = start("on").await?;
    let on_side = || Ok((run_tag(), Tokens::None));
    let (off_reports, on_reports) =
        alternate(args, "personal data", &off, &on, on_side, true).await?;
    off.stop().await;
    on.stop().await;
    let report = ComparisonReport::new("http-personal-data", args.rounds, off_reports, on_reports);
    report.print(args.json, "personal data", "")
}

/// Measures `off` and `on` alternately for `--rounds` rounds; `on_side` gives each of
/// the on side's measurements its run tag and tokens (the off side sends none); with
/// `on_personal_data` the on side's customers have profiles and its orders a
/// `shipping_address`.
async fn alternate(
    args: &HttpArgs,
    what: &str,
    off: &Server,
    on: &Server,
    on_side: impl Fn() -> anyhow::Result<(String, Tokens)>,
    on_personal_data: bool,
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
            let personal_data = switched_on && on_personal_data;
            let report = load(args, base, &run_tag, &tokens, true, personal_data).await?;
            if !args.json {
                let label = if switched_on { "on " } else { "off" };
                report
                    .orders
                    .print(&format!("round {} {what} {label}", round + 1));
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
            let mut rates: Vec<f64> = reports
                .iter()
                .map(|r| r.orders.commands_per_second)
                .collect();
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
