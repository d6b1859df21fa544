//! [`SessionConfig`]: cookie attributes, timeouts and limits of the session engine.

use std::time::Duration;

use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::CookieConfig;

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
    /// each cost a store write. `None` (the default): a tenth of the idle timeout, at most 5
    /// minutes, whatever the idle timeout is set to; zero: on every request. Read it with
    /// [`SessionConfig::touch_interval`].
    pub touch_interval: Option<Duration>,
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
            touch_interval: None,
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
    /// The touch interval in force: the one set, or the default for the idle timeout.
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
            .unwrap_or_else(|| default_touch_interval(self.idle_timeout))
    }

    /// Checks the configuration. The policy for durations and limits, the same for every
    /// setter of the adapters: zero is refused, except for the touch interval (where it
    /// means every request).
    ///
    /// # Errors
    /// An invalid cookie, a zero timeout or lifetime, or a zero data limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cookie.validate()?;
        let durations = [
            ("idle timeout", self.idle_timeout),
            ("absolute lifetime", self.absolute_lifetime),
            ("store timeout", self.store_timeout),
        ];
        for (setting, value) in durations {
            if value.is_zero() {
                let value = format!("{value:?}");
                return Err(ConfigError::new(
                    ConfigErrorKind::ZeroDuration,
                    setting,
                    value,
                ));
            }
        }
        if self.max_data_bytes == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroLimit,
                "max data bytes",
                "0",
            ));
        }
        Ok(())
    }
}
