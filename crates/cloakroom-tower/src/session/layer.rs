//! [`SessionLayer`]: the core's [`SessionSettings`] (every setting, checked as it is set; the
//! engine built once and shared by every route's service) and the response for a failed commit.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::KeyRing;
use cloakroom_core::cookie::{SameSite, TicketFormat};
use cloakroom_core::session::{Error, SessionConfig, SessionEngine, SessionSettings};
use cloakroom_core::store::IntoSessionStore;
use http::Response;
use tower_layer::Layer;

use super::{ConfigError, ErrorHandler, SessionService, default_error_response};

/// The session middleware. Cheap to clone. Its setters are [`SessionSettings`]'s (the same on
/// every adapter); build one from settings with `SessionLayer::from`.
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    settings: SessionSettings,
    on_error: ErrorHandler,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl From<SessionSettings> for SessionLayer {
    fn from(settings: SessionSettings) -> Self {
        SessionLayer {
            settings,
            on_error: Arc::new(default_error_response),
        }
    }
}

impl SessionLayer {
    /// Sessions kept in `store` (by value, or an `Arc` of one), tickets signed with `keys`,
    /// every setting at its default (see [`SessionConfig`]).
    pub fn new(store: impl IntoSessionStore, keys: KeyRing) -> Self {
        SessionSettings::new(store, keys).into()
    }

    fn map(
        self,
        change: impl FnOnce(SessionSettings) -> Result<SessionSettings, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Ok(SessionLayer {
            settings: change(self.settings)?,
            ..self
        })
    }

    /// See [`SessionSettings::with_config`].
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn with_config(self, config: SessionConfig) -> Result<Self, ConfigError> {
        self.map(|s| s.with_config(config))
    }

    /// See [`SessionSettings::with_cookie_name`].
    ///
    /// # Errors
    /// A bad name, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.map(|s| s.with_cookie_name(name))
    }

    /// See [`SessionSettings::with_cookie_domain`].
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie name.
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        self.map(|s| s.with_cookie_domain(domain))
    }

    /// See [`SessionSettings::with_cookie_path`].
    ///
    /// # Errors
    /// A path not starting with `/`, or a `__Host-` cookie name with another path.
    pub fn with_cookie_path(self, path: impl Into<String>) -> Result<Self, ConfigError> {
        self.map(|s| s.with_cookie_path(path))
    }

    /// See [`SessionSettings::with_cookie_secure`].
    ///
    /// # Errors
    /// Turning it off with `SameSite=None` or a `__Host-`/`__Secure-` name.
    pub fn with_cookie_secure(self, secure: bool) -> Result<Self, ConfigError> {
        self.map(|s| s.with_cookie_secure(secure))
    }

    /// See [`SessionSettings::with_cookie_same_site`].
    ///
    /// # Errors
    /// `SameSite::None` without `Secure`.
    pub fn with_cookie_same_site(self, same_site: SameSite) -> Result<Self, ConfigError> {
        self.map(|s| s.with_cookie_same_site(same_site))
    }

    /// See [`SessionSettings::with_idle_timeout`].
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_idle_timeout(self, idle: Duration) -> Result<Self, ConfigError> {
        self.map(|s| s.with_idle_timeout(idle))
    }

    /// See [`SessionSettings::with_absolute_lifetime`].
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_absolute_lifetime(self, lifetime: Duration) -> Result<Self, ConfigError> {
        self.map(|s| s.with_absolute_lifetime(lifetime))
    }

    /// See [`SessionSettings::with_touch_interval`].
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.settings = self.settings.with_touch_interval(interval);
        self
    }

    /// See [`SessionSettings::with_store_timeout`].
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_store_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        self.map(|s| s.with_store_timeout(timeout))
    }

    /// See [`SessionSettings::with_max_data_bytes`].
    ///
    /// # Errors
    /// Zero.
    pub fn with_max_data_bytes(self, max: usize) -> Result<Self, ConfigError> {
        self.map(|s| s.with_max_data_bytes(max))
    }

    /// See [`SessionSettings::with_ticket_format`].
    pub fn with_ticket_format(mut self, format: Arc<dyn TicketFormat>) -> Self {
        self.settings = self.settings.with_ticket_format(format);
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

    /// The configuration as it stands.
    pub fn config(&self) -> &SessionConfig {
        self.settings.config()
    }

    /// The engine this layer's services use (built once; share it with code that lists or
    /// revokes sessions outside requests).
    pub fn engine(&self) -> SessionEngine {
        self.settings.engine()
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
