//! The DBSC flow on a [`SessionEngine`]: what a login adds, the registration and refresh
//! endpoints, and the bound cookie. Framework-neutral: adapters pass the two request headers
//! in a [`DbscRequest`] and send the [`DbscResponse`] back.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use super::{
    CHALLENGE_HEADER, DeviceKey, ErrorKind, Instructions, REGISTRATION_HEADER, challenge_header,
    new_challenge, registration_header, verify_refresh, verify_registration,
};
use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::cookie::CookieConfig;
use crate::csrf::Origin;
use crate::id::{SessionKey, Timestamp};
use crate::keys::{KEY_ID_LEN, KeyRing, MAC_LEN};
use crate::session::{
    CommitAction, CommitOutcome, DEVICE_KEY_FIELD, Result, Session, SessionEngine,
};
use crate::store::{Applied, Created, Patch, Record};

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
    /// [`SessionEngine::dbsc_early_challenge`]): the last 3 minutes of a bound cookie's life,
    /// or the last half of it when it lives less than 6 minutes.
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
/// How much larger a client address's budget is than a session's.
const CLIENT_FACTOR: u32 = 10;
/// Every this many checks, keys whose budget is full again are forgotten.
const SWEEP_EVERY: u64 = 1024;

/// What the endpoints' rate limits count.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum LimitKey {
    Session([u8; SessionKey::LEN]),
    /// An address; IPv6 by its /64 (one host usually holds a whole /64).
    Client(IpAddr),
}

impl LimitKey {
    fn client(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => LimitKey::Client(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    LimitKey::Client(IpAddr::V6(bits.into()))
                }
            },
            IpAddr::V4(v4) => LimitKey::Client(IpAddr::V4(v4)),
        }
    }
}

/// The endpoints' rate limits: `governor`'s keyed GCRA limiters, one budget per session and
/// one per client address, shared by every clone of the settings.
pub(crate) struct Limits {
    sessions: governor::DefaultKeyedRateLimiter<LimitKey>,
    clients: governor::DefaultKeyedRateLimiter<LimitKey>,
    checks: AtomicU64,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    fn new(burst: NonZeroU32, period: Duration) -> Self {
        let quota = |burst: NonZeroU32, period: Duration| {
            governor::Quota::with_period(period)
                .expect("the period is not zero")
                .allow_burst(burst)
        };
        let client_burst = burst.saturating_mul(NonZeroU32::new(CLIENT_FACTOR).expect("not zero"));
        let client_period = (period / CLIENT_FACTOR).max(Duration::from_nanos(1));
        Limits {
            sessions: governor::RateLimiter::keyed(quota(burst, period)),
            clients: governor::RateLimiter::keyed(quota(client_burst, client_period)),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when one of the keys is over its budget.
    fn check(
        &self,
        session: Option<&SessionKey>,
        client: Option<IpAddr>,
    ) -> std::result::Result<(), Duration> {
        use governor::clock::Clock as _;
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sessions.retain_recent();
            self.clients.retain_recent();
        }
        let clock = governor::clock::DefaultClock::default();
        let checks = [
            session.map(|k| (&self.sessions, LimitKey::Session(*k.as_bytes()))),
            client.map(|ip| (&self.clients, LimitKey::client(ip))),
        ];
        for (limiter, key) in checks.into_iter().flatten() {
            if let Err(not_until) = limiter.check_key(&key) {
                return Err(not_until.wait_time_from(clock.now()));
            }
        }
        Ok(())
    }
}

/// The early-challenge window's longest span: Chromium refreshes in advance once a bound
/// cookie has less than 120 s left; a challenge offered a minute before that is already in
/// the browser's hands when it does (and, living [`DbscSettings`]' 5 minutes, still live
/// when a browser that does not refresh in advance refreshes at expiry).
const EARLY_WINDOW: Duration = Duration::from_secs(180);

/// Early challenges: when a bound cookie is in its window, and at most one per session
/// every half window in this process (a GCRA limiter of burst 1 keyed by session, so a
/// busy page in the window costs one store command per half window, not one per
/// request). Kept in memory only: no store command decides it; several processes behind
/// a balancer each offer their own.
pub(crate) struct EarlyChallenges {
    /// A bound cookie with less than this left gets an early challenge.
    window: Duration,
    spacing: governor::DefaultKeyedRateLimiter<[u8; SessionKey::LEN]>,
    checks: AtomicU64,
}

impl fmt::Debug for EarlyChallenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarlyChallenges")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl EarlyChallenges {
    /// The window for bound cookies living `lifetime`: the last [`EARLY_WINDOW`], or the
    /// last half of shorter lifetimes (so a fresh cookie is never in it).
    fn new(lifetime: Duration) -> Self {
        let window = EARLY_WINDOW.min(lifetime / 2);
        let spacing = (window / 2).max(Duration::from_millis(1));
        let quota = governor::Quota::with_period(spacing)
            .expect("the spacing is not zero")
            .allow_burst(NonZeroU32::MIN);
        EarlyChallenges {
            window,
            spacing: governor::RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether `expires_at` is in the window (`now` before it).
    fn due(&self, expires_at: Timestamp, now: Timestamp) -> bool {
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        now < expires_at && expires_at.0 - now.0 <= window
    }

    /// Whether `key` may have an early challenge now (at most one per half window).
    fn admit(&self, key: &SessionKey) -> bool {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.spacing.retain_recent();
        }
        self.spacing.check_key(key.as_bytes()).is_ok()
    }
}

/// A request whose bound cookie, registered and for session `key`, is in its early-challenge
/// window: what [`SessionEngine::dbsc_near_expiry`] found, for
/// [`SessionEngine::dbsc_early_challenge`] at response time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NearExpiry {
    key: SessionKey,
}

