//! [`SessionLayer`]: the session settings, and the engine they make (built once, shared by
//! every route's service).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloakroom_core::cookie::{SameSite, TicketFormat};
use cloakroom_core::session::{Error, SessionConfig, SessionEngine, default_touch_interval};
use cloakroom_core::{KeyRing, SessionStore};
use http::Response;
use tower_layer::Layer;

use super::{ConfigError, ErrorHandler, SessionService, default_error_response};

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
    /// The engine the settings make, built on first use and shared by every service (a
    /// setting changed afterwards starts a new one).
    built: Arc<OnceLock<SessionEngine>>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
            built: Arc::default(),
        }
    }

    /// Replaces the whole configuration.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn with_config(mut self, config: SessionConfig) -> Result<Self, ConfigError> {
        self.built = Arc::default();
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
        self.built = Arc::default();
        self.config.cookie.name = name.into();
        self.config.validate()?;
        Ok(self)
    }

    /// `Domain` attribute. Default none (host-only: the narrowest scope, per OWASP).
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie name.
    pub fn with_cookie_domain(mut self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        self.built = Arc::default();
        self.config.cookie.domain = Some(domain.into());
        self.config.validate()?;
        Ok(self)
    }

    /// `Path` attribute. Default `/`.
    ///
    /// # Errors
    /// A path not starting with `/`, or a `__Host-` cookie name with another path.
    pub fn with_cookie_path(mut self, path: impl Into<String>) -> Result<Self, ConfigError> {
        self.built = Arc::default();
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
        self.built = Arc::default();
        self.config.cookie.secure = secure;
        self.config.validate()?;
        Ok(self)
    }

    /// `SameSite` attribute. Default `Lax` (cross-site POSTs carry no session).
    ///
    /// # Errors
    /// `SameSite::None` without `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Result<Self, ConfigError> {
        self.built = Arc::default();
        self.config.cookie.same_site = same_site;
        self.config.validate()?;
        Ok(self)
    }

    /// Idle timeout. Default 24 hours. Also sets the touch interval to a tenth of it (at most
    /// 5 minutes) unless [`SessionLayer::with_touch_interval`] set one.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.built = Arc::default();
        self.config.idle_timeout = idle.max(Duration::from_millis(1));
        if !self.touch_set {
            self.config.touch_interval = default_touch_interval(self.config.idle_timeout);
        }
        self
    }

    /// Absolute lifetime. Default 30 days.
    pub fn with_absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.built = Arc::default();
        self.config.absolute_lifetime = lifetime.max(Duration::from_millis(1));
        self
    }

    /// How often an unchanged session's expiry is extended. Default: a tenth of the idle
    /// timeout, at most 5 minutes (reads then cost no store write).
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.built = Arc::default();
        self.config.touch_interval = interval;
        self.touch_set = true;
        self
    }

    /// Longest wait for one store operation. Default 2 seconds: past it the request gets a
    /// 503 instead of hanging.
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.built = Arc::default();
        self.config.store_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Largest session data accepted by `set`. Default 64 KiB.
    pub fn with_max_data_bytes(mut self, max: usize) -> Self {
        self.built = Arc::default();
        self.config.max_data_bytes = max;
        self
    }

    /// The response sent when the store fails. Default: [`default_error_response`].
    pub fn with_error_handler(
        mut self,
        handler: impl Fn(&Error) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.built = Arc::default();
        self.on_error = Arc::new(handler);
        self
    }

    /// How ids are made and carried. Default: Cloakroom's signed ticket
    /// ([`SignedTicket`](cloakroom_core::cookie::SignedTicket)); use
    /// `cloakroom_redis::PycketTicket` with the cookie name
    /// `PYCKET_ID` to share sessions with a Tornado + pycket app.
    pub fn with_ticket_format(mut self, format: Arc<dyn TicketFormat>) -> Self {
        self.built = Arc::default();
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
        self.built
            .get_or_init(|| {
                let engine =
                    SessionEngine::new(self.store.clone(), self.keys.clone(), self.config.clone());
                match &self.format {
                    Some(f) => engine.with_ticket_format(f.clone()),
                    None => engine,
                }
            })
            .clone()
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
