//! DBSC settings: the policy, the endpoints' paths, the bound cookie's lifetime, the login
//! grace and the endpoints' rate limit.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::limits::{EarlyChallenges, Limits};
use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::csrf::Origin;

/// Whether sessions are bound to devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DbscPolicy {
    /// No DBSC headers, no endpoints (the default).
    #[default]
    Off,
    /// Logins offer registration; browsers without DBSC keep the plain ticket. On a route
    /// that needs a device-bound session, a session that registered needs a fresh bound
    /// cookie from then on (never a downgrade to the ticket alone); a session that never
    /// registered passes.
    Optional,
    /// As `Optional`, and on a route that needs a device-bound session, a logged-in session
    /// that never registered is refused too, once the grace after login (the login's own
    /// short bound cookie) has passed.
    Required,
}

/// DBSC settings, given to [`SessionSettings::with_dbsc`](crate::SessionSettings::with_dbsc).
#[derive(Debug, Clone)]
#[must_use]
pub struct DbscSettings {
    pub(crate) policy: DbscPolicy,
    pub(crate) origin: String,
    pub(crate) include_site: bool,
    pub(crate) registration_path: String,
    pub(crate) refresh_path: String,
    pub(crate) bound_lifetime: Duration,
    pub(crate) login_grace: Duration,
    pub(crate) challenge_ttl: Duration,
    pub(crate) limits: Arc<Limits>,
    pub(crate) early: Arc<EarlyChallenges>,
}

impl DbscSettings {
    /// DBSC for the site at `origin` (`scheme://host[:port]`, the scope the browser binds),
    /// policy [`DbscPolicy::Optional`], endpoints `/dbsc/register` and `/dbsc/refresh`, bound
    /// cookies living 10 minutes (a stolen one is useful for at most that long), challenges
    /// 5 minutes, 30 seconds of grace after login, and the endpoints' default rate limit
    /// (see [`with_rate_limit`](Self::with_rate_limit)).
    ///
    /// # Errors
    /// An origin that is not exactly `scheme://host[:port]`.
    pub fn new(origin: &str) -> std::result::Result<Self, ConfigError> {
        Origin::parse(origin)
            .map_err(|_| ConfigError::new(ConfigErrorKind::Origin, "DBSC origin", origin))?;
        Ok(DbscSettings {
            policy: DbscPolicy::Optional,
            origin: origin.to_ascii_lowercase(),
            include_site: false,
            registration_path: "/dbsc/register".into(),
            refresh_path: "/dbsc/refresh".into(),
            bound_lifetime: Duration::from_secs(600),
            login_grace: Duration::from_secs(30),
            challenge_ttl: Duration::from_secs(300),
            limits: Arc::new(Limits::new(DEFAULT_BURST, DEFAULT_PERIOD)),
            early: Arc::new(EarlyChallenges::new(Duration::from_secs(600))),
        })
    }

    /// The policy (default [`DbscPolicy::Optional`]).
    pub fn with_policy(mut self, policy: DbscPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The registration and refresh endpoints' paths (defaults `/dbsc/register`,
    /// `/dbsc/refresh`).
    ///
    /// # Errors
    /// A path that does not start with `/` or is not printable ASCII.
    pub fn with_paths(
        mut self,
        registration: &str,
        refresh: &str,
    ) -> std::result::Result<Self, ConfigError> {
        for path in [registration, refresh] {
            if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    ConfigErrorKind::CookiePath,
                    "DBSC path",
                    path,
                ));
            }
        }
        (self.registration_path, self.refresh_path) = (registration.into(), refresh.into());
        Ok(self)
    }

    /// How long a bound cookie lives (default 10 minutes): how long a stolen one works, and
    /// how often the browser signs a refresh. It also sets the early-challenge window (see
    /// [`SessionEngine::dbsc_response_headers`](crate::SessionEngine::dbsc_response_headers)):
    /// the last 3 minutes of a bound cookie's life, or the last half of it when it lives less
    /// than 6 minutes.
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_bound_lifetime(
        mut self,
        lifetime: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        if lifetime.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroDuration,
                "DBSC bound cookie lifetime",
                "0ns",
            ));
        }
        self.bound_lifetime = lifetime;
        self.early = Arc::new(EarlyChallenges::new(lifetime));
        Ok(self)
    }

    /// How long the bound cookie of a login lives (default 30 seconds, at most the bound
    /// lifetime): the grace in which requests racing the registration pass a route that needs
    /// a device-bound session. Under [`DbscPolicy::Required`], a browser that does not
    /// register is refused once it is over.
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_login_grace(mut self, grace: Duration) -> std::result::Result<Self, ConfigError> {
        if grace.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroDuration,
                "DBSC login grace",
                "0ns",
            ));
        }
        self.login_grace = grace;
        Ok(self)
    }

    /// The rate limit of the registration and refresh endpoints (default: bursts of 30, then
    /// one more every 2 seconds): a budget per session (the refresh's session id, the
    /// registration's ticket) and one ten times larger per client address (when the adapter
    /// knows it). Over budget: 429 with `Retry-After`. A real browser refreshes about once
    /// per bound cookie lifetime (more often with very short lifetimes: Chromium refreshes
    /// when less than two minutes are left).
    ///
    /// # Errors
    /// A zero burst or period.
    pub fn with_rate_limit(
        mut self,
        burst: u32,
        period: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        let Some(burst) = NonZeroU32::new(burst).filter(|_| !period.is_zero()) else {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroDuration,
                "DBSC rate limit",
                format!("{burst} per {period:?}"),
            ));
        };
        self.limits = Arc::new(Limits::new(burst, period));
        Ok(self)
    }

    /// The policy.
    pub fn policy(&self) -> DbscPolicy {
        self.policy
    }
}

/// Requests allowed at once per session by default (then one per [`DEFAULT_PERIOD`]).
const DEFAULT_BURST: NonZeroU32 = NonZeroU32::new(30).expect("not zero");
/// The default refill period of the endpoints' rate limit.
const DEFAULT_PERIOD: Duration = Duration::from_secs(2);
