//! Tower middleware for Cloakroom: [`SessionLayer`] puts a session in every request and
//! commits it with the response; with the `axum` feature, the [`Session`] extractor;
//! [`RecentLoginLayer`] guards sensitive routes with a recent-login check.
//! commits it with the response; with the `axum` feature, the [`Session`] extractor; with
//! the `dbsc` feature, device-bound sessions (the session layer answers the DBSC endpoints,
//! `DeviceBoundLayer` guards the routes that need a bound session).
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//! use cloakroom_tower::{Session, SessionError, SessionLayer};
//!
//! async fn hello(session: Session) -> Result<String, SessionError> {
//!     let name: Option<String> = session.get("name").await?;
//!     Ok(format!("Hello, {}", name.as_deref().unwrap_or("stranger")))
//! }
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let app: Router = Router::new()
//!     .route("/", get(hello))
//!     .layer(SessionLayer::new(engine));
//! # let _ = app;
//! # }
//! ```

pub mod csrf;
pub mod guard;
pub mod session;

#[cfg(feature = "axum")]
pub mod extract;

pub use cloakroom_core::session::SessionSettings;
pub use csrf::{CsrfLayer, CsrfMode, CsrfSettings, CsrfToken};
#[cfg(feature = "dbsc")]
pub use guard::DeviceBoundLayer;
pub use guard::{Guard, GuardLayer, GuardRequest, Guarded, RecentLogin, RecentLoginLayer};
pub use session::{ConfigError, SessionLayer, SessionService};

#[cfg(feature = "axum")]
pub use extract::{Session, SessionError};
