//! Deprecated routes: how a route of `/api/v1` is retired without surprising its clients
//! (docs/API.md, "Evolution").
//!
//! A route to be retired gets one entry in [`DEPRECATED`], and from then on:
//!
//! - every answer it gives carries `Deprecation: @<unix seconds>` (RFC 9745), `Sunset:
//!   <HTTP-date>` (RFC 8594) and, when it has one, `Link: <successor>;
//!   rel="successor-version"`: a client sees the notice on every call, not only in a
//!   changelog;
//! - the OpenAPI document marks its operation `deprecated: true` ([`mark_document`]), so
//!   generated clients warn at compile time.
//!
//! The route keeps working unchanged until its sunset; it is removed only in the first
//! release after that date. The table is the one place a deprecation is written: the
//! headers and the document both come from it, and a test checks that every entry names
//! a route that exists.
//!
//! No route is deprecated yet, so [`crate::app`] adds no layer and an answer costs
//! nothing more.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};

/// One deprecated operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecated {
    /// Its method, upper case: `GET`, `POST`, ...
    pub method: &'static str,
    /// Its path template, as the OpenAPI document writes it: `/api/v1/orders/{order_id}`.
    pub path: &'static str,
    /// When it was deprecated (RFC 3339).
    pub since: &'static str,
    /// When it may be removed (RFC 3339); at least six months after `since`.
    pub sunset: &'static str,
    /// What to use instead: a path of this API or a URL of the docs.
    pub successor: Option<&'static str>,
}

/// The deprecated operations of this server. Empty: nothing of `/api/v1` is being
/// retired.
pub const DEPRECATED: &[Deprecated] = &[];

/// The shortest time between a deprecation and its sunset.
pub const MIN_NOTICE_DAYS: i64 = 183;

/// Why a table entry is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A date is not RFC 3339.
    #[error("{method} {path}: `{date}` is not an RFC 3339 date-time")]
    BadDate {
        /// The entry's method.
        method: &'static str,
        /// The entry's path.
        path: &'static str,
        /// The date as written.
        date: &'static str,
    },
    /// The sunset comes less than [`MIN_NOTICE_DAYS`] after the deprecation.
    #[error(
        "{method} {path}: the sunset must come at least {MIN_NOTICE_DAYS} days after the deprecation"
    )]
    NoticeTooShort {
        /// The entry's method.
        method: &'static str,
        /// The entry's path.
        path: &'static str,
    },
    /// The entry names no operation of the document.
    #[error("{method} {path} is not an operation of the OpenAPI document")]
    NoSuchRoute {
        /// The entry's method.
        method: &'static str,
        /// The entry's path.
        path: &'static str,
    },
}

/// The headers one deprecated operation answers with.
type Notice = Vec<(HeaderName, HeaderValue)>;

