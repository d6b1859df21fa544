//! Session errors as HTTP responses (feature `http`), and with the `axum` feature the
//! session handle as an extractor and [`Error`] as a response, so an axum handler names the
//! core types: `async fn visits(session: Session) -> Result<String, session::Error>` (the
//! `cloakroom-tower` crate's examples run exactly that).

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

#[cfg(feature = "axum")]
use crate::session::Session;
use crate::session::{Error, ErrorKind};

/// The response for a failed session operation: a store failure is `503 Service
/// Unavailable` with `Retry-After: 1` (the request can be retried as it is), data over the
/// limit `413`, anything else (a misuse of the API) `500`. Never cached.
pub fn error_response(error: &Error) -> Response<String> {
    let (status, text) = match error.kind() {
        ErrorKind::Store(_) => {
            tracing::error!(%error, "session store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unavailable, try again shortly",
            )
        }
        ErrorKind::TooLarge => {
            tracing::warn!(%error, "session data over the limit");
            (StatusCode::PAYLOAD_TOO_LARGE, "session data too large")
        }
        _ => {
            tracing::error!(%error, "session misuse");
            (StatusCode::INTERNAL_SERVER_ERROR, "session error")
        }
    };
    let mut res = Response::new(format!("{text}\n"));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// The [`Session`] extractor found no session: the session middleware is missing from the
/// route (a server misconfiguration: `500`).
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for MissingSessionLayer {
    fn into_response(self) -> axum_core::response::Response {
        tracing::error!("Session extractor used on a route without the session layer");
        let mut res = Response::new(axum_core::body::Body::from(
            "server misconfigured: no session layer\n",
        ));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        error_response(&self).map(axum_core::body::Body::from)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn store_failures_are_503_with_retry_after_misuse_500() {
        let down: Error = store::Error::new(store::ErrorKind::Unavailable, "down").into();
        let res = error_response(&down);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
        let misuse = Error::new(ErrorKind::Committed, "late");
        assert_eq!(
            error_response(&misuse).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let big = Error::new(ErrorKind::TooLarge, "big");
        assert_eq!(error_response(&big).status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_response(&big).headers().get(RETRY_AFTER).is_none());
    }
}
