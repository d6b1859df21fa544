//! The [`Session`] extractor and the [`Error`] response.

use std::fmt;
use std::future::{Ready, ready};
use std::ops::{Deref, DerefMut};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use cloakroom_core::response::{error_response, error_status};

use crate::convert::to_actix;

/// The request's session, put there by [`SessionMiddleware`](crate::SessionMiddleware): an
/// extractor that derefs to [`cloakroom_core::Session`] (typed `get`/`set`, `login`,
/// `logout`, flash messages...). `Option<Session>` is `None` on a route without the
/// middleware instead of a `500`.
#[derive(Clone, Debug)]
pub struct Session(pub cloakroom_core::Session);

impl Session {
    /// The core session handle.
    pub fn into_inner(self) -> cloakroom_core::Session {
        self.0
    }
}

impl Deref for Session {
    type Target = cloakroom_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromRequest for Session {
    type Error = MissingSessionMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.extensions().get::<cloakroom_core::Session>().cloned();
        ready(session.map(Session).ok_or(MissingSessionMiddleware))
    }
}

/// The [`Session`] extractor found no session: the route is not wrapped in
/// [`SessionMiddleware`](crate::SessionMiddleware) (a server misconfiguration: `500`).
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionMiddleware;

impl fmt::Display for MissingSessionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server misconfigured: no session middleware")
    }
}

impl std::error::Error for MissingSessionMiddleware {}

impl ResponseError for MissingSessionMiddleware {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("Session extractor used on a route without the session middleware");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}

/// A failed session operation as an actix-web error, so a handler returns
/// `Result<impl Responder, cloakroom_actix::Error>` and uses `?` on session calls. Its
/// response is the core's [`error_response`]: `503` with `Retry-After: 1` for a store
/// failure, `413` for data over the limit, `500` for a misuse.
#[derive(Debug)]
pub struct Error(pub cloakroom_core::session::Error);

impl Error {
    /// The core error.
    pub fn into_inner(self) -> cloakroom_core::session::Error {
        self.0
    }
}

impl From<cloakroom_core::session::Error> for Error {
    fn from(error: cloakroom_core::session::Error) -> Self {
        Error(error)
    }
}

impl Deref for Error {
    type Target = cloakroom_core::session::Error;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        // The status alone: no response built, nothing logged.
        let status = error_status(&self.0).as_u16();
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        to_actix(error_response(&self.0))
    }
}
