//! The login app of the original Tornado + pycket tutorial, rebuilt on Cloakroom and axum.
//! Everything but the axum glue (pages, accounts, hashing, notes, metrics, flags) is in
//! [`cloakroom_demo_app`], shared with the actix-web demo.
//!
//! Register, log in (optionally "remember me"), keep notes in your session, see and revoke
//! your other sessions, log out. Accounts live in a SQLite `users` table; sessions live in
//! whatever store the `--store` URL names.
//!
//! With `--store pycket+redis://host:port/db?notifications_db=N --tornado-secret SECRET` the
//! demo shares its sessions with a Tornado + pycket app on the same host: the session cookie
//! is pycket's `PYCKET_ID` (a Tornado signed value, with the Tornado app's `cookie_secret`),
//! sessions are pycket's pickled dicts, flash messages are pycket's notifications, a session
//! whose `ID` field is set counts as logged in (that is the Tornado app's login), and CSRF
//! tokens live in Tornado's `_xsrf` cookie, so each app accepts the other's tokens.
//!
//! [`app`] builds the whole application as an [`axum::Router`], so tests drive it with
//! `tower::ServiceExt::oneshot`, no sockets needed:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = cloakroom_demo::DemoConfig::new("memory://", "sqlite://users.db");
//! let app = cloakroom_demo::app(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! // Not `axum::serve`, which has no timeouts and no connection cap: see [`server`].
//! let limits = cloakroom_demo::server::Limits {
//!     header_timeout: std::time::Duration::from_secs(10),
//!     idle_timeout: std::time::Duration::from_secs(10),
//!     max_connections: 512,
//!     max_body: 64 * 1024,
//!     body_timeout: std::time::Duration::from_secs(30),
//! };
//! cloakroom_demo::server::serve(listener, app, limits, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

mod routes;
pub mod server;

use cloakroom::SessionLayer;
use cloakroom_demo_app::Demo;

pub use cloakroom_demo_app::DemoConfig;

/// Builds the application: opens the session store and the users database, loads (or makes)
/// the keys, and wires the routes behind the session layer.
///
/// # Errors
/// A bad origin or key list, or a store or database that cannot be opened.
pub async fn app(config: DemoConfig) -> anyhow::Result<axum::Router> {
    Ok(apps(config).await?.main)
}

/// The demo's routers: the application, and `/metrics` alone for a separate listener.
#[derive(Debug, Clone)]
pub struct Apps {
    /// Every page and API route (and `/metrics` when [`DemoConfig::metrics_on_main`]).
    pub main: axum::Router,
    /// Only `/metrics`, for the `--metrics-addr` listener.
    pub metrics: axum::Router,
}

/// Like [`app`], with the metrics router beside it.
///
/// # Errors
/// As [`app`], and a bad `--allowed-host` entry.
pub async fn apps(config: DemoConfig) -> anyhow::Result<Apps> {
    let demo = Demo::open(config).await?;
    let on_store_error = demo.state.metrics().clone();
    let layer = SessionLayer::new(demo.sessions).with_error_handler(move |error| {
        on_store_error.store_error();
        cloakroom::tower::session::default_error_response(error)
    });
    let csrf = cloakroom::tower::CsrfLayer::new(demo.csrf);
    let recent_login = cloakroom::tower::RecentLoginLayer::new(demo.recent_login);
    let guard = routes::Guard {
        hosts: demo.hosts,
        metrics_here: demo.metrics_on_main,
    };
    Ok(Apps {
        metrics: routes::metrics_router(demo.state.clone()),
        main: routes::router(demo.state, layer, csrf, guard, &recent_login),
    })
}
