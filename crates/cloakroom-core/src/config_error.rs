//! [`ConfigError`]: a setting was refused, when the application is built (never per
//! request). One type for every setting of the crate and its adapters; its [`kind`] says
//! which rule was broken and [`value`] carries the offending value.
//!
//! ```
//! use cloakroom_core::csrf::CsrfSettings;
//! use cloakroom_core::{ConfigError, ConfigErrorKind};
//!
//! let settings = CsrfSettings::new().with_cookie_name("__Host-xsrf").unwrap();
//! let error: ConfigError = settings.with_cookie_secure(false).unwrap_err();
//! assert_eq!(error.kind(), ConfigErrorKind::CookiePrefix);
//! assert_eq!(error.value(), "__Host-xsrf");
//! ```
//!
//! [`kind`]: ConfigError::kind
//! [`value`]: ConfigError::value

use std::fmt;

/// Which rule a refused setting broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A cookie name that is not an RFC 6265 token.
    CookieName,
    /// A cookie `Path` that does not start with `/`, or holds `;` or control characters.
    CookiePath,
    /// A cookie `Domain` that is empty, or holds `;` or control characters.
    CookieDomain,
    /// The rules of a `__Host-` or `__Secure-` cookie name broken by another setting.
    CookiePrefix,
    /// `SameSite=None` without `Secure`.
    SameSiteNoneWithoutSecure,
    /// A duration that must be positive is zero.
    ZeroDuration,
    /// An origin that is not exactly `scheme://host[:port]`.
    Origin,
    /// A size or count that must be positive is zero.
    ZeroLimit,
    /// A duration over its maximum (the rotation grace: 60 seconds; the end poll: an hour).
    TooLong,
    /// A request header name that is not an HTTP token, or one reserved for other uses.
    HeaderName,
    /// Two settings that cannot go together (the rotation grace with an interop ticket
    /// format whose records another program reads, or with sealed data).
    Conflict,
    /// Sealed session data with a ticket format whose records another program reads.
    Sealing,
    /// A URL that must be a same-origin path (`/confirm`) is not: it has a scheme or host,
    /// does not start with one `/`, or holds a backslash or control characters.
    LocalPath,
}

impl ConfigErrorKind {
    /// What the rule is, in words.
    fn rule(self) -> &'static str {
        match self {
            ConfigErrorKind::CookieName => "a cookie name must be a non-empty RFC 6265 token",
            ConfigErrorKind::CookiePath => "a cookie path must start with '/' and hold no ';'",
            ConfigErrorKind::CookieDomain => "a cookie domain must be non-empty and hold no ';'",
            ConfigErrorKind::CookiePrefix => {
                "a __Host- cookie must be Secure, with Path=/ and no Domain; a __Secure- cookie \
                 must be Secure"
            }
            ConfigErrorKind::SameSiteNoneWithoutSecure => "SameSite=None requires Secure",
            ConfigErrorKind::ZeroDuration => "this duration must be positive",
            ConfigErrorKind::Origin => "an origin must be exactly scheme://host[:port]",
            ConfigErrorKind::ZeroLimit => "this limit must be positive",
            ConfigErrorKind::TooLong => {
                "this duration is over its maximum (the rotation grace: 60 s; the end poll: 1 hour)"
            }
            ConfigErrorKind::HeaderName => {
                "a ticket header must be an HTTP token other than Cookie or Set-Cookie"
            }
            ConfigErrorKind::Conflict => {
                "a rotation grace needs a ticket format that keeps Cloakroom's store keys \
                 (not an interop format such as pycket's) and unsealed data"
            }
            ConfigErrorKind::Sealing => {
                "session data cannot be sealed in a format another program reads (pycket)"
            }
            ConfigErrorKind::LocalPath => {
                "this URL must be a same-origin path: one '/' first, no backslash or control \
                 characters"
            }
        }
    }
}

/// A setting was refused; see [`ConfigErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    setting: &'static str,
    value: String,
}

impl ConfigError {
    /// `setting` (its name, e.g. `"cookie name"`) refused with `value` for breaking `kind`.
    pub(crate) fn new(
        kind: ConfigErrorKind,
        setting: &'static str,
        value: impl Into<String>,
    ) -> Self {
        ConfigError {
            kind,
            setting,
            value: value.into(),
        }
    }

    /// Which rule was broken.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The name of the setting refused.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The offending value, as given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} refused: {}",
            self.setting,
            self.value,
            self.kind.rule()
        )
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_setting_the_value_and_the_rule() {
        let e = ConfigError::new(ConfigErrorKind::ZeroDuration, "idle timeout", "0ns");
        assert_eq!(
            e.to_string(),
            "idle timeout \"0ns\" refused: this duration must be positive"
        );
        assert_eq!(
            (e.kind(), e.setting(), e.value()),
            (ConfigErrorKind::ZeroDuration, "idle timeout", "0ns")
        );
    }
}
