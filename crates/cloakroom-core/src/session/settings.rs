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
//!     .with_cookie_name("__Host-app").unwrap()
//!     .with_sealed_data(true).unwrap()
//!     .with_idle_timeout(Duration::from_secs(30 * 60)).unwrap()
//!     .build();
//! # let _ = engine;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::{DEFAULT_END_POLL, Lifecycle, SessionListener};
use super::{SessionConfig, SessionEngine, Transport};
use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::{SameSite, SignedTicket, TicketFormat};
use crate::keys::KeyRing;
use crate::store::{IntoSessionStore, LimitPolicy, SessionStore};

/// The settings of a session engine, each checked as it is set; [`build`](Self::build) makes
/// the engine.
#[must_use]
pub struct SessionSettings {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    config: SessionConfig,
    format: Option<Arc<dyn TicketFormat>>,
    listener: Option<Arc<dyn SessionListener>>,
    end_poll: Duration,
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
            format: None,
            listener: None,
            end_poll: DEFAULT_END_POLL,
        }
    }

    /// Applies `change` to the configuration and checks the result: the one path every
    /// setter takes, so all follow one policy (zero durations and limits refused, except the
    /// touch interval, where zero means every request). A refused change leaves nothing set.
    fn edit(mut self, change: impl FnOnce(&mut SessionConfig)) -> Result<Self, ConfigError> {
        change(&mut self.config);
        self.config.name_cookie();
        self.config.validate()?;
        Ok(self)
    }

    /// Cookie name. Default `__Host-session` while the cookie is `Secure`, host-only (no
    /// [`Domain`](Self::with_cookie_domain)) and `Path=/`, else `session` (OWASP: the
    /// `__Host-` prefix stops a subdomain or another path from planting a ticket; browsers
    /// refuse it without `Secure`, so a plain-HTTP development server gets `session`). A
    /// name set here is kept whatever the other settings.
    ///
    /// # Errors
    /// A name that is not an RFC 6265 token, or a prefix whose rules the other settings break.
    pub fn with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        self.edit(|c| c.cookie_name = Some(name))
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

    /// Seals session data at rest (feature `seal`). Default off. On: each data value is
    /// encrypted before it reaches the store, under a key derived from the session id (which
    /// the store never sees), bound to its session and field; see [`seal`](super::seal) and
    /// SECURITY.md ("Stolen store") for what it guarantees. The user index, times and user
    /// agent stay readable (for "your devices" and the admin CLI) unless
    /// [`with_sealed_user_agent`](Self::with_sealed_user_agent). Sealed values are opened
    /// whatever this setting, so it can be turned on or off over an existing store.
    ///
    /// # Errors
    /// On with a ticket format whose records another program reads
    /// ([`TicketFormat::sealable`], false for pycket's).
    #[cfg(feature = "seal")]
    pub fn with_sealed_data(self, seal: bool) -> Result<Self, ConfigError> {
        self.check_sealable(seal)?;
        self.edit(|c| c.seal_data = seal)
    }

    /// Seals the user agent kept with each session as well. Default off: "your devices"
    /// pages and the admin CLI then show a sealed device as such, except the one session
    /// whose ticket is at hand.
    ///
    /// # Errors
    /// As [`with_sealed_data`](Self::with_sealed_data).
    #[cfg(feature = "seal")]
    pub fn with_sealed_user_agent(self, seal: bool) -> Result<Self, ConfigError> {
        self.check_sealable(seal)?;
        self.edit(|c| c.seal_user_agent = seal)
    }

    /// Most live sessions one user may hold at once. Default: no limit. A login past it ends
    /// the user's least recently seen session, or is refused, by
    /// [`with_session_limit_policy`](Self::with_session_limit_policy). Enforced atomically by
    /// the store ([`SessionStore::create_limited`]): concurrent logins never leave more than
    /// `max` sessions (OWASP session management: limit concurrent sessions where the
    /// application's risk calls for it). An ended session's next request finds no session
    /// and a flash message saying why; a store failure while enforcing it refuses the login
    /// (503), never admits it over the limit.
    ///
    /// # Errors
    /// Zero.
    pub fn with_max_sessions_per_user(self, max: usize) -> Result<Self, ConfigError> {
        self.edit(|c| c.max_sessions_per_user = Some(max))
    }

    /// What a login past [`with_max_sessions_per_user`](Self::with_max_sessions_per_user)
    /// does. Default [`LimitPolicy::EndLeastRecentlySeen`] (the newest login wins, as a user
    /// who lost a device expects); [`LimitPolicy::RefuseNew`] makes `Session::login` fail
    /// with [`ErrorKind::SessionLimit`](super::ErrorKind::SessionLimit). No effect without
    /// a limit.
    pub fn with_session_limit_policy(mut self, policy: LimitPolicy) -> Self {
        self.config.session_limit_policy = policy;
        self
    }

    fn check_sealable(&self, seal: bool) -> Result<(), ConfigError> {
        if let Some(format) = self.format.as_ref().filter(|f| seal && !f.sealable()) {
            let format = format!("{format:?}");
            return Err(ConfigError::new(
                ConfigErrorKind::Sealing,
                "ticket format",
                format,
            ));
        }
        Ok(())
    }

    /// How ids are made and carried. Default: Cloakroom's signed ticket, made with this
    /// engine's key ring ([`encode_ticket`](crate::cookie::encode_ticket)); use
    /// `cloakroom_tornado::PycketTicket` with the cookie name `PYCKET_ID` to share sessions
    /// with a Tornado + pycket app.
    ///
    /// # Errors
    /// An interop format (one that names store records itself, as pycket's does) with a
    /// [rotation grace](Self::with_rotation_grace) set: another program reads those records,
    /// and would not follow the grace's forwarding records.
    /// Also a format that cannot seal ([`TicketFormat::sealable`]) while sealing is on.
    pub fn with_ticket_format(
        mut self,
        format: Arc<dyn TicketFormat>,
    ) -> Result<Self, ConfigError> {
        refuse_grace_with_interop(&*format, self.config.rotation_grace)?;
        self.format = Some(format);
        let sealing = self.config.seal_data || self.config.seal_user_agent;
        self.check_sealable(sealing)?;
        Ok(self)
    }

    /// Where tickets travel: the cookie (the default), the ticket header as well (API and
    /// mobile clients: `Authorization: Bearer <ticket>`), or the header only. See
    /// [`Transport`] and the [`transport`](super::transport) module. With the cookie only,
    /// request headers are never read for a ticket.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.config.transport = transport;
        self
    }

    /// The request header a ticket is read from when the [transport](Self::with_transport)
    /// allows one. Default `Authorization`, read as `Bearer <ticket>`; any other name carries
    /// the bare ticket (`X-Auth-Token`, as Spring Session's). New tickets are answered in
    /// [`TICKET_RESPONSE_HEADER`](super::TICKET_RESPONSE_HEADER) either way.
    ///
    /// # Errors
    /// A name that is not an HTTP token, or `Cookie` / `Set-Cookie`.
    pub fn with_ticket_header(self, name: &str) -> Result<Self, ConfigError> {
        let lower = name.to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || lower == "cookie" || lower == "set-cookie" {
            return Err(ConfigError::new(
                ConfigErrorKind::HeaderName,
                "ticket header",
                name,
            ));
        }
        self.edit(|c| c.ticket_header = lower)
    }

    /// Receives every session's lifecycle [`Event`](super::Event)s (created, rotated,
    /// ended and why), in-process, after each change is committed: on a thread of its own,
    /// never on a request's path (see [`SessionListener`]). Default: none. Events of ends
    /// this process does not make (another server's, the admin CLI's, the store's own
    /// expiry) do not reach it.
    pub fn with_listener(mut self, listener: impl SessionListener) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// How often an open [`Session::ended`](super::Session::ended) watcher reads its
    /// session's record to see ends made outside this process. Default 1 second; ends made
    /// by this process reach watchers at once whatever this is.
    ///
    /// # Errors
    /// Zero, or over an hour.
    pub fn with_end_poll(mut self, interval: Duration) -> Result<Self, ConfigError> {
        let kind = match interval {
            d if d.is_zero() => Some(ConfigErrorKind::ZeroDuration),
            d if d > Duration::from_secs(3600) => Some(ConfigErrorKind::TooLong),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(ConfigError::new(
                kind,
                "end poll interval",
                format!("{interval:?}"),
            ));
        }
        self.end_poll = interval;
        Ok(self)
    }

    /// How long the old ticket still reaches the session after a rotation that changes no
    /// privilege ([`Session::cycle_id`](super::Session::cycle_id)), so requests a client
    /// sent in parallel with the rotating one still find their session (and their writes land
    /// in it). Default zero: none. A login never has one (session fixation), nor a logout:
    /// logging out through either ticket ends both. Costs nothing on requests that present
    /// the current ticket; an old (or unknown) ticket costs one more store load.
    ///
    /// # Errors
    /// Over 60 seconds, or with an interop ticket format ([`with_ticket_format`](Self::with_ticket_format)).
    pub fn with_rotation_grace(self, grace: Duration) -> Result<Self, ConfigError> {
        if let Some(format) = &self.format {
            refuse_grace_with_interop(&**format, grace)?;
        }
        self.edit(|c| c.rotation_grace = grace)
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
    /// code that lists or revokes sessions outside requests). With the `metrics` feature its
    /// store operations are measured ([`telemetry`](crate::telemetry)).
    pub fn build(self) -> SessionEngine {
        let store = crate::telemetry::instrument(self.store);
        let lifecycle = Lifecycle::new(self.listener, self.end_poll);
        let format = self
            .format
            .unwrap_or_else(|| Arc::new(SignedTicket(self.keys.clone())));
        SessionEngine::from_parts(store, self.keys, self.config, format, lifecycle)
    }
}

