//! [`SessionLayer`]: gives every request a [`Session`](cloakroom_core::Session) in its
//! extensions and commits it when the response is ready.
//!
//! ```
//! use std::sync::Arc;
//! use cloakroom_core::{Key, KeyRing, MemoryStore};
//! use cloakroom_tower::SessionLayer;
//!
//! let layer = SessionLayer::new(Arc::new(MemoryStore::new()), KeyRing::single(Key::generate()))
//!     .with_cookie_name("__Host-session").unwrap()
//!     .with_idle_timeout(std::time::Duration::from_secs(30 * 60));
//! # let _ = layer;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cloakroom_core::cookie::{CookieConfigError, SameSite, TicketFormat};
use cloakroom_core::session::{Error, SessionConfig, SessionEngine, default_touch_interval};
use cloakroom_core::{KeyRing, SessionStore};
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE, USER_AGENT, VARY,
};
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

/// Turns a store failure into the response sent instead of the handler's.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

/// A configuration was refused (reported when the app is built, not per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

impl From<CookieConfigError> for ConfigError {
    fn from(e: CookieConfigError) -> Self {
        ConfigError(e.0)
    }
}

/// The session middleware. Cheap to clone.
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    config: SessionConfig,
    touch_set: bool,
    on_error: ErrorHandler,
    format: Option<Arc<dyn TicketFormat>>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The default store-failure response: `503 Service Unavailable`, `Retry-After: 1`.
