//! `annals bench policy`: decisions of the policy gatekeeper over a realistic mix of
//! inputs (every role, anonymous callers, every action, customers acting for themselves
//! and for others), on one thread and on two; latency percentiles and decisions/s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use security::policy::{ACTIONS, Policy, PolicyInput, RequestInfo, Resource};
use security::{Principal, Role};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Decisions per measured run (each thread count makes this many in all).
    #[arg(long, default_value_t = 200_000)]
    decisions: u64,
    /// The policy to measure (default: the built-in policy/annals.rego).
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PolicyReport {
    bench: &'static str,
    revision: String,
    /// `compiled` or `interpreted` (see `Policy::evaluator`).
    evaluator: &'static str,
    inputs: usize,
    runs: Vec<PolicyRun>,
}

#[derive(Debug, Serialize)]
struct PolicyRun {
    threads: usize,
    decisions: u64,
    allowed: u64,
    seconds: f64,
    decisions_per_second: f64,
    p50_micros: f64,
    p99_micros: f64,
    max_micros: f64,
}

pub(super) async fn run(args: PolicyArgs) -> anyhow::Result<()> {
    let report =
        tokio::task::spawn_blocking(move || measure(&args).map(|report| (report, args.json)))
            .await??;
    let (report, json) = report;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "policy {} ({}) over {} distinct inputs:",
            report.revision, report.evaluator, report.inputs
        );
        for run in &report.runs {
            println!(
                "  {} thread(s): {} decisions ({} allowed) in {:.2} s, {:.0}/s; p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                run.threads,
                run.decisions,
                run.allowed,
                run.seconds,
                run.decisions_per_second,
                run.p50_micros,
                run.p99_micros,
                run.max_micros
            );
        }
    }
    Ok(())
}

fn measure(args: &PolicyArgs) -> anyhow::Result<PolicyReport> {
    let policy = Arc::new(match &args.policy_file {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default_policy()?,
    });
    let principals = Arc::new(principals());
    let inputs = principals.len() * ACTIONS.len() * 2;
    // A warm-up fills the engine pool and the caches, so the runs measure steady state.
    decide_many(&policy, &principals, 0, args.decisions.min(2_000))?;
    let mut runs = Vec::new();
    for threads in [1usize, 2] {
        let per_thread = args.decisions / threads as u64;
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (policy, principals) = (policy.clone(), principals.clone());
                std::thread::spawn(move || {
                    decide_many(&policy, &principals, thread * 7, per_thread)
                })
            })
            .collect();
        let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
        let mut allowed = 0;
        for handle in handles {
            let (histogram, thread_allowed) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a decision thread panicked"))??;
            latencies.add(histogram)?;
            allowed += thread_allowed;
        }
        let seconds = started.elapsed().as_secs_f64();
        let decisions = latencies.len();
        runs.push(PolicyRun {
            threads,
            decisions,
            allowed,
            seconds,
            decisions_per_second: decisions as f64 / seconds,
            p50_micros: latencies.value_at_quantile(0.50) as f64 / 1000.0,
            p99_micros: latencies.value_at_quantile(0.99) as f64 / 1000.0,
            max_micros: latencies.max() as f64 / 1000.0,
        });
    }
    Ok(PolicyReport {
        bench: "policy",
        revision: policy.revision().to_owned(),
        evaluator: policy.evaluator(),
        inputs,
        runs,
    })
}

/// The callers of the mix: one of each role, a customer without a customer id, and an
/// anonymous caller (`None`).
fn principals() -> Vec<Option<Principal>> {
    let principal = |subject: &str, role: Role, customer_id: Option<&str>| {
        Some(Principal {
            subject: subject.to_owned(),
            issuer: Some("https://idp.example".to_owned()),
            roles: vec![role],
            customer_id: customer_id.map(str::to_owned),
        })
    };
    vec![
        principal("alice", Role::Customer, Some("c-1")),
        principal("nemo", Role::Customer, None),
        principal("carol", Role::Clerk, None),
        principal("oscar", Role::Operator, None),
        principal("ada", Role::Admin, None),
        None,
    ]
}

/// Make `decisions` decisions, cycling through principals × actions × (own customer,
/// another customer) from `offset`; their latencies in nanoseconds and how many allowed.
fn decide_many(
    policy: &Policy,
    principals: &[Option<Principal>],
    offset: usize,
    decisions: u64,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    let mut allowed = 0;
    let mix = principals.len() * ACTIONS.len() * 2;
    for decision in 0..decisions {
        let index = (offset + decision as usize) % mix;
        let principal = principals[index % principals.len()].as_ref();
        let action = ACTIONS[(index / principals.len()) % ACTIONS.len()];
        let owner = if index / (principals.len() * ACTIONS.len()) == 0 {
            "c-1"
        } else {
            "c-2"
        };
        let input = PolicyInput {
            principal,
            action,
            resource: Resource {
                customer_id: Some(owner.to_owned()),
                sku: Some("sku-1".to_owned()),
                order_id: Some("o-1".to_owned()),
                stream: None,
                projection: None,
            },
            request: RequestInfo {
                method: "GET",
                path: "/api/v1/bench",
                intent: Some("interactive"),
            },
        };
        let started = Instant::now();
        let outcome = policy.decide(&input)?;
        latencies.record(started.elapsed().as_nanos() as u64)?;
        allowed += u64::from(outcome.allow);
    }
    Ok((latencies, allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_one_and_two_threads() {
        let args = PolicyArgs {
            decisions: 400,
            policy_file: None,
            json: true,
        };
        let report = measure(&args).unwrap();
        assert_eq!(report.inputs, 6 * ACTIONS.len() * 2);
        let threads: Vec<usize> = report.runs.iter().map(|run| run.threads).collect();
        assert_eq!(threads, vec![1, 2]);
        for run in &report.runs {
            assert_eq!(run.decisions, 400);
            assert!(run.allowed > 0 && run.allowed < run.decisions, "{run:?}");
            assert!(run.p50_micros <= run.p99_micros && run.p99_micros <= run.max_micros);
        }
    }
}
