//! The anti-corruption layer: Annals' card charges in, the provider's HTTP model out, and
//! the provider's answers back as Annals' outcomes. Everything of the provider (its
//! resource names, decimal amounts with a currency, statuses, error codes and its
//! `Paystream-Request-Token` idempotency header) is private to this module; the rest of
//! the workspace sees [`CardCharge`], [`Receipt`] and [`Failure`] only.
//!
//! The provider ("Paystream", simulated by `annals-psp-sim`) captures a payment with
//! `POST /v2/payment_intents`, gives it back with `POST /v2/payment_intents/{id}/reversal`
//! and lists a reference's payments with `GET /v2/payment_intents?reference=`. Annals'
//! amounts are integer minor units: they go out as `"12.34"` in the configured currency
//! (two decimals). Every charge carries the idempotency token `annals-charge-<order>`, the
//! same on every retry and after a restart, so the provider captures an order once
//! however often it is asked; a reversal carries `annals-reverse-<payment>`.
//!
//! How each provider answer maps ([`failure_of`]):
//!
//! | provider | Annals |
//! | --- | --- |
//! | 201/200 `captured` | [`Receipt`] |
//! | 402 `card_declined`, `insufficient_funds` | [`Failure::Declined`] |
//! | 429 `rate_limited`, 503 `processor_unavailable`, 500 `internal_error`, other 5xx, connection refused | [`Failure::Retryable`] |
//! | timed out, connection lost after sending | [`Failure::Uncertain`] |
//! | 400 `invalid_request`, 409 `token_reused`, 404 `no_such_intent`, other 4xx, an answer that does not parse | [`Failure::Rejected`] |

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{CardCharge, Failure, Receipt};

/// The provider's idempotency header.
const TOKEN_HEADER: &str = "Paystream-Request-Token";

/// A payment as the provider describes it.
#[derive(Debug, Clone, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
}

/// `{"payment_intent": {...}}`.
#[derive(Debug, Deserialize)]
struct IntentEnvelope {
    payment_intent: PaymentIntent,
}

/// `{"data": [...]}`.
#[derive(Debug, Deserialize)]
struct IntentList {
    data: Vec<PaymentIntent>,
}

/// The body that captures a payment.
#[derive(Debug, Serialize)]
struct CaptureRequest<'a> {
    amount: String,
    currency: &'a str,
    card: &'a str,
    reference: &'a str,
}

/// `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ProviderError,
}

#[derive(Debug, Deserialize)]
struct ProviderError {
    code: String,
    #[serde(default)]
    message: String,
}

/// One provider, reached over HTTP.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    client: reqwest::Client,
    url: String,
    currency: String,
}

impl Provider {
    /// The provider at `url` (`http://host:port`), each request limited to `timeout`,
    /// amounts in `currency` (an ISO 4217 code with two decimals).
    pub(crate) fn new(url: &str, timeout: Duration, currency: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| format!("bad provider URL {url:?}: {error}"))?;
        if parsed.scheme() != "http" || parsed.host().is_none() {
            return Err(format!(
                "bad provider URL {url:?}: it must be http://host:port (TLS towards providers is not built yet)"
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| format!("cannot make an HTTP client: {error}"))?;
        Ok(Provider {
            client,
            url: url.trim_end_matches('/').to_owned(),
            currency: currency.to_owned(),
        })
    }

    /// Captures `charge` (idempotent by its order id).
    pub(crate) async fn charge(&self, charge: &CardCharge) -> Result<Receipt, Failure> {
        let body = CaptureRequest {
            amount: decimal(charge.amount),
            currency: &self.currency,
            card: &charge.card,
            reference: &charge.order_id,
        };
        let response = self
            .client
            .post(format!("{}/v2/payment_intents", self.url))
            .header(TOKEN_HEADER, charge_token(&charge.order_id))
            .json(&body)
            .send()
            .await
            .map_err(transport_failure)?;
        let intent = intent_of(response).await?;
        match intent.status.as_str() {
            "captured" => Ok(Receipt {
                provider: self.url.clone(),
                payment: intent.id,
            }),
            other => Err(Failure::Rejected {
                reason: format!("the provider answered a payment with status {other:?}"),
            }),
        }
    }

    /// Reverses every captured payment of the order `order_id`; the number reversed
    /// (0: the provider holds none).
    pub(crate) async fn refund(&self, order_id: &str) -> Result<usize, Failure> {
        let mut list =
            reqwest::Url::parse(&format!("{}/v2/payment_intents", self.url)).map_err(|error| {
                Failure::Rejected {
                    reason: format!("bad provider URL: {error}"),
                }
            })?;
        list.query_pairs_mut().append_pair("reference", order_id);
        let response = self
            .client
            .get(list)
            .send()
            .await
            .map_err(transport_failure)?;
        let list: IntentList = parse(response).await?;
        let mut reversed = 0;
        for intent in list
            .data
            .iter()
            .filter(|intent| intent.status == "captured")
        {
            let response = self
                .client
                .post(format!(
                    "{}/v2/payment_intents/{}/reversal",
                    self.url, intent.id
                ))
                .header(TOKEN_HEADER, format!("annals-reverse-{}", intent.id))
                .send()
                .await
                .map_err(transport_failure)?;
            intent_of(response).await?;
            reversed += 1;
        }
        Ok(reversed)
    }
}

/// The idempotency token of an order's charge: the same for every attempt, ever.
fn charge_token(order_id: &str) -> String {
    format!("annals-charge-{order_id}")
}

/// Minor units as the provider's decimal string: 1234 -> "12.34".
fn decimal(minor_units: u64) -> String {
    format!("{}.{:02}", minor_units / 100, minor_units % 100)
}

async fn intent_of(response: reqwest::Response) -> Result<PaymentIntent, Failure> {
    parse::<IntentEnvelope>(response)
        .await
        .map(|envelope| envelope.payment_intent)
}

/// A success's body as `T`, or the provider's error as a [`Failure`].
async fn parse<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, Failure> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(transport_failure)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|error| Failure::Rejected {
            reason: format!("the provider's answer ({status}) does not parse: {error}"),
        });
    }
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
        Ok(envelope) => (envelope.error.code, envelope.error.message),
        Err(_) => (String::new(), String::from_utf8_lossy(&bytes).into_owned()),
    };
    Err(failure_of(status, &code, &message))
}

