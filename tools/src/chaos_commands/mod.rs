//! `annals chaos`: the fault points of a server started with `annals serve --chaos`.
//! `inject`, `list` and `clear` call `GET/POST/DELETE /api/v1/chaos/faults` on the
//! `--server` (with its token and CA, like every remote command); `run` runs a declared
//! experiment ([`experiment`] reads the file, [`run`] drives it). Faults live in one
//! node's process: through `--server nats://...` a command acts on the first node that
//! answers and names it; `run` stays on that node; `clear --id` needs the node's URL.
//!
//! The chaos routes answer 404 on a server started without `--chaos`: that becomes the
//! error "the server was not started with --chaos" (exit 7); a fault the server refuses
//! (422) prints the server's reason (exit 2).

use std::time::Duration;

use anyhow::Context;
use chaos::{EffectKind, Fault, FaultSpec, PointReport};
use hyper::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::exit::Failure;
use crate::remote::ClientArgs;
use crate::servers::{Repeat, Servers};

pub mod experiment;
mod run;

/// How long connecting to the server, and its answer, may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Subcommand)]
pub enum ChaosCommand {
    /// Inject a fault at a fault point of a server started with --chaos.
    #[command(
        after_help = "Examples:\n  annals chaos inject --server http://127.0.0.1:8080 \
        --point relay.publish --effect error --duration 10\n  annals chaos inject --server \
        http://127.0.0.1:8080 --point http.handler --effect delay --delay-ms 200 \
        --probability 0.5 --count 100\n\nPoints and their effects: store.fsync (error, delay), \
        store.write (error), relay.publish (error, delay, lost_ack, panic), saga.command \
        (error, delay, panic), http.handler (delay, status_500), projection.apply (panic), \
        security.jwks (error, delay), psp.charge (error, delay), store.index (delay). A fault ends after --count injections or --duration \
        seconds (give one or both)."
    )]
    Inject(InjectArgs),
    /// List the fault points (injections so far) and the active faults.
    List(ListArgs),
    /// Clear every active fault, or one (--id).
    Clear(ClearArgs),
    /// Run a chaos experiment (a TOML file, docs/OPERATIONS.md "Chaos experiments").
    #[command(
        after_help = "Examples:\n  annals chaos run --server http://127.0.0.1:8080 \
        --experiment experiments/nats-outage.toml\n\nExit codes besides the usual: 9 an error \
        budget is below the experiment's threshold (it did not start), 10 the steady state \
        did not hold before the faults (it did not start), 11 the experiment ran and the \
        steady state did not hold or did not heal, or it stopped early."
    )]
    Run(run::RunArgs),
}

/// The server and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The running server, started with --chaos, e.g. http://127.0.0.1:8080; or
    /// nats://HOST:PORT[,...]: one of the nodes registered there, a ready one first
    /// (named in the output; faults live in that node only). `run` stays on that node.
    #[arg(long, env = "ANNALS_SERVER", value_name = "URL")]
    pub server: String,
    /// The token and CA the --server client uses.
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The fault point, e.g. relay.publish.
    #[arg(long)]
    point: String,
    /// What the fault does: error, delay, panic, lost_ack or status_500.
    #[arg(long, value_parser = parse_effect)]
    effect: EffectKind,
    /// For --effect delay: how long, in milliseconds.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// The chance that a pass through the point is injected (above 0, at most 1).
    #[arg(long, default_value_t = 1.0)]
    probability: f64,
    /// End the fault after this many injections.
    #[arg(long)]
    count: Option<u64>,
    /// End the fault this many seconds after its injection.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Print the server's JSON answer instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the server's JSON answer instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Clear only the fault with this id (from `annals chaos list`).
    #[arg(long)]
    id: Option<u64>,
}

fn parse_effect(text: &str) -> Result<EffectKind, String> {
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        format!("no effect {text:?}; the effects are: error, delay, panic, lost_ack, status_500")
    })
}

/// Runs an `annals chaos` command.
pub fn run(command: ChaosCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            ChaosCommand::Inject(args) => inject(args).await,
            ChaosCommand::List(args) => list(args).await,
            ChaosCommand::Clear(args) => clear(args).await,
            ChaosCommand::Run(args) => run::run(args).await,
        }
    })
}

