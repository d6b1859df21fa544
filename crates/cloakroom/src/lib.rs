//! Cloakroom: server-side web sessions and CSRF protection for Rust.
//!
//! The coat (the session data) stays at the server; the browser keeps a ticket: a signed,
//! random session id in a cookie. This crate gathers the pieces behind features:
//!
//! | feature  | default | what it adds |
//! |----------|---------|--------------|
//! | `memory` | yes     | `memory://` in [`store::open`] |
//! | `sqlite` | no      | [`store::SqliteStore`], `sqlite://` in [`store::open`] |
//! | `redis`  | no      | [`store::RedisStore`], `redis://`, `redis+cluster://`, `redis+sentinel://` in [`store::open`] |
//! | `redis-tls` | no   | TLS to Redis: `rediss://`, `rediss+cluster://`, `rediss+sentinel://` (rustls with `ring`, which builds C); implies `redis` |
//! | `tornado` | no     | `cloakroom::tornado` (Tornado's signed values, `TornadoSecret`), `PycketTicket` and `PycketStore`, `pycket+redis://` in [`store::open`] (Tornado's pycket format); implies `redis` |
//! | `tower`  | via `axum` | [`SessionLayer`] and [`CsrfLayer`], the tower middleware |
//! | `axum`   | yes     | the [`Session`] extractor and the [`SessionError`] response |
//! | `actix`  | no      | `cloakroom::actix`: the actix-web 4 `SessionMiddleware`, `Session` extractor and `Error` response, `CsrfMiddleware` and the `CsrfToken` extractor |
//! | `postgres` | no    | [`store::PostgresStore`], `postgres://` in [`store::open`] |
//! | `metrics` | no     | metrics through the `metrics` facade and `tracing` spans of store operations ([`telemetry`]; names in the README's *Metrics and traces* table) |
//! | `dbsc`   | no      | Device Bound Session Credentials (a W3C draft): the registration and refresh endpoints in the session layers, `cloakroom::dbsc` |
//! | `seal`   | no      | session data sealed at rest (`SessionSettings::with_sealed_data`; AES-256-GCM from `ring`, which builds C and assembly) |
//!
#![cfg_attr(feature = "axum", doc = "```")]
#![cfg_attr(not(feature = "axum"), doc = "```ignore")]
//! use axum::{Router, routing::get};
//! use cloakroom::{Key, KeyRing, Session, SessionError, SessionLayer, SessionSettings};
//!
//! async fn hello(session: Session) -> Result<String, SessionError> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.set("visits", &visits).await?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Pick the store at run time; `sqlite://sessions.db` (feature `sqlite`) keeps sessions
//! // across restarts.
//! let store = cloakroom::store::open("memory://").await?;
//! // In production, load keys from configuration (`KeyRing::from_base64_list`), so tickets
//! // survive a restart.
//! let keys = KeyRing::single(Key::generate());
//! // Every setting in one place, checked as it is set; the engine is built once.
//! let engine = SessionSettings::new(store, keys)
//!     .with_cookie_secure(false)? // http:// in development
//!     .build();
//! let app: Router = Router::new()
//!     .route("/", get(hello))
//!     .layer(SessionLayer::new(engine));
//! # use tower::ServiceExt as _;
//! # let res = app.oneshot(axum::http::Request::new(axum::body::Body::empty())).await?;
//! # assert!(res.headers()["set-cookie"].to_str()?.starts_with("session="));
//! // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8000").await?, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The session handle itself is [`session::Session`] (the extractor derefs to it): typed
//! `get`/`set`, `login`, `logout`, `set_remember`, [flash messages](flash); the user's
//! sessions are listed and revoked through the [`SessionEngine`] (which applies the store
//! timeout). [`SessionSettings`] and [`csrf::CsrfSettings`] are the one way to configure:
//! the adapters take what they build.

/// Device Bound Session Credentials (feature `dbsc`): settings, policy, the endpoints.
#[cfg(feature = "dbsc")]
pub use cloakroom_core::dbsc;
pub use cloakroom_core::{cookie, csrf, flash, keys, session, telemetry};

pub mod store;

pub use cloakroom_core::csrf::CsrfSettings;
pub use cloakroom_core::keys::{Key, KeyRing};
pub use cloakroom_core::session::{SessionEngine, SessionKey, SessionSettings, Timestamp};
pub use cloakroom_core::store::SessionStore;

#[cfg(feature = "memory")]
pub use cloakroom_core::store::MemoryStore;

#[cfg(feature = "sqlite")]
pub use cloakroom_sqlite::SqliteStore;

#[cfg(feature = "tower")]
pub use cloakroom_tower::{
    ConfigError, CsrfLayer, CsrfMode, CsrfToken, SessionLayer, SessionService,
};

#[cfg(feature = "redis")]
pub use cloakroom_redis::RedisStore;

#[cfg(feature = "tornado")]
pub use cloakroom_tornado::{PycketStore, PycketTicket, TornadoSecret};

/// Interop with Tornado + pycket, in full: Tornado's signed values, pycket's ticket and
/// store (see `cloakroom_tornado`).
#[cfg(feature = "tornado")]
pub mod tornado {
    pub use cloakroom_tornado::*;
}

#[cfg(feature = "axum")]
pub use cloakroom_tower::{Session, SessionError};

/// The tower and axum adapter, in full (error handlers, service types, extractors).
#[cfg(feature = "tower")]
pub mod tower {
    pub use cloakroom_tower::*;
}

/// The actix-web 4 adapter, in full: `SessionMiddleware`, the `Session` extractor and the
/// `Error` response, `CsrfMiddleware` and the `CsrfToken` extractor, and the `csrf` module
/// (`SpaCookie`, `CsrfMode`, the rejection hook) (see `cloakroom_actix`).
#[cfg(feature = "actix")]
pub mod actix {
    pub use cloakroom_actix::*;
}

/// The README's code, compiled (and its `no_run` server example type-checked) by `cargo test
/// --doc`, so the front page cannot drift from the API.
#[cfg(all(doctest, feature = "axum", feature = "sqlite"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
