//! Extractors that check what a request carries before a handler sees it: a JSON body
//! with the right content type, size and shape; ids in the path; query parameters; the
//! `If-Match` and `Idempotency-Key` headers. Each refuses bad input with a 4xx
//! [`ApiError`] (problem+json), never a panic or a 500.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use eventstore::Version;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::AppState;
use crate::problem::ApiError;

/// The longest sku or customer id: they are path segments and stream id suffixes.
pub(crate) const MAX_ID_BYTES: usize = 64;

/// The longest `Idempotency-Key`.
pub(crate) const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The largest log position or stream version a request may name: the largest `int64`,
/// the bound the OpenAPI document's `format: int64` states. The log will not reach it.
pub(crate) const MAX_POSITION: u64 = i64::MAX as u64;

/// The longest stream id a path or query names (the store's own bound).
pub(crate) const MAX_STREAM_ID_BYTES: usize = 256;

/// The patterns the OpenAPI document states ([`crate::contract`]); each is checked by
/// the function named beside it, and the two must accept the same strings.
pub(crate) mod patterns {
    /// A sku or customer id ([`super::check_entity_id`]).
    pub(crate) const ENTITY_ID: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
    /// The `after` of a read model keyed by sku: empty (the first page) or a sku
    /// (`check_after` of `routes::read_models`).
    pub(crate) const ENTITY_ID_OR_EMPTY: &str = "^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$";
    /// The `after` of the saga list: what follows `saga-fulfilment-` in a stream id
    /// ([`super::check_stream_id`] of the whole id, 16 characters of prefix and these).
    pub(crate) const SAGA_AFTER: &str = "^[!-~]{0,240}$";
    /// A UUID, hyphenated, either case ([`super::parse_uuid`]).
    pub(crate) const UUID: &str =
        "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";
    /// A UUID v7, hyphenated, either case: an event id ([`super::EventIdPath`]).
    pub(crate) const UUID_V7: &str =
        "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-7[0-9A-Fa-f]{3}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";
    /// A stream id as requests name it: 1 to 256 visible ASCII characters
    /// ([`super::check_stream_id`]).
    pub(crate) const STREAM_ID: &str = "^[!-~]{1,256}$";
    /// `If-Match`: one strong ETag of a version, or the version without its quotes
    /// ([`super::if_match`]).
    pub(crate) const IF_MATCH: &str = "^(\"[0-9]{1,19}\"|[0-9]{1,19})$";
    /// `Idempotency-Key`: 1 to 255 visible ASCII characters, or those in double quotes
    /// ([`super::idempotency_key`]). A value both starting and ending with `"` is the
    /// quoted form, so `""` is an empty key.
    pub(crate) const IDEMPOTENCY_KEY: &str =
        "^(\"[!-~]{1,255}\"|[!-~]|[!#-~][!-~]{0,254}|[!-~]{0,254}[!#-~])$";
    /// A whole number as a query or header carries it, without sign or spaces
    /// ([`super::parse_whole_number`]).
    pub(crate) const WHOLE_NUMBER: &str = "^[0-9]{1,19}$";
}

/// A JSON request body, decoded into `T`. `T` should deny unknown fields.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        check_json_content_type(request.headers())?;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_rejection(rejection, state.config().max_body_bytes))?;
        // serde accepts a struct written as an array (`[5]` for `{"quantity": 5}`); an
        // API that documents objects takes only objects.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(_) => ApiError::bad_request("invalid-body", "the body must be a JSON object"),
                Err(error) => json_error(&error),
            });
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|error| json_error(&error))?;
        check_numbers(&mut value)?;
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|error| json_error(&error))
    }
}

/// Reads the numbers of a body as JSON Schema does, and as the document states them:
/// a number without a fraction is an integer (`5.0` is `5`, as the `integer` type
/// allows), and a whole number above [`MAX_POSITION`] is refused (every integer of a
/// body is `format: int64`; sums of such amounts and quantities stay far from the `u64`
/// counters' limits). A fraction is left for the field's type to refuse.
fn check_numbers(value: &mut serde_json::Value) -> Result<(), ApiError> {
    use serde_json::Value;
    let too_large = |text: String| {
        ApiError::bad_request(
            "invalid-body",
            format!("invalid body: {text} is above {MAX_POSITION}, the largest int64"),
        )
    };
    match value {
        Value::Number(number) => {
            if let Some(whole) = number.as_u64() {
                return if whole > MAX_POSITION {
                    Err(too_large(number.to_string()))
                } else {
                    Ok(())
                };
            }
            if let Some(float) = number.as_f64().filter(|float| float.fract() == 0.0) {
                // Exact: a float without a fraction inside the range of i64 is a whole
                // number (2^63 itself is not in it).
                if float >= 9_223_372_036_854_775_808.0 {
                    return Err(too_large(number.to_string()));
                }
                if float >= i64::MIN as f64 {
                    *value = Value::from(float as i64);
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(check_numbers),
        Value::Object(members) => members.values_mut().try_for_each(check_numbers),
        _ => Ok(()),
    }
}

/// `application/json` or any `application/<something>+json`, parameters allowed.
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let unsupported = |detail: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "the body must be JSON: send Content-Type: application/json".into(),
        ));
    };
    let media_type = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(unsupported(format!(
            "the body must be JSON (application/json), not {:?}",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

fn body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Payload too large",
            format!("the body is over the limit of {limit} bytes"),
        )
    } else {
        ApiError::bad_request("unreadable-body", rejection.body_text())
    }
}

