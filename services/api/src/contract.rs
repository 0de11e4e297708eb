//! What the OpenAPI document states beyond the handlers' annotations, so that it states
//! exactly what the server enforces (a property-based client, schemathesis, checks the
//! two against each other in `tests/schemathesis.rs`):
//!
//! - every parameter's constraints, stated once by its name from the constants the
//!   extractors check ([`crate::extract::patterns`], [`crate::extract::MAX_POSITION`], the
//!   page bounds): ids and their patterns, `limit` of 1 to the page bound, positions as
//!   `int64`, the `If-Match`, `Idempotency-Key`, `Last-Event-ID` and
//!   `Annals-Min-Position` headers;
//! - the bearer token: a security scheme, each route's requirement (optional on the
//!   public routes, where a bad token is still a 401) and the gate's refusals (401 with
//!   `WWW-Authenticate`, 403, 429 with `Retry-After`) on every route;
//! - the live log as an event stream: the schema of one Server-Sent Event, its `data`
//!   an [`crate::events::EventView`] (or a problem in an `error` event), which the
//!   served JSON completes with `contentSchema` ([`content_schemas`]: utoipa has no such
//!   keyword).
//!
//! The annotations keep what is local to one body (`minimum`, `pattern`, `minItems` on
//! the request structs); this module what is shared by name across routes.

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Responses, Schema,
};

use crate::extract::{MAX_ID_BYTES, MAX_STREAM_ID_BYTES, patterns};

/// The name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// The path of the live log, described as an event stream.
const LIVE_LOG: &str = "/api/v1/log/live";

/// Completes `document` (see the module documentation); `max_page` is the largest
/// `limit` of a page of events ([`crate::ApiConfig::max_page_events`]).
pub(crate) fn complete(document: &mut OpenApi, max_page: usize) {
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (HS256 or a key of the configured JWKS) with the claims `sub`, \
                         `roles` and, for a customer, `customer_id`; a server started with \
                         `--insecure-no-auth` takes none.",
                    ))
                    .build(),
            ),
        );
    let public: Vec<(&str, &str)> = crate::gate::route_actions()
        .filter(|(_, _, _, public)| *public)
        .map(|(method, path, _, _)| (method, path))
        .collect();
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let is_public = public.contains(&(method, path.as_str()));
            secure(operation, is_public);
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    constrain(path, parameter, max_page);
                }
            }
            if path == LIVE_LOG {
                event_stream(&mut operation.responses);
            }
        }
    }
}

/// The token requirement of one operation and the gate's refusals.
fn secure(operation: &mut Operation, public: bool) {
    let mut requirements = vec![SecurityRequirement::new(BEARER, Vec::<String>::new())];
    if public {
        // Answered without a token; a token sent is still verified.
        requirements.insert(0, SecurityRequirement::default());
    }
    operation.security = Some(requirements);
    let challenge = HeaderBuilder::new()
        .schema(Some(string().pattern(Some("^Bearer "))))
        .description(Some("The challenge (RFC 6750): `Bearer realm=\"annals\"`, with `error=\"invalid_token\"` for a bad token."))
        .build();
    problem_response(
        &mut operation.responses,
        "401",
        "No token, or a bad one (`unauthenticated`): missing, malformed, expired, \
         of another issuer or audience, or with a bad signature.",
        Some(("WWW-Authenticate", challenge)),
    );
    problem_response(
        &mut operation.responses,
        "403",
        "The policy denies the route's action to the caller (`forbidden`; the `action` \
         member names it).",
        None,
    );
    let retry_after = retry_after("Seconds until the caller's bucket has a token again.");
    problem_response(
        &mut operation.responses,
        "429",
        "Over the caller's rate limit (`rate-limited`).",
        Some(("Retry-After", retry_after)),
    );
}

/// A `Retry-After` header of whole seconds, at least 1, described as `description`.
pub(crate) fn retry_after(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        ))
        .description(Some(description))
        .build()
}

/// Adds the problem response `status` with `description` (and a header), or appends
/// the description to the one the handler declares. A shared response (a `$ref`) is
/// left as it is.
pub(crate) fn problem_response(
    responses: &mut Responses,
    status: &str,
    description: &str,
    header: Option<(&str, utoipa::openapi::Header)>,
) {
    let entry = responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        });
    let RefOr::T(response) = entry else { return };
    if response.description.is_empty() {
        response.description = description.to_owned();
    } else if !response.description.contains(description) {
        response.description = format!("{} Or: {description}", response.description);
    }
    if let Some((name, header)) = header {
        response.headers.insert(name.to_owned(), RefOr::T(header));
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn patterned(pattern: &str) -> ObjectBuilder {
    string().pattern(Some(pattern))
}

/// A log position or stream version: `int64`, not negative.
fn position() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
}

