//! axum extractors: [`Session`] (the core's session handle itself), [`CsrfToken`](crate::CsrfToken), and the [`SessionError`] response.
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

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

pub use cloakroom_core::Session;
pub use cloakroom_core::response::MissingSessionLayer;

/// What session operations fail with: the core's [`Error`](cloakroom_core::session::Error),
/// itself a response (`503` with `Retry-After` for a store failure, `413` for data over the
/// limit, `500` otherwise). Handlers may name either.
pub type SessionError = cloakroom_core::session::Error;

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
