//! `SessionConfig`: cookie attributes, timeouts and limits of the session engine, set through
//! [`SessionSettings`](super::SessionSettings) (where each setting, its default and its check
//! are documented).

use std::time::Duration;

use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::CookieConfig;

/// How sessions behave: the values [`SessionSettings`](super::SessionSettings) sets and checks
/// (each setter documents its setting and default).
#[derive(Clone, Debug)]
pub(crate) struct SessionConfig {
    pub(crate) cookie: CookieConfig,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_lifetime: Duration,
    /// `None`: [`default_touch_interval`] of the idle timeout.
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) max_data_bytes: usize,
    /// Device-bound sessions, when set ([`SessionSettings::with_dbsc`](super::SessionSettings::with_dbsc)).
    #[cfg(feature = "dbsc")]
    pub(crate) dbsc: Option<crate::dbsc::DbscSettings>,
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
            #[cfg(feature = "dbsc")]
            dbsc: None,
        }
    }
}

/// A tenth of `idle`, at most five minutes.
pub(crate) fn default_touch_interval(idle: Duration) -> Duration {
    (idle / 10).min(Duration::from_secs(300))
}

impl SessionConfig {
    /// The touch interval in force: the one set, or the default for the idle timeout.
    pub(crate) fn touch_interval(&self) -> Duration {
        self.touch_interval
            .unwrap_or_else(|| default_touch_interval(self.idle_timeout))
    }

    /// Checks the configuration. The policy for durations and limits, the same for every
    /// setter of the adapters: zero is refused, except for the touch interval (where it
    /// means every request).
    ///
    /// # Errors
    /// An invalid cookie, a zero timeout or lifetime, or a zero data limit.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
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