impl fmt::Debug for NearExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NearExpiry(REDACTED)")
    }
}

/// The DBSC endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbscEndpoint {
    /// Registration: binds a session to a device key.
    Registration,
    /// Refresh: a new bound cookie for a signed challenge.
    Refresh,
}

/// What the DBSC endpoints read of a request, as the adapter found it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbscRequest<'a> {
    /// `Sec-Secure-Session-Id` (refresh).
    pub session_id: Option<&'a str>,
    /// `Secure-Session-Response`: the proof.
    pub proof: Option<&'a str>,
    /// `Origin`, if the request sent one: another origin than the DBSC origin is refused
    /// (403; Chromium sends none with its DBSC requests, a cross-site form always does).
    pub origin: Option<&'a str>,
    /// The client's address, when the adapter knows it: the per-client rate limit.
    pub client: Option<IpAddr>,
    /// The request's session (its ticket): the per-session rate limit of registrations.
    pub session: Option<&'a Session>,
}

/// What a DBSC endpoint answers; the adapter sends it as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbscResponse {
    /// The status: 200, 400 (malformed), 401 (no such bound session: the browser drops it),
    /// 403 (sign this challenge), 503 (store failure).
    pub status: u16,
    /// Headers to send (`Set-Cookie`, `Secure-Session-Challenge`, `Content-Type`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// The body (the session instructions JSON on success).
    pub body: String,
}

impl DbscResponse {
    /// A bodiless answer that must not be cached or framed.
    fn empty(status: u16) -> Self {
        DbscResponse {
            status,
            headers: vec![
                ("Cache-Control", "no-store".into()),
                ("X-Frame-Options", "DENY".into()),
                ("Content-Security-Policy", "frame-ancestors 'none'".into()),
            ],
            body: String::new(),
        }
    }

    /// A refusal with a short plain-text reason.
    fn refused(status: u16, reason: &str) -> Self {
        let mut response = DbscResponse::empty(status);
        response
            .headers
            .push(("Content-Type", "text/plain; charset=utf-8".into()));
        response.body = format!("{reason}\n");
        response
    }
}

/// A store failure becomes a 503.
async fn answer(work: impl Future<Output = Result<DbscResponse>>) -> DbscResponse {
    work.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "DBSC endpoint failed");
        DbscResponse::empty(503)
    })
}

impl SessionEngine {
    /// The DBSC settings, when DBSC is on.
    fn dbsc(&self) -> Option<&DbscSettings> {
        self.config()
            .dbsc
            .as_ref()
            .filter(|d| d.policy != DbscPolicy::Off)
    }

    /// The bound cookie: the session cookie's attributes under the name `<name>_bound`.
    fn bound_cookie(&self) -> CookieConfig {
        let mut cookie = self.config().cookie.clone();
        cookie.name.push_str("_bound");
        cookie
    }

    /// The headers a response adds after `outcome` (its commit): after a login (the renewal
    /// of a logged-in session) with DBSC on, a bound cookie for the session, which covers
    /// the requests racing the registration, and `Secure-Session-Registration` with a fresh
    /// challenge bound to the session. Empty otherwise, and for a session whose ticket is
    /// answered in a header (an API client: it keeps no cookies).
    ///
    /// # Errors
    /// Store failures.
    pub async fn dbsc_headers(
        &self,
        session: &Session,
        outcome: &CommitOutcome,
    ) -> Result<Vec<(&'static str, String)>> {
        let Some(dbsc) = self.dbsc() else {
            return Ok(Vec::new());
        };
        // A ticket answered in a header (an API client) gets no cookie: nothing to bind.
        if outcome.action != CommitAction::Renewed
            || outcome.set_cookie.is_none()
            || session.user().await?.is_none()
        {
            return Ok(Vec::new());
        }
        let Some(key) = self.handle_of(session).await? else {
            return Ok(Vec::new());
        };
        let challenge = self.put_challenge(dbsc, &key).await?;
        let registration = registration_header(&dbsc.registration_path, &challenge, None)
            .expect("the path is checked by the settings and the challenge is base64url");
        let lifetime = dbsc.login_grace.min(dbsc.bound_lifetime);
        Ok(vec![
            ("Set-Cookie", self.bound_set_cookie(&key, lifetime, false)),
            (REGISTRATION_HEADER, registration),
        ])
    }

    /// Whether `cookie_header` carries a bound cookie for the session `key` that has not
    /// expired: a MAC check, no store access.
    pub fn dbsc_bound_cookie_valid(&self, key: &SessionKey, cookie_header: Option<&str>) -> bool {
        let cookie = self.bound_cookie();
        crate::cookie::cookie_values(cookie_header.map(str::as_bytes), &cookie.name).any(|value| {
            bound_cookie_session(self.keys(), &cookie.name, value.as_bytes()) == Some(*key)
        })
    }

