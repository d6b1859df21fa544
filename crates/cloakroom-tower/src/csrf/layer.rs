//! [`CsrfLayer`]: the CSRF settings.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::csrf::CsrfSettings;
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
        f.debug_struct("CsrfLayer")
            .field("settings", &self.config.settings)
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
        CsrfSettings::new().into()
    }

    /// The core settings this layer checks with (what [`From<CsrfSettings>`] takes).
    pub fn settings(&self) -> &CsrfSettings {
        &self.config.settings
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    fn map(self, f: impl FnOnce(CsrfSettings) -> CsrfSettings) -> Self {
        self.edit(|c| c.settings = f(c.settings.clone()))
    }

    fn try_map(
        self,
        f: impl FnOnce(CsrfSettings) -> Result<CsrfSettings, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let settings = f(self.config.settings.clone())?;
        Ok(self.edit(|c| c.settings = settings))
    }

    /// Accepts cross-origin requests from `origin`, exactly `scheme://host[:port]`.
    /// Default: none. Checked here, at configuration time (gorilla/csrf CVE-2025-47909 came
    /// from comparing hosts only).
    ///
    /// # Errors
    /// An origin that is not exactly `scheme://host[:port]`.
    pub fn add_trusted_origin(self, origin: &str) -> Result<Self, ConfigError> {
        self.try_map(|s| s.add_trusted_origin(origin))
    }

    /// Skips every check for requests to exactly this path (no prefix or pattern matching:
    /// Go CVE-2025-47910), compared with the raw request path, the one axum routes on
    /// ([`CsrfSettings::skips_check`](cloakroom_core::csrf::CsrfSettings::skips_check)).
    /// Default: none.
    pub fn add_exempt_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.map(|s| s.add_exempt_path(path))
    }

    /// Largest form body buffered to find the `_xsrf` field; larger ones get a 413.
    /// Default 1 MiB. Clients sending big uploads should put the token in a header.
    pub fn with_body_limit(self, bytes: usize) -> Self {
        self.map(|s| s.with_body_limit(bytes))
    }

    /// Also reads the token from the `_xsrf` query parameter. Default off: URLs leak into
    /// logs and `Referer` headers (why csurf was deprecated).
    pub fn with_query_token(self, enabled: bool) -> Self {
        self.map(|s| s.with_query_token(enabled))
    }

    /// Where the secret is kept. Default [`CsrfMode::Auto`].
    pub fn with_mode(self, mode: CsrfMode) -> Self {
        self.map(|s| s.with_mode(mode))
    }

    /// The `_xsrf` cookie's name. Default `_xsrf` (Tornado's); `__Host-xsrf` is stronger on
    /// HTTPS sites (subdomains cannot plant it) but not Tornado-compatible.
    ///
    /// # Errors
    /// A bad name, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        self.try_map(|s| s.with_cookie_name(name))
    }

    /// `Secure` on the `_xsrf` cookie. Default on; turn off for `http://` development.
    ///
    /// # Errors
    /// Turning it off with a `__Host-`/`__Secure-` name.
    pub fn with_cookie_secure(self, secure: bool) -> Result<Self, ConfigError> {
        self.try_map(|s| s.with_cookie_secure(secure))
    }

    /// `HttpOnly` on the `_xsrf` cookie. Default on (pages carry the token; scripts read it
    /// from the page). Turn off for JavaScript that reads the cookie, as Tornado apps do.
    pub fn with_cookie_http_only(self, http_only: bool) -> Self {
        self.map(|s| s.with_cookie_http_only(http_only))
    }

    /// The `_xsrf` cookie's `Domain`. Default none (host-only). Tornado apps on sibling
    /// subdomains need the shared parent domain here.
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie.
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        let domain = domain.into();
        self.try_map(|s| s.with_cookie_domain(domain))
    }

    /// The response for refused requests: anything implementing [`OnRejection`], closures
    /// `Fn(&ProtectionError, ResponseFormat) -> Response<String>` included. Default:
    /// [`default_rejection`].
    pub fn with_rejection_handler(self, handler: impl OnRejection) -> Self {
        let handler: Arc<dyn OnRejection> = Arc::new(handler);
        self.edit(|c| c.on_reject = handler)
    }
}

impl From<CsrfSettings> for CsrfLayer {
    /// A layer checking with `settings` and answering refusals with [`default_rejection`].
    fn from(settings: CsrfSettings) -> Self {
        CsrfLayer {
            config: Arc::new(Config {
                settings,
                on_reject: Arc::new(default_rejection),
            }),
        }
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
        CsrfSettings::tokenless().into()
    }

    /// In [tokenless](Self::tokenless) mode, still requires a token on unsafe requests to
    /// this path (no prefix or pattern matching), e.g. `/login` against login CSRF from
    /// browsers without Fetch Metadata, in every spelling a router could map onto it
    /// (`/%6Cogin`, `//login/`, ...: [`CsrfSettings::needs_token`](cloakroom_core::csrf::CsrfSettings::needs_token)).
    /// Without tokenless mode every path needs a token anyway. Default: none.
    pub fn add_token_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.map(|s| s.add_token_path(path))
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
    /// A bad cookie or header name, or a prefix the cookie settings break (`__Host-` needs
    /// `Secure` and no `Domain`).
    pub fn with_spa_cookie(self, spa: SpaCookie) -> Result<Self, ConfigError> {
        self.try_map(|s| s.with_spa_cookie(spa))
    }
}
