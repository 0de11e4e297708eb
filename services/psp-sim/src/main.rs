//! `annals-psp-sim`: a payment service provider simulator, "Paystream", for the tests and
//! demos of card payments. A real HTTP server with a model of its own, which Annals
//! meets only through its adapter (`psp::provider`):
//!
//! - `POST /v2/payment_intents` captures a payment on a card: body
//!   `{"amount":"12.34","currency":"EUR","card":"tok_alice","reference":"order-1"}`
//!   (amounts are decimal strings with the currency's two decimals), header
//!   `Paystream-Request-Token` (the idempotency key, required: the same token and body
//!   answer the first outcome again, with `Paystream-Replayed: true`; the same token with
//!   another body is a 409 `token_reused`). 201 `{"payment_intent":{...}}` with a status
//!   `captured`.
//! - `POST /v2/payment_intents/{id}/reversal` gives a captured payment back (status
//!   `reversed`; reversing twice answers the reversed intent again).
//! - `GET /v2/payment_intents?reference=R` lists the intents of one reference.
//! - Errors are `{"error":{"code":"...","message":"..."}}`: 400 `invalid_request`,
//!   402 `card_declined` (cards whose token starts with `tok_decline`, or the decline
//!   rate) and `insufficient_funds` (`tok_nofunds...`), 404 `no_such_intent`, 409
//!   `token_reused`, 429 `rate_limited`, 503 `processor_unavailable` (the error rate),
//!   500 `internal_error`.
//!
//! Its behaviour changes at run time: `PUT /_sim/behaviour` with any of `latency_ms`
//! (before a request is processed: a caller that gives up first leaves no payment),
//! `error_rate` (0..1: 503 without processing), `timeout_rate` (0..1: the payment is
//! captured, then the answer waits `hang_ms`, so a caller times out not knowing),
//! `hang_ms`, `decline_rate` (0..1: 402). `GET /_sim/behaviour` reads it back;
//! `GET /_sim/ledger` lists every intent with the tokens that reached it and how many
//! requests came in.
//!
//! It prints `listening on http://HOST:PORT` on stdout once bound (`--listen
//! 127.0.0.1:0` picks a free port), and keeps its ledger in memory only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// The idempotency header of the provider's API.
const TOKEN_HEADER: &str = "paystream-request-token";
/// Set on an answer given again for a token seen before.
const REPLAYED_HEADER: &str = "paystream-replayed";

/// A payment service provider simulator ("Paystream") for tests and demos.
#[derive(Debug, Parser)]
#[command(name = "annals-psp-sim", version)]
struct Args {
    /// The address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
    listen: String,
    /// The behaviour at start, as the JSON of `PUT /_sim/behaviour`.
    #[arg(long, value_name = "JSON")]
    behaviour: Option<String>,
}

/// How the simulator misbehaves; every field can be changed at run time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Behaviour {
    /// Waited before each request is processed, in milliseconds.
    latency_ms: u64,
    /// The share of requests answered 503 `processor_unavailable`, unprocessed.
    error_rate: f64,
    /// The share of payments captured whose answer then waits `hang_ms`.
    timeout_rate: f64,
    /// How long a timed-out answer waits, in milliseconds (0: 30 s).
    hang_ms: u64,
    /// The share of payments declined (402 `card_declined`).
    decline_rate: f64,
}

impl Behaviour {
    fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
            ("decline_rate", self.decline_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, not {rate}"));
            }
        }
        Ok(())
    }

    fn hang(&self) -> Duration {
        Duration::from_millis(if self.hang_ms == 0 {
            30_000
        } else {
            self.hang_ms
        })
    }
}

/// A payment as the provider keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct PaymentIntent {
    id: String,
    amount: String,
    currency: String,
    card: String,
    reference: String,
    status: &'static str,
    /// The request tokens that reached it (the first, then reversals).
    tokens: Vec<String>,
}

/// The body of `POST /v2/payment_intents`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureRequest {
    amount: String,
    currency: String,
    card: String,
    reference: String,
}

/// What a token was first used for, and what it was answered.
#[derive(Debug, Clone)]
struct Remembered {
    request: String,
    status: StatusCode,
    body: serde_json::Value,
}

#[derive(Debug, Default)]
struct Ledger {
    behaviour: Behaviour,
    intents: Vec<PaymentIntent>,
    tokens: HashMap<String, Remembered>,
    requests: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

/// Parses a decimal amount with exactly two decimals ("12.34"), above zero.
fn valid_amount(amount: &str) -> bool {
    let Some((units, cents)) = amount.split_once('.') else {
        return false;
    };
    !units.is_empty()
        && units.bytes().all(|b| b.is_ascii_digit())
        && cents.len() == 2
        && cents.bytes().all(|b| b.is_ascii_digit())
        && amount.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

/// Counts the request and waits the latency; `None` when the error rate says to fail it
/// (answer [`unavailable`]).
async fn arrive(shared: &Shared) -> Option<Behaviour> {
    let behaviour = {
        let mut ledger = lock(shared);
        ledger.requests += 1;
        ledger.behaviour.clone()
    };
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    (!roll(behaviour.error_rate)).then_some(behaviour)
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "processor_unavailable",
        "the card processor is unavailable; try again later",
    )
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.trim().is_empty() && value.len() <= 255)
        .map(str::to_owned)
}

fn missing_token() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the Paystream-Request-Token header is required (1 to 255 characters)",
    )
}

