//! [`CsrfSettings`]: what the CSRF protection checks and which cookies it sets, the one set
//! of settings every adapter's CSRF middleware wraps (the tower `CsrfLayer`, the actix
//! `CsrfMiddleware`), with the same setters and defaults.

use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::{CookieConfig, SameSite};

use super::path::canonical;
use super::{FIELD_NAME, Origin, SpaCookie, is_safe_method};

/// Where the expected secret is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CsrfMode {
    /// In the session when the request has one (rotated by `login`), otherwise in the
    /// `_xsrf` cookie. The default.
    #[default]
    Auto,
    /// Always in the `_xsrf` cookie, as Tornado keeps it (for sharing tokens with a Tornado
    /// app on the same domain).
    Cookie,
}

/// The CSRF settings. Cheap enough to clone at configuration time; adapters keep one behind
/// an `Arc`.
///
/// ```
/// use cloakroom_core::csrf::CsrfSettings;
/// let settings = CsrfSettings::new()
///     .add_trusted_origin("https://partner.example").unwrap()
///     .add_exempt_path("/webhooks/stripe");
/// assert_eq!(settings.body_limit(), 1 << 20);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CsrfSettings {
    pub(super) trusted: Vec<Origin>,
    pub(super) exempt: Vec<String>,
    pub(super) body_limit: usize,
    pub(super) query_token: bool,
    pub(super) mode: CsrfMode,
    pub(super) cookie: CookieConfig,
    /// The readable token cookie of single-page apps, if on.
    pub(super) spa: Option<SpaCookie>,
    /// Tokenless mode: unsafe requests need only pass the cross-origin check...
    pub(super) tokenless: bool,
    /// ...except on these paths, which still need a token: their [`canonical`] forms,
    /// computed once here rather than on every request.
    pub(super) token_paths: Vec<Vec<u8>>,
}

impl Default for CsrfSettings {
    fn default() -> Self {
        Self::new()
    }
}

impl CsrfSettings {
    /// Protection with the defaults: no trusted origins, no exempt paths, 1 MiB form body
    /// limit, tokens never read from the query string, [`CsrfMode::Auto`], and a `_xsrf`
    /// cookie that is `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`.
    pub fn new() -> Self {
        let mut cookie = CookieConfig::new(FIELD_NAME);
        cookie.same_site = SameSite::Lax;
        CsrfSettings {
            trusted: Vec::new(),
            exempt: Vec::new(),
            body_limit: 1 << 20,
            query_token: false,
            mode: CsrfMode::Auto,
            cookie,
            spa: None,
            tokenless: false,
            token_paths: Vec::new(),
        }
    }

    /// Tokenless protection: unsafe requests need only pass the cross-origin check
    /// (Fetch Metadata, then `Origin` against `Host`), no token, except on the paths
    /// given to [`add_token_path`](Self::add_token_path). Everything else is as
    /// [`new`](Self::new) sets it.
    ///
    /// Same-origin requests pass; cross-site *and same-site* ones (a sibling subdomain,
    /// `Sec-Fetch-Site: same-site`) are refused unless their origin is trusted. A request
    /// with neither `Sec-Fetch-Site` nor `Origin` passes: that is a non-browser client or a
    /// browser from before 2020, which this mode does not protect.
    pub fn tokenless() -> Self {
        CsrfSettings {
            tokenless: true,
            ..Self::new()
        }
    }

