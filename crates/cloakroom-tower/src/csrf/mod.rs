//! [`CsrfLayer`]: cross-origin checks and session-bound masked tokens, wire-compatible with
//! Tornado's `_xsrf`.
//!
//! Put it *inside* the [`SessionLayer`](crate::SessionLayer) (so requests reach the session
//! layer first): `Router::new()...layer(CsrfLayer::new()).layer(SessionLayer::new(..))`.
//!
//! Unsafe requests (anything but GET, HEAD, OPTIONS) on non-exempt paths must pass the
//! cross-origin check and carry a token in the `X-XSRFToken` / `X-CSRFToken` header or the
//! `_xsrf` field of an urlencoded or multipart form body. The expected secret lives in the
//! session when the request has one ([`CsrfMode::Auto`]), otherwise in Tornado's `_xsrf`
//! cookie (double submit). Failures answer 403 with a stable reason, as HTML or JSON.
//!
//! ```
//! use cloakroom_tower::CsrfLayer;
//! let csrf = CsrfLayer::new()
//!     .with_trusted_origin("https://partner.example").unwrap()
//!     .with_exempt_path("/webhooks/stripe");
//! # let _ = csrf;
//! ```

mod layer;
mod response;
mod service;
mod token;

use cloakroom_core::cookie::CookieConfig;
use cloakroom_core::csrf::Origin;

pub use layer::CsrfLayer;
pub use response::{OnRejection, ResponseFormat, default_rejection};
pub use service::{CsrfService, ResponseFuture};
pub use token::CsrfToken;

/// Where the expected secret is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CsrfMode {
    /// In the session when the request has one (rotated by `login`), otherwise in the
    /// `_xsrf` cookie. The default.
    #[default]
    Auto,
    /// Always in the `_xsrf` cookie, as Tornado keeps it (for sharing tokens with a Tornado
    /// app on the same domain).
    Cookie,
}

/// The settings a [`CsrfLayer`] gives its services.
#[derive(Clone)]
struct Config {
    trusted: Vec<Origin>,
    exempt: Vec<String>,
    body_limit: usize,
    query_token: bool,
    mode: CsrfMode,
    cookie: CookieConfig,
    on_reject: std::sync::Arc<dyn OnRejection>,
}
