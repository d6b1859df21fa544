//! actix-web 4 middleware and extractors for Cloakroom sessions.
//!
//! The same engine, settings and commit rules as the tower layer (`cloakroom-tower`): a
//! request handled here and one handled by axum get the same cookies and headers.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use cloakroom_actix::{Error, Session, SessionMiddleware};
//! use cloakroom_core::session::SessionSettings;
//! use cloakroom_core::{Key, KeyRing, MemoryStore};
//!
//! async fn hello(session: Session) -> Result<String, Error> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.set("visits", &visits).await?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In production, load keys from configuration (`KeyRing::from_base64_list`).
//! let settings = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_cookie_secure(false)?; // http:// in development
//! let sessions = SessionMiddleware::from(settings);
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(sessions.clone())
//!         .route("/", web::get().to(hello))
//! })
//! .bind(("127.0.0.1", 8000))?
//! .run()
//! .await?;
//! # Ok(())
//! # }
//! ```

mod convert;
mod extract;
mod middleware;

use std::sync::Arc;

pub use cloakroom_core::ConfigError;
pub use extract::{Error, MissingSessionMiddleware, Session};
pub use middleware::{SessionMiddleware, SessionMiddlewareService};

/// Turns a failed commit into the response sent instead of the handler's (the same type as
/// the tower layer's handler, so one function serves both).
pub type ErrorHandler =
    Arc<dyn Fn(&cloakroom_core::session::Error) -> http::Response<String> + Send + Sync>;

/// The default response for a failed commit: `503 Service Unavailable` with
/// `Retry-After: 1` for a store failure (see
/// [`error_response`](cloakroom_core::response::error_response)).
pub fn default_error_response(error: &cloakroom_core::session::Error) -> http::Response<String> {
    cloakroom_core::response::error_response(error)
}
