//! [`Demo`]: the demo opened from its [`DemoConfig`] (store, accounts, keys, session
//! settings), and [`AppState`], what every page shares.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use cloakroom::csrf::{CsrfMode, CsrfSettings, SpaCookie, TokenSource};
use cloakroom::session::{Session, Transport};
use cloakroom::tornado::TornadoSecret;
use cloakroom::{KeyRing, PycketTicket, SessionEngine, SessionSettings};
use cloakroom_core::recent_login::RecentLogin;
use http::StatusCode;
use minijinja::{Environment, Value, context};

use crate::config::{DbscMode, DemoConfig, origin_is_https, pycket_secret};
use crate::error::AppError;
use crate::hosts::AllowedHosts;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::proxies::TrustedProxies;
use crate::reply::{Reply, html};
use crate::throttle::Throttle;
use crate::users::Users;
use crate::{keyfile, templates};
use cloakroom::dbsc::{DbscPolicy, DbscSettings};

/// pycket's session cookie.
pub const PYCKET_COOKIE: &str = "PYCKET_ID";

/// What a page returns: a response, or a failure that becomes one.
pub type Handled = Result<Reply, AppError>;

/// The demo, opened: what both frameworks wire into their session and CSRF middleware and
/// their routes.
#[derive(Debug)]
pub struct Demo {
    /// What every page shares.
    pub state: Arc<AppState>,
    /// The session engine (store, keys, cookie name and `Secure`, pycket's ticket), for the
    /// framework's session middleware; [`AppState`] shares it.
    pub sessions: SessionEngine,
    /// The CSRF settings, for the framework's CSRF middleware.
    pub csrf: CsrfSettings,
    /// The `Host` values the demo answers for.
    pub hosts: AllowedHosts,
    /// Whether the main listener serves `/metrics`.
    pub metrics_on_main: bool,
    /// The recent-login guard's settings (`--recent-login-window`, the confirm page
    /// `/confirm`, the login page `/login`), for the framework's guard on the sensitive
    /// routes.
    pub recent_login: RecentLogin,
}

impl Demo {
    /// Opens the session store and the users database, loads (or makes) the keys, and
    /// settles the session settings.
    ///
    /// # Errors
    /// A bad origin, key list, `--allowed-host` or `--trusted-proxy`, or a store or database
    /// that cannot be opened.
    pub async fn open(config: DemoConfig) -> anyhow::Result<Demo> {
        let https = origin_is_https(&config.origin)?;
        let hosts = AllowedHosts::new(&config.origin, &config.allowed_hosts)?;
        let proxies = TrustedProxies::new(&config.trusted_proxies)?;
        let pycket = pycket_secret(&config)?;
        // The users first: they create their database file private (0600) before the session
        // store, which may share it (the default), opens it; SQLite would create it 0644.
        let users = Users::open(&config.users)
            .await
            .context("cannot open the users database")?;
        let store = cloakroom::store::open(&config.store)
            .await
            .context("cannot open the session store")?;
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
        // The session cookie is `__Host-session` over HTTPS (the engine's default for a
        // Secure, host-only, `Path=/` cookie: subdomains cannot plant it) and `session` over
        // plain HTTP, where browsers refuse the prefix.
        let mut sessions = SessionSettings::new(store, keys)
            .with_cookie_secure(https)?
            .with_sealed_data(config.seal_session_data)?
            // API clients (curl, apps) carry the ticket as `Authorization: Bearer <ticket>`.
            .with_transport(Transport::CookieAndHeader);
        if let Some(dbsc) = dbsc_settings(&config)? {
            sessions = sessions.with_dbsc(dbsc);
        }
        if let Some(max) = config.max_sessions_per_user {
            sessions = sessions
                .with_max_sessions_per_user(max)?
                .with_session_limit_policy(config.session_limit_policy.policy());
        }
        if let Some(secret) = &pycket {
            // pycket's ticket: a Tornado v2 signed value of the session's uuid, read back for
            // 31 days as Tornado's `get_secure_cookie` does. Refused with sealed data.
            let ticket = PycketTicket::new(TornadoSecret::single(secret), 31.0)?;
            sessions = (sessions.with_cookie_name(PYCKET_COOKIE)?)
                .with_ticket_format(Arc::new(ticket))
                .context("--seal-session-data cannot be used with a pycket store")?;
        }
        let sessions = sessions.build();
        let metrics = Arc::new(Metrics::default());
        metrics.observe();
        let state = AppState {
            engine: sessions.clone(),
            users,
            passwords: Passwords::new().await?,
            templates: templates::environment()?,
            metrics,
            throttle: Throttle::new(),
            proxies,
            pycket_ids: pycket.is_some(),
        };
        tracing::info!(config = ?config, secure_cookies = https, "demo configured");
        Ok(Demo {
            state: Arc::new(state),
            sessions,
            csrf: csrf_settings(https, pycket.is_some())?,
            hosts,
            metrics_on_main: config.metrics_on_main,
            recent_login: RecentLogin::new(config.recent_login_window, "/confirm")?
                .with_login_url("/login")?,
        })
    }
}

/// DBSC as `--dbsc` asks, scoped to the origin; `None` when off.
fn dbsc_settings(config: &DemoConfig) -> anyhow::Result<Option<DbscSettings>> {
    let policy = match config.dbsc {
        DbscMode::Off => return Ok(None),
        DbscMode::Optional => DbscPolicy::Optional,
        DbscMode::Required => DbscPolicy::Required,
    };
    let origin = config.origin.strip_suffix('/').unwrap_or(&config.origin);
    let settings = DbscSettings::new(origin)?
        .with_policy(policy)
        .with_bound_lifetime(config.dbsc_bound_lifetime)?;
    Ok(Some(settings))
}