/// The server's answer to `GET /api/v1/chaos/faults`.
#[derive(Debug, Clone, Deserialize)]
pub struct FaultList {
    /// Every fault point and its injections.
    pub points: Vec<PointReport>,
    /// The active faults.
    pub faults: Vec<Fault>,
}

/// A client of the `--server`'s API. Faults live in one node's process: through
/// `nats://` a request goes to the first node that answers ([`crate::servers`]): a read
/// or a `DELETE` falls over as reads do; a `POST` (a fault injected twice would be two
/// faults) only when the connection failed before it was sent. [`Api::pin`] keeps one
/// node for every later request.
#[derive(Debug)]
pub struct Api {
    servers: Servers,
}

impl Api {
    /// A client of `args.server`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Api> {
        Ok(Api {
            servers: Servers::new(&args.server, &args.client, SERVER_TIMEOUT)?,
        })
    }

    /// Whether the server is found on NATS (one node of several).
    pub fn is_cluster(&self) -> bool {
        self.servers.is_cluster()
    }

    /// Stays on the first server whose chaos routes answer (a 404 too: it is checked
    /// next); gives its name.
    pub async fn pin(&mut self) -> anyhow::Result<String> {
        Ok(self.servers.pin(FAULTS).await?.name)
    }

    /// `method path` (with a JSON body): the status and the JSON answer; no answer
    /// within the timeout, or none at all, is a server failure naming the server.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, answer, _) = self.call_at(method, path, body).await?;
        Ok((status, answer))
    }

    /// [`Api::call`], and the name of the server that answered.
    async fn call_at(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value, String)> {
        let repeat = if method == Method::POST {
            Repeat::OnlyUnsent
        } else {
            Repeat::Safe
        };
        let (status, answer, node) = self.servers.call(method, path, body, repeat).await?;
        Ok((status, answer, node.name))
    }

    /// `method path` on a chaos route: the answer of a success, and the server that
    /// gave it; a 404 of the collection means the server runs without `--chaos`; other
    /// refusals as every remote command reports them.
    async fn chaos(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value, String)> {
        let (status, answer, node) = self.call_at(method.clone(), path, body).await?;
        if (200..300).contains(&status) {
            return Ok((status, answer, node));
        }
        Err(self
            .chaos_refusal(status, &method, path, &answer, &node)
            .into())
    }

    fn chaos_refusal(
        &self,
        status: u16,
        method: &Method,
        path: &str,
        answer: &Value,
        node: &str,
    ) -> Failure {
        match status {
            404 => Failure::NotFound(format!(
                "the server at {node} was not started with --chaos (it answered 404 to {method} \
                 {path}): restart it with `annals serve --chaos` to inject faults"
            )),
            422 => Failure::Usage(format!(
                "the server refused the fault: {}",
                answer["detail"]
                    .as_str()
                    .or_else(|| answer["title"].as_str())
                    .unwrap_or("422")
            )),
            _ => crate::remote::refusal(
                status,
                &format!("{method} {path}"),
                self.servers.has_token(),
                answer,
            ),
        }
    }

    /// `GET /api/v1/chaos/faults`.
    pub async fn faults(&self) -> anyhow::Result<FaultList> {
        let (_, answer, _) = self.chaos(Method::GET, FAULTS, None).await?;
        serde_json::from_value(answer).map_err(|error| {
            Failure::Server(format!(
                "the server's answer to GET {FAULTS} is not what annals expects: {error}"
            ))
            .into()
        })
    }

    /// `POST /api/v1/chaos/faults`: the fault as injected.
    pub async fn inject(&self, spec: &FaultSpec) -> anyhow::Result<Fault> {
        Ok(self.inject_at(spec).await?.0)
    }

    /// [`Api::inject`], and the server that took the fault.
    async fn inject_at(&self, spec: &FaultSpec) -> anyhow::Result<(Fault, String)> {
        let body = serde_json::to_value(spec)?;
        let (_, answer, node) = self.chaos(Method::POST, FAULTS, Some(&body)).await?;
        let fault = serde_json::from_value(answer).map_err(|error| {
            Failure::Server(format!(
                "the answer of {node} to POST {FAULTS} is not what annals expects: {error}"
            ))
        })?;
        Ok((fault, node))
    }

    /// `DELETE /api/v1/chaos/faults`: how many were cleared, and where.
    async fn clear_all(&self) -> anyhow::Result<(u64, String)> {
        let (_, answer, node) = self.chaos(Method::DELETE, FAULTS, None).await?;
        Ok((answer["cleared"].as_u64().unwrap_or_default(), node))
    }

    /// `DELETE /api/v1/chaos/faults/{id}`: whether it was active (`false`: no such
    /// fault, it ended already).
    pub async fn clear(&self, id: u64) -> anyhow::Result<bool> {
        let path = format!("{FAULTS}/{id}");
        let (status, answer, node) = self.call_at(Method::DELETE, &path, None).await?;
        match status {
            200..300 => Ok(true),
            // Either no such fault, or no chaos at all: the collection tells which.
            404 => self.faults().await.map(|_| false),
            _ => Err(self
                .chaos_refusal(status, &Method::DELETE, &path, &answer, &node)
                .into()),
        }
    }
}

