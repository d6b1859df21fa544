//! What a refused request gets: its [`ResponseFormat`] and, with the `http` feature, the
//! [`OnRejection`] hook every adapter takes, the default 403, and the answers for form bodies
//! that could not be read.

use super::RequestHeaders;
#[cfg(feature = "http")]
use super::{BodyError, ProtectionError, Reason};

#[cfg(feature = "http")]
use http::header::{CONTENT_TYPE, HeaderValue};
#[cfg(feature = "http")]
use http::{Response, StatusCode};

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
    pub fn of<H: RequestHeaders + ?Sized>(headers: &H) -> Self {
        let accept = headers.header("accept").unwrap_or("");
        let content_type = headers.header("content-type").unwrap_or("");
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
#[cfg(feature = "http")]
pub trait OnRejection: Send + Sync + 'static {
    /// The response for `error`, in `format`.
    fn on_rejection(&self, error: &ProtectionError, format: ResponseFormat) -> Response<String>;
}

#[cfg(feature = "http")]
impl<F> OnRejection for F
where
    F: Fn(&ProtectionError, ResponseFormat) -> Response<String> + Send + Sync + 'static,
{
    fn on_rejection(&self, error: &ProtectionError, format: ResponseFormat) -> Response<String> {
        self(error, format)
    }
}

/// The default 403: JSON `{"error":"csrf","reason":...}`, or a small HTML page.
#[cfg(feature = "http")]
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

/// The response for a request refused for `reason`: logged (with its path), counted (feature
/// `metrics`), built by `hook`, with the [`ProtectionError`] in its extensions so outer layers can read it.
#[cfg(feature = "http")]
pub fn rejection_response(
    hook: &dyn OnRejection,
    reason: Reason,
    format: ResponseFormat,
    path: &str,
) -> Response<String> {
    tracing::warn!(reason = reason.as_str(), %path, "CSRF check refused request");
    crate::telemetry::csrf_refused(reason);
    let error = ProtectionError::new(reason);
    let mut res = hook.on_rejection(&error, format);
    res.extensions_mut().insert(error);
    res
}

/// The answer for a form body that could not be searched for the token: `413` when over the
/// limit, `400` when unreadable; plain text.
#[cfg(feature = "http")]
pub fn body_error_response(error: BodyError) -> Response<String> {
    let (code, text) = match error {
        BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        BodyError::Unreadable => (StatusCode::BAD_REQUEST, "could not read request body"),
    };
    let mut res = Response::new(format!("{text}\n"));
    *res.status_mut() = code;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
