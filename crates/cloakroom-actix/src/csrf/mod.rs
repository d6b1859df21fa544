//! [`CsrfMiddleware`]: cross-origin checks and session-bound masked tokens for actix-web,
//! wire-compatible with Tornado's `_xsrf`; the same settings, checks, cookies and refusals
//! as the tower `CsrfLayer` (both are glue over the core's
//! [`CsrfSettings`] and its check).
//!
//! Put it *inside* the [`SessionMiddleware`](crate::SessionMiddleware) so requests reach the
//! session middleware first; in actix-web the last `wrap` is the outermost:
//! `App::new().wrap(csrf).wrap(sessions)`.
//!
//! Unsafe requests (anything but GET, HEAD, OPTIONS) on non-exempt paths must pass the
//! cross-origin check and carry a token in the `X-XSRFToken` / `X-CSRFToken` /
//! `X-XSRF-TOKEN` header or the `_xsrf` field of an urlencoded or multipart form body
//! (buffered up to the body limit and put back for the handler, so `web::Form` still
//! works). The expected secret lives in the session when the request has one
//! ([`CsrfMode::Auto`]), otherwise in Tornado's `_xsrf` cookie (double submit). Failures
//! answer 403 with a stable reason, as HTML or JSON by `Accept`, with the
//! [`ProtectionError`] in the response's extensions.
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use cloakroom_actix::{CsrfMiddleware, CsrfToken, Error, SessionMiddleware};
//! use cloakroom_core::csrf::CsrfSettings;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! async fn form(csrf: CsrfToken) -> Result<HttpResponse, Error> {
//!     let field = csrf.form_field().await?;
//!     Ok(HttpResponse::Ok().body(format!("<form method=post>{field}<button>Go</button></form>")))
//! }
//!
//! let settings = CsrfSettings::new()
//!     .add_trusted_origin("https://partner.example").unwrap()
//!     .add_exempt_path("/webhooks/stripe");
//! let csrf = CsrfMiddleware::new(settings);
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let sessions = SessionMiddleware::new(engine);
//! let app = App::new()
//!     .wrap(csrf)       // inner
//!     .wrap(sessions)   // outer: runs first
//!     .route("/form", web::get().to(form));
//! # let _ = app;
//! ```
//!
//! Single-page apps ([`SpaCookie`], [`CsrfToken`]'s [`ensure_spa_cookie`](cloakroom_core::csrf::TokenSource::ensure_spa_cookie)) and tokenless mode
//! ([`CsrfSettings::tokenless`], [`CsrfSettings::add_token_path`]) work as with the tower
//! layer; see its documentation (`cloakroom_tower::csrf`) for what each protects and what it
//! does not.

mod middleware;
mod token;

pub use cloakroom_core::csrf::{
    CsrfMode, CsrfSettings, OnRejection, ProtectionError, Reason, ResponseFormat, SpaCookie,
    default_rejection,
};
pub use middleware::{CsrfMiddleware, CsrfMiddlewareService};
pub use token::{CsrfToken, MissingCsrfMiddleware};
