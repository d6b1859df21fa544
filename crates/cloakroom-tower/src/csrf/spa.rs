//! The single-page-app convention ([`SpaCookie`]: a readable `XSRF-TOKEN` cookie that
//! scripts copy into an `X-XSRF-TOKEN` header) and tokenless mode's settings.

use cloakroom_core::cookie::{CookieConfig, cookie_values};
use cloakroom_core::csrf::Secret;
use http::header::{COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response};

use super::Config;

/// The readable token cookie of single-page apps, as Angular's `HttpClient` and axios expect
/// it: a cookie (default `XSRF-TOKEN`) holding a masked token of the expected secret, which
/// the client's script copies into a header (default `X-XSRF-TOKEN`) on unsafe requests.
///
/// Turned on with [`CsrfLayer::with_spa_cookie`](super::CsrfLayer::with_spa_cookie). The
/// cookie takes `Secure`, `SameSite`, `Domain` and `Path` from the layer's `_xsrf` cookie
/// settings, and is never `HttpOnly` (scripts must read it).
///
/// The cookie is only a way to hand the token to scripts: the check is the same as for a
/// token from a page (the header must carry a token of the session's secret, or of the
/// `_xsrf` cookie's before there is a session). The cookie's value is never accepted in
/// place of the header.
///
/// ```
/// use cloakroom_tower::csrf::SpaCookie;
/// use http::HeaderName;
/// let spa = SpaCookie::new()
///     .with_cookie_name("__Host-XSRF-TOKEN")
///     .with_header_name(HeaderName::from_static("x-my-xsrf"));
/// assert_eq!(spa.cookie_name(), "__Host-XSRF-TOKEN");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaCookie {
    cookie_name: String,
    header_name: HeaderName,
    eager: bool,
}

impl Default for SpaCookie {
    fn default() -> Self {
        Self::new()
    }
}

impl SpaCookie {
    /// Angular's and axios's defaults: the cookie `XSRF-TOKEN`, the header `X-XSRF-TOKEN`.
    pub fn new() -> Self {
        SpaCookie {
            cookie_name: "XSRF-TOKEN".into(),
            header_name: HeaderName::from_static("x-xsrf-token"),
            eager: false,
        }
    }

    /// The cookie's name. `__Host-XSRF-TOKEN` keeps sibling subdomains from planting it
    /// (HTTPS only; the client must then be told the name, e.g. Angular's
    /// `withXsrfConfiguration({cookieName})`, axios's `xsrfCookieName`). Checked by
    /// [`CsrfLayer::with_spa_cookie`](super::CsrfLayer::with_spa_cookie).
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The header the client sends the token in. The standard ones (`X-XSRFToken`,
    /// `X-CSRFToken`, `X-XSRF-TOKEN`) are read anyway; this one is read first.
    pub fn with_header_name(mut self, name: HeaderName) -> Self {
        self.header_name = name;
        self
    }

    /// Who gets the cookie. Off (the default): clients that already hold one (kept
    /// current on every answered response: the login's carries the rotated secret's token),
    /// and responses whose handler called
    /// [`CsrfToken::ensure_spa_cookie`](super::CsrfToken::ensure_spa_cookie) (the handler
    /// serving the app). Visitors that never met the app get no cookie. On: every answered
    /// response (Laravel's way), which makes an `_xsrf` secret and cookie for every new
    /// visitor, static files included.
    pub fn with_eager(mut self, eager: bool) -> Self {
        self.eager = eager;
        self
    }

    /// Whether every response hands the cookie out ([`with_eager`](Self::with_eager)).
    pub fn is_eager(&self) -> bool {
        self.eager
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The header's name.
    pub fn header_name(&self) -> &HeaderName {
        &self.header_name
    }

    /// The cookie's settings: the `_xsrf` cookie's, under this name, readable by scripts.
    pub(super) fn cookie_config(&self, xsrf: &CookieConfig) -> CookieConfig {
        let mut cookie = xsrf.clone();
        cookie.name.clone_from(&self.cookie_name);
        cookie.http_only = false;
        cookie
    }

    /// The first value of the cookie the request carries (what a script reading
    /// `document.cookie` finds first).
    pub(super) fn request_value(&self, headers: &HeaderMap) -> Option<String> {
        let values = headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes);
        let first = cookie_values(values, &self.cookie_name).next()?;
        Some(first.to_owned())
    }

    /// Sets the cookie to a fresh masked token of `secret`, unless the request's cookie
    /// (`current`) already holds a token of it.
    pub(super) fn refresh<B>(
        &self,
        config: &Config,
        secret: &Secret,
        current: Option<&str>,
        res: &mut Response<B>,
    ) {
        if current.is_some_and(|c| secret.verify(c).is_ok()) {
            return;
        }
        let value = self
            .cookie_config(&config.cookie)
            .set_cookie(&secret.mask(), None);
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().append(SET_COOKIE, v);
        }
    }
}

/// The settings of the SPA cookie and of tokenless mode, in the layer's `Config`.
#[derive(Clone, Debug, Default)]
pub(super) struct Modes {
    /// The readable token cookie, if on.
    pub(super) spa: Option<SpaCookie>,
    /// Tokenless mode: unsafe requests need only pass the cross-origin check...
    pub(super) tokenless: bool,
    /// ...except on these exact paths, which still need a token.
    pub(super) token_paths: Vec<String>,
}

impl Modes {
    /// Whether an unsafe request to `path` must carry a token.
    pub(super) fn needs_token(&self, path: &str) -> bool {
        !self.tokenless || self.token_paths.iter().any(|p| p == path)
    }
}
