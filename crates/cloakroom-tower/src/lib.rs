//! Tower middleware for Cloakroom: [`SessionLayer`] puts a session in every request and
//! commits it with the response; with the `axum` feature, the [`Session`] extractor.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use cloakroom_core::{Key, KeyRing, MemoryStore};
//! use cloakroom_tower::{Session, SessionError, SessionLayer};
//!
//! async fn hello(session: Session) -> Result<String, SessionError> {
//!     let name: Option<String> = session.get("name").await?;
//!     Ok(format!("Hello, {}", name.as_deref().unwrap_or("stranger")))
//! }
//!
//! let keys = KeyRing::single(Key::generate());
//! let app: Router = Router::new()
//!     .route("/", get(hello))
//!     .layer(SessionLayer::new(MemoryStore::new(), keys));
//! # let _ = app;
//! # }
//! ```

pub mod csrf;
pub mod session;

#[cfg(feature = "axum")]
pub mod extract;

pub use csrf::{CsrfLayer, CsrfMode, CsrfToken};
pub use session::{ConfigError, SessionLayer, SessionService};

#[cfg(feature = "axum")]
pub use extract::{Session, SessionError};
