//! What every response goes through: request counting, store-failure counting, security
//! headers.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::App;
use crate::error::StoreFailure;
use crate::metrics::RouteClass;

/// Counts requests by route class and store failures, and adds the security headers.
pub(super) async fn observe(State(app): App, req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    app.metrics.request(RouteClass::of(req.method(), matched));
    let mut res = next.run(req).await;
    if res.extensions().get::<StoreFailure>().is_some() {
        app.metrics.store_error();
    }
    set_security_headers(res.headers_mut());
    res
}

fn set_security_headers(headers: &mut HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (name, value) in defaults {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}