/// What a provider's error answer means to Annals.
fn failure_of(status: StatusCode, code: &str, message: &str) -> Failure {
    let said = if message.is_empty() {
        format!("{status} {code}")
    } else {
        format!("{status} {code}: {message}")
    };
    match code {
        "card_declined" => Failure::Declined {
            reason: "the card was declined".to_owned(),
        },
        "insufficient_funds" => Failure::Declined {
            reason: "the card has insufficient funds".to_owned(),
        },
        "rate_limited" | "processor_unavailable" | "internal_error" => {
            Failure::Retryable { reason: said }
        }
        "invalid_request" | "token_reused" | "no_such_intent" => Failure::Rejected { reason: said },
        _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            Failure::Retryable { reason: said }
        }
        _ => Failure::Rejected { reason: said },
    }
}

/// A request that got no answer: refused before it was sent (certainly not charged), or
/// timed out or cut after (perhaps charged).
fn transport_failure(error: reqwest::Error) -> Failure {
    if error.is_connect() {
        Failure::Retryable {
            reason: format!("cannot connect: {error}"),
        }
    } else if error.is_timeout() {
        Failure::Uncertain {
            reason: "timed out waiting for the provider".to_owned(),
        }
    } else {
        Failure::Uncertain {
            reason: format!("the exchange failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_go_out_as_decimal_strings() {
        assert_eq!(decimal(1234), "12.34");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(100), "1.00");
        assert_eq!(decimal(u64::MAX), "184467440737095516.15");
    }

    #[test]
    fn every_provider_error_code_maps_to_an_outcome() {
        let declined = |reason: &str| Failure::Declined {
            reason: reason.to_owned(),
        };
        let cases = [
            (402, "card_declined", declined("the card was declined")),
            (
                402,
                "insufficient_funds",
                declined("the card has insufficient funds"),
            ),
            (
                429,
                "rate_limited",
                Failure::Retryable {
                    reason: "429 Too Many Requests rate_limited: m".into(),
                },
            ),
            (
                503,
                "processor_unavailable",
                Failure::Retryable {
                    reason: "503 Service Unavailable processor_unavailable: m".into(),
                },
            ),
            (
                500,
                "internal_error",
                Failure::Retryable {
                    reason: "500 Internal Server Error internal_error: m".into(),
                },
            ),
            (
                502,
                "",
                Failure::Retryable {
                    reason: "502 Bad Gateway : m".into(),
                },
            ),
            (
                400,
                "invalid_request",
                Failure::Rejected {
                    reason: "400 Bad Request invalid_request: m".into(),
                },
            ),
            (
                409,
                "token_reused",
                Failure::Rejected {
                    reason: "409 Conflict token_reused: m".into(),
                },
            ),
            (
                404,
                "no_such_intent",
                Failure::Rejected {
                    reason: "404 Not Found no_such_intent: m".into(),
                },
            ),
            (
                418,
                "teapot",
                Failure::Rejected {
                    reason: "418 I'm a teapot teapot: m".into(),
                },
            ),
        ];
        for (status, code, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(failure_of(status, code, "m"), expected, "{status} {code}");
        }
    }

    #[test]
    fn the_charge_token_depends_on_the_order_only() {
        assert_eq!(charge_token("o-1"), "annals-charge-o-1");
    }
}
