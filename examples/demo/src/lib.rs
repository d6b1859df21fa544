//! The login app of the original Tornado + pycket tutorial, rebuilt on Cloakroom and axum.
//!
//! Register, log in (optionally "remember me"), keep notes in your session, see and revoke
//! your other sessions, log out. Accounts live in a SQLite `users` table; sessions live in
//! whatever store the `--store` URL names.
//!
//! [`app`] builds the whole application as an [`axum::Router`], so tests drive it with
//! `tower::ServiceExt::oneshot`, no sockets needed:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = cloakroom_demo::DemoConfig::new("memory://", "sqlite://users.db");
//! let app = cloakroom_demo::app(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod keyfile;
mod metrics;
mod passwords;
mod routes;
mod templates;
mod users;

use std::fmt;
use std::sync::Arc;

use anyhow::Context as _;
use cloakroom::{KeyRing, SessionLayer};

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
    /// Tornado's `cookie_secret`, for a later pycket-compatible mode. Unused for now.
    pub tornado_secret: Option<String>,
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
    let https = origin_is_https(&config.origin)?;
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
    let cookie_name = if https { "__Host-session" } else { "session" };
    let layer = SessionLayer::new(store, keys)
        .with_secure(https)?
        .with_cookie_name(cookie_name)?
        .with_error_handler(move |error| {
            on_store_error.store_error();
            cloakroom::tower::session::default_error_response(error)
        });
    let state = routes::AppState {
        engine: layer.engine(),
        users,
        passwords: Passwords::new().await?,
        templates: templates::environment()?,
        metrics,
    };
    tracing::info!(config = ?config, secure_cookies = https, "demo configured");
    // CSRF: tokens bound to the session (the `_xsrf` cookie before login), Fetch Metadata
    // and Origin checks on every unsafe request, login and registration included.
    let csrf = cloakroom::tower::CsrfLayer::new().with_secure_cookie(https)?;
    Ok(routes::router(Arc::new(state), layer, csrf))
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