/// The schema of `parameter` of `path`, by its name: what its extractor checks, with an
/// example a client can send as it is.
fn constrain(path: &str, parameter: &mut Parameter, max_page: usize) {
    use serde_json::json;
    let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
        (ParameterIn::Path, "sku") => patterned(patterns::ENTITY_ID)
            .min_length(Some(1))
            .max_length(Some(MAX_ID_BYTES))
            .examples([json!("apple")]),
        (ParameterIn::Path, "customer_id") => patterned(patterns::ENTITY_ID)
            .min_length(Some(1))
            .max_length(Some(MAX_ID_BYTES))
            .examples([json!("alice")]),
        (ParameterIn::Path, "order_id" | "correlation_id") => patterned(patterns::UUID)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .examples([json!("0193a8f2-5c4e-7b21-9d3a-6f1e2c3b4a59")]),
        (ParameterIn::Path, "event_id") => patterned(patterns::UUID_V7)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .examples([json!("0193a8f2-5c4e-7b21-9d3a-6f1e2c3b4a59")]),
        (ParameterIn::Path, "stream_id") => patterned(patterns::STREAM_ID)
            .min_length(Some(1))
            .max_length(Some(MAX_STREAM_ID_BYTES))
            .examples([json!("stock-apple")]),
        (ParameterIn::Query, "limit") => {
            let max = if path == "/api/v1/sagas/fulfilment" {
                crate::routes::orders::MAX_SAGA_PAGE
            } else {
                max_page
            };
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(max))
                .examples([json!(10)])
        }
        (ParameterIn::Query, "from" | "version" | "min_position") => {
            position().examples([json!(0)])
        }
        (ParameterIn::Query, "after") => match path {
            "/api/v1/streams" => patterned(patterns::STREAM_ID).examples([json!("order-")]),
            "/api/v1/customers/{customer_id}/orders" => {
                patterned(patterns::WHOLE_NUMBER).examples([json!("0")])
            }
            "/api/v1/sagas/fulfilment" => patterned(patterns::SAGA_AFTER).examples([json!("")]),
            // The read models keyed by sku: empty (the first page) or a sku.
            _ => patterned(patterns::ENTITY_ID_OR_EMPTY).examples([json!("apple")]),
        },
        (ParameterIn::Query, "phase") => string()
            .enum_values(Some(
                sagas::fulfilment::Phase::ALL.map(sagas::fulfilment::Phase::name),
            ))
            .examples([json!("confirmed")]),
        (ParameterIn::Header, "If-Match") => {
            patterned(patterns::IF_MATCH).examples([json!("\"0\"")])
        }
        (ParameterIn::Header, "Idempotency-Key") => patterned(patterns::IDEMPOTENCY_KEY)
            .examples([json!("0193a8f2-5c4e-7b21-9d3a-6f1e2c3b4a59")]),
        (ParameterIn::Header, "Last-Event-ID" | "Annals-Min-Position") => {
            position().examples([json!(0)])
        }
        _ => return,
    };
    parameter.schema = Some(RefOr::T(Schema::Object(schema.build())));
}

/// The 200 of the live log: one Server-Sent Event per item. Open API 3.1 has no keyword
/// for the items of a stream (3.2's `itemSchema`), so `schema` describes one event, as
/// tools for 3.1 (schemathesis) read it.
fn event_stream(responses: &mut Responses) {
    let Some(RefOr::T(response)) = responses.responses.get_mut("200") else {
        return;
    };
    let message = ObjectBuilder::new()
        .description(Some(
            "An event of the log: `id` is its position, `data` the event as JSON (an \
             EventView); the `event` field is absent (a `message`).",
        ))
        .property("id", patterned(patterns::WHOLE_NUMBER))
        .property("event", string().enum_values(Some(["message"])))
        .property(
            "data",
            string()
                .content_media_type("application/json")
                .description(Some("The event as JSON: an EventView (`contentSchema`)")),
        )
        .required("id")
        .required("data");
    let error = ObjectBuilder::new()
        .description(Some(
            "The end of the stream: a problem (application/problem+json) as `data`, e.g. \
             `store-failed` when the store's writer failed.",
        ))
        .property("event", string().enum_values(Some(["error"])))
        .property(
            "data",
            string()
                .content_media_type("application/json")
                .description(Some("The problem as JSON (`contentSchema`)")),
        )
        .required("event")
        .required("data");
    let event = OneOfBuilder::new()
        .description(Some(
            "One Server-Sent Event (text/event-stream): the log's events from `from` (or \
             after `Last-Event-ID`) as they become durable, each with its position as \
             `id`; comments keep the connection alive; an `error` event ends the stream.",
        ))
        .item(message)
        .item(error);
    response.content.insert(
        "text/event-stream".to_owned(),
        RefOr::T(ContentBuilder::new().schema(Some(event)).build()),
    );
}

/// The `contentSchema` of the live log's `data` fields, added to the served JSON (see
/// [`event_stream`]): the message's is an EventView, the error's a problem.
pub(crate) fn content_schemas(document: &mut serde_json::Value) {
    let Some(one_of) = document
        .pointer_mut(&format!(
            "/paths/{}/get/responses/200/content/text~1event-stream/schema/oneOf",
            LIVE_LOG.replace('/', "~1")
        ))
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for (item, schema) in one_of.iter_mut().zip(["EventView", "Problem"]) {
        if let Some(data) = item.pointer_mut("/properties/data") {
            data["contentSchema"] =
                serde_json::json!({ "$ref": format!("#/components/schemas/{schema}") });
        }
    }
}