    /// Whether the response to this request should offer an early challenge: DBSC is on and
    /// `cookie_headers` carry a bound cookie of a registered session that is in its last
    /// stretch (the last 3 minutes, or the last half of a shorter bound lifetime; see
    /// [`DbscSettings::with_bound_lifetime`]). Adapters call it before the application runs
    /// and hand the answer to [`SessionEngine::dbsc_early_challenge`]. No store command: the
    /// expiry is read first and the MAC is checked only for a cookie in the window, so a
    /// request with a fresh bound cookie costs a base64 decode.
    pub fn dbsc_near_expiry<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Option<NearExpiry> {
        let dbsc = self.dbsc()?;
        let name = format!("{}_bound", self.config().cookie.name);
        let now = Timestamp::now();
        crate::cookie::cookie_values(cookie_headers, &name)
            .filter_map(|value| BoundRaw::decode(value.as_bytes()))
            .filter(|raw| raw.registered() && dbsc.early.due(raw.expires_at(), now))
            .find_map(|raw| raw.verify(self.keys(), &name))
            .map(|key| NearExpiry { key })
    }

    /// The early challenge for a response (Chromium keeps it and signs it at its next
    /// refresh, which then needs no 403 round trip): `Secure-Session-Challenge:
    /// "<challenge>";id="<session identifier>"` with a fresh single-use challenge kept by the
    /// store's `put_challenge` (one store command), when [`SessionEngine::dbsc_near_expiry`]
    /// found the request's bound cookie near its expiry, the response keeps that session
    /// (not a login, `cycle_id` or logout), and this process offered that session none in
    /// the last half window. `None` otherwise, without a store command. The registration and
    /// refresh answers always carry the next challenge.
    ///
    /// # Errors
    /// Store failures.
    pub async fn dbsc_early_challenge(
        &self,
        session: &Session,
        outcome: &CommitOutcome,
        near: NearExpiry,
    ) -> Result<Option<(&'static str, String)>> {
        let Some(dbsc) = self.dbsc() else {
            return Ok(None);
        };
        if matches!(
            outcome.action,
            CommitAction::Renewed | CommitAction::Destroyed | CommitAction::Vanished
        ) || session.ticket_key().await != Some(near.key)
            || !dbsc.early.admit(&near.key)
        {
            return Ok(None);
        }
        let challenge = self.put_challenge(dbsc, &near.key).await?;
        let value = challenge_header(&challenge, &near.key.to_handle())
            .expect("a challenge and a handle are base64url");
        Ok(Some((CHALLENGE_HEADER, value)))
    }

    /// The DBSC endpoint at `path`, when DBSC is on: adapters answer such a request with
    /// [`SessionEngine::dbsc_answer`] instead of the application.
    pub fn dbsc_endpoint(&self, path: &str) -> Option<DbscEndpoint> {
        let dbsc = self.dbsc()?;
        if path == dbsc.registration_path {
            Some(DbscEndpoint::Registration)
        } else if path == dbsc.refresh_path {
            Some(DbscEndpoint::Refresh)
        } else {
            None
        }
    }