/// CSRF: tokens bound to the session (the `_xsrf` cookie before login), Fetch Metadata and
/// Origin checks on every unsafe request, login and registration included.
fn csrf_settings(https: bool, pycket: bool) -> anyhow::Result<CsrfSettings> {
    // `/api/login` answers a ticket, never a cookie: a forged request logs no browser in.
    let mut csrf = CsrfSettings::new()
        .with_cookie_secure(https)?
        .add_exempt_path("/api/login");
    if pycket {
        // Tornado's way, so the two apps accept each other's tokens: the secret lives in the
        // `_xsrf` cookie (whichever app set it first), readable by scripts as Tornado sets it
        // (Tornado apps' JavaScript reads it to send `X-XSRFToken`).
        csrf = csrf
            .with_mode(CsrfMode::Cookie)
            .with_cookie_http_only(false);
    }
    // The single-page client at /app (and any Angular/axios client): a readable
    // `XSRF-TOKEN` cookie with a token of the same secret, sent back as `X-XSRF-TOKEN`.
    Ok(csrf.with_spa_cookie(SpaCookie::default())?)
}

/// What every page shares.
#[derive(Debug)]
pub struct AppState {
    /// For listing and revoking a user's sessions (with the store timeout applied).
    pub(crate) engine: SessionEngine,
    pub(crate) users: Users,
    pub(crate) passwords: Passwords,
    pub(crate) templates: Environment<'static>,
    pub(crate) metrics: Arc<Metrics>,
    /// Failed-login budgets per account and per client address.
    pub(crate) throttle: Throttle,
    /// Whose forwarding headers name the client (`--trusted-proxy`).
    pub(crate) proxies: TrustedProxies,
    /// Sessions shared with a Tornado + pycket app: a session whose `ID` field is set counts
    /// as logged in as that name even without a Cloakroom login (the Tornado app's login is
    /// `self.session.set('ID', name)`).
    pub(crate) pycket_ids: bool,
}

impl AppState {
    /// The demo's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The client's address: `peer` (the TCP peer; `None` in in-process tests), or behind a
    /// trusted proxy the address its `Forwarded` / `X-Forwarded-For` lines name (see
    /// [`TrustedProxies::client`]).
    pub fn client_address<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl IntoIterator<Item = &'a [u8]>,
        x_forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        peer.map(|peer| self.proxies.client(peer, forwarded, x_forwarded_for))
    }

    /// The session engine (the one the session middleware runs).
    pub fn engine(&self) -> &SessionEngine {
        &self.engine
    }

    /// Who the session is logged in as: its login, or (sessions shared with Tornado) the
    /// name in its `ID` field.
    pub(crate) async fn user_of(&self, session: &Session) -> Result<Option<String>, AppError> {
        if let Some(user) = session.user().await? {
            return Ok(Some(user));
        }
        if !self.pycket_ids {
            return Ok(None);
        }
        Ok(match session.get::<serde_json::Value>("ID").await? {
            Some(serde_json::Value::String(name)) if !name.is_empty() => Some(name),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    }

    /// Renders `template` with the page basics (the user, the pending flash messages, which
    /// this render consumes, and the CSRF field) plus `extra`.
    pub(crate) async fn page(
        &self,
        visit: &Visit,
        status: StatusCode,
        template: &str,
        extra: Value,
    ) -> Handled {
        let user = self.user_of(visit).await?;
        let flashes = visit.flash().take().await?;
        let ctx = context! {
            user,
            flashes,
            csrf_field => visit.csrf_field().await?,
            csrf_token => visit.csrf_token().await?,
            ..extra
        };
        self.render(status, template, ctx)
    }

    pub(crate) fn render(&self, status: StatusCode, template: &str, ctx: Value) -> Handled {
        let page = self.templates.get_template(template)?.render(ctx)?;
        Ok(html(status, page))
    }

    pub(crate) async fn error_page(
        &self,
        visit: &Visit,
        status: StatusCode,
        title: &str,
        message: &str,
    ) -> Handled {
        self.page(visit, status, "error.html", context! { title, message })
            .await
    }

    /// A form body the framework could not read: its status and reason on the error page.
    pub(crate) async fn bad_input(&self, visit: &Visit, bad: &BadInput) -> Handled {
        self.error_page(visit, bad.status, "Bad request", &bad.message)
            .await
    }
}

/// A request body that could not be read (wrong content type, bad encoding, missing field):
/// the status and the reason to show.
#[derive(Debug, Clone)]
pub struct BadInput {
    /// 400, 413, 415 or 422.
    pub status: StatusCode,
    /// Why, for the page.
    pub message: String,
}

/// What a page gets: the request's session and its CSRF token source.
#[derive(Debug)]
pub struct Visit {
    session: Session,
    csrf: TokenSource,
}

impl Visit {
    /// The request's session and CSRF token source (what the framework's `CsrfToken` derefs to).
    pub fn new(session: Session, csrf: TokenSource) -> Self {
        Visit { session, csrf }
    }

    /// The hidden CSRF form field, in every form: `<input type="hidden" name="_xsrf" ...>`
    /// with a token masked afresh for this render (the secret is the session's, or, before
    /// login, the `_xsrf` cookie's).
    pub(crate) async fn csrf_field(&self) -> Result<String, AppError> {
        let token = self.csrf.token().await?;
        Ok(format!(
            "<input type=\"hidden\" name=\"_xsrf\" value=\"{token}\">"
        ))
    }

    /// The bare token, for the page's `<meta name="xsrf-token">` (read by the notes script,
    /// which sends it as `X-XSRFToken`).
    pub(crate) async fn csrf_token(&self) -> Result<String, AppError> {
        Ok(self.csrf.token().await?)
    }
}

impl std::ops::Deref for Visit {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}