/// A body that is not JSON is malformed; JSON of the wrong shape (types, missing or
/// unknown fields) is invalid. Both are 400s: the request cannot be understood.
pub(crate) fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::bad_request("invalid-body", format!("invalid body: {error}")),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("malformed-json", format!("malformed JSON: {error}"))
        }
    }
}

/// Query parameters decoded into `T` (which should deny unknown fields); a bad query is
/// a 400 problem.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::bad_request("invalid-query", rejection.body_text())
            })
    }
}

async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(segment)| segment)
        .map_err(|rejection: PathRejection| {
            ApiError::bad_request("invalid-path", rejection.body_text())
        })
}

/// Checks a sku or customer id: 1 to 64 ASCII letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit. Such ids are safe in paths, stream ids and logs.
pub(crate) fn check_entity_id(what: &'static str, id: &str) -> Result<(), ApiError> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_ID_BYTES {
        Some("it is longer than 64 bytes")
    } else if !id.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ApiError::bad_request(
            "invalid-id",
            format!(
                "invalid {what} {:?}: {reason}",
                id.chars().take(MAX_ID_BYTES).collect::<String>()
            ),
        )),
    }
}

/// The `{sku}` of a path, checked.
#[derive(Debug)]
pub(crate) struct SkuPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SkuPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let sku = path_segment(parts, state).await?;
        check_entity_id("sku", &sku)?;
        Ok(SkuPath(sku))
    }
}

/// The `{customer_id}` of a path, checked.
#[derive(Debug)]
pub(crate) struct CustomerPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CustomerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let customer = path_segment(parts, state).await?;
        check_entity_id("customer id", &customer)?;
        Ok(CustomerPath(customer))
    }
}

/// A UUID in its hyphenated form (36 characters, either case): the one form the
/// document states ([`patterns::UUID`]); the braced, URN and simple forms are refused.
pub(crate) fn parse_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// A whole number of 1 to 19 ASCII digits (no sign, no spaces: what
/// [`patterns::WHOLE_NUMBER`] states); `u64::from_str` alone would also take `+7`.
pub(crate) fn parse_whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The log position a request header names (`Last-Event-ID`, `Annals-Min-Position`):
/// absent, or a whole number of at most [`MAX_POSITION`] (surrounding spaces allowed);
/// anything else is a 400 `invalid-header` naming `label`.
pub(crate) fn position_header(
    headers: &HeaderMap,
    name: &str,
    label: &str,
) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| parse_whole_number(text.trim()))
        .filter(|position| *position <= MAX_POSITION)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid-header",
                format!(
                    "{label} must be a log position (a whole number of at most {MAX_POSITION})"
                ),
            )
        })
}

/// Checks a log position or stream version a request names (`from`, `version`,
/// `min_position`, `Last-Event-ID`): at most [`MAX_POSITION`], the maximum of the
/// document's `format: int64`.
pub(crate) fn check_position(what: &str, value: u64) -> Result<u64, ApiError> {
    if value <= MAX_POSITION {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "invalid-query",
            format!("{what} must be at most {MAX_POSITION}, not {value}"),
        ))
    }
}

/// Checks a stream id a request names (a path or `after`): 1 to 256 visible ASCII
/// characters ([`patterns::STREAM_ID`]), then the store's own rules. The store takes more
/// (spaces inside, any script), but no stream of Annals is named so, and the document
/// states what the server takes.
pub(crate) fn check_stream_id(what: &str, text: &str) -> Result<eventstore::StreamId, ApiError> {
    let visible = !text.is_empty()
        && text.len() <= MAX_STREAM_ID_BYTES
        && text.bytes().all(|b| b.is_ascii_graphic());
    if !visible {
        return Err(ApiError::bad_request(
            "invalid-stream-id",
            format!(
                "invalid {what} {:?}: a stream id is 1 to 256 visible ASCII characters",
                text.chars().take(64).collect::<String>()
            ),
        ));
    }
    eventstore::StreamId::new(text).map_err(ApiError::from)
}