    /// Answers a request to `endpoint`: 405 for a method other than `POST` (the endpoints
    /// change state and never read a body, so no form can drive them), 403 for a request
    /// from another origin, 429 over the rate limit, otherwise
    /// [`SessionEngine::dbsc_register`] or [`SessionEngine::dbsc_refresh`]. Every answer
    /// refuses framing and carries no CORS header.
    pub async fn dbsc_answer(
        &self,
        endpoint: DbscEndpoint,
        method: &str,
        request: DbscRequest<'_>,
    ) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        if method != "POST" {
            let mut response = DbscResponse::refused(405, "DBSC endpoints take POST only");
            response.headers.push(("Allow", "POST".into()));
            return response;
        }
        if request
            .origin
            .is_some_and(|o| !o.trim().eq_ignore_ascii_case(&dbsc.origin))
        {
            return DbscResponse::refused(403, "cross-origin DBSC request");
        }
        let session = match endpoint {
            DbscEndpoint::Registration => match request.session {
                Some(session) => session.ticket_key().await,
                None => None,
            },
            DbscEndpoint::Refresh => refresh_key(request.session_id),
        };
        if let Err(wait) = dbsc.limits.check(session.as_ref(), request.client) {
            let mut response = DbscResponse::refused(429, "too many DBSC requests");
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers
                .push(("Retry-After", seconds.max(1).to_string()));
            return response;
        }
        match endpoint {
            DbscEndpoint::Registration => self.dbsc_register(request).await,
            DbscEndpoint::Refresh => self.dbsc_refresh(request).await,
        }
    }

    /// The registration endpoint (`POST`, no body): checks the proof against the key in its
    /// own header and a challenge issued at login for the session, binds the session to the
    /// key (once: a bound session is never rebound), and answers the session instructions
    /// with a fresh bound cookie and the next challenge.
    pub async fn dbsc_register(&self, request: DbscRequest<'_>) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        let Some(proof) = request.proof else {
            return DbscResponse::refused(400, "Secure-Session-Response missing");
        };
        let (proof, device_key) = match verify_registration(proof, None) {
            Ok(verified) => verified,
            Err(e) => return DbscResponse::refused(proof_status(e.kind()), &e.to_string()),
        };
        answer(async {
            let Some(key) = self.take_challenge(proof.challenge()).await? else {
                return Ok(DbscResponse::empty(403));
            };
            let Some(record) = self.load_record(&key).await? else {
                return Ok(DbscResponse::empty(401));
            };
            if record.data.contains_key(DEVICE_KEY_FIELD) {
                return Ok(DbscResponse::empty(403));
            }
            let patch = Patch::new(Timestamp::now(), record.meta.expires_at)
                .set(DEVICE_KEY_FIELD, device_key.to_jwk());
            if !self.apply_patch(&key, &patch).await? {
                return Ok(DbscResponse::empty(401));
            }
            self.refreshed(dbsc, &key).await
        })
        .await
    }

    /// The refresh endpoint (`POST`, no body, `Sec-Secure-Session-Id`): 401 when the session
    /// is gone or not bound (the browser then ends it); 403 with a fresh challenge when the
    /// proof is missing, stale or invalid; 200 with a new bound cookie for a proof signed by
    /// the session's key over a challenge issued for it.
    pub async fn dbsc_refresh(&self, request: DbscRequest<'_>) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        let Some(key) = refresh_key(request.session_id) else {
            return DbscResponse::refused(400, "Sec-Secure-Session-Id missing or malformed");
        };
        answer(async {
            let record = self.load_record(&key).await?;
            let Some(device_key) = record
                .as_ref()
                .and_then(|r| r.data.get(DEVICE_KEY_FIELD))
                .and_then(|jwk| DeviceKey::from_jwk(jwk).ok())
            else {
                return Ok(DbscResponse::empty(401));
            };
            let verified = match request.proof.map(|p| verify_refresh(p, &device_key)) {
                Some(Ok(proof)) => proof,
                Some(Err(e)) if proof_status(e.kind()) == 400 => {
                    return Ok(DbscResponse::refused(400, &e.to_string()));
                }
                _ => return self.challenge_response(dbsc, &key).await,
            };
            if self.take_challenge(verified.challenge()).await? != Some(key) {
                return self.challenge_response(dbsc, &key).await;
            }
            self.refreshed(dbsc, &key).await
        })
        .await
    }

    /// 200: a new bound cookie, the next challenge, the session instructions.
    async fn refreshed(&self, dbsc: &DbscSettings, key: &SessionKey) -> Result<DbscResponse> {
        let handle = key.to_handle();
        let cookie = self.bound_cookie();
        let set_cookie = self.bound_set_cookie(key, dbsc.bound_lifetime, true);
        let attributes = &set_cookie[set_cookie.find("; Path=").map_or(0, |i| i + 2)..];
        let body = Instructions {
            session_identifier: &handle,
            refresh_url: &dbsc.refresh_path,
            origin: &dbsc.origin,
            include_site: dbsc.include_site,
            cookie_name: &cookie.name,
            cookie_attributes: attributes,
        }
        .to_json();
        let mut response = self.challenge_response(dbsc, key).await?;
        response.status = 200;
        response.headers.push(("Set-Cookie", set_cookie));
        response
            .headers
            .push(("Content-Type", "application/json".into()));
        response.body = body;
        Ok(response)
    }

    /// 403 with `Secure-Session-Challenge`: a fresh challenge for the session.
    async fn challenge_response(
        &self,
        dbsc: &DbscSettings,
        key: &SessionKey,
    ) -> Result<DbscResponse> {
        let challenge = self.put_challenge(dbsc, key).await?;
        let mut response = DbscResponse::empty(403);
        let value = challenge_header(&challenge, &key.to_handle())
            .expect("a challenge and a handle are base64url");
        response.headers.push((CHALLENGE_HEADER, value));
        Ok(response)
    }

    async fn load_record(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.timed(self.store().load(key)).await
    }

    /// Whether the patch found the record.
    async fn apply_patch(&self, key: &SessionKey, patch: &Patch) -> Result<bool> {
        Ok(self.timed(self.store().apply(key, patch)).await? == Applied::Done)
    }

    async fn put_challenge(&self, dbsc: &DbscSettings, key: &SessionKey) -> Result<String> {
        let expires_at = Timestamp::now().plus(dbsc.challenge_ttl);
        loop {
            let challenge = new_challenge();
            let store = self.store();
            if self
                .timed(store.put_challenge(&challenge, key, expires_at))
                .await?
                == Created::Done
            {
                return Ok(challenge);
            }
        }
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        self.timed(self.store().take_challenge(challenge)).await
    }

    fn bound_set_cookie(&self, key: &SessionKey, lifetime: Duration, registered: bool) -> String {
        let cookie = self.bound_cookie();
        let expires_at = Timestamp::now().plus(lifetime);
        let value = bound_cookie_value(self.keys(), &cookie.name, key, expires_at, registered);
        cookie.set_cookie(&value, Some(lifetime))
    }
}

impl Session {
    /// Whether this request may reach a route that needs a device-bound session (the
    /// adapters' device-bound guards ask): always with DBSC off, without a ticket (no
    /// session to protect: the route's own login check decides), or with a fresh bound
    /// cookie for the ticket's session (a MAC check, no store command). Otherwise the
    /// session is loaded: refused if it registered a device key (a copied ticket without
    /// the bound cookie, which only the device can renew), and under
    /// [`DbscPolicy::Required`] if it is logged in at all (the login's grace is over and
    /// the browser never registered); admitted otherwise.
    ///
    /// # Errors
    /// Store failures.
    pub async fn dbsc_admits<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<bool> {
        let engine = self.engine();
        let Some(dbsc) = engine.dbsc() else {
            return Ok(true);
        };
        let Some(key) = self.ticket_key().await else {
            return Ok(true);
        };
        let name = engine.bound_cookie().name;
        let fresh = crate::cookie::cookie_values(cookie_headers, &name)
            .any(|v| bound_cookie_session(engine.keys(), &name, v.as_bytes()) == Some(key));
        if fresh {
            return Ok(true);
        }
        let (logged_in, bound) = self.dbsc_state().await?;
        let required = dbsc.policy == DbscPolicy::Required;
        Ok(!bound && (!logged_in || !required))
    }
}