/// Refuses a rotation grace with a ticket format that names store records itself (pycket's):
/// the grace's forwarding records would sit among records another program reads.
fn refuse_grace_with_interop(
    format: &dyn TicketFormat,
    grace: Duration,
) -> Result<(), ConfigError> {
    let id = format.generate();
    if grace.is_zero() || format.store_key(&id) == id.key() {
        return Ok(());
    }
    Err(ConfigError::new(
        ConfigErrorKind::Conflict,
        "rotation grace",
        format!("{grace:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;
    use crate::store::MemoryStore;

    fn ring() -> KeyRing {
        KeyRing::single(Key::generate())
    }

    fn settings() -> SessionSettings {
        SessionSettings::new(MemoryStore::new(), ring())
    }

    fn name(settings: Result<SessionSettings, ConfigError>) -> String {
        settings.unwrap().config.cookie.name
    }

    /// `__Host-session` exactly when the prefix's rules hold (Secure, no Domain, `Path=/`),
    /// whatever order the settings come in; a chosen name is kept.
    #[test]
    fn the_default_cookie_name_is_host_prefixed_when_the_rules_allow() {
        assert_eq!(settings().config.cookie.name, "__Host-session");
        assert_eq!(
            name(settings().with_idle_timeout(Duration::from_secs(60))),
            "__Host-session"
        );
        assert_eq!(name(settings().with_cookie_secure(false)), "session");
        assert_eq!(
            name(settings().with_cookie_domain("example.com")),
            "session"
        );
        assert_eq!(name(settings().with_cookie_path("/app")), "session");
        let back = settings()
            .with_cookie_secure(false)
            .unwrap()
            .with_cookie_secure(true);
        assert_eq!(name(back), "__Host-session");
        for chosen in ["session", "sid", "__Host-app"] {
            assert_eq!(name(settings().with_cookie_name(chosen)), chosen);
        }
        let kept = settings()
            .with_cookie_name("sid")
            .unwrap()
            .with_cookie_path("/app");
        assert_eq!(name(kept), "sid");
        // A chosen `__Host-` name still refuses what breaks the prefix.
        let host = settings().with_cookie_name("__Host-app").unwrap();
        assert_eq!(
            host.with_cookie_secure(false).unwrap_err().kind(),
            ConfigErrorKind::CookiePrefix
        );
    }

    #[cfg(feature = "seal")]
    #[test]
    fn sealing_is_refused_with_a_format_that_cannot_seal() {
        #[derive(Debug)]
        struct Plain(KeyRing);
        impl TicketFormat for Plain {
            fn generate(&self) -> crate::session::SessionId {
                crate::session::SessionId::generate()
            }
            fn sealable(&self) -> bool {
                false
            }
            fn encode(&self, n: &str, id: &crate::session::SessionId) -> String {
                crate::cookie::encode_ticket(&self.0, n, id)
            }
            fn decode(
                &self,
                n: &str,
                v: &str,
            ) -> Result<crate::session::SessionId, crate::cookie::TicketError> {
                crate::cookie::decode_ticket(&self.0, n, v)
            }
        }
        let kind = |r: Result<SessionSettings, ConfigError>| r.unwrap_err().kind();
        let plain = || {
            settings()
                .with_ticket_format(Arc::new(Plain(ring())))
                .unwrap()
        };
        assert_eq!(
            kind(plain().with_sealed_data(true)),
            ConfigErrorKind::Sealing
        );
        assert_eq!(
            kind(plain().with_sealed_user_agent(true)),
            ConfigErrorKind::Sealing
        );
        assert!(plain().with_sealed_data(false).is_ok());
        let sealed = settings().with_sealed_data(true).unwrap();
        assert_eq!(
            kind(sealed.with_ticket_format(Arc::new(Plain(ring())))),
            ConfigErrorKind::Sealing
        );
    }

    /// An old ticket reaching the new record could not open its sealed values: a rotation
    /// grace and sealing are refused together, whichever comes first.
    #[cfg(feature = "seal")]
    #[test]
    fn a_rotation_grace_is_refused_with_sealed_data() {
        let grace = Duration::from_secs(5);
        let kind = |r: Result<SessionSettings, ConfigError>| r.unwrap_err().kind();
        let sealed = || settings().with_sealed_data(true).unwrap();
        assert_eq!(
            kind(sealed().with_rotation_grace(grace)),
            ConfigErrorKind::Conflict
        );
        let graced = || settings().with_rotation_grace(grace).unwrap();
        assert_eq!(
            kind(graced().with_sealed_data(true)),
            ConfigErrorKind::Conflict
        );
        assert_eq!(
            kind(graced().with_sealed_user_agent(true)),
            ConfigErrorKind::Conflict
        );
        assert!(graced().with_sealed_data(false).is_ok());
    }
}