/// The `{order_id}` of a path: a UUID, in its canonical lower-case hyphenated form.
#[derive(Debug)]
pub(crate) struct OrderPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OrderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_segment(parts, state).await?;
        match parse_uuid(&text) {
            Some(id) => Ok(OrderPath(id.hyphenated().to_string())),
            None => Err(ApiError::bad_request(
                "invalid-id",
                format!(
                    "invalid order id {:?}: order ids are UUIDs",
                    text.chars().take(MAX_ID_BYTES).collect::<String>()
                ),
            )),
        }
    }
}

/// The `{stream_id}` of a path, validated as a stream id.
#[derive(Debug)]
pub(crate) struct StreamPath(pub eventstore::StreamId);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_segment(parts, state).await?;
        check_stream_id("stream id", &text).map(StreamPath)
    }
}

/// The `{event_id}` of a path: a UUID v7.
#[derive(Debug)]
pub(crate) struct EventIdPath(pub eventstore::EventId);

impl<S: Send + Sync> FromRequestParts<S> for EventIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_segment(parts, state).await?;
        parse_uuid(&text)
            .and_then(|id| eventstore::EventId::from_uuid(id).ok())
            .map(EventIdPath)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-event-id",
                    format!(
                        "invalid event id {:?}: event ids are UUID v7",
                        text.chars().take(64).collect::<String>()
                    ),
                )
            })
    }
}

/// The one value of a header, as visible ASCII; `None` when absent.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid-header",
            format!("send one {name} header, not several"),
        ));
    }
    value.to_str().map(|text| Some(text.trim())).map_err(|_| {
        ApiError::bad_request(
            "invalid-header",
            format!("the {name} header must be visible ASCII"),
        )
    })
}

/// The version of `If-Match: "<version>"` (RFC 9110's form) or `If-Match: <version>`
/// (without the quotes, which clients and tools drop), the forms a command accepts.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Version>, ApiError> {
    let Some(text) = single_header(headers, &header::IF_MATCH)? else {
        return Ok(None);
    };
    let version = parse_etag(text).or_else(|| parse_whole_number(text).map(Version));
    version.map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-if-match",
            format!(
                "If-Match must be one strong ETag of a version, like \"3\"; got {:?}",
                text.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// The versions listed in `If-None-Match` (`*` matches any), for conditional reads.
pub(crate) fn if_none_match(headers: &HeaderMap, current: Version) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || parse_etag(tag.trim_start_matches("W/")) == Some(current))
}

/// `"<digits>"` (1 to 19 of them) -> the version.
fn parse_etag(text: &str) -> Option<Version> {
    let digits = text.strip_prefix('"')?.strip_suffix('"')?;
    parse_whole_number(digits).map(Version)
}

/// The ETag of a version: `"<version>"`.
pub(crate) fn etag(version: Version) -> String {
    format!("\"{}\"", version.0)
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, optionally in
/// double quotes (the structured-field string form of the IETF draft).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let name = HeaderName::from_static("idempotency-key");
    let Some(text) = single_header(headers, &name)? else {
        return Ok(None);
    };
    let key = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    let valid = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(Some(key.to_owned()))
    } else {
        Err(ApiError::bad_request(
            "invalid-idempotency-key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good key)",
        ))
    }
}

/// The W3C `traceparent` header, carried into the events' metadata when well formed.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<String> {
    let text = headers.get("traceparent")?.to_str().ok()?.trim();
    trace_context::span_context(text).map(|_| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_versions() {
        assert_eq!(parse_etag("\"12\""), Some(Version(12)));
        assert_eq!(parse_etag("12"), None);
        assert_eq!(parse_etag("\"\""), None);
        assert_eq!(parse_etag("\"-1\""), None);
        assert_eq!(parse_etag("\"99999999999999999999999\""), None);
        assert_eq!(etag(Version(7)), "\"7\"");
    }

    #[test]
    fn entity_ids() {
        assert!(check_entity_id("sku", "apple-1.b_2").is_ok());
        assert!(check_entity_id("sku", "").is_err());
        assert!(check_entity_id("sku", "-a").is_err());
        assert!(check_entity_id("sku", "a b").is_err());
        assert!(check_entity_id("sku", "ä").is_err());
        assert!(check_entity_id("sku", &"a".repeat(65)).is_err());
        assert!(check_entity_id("sku", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn if_none_match_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, "\"1\", W/\"3\"".parse().unwrap());
        assert!(if_none_match(&headers, Version(3)));
        assert!(!if_none_match(&headers, Version(2)));
    }
}