/// The session key a refresh names in `Sec-Secure-Session-Id` (bare or quoted).
fn refresh_key(header: Option<&str>) -> Option<SessionKey> {
    SessionKey::from_handle(header?.trim().trim_matches('"'))
}

/// 400 for a proof that is not one (too large, malformed), 403 for one that fails a check.
fn proof_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::TooLarge | ErrorKind::Malformed => 400,
        _ => 403,
    }
}

/// The MAC context of a bound cookie: a label and the cookie name.
fn bound_context(cookie_name: &str) -> [&[u8]; 2] {
    [b"cloakroom dbsc bound\0", cookie_name.as_bytes()]
}

/// Bytes signed in a bound cookie: key id, session key, expiry (ms, big-endian), and 1 when
/// the session had registered a device key (0 for the login's grace cookie).
const BOUND_SIGNED: usize = KEY_ID_LEN + SessionKey::LEN + 8 + 1;

/// A bound cookie's value: the session key, the expiry and whether the session registered,
/// MAC'd by the ring's first key (like the ticket, so it is checked without the store),
/// base64url.
fn bound_cookie_value(
    ring: &KeyRing,
    cookie_name: &str,
    key: &SessionKey,
    expires_at: Timestamp,
    registered: bool,
) -> String {
    let mut raw = Vec::with_capacity(BOUND_SIGNED + MAC_LEN);
    raw.extend_from_slice(&ring.signing_key().id());
    raw.extend_from_slice(key.as_bytes());
    raw.extend_from_slice(&expires_at.as_millis().to_be_bytes());
    raw.push(u8::from(registered));
    let mac = ring.sign_parts(&bound_context(cookie_name), &raw);
    raw.extend_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A bound cookie's raw bytes, decoded but not yet verified.
struct BoundRaw([u8; BOUND_SIGNED + MAC_LEN]);

impl BoundRaw {
    fn decode(value: &[u8]) -> Option<Self> {
        let mut raw = [0u8; BOUND_SIGNED + MAC_LEN];
        (URL_SAFE_NO_PAD.decode_slice(value, &mut raw).ok()? == raw.len()).then_some(BoundRaw(raw))
    }

    /// The claimed expiry (unverified).
    fn expires_at(&self) -> Timestamp {
        let at = KEY_ID_LEN + SessionKey::LEN;
        let bytes: [u8; 8] = self.0[at..at + 8].try_into().expect("8 bytes");
        Timestamp(i64::from_be_bytes(bytes))
    }

    /// The claimed registration flag (unverified).
    fn registered(&self) -> bool {
        self.0[BOUND_SIGNED - 1] == 1
    }

    /// The session, if the MAC verifies and the cookie has not expired.
    fn verify(&self, ring: &KeyRing, cookie_name: &str) -> Option<SessionKey> {
        let (signed, mac) = self.0.split_at(BOUND_SIGNED);
        let kid: [u8; KEY_ID_LEN] = signed[..KEY_ID_LEN].try_into().ok()?;
        let expected = ring.sign_with_parts(kid, &bound_context(cookie_name), signed)?;
        if !bool::from(expected[..].ct_eq(mac)) {
            return None;
        }
        let key = signed[KEY_ID_LEN..KEY_ID_LEN + SessionKey::LEN]
            .try_into()
            .ok()?;
        (self.expires_at() > Timestamp::now()).then(|| SessionKey::from_bytes(key))
    }
}

/// The session a bound cookie value is for, if it verifies and has not expired.
fn bound_cookie_session(ring: &KeyRing, cookie_name: &str, value: &[u8]) -> Option<SessionKey> {
    BoundRaw::decode(value)?.verify(ring, cookie_name)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer as _;
    use rsa::rand_core::OsRng;

    use super::*;
    use crate::keys::Key;
    use crate::store::MemoryStore;
    use crate::{SessionSettings, SessionStore};

    fn engine(store: &MemoryStore) -> SessionEngine {
        let dbsc = DbscSettings::new("https://app.example").unwrap();
        SessionSettings::new(
            store.clone(),
            KeyRing::single(Key::from_bytes(&[3; 32]).unwrap()),
        )
        .with_dbsc(dbsc)
        .build()
    }

    /// The browser: a device key, and the proofs Chromium 150 sends.
    struct Browser(p256::ecdsa::SigningKey);

    impl Browser {
        fn new() -> Self {
            Browser(p256::ecdsa::SigningKey::random(&mut OsRng))
        }

        fn proof(&self, challenge: &str, with_jwk: bool) -> String {
            let point = self.0.verifying_key().to_encoded_point(false);
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            let mut header = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"});
            if with_jwk {
                header["jwk"] = serde_json::json!({"kty": "EC", "crv": "P-256",
                    "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
            }
            let claims = serde_json::json!({"jti": challenge});
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let signature: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
            format!("{input}.{}", b64(&signature.to_vec()))
        }
    }

    fn header<'r>(headers: &'r [(&'static str, String)], name: &str) -> Option<&'r str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `"<c>";id="<sid>"` -> c; `...;challenge="<c>"...` -> c.
    fn quoted_after<'v>(value: &'v str, prefix: &str) -> &'v str {
        let start = value.find(prefix).unwrap() + prefix.len();
        let rest = &value[start..];
        &rest[..rest.find('"').unwrap()]
    }

    /// Logs in; returns the session key, the login headers and the registration challenge.
    async fn login(engine: &SessionEngine) -> (SessionKey, Vec<(&'static str, String)>, String) {
        let session = engine.session(None);
        session.set("n", &1).await.unwrap();
        let created = engine.commit(&session, None).await.unwrap();
        assert_eq!(
            engine.dbsc_headers(&session, &created).await.unwrap(),
            vec![]
        );
        let ticket = created.set_cookie.unwrap();
        let session = engine.session(Some(ticket.split(';').next().unwrap()));
        session.login("ada").await.unwrap();
        let outcome = engine.commit(&session, None).await.unwrap();
        let key = engine.handle_of(&session).await.unwrap().unwrap();
        let headers = engine.dbsc_headers(&session, &outcome).await.unwrap();
        let challenge = quoted_after(
            header(&headers, REGISTRATION_HEADER).unwrap(),
            "challenge=\"",
        );
        let challenge = challenge.to_owned();
        (key, headers, challenge)
    }

    async fn register(engine: &SessionEngine, proof: &str) -> DbscResponse {
        let request = DbscRequest {
            proof: Some(proof),
            ..DbscRequest::default()
        };
        let endpoint = engine.dbsc_endpoint("/dbsc/register").unwrap();
        engine.dbsc_answer(endpoint, "POST", request).await
    }

    async fn refresh(
        engine: &SessionEngine,
        key: &SessionKey,
        proof: Option<&str>,
    ) -> DbscResponse {
        let id = key.to_handle();
        engine
            .dbsc_refresh(DbscRequest {
                session_id: Some(&id),
                proof,
                ..DbscRequest::default()
            })
            .await
    }

    fn challenge_of(response: &DbscResponse) -> String {
        quoted_after(header(&response.headers, CHALLENGE_HEADER).unwrap(), "\"").to_owned()
    }

    fn cookie_of(response_headers: &[(&'static str, String)]) -> String {
        let set_cookie = header(response_headers, "Set-Cookie").unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_login_registers_refreshes_and_a_copied_ticket_gets_no_bound_cookie() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let (key, login_headers, challenge) = login(&engine).await;
        assert!(
            header(&login_headers, REGISTRATION_HEADER)
                .unwrap()
                .starts_with("(ES256 RS256);path=\"/dbsc/register\";")
        );
        assert!(engine.dbsc_bound_cookie_valid(&key, Some(&cookie_of(&login_headers))));

        let browser = Browser::new();
        let registered = register(&engine, &browser.proof(&challenge, true)).await;
        assert_eq!(registered.status, 200, "{registered:?}");
        let json: serde_json::Value = serde_json::from_str(&registered.body).unwrap();
        assert_eq!(json["session_identifier"], key.to_handle());
        assert_eq!(json["refresh_url"], "/dbsc/refresh");
        assert_eq!(json["scope"]["origin"], "https://app.example");
        let set_cookie = header(&registered.headers, "Set-Cookie").unwrap();
        assert_eq!(json["credentials"][0]["name"], "__Host-session_bound");
        let attributes = json["credentials"][0]["attributes"].as_str().unwrap();
        assert!(
            set_cookie.ends_with(&format!("; {attributes}")),
            "{set_cookie} / {attributes}"
        );
        assert!(engine.dbsc_bound_cookie_valid(&key, Some(&cookie_of(&registered.headers))));
        // The same registration proof again: its challenge is used up.
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            403
        );

        // Refresh: with the challenge given in advance, then after a 403.
        let early = challenge_of(&registered);
        let refreshed = refresh(&engine, &key, Some(&browser.proof(&early, false))).await;
        assert_eq!(refreshed.status, 200, "{refreshed:?}");
        let asked = refresh(&engine, &key, None).await;
        assert_eq!(asked.status, 403);
        let challenge = challenge_of(&asked);
        assert!(
            header(&asked.headers, CHALLENGE_HEADER)
                .unwrap()
                .ends_with(&format!(";id=\"{}\"", key.to_handle()))
        );
        assert_eq!(
            refresh(&engine, &key, Some(&browser.proof(&challenge, false)))
                .await
                .status,
            200
        );
        // Replayed: a fresh 403, no cookie.
        let replayed = refresh(&engine, &key, Some(&browser.proof(&challenge, false))).await;
        assert_eq!(replayed.status, 403);
        assert_eq!(header(&replayed.headers, "Set-Cookie"), None);

        // The thief has the ticket but not the device key: every refresh is a 403.
        let thief = Browser::new();
        let challenge = challenge_of(&refresh(&engine, &key, None).await);
        let stolen = refresh(&engine, &key, Some(&thief.proof(&challenge, false))).await;
        assert_eq!(stolen.status, 403);
        assert_eq!(header(&stolen.headers, "Set-Cookie"), None);
        // Nor can anyone register another key over a bound session, even with a challenge
        // issued for it.
        let again = engine
            .put_challenge(engine.dbsc().unwrap(), &key)
            .await
            .unwrap();
        assert_eq!(
            register(&engine, &thief.proof(&again, true)).await.status,
            403
        );
        let stored = &store.load(&key).await.unwrap().unwrap().data[DEVICE_KEY_FIELD];
        assert_eq!(
            DeviceKey::from_jwk(stored).unwrap().to_jwk(),
            browser_jwk(&browser)
        );
    }

    fn browser_jwk(browser: &Browser) -> String {
        verify_registration(&browser.proof("x", true), None)
            .unwrap()
            .1
            .to_jwk()
    }

    #[tokio::test]
    async fn a_challenge_of_another_session_does_not_refresh_this_one() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let browser = Browser::new();
        let (key, _, challenge) = login(&engine).await;
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            200
        );
        let (other, _, other_challenge) = login(&engine).await;
        assert_eq!(
            register(&engine, &browser.proof(&other_challenge, true))
                .await
                .status,
            200
        );
        let foreign = challenge_of(&refresh(&engine, &other, None).await);
        assert_eq!(
            refresh(&engine, &key, Some(&browser.proof(&foreign, false)))
                .await
                .status,
            403
        );
    }

    #[tokio::test]
    async fn ended_unknown_and_unbound_sessions_get_401_and_bad_headers_400() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let (key, _, challenge) = login(&engine).await;
        // Not registered yet: not a DBSC session.
        assert_eq!(refresh(&engine, &key, None).await.status, 401);
        let browser = Browser::new();
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            200
        );
        assert_eq!(refresh(&engine, &key, None).await.status, 403);
        assert!(store.delete(&key).await.unwrap());
        assert_eq!(refresh(&engine, &key, None).await.status, 401);
        let unknown = crate::SessionId::generate().key();
        assert_eq!(refresh(&engine, &unknown, None).await.status, 401);
        let bad_id = engine
            .dbsc_refresh(DbscRequest {
                session_id: Some("x"),
                ..DbscRequest::default()
            })
            .await;
        assert_eq!(bad_id.status, 400);
        assert_eq!(register(&engine, "a.b.c").await.status, 400);
        assert_eq!(register(&engine, &"A".repeat(10_000)).await.status, 400);
        assert_eq!(
            engine.dbsc_register(DbscRequest::default()).await.status,
            400
        );
        // A registration whose challenge was never issued.
        assert_eq!(
            register(&engine, &browser.proof("made-up", true))
                .await
                .status,
            403
        );
    }

    #[tokio::test]
    async fn endpoints_answer_post_only_and_only_when_dbsc_is_on() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        assert_eq!(
            engine.dbsc_endpoint("/dbsc/refresh"),
            Some(DbscEndpoint::Refresh)
        );
        assert_eq!(engine.dbsc_endpoint("/dbsc/register/"), None);
        let get = engine
            .dbsc_answer(DbscEndpoint::Refresh, "GET", DbscRequest::default())
            .await;
        assert_eq!(
            (get.status, header(&get.headers, "Allow")),
            (405, Some("POST"))
        );
        let ring = KeyRing::single(Key::from_bytes(&[3; 32]).unwrap());
        let off = SessionSettings::new(store.clone(), ring.clone()).build();
        assert_eq!(off.dbsc_endpoint("/dbsc/refresh"), None);
        let policy_off = DbscSettings::new("https://app.example")
            .unwrap()
            .with_policy(DbscPolicy::Off);
        let off = SessionSettings::new(store, ring)
            .with_dbsc(policy_off)
            .build();
        assert_eq!(off.dbsc_endpoint("/dbsc/register"), None);
        let session = off.session(None);
        session.login("ada").await.unwrap();
        let outcome = off.commit(&session, None).await.unwrap();
        assert_eq!(off.dbsc_headers(&session, &outcome).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_login_on_a_bound_session_drops_the_binding_and_offers_registration_again() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let browser = Browser::new();
        // A login on a fresh session (no ticket yet) is a renewal too: offered registration.
        let session = engine.session(None);
        session.login("ada").await.unwrap();
        let first = engine.commit(&session, None).await.unwrap();
        assert_eq!(first.action, CommitAction::Renewed);
        let ticket = first.set_cookie.clone().unwrap();
        let registration = |headers: Vec<(&'static str, String)>| {
            let value = header(&headers, REGISTRATION_HEADER).unwrap();
            quoted_after(value, "challenge=\"").to_owned()
        };
        let challenge = registration(engine.dbsc_headers(&session, &first).await.unwrap());
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            200
        );
        // Logging in again on the bound session: a new id, unbound, offered registration.
        let again = engine.session(Some(ticket.split(';').next().unwrap()));
        again.login("ada").await.unwrap();
        let outcome = engine.commit(&again, None).await.unwrap();
        let key = engine.handle_of(&again).await.unwrap().unwrap();
        assert_eq!(
            refresh(&engine, &key, None).await.status,
            401,
            "not bound yet"
        );
        let challenge = registration(engine.dbsc_headers(&again, &outcome).await.unwrap());
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            200
        );
        assert_eq!(refresh(&engine, &key, None).await.status, 403, "bound");
    }

    #[tokio::test]
    async fn a_cycled_id_drops_the_binding_and_offers_registration_again() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let browser = Browser::new();
        let session = engine.session(None);
        session.login("ada").await.unwrap();
        let first = engine.commit(&session, None).await.unwrap();
        let cookie = first.set_cookie.clone().unwrap();
        let challenge = quoted_after(
            header(
                &engine.dbsc_headers(&session, &first).await.unwrap(),
                REGISTRATION_HEADER,
            )
            .unwrap(),
            "challenge=\"",
        )
        .to_owned();
        assert_eq!(
            register(&engine, &browser.proof(&challenge, true))
                .await
                .status,
            200
        );
        let bound = engine.handle_of(&session).await.unwrap().unwrap();
        assert_eq!(refresh(&engine, &bound, None).await.status, 403, "bound");
        let again = engine.session(Some(cookie.split(';').next().unwrap()));
        again.cycle_id().await.unwrap();
        let outcome = engine.commit(&again, None).await.unwrap();
        let cycled = engine.handle_of(&again).await.unwrap().unwrap();
        assert_ne!(cycled, bound);
        assert_eq!(refresh(&engine, &cycled, None).await.status, 401, "unbound");
        let offered = engine.dbsc_headers(&again, &outcome).await.unwrap();
        assert!(header(&offered, REGISTRATION_HEADER).is_some());
        assert!(
            !store
                .load(&cycled)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key(DEVICE_KEY_FIELD)
        );
    }

    #[test]
    fn bound_cookies_verify_only_for_their_session_key_and_until_expiry() {
        let ring = KeyRing::single(Key::from_bytes(&[3; 32]).unwrap());
        let key = crate::SessionId::generate().key();
        let live = bound_cookie_value(
            &ring,
            "b",
            &key,
            Timestamp::now().plus(Duration::from_secs(60)),
            true,
        );
        assert_eq!(bound_cookie_session(&ring, "b", live.as_bytes()), Some(key));
        assert_eq!(bound_cookie_session(&ring, "other", live.as_bytes()), None);
        let other_ring = KeyRing::single(Key::from_bytes(&[4; 32]).unwrap());
        assert_eq!(
            bound_cookie_session(&other_ring, "b", live.as_bytes()),
            None
        );
        let expired = bound_cookie_value(&ring, "b", &key, Timestamp(Timestamp::now().0 - 1), true);
        assert_eq!(bound_cookie_session(&ring, "b", expired.as_bytes()), None);
        let mut tampered = live.into_bytes();
        tampered[10] ^= 1;
        assert_eq!(bound_cookie_session(&ring, "b", &tampered), None);
        assert_eq!(bound_cookie_session(&ring, "b", b"short"), None);
    }

    #[tokio::test]
    async fn early_challenges_only_near_a_registered_cookies_expiry_and_once_per_half_window() {
        let store = MemoryStore::new();
        let engine = engine(&store);
        let session = engine.session(None);
        session.login("ada").await.unwrap();
        let ticket = engine
            .commit(&session, None)
            .await
            .unwrap()
            .set_cookie
            .unwrap();
        let ticket = ticket.split(';').next().unwrap().to_owned();
        let key = engine.handle_of(&session).await.unwrap().unwrap();
        let name = engine.bound_cookie().name;
        let cookie = |left: u64, registered: bool| {
            let at = Timestamp::now().plus(Duration::from_secs(left));
            let value = bound_cookie_value(engine.keys(), &name, &key, at, registered);
            format!("{ticket}; {name}={value}")
        };
        let near = |header: &str| engine.dbsc_near_expiry([header.as_bytes()]);
        // The window of a 10-minute cookie is its last 3 minutes.
        assert_eq!(near(&cookie(181, true)), None, "fresh");
        assert_eq!(near(&cookie(179, true)), Some(NearExpiry { key }));
        assert_eq!(near(&cookie(10, false)), None, "the login's grace cookie");
        let other = crate::SessionId::generate().key();
        let at = Timestamp::now().plus(Duration::from_secs(10));
        let forged = bound_cookie_value(engine.keys(), "x", &other, at, true);
        assert_eq!(
            near(&format!("{name}={forged}")),
            None,
            "a MAC that does not verify"
        );
        // Shorter lifetimes: the last half.
        let short = EarlyChallenges::new(Duration::from_secs(4));
        assert_eq!(short.window, Duration::from_secs(2));

        // The response of a read-only request gets one, once per half window.
        let header = cookie(60, true);
        let request = engine.session(Some(&ticket));
        let outcome = request.commit_now().unwrap();
        let found = near(&header).unwrap();
        let early = engine
            .dbsc_early_challenge(&request, &outcome, found)
            .await
            .unwrap();
        let (name, value) = early.unwrap();
        assert_eq!(name, CHALLENGE_HEADER);
        let challenge = quoted_after(&value, "\"");
        assert_eq!(value, format!("\"{challenge}\";id=\"{}\"", key.to_handle()));
        assert_eq!(store.take_challenge(challenge).await.unwrap(), Some(key));
        let again = engine.session(Some(&ticket));
        let outcome = again.commit_now().unwrap();
        assert_eq!(
            engine
                .dbsc_early_challenge(&again, &outcome, found)
                .await
                .unwrap(),
            None,
            "one per half window"
        );
        // Another session's cookie beside this ticket: none.
        let stranger = engine.session(None);
        let outcome = stranger.commit_now().unwrap();
        let foreign = NearExpiry { key: other };
        assert_eq!(
            engine
                .dbsc_early_challenge(&stranger, &outcome, foreign)
                .await
                .unwrap(),
            None
        );
    }
}
