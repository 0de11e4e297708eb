//! The policy gatekeeper: an embedded Rego policy (regorus) that decides every request.
//!
//! The API gate authenticates a request, names its action (one of [`ACTIONS`], one per
//! route) and its resource, and asks [`Policy::decide`] whether the principal may take
//! that action on that resource. The policy is Rego v1, package `annals`, and answers
//! through its rule `data.annals.allow` (default false) and, for a denial, the optional
//! string rule `data.annals.reason`. The default policy is `policy/annals.rego` in the
//! repository, compiled into the binary; `annals serve --policy-file F` replaces it
//! ([`Policy::from_file`]).
//!
//! # The input document
//! ```json
//! { "principal": {"sub": "alice", "iss": "https://idp", "roles": ["customer"], "customer_id": "c-1"},
//!   "action": "orders.place",
//!   "resource": {"customer_id": "c-1", "sku": null, "order_id": null, "stream": null, "projection": null},
//!   "request": {"method": "POST", "path": "/api/v1/orders", "intent": "interactive"} }
//! ```
//! `principal` is null for an unauthenticated request; absent members are null.
//!
//! # Speed
//! The policy is parsed and analysed once, when the [`Policy`] is made, and compiled to
//! bytecode for regorus's virtual machine (RVM), which decides in a few microseconds
//! where the tree-walking interpreter takes tens. Before the compiled form is trusted it
//! must agree with the interpreter on a probe of inputs (every action, every role, no
//! principal, a customer acting for itself and for another); a policy the compiler
//! cannot take, or on which the two disagree, is decided by the interpreter instead, and
//! the server says so when it starts ([`Policy::evaluator`]). Both need `&mut` to
//! evaluate, so a [`Policy`] keeps a small pool of ready machines (or engines): a
//! decision takes one (or makes one when all are busy), sets the input as a regorus
//! value built directly (no JSON text in between), evaluates `data.annals.allow` and
//! puts the machine back. The reason rule is evaluated only for denials. A compiled
//! decision runs at most [`MAX_INSTRUCTIONS`] instructions: a policy that loops longer
//! fails (and so denies). `annals bench policy` measures it.
//!
//! # Failing closed
//! A decision that cannot be made (the policy fails while evaluating, or `allow` is not a
//! boolean) is an `Err(PolicyError::Evaluation)`, never an allow. The gate answers it
//! with **500** (a broken policy is the server's fault, not the caller's, and the client
//! learns nothing of the policy), logs it and lets nothing through. A policy whose
//! `allow` is undefined for an input denies it (Rego's `default allow := false` makes
//! that explicit).
//!
//! [`rego_tests`] runs policy tests written in Rego (`*_test.rego`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::{CompiledPolicy, Engine, Value};
use serde::Serialize;

use crate::principal::{Principal, Role};

pub mod rego_tests;

/// Every action the API names, one per route; the gate's route table test checks its
/// routes against this list, so a new route without an action (and so without a policy
/// decision) fails that test.
pub const ACTIONS: &[&str] = &[
    "inventory.register",
    "inventory.restock",
    "inventory.read",
    "inventory.list",
    "payments.open",
    "payments.deposit",
    "payments.read",
    "payments.card",
    "customers.register",
    "customers.read",
    "customers.personal_data.read",
    "customers.personal_data.erase",
    "orders.place",
    "orders.cancel",
    "orders.read",
    "orders.list",
    "sagas.read",
    "sagas.list",
    "streams.read",
    "streams.list",
    "events.read",
    "log.read",
    "log.follow",
    "reports.sales",
    "projections.read",
    "projections.rebuild",
    "projections.retry",
    "outbox.read",
    "operations.slo",
    "operations.health",
    "operations.ready",
    "operations.openapi",
    "operations.console",
    "operations.metrics",
    "operations.workers",
    "operations.dependencies",
    "operations.me",
    "correlations.read",
    "chaos.list",
    "chaos.inject",
    "chaos.clear",
];

/// The actions anyone may take, with or without a principal (health, readiness, the API
/// description, the web console's files, who the caller is). The default policy allows them; the gate may
/// skip authentication for them.
pub const PUBLIC_ACTIONS: &[&str] = &[
    "operations.health",
    "operations.ready",
    "operations.openapi",
    "operations.console",
    "operations.me",
];

