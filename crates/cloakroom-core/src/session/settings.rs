//! [`SessionSettings`]: the one way to configure sessions. Everything an engine is made of
//! (store, keys, cookie, timeouts, limits, ticket format), each setting checked as it is set,
//! then [`build`](SessionSettings::build) makes the [`SessionEngine`] once; every adapter
//! takes that engine (`SessionLayer::new(engine)` on tower, `SessionMiddleware::new(engine)`
//! on actix-web).
//!
//! ```
//! use std::time::Duration;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, session::SessionSettings};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_cookie_name("__Host-session").unwrap()
//!     .with_idle_timeout(Duration::from_secs(30 * 60)).unwrap()
//!     .build();
//! # let _ = engine;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{SessionConfig, SessionEngine};
use crate::config_error::ConfigError;
use crate::cookie::{SameSite, SignedTicket, TicketFormat};
use crate::keys::KeyRing;
use crate::store::{IntoSessionStore, SessionStore};

/// The settings of a session engine, each checked as it is set; [`build`](Self::build) makes
/// the engine.
#[must_use]
pub struct SessionSettings {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    config: SessionConfig,
    format: Arc<dyn TicketFormat>,
}

impl fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSettings")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionSettings {
    /// Sessions kept in `store` (by value, or an `Arc` of one), tickets signed with `keys`,
    /// every setting at its default (each setter says which).
    pub fn new(store: impl IntoSessionStore, keys: KeyRing) -> Self {
        SessionSettings {
            store: store.into_session_store(),
            keys,
            config: SessionConfig::default(),
            format: Arc::new(SignedTicket),
        }
    }

    /// Applies `change` to the configuration and checks the result: the one path every
    /// setter takes, so all follow one policy (zero durations and limits refused, except the
    /// touch interval, where zero means every request). A refused change leaves nothing set.
    fn edit(mut self, change: impl FnOnce(&mut SessionConfig)) -> Result<Self, ConfigError> {
        change(&mut self.config);
        self.config.validate()?;
        Ok(self)
    }

    /// Cookie name. Default `session`; `__Host-session` is better where the site is HTTPS
    /// only (OWASP: the prefix stops subdomains from planting the cookie).
    ///
    /// # Errors
    /// A name that is not an RFC 6265 token, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        self.edit(|c| c.cookie.name = name)
    }

    /// `Domain` attribute. Default none (host-only: the narrowest scope, per OWASP).
    ///
    /// # Errors
    /// An invalid domain, or a `__Host-` cookie name.
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        let domain = domain.into();
        self.edit(|c| c.cookie.domain = Some(domain))
    }

    /// `Path` attribute. Default `/`.
    ///
    /// # Errors
    /// A path not starting with `/`, or a `__Host-` cookie name with another path.
    pub fn with_cookie_path(self, path: impl Into<String>) -> Result<Self, ConfigError> {
        let path = path.into();
        self.edit(|c| c.cookie.path = path)
    }

    /// `Secure` attribute. Default on (OWASP: tickets never travel over plain HTTP); turn it
    /// off only for `http://` development servers.
    ///
    /// # Errors
    /// Turning it off with `SameSite=None` or a `__Host-`/`__Secure-` name.
    pub fn with_cookie_secure(self, secure: bool) -> Result<Self, ConfigError> {
        self.edit(|c| c.cookie.secure = secure)
    }

    /// `SameSite` attribute. Default `Lax` (cross-site POSTs carry no session).
    ///
    /// # Errors
    /// `SameSite::None` without `Secure`.
    pub fn with_cookie_same_site(self, same_site: SameSite) -> Result<Self, ConfigError> {
        self.edit(|c| c.cookie.same_site = same_site)
    }

    /// Idle timeout. Default 24 hours. The touch interval follows it (a tenth, at most 5
    /// minutes) unless [`SessionSettings::with_touch_interval`] sets one.
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_idle_timeout(self, idle: Duration) -> Result<Self, ConfigError> {
        self.edit(|c| c.idle_timeout = idle)
    }

    /// Absolute lifetime. Default 30 days.
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_absolute_lifetime(self, lifetime: Duration) -> Result<Self, ConfigError> {
        self.edit(|c| c.absolute_lifetime = lifetime)
    }

    /// How often an unchanged session's expiry is extended. Default: a tenth of the idle
    /// timeout, at most 5 minutes (reads then cost no store write); zero: every request.
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = Some(interval);
        self
    }

    /// Longest wait for one store operation. Default 2 seconds: past it the request gets a
    /// 503 instead of hanging.
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_store_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        self.edit(|c| c.store_timeout = timeout)
    }

    /// Largest session data accepted by `set`. Default 64 KiB.
    ///
    /// # Errors
    /// Zero.
    pub fn with_max_data_bytes(self, max: usize) -> Result<Self, ConfigError> {
        self.edit(|c| c.max_data_bytes = max)
    }

    /// How ids are made and carried. Default: Cloakroom's signed ticket
    /// ([`SignedTicket`]); use `cloakroom_tornado::PycketTicket` with the cookie name
    /// `PYCKET_ID` to share sessions with a Tornado + pycket app.
    pub fn with_ticket_format(mut self, format: Arc<dyn TicketFormat>) -> Self {
        self.format = format;
        self
    }

    /// Device Bound Session Credentials (feature `dbsc`; default off): logins offer
    /// registration, and the engine answers the registration and refresh endpoints (see
    /// [`dbsc`](crate::dbsc)).
    #[cfg(feature = "dbsc")]
    pub fn with_dbsc(mut self, dbsc: crate::dbsc::DbscSettings) -> Self {
        self.config.dbsc = Some(dbsc);
        self
    }

    /// The engine: built once, then shared by cloning (with the adapters' services and with
    /// code that lists or revokes sessions outside requests).
    pub fn build(self) -> SessionEngine {
        SessionEngine::from_parts(self.store, self.keys, self.config, self.format)
    }
}
