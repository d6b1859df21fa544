//! What a refused request gets: the [`OnRejection`] hook, its [`ResponseFormat`], and the
//! default 403.

use cloakroom_core::csrf::ProtectionError;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

/// The form a client asked its answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseFormat {
    /// A page (the default).
    Html,
    /// JSON: the request's `Accept` asks for it, or it sent JSON and did not ask for HTML.
    Json,
}

impl ResponseFormat {
    /// The format a request with these headers should be answered in.
    pub fn of(headers: &HeaderMap) -> Self {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or("")
        };
        let (accept, content_type) = (header(ACCEPT), header(CONTENT_TYPE));
        if accept.contains("application/json")
            || (!accept.contains("text/html") && content_type.starts_with("application/json"))
        {
            ResponseFormat::Json
        } else {
            ResponseFormat::Html
        }
    }
}

/// Builds the response for a request the CSRF check refused. Implemented by every
/// `Fn(&ProtectionError, ResponseFormat) -> Response<String>` closure.
pub trait OnRejection: Send + Sync + 'static {
    /// The response for `error`, in `format`.
    fn on_rejection(&self, error: &ProtectionError, format: ResponseFormat) -> Response<String>;
}

impl<F> OnRejection for F
where
    F: Fn(&ProtectionError, ResponseFormat) -> Response<String> + Send + Sync + 'static,
{
    fn on_rejection(&self, error: &ProtectionError, format: ResponseFormat) -> Response<String> {
        self(error, format)
    }
}

/// The default 403: JSON `{"error":"csrf","reason":...}`, or a small HTML page.
pub fn default_rejection(error: &ProtectionError, format: ResponseFormat) -> Response<String> {
    let reason = error.kind().as_str();
    let (body, content_type) = match format {
        ResponseFormat::Json => (
            format!("{{\"error\":\"csrf\",\"reason\":\"{reason}\"}}"),
            "application/json",
        ),
        ResponseFormat::Html => (
            format!(
                "<!doctype html><html><head><title>403 Forbidden</title></head><body>\
                 <h1>403 Forbidden</h1><p>CSRF check failed: {reason}.</p></body></html>\n"
            ),
            "text/html; charset=utf-8",
        ),
    };
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A plain-text answer (413 and 400 for unreadable form bodies).
pub(super) fn plain(code: StatusCode, text: &str) -> Response<String> {
    let mut res = Response::new(format!("{text}\n"));
    *res.status_mut() = code;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