/// The default policy's source, compiled into the binary.
pub const DEFAULT_POLICY: &str = include_str!("../../../policy/annals.rego");

/// The rule every decision evaluates.
const ALLOW_RULE: &str = "data.annals.allow";
/// The rule that explains a denial, if the policy has it.
const REASON_RULE: &str = "data.annals.reason";
/// The rule that lets a principal raise its request to the lane its `Annals-Intent`
/// header names, above the route's own, if the policy has it ([`Policy::grants_intent`]).
const RAISE_RULE: &str = "data.annals.raise_intent";
/// How many idle prepared engines a policy keeps; more concurrent decisions than this
/// clone the prototype and drop the clone afterwards.
const POOL_LIMIT: usize = 64;

/// Why a policy could not be loaded or a decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read. At startup: report it and exit non-zero.
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The policy does not parse or compile, or lacks `data.annals.allow`. The message
    /// names the file and line. At startup: report it and exit non-zero.
    #[error("the policy {origin} is not usable: {message}")]
    Load { origin: String, message: String },
    /// The policy failed while deciding. The request is denied (fail closed); the gate
    /// answers 500 without details and logs this.
    #[error("the policy failed to decide {action}: {message}")]
    Evaluation { action: String, message: String },
}

/// What the request acts on; absent members are null in the policy's input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// The customer the request acts for: from the path or body, or an order's owner.
    pub customer_id: Option<String>,
    /// The sku, for inventory routes.
    pub sku: Option<String>,
    /// The order, for order and saga routes.
    pub order_id: Option<String>,
    /// The stream, for stream routes.
    pub stream: Option<String>,
    /// The projection, for projection routes.
    pub projection: Option<String>,
}

impl Resource {
    /// A resource that belongs to `customer_id`.
    pub fn customer(customer_id: impl Into<String>) -> Self {
        Resource {
            customer_id: Some(customer_id.into()),
            ..Resource::default()
        }
    }

    fn to_value(&self) -> Value {
        object([
            ("customer_id", optional(self.customer_id.as_deref())),
            ("sku", optional(self.sku.as_deref())),
            ("order_id", optional(self.order_id.as_deref())),
            ("stream", optional(self.stream.as_deref())),
            ("projection", optional(self.projection.as_deref())),
        ])
    }
}

impl std::fmt::Display for Resource {
    /// The members that are present, as `name=value` pairs, or `-` for none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = [
            ("customer_id", &self.customer_id),
            ("sku", &self.sku),
            ("order_id", &self.order_id),
            ("stream", &self.stream),
            ("projection", &self.projection),
        ];
        let mut written = false;
        for (name, value) in members {
            if let Some(value) = value {
                if written {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={value}")?;
                written = true;
            }
        }
        if !written {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// What the policy sees of the HTTP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RequestInfo<'a> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The request path (without the query).
    pub path: &'a str,
    /// The request's intent header (`interactive`, `batch`, ...), if it has one.
    pub intent: Option<&'a str>,
}

/// Everything a decision is made from.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyInput<'a> {
    /// The authenticated caller, or `None` for an unauthenticated request.
    pub principal: Option<&'a Principal>,
    /// One of [`ACTIONS`].
    pub action: &'a str,
    /// What the request acts on.
    pub resource: Resource,
    /// The request itself.
    pub request: RequestInfo<'a>,
}

impl PolicyInput<'_> {
    /// The input document as a regorus value, built directly (no JSON text in between).
    pub fn to_value(&self) -> Value {
        let principal = match self.principal {
            None => Value::Null,
            Some(principal) => object([
                ("sub", Value::from(principal.subject.as_str())),
                ("iss", optional(principal.issuer.as_deref())),
                (
                    "roles",
                    Value::from(
                        principal
                            .roles
                            .iter()
                            .map(|role| Value::from(role.as_str()))
                            .collect::<Vec<_>>(),
                    ),
                ),
                ("customer_id", optional(principal.customer_id.as_deref())),
            ]),
        };
        let request = object([
            ("method", Value::from(self.request.method)),
            ("path", Value::from(self.request.path)),
            ("intent", optional(self.request.intent)),
        ]);
        object([
            ("principal", principal),
            ("action", Value::from(self.action)),
            ("resource", self.resource.to_value()),
            ("request", request),
        ])
    }

    /// The input document as JSON, as the policy sees it (for logs, tests and `opa eval`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a policy input always serializes")
    }
}

