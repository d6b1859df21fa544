//! `SessionConfig`: cookie attributes, timeouts and limits of the session engine, set through
//! [`SessionSettings`](super::SessionSettings) (where each setting, its default and its check
//! are documented).

use std::time::Duration;

use super::Transport;
use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::CookieConfig;
use crate::store::LimitPolicy;

/// The longest rotation grace accepted ([`SessionSettings::with_rotation_grace`](super::SessionSettings::with_rotation_grace)).
pub(crate) const MAX_ROTATION_GRACE: Duration = Duration::from_secs(60);

/// How sessions behave: the values [`SessionSettings`](super::SessionSettings) sets and checks
/// (each setter documents its setting and default).
#[derive(Clone, Debug)]
pub(crate) struct SessionConfig {
    /// The cookie as sent; its name is [`SessionConfig::cookie_name`] or the default name.
    pub(crate) cookie: CookieConfig,
    /// The cookie name chosen; `None`: `__Host-session` where the attributes allow the
    /// prefix, else `session` (see [`SessionConfig::name_cookie`]).
    pub(crate) cookie_name: Option<String>,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_lifetime: Duration,
    /// `None`: [`default_touch_interval`] of the idle timeout.
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) max_data_bytes: usize,
    /// Where tickets travel (cookie, header, or both).
    pub(crate) transport: Transport,
    /// The request header a ticket is read from (lower case) when the transport allows one.
    pub(crate) ticket_header: String,
    /// How long an old ticket still reaches its session after a rotation that changes no
    /// privilege; zero: none.
    pub(crate) rotation_grace: Duration,
    /// Data values sealed at rest (see [`seal`](super::seal)).
    pub(crate) seal_data: bool,
    /// The user agent sealed at rest too.
    pub(crate) seal_user_agent: bool,
    /// Most live sessions per user; `None`: no limit.
    pub(crate) max_sessions_per_user: Option<usize>,
    /// What a login past that limit does.
    pub(crate) session_limit_policy: LimitPolicy,
    /// Device-bound sessions, when set ([`SessionSettings::with_dbsc`](super::SessionSettings::with_dbsc)).
    #[cfg(feature = "dbsc")]
    pub(crate) dbsc: Option<crate::dbsc::DbscSettings>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let idle = Duration::from_secs(24 * 3600);
        SessionConfig {
            cookie: CookieConfig::new(HOST_NAME),
            cookie_name: None,
            idle_timeout: idle,
            absolute_lifetime: Duration::from_secs(30 * 24 * 3600),
            touch_interval: None,
            store_timeout: Duration::from_secs(2),
            max_data_bytes: 64 * 1024,
            transport: Transport::Cookie,
            ticket_header: "authorization".to_owned(),
            rotation_grace: Duration::ZERO,
            seal_data: false,
            seal_user_agent: false,
            max_sessions_per_user: None,
            session_limit_policy: LimitPolicy::EndLeastRecentlySeen,
            #[cfg(feature = "dbsc")]
            dbsc: None,
        }
    }
}

/// The default cookie name where the `__Host-` prefix's rules hold.
const HOST_NAME: &str = "__Host-session";

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

    /// Gives the cookie its name: the one chosen, else the default for its attributes
    /// (`__Host-session` when `Secure`, host-only and `Path=/`, else `session`).
    pub(crate) fn name_cookie(&mut self) {
        let c = &self.cookie;
        let name = match &self.cookie_name {
            Some(name) => name.as_str(),
            None if c.secure && c.domain.is_none() && c.path == "/" => HOST_NAME,
            None => "session",
        };
        if c.name != name {
            self.cookie.name = name.to_owned();
        }
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
        if self.rotation_grace > MAX_ROTATION_GRACE {
            let value = format!("{:?}", self.rotation_grace);
            return Err(ConfigError::new(
                ConfigErrorKind::TooLong,
                "rotation grace",
                value,
            ));
        }
        if !self.rotation_grace.is_zero() && (self.seal_data || self.seal_user_agent) {
            // An old ticket reaching the new record could not open its sealed values.
            let value = format!("{:?}", self.rotation_grace);
            return Err(ConfigError::new(
                ConfigErrorKind::Conflict,
                "rotation grace with sealed data",
                value,
            ));
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroLimit,
                "max sessions per user",
                "0",
            ));
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
