//! Operations: health, metrics, static files, the 404 page.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cloakroom::tower::CsrfToken;
use minijinja::context;

use super::{App, Handled};

pub(super) async fn healthz(State(app): App) -> Response {
    let limit = app.engine.config().store_timeout;
    match tokio::time::timeout(limit, app.engine.store().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        failure => {
            let error = match failure {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {limit:?}"),
            };
            tracing::warn!(%error, "health check: session store unavailable");
            app.metrics.store_error();
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// The notes form's script: posts through the JSON API with the `X-XSRFToken` header.
pub(super) async fn notes_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/notes.js"),
    )
        .into_response()
}

/// The single-page client: a static page whose script lists and adds notes through the
/// JSON API, sending the `XSRF-TOKEN` cookie back as the `X-XSRF-TOKEN` header. This answer
/// hands the cookie out; the CSRF layer keeps it current from then on.
pub(super) async fn app_page(csrf: CsrfToken) -> Response {
    csrf.ensure_spa_cookie();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("../../templates/app.html"),
    )
        .into_response()
}

/// The single-page client's script.
pub(super) async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/app.js"),
    )
        .into_response()
}

pub(super) async fn metrics(State(app): App) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], app.metrics.render()).into_response()
}

pub(super) async fn not_found(State(app): App) -> Handled {
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