/// A policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allow: bool,
    /// Why it was denied, when the policy says (`data.annals.reason`); `None` when allowed.
    pub reason: Option<String>,
    /// How long the evaluation took.
    pub elapsed: Duration,
}

/// Totals of the decisions a [`Policy`] has made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounts {
    /// Decisions that allowed the request.
    pub allowed: u64,
    /// Decisions that denied it.
    pub denied: u64,
    /// Decisions that failed (and so denied, failing closed).
    pub errors: u64,
}

/// A compiled policy, ready to decide; `Send + Sync`, share it through an `Arc`.
pub struct Policy {
    /// What decides: the compiled program, or the interpreter.
    evaluator: Evaluator,
    /// Whether the policy has the `reason` rule.
    has_reason: bool,
    /// The interpreter for the `raise_intent` rule, if the policy has it. Asked only when
    /// a request names a lane above its route's (rare), so it is never compiled.
    raise: Option<Evaluator>,
    /// Where the policy came from: `default` or the file's path.
    origin: String,
    /// A short hash of the sources, logged with every decision.
    revision: String,
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
}

/// How decisions are evaluated (see "Speed" in the module doc).
enum Evaluator {
    /// The policy compiled to RVM bytecode; the pool holds machines with it loaded.
    Compiled {
        program: Arc<Program>,
        compiled: CompiledPolicy,
        pool: Pool<RegoVM>,
    },
    /// The tree-walking interpreter; the pool holds clones of the prepared prototype.
    Interpreted {
        prototype: Box<Engine>,
        pool: Pool<Engine>,
    },
}

/// The most instructions one compiled decision may run before it fails (and denies).
pub const MAX_INSTRUCTIONS: usize = 1_000_000;

/// Idle evaluators, taken by a decision and put back after it.
struct Pool<T>(Mutex<Vec<T>>);

impl<T> Pool<T> {
    fn new() -> Self {
        Pool(Mutex::new(Vec::new()))
    }

    fn take(&self, make: impl FnOnce() -> T) -> T {
        let pooled = self.0.lock().map(|mut pool| pool.pop()).unwrap_or(None);
        pooled.unwrap_or_else(make)
    }

    fn put(&self, idle: T) {
        if let Ok(mut pool) = self.0.lock()
            && pool.len() < POOL_LIMIT
        {
            pool.push(idle);
        }
    }
}

/// A rule's value, or why it could not be evaluated.
type RuleResult = Result<Value, String>;

impl Evaluator {
    /// Compile `engine`'s policy for the RVM, with `entry_points` (each a rule path).
    fn compile(engine: &Engine, entry_points: &[&str]) -> Result<Self, String> {
        let mut engine = engine.clone();
        let compiled = engine
            .compile_with_entrypoint(&ALLOW_RULE.into())
            .map_err(|error| format!("{error:#}"))?;
        let program = Compiler::compile_from_policy(&compiled, entry_points)
            .map_err(|error| format!("{error:#}"))?;
        Ok(Evaluator::Compiled {
            program,
            compiled,
            pool: Pool::new(),
        })
    }

    /// Evaluate `rules` in order on one evaluator, with `input`; `next` says, from a
    /// rule's result, whether to go on to the following rule.
    fn evaluate(
        &self,
        input: Value,
        rules: &[&str],
        next: impl FnMut(&RuleResult) -> bool,
    ) -> Vec<RuleResult> {
        // An evaluator that failed is dropped rather than trusted again.
        match self {
            Evaluator::Compiled {
                program,
                compiled,
                pool,
            } => {
                let mut vm = pool.take(|| {
                    let mut vm = RegoVM::new_with_policy(compiled.clone());
                    vm.load_program(program.clone());
                    vm.set_max_instructions(MAX_INSTRUCTIONS);
                    vm
                });
                vm.set_input(input);
                let (results, healthy) = run_rules(rules, next, |rule| {
                    vm.execute_entry_point_by_name(rule)
                        .map_err(|error| error.to_string())
                });
                if healthy {
                    pool.put(vm);
                }
                results
            }
            Evaluator::Interpreted { prototype, pool } => {
                let mut engine = pool.take(|| Engine::clone(prototype));
                engine.set_input(input);
                let (results, healthy) = run_rules(rules, next, |rule| {
                    engine
                        .eval_rule(rule.to_owned())
                        .map_err(|error| format!("{error:#}"))
                });
                if healthy {
                    pool.put(engine);
                }
                results
            }
        }
    }
}

