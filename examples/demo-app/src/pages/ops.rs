//! Operations: health, metrics, static files, the 404 page.

use http::StatusCode;
use http::header::{self, HeaderValue};
use minijinja::context;

use crate::app::{AppState, Handled};
use crate::reply::{Reply, text, with_type};

/// `GET /healthz`: `ok` when the session store answers within its timeout, else 503.
pub async fn healthz(app: &AppState) -> Reply {
    match app.engine.ping().await {
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(error) => {
            tracing::warn!(%error, "health check: session store unavailable");
            app.metrics.store_error();
            text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// The notes form's script: posts through the JSON API with the `X-XSRFToken` header.
pub const NOTES_JS: &str = include_str!("../../templates/notes.js");
/// The single-page client.
pub const APP_HTML: &str = include_str!("../../templates/app.html");
/// The single-page client's script.
pub const APP_JS: &str = include_str!("../../templates/app.js");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// `GET /static/notes.js`.
pub fn notes_js() -> Reply {
    with_type(StatusCode::OK, JAVASCRIPT, NOTES_JS.to_owned())
}

/// `GET /app`: the single-page client, a static page whose script lists and adds notes
/// through the JSON API, sending the `XSRF-TOKEN` cookie back as the `X-XSRF-TOKEN` header.
/// The framework's CSRF middleware must be told to hand the cookie out with this answer
/// (`ensure_spa_cookie`); it keeps it current from then on.
pub fn app_page() -> Reply {
    let mut res = with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        APP_HTML.to_owned(),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /static/app.js`.
pub fn app_js() -> Reply {
    with_type(StatusCode::OK, JAVASCRIPT, APP_JS.to_owned())
}

/// `GET /metrics`: the demo's counters and the library's metrics, Prometheus text format.
pub fn metrics(app: &AppState) -> Reply {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    with_type(StatusCode::OK, content_type, app.metrics.render())
}

/// Any other path: the 404 page.
pub fn not_found(app: &AppState) -> Handled {
    let ctx = context! {
        user => None::<String>,
        flashes => Vec::<String>::new(),
        csrf_field => "",
        csrf_token => "",
        title => "Not found",
        message => "There is no page here.",
    };
    app.render(StatusCode::NOT_FOUND, "error.html", ctx)
}
