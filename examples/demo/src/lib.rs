//! The login app of the original Tornado + pycket tutorial, rebuilt on Cloakroom and axum.
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
//! };
//! cloakroom_demo::server::serve(listener, app, limits, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

mod error;
mod keyfile;
mod metrics;
mod passwords;
mod routes;
pub mod server;
mod templates;
mod throttle;
mod users;

use std::fmt;
use std::sync::Arc;

use anyhow::Context as _;
use cloakroom::PycketTicket;
use cloakroom::tornado::TornadoSecret;
use cloakroom::{CsrfMode, KeyRing, SessionLayer};

use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::users::Users;

/// Where the demo keeps things and how it presents itself; see `cloakroom-demo --help`.
#[derive(Clone)]
pub struct DemoConfig {
    /// Session store URL, as [`cloakroom::store::open`] takes it (`memory://`,
    /// `sqlite://path.db`, ...).
    pub store: String,
    /// The accounts database: `sqlite://relative.db`, `sqlite:///absolute.db` or
    /// `sqlite::memory:` (a `users` table; may be the session store's file).
    pub users: String,
    /// Signing keys, comma-separated standard base64 of at least 32 bytes each, the first
    /// signs. `None`: a key generated once and kept in a file beside the users database
    /// (`<database>.keys`, mode 0600), so a restart keeps everyone logged in.
    pub keys: Option<String>,
    /// The public origin (`scheme://host[:port]`). Session cookies are `Secure` unless it is
    /// `http://`.
    pub origin: String,
    /// Tornado's `cookie_secret`: required with a `pycket+redis://` store (it signs the
    /// `PYCKET_ID` cookie), unused otherwise.
    pub tornado_secret: Option<String>,
    /// More `Host` header values to answer for besides the origin's (`host` for any port,
    /// `host:port`); any other `Host` gets 421 (DNS rebinding). See `--allowed-host`.
    pub allowed_hosts: Vec<String>,
    /// Whether the app serves `/metrics` itself. The binary turns it off when it listens
    /// beyond loopback or has a separate metrics listener (`--metrics-addr`).
    pub metrics_on_main: bool,
}

impl DemoConfig {
    /// A configuration with sessions in `store` and accounts in `users`, the origin
    /// `http://127.0.0.1:8000` and keys from the key file.
    pub fn new(store: impl Into<String>, users: impl Into<String>) -> Self {
        DemoConfig {
            store: store.into(),
            users: users.into(),
            keys: None,
            origin: "http://127.0.0.1:8000".into(),
            tornado_secret: None,
            allowed_hosts: Vec::new(),
            metrics_on_main: true,
        }
    }
}

impl fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "REDACTED");
        // Store URLs may carry passwords (redis://:secret@host): print the scheme only.
        let scheme = |url: &str| url.split(':').next().unwrap_or_default().to_owned();
        f.debug_struct("DemoConfig")
            .field("store", &format_args!("{}:…", scheme(&self.store)))
            .field("users", &self.users)
            .field("keys", &redacted(&self.keys))
            .field("origin", &self.origin)
            .field("tornado_secret", &redacted(&self.tornado_secret))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_on_main", &self.metrics_on_main)
            .finish()
    }
}

