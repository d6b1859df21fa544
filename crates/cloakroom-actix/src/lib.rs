//! actix-web 4 middleware and extractors for Cloakroom sessions and CSRF protection.
//!
//! The same engine, settings and commit rules as the tower layers (`cloakroom-tower`): a
//! request handled here and one handled by axum get the same cookies and headers.
//! [`SessionMiddleware`] and the [`Session`] extractor for sessions; [`CsrfMiddleware`] and
//! the [`CsrfToken`] extractor for CSRF protection (see [`csrf`]); route guards (see
//! [`guard`]): [`RecentLoginMiddleware`] for routes that need a recent login and, with the
//! `dbsc` feature, `DeviceBound` for routes that need a device-bound session (the session
//! middleware answers the DBSC endpoints).
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use cloakroom_actix::{CsrfMiddleware, CsrfSettings, Error, Session, SessionMiddleware};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! async fn hello(session: Session) -> Result<String, Error> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.set("visits", &visits).await?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In production, load keys from configuration (`KeyRing::from_base64_list`).
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_cookie_secure(false)? // http:// in development
//!     .build();
//! let sessions = SessionMiddleware::new(engine);
//! let csrf = CsrfMiddleware::new(CsrfSettings::new().with_cookie_secure(false)?);
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(csrf.clone()) // inside the sessions: the last `wrap` runs first
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
pub mod csrf;
#[cfg(feature = "dbsc")]
mod dbsc;
mod extract;
pub mod guard;
mod middleware;

pub use cloakroom_core::ConfigError;
pub use cloakroom_core::session::SessionSettings;
pub use csrf::{
    CsrfMiddleware, CsrfMiddlewareService, CsrfSettings, CsrfToken, MissingCsrfMiddleware,
};
pub use extract::{Error, MissingSessionMiddleware, Session};
#[cfg(feature = "dbsc")]
pub use guard::DeviceBound;
pub use guard::{
    Guard, GuardMiddleware, GuardRequest, GuardService, RecentLogin, RecentLoginMiddleware,
};
pub use middleware::{SessionMiddleware, SessionMiddlewareService};

pub use cloakroom_core::response::ErrorHandler;
/// The default response for a failed commit: `503 Service Unavailable` with `Retry-After: 1`
/// for a store failure. It logs nothing: the middleware logs the failure once, whatever
/// handler answers it.
pub use cloakroom_core::response::failure_response as default_error_response;
