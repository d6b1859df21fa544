//! [`CsrfLayer`]: cross-origin checks and session-bound masked tokens, wire-compatible with
//! Tornado's `_xsrf`.
//!
//! Put it *inside* the [`SessionLayer`](crate::SessionLayer) (so requests reach the session
//! layer first): `Router::new()...layer(CsrfLayer::new()).layer(SessionLayer::new(..))`.
//!
//! Unsafe requests (anything but GET, HEAD, OPTIONS) on non-exempt paths must pass the
//! cross-origin check and carry a token in the `X-XSRFToken` / `X-CSRFToken` header or the
//! `_xsrf` field of an urlencoded or multipart form body. The expected secret lives in the
//! session when the request has one ([`CsrfMode::Auto`]), otherwise in Tornado's `_xsrf`
//! cookie (double submit). Failures answer 403 with a stable reason, as HTML or JSON.
//!
//! ```
//! use cloakroom_tower::CsrfLayer;
//! let csrf = CsrfLayer::new()
//!     .with_trusted_origin("https://partner.example").unwrap()
//!     .with_exempt_path("/webhooks/stripe");
//! # let _ = csrf;
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use cloakroom_core::cookie::{CookieConfig, SameSite, cookie_values};
use cloakroom_core::csrf::{
    self, FIELD_NAME, FormKind, HEADER_NAMES, Origin, ProtectionError, Reason, RequestOrigin,
    Secret,
};
use cloakroom_core::session::{self, Session};
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, HOST, HeaderValue, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::session::ConfigError;

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

/// Builds the response for a refused request.
pub type RejectionHandler = Arc<dyn Fn(&ProtectionError, bool) -> Response<String> + Send + Sync>;

#[derive(Clone)]
struct Config {
    trusted: Vec<Origin>,
    exempt: Vec<String>,
    body_limit: usize,
    query_token: bool,
    mode: CsrfMode,
    cookie: CookieConfig,
    on_reject: RejectionHandler,
}

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

static REJECTIONS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Requests refused so far in this process, per reason (for metrics endpoints).
pub fn rejection_counts() -> [(Reason, u64); 4] {
    Reason::ALL.map(|r| (r, REJECTIONS[index(r)].load(Ordering::Relaxed)))
}

fn index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// The default 403: JSON `{"error":"csrf","reason":...}` when `json`, else a small HTML page.
pub fn default_rejection(error: &ProtectionError, json: bool) -> Response<String> {
    let reason = error.kind().as_str();
    let (body, ctype) = if json {
        (
            format!("{{\"error\":\"csrf\",\"reason\":\"{reason}\"}}"),
            "application/json",
        )
    } else {
        (
            format!(
                "<!doctype html><html><head><title>403 Forbidden</title></head><body>\
                 <h1>403 Forbidden</h1><p>CSRF check failed: {reason}.</p></body></html>\n"
            ),
            "text/html; charset=utf-8",
        )
    };
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    res
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

    /// The response for refused requests; gets the error and whether the client asked for
    /// JSON. Default: [`default_rejection`].
    pub fn with_rejection_handler(
        self,
        handler: impl Fn(&ProtectionError, bool) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        let handler: RejectionHandler = Arc::new(handler);
        self.edit(|c| c.on_reject = handler)
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`CsrfLayer`].
#[derive(Clone)]
pub struct CsrfService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> fmt::Debug for CsrfService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService").finish_non_exhaustive()
    }
}

/// The request's CSRF token source, for rendering forms. Put in the request extensions by
/// [`CsrfLayer`]; with the `axum` feature it is an extractor.
#[derive(Clone)]
pub struct CsrfToken {
    session: Option<Session>,
    mode: CsrfMode,
    cookie_secret: Option<Secret>,
    /// A secret made for this response that the `_xsrf` cookie must carry.
    new_cookie: Arc<Mutex<Option<Secret>>>,
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfToken")
            .field("mode", &self.mode)
            .field("secret", &"REDACTED")
            .finish()
    }
}

impl CsrfToken {
    /// A fresh masked token (Tornado v2 format): a different string on every call, each
    /// valid until the secret rotates.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn token(&self) -> Result<String, session::Error> {
        Ok(self.secret().await?.mask())
    }

    /// `<input type="hidden" name="_xsrf" value="...">` for forms.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn form_field(&self) -> Result<String, session::Error> {
        Ok(format!(
            "<input type=\"hidden\" name=\"{FIELD_NAME}\" value=\"{}\">",
            self.token().await?
        ))
    }

    async fn secret(&self) -> Result<Secret, session::Error> {
        if self.mode == CsrfMode::Auto {
            if let Some(session) = &self.session {
                if session.exists().await? {
                    return csrf::ensure_session_secret(session).await;
                }
            }
        }
        if let Some(s) = &self.cookie_secret {
            return Ok(s.clone());
        }
        let mut slot = self.new_cookie.lock().unwrap_or_else(|e| e.into_inner());
        Ok(slot.get_or_insert_with(Secret::generate).clone())
    }
}