    /// Accepts cross-origin requests from `origin`, exactly `scheme://host[:port]`.
    /// Default: none. Checked here, at configuration time (gorilla/csrf CVE-2025-47909 came
    /// from comparing hosts only).
    ///
    /// # Errors
    /// An origin that is not exactly `scheme://host[:port]`.
    pub fn add_trusted_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        self.trusted.push(Origin::parse(origin)?);
        Ok(self)
    }

    /// Skips every check for requests to exactly this path (no prefix or pattern matching:
    /// Go CVE-2025-47910), compared with the path the router matches: the raw path on axum,
    /// the percent-decoded one on actix-web, so the exemption covers exactly the requests
    /// the router routes here (see [`skips_check`](Self::skips_check)). Default: none.
    pub fn add_exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exempt.push(path.into());
        self
    }

    /// Largest form body buffered to find the `_xsrf` field; larger ones get a 413.
    /// Default 1 MiB. Clients sending big uploads should put the token in a header.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Also reads the token from the `_xsrf` query parameter. Default off: URLs leak into
    /// logs and `Referer` headers (why csurf was deprecated).
    pub fn with_query_token(mut self, enabled: bool) -> Self {
        self.query_token = enabled;
        self
    }

    /// Where the secret is kept. Default [`CsrfMode::Auto`].
    pub fn with_mode(mut self, mode: CsrfMode) -> Self {
        self.mode = mode;
        self
    }

    /// The `_xsrf` cookie's name. Default `_xsrf` (Tornado's); `__Host-xsrf` is stronger on
    /// HTTPS sites (subdomains cannot plant it) but not Tornado-compatible.
    ///
    /// # Errors
    /// A bad name, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        self.edit_cookie(|c| c.name = name)
    }

    /// `Secure` on the `_xsrf` cookie. Default on; turn off for `http://` development.
    ///
    /// # Errors
    /// Turning it off with a `__Host-`/`__Secure-` name.
    pub fn with_cookie_secure(self, secure: bool) -> Result<Self, ConfigError> {
        self.edit_cookie(|c| c.secure = secure)
    }

    /// `HttpOnly` on the `_xsrf` cookie. Default on (pages carry the token; scripts read it
    /// from the page). Turn off for JavaScript that reads the cookie, as Tornado apps do.
    pub fn with_cookie_http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// The `_xsrf` cookie's `Domain`. Default none (host-only). Tornado apps on sibling
    /// subdomains need the shared parent domain here.
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie.
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        let domain = domain.into();
        self.edit_cookie(|c| c.domain = Some(domain))
    }

    /// In [tokenless](Self::tokenless) mode, still requires a token on unsafe requests to
    /// this path (no prefix or pattern matching), e.g. `/login` against login CSRF from
    /// browsers without Fetch Metadata, in every spelling a router could map onto it
    /// (see [`needs_token`](Self::needs_token)). Without tokenless mode every path needs a
    /// token anyway. Default: none.
    pub fn add_token_path(mut self, path: impl Into<String>) -> Self {
        self.token_paths.push(canonical(&path.into()));
        self
    }

    /// Turns on the single-page-app convention: the [`SpaCookie`] cookie, readable by
    /// scripts, holds a masked token of the current secret (the session's, or the `_xsrf`
    /// cookie's before there is a session), and its header is read for tokens. It is handed
    /// out by the handler serving the app (`CsrfToken::ensure_spa_cookie`; or by every
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
    pub fn with_spa_cookie(mut self, spa: SpaCookie) -> Result<Self, ConfigError> {
        spa.cookie_config(&self.cookie).validate()?;
        if !spa.header_name_is_valid() {
            // Reported as a name that is not a token, the rule a header name shares.
            return Err(ConfigError::new(
                ConfigErrorKind::CookieName,
                "SPA header name",
                spa.header_name(),
            ));
        }
        self.spa = Some(spa);
        Ok(self)
    }

    fn edit_cookie(mut self, f: impl FnOnce(&mut CookieConfig)) -> Result<Self, ConfigError> {
        let mut cookie = self.cookie.clone();
        f(&mut cookie);
        cookie.validate()?;
        self.cookie = cookie;
        Ok(self)
    }

    /// The largest form body read for the `_xsrf` field
    /// ([`with_body_limit`](Self::with_body_limit)).
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Whether a request passes without any check: a safe method (GET, HEAD, OPTIONS) or an
    /// exempt path. `path` is the path the router matches (axum: the raw `uri.path()`;
    /// actix-web: `match_info().as_str()`, percent-decoded but for `%2F`, `%25`, `%2B`),
    /// compared byte for byte with the exempt paths: no decoding, no slash or case folding,
    /// so an exemption never reaches a path the router sends elsewhere.
    ///
    /// ```
    /// use cloakroom_core::csrf::CsrfSettings;
    /// let s = CsrfSettings::new().add_exempt_path("/hook");
    /// assert!(s.skips_check("POST", "/hook"));
    /// assert!(!s.skips_check("POST", "/hook/"));
    /// assert!(!s.skips_check("POST", "/%68ook")); // on actix, its router's path is "/hook"
    /// ```
    pub fn skips_check(&self, method: &str, path: &str) -> bool {
        is_safe_method(method) || self.exempt.iter().any(|p| p == path)
    }

    /// Whether an unsafe request to `path` (the path the router matches) must carry a
    /// token: always, unless tokenless mode is on and `path` is no spelling of a token path.
    /// Fail-closed: the two are compared in a canonical form broader than any router's
    /// matching (every percent-escape decoded once, `%2F` included; empty and `.` segments
    /// dropped, so `//` and a trailing `/` do not count; `..` resolved; ASCII letters in
    /// lower case), so every raw path a router, a proxy or a path-normalising middleware
    /// could route to a token path needs the token.
    ///
    /// ```
    /// use cloakroom_core::csrf::CsrfSettings;
    /// let s = CsrfSettings::tokenless().add_token_path("/login");
    /// for spelling in ["/login", "/%6Cogin", "/log%69n", "//login/", "/x/../LOGIN"] {
    ///     assert!(s.needs_token(spelling), "{spelling}");
    /// }
    /// assert!(!s.needs_token("/logins"));
    /// ```
    pub fn needs_token(&self, path: &str) -> bool {
        if !self.tokenless {
            return true;
        }
        if self.token_paths.is_empty() {
            return false;
        }
        let path = canonical(path);
        self.token_paths.contains(&path)
    }
}
