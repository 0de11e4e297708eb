//! `annals chaos run`: runs an [`Experiment`] against a server started with `--chaos`.
//!
//! In order: it refuses to start when an objective's error budget remaining is below the
//! experiment's threshold, or one already pages (exit 9), or when the steady state does
//! not hold (exit 10); it seeds and drives the load (the orders of `annals bench http`,
//! at the declared rate), injects each fault at its second and clears it after its
//! duration (or sees it end by itself), polls the checks twice a second, and stops early
//! when an objective starts paging or on Ctrl-C, clearing every fault it injected. After
//! the load it checks that every order acknowledged is still there and (when asked)
//! settled. The report says whether the steady state held, and per fault how long after
//! its clearing every steady-state check held again.
//!
//! With `expect_restart`, the server may go away (a store failure ends the process and
//! its supervisor starts a new one): the runner keeps polling until it is back and the
//! steady state holds, within the heal timeout; the new process has no faults, so the
//! faults count as cleared when the server went away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use serde::Serialize;
use serde_json::Value;

use super::experiment::{Checks, Experiment, FaultState, Schedule};
use super::{Api, ServerArgs};
use crate::bench::http_load::{next_random, order_body, run_tag, seeds};
use crate::exit::Failure;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The experiment: a TOML file (docs/OPERATIONS.md "Chaos experiments";
    /// experiments/ has examples).
    #[arg(long, value_name = "FILE")]
    experiment: PathBuf,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// How often the checks are polled.
const POLL: Duration = Duration::from_millis(500);

/// What a run found.
#[derive(Debug, Serialize)]
struct Report {
    experiment: String,
    hypothesis: String,
    /// Whether the steady state held: every fault injected, no `during` check broken,
    /// every fault healed in time, no acknowledged order lost or left unsettled, and no
    /// early stop.
    held: bool,
    /// Why the run stopped before its end, if it did.
    stopped_early: Option<String>,
    seconds: f64,
    faults: Vec<FaultReport>,
    /// Polls at which a `during` check did not hold, and the first few reasons.
    during_violations: u64,
    during_reasons: Vec<String>,
    /// Times the server went away (could not be reached) during the run.
    server_away: u64,
    load: LoadReport,
    /// Acknowledged orders that are not there any more.
    orders_lost: u64,
    /// Acknowledged orders still pending after the settling time.
    orders_unsettled: u64,
}

#[derive(Debug, Serialize)]
struct FaultReport {
    fault: String,
    id: Option<u64>,
    injected_at_secs: Option<f64>,
    cleared_at_secs: Option<f64>,
    injections: u64,
    /// Seconds from its clearing until every steady-state check held again.
    healed_after_secs: Option<f64>,
    /// Why it could not be injected.
    error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct LoadReport {
    requests: u64,
    orders: u64,
    errors: u64,
}

/// An order the server acknowledged (201).
#[derive(Debug, Clone)]
struct Acknowledged {
    order_id: String,
}

/// The load's shared counters.
#[derive(Debug, Default)]
struct LoadState {
    requests: AtomicU64,
    errors: AtomicU64,
    acknowledged: Mutex<Vec<Acknowledged>>,
    stop: AtomicBool,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let experiment = Experiment::read(&args.experiment).map_err(Failure::Usage)?;
    let mut api = Api::new(&args.server)?;
    // One node for the whole experiment: faults live in its process.
    let node = api.pin().await?;
    if api.is_cluster() {
        progress(&format!("running on {node}"));
    }
    let api = Arc::new(api);
    // The chaos routes answer (a 404: the server was not started with --chaos).
    api.faults().await?;
    check_budget(&api, &experiment).await?;
    let before = evaluate(&api, &experiment.steady_state).await;
    if !before.is_empty() {
        return Err(Failure::NotSteady(format!(
            "the steady state does not hold before any fault, so the experiment {} did not \
             start: {}",
            experiment.name,
            before.join("; ")
        ))
        .into());
    }
    progress(&format!(
        "experiment {}: steady state holds, budgets above {:.0}%; running for {} s",
        experiment.name,
        experiment.budget.min_remaining * 100.0,
        experiment.duration_secs
    ));
    let load = Arc::new(LoadState::default());
    let load_tasks = start_load(&api, &experiment, &load).await?;
    let report = drive(&api, &experiment, &load).await;
    load.stop.store(true, Ordering::Relaxed);
    for task in load_tasks {
        let _ = task.await;
    }
    let mut report = report?;
    let acknowledged = load
        .acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    report.load = LoadReport {
        requests: load.requests.load(Ordering::Relaxed),
        orders: acknowledged.len() as u64,
        errors: load.errors.load(Ordering::Relaxed),
    };
    if report.stopped_early.is_none() {
        progress(&format!(
            "checking the {} acknowledged orders",
            acknowledged.len()
        ));
        let settle = experiment
            .steady_state
            .orders_settled_within_secs
            .map(Duration::from_secs_f64);
        let (lost, unsettled) = check_orders(&api, &acknowledged, settle).await;
        report.orders_lost = lost;
        report.orders_unsettled = unsettled;
    }
    report.held = report.stopped_early.is_none()
        && report.during_violations == 0
        && report.orders_lost == 0
        && report.orders_unsettled == 0
        && report
            .faults
            .iter()
            .all(|fault| fault.error.is_none() && fault.healed_after_secs.is_some());
    print(&report, &experiment, args.json)?;
    if report.held {
        Ok(())
    } else {
        Err(Failure::ExperimentFailed(format!(
            "the experiment {} refuted its hypothesis: {}",
            experiment.name,
            verdict(&report, &experiment)
        ))
        .into())
    }
}

/// Progress on stderr, one line at a time.
fn progress(line: &str) {
    eprintln!("chaos: {line}");
}

/// Refuses to start when a considered objective's error budget remaining is below the
/// threshold, or when one already pages.
async fn check_budget(api: &Api, experiment: &Experiment) -> anyhow::Result<()> {
    let slo = get_ok(api, "/api/v1/slo")
        .await
        .map_err(|reason| Failure::Server(format!("cannot read the SLOs: {reason}")))?;
    let budget = &experiment.budget;
    for objective in slo["objectives"].as_array().into_iter().flatten() {
        let name = objective["name"].as_str().unwrap_or_default();
        if !budget.considers(name) {
            continue;
        }
        let remaining = objective["error_budget_remaining"].as_f64().unwrap_or(1.0);
        if remaining < budget.min_remaining {
            return Err(Failure::BudgetExhausted(format!(
                "the error budget of {name} has {:.1}% left, below the {:.1}% the experiment {} \
                 needs: not starting (wait until the budget recovers, or lower \
                 budget.min_remaining)",
                remaining * 100.0,
                budget.min_remaining * 100.0,
                experiment.name
            ))
            .into());
        }
        if objective["alert"] == "page" {
            return Err(Failure::BudgetExhausted(format!(
                "{name} is burning its error budget fast enough to page: not starting the \
                 experiment {}",
                experiment.name
            ))
            .into());
        }
    }
    Ok(())
}

/// `GET path`, its JSON if 200, else why not.
async fn get_ok(api: &Api, path: &str) -> Result<Value, String> {
    match api.call(Method::GET, path, None).await {
        Ok((200, answer)) => Ok(answer),
        Ok((status, answer)) => Err(format!(
            "GET {path} answered {status}{}",
            answer["detail"]
                .as_str()
                .map(|detail| format!(": {detail}"))
                .unwrap_or_default()
        )),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// The checks that do not hold now, each as a reason; empty when all hold.
async fn evaluate(api: &Api, checks: &Checks) -> Vec<String> {
    let mut failed = Vec::new();
    if checks.ready
        && let Err(reason) = get_ok(api, "/readyz").await
    {
        failed.push(format!("not ready ({reason})"));
    }
    if checks.relay_healthy || checks.max_relay_backlog.is_some() {
        match get_ok(api, "/api/v1/outbox").await {
            Ok(outbox) if outbox["enabled"] != true => {
                failed.push("the server runs no outbox relay".into());
            }
            Ok(outbox) => {
                let health = outbox["health"]["status"].as_str().unwrap_or("unknown");
                if checks.relay_healthy && health != "healthy" {
                    failed.push(format!(
                        "the relay is {health}{}",
                        outbox["health"]["reason"]
                            .as_str()
                            .map(|reason| format!(" ({reason})"))
                            .unwrap_or_default()
                    ));
                }
                let backlog = outbox["relay"]["backlog"].as_u64().unwrap_or(u64::MAX);
                if let Some(max) = checks.max_relay_backlog
                    && backlog > max
                {
                    failed.push(format!(
                        "the relay's backlog is {backlog} (more than {max})"
                    ));
                }
            }
            Err(reason) => failed.push(format!("no relay status ({reason})")),
        }
    }
    if checks.no_faulted_read_models || checks.read_models_caught_up {
        match get_ok(api, "/api/v1/projections").await {
            Ok(answer) => {
                for model in answer["projections"].as_array().into_iter().flatten() {
                    let name = model["name"].as_str().unwrap_or("?");
                    if checks.no_faulted_read_models && model["state"] == "faulted" {
                        failed.push(format!("the read model {name} is faulted"));
                    }
                    let lag = model["lag"].as_u64().unwrap_or(u64::MAX);
                    if checks.read_models_caught_up && lag > 0 {
                        failed.push(format!("the read model {name} lags by {lag}"));
                    }
                }
            }
            Err(reason) => failed.push(format!("no read-model status ({reason})")),
        }
    }
    if checks.no_failed_workers {
        match get_ok(api, "/api/v1/workers").await {
            Ok(answer) => {
                for worker in answer["workers"].as_array().into_iter().flatten() {
                    if worker["state"] == "failed" {
                        failed.push(format!(
                            "the worker {} failed",
                            worker["name"].as_str().unwrap_or("?")
                        ));
                    }
                }
            }
            Err(reason) => failed.push(format!("no worker status ({reason})")),
        }
    }
    if !checks.max_burn_rate.is_empty() {
        match get_ok(api, "/api/v1/slo").await {
            Ok(slo) => {
                for limit in &checks.max_burn_rate {
                    let rate = slo["objectives"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|objective| objective["name"] == limit.objective.as_str())
                        .and_then(|objective| objective["burn_rates"][&limit.window].as_f64());
                    match rate {
                        None => failed.push(format!(
                            "no burn rate of {} over {}",
                            limit.objective, limit.window
                        )),
                        Some(rate) if rate > limit.max => failed.push(format!(
                            "{} burns at {rate:.1} over {} (more than {})",
                            limit.objective, limit.window, limit.max
                        )),
                        Some(_) => {}
                    }
                }
            }
            Err(reason) => failed.push(format!("no SLO report ({reason})")),
        }
    }
    failed
}

/// Seeds the load's skus and accounts, then starts its clients.
async fn start_load(
    api: &Arc<Api>,
    experiment: &Experiment,
    load: &Arc<LoadState>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let settings = &experiment.load;
    if settings.rate <= 0.0 {
        return Ok(Vec::new());
    }
    let tag = run_tag();
    for (path, body) in seeds(&tag, settings.entities) {
        let (status, answer) = api.call(Method::POST, path, Some(&body)).await?;
        if !(200..300).contains(&status) {
            return Err(Failure::Server(format!(
                "cannot seed the load: POST {path} answered {status}: {}",
                answer["detail"].as_str().unwrap_or_default()
            ))
            .into());
        }
    }
    let every = Duration::from_secs_f64(settings.concurrency as f64 / settings.rate);
    let mut tasks = Vec::new();
    for client in 0..settings.concurrency {
        let (api, load, tag, entities) = (
            Arc::clone(api),
            Arc::clone(load),
            tag.clone(),
            settings.entities,
        );
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = client as u64;
            while !load.stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                if load.stop.load(Ordering::Relaxed) {
                    break;
                }
                n = next_random(n);
                let body = order_body(&tag, entities, n, None);
                load.requests.fetch_add(1, Ordering::Relaxed);
                match api.call(Method::POST, "/api/v1/orders", Some(&body)).await {
                    Ok((201, answer)) => {
                        if let Some(order_id) = answer["order_id"].as_str() {
                            load.acknowledged
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(Acknowledged {
                                    order_id: order_id.to_owned(),
                                });
                        }
                    }
                    _ => {
                        load.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    Ok(tasks)
}

/// Where each fault's healing stands.
#[derive(Debug, Default, Clone)]
struct Healing {
    id: Option<u64>,
    injected_at: Option<f64>,
    healed_after: Option<f64>,
    injections: u64,
    error: Option<String>,
}

/// Runs the schedule and polls the checks until the run's end and every cleared fault
/// healed (or its heal timeout passed), or an early stop.
async fn drive(api: &Api, experiment: &Experiment, load: &LoadState) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut schedule = Schedule::new(experiment);
    let mut healing = vec![Healing::default(); experiment.faults.len()];
    let mut stopped_early = None;
    let mut during_violations = 0;
    let mut during_reasons: Vec<String> = Vec::new();
    let mut server_away = 0;
    let mut away = false;
    let mut last_progress = 0.0;
    let heal_timeout = experiment.heal_timeout_secs;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let now = started.elapsed().as_secs_f64();
        if stopped_early.is_some() {
            schedule.skip_waiting();
        }
        // Inject and clear what is due.
        let due = schedule.due(now);
        for i in due.inject {
            let fault = &experiment.faults[i];
            match api.inject(&fault.spec()).await {
                Ok(injected) => {
                    progress(&format!(
                        "[{now:5.1} s] injected fault {}: {}",
                        injected.id,
                        fault.describe()
                    ));
                    schedule.injected(i, injected.id, now);
                    healing[i].id = Some(injected.id);
                    healing[i].injected_at = Some(now);
                }
                Err(error) => {
                    progress(&format!(
                        "[{now:5.1} s] cannot inject {}: {error:#}",
                        fault.describe()
                    ));
                    healing[i].error = Some(format!("{error:#}"));
                    schedule.failed(i);
                }
            }
        }
        let mut to_clear = due.clear;
        if now >= experiment.duration_secs || stopped_early.is_some() {
            // The run is over: whatever has not ended by itself is cleared now.
            to_clear = schedule.active();
        }
        for (i, id) in to_clear {
            // A fault the server no longer has (ended, or the server restarted) is
            // cleared all the same.
            let _ = api.clear(id).await;
            schedule.cleared(i, started.elapsed().as_secs_f64());
            progress(&format!(
                "[{:5.1} s] cleared fault {id}: {}",
                started.elapsed().as_secs_f64(),
                experiment.faults[i].describe()
            ));
        }
        // See which faults ended by themselves (a count used up), or went with the
        // server.
        let active = schedule.active();
        if !active.is_empty() {
            match api.faults().await {
                Ok(list) => {
                    let counts: HashMap<u64, u64> = list
                        .faults
                        .iter()
                        .map(|fault| (fault.id, fault.injected))
                        .collect();
                    for (i, id) in active {
                        match counts.get(&id) {
                            Some(injected) => healing[i].injections = *injected,
                            None => {
                                if let Some(count) = experiment.faults[i].count {
                                    healing[i].injections = healing[i].injections.max(count);
                                }
                                schedule.cleared(i, now);
                                progress(&format!(
                                    "[{now:5.1} s] fault {id} ended: {}",
                                    experiment.faults[i].describe()
                                ));
                            }
                        }
                    }
                }
                Err(_) if experiment.expect_restart => {
                    // The process went: its faults with it.
                    for (i, id) in active {
                        schedule.cleared(i, now);
                        progress(&format!(
                            "[{now:5.1} s] the server went away; fault {id} went with it"
                        ));
                    }
                }
                Err(_) => {}
            }
        }
        // Is the server there?
        let reachable = api.call(Method::GET, "/healthz", None).await.is_ok();
        if !reachable && !away {
            server_away += 1;
            progress(&format!("[{now:5.1} s] the server cannot be reached"));
        }
        if reachable && away {
            progress(&format!("[{now:5.1} s] the server is back"));
        }
        away = !reachable;
        // The checks that must hold all along.
        let broken = evaluate(api, &experiment.during).await;
        if !broken.is_empty() {
            during_violations += 1;
            for reason in broken {
                if during_reasons.len() < 10 && !during_reasons.contains(&reason) {
                    during_reasons.push(reason);
                }
            }
        }
        // Healing: every steady-state check holds again after a fault was cleared.
        let steady = evaluate(api, &experiment.steady_state).await;
        let now = started.elapsed().as_secs_f64();
        let mut unhealed = 0;
        for (i, heal) in healing.iter_mut().enumerate() {
            if let FaultState::Cleared { at } = schedule.state(i)
                && heal.healed_after.is_none()
            {
                if steady.is_empty() {
                    heal.healed_after = Some(now - at);
                    progress(&format!(
                        "[{now:5.1} s] healed {:.1} s after clearing {}",
                        now - at,
                        experiment.faults[i].describe()
                    ));
                } else if now - at <= heal_timeout {
                    unhealed += 1;
                }
            }
        }
        // A page stops the run.
        if stopped_early.is_none()
            && let Ok(slo) = get_ok(api, "/api/v1/slo").await
        {
            let paging: Vec<&str> = slo["objectives"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|objective| objective["alert"] == "page")
                .filter_map(|objective| objective["name"].as_str())
                .filter(|name| experiment.budget.considers(name))
                .collect();
            if !paging.is_empty() {
                stopped_early = Some(format!("a page-level burn started: {}", paging.join(", ")));
                load.stop.store(true, Ordering::Relaxed);
                progress(&format!(
                    "[{now:5.1} s] stopping: page-level burn of {}",
                    paging.join(", ")
                ));
                continue;
            }
        }
        if now >= experiment.duration_secs {
            load.stop.store(true, Ordering::Relaxed);
        }
        if now - last_progress >= 2.0 {
            last_progress = now;
            let state = if steady.is_empty() {
                "steady".to_owned()
            } else {
                format!("not steady: {}", steady.join("; "))
            };
            progress(&format!(
                "[{now:5.1} s] {} orders, {} errors, {} faults active; {state}",
                load.acknowledged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len(),
                load.errors.load(Ordering::Relaxed),
                schedule.active().len()
            ));
        }
        let over = now >= experiment.duration_secs || stopped_early.is_some();
        if over && schedule.done() && unhealed == 0 {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c, if stopped_early.is_none() => {
                stopped_early = Some("interrupted (Ctrl-C)".to_owned());
                load.stop.store(true, Ordering::Relaxed);
                progress("interrupted: clearing the faults");
            }
        }
    }
    let faults = experiment
        .faults
        .iter()
        .zip(healing)
        .enumerate()
        .map(|(i, (fault, mut heal))| FaultReport {
            fault: fault.describe(),
            id: heal.id,
            injected_at_secs: heal.injected_at,
            cleared_at_secs: match schedule.state(i) {
                FaultState::Cleared { at } => Some(at),
                _ => None,
            },
            injections: heal.injections,
            healed_after_secs: heal.healed_after,
            error: heal.error.take().or_else(|| {
                (schedule.state(i) == FaultState::Skipped)
                    .then(|| "the run stopped before its time".to_owned())
            }),
        })
        .collect();
    Ok(Report {
        experiment: experiment.name.clone(),
        hypothesis: experiment.hypothesis.clone(),
        held: false,
        stopped_early,
        seconds: started.elapsed().as_secs_f64(),
        faults,
        during_violations,
        during_reasons,
        server_away,
        load: LoadReport::default(),
        orders_lost: 0,
        orders_unsettled: 0,
    })
}

/// Reads every acknowledged order back: `(lost, unsettled)`, the orders that are not
/// there, and (with `settle`) those still pending after that long.
async fn check_orders(
    api: &Api,
    acknowledged: &[Acknowledged],
    settle: Option<Duration>,
) -> (u64, u64) {
    let deadline = Instant::now() + settle.unwrap_or_default();
    let mut lost = 0;
    let mut pending: Vec<&Acknowledged> = Vec::new();
    for order in acknowledged {
        match order_status(api, &order.order_id).await {
            Some(status) if status == "pending" && settle.is_some() => pending.push(order),
            Some(_) => {}
            None => {
                lost += 1;
                progress(&format!(
                    "acknowledged order {} is not there",
                    order.order_id
                ));
            }
        }
    }
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let mut still = Vec::new();
        for order in pending {
            if order_status(api, &order.order_id).await.as_deref() == Some("pending") {
                still.push(order);
            }
        }
        pending = still;
    }
    (lost, pending.len() as u64)
}

/// The order's status, `None` if it is not there. A server that cannot answer right now
/// is asked again a few times.
async fn order_status(api: &Api, order_id: &str) -> Option<String> {
    let path = format!("/api/v1/orders/{order_id}");
    for _ in 0..10 {
        match api.call(Method::GET, &path, None).await {
            Ok((200, answer)) => return answer["status"].as_str().map(str::to_owned),
            Ok((404, _)) => return None,
            _ => tokio::time::sleep(POLL).await,
        }
    }
    None
}

/// Why the hypothesis was refuted, in a line.
fn verdict(report: &Report, experiment: &Experiment) -> String {
    let mut reasons = Vec::new();
    if let Some(why) = &report.stopped_early {
        reasons.push(format!("stopped early: {why}"));
    }
    for fault in &report.faults {
        if let Some(error) = &fault.error {
            reasons.push(format!("{} could not be injected: {error}", fault.fault));
        } else if fault.healed_after_secs.is_none() {
            reasons.push(format!(
                "{} did not heal within {} s",
                fault.fault, experiment.heal_timeout_secs
            ));
        }
    }
    if report.during_violations > 0 {
        reasons.push(format!(
            "the checks that must hold throughout broke at {} polls ({})",
            report.during_violations,
            report.during_reasons.join("; ")
        ));
    }
    if report.orders_lost > 0 {
        reasons.push(format!("{} acknowledged orders lost", report.orders_lost));
    }
    if report.orders_unsettled > 0 {
        reasons.push(format!(
            "{} orders still pending after {} s",
            report.orders_unsettled,
            experiment
                .steady_state
                .orders_settled_within_secs
                .unwrap_or_default()
        ));
    }
    reasons.join("; ")
}

fn print(report: &Report, experiment: &Experiment, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("experiment: {}", report.experiment);
    println!("hypothesis: {}", report.hypothesis);
    for fault in &report.faults {
        let outcome = match (&fault.error, fault.healed_after_secs) {
            (Some(error), _) => format!("not injected: {error}"),
            (None, Some(after)) => format!("healed in {after:.1} s"),
            (None, None) => format!("did not heal within {} s", experiment.heal_timeout_secs),
        };
        println!(
            "fault {}: {} injections; {outcome}",
            fault.fault, fault.injections
        );
    }
    println!(
        "load: {} requests, {} orders acknowledged, {} errors",
        report.load.requests, report.load.orders, report.load.errors
    );
    if report.server_away > 0 {
        println!("the server went away {} times", report.server_away);
    }
    println!(
        "orders: {} lost, {} unsettled",
        report.orders_lost, report.orders_unsettled
    );
    if report.held {
        println!("steady state: held ({:.1} s)", report.seconds);
    } else {
        println!(
            "steady state: did not hold: {}",
            verdict(report, experiment)
        );
    }
    Ok(())
}