pub fn default_error_response(_: &Error) -> Response<String> {
    let mut res = Response::new("session store unavailable, try again shortly\n".to_owned());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl SessionLayer {
    /// Sessions kept in `store`, tickets signed with `keys`, every setting at its default
    /// (see [`SessionConfig`]).
    pub fn new(store: Arc<dyn SessionStore>, keys: KeyRing) -> Self {
        SessionLayer {
            store,
            keys,
            config: SessionConfig::default(),
            touch_set: false,
            on_error: Arc::new(default_error_response),
            format: None,
        }
    }

    /// Replaces the whole configuration.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn with_config(mut self, config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        self.config = config;
        self.touch_set = true;
        Ok(self)
    }

    /// Cookie name. Default `session`; `__Host-session` is better where the site is HTTPS
    /// only (OWASP: the prefix stops subdomains from planting the cookie).
    ///
    /// # Errors
    /// A name that is not an RFC 6265 token, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.config.cookie.name = name.into();
        self.config.validate()?;
        Ok(self)
    }

    /// `Domain` attribute. Default none (host-only: the narrowest scope, per OWASP).
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie name.
    pub fn with_cookie_domain(mut self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        self.config.cookie.domain = Some(domain.into());
        self.config.validate()?;
        Ok(self)
    }

    /// `Path` attribute. Default `/`.
    ///
    /// # Errors
    /// A path not starting with `/`, or a `__Host-` cookie name with another path.
    pub fn with_cookie_path(mut self, path: impl Into<String>) -> Result<Self, ConfigError> {
        self.config.cookie.path = path.into();
        self.config.validate()?;
        Ok(self)
    }

    /// `Secure` attribute. Default on (OWASP: tickets never travel over plain HTTP); turn it
    /// off only for `http://` development servers.
    ///
    /// # Errors
    /// Turning it off with `SameSite=None` or a `__Host-`/`__Secure-` name.
    pub fn with_secure(mut self, secure: bool) -> Result<Self, ConfigError> {
        self.config.cookie.secure = secure;
        self.config.validate()?;
        Ok(self)
    }

    /// `SameSite` attribute. Default `Lax` (cross-site POSTs carry no session).
    ///
    /// # Errors
    /// `SameSite::None` without `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Result<Self, ConfigError> {
        self.config.cookie.same_site = same_site;
        self.config.validate()?;
        Ok(self)
    }

    /// Idle timeout. Default 24 hours. Also sets the touch interval to a tenth of it (at most
    /// 5 minutes) unless [`SessionLayer::with_touch_interval`] set one.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle.max(Duration::from_millis(1));
        if !self.touch_set {
            self.config.touch_interval = default_touch_interval(self.config.idle_timeout);
        }
        self
    }

    /// Absolute lifetime. Default 30 days.
    pub fn with_absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.absolute_lifetime = lifetime.max(Duration::from_millis(1));
        self
    }

    /// How often an unchanged session's expiry is extended. Default: a tenth of the idle
    /// timeout, at most 5 minutes (reads then cost no store write).
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = interval;
        self.touch_set = true;
        self
    }

    /// Longest wait for one store operation. Default 2 seconds: past it the request gets a
    /// 503 instead of hanging.
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Largest session data accepted by `set`. Default 64 KiB.
    pub fn with_max_data_bytes(mut self, max: usize) -> Self {
        self.config.max_data_bytes = max;
        self
    }

    /// The response sent when the store fails. Default: [`default_error_response`].
    pub fn with_error_handler(
        mut self,
        handler: impl Fn(&Error) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Arc::new(handler);
        self
    }

    /// How ids are made and carried. Default: Cloakroom's signed ticket
    /// ([`SignedTicket`](cloakroom_core::cookie::SignedTicket)); use
    /// [`PycketTicket`](cloakroom_core::tornado::PycketTicket) with the cookie name
    /// `PYCKET_ID` to share sessions with a Tornado + pycket app.
    pub fn with_ticket_format(mut self, format: Arc<dyn TicketFormat>) -> Self {
        self.format = Some(format);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The engine this layer's services use (build it once and share it with code that
    /// lists or revokes sessions outside requests).
    pub fn engine(&self) -> SessionEngine {
        let engine = SessionEngine::new(self.store.clone(), self.keys.clone(), self.config.clone());
        match &self.format {
            Some(f) => engine.with_ticket_format(f.clone()),
            None => engine,
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            engine: self.engine(),
            on_error: self.on_error.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    engine: SessionEngine,
    on_error: ErrorHandler,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// The future of [`SessionService`].
pub struct ResponseFuture<R> {
    inner: Pin<Box<dyn Future<Output = R> + Send>>,
}

impl<R> fmt::Debug for ResponseFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<R> ResponseFuture<R> {
    pub(crate) fn new(inner: Pin<Box<dyn Future<Output = R> + Send>>) -> Self {
        ResponseFuture { inner }
    }
}

impl<R> Future for ResponseFuture<R> {
    type Output = R;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        // A cheap clone (shared bytes): only copied into a String if a session is created.
        let user_agent = headers.get(USER_AGENT).cloned();
        // Read as bytes, every Cookie header (HTTP/2 splits them): a neighbour's cookie
        // with a non-ASCII byte costs only itself, and nothing is joined or copied.
        let session = self
            .engine
            .session_from_headers(headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes));
        req.extensions_mut().insert(session.clone());
        let fut = self.inner.call(req);
        let on_error = self.on_error.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let mut res = fut.await?;
                let user_agent = user_agent.as_ref().and_then(|v| v.to_str().ok());
                match session.commit(user_agent).await {
                    Ok(outcome) => {
                        if let Some(cookie) = outcome.set_cookie {
                            add_cookie_headers(&mut res, &cookie);
                        }
                        Ok(res)
                    }
                    Err(error) => {
                        tracing::error!(%error, "session commit failed; answering 503");
                        Ok(on_error(&error).map(ResBody::from))
                    }
                }
            }),
        }
    }
}

/// Adds `Set-Cookie`, `Cache-Control: no-store` (unless the handler chose a policy) and
/// `Vary: Cookie`.
fn add_cookie_headers<B>(res: &mut Response<B>, cookie: &str) {
    let headers = res.headers_mut();
    match HeaderValue::from_str(cookie) {
        Ok(v) => {
            headers.append(SET_COOKIE, v);
        }
        Err(_) => {
            tracing::error!("session cookie is not a valid header value; not sent");
            return;
        }
    }
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let has_vary_cookie = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("cookie") || p.trim() == "*")
        })
    });
    if !has_vary_cookie {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}
