//! [`SessionLayer`]: gives every request a [`Session`](cloakroom_core::Session) in its
//! extensions and commits it when the response is ready.
//!
//! ```
//! use cloakroom_core::{Key, KeyRing, MemoryStore};
//! use cloakroom_tower::SessionLayer;
//!
//! let layer = SessionLayer::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_cookie_name("__Host-session").unwrap()
//!     .with_idle_timeout(std::time::Duration::from_secs(30 * 60)).unwrap();
//! # let _ = layer;
//! ```

mod layer;
mod service;

use std::sync::Arc;

use cloakroom_core::session::Error;
use http::Response;

pub use cloakroom_core::ConfigError;
pub use layer::SessionLayer;
pub use service::{ResponseFuture, SessionService};

/// Turns a store failure into the response sent instead of the handler's.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

/// The default response for a failed commit: `503 Service Unavailable` with
/// `Retry-After: 1` for a store failure (see
/// [`error_response`](cloakroom_core::response::error_response)).
pub fn default_error_response(error: &Error) -> Response<String> {
    cloakroom_core::response::error_response(error)
}