/// Whether `origin` is a valid `http(s)://host[:port]` origin, and whether it is HTTPS.
fn origin_is_https(origin: &str) -> anyhow::Result<bool> {
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    let (https, host) = if let Some(host) = origin.strip_prefix("https://") {
        (true, host)
    } else if let Some(host) = origin.strip_prefix("http://") {
        (false, host)
    } else {
        anyhow::bail!("origin {origin:?} must start with http:// or https://");
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        anyhow::bail!("origin {origin:?} must be scheme://host[:port], without a path");
    }
    Ok(https)
}

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
    let https = origin_is_https(&config.origin)?;
    let hosts = routes::AllowedHosts::new(&config.origin, &config.allowed_hosts)?;
    let pycket = pycket_secret(&config)?;
    let store = cloakroom::store::open(&config.store)
        .await
        .context("cannot open the session store")?;
    let users = Users::open(&config.users)
        .await
        .context("cannot open the users database")?;
    let keys = match &config.keys {
        Some(list) => KeyRing::from_base64_list(list).context("bad --keys / CLOAKROOM_KEYS")?,
        None => match users.path() {
            Some(db) => {
                let path = keyfile::path_beside(db);
                keyfile::load_or_create(&path)
                    .with_context(|| format!("key file {}", path.display()))?
            }
            None => {
                tracing::warn!(
                    "users database in memory and no keys given: sessions end at restart"
                );
                KeyRing::single(
                    cloakroom::Key::try_generate()
                        .map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?,
                )
            }
        },
    };
    let metrics = Arc::new(Metrics::default());
    let on_store_error = metrics.clone();
    // `__Host-` keeps subdomains from planting the cookie; it requires Secure, so HTTPS only.
    let cookie_name = match (&pycket, https) {
        (Some(_), _) => PYCKET_COOKIE,
        (None, true) => "__Host-session",
        (None, false) => "session",
    };
    let mut layer = SessionLayer::new(store, keys)
        .with_cookie_secure(https)?
        .with_cookie_name(cookie_name)?
        .with_error_handler(move |error| {
            on_store_error.store_error();
            cloakroom::tower::session::default_error_response(error)
        });
    if let Some(secret) = &pycket {
        // pycket's ticket: a Tornado v2 signed value of the session's uuid, read back for 31
        // days as Tornado's `get_secure_cookie` does.
        let ticket = PycketTicket::new(TornadoSecret::single(secret), 31.0);
        layer = layer.with_ticket_format(Arc::new(ticket));
    }
    let state = routes::AppState {
        engine: layer.engine(),
        users,
        passwords: Passwords::new().await?,
        templates: templates::environment()?,
        metrics,
        throttle: throttle::Throttle::new(),
        pycket_ids: pycket.is_some(),
    };
    tracing::info!(config = ?config, secure_cookies = https, "demo configured");
    // CSRF: tokens bound to the session (the `_xsrf` cookie before login), Fetch Metadata
    // and Origin checks on every unsafe request, login and registration included.
    let mut csrf = cloakroom::tower::CsrfLayer::new().with_cookie_secure(https)?;
    if pycket.is_some() {
        // Tornado's way, so the two apps accept each other's tokens: the secret lives in the
        // `_xsrf` cookie (whichever app set it first), readable by scripts as Tornado sets it
        // (Tornado apps' JavaScript reads it to send `X-XSRFToken`).
        csrf = csrf
            .with_mode(CsrfMode::Cookie)
            .with_cookie_http_only(false);
    }
    // The single-page client at /app (and any Angular/axios client): a readable
    // `XSRF-TOKEN` cookie with a token of the same secret, sent back as `X-XSRF-TOKEN`.
    let csrf = csrf.with_spa_cookie(cloakroom::tower::csrf::SpaCookie::default())?;
    let state = Arc::new(state);
    let guard = routes::Guard {
        hosts,
        metrics_here: config.metrics_on_main,
    };
    Ok(Apps {
        metrics: routes::metrics_router(state.clone()),
        main: routes::router(state, layer, csrf, guard),
    })
}

/// pycket's session cookie.
const PYCKET_COOKIE: &str = "PYCKET_ID";

/// Whether the store is pycket's; if so, the Tornado secret it needs.
fn pycket_secret(config: &DemoConfig) -> anyhow::Result<Option<String>> {
    let scheme = config
        .store
        .trim()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    if scheme.as_deref() != Some("pycket+redis") {
        if config.tornado_secret.is_some() {
            tracing::warn!("--tornado-secret is only used with a pycket+redis:// store; ignored");
        }
        return Ok(None);
    }
    match config.tornado_secret.as_deref() {
        Some(secret) if !secret.is_empty() => Ok(Some(secret.to_owned())),
        _ => anyhow::bail!(
            "--store pycket+redis://... needs --tornado-secret (or CLOAKROOM_TORNADO_SECRET): \
             the Tornado app's cookie_secret, which signs pycket's PYCKET_ID cookie"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(!origin_is_https("http://127.0.0.1:8000").unwrap());
        assert!(origin_is_https("https://example.com/").unwrap());
        assert!(origin_is_https("ftp://example.com").is_err());
        assert!(origin_is_https("https://example.com/app").is_err());
        assert!(origin_is_https("https://").is_err());
    }

    #[test]
    fn pycket_stores_need_the_tornado_secret() {
        let mut c = DemoConfig::new("pycket+redis://127.0.0.1:6379/5", "sqlite::memory:");
        let err = pycket_secret(&c).unwrap_err().to_string();
        assert!(err.contains("--tornado-secret"), "{err}");
        c.tornado_secret = Some(String::new());
        assert!(pycket_secret(&c).is_err());
        c.tornado_secret = Some("s3cret".into());
        assert_eq!(pycket_secret(&c).unwrap().as_deref(), Some("s3cret"));
        c.store = "PYCKET+REDIS://h/0".into();
        assert!(pycket_secret(&c).unwrap().is_some());
        c.store = "memory://".into();
        assert_eq!(pycket_secret(&c).unwrap(), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = DemoConfig::new("redis://:hunter2@h/0", "sqlite://u.db");
        c.keys = Some("c2VjcmV0".into());
        c.tornado_secret = Some("tornado-secret".into());
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert!(!text.contains("tornado-secret"), "{text}");
    }
}
