//! The `inventory` routes: register a sku, restock it, read its stock (stream
//! `stock-<sku>`). The list of every sku's stock is a read model
//! ([`super::read_models::list_skus`]).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::commands::{CommandAccepted, CommandHeaders, CommandRequest, Reply, run};
use crate::extract::{JsonBody, QueryParams, SkuPath, check_entity_id};
use crate::gate::Identity;
use crate::problem::ApiError;
use crate::queries::{EntityQuery, entity_response, load, read_your_writes};
use crate::responses::{
    BadRequest, CommandProblems, Conflict, LogLagging, NotModified, UnknownSku,
};

/// `POST /api/v1/inventory/skus`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSku {
    /// The sku: 1 to 64 ASCII letters, digits, `.`, `_`, `-`.
    #[schema(example = "apple", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub sku: String,
    /// A display name; not blank (the pattern: a character that is not white space).
    #[schema(
        example = "Apple",
        pattern = r"[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub name: String,
    /// The price of one unit in minor currency units (cents); above 0.
    #[schema(example = 120, minimum = 1)]
    pub unit_price: u64,
}

/// `POST /api/v1/inventory/skus/{sku}/restock`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// How many units arrived; above 0.
    #[schema(example = 10, minimum = 1)]
    pub quantity: u64,
}

/// A sku and its stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkuView {
    /// The sku.
    pub sku: String,
    /// Its display name.
    pub name: String,
    /// The price of one unit, in minor units.
    pub unit_price: u64,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: u64,
    /// Units held by open reservations.
    pub reserved: u64,
    /// Units that can still be reserved.
    pub available: u64,
    /// Open reservations by order id.
    pub reservations: BTreeMap<String, ReservationView>,
    /// The stream version this state is folded to (also the `ETag`).
    pub version: u64,
}

/// One order's hold on a sku.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    /// Units held.
    pub quantity: u64,
    /// The unit price when reserved, in minor units.
    pub unit_price: u64,
}

/// Register a sku with its name and unit price.
#[utoipa::path(
    post,
    path = "/api/v1/inventory/skus",
    tag = "inventory",
    request_body = RegisterSku,
    params(CommandHeaders),
    responses(
        (status = 201, description = "Registered", body = CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"),
                    ("Location" = String, description = "The sku's URL"))),
        CommandProblems, Conflict,
    )
)]
pub(crate) async fn register_sku(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<RegisterSku>,
) -> Result<Response, ApiError> {
    check_entity_id("sku", &body.sku)?;
    // The rules the body alone decides, before the sku is loaded: the document states
    // them (`minimum`, `pattern`), and `If-Match` must not answer first.
    if body.name.trim().is_empty() {
        return Err(ApiError::from(&inventory::Error::BlankName));
    }
    if body.unit_price == 0 {
        return Err(ApiError::from(&inventory::Error::ZeroPrice));
    }
    let request = CommandRequest::new("register_sku", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let command = inventory::Command::RegisterSku {
            sku: body.sku.clone(),
            name: body.name,
            unit_price: body.unit_price,
        };
        let committed = context
            .execute(&context.state.inner.stock, &body.sku, &command)
            .await?;
        Ok(Reply::accepted(StatusCode::CREATED, &committed)?
            .with_location(format!("/api/v1/inventory/skus/{}", body.sku)))
    })
    .await
}

/// Add units to a sku's stock.
#[utoipa::path(
    post,
    path = "/api/v1/inventory/skus/{sku}/restock",
    tag = "inventory",
    request_body = Restock,
    params(("sku" = String, Path, description = "The sku"), CommandHeaders),
    responses(
        (status = 200, description = "Restocked", body = CommandAccepted,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        CommandProblems, UnknownSku, Conflict,
    )
)]
pub(crate) async fn restock(
    State(state): State<AppState>,
    SkuPath(sku): SkuPath,
    uri: Uri,
    headers: HeaderMap,
    identity: Identity,
    JsonBody(body): JsonBody<Restock>,
) -> Result<Response, ApiError> {
    if body.quantity == 0 {
        return Err(ApiError::from(&inventory::Error::ZeroQuantity));
    }
    let request = CommandRequest::new("restock", &uri, &headers, &body, identity)?;
    run(&state, request, |context| async move {
        let command = inventory::Command::Restock {
            quantity: body.quantity,
        };
        let committed = context
            .execute(&context.state.inner.stock, &sku, &command)
            .await?;
        Reply::accepted(StatusCode::OK, &committed)
    })
    .await
}

/// One sku and its stock.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/skus/{sku}",
    tag = "inventory",
    params(
        ("sku" = String, Path, description = "The sku"),
        EntityQuery,
        ("Annals-Min-Position" = Option<u64>, Header, description = "Wait until this node's log holds this position"),
    ),
    responses(
        (status = 200, description = "The sku", body = SkuView,
            headers(("ETag" = String, description = "The stream version, quoted"))),
        NotModified, BadRequest, UnknownSku, LogLagging,
    )
)]
pub(crate) async fn get_sku(
    State(state): State<AppState>,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EntityQuery>,
) -> Result<Response, ApiError> {
    read_your_writes(&state, query.min_position, &headers).await?;
    let loaded = load(&state.inner.stock, sku.clone()).await?;
    let (stock, Some(version)) = (loaded.state, loaded.version) else {
        return Err(unknown_sku(&sku));
    };
    if !stock.is_registered() {
        return Err(unknown_sku(&sku));
    }
    let view = SkuView {
        sku: stock.sku().to_owned(),
        name: stock.name().to_owned(),
        unit_price: stock.unit_price(),
        on_hand: stock.on_hand(),
        reserved: stock.reserved(),
        available: stock.available(),
        reservations: stock
            .reservations()
            .iter()
            .map(|(order, held)| {
                let view = ReservationView {
                    quantity: held.quantity,
                    unit_price: held.unit_price,
                };
                (order.clone(), view)
            })
            .collect(),
        version: version.0,
    };
    Ok(entity_response(&headers, version, &view))
}

fn unknown_sku(sku: &str) -> ApiError {
    ApiError::not_found("unknown-sku", format!("sku {sku:?} is not registered"))
}
