//! [`CsrfLayer`]: cross-origin checks and session-bound masked tokens, wire-compatible with
//! Tornado's `_xsrf`.
//!
//! Put it *inside* the [`SessionLayer`](crate::SessionLayer) (so requests reach the session
//! layer first): `Router::new()...layer(CsrfLayer::new(settings)).layer(SessionLayer::new(engine))`.
//!
//! Unsafe requests (anything but GET, HEAD, OPTIONS) on non-exempt paths must pass the
//! cross-origin check and carry a token in the `X-XSRFToken` / `X-CSRFToken` /
//! `X-XSRF-TOKEN` header or the `_xsrf` field of an urlencoded or multipart form body. The expected secret lives in the
//! session when the request has one ([`CsrfMode::Auto`]), otherwise in Tornado's `_xsrf`
//! cookie (double submit). Failures answer 403 with a stable reason, as HTML or JSON.
//!
//! The settings and the decisions are the core's ([`CsrfSettings`], its `begin_check` and
//! `token_source`, [`TokenSource`](cloakroom_core::csrf::TokenSource)): this layer reads the
//! request and its body and writes the response, as the actix-web `CsrfMiddleware` does, so
//! the two behave alike header for header.
//!
//! ```
//! use cloakroom_core::csrf::CsrfSettings;
//! use cloakroom_tower::CsrfLayer;
//! let settings = CsrfSettings::new()
//!     .add_trusted_origin("https://partner.example").unwrap()
//!     .add_exempt_path("/webhooks/stripe");
//! let csrf = CsrfLayer::new(settings);
//! # let _ = csrf;
//! ```
//!
//! # Single-page apps: `XSRF-TOKEN` and `X-XSRF-TOKEN`
//!
//! Angular's `HttpClient` and axios send a token with no code at all: they read a cookie
//! called `XSRF-TOKEN` and copy its value into an `X-XSRF-TOKEN` header on unsafe
//! same-origin requests. [`CsrfSettings::with_spa_cookie`] sets that cookie (readable by
//! scripts, not `HttpOnly`; `Secure`, `SameSite`, `Domain`, `Path` as the `_xsrf` cookie's)
//! to a masked token of the expected secret. The handler serving the app hands it out with
//! [`CsrfToken`]'s [`ensure_spa_cookie`](cloakroom_core::csrf::TokenSource::ensure_spa_cookie) (or every response does, with [`SpaCookie::with_eager`]);
//! from then on every answered response replaces it when it no longer holds a token of the
//! current secret: the login response carries the token of the rotated secret, the logout
//! response the one of the `_xsrf` cookie. Visitors who never load the app get no cookie.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use cloakroom_core::csrf::{CsrfSettings, SpaCookie};
//! use cloakroom_tower::{CsrfLayer, CsrfToken};
//!
//! async fn index(csrf: CsrfToken) -> &'static str {
//!     csrf.ensure_spa_cookie(); // Django's ensure_csrf_cookie
//!     "<!doctype html><script src=/app.js></script>"
//! }
//! let csrf = CsrfLayer::new(CsrfSettings::new().with_spa_cookie(SpaCookie::default()).unwrap());
//! let app: Router = Router::new().route("/", get(index)).layer(csrf); // then SessionLayer
//! # let _ = app;
//! # }
//! ```
//!
//! The cookie only hands the token to scripts; the check does not change. What passes is a
//! header (or form field) holding a token of the session's secret (before there is a
//! session: of the `_xsrf` cookie's secret). So the cookie alone never passes (a forged
//! request carries the cookie but cannot read it into a header); a token of another
//! session, or of this session before its login, is a mismatch; and a header with a valid
//! token of the session's secret passes even without the `XSRF-TOKEN` cookie (as a token
//! from a page's `<meta>` does). Before there is a session, a header without the `_xsrf`
//! cookie matches nothing.
//!
//! # Tokenless mode
//!
//! [`CsrfSettings::tokenless`] checks only Fetch Metadata and `Origin`, as Go 1.25's
//! `CrossOriginProtection` does: `Sec-Fetch-Site: same-origin` or `none` passes; any other
//! value, `same-site` included, is refused unless `Origin` is trusted; without
//! `Sec-Fetch-Site`, `Origin` must match `Host` or be trusted; a request with neither
//! header passes. [`CsrfSettings::add_token_path`] keeps tokens on chosen paths.
//!
//! What tokenless mode does not protect against:
//! - browsers that send neither `Sec-Fetch-Site` nor `Origin` on a cross-site form post
//!   (browsers from before about 2020; every current one sends both). Such a request
//!   passes, exactly like one from `curl` or a server-side client, which need no
//!   protection since they carry no victim's cookies;
//! - anything running on your own origin (an XSS hole, a user-uploaded HTML file served from
//!   it): its requests are same-origin. Tokens do not stop that either, since a script on
//!   the origin can read them;
//! - state changes on GET, HEAD or OPTIONS (never checked, in either mode);
//! - a proxy that rewrites `Host` or strips `Origin` and `Sec-Fetch-Site`: the check trusts
//!   the headers it receives.
//!
//! Sibling subdomains are refused (`Sec-Fetch-Site: same-site`) unless trusted with
//! [`CsrfSettings::add_trusted_origin`], so a compromised `blog.example.com` cannot post to
//! `app.example.com`; but in a browser without Fetch Metadata the `Origin` check is all
//! there is.
//!
//! # tower-http's `CsrfLayer`
//!
//! tower-http 0.7 has a `tower_http::csrf::CsrfLayer` (feature `csrf`): the same Go 1.25
//! Fetch Metadata / `Origin` algorithm, with trusted origins (`add_trusted_origin`, compared
//! byte for byte) and a bypass predicate, and no tokens, sessions or cookies. It is the
//! check this layer runs first on every unsafe request, and all that tokenless mode runs
//! (small differences: it compares trusted origins byte for byte where this one ignores
//! case, and prefers the request-target's authority to `Host`). Stacking the two is
//! pointless in tokenless mode (the same check twice) and harmless otherwise (it refuses
//! what this layer's first check refuses; give both the same trusted origins and exempt
//! paths, or its refusals come first). To use both, rename one at import:
//!
//! ```ignore
//! use cloakroom_tower::CsrfLayer;
//! use tower_http::csrf::CsrfLayer as FetchMetadataLayer;
//! ```

mod layer;
mod service;
mod token;

use std::sync::Arc;

pub use cloakroom_core::csrf::{
    CsrfMode, CsrfSettings, OnRejection, ResponseFormat, SpaCookie, default_rejection,
};
pub use layer::CsrfLayer;
pub use service::{CsrfService, ResponseFuture};
pub use token::CsrfToken;

/// The settings a [`CsrfLayer`] gives its services: the core's [`CsrfSettings`] (what is
/// checked, which cookies are set) and the rejection hook.
#[derive(Clone)]
struct Config {
    settings: CsrfSettings,
    on_reject: Arc<dyn OnRejection>,
}