/// Evaluates `rules` in order with `eval` for as long as `next` says to go on, from each
/// result: the results, and whether none of them failed.
fn run_rules(
    rules: &[&str],
    mut next: impl FnMut(&RuleResult) -> bool,
    mut eval: impl FnMut(&str) -> RuleResult,
) -> (Vec<RuleResult>, bool) {
    let mut results = Vec::with_capacity(rules.len());
    for rule in rules {
        let result = eval(rule);
        let go_on = next(&result);
        results.push(result);
        if !go_on {
            break;
        }
    }
    let healthy = results.iter().all(Result::is_ok);
    (results, healthy)
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("origin", &self.origin)
            .field("revision", &self.revision)
            .field("evaluator", &self.evaluator())
            .field("has_reason", &self.has_reason)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The default policy (`policy/annals.rego`, compiled into the binary).
    pub fn default_policy() -> Result<Self, PolicyError> {
        Self::from_sources(
            "default",
            &[("policy/annals.rego".into(), DEFAULT_POLICY.into())],
        )
    }

    /// The policy in the file at `path` (`--policy-file`); a parse error names the file
    /// and line.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path.display().to_string();
        Self::from_sources(&name, &[(name.clone(), text)])
    }

    /// A policy made of several Rego modules, each `(file name, text)`; `origin` names
    /// them in logs and errors. One of them must define `data.annals.allow`.
    pub fn from_sources(origin: &str, sources: &[(String, String)]) -> Result<Self, PolicyError> {
        let interpreted = Self::interpreted(origin, sources)?;
        let rules = interpreted.rules();
        let Evaluator::Interpreted { prototype, .. } = &interpreted.evaluator else {
            unreachable!("Policy::interpreted makes an interpreted policy");
        };
        let compiled = Evaluator::compile(prototype, rules).and_then(|evaluator| {
            match probe_inputs().iter().find(|input| {
                // Errors agree when both fail; their words differ.
                interpreted.answer(input).map_err(drop)
                    != evaluator_answer(&evaluator, rules, input).map_err(drop)
            }) {
                None => Ok(evaluator),
                Some(input) => Err(format!(
                    "the compiled policy and the interpreter disagree on {}",
                    input.to_json()
                )),
            }
        });
        match compiled {
            Ok(evaluator) => Ok(Policy {
                evaluator,
                ..interpreted
            }),
            Err(why) => {
                tracing::warn!(
                    target: "annals::policy",
                    origin,
                    why,
                    "the policy is decided by the interpreter, not compiled: decisions are slower"
                );
                Ok(interpreted)
            }
        }
    }

    /// The policy decided by the interpreter alone (what [`Policy::from_sources`] falls
    /// back to, and what the compiled form is checked against).
    fn interpreted(origin: &str, sources: &[(String, String)]) -> Result<Self, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
            origin: origin.to_owned(),
            message,
        };
        let mut engine = Engine::new();
        let mut hasher = blake3::Hasher::new();
        for (name, text) in sources {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|error| load_error(format!("{error:#}")))?;
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            hasher.update(text.as_bytes());
            hasher.update(&[0]);
        }
        let revision = format!("blake3:{}", &hasher.finalize().to_hex()[..16]);

        // One evaluation prepares the engine (analysis, schedule, rule index), so that
        // every clone starts ready, and checks that the policy answers.
        let probe = PolicyInput {
            principal: None,
            action: "operations.health",
            resource: Resource::default(),
            request: RequestInfo {
                method: "GET",
                path: "/healthz",
                intent: None,
            },
        };
        engine.set_input(probe.to_value());
        match engine.eval_rule(ALLOW_RULE.to_owned()) {
            Ok(Value::Bool(_)) | Ok(Value::Undefined) => {}
            Ok(other) => {
                return Err(load_error(format!(
                    "{ALLOW_RULE} must be a boolean, not {other}"
                )));
            }
            Err(error) => {
                return Err(load_error(format!(
                    "{ALLOW_RULE} cannot be evaluated: {error:#}"
                )));
            }
        }
        let has_reason = engine.eval_rule(REASON_RULE.to_owned()).is_ok();
        let raise =
            engine
                .eval_rule(RAISE_RULE.to_owned())
                .is_ok()
                .then(|| Evaluator::Interpreted {
                    prototype: Box::new(engine.clone()),
                    pool: Pool::new(),
                });

        Ok(Policy {
            evaluator: Evaluator::Interpreted {
                prototype: Box::new(engine),
                pool: Pool::new(),
            },
            has_reason,
            raise,
            origin: origin.to_owned(),
            revision,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// A short hash of the policy's sources, e.g. `blake3:1f2e3d4c5b6a7988`.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Where the policy came from: `default` or the policy file's path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How decisions are evaluated: `compiled` (RVM bytecode) or `interpreted` (the
    /// policy did not compile, or its compiled form disagreed with the interpreter).
    pub fn evaluator(&self) -> &'static str {
        match self.evaluator {
            Evaluator::Compiled { .. } => "compiled",
            Evaluator::Interpreted { .. } => "interpreted",
        }
    }

    /// Decide whether `input.principal` may take `input.action` on `input.resource`.
    ///
    /// Logs the decision (target `annals::policy`: info for a denial, debug for an
    /// allow) and counts it. An `Err` is a denial (fail closed): see the module doc.
    pub fn decide(&self, input: &PolicyInput<'_>) -> Result<Decision, PolicyError> {
        let started = Instant::now();
        let outcome = self.answer(input);
        let elapsed = started.elapsed();
        let subject = input
            .principal
            .map_or("-", |principal| principal.subject.as_str());
        let micros = elapsed.as_micros() as u64;
        match outcome {
            Ok((allow, reason)) => {
                if allow {
                    self.allowed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        target: "annals::policy",
                        sub = subject,
                        action = input.action,
                        resource = %input.resource,
                        decision = "allow",
                        revision = %self.revision,
                        micros,
                        "policy decision"
                    );
                } else {
                    self.denied.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        target: "annals::policy",
                        sub = subject,
                        action = input.action,
                        resource = %input.resource,
                        decision = "deny",
                        reason = reason.as_deref().unwrap_or("-"),
                        revision = %self.revision,
                        micros,
                        "policy decision"
                    );
                }
                Ok(Decision {
                    allow,
                    reason,
                    elapsed,
                })
            }
            Err(message) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    target: "annals::policy",
                    sub = subject,
                    action = input.action,
                    resource = %input.resource,
                    decision = "deny",
                    error = %message,
                    revision = %self.revision,
                    micros,
                    "policy evaluation failed; denied"
                );
                Err(PolicyError::Evaluation {
                    action: input.action.to_owned(),
                    message,
                })
            }
        }
    }

    /// Whether `input.principal` may have its request run in the lane its `Annals-Intent`
    /// header names (`input.request.intent`) although the route's lane is of lower
    /// priority: the policy's `raise_intent` rule. `false` when the policy has no such
    /// rule, and when the rule fails (logged): without it, the header can only lower a
    /// request's lane.
    pub fn grants_intent(&self, input: &PolicyInput<'_>) -> bool {
        let Some(raise) = &self.raise else {
            return false;
        };
        let answer = raise.evaluate(input.to_value(), &[RAISE_RULE], |_| false);
        match answer.into_iter().next() {
            Some(Ok(Value::Bool(granted))) => granted,
            Some(Ok(_)) | None => false,
            Some(Err(error)) => {
                tracing::warn!(target: "annals::policy", error, "the raise_intent rule failed: not granted");
                false
            }
        }
    }

    /// Totals of the decisions made so far.
    pub fn counts(&self) -> PolicyCounts {
        PolicyCounts {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// The rules a decision may evaluate: `allow`, then `reason` if the policy has it.
    fn rules(&self) -> &'static [&'static str] {
        if self.has_reason {
            &[ALLOW_RULE, REASON_RULE]
        } else {
            &[ALLOW_RULE]
        }
    }

    /// Evaluate `allow` (and `reason` for a denial) with this policy's evaluator.
    fn answer(&self, input: &PolicyInput<'_>) -> Result<(bool, Option<String>), String> {
        evaluator_answer(&self.evaluator, self.rules(), input)
    }
}

