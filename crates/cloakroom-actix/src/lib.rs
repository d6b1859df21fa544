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

pub use cloakroom_core::ConfigError;
pub use extract::{Error, MissingSessionMiddleware, Session};
pub use middleware::{SessionMiddleware, SessionMiddlewareService};

pub use cloakroom_core::response::ErrorHandler;
/// The default response for a failed commit: `503 Service Unavailable` with `Retry-After: 1`
/// for a store failure.
pub use cloakroom_core::response::error_response as default_error_response;
