//! [`SessionLayer`]: gives every request a [`Session`](cloakroom_core::Session) in its
//! extensions and commits it when the response is ready.
//!
//! ```
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//! use cloakroom_tower::SessionLayer;
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_cookie_name("__Host-session").unwrap()
//!     .with_idle_timeout(std::time::Duration::from_secs(30 * 60)).unwrap()
//!     .build();
//! let layer = SessionLayer::new(engine);
//! # let _ = layer;
//! ```

mod layer;
mod service;

pub use cloakroom_core::ConfigError;
pub use layer::SessionLayer;
pub(crate) use service::StoreFailure;
pub use service::{ResponseFuture, SessionService};

pub use cloakroom_core::response::ErrorHandler;
/// The default response for a failed commit: `503 Service Unavailable` with `Retry-After: 1`
/// for a store failure. It logs nothing: the layer logs the failure once, whatever handler
/// answers it.
pub use cloakroom_core::response::failure_response as default_error_response;