/// Evaluate `rules` (`allow`, and `reason` for a denial when it is listed) on
/// `evaluator`: whether allowed, and why not.
fn evaluator_answer(
    evaluator: &Evaluator,
    rules: &[&str],
    input: &PolicyInput<'_>,
) -> Result<(bool, Option<String>), String> {
    let mut results = evaluator
        .evaluate(input.to_value(), rules, |allow| {
            !matches!(allow, Ok(Value::Bool(true)))
        })
        .into_iter();
    let allow = match results.next() {
        Some(Ok(Value::Bool(allow))) => allow,
        Some(Ok(Value::Undefined)) => false,
        Some(Ok(other)) => return Err(format!("{ALLOW_RULE} is {other}, not a boolean")),
        Some(Err(error)) => return Err(error),
        None => return Err(format!("{ALLOW_RULE} was not evaluated")),
    };
    let reason = match results.next() {
        Some(Ok(Value::String(reason))) => Some(reason.to_string()),
        Some(Ok(_)) | None => None,
        // The reason only explains a denial already made; its failure does not change
        // the decision.
        Some(Err(error)) => {
            tracing::warn!(target: "annals::policy", error, "the reason rule failed");
            None
        }
    };
    Ok((allow, reason))
}

/// The inputs the compiled policy must decide as the interpreter does before it is
/// used: every action, for no principal, each role alone (a customer with and without a
/// customer id), a principal with every role, on a resource of the customer `c-1`, of
/// `c-2` and of nobody.
fn probe_inputs() -> &'static [PolicyInput<'static>] {
    static PROBES: std::sync::OnceLock<Vec<PolicyInput<'static>>> = std::sync::OnceLock::new();
    static PRINCIPALS: std::sync::OnceLock<Vec<Option<Principal>>> = std::sync::OnceLock::new();
    PROBES.get_or_init(|| {
        let principals = PRINCIPALS.get_or_init(|| {
            let principal = |subject: &str, roles: &[Role], customer_id: Option<&str>| {
                Some(Principal {
                    subject: subject.to_owned(),
                    issuer: Some("https://idp.example".to_owned()),
                    roles: roles.to_vec(),
                    customer_id: customer_id.map(str::to_owned),
                })
            };
            vec![
                None,
                principal("alice", &[Role::Customer], Some("c-1")),
                principal("nemo", &[Role::Customer], None),
                principal("carol", &[Role::Clerk], None),
                principal("oscar", &[Role::Operator], None),
                principal("ada", &[Role::Admin], None),
                principal(
                    "all",
                    &[Role::Customer, Role::Clerk, Role::Operator, Role::Admin],
                    Some("c-1"),
                ),
            ]
        });
        let owners = [Some("c-1"), Some("c-2"), None];
        let mut probes = Vec::new();
        for action in ACTIONS {
            for principal in principals {
                for owner in owners {
                    probes.push(PolicyInput {
                        principal: principal.as_ref(),
                        action,
                        resource: Resource {
                            customer_id: owner.map(str::to_owned),
                            ..Resource::default()
                        },
                        request: RequestInfo {
                            method: "GET",
                            path: "/",
                            intent: None,
                        },
                    });
                }
            }
        }
        probes
    })
}

/// A regorus object from `(key, value)` pairs.
fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::from(
        members
            .into_iter()
            .map(|(key, value)| (Value::from(key), value))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// A string, or null when absent.
fn optional(text: Option<&str>) -> Value {
    text.map_or(Value::Null, Value::from)
}

#[cfg(test)]
mod tests;
