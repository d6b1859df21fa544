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
pub mod live;
mod metrics;
mod otlp;
pub mod pages;
mod passwords;
pub mod proxies;
pub mod reply;
mod templates;
mod throttle;
mod users;

pub use app::{AppState, BadInput, Demo, Handled, PYCKET_COOKIE, Visit};
pub use config::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_RECENT_LOGIN_WINDOW, DbscMode, DemoConfig, Flags,
    METRICS_MAX_CONNECTIONS, SessionLimitPolicy,
};
pub use error::{AppError, StoreFailure};
pub use metrics::{Metrics, RouteClass};
pub use reply::Reply;

/// What [`init_telemetry`] started: the OTLP exporter, when `--otlp-endpoint` asks for one.
#[derive(Debug)]
#[must_use = "call `shutdown` at the stop: it pushes the last OTLP export"]
pub struct Telemetry {
    otlp: Option<otlp::Exporter>,
}

impl Telemetry {
    /// At the stop, once the server is done: pushes the metrics a last time to the OTLP
    /// collector (when exporting) and stops the exporter. Blocks for up to the export timeout
    /// (5 s), so call it outside the async runtime; without OTLP it does nothing.
    pub fn shutdown(self) {
        if let Some(exporter) = self.otlp {
            exporter.shutdown();
        }
    }
}

/// Logs to standard error, at `RUST_LOG`'s levels (`info` by default), in colour on a
/// terminal, and installs the library's metrics recorder (Prometheus text for `/metrics`),
/// with `--otlp-endpoint` also the OTLP exporter (resource `service.name` = `service`, the
/// binary's name): the same for both demo binaries, before anything else (and before the
/// async runtime: the exporter runs on a thread of its own).
pub fn init_telemetry(service: &'static str, flags: &Flags) -> Telemetry {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let otlp = flags.otlp_endpoint.as_ref().map(|url| otlp::Settings {
        url: url.clone(),
        interval: flags.otlp_interval,
        service,
    });
    Telemetry {
        otlp: metrics::install_recorder(otlp.as_ref()),
    }
}
