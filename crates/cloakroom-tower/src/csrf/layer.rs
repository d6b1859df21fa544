//! [`CsrfLayer`]: the CSRF settings.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::cookie::{CookieConfig, SameSite};
use cloakroom_core::csrf::{FIELD_NAME, Origin};
use tower_layer::Layer;

use super::{Config, CsrfMode, CsrfService, OnRejection, SpaCookie, default_rejection};
use crate::session::ConfigError;

/// The CSRF middleware. Cheap to clone.
#[derive(Clone)]
#[must_use]
pub struct CsrfLayer {
    config: Arc<Config>,
}

impl fmt::Debug for CsrfLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("CsrfLayer")
            .field("trusted", &c.trusted)
            .field("exempt", &c.exempt)
            .field("body_limit", &c.body_limit)
            .field("query_token", &c.query_token)
            .field("mode", &c.mode)
            .field("cookie", &c.cookie)
            .finish_non_exhaustive()
    }
}

impl Default for CsrfLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CsrfLayer {
    /// Protection with the defaults: no trusted origins, no exempt paths, 1 MiB form body
    /// limit, tokens never read from the query string, [`CsrfMode::Auto`], and a `_xsrf`
    /// cookie that is `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`.
    pub fn new() -> Self {
        let mut cookie = CookieConfig::new(FIELD_NAME);
        cookie.same_site = SameSite::Lax;
        CsrfLayer {
            config: Arc::new(Config {
                trusted: Vec::new(),
                exempt: Vec::new(),
                body_limit: 1 << 20,
                query_token: false,
                mode: CsrfMode::Auto,
                cookie,
                on_reject: Arc::new(default_rejection),
                modes: super::spa::Modes::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Accepts cross-origin requests from `origin`, exactly `scheme://host[:port]`.
    /// Default: none. Checked here, at configuration time (gorilla/csrf CVE-2025-47909 came
    /// from comparing hosts only).
    ///
    /// # Errors
    /// An origin that is not exactly `scheme://host[:port]`.
    pub fn add_trusted_origin(self, origin: &str) -> Result<Self, ConfigError> {
        let origin = Origin::parse(origin)?;
        Ok(self.edit(|c| c.trusted.push(origin)))
    }

    /// Skips every check for requests to exactly this path (no prefix or pattern matching:
    /// Go CVE-2025-47910). Default: none.
    pub fn add_exempt_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit(|c| c.exempt.push(path))
    }

    /// Largest form body buffered to find the `_xsrf` field; larger ones get a 413.
    /// Default 1 MiB. Clients sending big uploads should put the token in a header.
    pub fn with_body_limit(self, bytes: usize) -> Self {
        self.edit(|c| c.body_limit = bytes)
    }

    /// Also reads the token from the `_xsrf` query parameter. Default off: URLs leak into
    /// logs and `Referer` headers (why csurf was deprecated).
    pub fn with_query_token(self, enabled: bool) -> Self {
        self.edit(|c| c.query_token = enabled)
    }

    /// Where the secret is kept. Default [`CsrfMode::Auto`].
    pub fn with_mode(self, mode: CsrfMode) -> Self {
        self.edit(|c| c.mode = mode)
    }

    /// The `_xsrf` cookie's name. Default `_xsrf` (Tornado's); `__Host-xsrf` is stronger on
    /// HTTPS sites (subdomains cannot plant it) but not Tornado-compatible.
    ///
    /// # Errors
    /// A bad name, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        let mut cookie = self.config.cookie.clone();
        cookie.name = name;
        cookie.validate()?;
        Ok(self.edit(|c| c.cookie = cookie))
    }

    /// `Secure` on the `_xsrf` cookie. Default on; turn off for `http://` development.
    ///
    /// # Errors
    /// Turning it off with a `__Host-`/`__Secure-` name.
    pub fn with_cookie_secure(self, secure: bool) -> Result<Self, ConfigError> {
        let mut cookie = self.config.cookie.clone();
        cookie.secure = secure;
        cookie.validate()?;
        Ok(self.edit(|c| c.cookie = cookie))
    }

    /// `HttpOnly` on the `_xsrf` cookie. Default on (pages carry the token; scripts read it
    /// from the page). Turn off for JavaScript that reads the cookie, as Tornado apps do.
    pub fn with_cookie_http_only(self, http_only: bool) -> Self {
        self.edit(|c| c.cookie.http_only = http_only)
    }

    /// The `_xsrf` cookie's `Domain`. Default none (host-only). Tornado apps on sibling
    /// subdomains need the shared parent domain here.
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie.
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        let mut cookie = self.config.cookie.clone();
        cookie.domain = Some(domain.into());
        cookie.validate()?;
        Ok(self.edit(|c| c.cookie = cookie))
    }

    /// The response for refused requests: anything implementing [`OnRejection`], closures
    /// `Fn(&ProtectionError, ResponseFormat) -> Response<String>` included. Default:
    /// [`default_rejection`].
    pub fn with_rejection_handler(self, handler: impl OnRejection) -> Self {
        let handler: Arc<dyn OnRejection> = Arc::new(handler);
        self.edit(|c| c.on_reject = handler)
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CsrfService::new(inner, self.config.clone())
    }
}

/// Single-page apps and tokenless mode.
impl CsrfLayer {
    /// Tokenless protection: unsafe requests need only pass the cross-origin check
    /// (Fetch Metadata, then `Origin` against `Host`; see
    /// [`check_cross_origin`](cloakroom_core::csrf::check_cross_origin)), no token, except
    /// on the paths given to [`add_token_path`](Self::add_token_path). Everything else is
    /// as [`new`](Self::new) sets it.
    ///
    /// Same-origin requests pass; cross-site *and same-site* ones (a sibling subdomain,
    /// `Sec-Fetch-Site: same-site`) are refused unless their origin is trusted. A request
    /// with neither `Sec-Fetch-Site` nor `Origin` passes: that is a non-browser client or a
    /// browser from before 2020, which this mode does not protect (see the
    /// [module docs](super)).
    pub fn tokenless() -> Self {
        Self::new().edit(|c| c.modes.tokenless = true)
    }

