//! The `console` routes: the web console's three files (`services/api/console/`), embedded
//! in the binary, and `/` redirecting to it.
//!
//! The files hold no data: every request the console makes to the API carries the user's
//! own token (kept in the browser's session storage), so the files are public and pass no
//! intent lane. Each answer forbids everything but the server's own origin
//! ([`CONTENT_SECURITY_POLICY`]) and content sniffing: the console loads no script,
//! style, font or image from anywhere else, and no inline script runs.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::responses::UnknownAsset;

/// The policy of every console answer: scripts, styles and requests from this origin
/// only; images from it or `data:` (none are used so far); nothing else, no framing, no
/// `<base>`, forms posting to this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../console/index.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// The console's page (sign-in, then every view, by the URL's `#` part).
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    responses((status = 200, description = "The console's page", content_type = "text/html; charset=utf-8", body = String))
)]
pub(crate) async fn console_page() -> Response {
    file(INDEX_HTML, "text/html; charset=utf-8")
}

/// One of the console's files: `console.js` or `console.css`.
#[utoipa::path(
    get,
    path = "/console/{asset}",
    tag = "console",
    params(("asset" = String, Path, description = "`console.js` or `console.css`")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript; charset=utf-8", body = String),
        UnknownAsset,
    )
)]
pub(crate) async fn console_asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "console.js" => file(CONSOLE_JS, "text/javascript; charset=utf-8"),
        "console.css" => file(CONSOLE_CSS, "text/css; charset=utf-8"),
        _ => ApiError::not_found(
            "unknown-asset",
            "the console has console.js and console.css, nothing else",
        )
        .into_response(),
    }
}

/// The root: a 307 to `/console`.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses((status = 307, description = "To the console", headers(("Location" = String, description = "`/console`"))))
)]
pub(crate) async fn root() -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/console"))],
    )
        .into_response()
}

/// `body` as `content_type`, with the console's security headers. The files change only
/// with the binary; `no-cache` makes a browser ask again (cheap) so that an upgraded
/// server is not shown with an old script.
fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