/// The notice of each deprecated operation, by (method, path template).
#[derive(Debug, Clone)]
struct Marks(Arc<HashMap<(Method, &'static str), Notice>>);

/// The `Deprecation`, `Sunset` and `Link` headers of `entry`.
pub fn headers(entry: &Deprecated) -> Result<Vec<(HeaderName, HeaderValue)>, TableError> {
    let since = parse(entry, entry.since)?;
    let sunset = parse(entry, entry.sunset)?;
    if sunset - since < chrono::Duration::days(MIN_NOTICE_DAYS) {
        return Err(TableError::NoticeTooShort {
            method: entry.method,
            path: entry.path,
        });
    }
    let value = |text: String| HeaderValue::try_from(text).expect("dates and paths are ASCII");
    let mut headers = vec![
        (
            HeaderName::from_static("deprecation"),
            value(format!("@{}", since.timestamp())),
        ),
        (
            HeaderName::from_static("sunset"),
            value(sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        ),
    ];
    if let Some(successor) = entry.successor {
        headers.push((
            header::LINK,
            value(format!("<{successor}>; rel=\"successor-version\"")),
        ));
    }
    Ok(headers)
}

fn parse(entry: &Deprecated, date: &'static str) -> Result<DateTime<Utc>, TableError> {
    DateTime::parse_from_rfc3339(date)
        .map(|date| date.with_timezone(&Utc))
        .map_err(|_| TableError::BadDate {
            method: entry.method,
            path: entry.path,
            date,
        })
}

/// Checks `table` against `document`: every date parses, every notice is long enough,
/// every entry names an operation of the document.
pub fn check(table: &[Deprecated], document: &utoipa::openapi::OpenApi) -> Result<(), TableError> {
    for entry in table {
        headers(entry)?;
        if operation(document, entry).is_none() {
            return Err(TableError::NoSuchRoute {
                method: entry.method,
                path: entry.path,
            });
        }
    }
    Ok(())
}

/// Marks every operation of `table` `deprecated: true` in `document`.
pub fn mark_document(document: &mut utoipa::openapi::OpenApi, table: &[Deprecated]) {
    for entry in table {
        if let Some(operation) = operation_mut(document, entry) {
            operation.deprecated = Some(utoipa::openapi::Deprecated::True);
        }
    }
}

/// `router` answering every operation of `table` with its deprecation headers. A table
/// entry that does not parse panics at start-up (the table is code, and a test parses
/// it); an empty table returns `router` unchanged.
pub fn apply<S>(router: Router<S>, table: &'static [Deprecated]) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    if table.is_empty() {
        return router;
    }
    let marks = table
        .iter()
        .map(|entry| {
            let method = Method::from_bytes(entry.method.as_bytes())
                .unwrap_or_else(|_| panic!("{}: not an HTTP method", entry.method));
            let headers = headers(entry).unwrap_or_else(|error| panic!("{error}"));
            ((method, entry.path), headers)
        })
        .collect();
    router.route_layer(axum::middleware::from_fn_with_state(
        Marks(Arc::new(marks)),
        mark,
    ))
}

/// Adds the deprecation headers to the answer of a deprecated operation.
async fn mark(State(marks): State<Marks>, request: Request, next: Next) -> Response {
    let headers = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| marks.0.get(&(request.method().clone(), path.as_str())))
        .cloned();
    let mut response = next.run(request).await;
    for (name, value) in headers.into_iter().flatten() {
        response.headers_mut().insert(name, value);
    }
    response
}

fn operation<'d>(
    document: &'d utoipa::openapi::OpenApi,
    entry: &Deprecated,
) -> Option<&'d utoipa::openapi::path::Operation> {
    let item = document.paths.paths.get(entry.path)?;
    match entry.method {
        "GET" => item.get.as_ref(),
        "POST" => item.post.as_ref(),
        "PUT" => item.put.as_ref(),
        "PATCH" => item.patch.as_ref(),
        "DELETE" => item.delete.as_ref(),
        "HEAD" => item.head.as_ref(),
        "OPTIONS" => item.options.as_ref(),
        _ => None,
    }
}

fn operation_mut<'d>(
    document: &'d mut utoipa::openapi::OpenApi,
    entry: &Deprecated,
) -> Option<&'d mut utoipa::openapi::path::Operation> {
    let item = document.paths.paths.get_mut(entry.path)?;
    match entry.method {
        "GET" => item.get.as_mut(),
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        "PATCH" => item.patch.as_mut(),
        "DELETE" => item.delete.as_mut(),
        "HEAD" => item.head.as_mut(),
        "OPTIONS" => item.options.as_mut(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: Deprecated = Deprecated {
        method: "GET",
        path: "/api/v1/orders/{order_id}",
        since: "2026-12-01T00:00:00Z",
        sunset: "2027-06-30T00:00:00Z",
        successor: Some("/api/v2/orders/{order_id}"),
    };

    #[test]
    fn the_shipped_table_is_valid() {
        check(DEPRECATED, &crate::openapi()).unwrap();
    }

    #[test]
    fn headers_follow_the_rfcs() {
        let headers = headers(&ORDERS).unwrap();
        let text: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            text,
            [
                ("deprecation".to_owned(), "@1796083200".to_owned()),
                (
                    "sunset".to_owned(),
                    "Wed, 30 Jun 2027 00:00:00 GMT".to_owned()
                ),
                (
                    "link".to_owned(),
                    "</api/v2/orders/{order_id}>; rel=\"successor-version\"".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        let document = crate::openapi();
        check(&[ORDERS], &document).unwrap();
        let short = Deprecated {
            sunset: "2027-01-01T00:00:00Z",
            ..ORDERS
        };
        assert!(matches!(
            check(&[short], &document),
            Err(TableError::NoticeTooShort { .. })
        ));
        let undated = Deprecated {
            since: "1 December",
            ..ORDERS
        };
        assert!(matches!(
            check(&[undated], &document),
            Err(TableError::BadDate { .. })
        ));
        let unknown = Deprecated {
            path: "/api/v1/nothing",
            ..ORDERS
        };
        assert!(matches!(
            check(&[unknown], &document),
            Err(TableError::NoSuchRoute { .. })
        ));
        let wrong_method = Deprecated {
            method: "DELETE",
            ..ORDERS
        };
        assert!(matches!(
            check(&[wrong_method], &document),
            Err(TableError::NoSuchRoute { .. })
        ));
    }

    #[test]
    fn the_document_marks_exactly_the_table() {
        let mut document = crate::openapi();
        mark_document(&mut document, &[ORDERS]);
        let json = serde_json::to_value(&document).unwrap();
        let mut marked = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation.get("deprecated") == Some(&serde_json::Value::Bool(true)) {
                    marked.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        assert_eq!(marked, ["GET /api/v1/orders/{order_id}"]);
    }
}
