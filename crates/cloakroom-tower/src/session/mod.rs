//! [`SessionLayer`]: gives every request a [`Session`](cloakroom_core::Session) in its
//! extensions and commits it when the response is ready.
//!
//! ```
//! use std::sync::Arc;
//! use cloakroom_core::{Key, KeyRing, MemoryStore};
//! use cloakroom_tower::SessionLayer;
//!
//! let layer = SessionLayer::new(Arc::new(MemoryStore::new()), KeyRing::single(Key::generate()))
//!     .with_cookie_name("__Host-session").unwrap()
//!     .with_idle_timeout(std::time::Duration::from_secs(30 * 60));
//! # let _ = layer;
//! ```

mod layer;
mod service;

use std::fmt;
use std::sync::Arc;

use cloakroom_core::cookie::CookieConfigError;
use cloakroom_core::session::Error;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

pub use layer::SessionLayer;
pub use service::{ResponseFuture, SessionService};

/// Turns a store failure into the response sent instead of the handler's.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

/// A configuration was refused (reported when the app is built, not per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

impl From<CookieConfigError> for ConfigError {
    fn from(e: CookieConfigError) -> Self {
        ConfigError(e.0)
    }
}

/// The default store-failure response: `503 Service Unavailable`, `Retry-After: 1`.
pub fn default_error_response(_: &Error) -> Response<String> {
    let mut res = Response::new("session store unavailable, try again shortly\n".to_owned());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