/// The `_xsrf` cookie's secret, if the request carries a valid one: the first cookie of that
/// name that decodes, read as bytes from every `Cookie` header (a neighbour's malformed
/// cookie costs only itself).
fn cookie_secret(headers: &http::HeaderMap, name: &str) -> Option<Secret> {
    let values = headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes);
    cookie_values(values, name).find_map(|v| csrf::decode_token(v).ok())
}

fn header_token<B>(req: &Request<B>) -> Option<String> {
    HEADER_NAMES.iter().find_map(|h| {
        req.headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

fn query_token<B>(req: &Request<B>) -> Option<String> {
    let q = req.uri().query()?;
    csrf::urlencoded_field(q.as_bytes(), FIELD_NAME)
}

fn wants_json<B>(req: &Request<B>) -> bool {
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json")
        || (!accept.contains("text/html") && ctype.starts_with("application/json"))
}

fn status<B: From<String>>(code: StatusCode, text: &str) -> Response<B> {
    let mut res = Response::new(B::from(format!("{text}\n")));
    *res.status_mut() = code;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = crate::session::ResponseFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = self.config.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = CsrfToken {
            session: req.extensions().get::<Session>().cloned(),
            mode: config.mode,
            cookie_secret: cookie_secret(req.headers(), &config.cookie.name),
            new_cookie: Arc::new(Mutex::new(None)),
        };
        req.extensions_mut().insert(token.clone());
        let fut = async move {
            let method = req.method().as_str().to_owned();
            let exempt = config.exempt.iter().any(|p| p == req.uri().path());
            if !csrf::is_safe_method(&method) && !exempt {
                match check(&config, &token, req).await {
                    Ok(checked) => req = checked,
                    Err(Refusal::Reason(reason, json, path)) => {
                        REJECTIONS[index(reason)].fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(reason = reason.as_str(), %method, %path, "CSRF check refused request");
                        let error = ProtectionError::new(reason);
                        let mut res = (config.on_reject)(&error, json).map(ResBody::from);
                        res.extensions_mut().insert(error);
                        return Ok(res);
                    }
                    Err(Refusal::Response(res)) => return Ok(res.map(ResBody::from)),
                }
            }
            let mut res = inner.call(req).await?;
            let new_secret = token
                .new_cookie
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(secret) = new_secret {
                let value = config.cookie.set_cookie(&secret.mask(), None);
                if let Ok(v) = HeaderValue::from_str(&value) {
                    res.headers_mut().append(SET_COOKIE, v);
                }
            }
            Ok(res)
        };
        crate::session::ResponseFuture::new(Box::pin(fut))
    }
}

enum Refusal {
    Reason(Reason, bool, String),
    Response(Response<String>),
}

/// Runs both checks; returns the request (its body buffered if it was read) to hand on.
async fn check<B>(
    config: &Config,
    token: &CsrfToken,
    req: Request<B>,
) -> Result<Request<B>, Refusal>
where
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let json = wants_json(&req);
    let path = req.uri().path().to_owned();
    let refuse = |r: Reason| Refusal::Reason(r, json, path.clone());
    {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let host = header(HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        let origin = RequestOrigin {
            method: req.method().as_str(),
            sec_fetch_site: header(http::HeaderName::from_static("sec-fetch-site")),
            origin: header(http::header::ORIGIN),
            host,
        };
        csrf::check_cross_origin(&origin, &config.trusted).map_err(refuse)?;
    }

    let mut req = req;
    let mut submitted = header_token(&req);
    if submitted.is_none() {
        let kind = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(csrf::form_kind);
        if let Some((kind, boundary)) = kind {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, config.body_limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let too_big = e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some();
                    return Err(Refusal::Response(if too_big {
                        status(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    } else {
                        status(StatusCode::BAD_REQUEST, "could not read request body")
                    }));
                }
            };
            submitted = match kind {
                FormKind::UrlEncoded => csrf::urlencoded_field(&bytes, FIELD_NAME),
                FormKind::Multipart => {
                    csrf::multipart_field(&bytes, boundary.as_deref().unwrap_or(""), FIELD_NAME)
                }
            };
            req = Request::from_parts(parts, B::from(bytes));
        }
    }
    if submitted.is_none() && config.query_token {
        submitted = query_token(&req);
    }
    let submitted = submitted.ok_or_else(|| refuse(Reason::TokenMissing))?;
    // Decode first, so a malformed token is reported as such whatever the secret.
    csrf::decode_token(&submitted).map_err(refuse)?;
    let expected = match expected_secret(token).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "session store failed during the CSRF check");
            return Err(Refusal::Response(crate::session::default_error_response(
                &e,
            )));
        }
    };
    let expected = expected.ok_or_else(|| refuse(Reason::TokenMismatch))?;
    expected.verify(&submitted).map_err(refuse)?;
    Ok(req)
}

/// The secret an unsafe request's token must match: the session's when there is a session
/// (Auto mode), else the `_xsrf` cookie's.
async fn expected_secret(token: &CsrfToken) -> Result<Option<Secret>, session::Error> {
    if token.mode == CsrfMode::Auto {
        if let Some(session) = &token.session {
            if session.exists().await? {
                return csrf::session_secret(session).await;
            }
        }
    }
    Ok(token.cookie_secret.clone())
}