    /// In [tokenless](Self::tokenless) mode, still requires a token on unsafe requests to
    /// exactly this path (no prefix or pattern matching), e.g. `/login` against login CSRF
    /// from browsers without Fetch Metadata. Without tokenless mode every path needs a token
    /// anyway. Default: none.
    pub fn add_token_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit(|c| c.modes.token_paths.push(path))
    }

    /// Turns on the single-page-app convention: the [`SpaCookie`] cookie, readable by
    /// scripts, holds a masked token of the current secret (the session's, or the `_xsrf`
    /// cookie's before there is a session), and its header is read for tokens. It is handed
    /// out by the handler serving the app
    /// ([`CsrfToken::ensure_spa_cookie`](super::CsrfToken::ensure_spa_cookie); or by every
    /// response with [`SpaCookie::with_eager`]) and, on every answered response to a client
    /// holding it, replaced when it no longer holds a token of the current secret: a login's
    /// response carries the rotated secret's token, a logout's the `_xsrf` secret's.
    /// The cookie copies `Secure`, `SameSite`, `Domain` and `Path` from the `_xsrf` cookie
    /// settings, so set those first. Default: off.
    ///
    /// Checking a client's cookie against the current secret loads the session when the
    /// request has a session cookie and the handler did not load it. Refused requests get no
    /// new cookie.
    ///
    /// # Errors
    /// A bad cookie name, or a prefix the cookie settings break (`__Host-` needs `Secure`
    /// and no `Domain`).
    pub fn with_spa_cookie(self, spa: SpaCookie) -> Result<Self, ConfigError> {
        spa.cookie_config(&self.config.cookie).validate()?;
        Ok(self.edit(|c| c.modes.spa = Some(spa)))
    }
}
