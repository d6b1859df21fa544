//! [`SpaCookie`]: the single-page-app convention, a readable `XSRF-TOKEN` cookie that
//! scripts copy into an `X-XSRF-TOKEN` header.

use crate::cookie::{CookieConfig, cookie_values};

use super::Secret;

/// The readable token cookie of single-page apps, as Angular's `HttpClient` and axios expect
/// it: a cookie (default `XSRF-TOKEN`) holding a masked token of the expected secret, which
/// the client's script copies into a header (default `X-XSRF-TOKEN`) on unsafe requests.
///
/// Turned on with [`CsrfSettings::with_spa_cookie`](super::CsrfSettings::with_spa_cookie)
/// (and the adapters' setters of the same name). The cookie takes `Secure`, `SameSite`,
/// `Domain` and `Path` from the `_xsrf` cookie settings, and is never `HttpOnly` (scripts
/// must read it).
///
/// The cookie is only a way to hand the token to scripts: the check is the same as for a
/// token from a page (the header must carry a token of the session's secret, or of the
/// `_xsrf` cookie's before there is a session). The cookie's value is never accepted in
/// place of the header.
///
/// ```
/// use cloakroom_core::csrf::{CsrfSettings, SpaCookie};
/// let spa = SpaCookie::new()
///     .with_cookie_name("__Host-XSRF-TOKEN")
///     .with_header_name("X-My-XSRF");
/// let settings = CsrfSettings::new().with_spa_cookie(spa).unwrap();
/// // A name is checked when the cookie is turned on.
/// let bad = SpaCookie::new().with_header_name("X My XSRF");
/// assert!(CsrfSettings::new().with_spa_cookie(bad).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaCookie {
    cookie_name: String,
    header_name: String,
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
            header_name: "x-xsrf-token".into(),
            eager: false,
        }
    }

    /// The cookie's name. `__Host-XSRF-TOKEN` keeps sibling subdomains from planting it
    /// (HTTPS only; the client must then be told the name, e.g. Angular's
    /// `withXsrfConfiguration({cookieName})`, axios's `xsrfCookieName`). Checked when the
    /// cookie is turned on.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The header the client sends the token in: an `http::HeaderName` (of either `http`
    /// version) or a string, compared without case. The standard ones (`X-XSRFToken`,
    /// `X-CSRFToken`, `X-XSRF-TOKEN`) are read anyway; this one is read first. Checked when
    /// the cookie is turned on.
    pub fn with_header_name(mut self, name: impl AsRef<str>) -> Self {
        self.header_name = name.as_ref().to_ascii_lowercase();
        self
    }

    /// Who gets the cookie. Off (the default): clients that already hold one (kept
    /// current on every answered response: the login's carries the rotated secret's token),
    /// and responses whose handler called `CsrfToken::ensure_spa_cookie` (the handler
    /// serving the app). Visitors that never met the app get no cookie. On: every answered
    /// response (Laravel's way), which makes an `_xsrf` secret and cookie for every new
    /// visitor, static files included.
    pub fn with_eager(mut self, eager: bool) -> Self {
        self.eager = eager;
        self
    }

    /// Whether every response hands the cookie out ([`with_eager`](Self::with_eager)).
    pub(crate) fn is_eager(&self) -> bool {
        self.eager
    }

    /// The header's name, in lower case.
    pub(crate) fn header_name(&self) -> &str {
        &self.header_name
    }

    /// Whether the header name is an RFC 9110 token (anything else matches no header).
    pub(super) fn header_name_is_valid(&self) -> bool {
        !self.header_name.is_empty()
            && self
                .header_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// The cookie's settings: the `_xsrf` cookie's, under this name, readable by scripts.
    pub(super) fn cookie_config(&self, xsrf: &CookieConfig) -> CookieConfig {
        let mut cookie = xsrf.clone();
        cookie.name.clone_from(&self.cookie_name);
        cookie.http_only = false;
        cookie
    }

    /// The first value of the cookie among these `Cookie` headers (what a script reading
    /// `document.cookie` finds first).
    pub(super) fn request_value<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a [u8]>,
    ) -> Option<String> {
        let first = cookie_values(cookie_headers, &self.cookie_name).next()?;
        Some(first.to_owned())
    }

    /// The `Set-Cookie` value of a fresh masked token of `secret`, unless the request's
    /// cookie (`current`) already holds a token of it.
    pub(super) fn refresh(
        &self,
        xsrf: &CookieConfig,
        secret: &Secret,
        current: Option<&str>,
    ) -> Option<String> {
        if current.is_some_and(|c| secret.verify(c).is_ok()) {
            return None;
        }
        Some(self.cookie_config(xsrf).set_cookie(&secret.mask(), None))
    }
}
