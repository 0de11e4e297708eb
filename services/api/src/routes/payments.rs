//! The `payments` routes: open a customer's account, deposit into it, read it (stream
//! `account-<customer_id>`); put a card on file (stream `card-<customer_id>`: the
//! customer's orders are then charged to it through the payment providers, on a server
//! with `--psp-url`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::commands::{CommandAccepted, CommandHeaders, CommandRequest, Reply, run};
use crate::extract::{CustomerPath, JsonBody, QueryParams, check_entity_id};
use crate::gate::Identity;
use crate::problem::ApiError;
use crate::queries::{EntityQuery, entity_response, load, read_your_writes};
use crate::responses::{
    BadRequest, CommandProblems, Conflict, LogLagging, NotModified, UnknownAccount,
};

/// `POST /api/v1/payments/accounts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// The customer: 1 to 64 ASCII letters, digits, `.`, `_`, `-`.
    #[schema(example = "alice", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub customer_id: String,
}

/// `POST /api/v1/payments/accounts/{customer_id}/deposits`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    /// The amount in minor currency units (cents); above 0.
    #[schema(example = 5000, minimum = 1)]
    pub amount: u64,
}

/// `POST /api/v1/payments/cards`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCard {
    /// The customer: 1 to 64 ASCII letters, digits, `.`, `_`, `-`.
    #[schema(example = "alice", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub customer_id: String,
    /// The payment provider's token of the card (never a card number): 1 to 64 ASCII
    /// letters, digits and `_`, not digits only.
    #[schema(
        example = "tok_alice",
        pattern = "^[A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*$",
        min_length = 1,
        max_length = 64
    )]
    pub card: String,
}

/// A customer's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// The customer.
    pub customer_id: String,
    /// The balance, in minor units.
    pub balance: u64,
    /// Charges by order id.
    pub charges: BTreeMap<String, ChargeView>,
    /// The stream version this state is folded to (also the `ETag`).
    pub version: u64,
}

/// One order's charge.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    /// The amount charged, in minor units.
    pub amount: u64,
    /// Whether it was refunded.
    pub refunded: bool,
}

/// Open a customer's account.
#[utoipa::path(
    post,
    path = "/api/v1/payments/accounts",
    tag = "payments",
    request_body = OpenAccount,
    params(CommandHeaders),
    responses(
        (status = 201, description = "Opened", body = CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"),
                    ("Location" = String, description = "The account's URL"))),
        CommandProblems, Conflict,
    )
)]
pub(crate) async fn open_account(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<OpenAccount>,
) -> Result<Response, ApiError> {
    check_entity_id("customer id", &body.customer_id)?;
    let request = CommandRequest::new("open_account", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let command = payments::Command::OpenAccount {
            customer_id: body.customer_id.clone(),
        };
        let committed = context
            .execute(&context.state.inner.accounts, &body.customer_id, &command)
            .await?;
        Ok(Reply::accepted(StatusCode::CREATED, &committed)?
            .with_location(format!("/api/v1/payments/accounts/{}", body.customer_id)))
    })
    .await
}

/// Put a card on file for a customer (replacing one registered before). On a server
/// with payment providers (`--psp-url`), the customer's orders are charged to it through
/// them instead of to the prepaid account.
#[utoipa::path(
    post,
    path = "/api/v1/payments/cards",
    tag = "payments",
    request_body = RegisterCard,
    params(CommandHeaders),
    responses(
        (status = 200, description = "Registered", body = CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        CommandProblems, Conflict,
    )
)]
pub(crate) async fn register_card(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<RegisterCard>,
) -> Result<Response, ApiError> {
    check_entity_id("customer id", &body.customer_id)?;
    // The token's rule (the document's `pattern`), before the card is loaded.
    let card = body.card.as_bytes();
    let is_token = (1..=payments::card::MAX_TOKEN_LEN).contains(&card.len())
        && card.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && !card.iter().all(u8::is_ascii_digit);
    if !is_token {
        return Err(ApiError::from(&payments::card::Error::BadCardToken));
    }
    let request = CommandRequest::new("register_card", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let command = payments::card::Command::RegisterCard {
            customer_id: body.customer_id.clone(),
            card: body.card.clone(),
        };
        let committed = context
            .execute(&context.state.inner.cards, &body.customer_id, &command)
            .await?;
        Reply::accepted(StatusCode::OK, &committed)
    })
    .await
}

/// Deposit money into an account.
#[utoipa::path(
    post,
    path = "/api/v1/payments/accounts/{customer_id}/deposits",
    tag = "payments",
    request_body = Deposit,
    params(("customer_id" = String, Path, description = "The customer"), CommandHeaders),
    responses(
        (status = 200, description = "Deposited", body = CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        CommandProblems, UnknownAccount, Conflict,
    )
)]
pub(crate) async fn deposit(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<Deposit>,
) -> Result<Response, ApiError> {
    if body.amount == 0 {
        return Err(ApiError::from(&payments::Error::ZeroAmount));
    }
    let request = CommandRequest::new("deposit", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let command = payments::Command::Deposit {
            amount: body.amount,
        };
        let committed = context
            .execute(&context.state.inner.accounts, &customer_id, &command)
            .await?;
        Reply::accepted(StatusCode::OK, &committed)
    })
    .await
}

/// One customer's account.
#[utoipa::path(
    get,
    path = "/api/v1/payments/accounts/{customer_id}",
    tag = "payments",
    params(
        ("customer_id" = String, Path, description = "The customer"),
        EntityQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this node's log holds this position"),
    ),
    responses(
        (status = 200, description = "The account", body = AccountView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        NotModified, BadRequest, UnknownAccount, LogLagging,
    )
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    CustomerPath(customer_id): CustomerPath,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EntityQuery>,
) -> Result<Response, ApiError> {
    read_your_writes(&state, query.min_position, &headers).await?;
    let loaded = load(&state.inner.accounts, customer_id.clone()).await?;
    // The charges are a view of the history, not part of the state: folded from the
    // stream, up to the version the state is folded to.
    let charges = match loaded.version {
        Some(version) => {
            let customer_id = customer_id.clone();
            state
                .store()
                .read_cached_or_blocking(move |store| {
                    payments::Charges::read(store, &customer_id, version)
                })
                .await?
        }
        None => payments::Charges::default(),
    };
    let unknown = || {
        ApiError::not_found(
            "unknown-account",
            format!("customer {customer_id:?} has no account"),
        )
    };
    let (account, Some(version)) = (loaded.state, loaded.version) else {
        return Err(unknown());
    };
    if !account.is_open() {
        return Err(unknown());
    }
    let view = AccountView {
        customer_id: account.customer_id().to_owned(),
        balance: account.balance(),
        charges: charges
            .0
            .iter()
            .map(|(order, charge)| {
                let view = ChargeView {
                    amount: charge.amount,
                    refunded: charge.refunded,
                };
                (order.clone(), view)
            })
            .collect(),
        version: version.0,
    };
    Ok(entity_response(&headers, version, &view))
}
