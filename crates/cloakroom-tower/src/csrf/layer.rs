//! [`CsrfLayer`]: the CSRF settings.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::cookie::{CookieConfig, SameSite};
use cloakroom_core::csrf::{FIELD_NAME, Origin};
use tower_layer::Layer;

use super::{Config, CsrfMode, CsrfService, OnRejection, default_rejection};
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
    pub fn with_trusted_origin(self, origin: &str) -> Result<Self, ConfigError> {
        let origin = Origin::parse(origin).map_err(|e| ConfigError::new(e.to_string()))?;
        Ok(self.edit(|c| c.trusted.push(origin)))
    }

    /// Skips every check for requests to exactly this path (no prefix or pattern matching:
    /// Go CVE-2025-47910). Default: none.
    pub fn with_exempt_path(self, path: impl Into<String>) -> Self {
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
    pub fn with_secure_cookie(self, secure: bool) -> Result<Self, ConfigError> {
        let mut cookie = self.config.cookie.clone();
        cookie.secure = secure;
        cookie.validate()?;
        Ok(self.edit(|c| c.cookie = cookie))
    }

    /// `HttpOnly` on the `_xsrf` cookie. Default on (pages carry the token; scripts read it
    /// from the page). Turn off for JavaScript that reads the cookie, as Tornado apps do.
    pub fn with_http_only_cookie(self, http_only: bool) -> Self {
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
