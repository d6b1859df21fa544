//! What the DBSC settings keep in memory: the endpoints' rate limits and the spacing of
//! early challenges, both `governor` GCRA limiters keyed by session.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::id::{SessionKey, Timestamp};

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
    pub(super) fn new(burst: NonZeroU32, period: Duration) -> Self {
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
    pub(super) fn check(
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
/// the browser's hands when it does (and, living [`DbscSettings`](super::DbscSettings)' 5
/// minutes, still live when a browser that does not refresh in advance refreshes at expiry).
const EARLY_WINDOW: Duration = Duration::from_secs(180);

/// Early challenges: when a bound cookie is in its window, and at most one per session
/// every half window in this process (a GCRA limiter of burst 1 keyed by session, so a
/// busy page in the window costs one store command per half window, not one per
/// request). Kept in memory only: no store command decides it; several processes behind
/// a balancer each offer their own.
pub(crate) struct EarlyChallenges {
    /// A bound cookie with less than this left gets an early challenge.
    pub(super) window: Duration,
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
    pub(super) fn new(lifetime: Duration) -> Self {
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
    pub(super) fn due(&self, expires_at: Timestamp, now: Timestamp) -> bool {
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        now < expires_at && expires_at.as_millis() - now.as_millis() <= window
    }

    /// Whether `key` may have an early challenge now (at most one per half window).
    pub(super) fn admit(&self, key: &SessionKey) -> bool {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.spacing.retain_recent();
        }
        self.spacing.check_key(key.as_bytes()).is_ok()
    }
}
