//! [`CsrfToken`]: the request's token source, for rendering forms, as an extractor.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use cloakroom_core::csrf::TokenSource;
use cloakroom_core::session;

/// The request's CSRF token source, for rendering forms: an extractor, put there by
/// [`CsrfMiddleware`](super::CsrfMiddleware). A wrapper of the core's [`TokenSource`], as the
/// tower adapter's `CsrfToken` is. `Option<CsrfToken>` is `None` on a route without the
/// middleware instead of a `500`.
#[derive(Clone)]
pub struct CsrfToken(pub(super) TokenSource);

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CsrfToken").field(&self.0).finish()
    }
}

impl CsrfToken {
    /// Sends the [`SpaCookie`](super::SpaCookie) (the readable `XSRF-TOKEN` cookie) with
    /// this response even if the request did not carry one: call it in the handler serving
    /// the single-page app (as Django's `ensure_csrf_cookie`). Before there is a session this
    /// makes the `_xsrf` secret (and cookie) if the request had none. Does nothing without
    /// [`CsrfSettings::with_spa_cookie`](super::CsrfSettings::with_spa_cookie).
    pub fn ensure_spa_cookie(&self) {
        self.0.ensure_spa_cookie();
    }

    /// A fresh masked token (Tornado v2 format): a different string on every call, each
    /// valid until the secret rotates.
    ///
    /// # Errors
    /// Session store failures (`?` turns them into [`crate::Error`], a 503).
    pub async fn token(&self) -> Result<String, session::Error> {
        self.0.token().await
    }

    /// `<input type="hidden" name="_xsrf" value="...">` for forms.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn form_field(&self) -> Result<String, session::Error> {
        self.0.form_field().await
    }

    /// The core token source.
    pub fn source(&self) -> &TokenSource {
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
