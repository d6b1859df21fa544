//! axum extractors: [`Session`] and the [`SessionError`] response.
//!
//! ```
//! use axum::{Router, routing::get};
//! use cloakroom_tower::{Session, SessionError};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.set("n", &n).await?;
//!     Ok(format!("visit {n}"))
//! }
//! let app: Router = Router::new().route("/", get(counter));
//! # let _ = app;
//! ```

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use cloakroom_core::session::{self, ErrorKind};
use http::StatusCode;
use http::request::Parts;

/// The request's session, put there by [`SessionLayer`](crate::SessionLayer). Derefs to
/// [`cloakroom_core::Session`].
#[derive(Clone, Debug)]
pub struct Session(pub cloakroom_core::Session);

impl Deref for Session {
    type Target = cloakroom_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The extractor found no session: the [`SessionLayer`](crate::SessionLayer) is missing.
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("Session extractor used on a route without SessionLayer");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server misconfigured: no session layer\n",
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<cloakroom_core::Session>()
            .cloned()
            .map(Session)
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<cloakroom_core::Session>()
            .cloned()
            .map(Session))
    }
}

/// A session error as a response: store failures are `503`, everything else `500`.
/// Handlers return `Result<_, SessionError>` and use `?` on session calls.
#[derive(Debug)]
pub struct SessionError(pub session::Error);

impl From<session::Error> for SessionError {
    fn from(e: session::Error) -> Self {
        SessionError(e)
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let error = &self.0;
        match error.kind() {
            ErrorKind::Store(_) => {
                tracing::error!(%error, "session store failed");
                crate::session::default_error_response(error).into_response()
            }
            ErrorKind::TooLarge => {
                tracing::warn!(%error, "session data over the limit");
                (StatusCode::PAYLOAD_TOO_LARGE, "session data too large\n").into_response()
            }
            _ => {
                tracing::error!(%error, "session misuse");
                (StatusCode::INTERNAL_SERVER_ERROR, "session error\n").into_response()
            }
        }
    }
}

/// The extractor found no CSRF token source: the [`CsrfLayer`](crate::CsrfLayer) is missing.
#[derive(Debug, Clone, Copy)]
pub struct MissingCsrfLayer;

impl IntoResponse for MissingCsrfLayer {
    fn into_response(self) -> Response {
        tracing::error!("CsrfToken extractor used on a route without CsrfLayer");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server misconfigured: no CSRF layer\n",
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for crate::csrf::CsrfToken {
    type Rejection = MissingCsrfLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<crate::csrf::CsrfToken>()
            .cloned()
            .ok_or(MissingCsrfLayer)
    }
}
