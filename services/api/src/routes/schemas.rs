//! `GET /api/v1/schemas/events` and `GET /api/v1/schemas/events/{type}/{version}` (tag
//! `schemas`): the JSON Schema (draft 2020-12) of every event type and schema version,
//! as [`crate::event_types`] generates it from the Rust types, the same documents as
//! `docs/schemas/events/` in the repository (a test keeps them equal).
//!
//! Like `/api/v1/openapi.json` they describe the API and hold no data: they are public
//! (the action `operations.openapi`), so a consumer of the NATS messages can fetch the
//! schema its CloudEvents `dataschema` URN names without a token.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::event_types::{EVENT_TYPES, EventType};
use crate::problem::{ApiError, Problem};

/// One schema of [`list_event_schemas`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EventSchemaRef {
    /// The event type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    event_type: &'static str,
    /// The schema version.
    version: u32,
    /// The stream category whose events have this type (`order`, `stock`, `account`,
    /// `card`, `idempotency`, `saga-fulfilment`).
    category: &'static str,
    /// The schema's `$id`, also the CloudEvents `dataschema` of events in this version:
    /// `urn:annals:schema:event:<type>:<version>`.
    id: String,
    /// Where the schema is served.
    href: String,
    /// Whether this is the type's current version: the one the server writes, and the
    /// one the JSON of older stored versions is upcast to.
    current: bool,
}

impl EventSchemaRef {
    fn of(event_type: &EventType) -> Self {
        EventSchemaRef {
            event_type: event_type.name,
            version: event_type.version,
            category: event_type.category,
            id: event_type.urn(),
            href: event_type.href(),
            current: crate::event_types::current_version(event_type.name)
                == Some(event_type.version),
        }
    }
}

/// No event type and version of that name (`unknown-schema`). It describes the OpenAPI
/// document only (the handler answers with [`ApiError`]), so its body is never read.
#[derive(Debug, IntoResponses)]
#[expect(dead_code, reason = "read by the OpenAPI derive only")]
#[response(status = 404, content_type = "application/problem+json")]
pub(crate) struct UnknownSchema(pub Problem);

/// Every event type and schema version, each with its URN and where its schema is
/// served. Public, like the OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/schemas/events",
    tag = "schemas",
    responses((status = 200, description = "Every event type and schema version", body = [EventSchemaRef]))
)]
pub(crate) async fn list_event_schemas() -> Response {
    let list: Vec<EventSchemaRef> = EVENT_TYPES.iter().map(EventSchemaRef::of).collect();
    axum::Json(list).into_response()
}

/// The JSON Schema (draft 2020-12) of one event type in one schema version: the JSON
/// of an event's payload as the API, the CLI and the NATS messages show it (the event's
/// fields, without a wrapper naming the type). Public, like the OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/schemas/events/{type}/{version}",
    tag = "schemas",
    params(
        ("type" = String, Path, description = "The event type, e.g. `OrderPlaced`"),
        ("version" = u32, Path, description = "The schema version, from 1"),
    ),
    responses(
        (status = 200, description = "The JSON Schema", content_type = "application/schema+json", body = Object),
        UnknownSchema,
    )
)]
pub(crate) async fn get_event_schema(
    Path((event_type, version)): Path<(String, String)>,
) -> Response {
    let found = version
        .parse::<u32>()
        .ok()
        .and_then(|version| crate::event_types::find(&event_type, version));
    let Some(found) = found else {
        return ApiError::not_found(
            "unknown-schema",
            format!(
                "no event type {event_type:?} with schema version {version:?}; \
                 GET /api/v1/schemas/events lists them"
            ),
        )
        .into_response();
    };
    let mut response = axum::Json(found.schema()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/schema+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::StatusCode;

    use super::*;

    async fn json_of(response: Response) -> serde_json::Value {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_list_names_every_type_and_version_with_its_urn_and_href() {
        let list = json_of(list_event_schemas().await).await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), EVENT_TYPES.len());
        let placed = list
            .iter()
            .find(|entry| entry["type"] == "OrderPlaced" && entry["version"] == 1)
            .unwrap();
        assert_eq!(placed["category"], "order");
        assert_eq!(placed["id"], "urn:annals:schema:event:OrderPlaced:1");
        assert_eq!(placed["href"], "/api/v1/schemas/events/OrderPlaced/1");
    }

    #[tokio::test]
    async fn a_schema_is_served_as_schema_json_and_an_unknown_one_is_a_404() {
        let response = get_event_schema(Path(("OrderConfirmed".to_owned(), "1".to_owned()))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/schema+json"
        );
        let schema = json_of(response).await;
        assert_eq!(schema["$id"], "urn:annals:schema:event:OrderConfirmed:1");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["required"], serde_json::json!(["total"]));

        for (event_type, version) in [
            ("OrderConfirmed", "99"),
            ("Nothing", "1"),
            ("OrderConfirmed", "v1"),
        ] {
            let response =
                get_event_schema(Path((event_type.to_owned(), version.to_owned()))).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            assert_eq!(
                json_of(response).await["type"],
                "urn:annals:problem:unknown-schema"
            );
        }
    }
}
