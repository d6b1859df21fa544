//! The Cloakroom demo's framework-free parts, shared by the axum demo (`cloakroom-demo`) and
//! the actix-web demo (`cloakroom-actix-demo`): the login app of the original Tornado +
//! pycket tutorial.
//!
//! Register, log in (optionally "remember me"), keep notes in your session, see and revoke
//! your other sessions, log out. Accounts live in a SQLite `users` table; sessions live in
//! whatever store the `--store` URL names.
//!
//! Here: the command line ([`Flags`]) and [`DemoConfig`], opening the store, the accounts
//! and the keys ([`Demo::open`]), the pages ([`pages`]: templates, users, Argon2 password
//! hashing on a bounded queue, login throttling, notes, the session list, the JSON API,
//! health and metrics), the `Host` check and the security headers ([`hosts`]), the client's
//! address behind reverse proxies ([`proxies`]). Each page
//! takes what the framework extracted and answers a framework-free [`Reply`]; a framework
//! only routes, extracts and sends:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use cloakroom_demo_app::{Demo, DemoConfig, pages};
//!
//! let demo = Demo::open(DemoConfig::new("memory://", "sqlite://users.db")).await?;
//! let health = pages::healthz(&demo.state).await;
//! assert_eq!(health.status(), 200);
//! # Ok(())
//! # }
//! ```

mod app;
mod config;
mod error;
pub mod hosts;
pub mod input;
mod keyfile;
pub mod limits;
mod metrics;
pub mod pages;
mod passwords;
pub mod proxies;
pub mod reply;
mod templates;
mod throttle;
mod users;

pub use app::{AppState, BadInput, Demo, Handled, PYCKET_COOKIE, Visit};
pub use config::{
    DEFAULT_MAX_CONNECTIONS, DemoConfig, Flags, METRICS_MAX_CONNECTIONS, SessionLimitPolicy,
};
pub use error::{AppError, StoreFailure};
pub use metrics::{Metrics, RouteClass};
pub use reply::Reply;

/// Logs to standard error, at `RUST_LOG`'s levels (`info` by default), in colour on a
/// terminal, and installs the library's metrics recorder (Prometheus text for `/metrics`): the
/// same for both demo binaries, before anything else.
pub fn init_telemetry() {
    metrics::install_recorder();
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