fn replay(remembered: &Remembered) -> Response {
    let mut response = (remembered.status, Json(remembered.body.clone())).into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

async fn capture(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(behaviour) = arrive(&shared).await else {
        return unavailable();
    };
    let Some(token) = token(&headers) else {
        return missing_token();
    };
    let request: CaptureRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error_text) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("bad payment intent: {error_text}"),
            );
        }
    };
    let fingerprint = String::from_utf8_lossy(&body).into_owned();
    let (status, answer, hang) = {
        let mut ledger = lock(&shared);
        if let Some(remembered) = ledger.tokens.get(&token) {
            if remembered.request != fingerprint {
                return error(
                    StatusCode::CONFLICT,
                    "token_reused",
                    "this request token was used for another request",
                );
            }
            return replay(remembered);
        }
        let (status, answer) = if !valid_amount(&request.amount) {
            (
                StatusCode::BAD_REQUEST,
                error_body(
                    "invalid_request",
                    "amount must be a decimal string above zero with two decimals",
                ),
            )
        } else if request.currency.len() != 3
            || !request.currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            (
                StatusCode::BAD_REQUEST,
                error_body("invalid_request", "currency must be an ISO 4217 code"),
            )
        } else if request.card.starts_with("tok_decline") || roll(behaviour.decline_rate) {
            (
                StatusCode::PAYMENT_REQUIRED,
                error_body("card_declined", "the card was declined"),
            )
        } else if request.card.starts_with("tok_nofunds") {
            (
                StatusCode::PAYMENT_REQUIRED,
                error_body("insufficient_funds", "the card has insufficient funds"),
            )
        } else {
            let intent = PaymentIntent {
                id: format!("pi_{:06}", ledger.intents.len() + 1),
                amount: request.amount,
                currency: request.currency,
                card: request.card,
                reference: request.reference,
                status: "captured",
                tokens: vec![token.clone()],
            };
            let answer = serde_json::json!({"payment_intent": intent});
            ledger.intents.push(intent);
            (StatusCode::CREATED, answer)
        };
        ledger.tokens.insert(
            token,
            Remembered {
                request: fingerprint,
                status,
                body: answer.clone(),
            },
        );
        (status, answer, roll(behaviour.timeout_rate))
    };
    if hang {
        tokio::time::sleep(behaviour.hang()).await;
    }
    (status, Json(answer)).into_response()
}

async fn reverse(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if arrive(&shared).await.is_none() {
        return unavailable();
    }
    let Some(token) = token(&headers) else {
        return missing_token();
    };
    let mut ledger = lock(&shared);
    let Some(intent) = ledger.intents.iter_mut().find(|intent| intent.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_intent",
            format!("no payment intent {id}"),
        );
    };
    if !intent.tokens.contains(&token) {
        intent.tokens.push(token);
    }
    intent.status = "reversed";
    let body = serde_json::json!({"payment_intent": intent.clone()});
    (StatusCode::OK, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    reference: Option<String>,
}

async fn list(State(shared): State<Shared>, Query(query): Query<ListQuery>) -> Response {
    if arrive(&shared).await.is_none() {
        return unavailable();
    }
    let ledger = lock(&shared);
    let intents: Vec<&PaymentIntent> = ledger
        .intents
        .iter()
        .filter(|intent| {
            query
                .reference
                .as_ref()
                .is_none_or(|reference| &intent.reference == reference)
        })
        .collect();
    Json(serde_json::json!({"data": intents})).into_response()
}

async fn ledger(State(shared): State<Shared>) -> Response {
    let ledger = lock(&shared);
    Json(serde_json::json!({
        "intents": ledger.intents,
        "requests": ledger.requests,
    }))
    .into_response()
}

async fn read_behaviour(State(shared): State<Shared>) -> Json<Behaviour> {
    Json(lock(&shared).behaviour.clone())
}

async fn change_behaviour(State(shared): State<Shared>, body: axum::body::Bytes) -> Response {
    let behaviour: Behaviour = match serde_json::from_slice(&body) {
        Ok(behaviour) => behaviour,
        Err(error_text) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("bad behaviour: {error_text}"),
            );
        }
    };
    if let Err(message) = behaviour.check() {
        return error(StatusCode::BAD_REQUEST, "invalid_request", message);
    }
    lock(&shared).behaviour = behaviour.clone();
    Json(behaviour).into_response()
}

fn app(shared: Shared) -> Router {
    Router::new()
        .route("/v2/payment_intents", post(capture).get(list))
        .route("/v2/payment_intents/{id}/reversal", post(reverse))
        .route("/_sim/ledger", get(ledger))
        .route("/_sim/behaviour", get(read_behaviour).put(change_behaviour))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "invalid_request", "no such resource") })
        .with_state(shared)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let behaviour: Behaviour = match &args.behaviour {
        Some(json) => {
            serde_json::from_str(json).map_err(|error| format!("bad --behaviour: {error}"))?
        }
        None => Behaviour::default(),
    };
    behaviour
        .check()
        .map_err(|error| format!("bad --behaviour: {error}"))?;
    let shared = Arc::new(Mutex::new(Ledger {
        behaviour,
        ..Ledger::default()
    }));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("no local address: {error}"))?;
    println!("listening on http://{address}");
    axum::serve(listener, app(shared))
        .await
        .map_err(|error| format!("the server failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_two_decimals_and_are_above_zero() {
        for good in ["0.01", "12.34", "1000.00"] {
            assert!(valid_amount(good), "{good}");
        }
        for bad in [
            "0.00", "12", "12.3", "12.345", "-1.00", ".50", "1,00", "1e2.00",
        ] {
            assert!(!valid_amount(bad), "{bad}");
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        let behaviour = Behaviour {
            error_rate: 1.5,
            ..Behaviour::default()
        };
        assert!(behaviour.check().is_err());
        assert!(Behaviour::default().check().is_ok());
    }
}
