//! [`SessionConfig`]: cookie attributes, timeouts and limits of the session engine.

use std::time::Duration;

use crate::cookie::{CookieConfig, CookieConfigError};

/// How sessions behave. Every field has a safe default; see [`SessionConfig::default`].
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Cookie name and attributes. Default: `session`, host-only, `Path=/`, `Secure`,
    /// `HttpOnly`, `SameSite=Lax` (OWASP Session Management: Secure + HttpOnly + SameSite).
    pub cookie: CookieConfig,
    /// A session unused this long expires. Default 24 hours (pycket's sliding 24 h).
    pub idle_timeout: Duration,
    /// A session expires this long after it was created, however active. Default 30 days
    /// (OWASP: an absolute timeout bounds what a stolen ticket is worth).
    pub absolute_lifetime: Duration,
    /// An unchanged session's expiry is pushed forward at most this often, so reads do not
    /// each cost a store write. Default: a tenth of the idle timeout, at most 5 minutes.
    pub touch_interval: Duration,
    /// Longest wait for one store operation before the request fails with a 503-class
    /// error. Default 2 seconds.
    pub store_timeout: Duration,
    /// Largest session data (field names plus JSON values) accepted by `set`. Default
    /// 64 KiB: sessions are read on every request, large blobs belong elsewhere.
    pub max_data_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let idle = Duration::from_secs(24 * 3600);
        SessionConfig {
            cookie: CookieConfig::new("session"),
            idle_timeout: idle,
            absolute_lifetime: Duration::from_secs(30 * 24 * 3600),
            touch_interval: default_touch_interval(idle),
            store_timeout: Duration::from_secs(2),
            max_data_bytes: 64 * 1024,
        }
    }
}

/// A tenth of `idle`, at most five minutes.
pub fn default_touch_interval(idle: Duration) -> Duration {
    (idle / 10).min(Duration::from_secs(300))
}

impl SessionConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// An invalid cookie, or a zero timeout.
    pub fn validate(&self) -> Result<(), CookieConfigError> {
        self.cookie.validate()?;
        if self.idle_timeout.is_zero() || self.absolute_lifetime.is_zero() {
            return Err(CookieConfigError(
                "session timeouts must be positive".into(),
            ));
        }
        if self.store_timeout.is_zero() {
            return Err(CookieConfigError("store timeout must be positive".into()));
        }
        Ok(())
    }
}