/// The chaos routes.
const FAULTS: &str = "/api/v1/chaos/faults";

async fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let spec = FaultSpec {
        point: args.point,
        effect: args.effect,
        delay_ms: args.delay_ms,
        probability: args.probability,
        count: args.count,
        duration_secs: args.duration,
    };
    let (fault, node) = api.inject_at(&spec).await?;
    if args.json {
        println!("{}", serde_json::to_string(&fault)?);
    } else {
        println!(
            "injected fault {}{}: {}",
            fault.id,
            on(&api, &node),
            describe(&fault)
        );
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    if args.json {
        let (_, answer, _) = api.chaos(Method::GET, FAULTS, None).await?;
        println!("{answer}");
        return Ok(());
    }
    let (_, answer, node) = api.chaos(Method::GET, FAULTS, None).await?;
    let list: FaultList = serde_json::from_value(answer).map_err(|error| {
        Failure::Server(format!(
            "the answer of {node} to GET {FAULTS} is not what annals expects: {error}"
        ))
    })?;
    if api.is_cluster() {
        println!("the faults of {node}:");
    }
    println!("{:<18} {:>10}  EFFECTS", "POINT", "INJECTIONS");
    for point in &list.points {
        let effects: Vec<&str> = point.effects.iter().map(|effect| effect.name()).collect();
        println!(
            "{:<18} {:>10}  {}",
            point.point.name(),
            point.injections,
            effects.join(", ")
        );
    }
    println!();
    if list.faults.is_empty() {
        println!("no active faults");
        return Ok(());
    }
    println!("{:>4}  {:<18} {:>9}  FAULT", "ID", "POINT", "INJECTED");
    for fault in &list.faults {
        println!(
            "{:>4}  {:<18} {:>9}  {}",
            fault.id,
            fault.point.name(),
            fault.injected,
            describe(fault)
        );
    }
    Ok(())
}

async fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    match args.id {
        Some(_) if api.is_cluster() => {
            return Err(Failure::Usage(
                "fault ids are per node: pass --id with the node's own http URL as --server \
                 (`annals cluster status` lists them; `annals chaos inject` and `list` name the \
                 node)"
                    .into(),
            )
            .into());
        }
        Some(id) => {
            if !api.clear(id).await? {
                return Err(Failure::NotFound(format!(
                    "no active fault {id} (it may have ended by itself; annals chaos list shows \
                     the active ones)"
                ))
                .into());
            }
            println!("cleared fault {id}");
        }
        None => {
            let (cleared, node) = api.clear_all().await?;
            println!("cleared {cleared} faults{}", on(&api, &node));
        }
    }
    Ok(())
}

/// ` on NODE` when the server was found on NATS (one node of several), else "".
fn on(api: &Api, node: &str) -> String {
    if api.is_cluster() {
        format!(" on {node}")
    } else {
        String::new()
    }
}

/// A fault in a few words: `relay.publish error p=0.5, 3/10 injections, until ...`.
fn describe(fault: &Fault) -> String {
    let mut text = format!("{} {}", fault.point, fault.effect);
    if let Some(delay) = fault.delay_ms {
        text.push_str(&format!(" {delay} ms"));
    }
    if fault.probability < 1.0 {
        text.push_str(&format!(" p={}", fault.probability));
    }
    match fault.count {
        Some(count) => text.push_str(&format!(", {}/{count} injections", fault.injected)),
        None => text.push_str(&format!(", {} injections", fault.injected)),
    }
    if let Some(expires) = fault.expires_at {
        text.push_str(&format!(", until {}", expires.to_rfc3339()));
    }
    text
}
