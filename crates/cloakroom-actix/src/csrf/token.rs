//! [`CsrfToken`]: the request's token source, for rendering forms, as an extractor.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use cloakroom_core::csrf::TokenSource;

/// The request's CSRF token source, for rendering forms: an extractor, put there by
/// [`CsrfMiddleware`](super::CsrfMiddleware). It derefs to the core's [`TokenSource`], where
/// its methods are. `Option<CsrfToken>` is `None` on a route without the
/// middleware instead of a `500`.
#[derive(Clone)]
pub struct CsrfToken(pub(super) TokenSource);

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CsrfToken").field(&self.0).finish()
    }
}

impl std::ops::Deref for CsrfToken {
    type Target = TokenSource;

    /// The core's token source: [`token`](TokenSource::token),
    /// [`form_field`](TokenSource::form_field),
    /// [`ensure_spa_cookie`](TokenSource::ensure_spa_cookie).
    fn deref(&self) -> &TokenSource {
        &self.0
    }
}

impl FromRequest for CsrfToken {
    type Error = MissingCsrfMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req.extensions().get::<CsrfToken>().cloned();
        ready(token.ok_or(MissingCsrfMiddleware))
    }
}

/// The [`CsrfToken`] extractor found no token source: the route is not wrapped in
/// [`CsrfMiddleware`](super::CsrfMiddleware) (a server misconfiguration: `500`).
#[derive(Debug, Clone, Copy)]
pub struct MissingCsrfMiddleware;

impl fmt::Display for MissingCsrfMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server misconfigured: no CSRF middleware")
    }
}

impl std::error::Error for MissingCsrfMiddleware {}

impl ResponseError for MissingCsrfMiddleware {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("CsrfToken extractor used on a route without CsrfMiddleware");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}
