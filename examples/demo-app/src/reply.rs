//! [`Reply`]: a framework-free response (`http::Response<String>`), and the few shapes the
//! demo answers with. Each has exactly the headers axum's own `Html`, `Json`, `Redirect` and
//! `&str` responses have, so the two demos answer alike, header for header.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

/// A response, before a framework sends it.
pub type Reply = Response<String>;

/// A body of `content_type`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// Plain text (`text/plain; charset=utf-8`).
pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// An HTML page, `Cache-Control: no-store` (pages are per user).
pub fn html(status: StatusCode, body: String) -> Reply {
    private(with_type(status, "text/html; charset=utf-8", body))
}

/// JSON, `Cache-Control: no-store` (API answers are per user).
pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_string(value) {
        Ok(body) => private(with_type(status, "application/json", body)),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a JSON answer");
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `{"error": "..."}`.
pub fn json_error(status: StatusCode, error: &str) -> Reply {
    json(status, &serde_json::json!({ "error": error }))
}

/// `303 See Other` to `location`.
pub fn redirect(location: &'static str) -> Reply {
    let mut res = Response::new(String::new());
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    res
}

/// `303 See Other` to `location`, a local path built at run time (a `next` parameter
/// checked with [`local_path`](cloakroom_core::recent_login::local_path)); `/` if it is not
/// a valid header value.
pub fn redirect_to(location: &str) -> Reply {
    let mut res = redirect("/");
    if let Ok(value) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, value);
    }
    res
}

/// `Cache-Control: no-store`.
fn private(mut res: Reply) -> Reply {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
