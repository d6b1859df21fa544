//! Login throttling: failed logins are rate-limited per account and per client address with
//! `governor`'s keyed GCRA limiters.
//!
//! Before any password hashing, [`Throttle::check`] asks whether both budgets still allow a
//! failure; a throttled attempt costs no Argon2 work. Only a failed login spends the budgets
//! ([`Throttle::failed`]): successes, abandoned requests and server errors are free, so an
//! honest user logging in often (or from many devices at once) is never slowed down.
//!
//! `governor` has no "peek"; the check is a reservation given straight back. The give-back
//! needs the limiter's state, which `governor` keeps private, so the limiters run on
//! [`SharedStore`] (`governor`'s own `DashMap` state store behind an `Arc` this module keeps a
//! second handle to): it moves the key's theoretical arrival time back by one emission
//! interval, exactly undoing the reservation (GCRA is additive).
//!
//! Attempts in flight at the same moment all pass the check before any of them fails, so a
//! burst of concurrent guesses can overshoot the budget by the number in flight; the bounded
//! hashing queue (`passwords`) bounds that.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{NotUntil, Quota, RateLimiter};

/// Failures allowed on one account at once.
const ACCOUNT_BURST: u32 = 5;
/// Then one more failure per this period, per account.
const ACCOUNT_PERIOD: Duration = Duration::from_secs(12);
/// Failures allowed from one client address at once (any accounts).
const CLIENT_BURST: u32 = 30;
/// Then one more failure per this period, per client address.
const CLIENT_PERIOD: Duration = Duration::from_secs(2);
/// Every this many attempts, keys whose budget is full again are forgotten.
const SWEEP_EVERY: u64 = 1024;

/// A request without a peer address (in-process tests): one shared "unknown" client.
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// `governor`'s `DashMap` store, shared so the limiter and [`Throttle::refund`] see one state.
#[derive(Debug)]
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

/// One keyed budget: a limiter and a handle on its state for refunds.
#[derive(Debug)]
struct Budget<K: Hash + Eq + Clone> {
    limiter: RateLimiter<
        K,
        SharedStore<K>,
        DefaultClock,
        NoOpMiddleware<<DefaultClock as governor::clock::Clock>::Instant>,
    >,
    state: Arc<DashMapStateStore<K>>,
    /// The emission interval: what one cell is worth in the state.
    interval: Nanos,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    fn new(burst: u32, period: Duration, clock: &DefaultClock) -> Self {
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let state = Arc::new(DashMapStateStore::default());
        Budget {
            limiter: RateLimiter::new(quota, SharedStore(state.clone()), clock.clone()),
            interval: Nanos::from(quota.replenish_interval()),
            state,
        }
    }

    /// Gives back the cell a [`RateLimiter::check_key`] took.
    fn refund(&self, key: &K) {
        if !self.state.contains_key(key) {
            return; // swept meanwhile: the budget is full anyway
        }
        let interval = self.interval;
        let _ = self.state.measure_and_replace(key, |tat| match tat {
            Some(tat) => Ok(((), tat.saturating_sub(interval))),
            None => Err(()),
        });
    }
}

/// The failed-login budgets of accounts and of client addresses.
#[derive(Debug)]
pub(crate) struct Throttle {
    accounts: Budget<String>,
    clients: Budget<IpAddr>,
    clock: DefaultClock,
    attempts: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// The demo's budgets: 5 failures per account then one per 12 s; 30 per client address
    /// then one per 2 s.
    pub(crate) fn new() -> Self {
        let clock = DefaultClock::default();
        Throttle {
            accounts: Budget::new(ACCOUNT_BURST, ACCOUNT_PERIOD, &clock),
            clients: Budget::new(CLIENT_BURST, CLIENT_PERIOD, &clock),
            clock,
            attempts: AtomicU64::new(0),
        }
    }

    /// Whether `account` (its canonical name) and `client` may try a password now; if not,
    /// how long until they may. Spends nothing.
    pub(crate) fn check(&self, account: &str, client: IpAddr) -> Result<(), Duration> {
        if self.attempts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let account = account.to_owned();
        let wait = |not_until: NotUntil<_>| not_until.wait_time_from(self.clock.now());
        let client = client_key(client);
        // Refused by address: the account's budget is not even looked at.
        self.clients.limiter.check_key(&client).map_err(wait)?;
        self.clients.refund(&client);
        let account_wait = self.accounts.limiter.check_key(&account).map_err(wait);
        if account_wait.is_ok() {
            self.accounts.refund(&account);
        }
        account_wait
    }

    /// A wrong password (or unknown name) for `account` from `client`: one failure of each
    /// budget spent.
    pub(crate) fn failed(&self, account: &str, client: IpAddr) {
        // A failure that finds the budget already spent (concurrent attempts) changes nothing.
        let _ = self.clients.limiter.check_key(&client_key(client));
        let _ = self.accounts.limiter.check_key(&account.to_owned());
    }

    /// Forgets the keys whose budget is full again, so the maps stay as small as the set of
    /// recently failing accounts and clients.
    fn sweep(&self) {
        self.accounts.limiter.retain_recent();
        self.clients.limiter.retain_recent();
        self.accounts.limiter.shrink_to_fit();
        self.clients.limiter.shrink_to_fit();
    }
}

/// The budget key of a client address: IPv4 addresses as they are (IPv4-mapped IPv6 ones
/// too), IPv6 ones by their /64 network, which one subscriber typically holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_are_limited_per_account_and_checks_are_free() {
        let throttle = Throttle::new();
        // Checks alone (successful logins) spend nothing: any number of them.
        for _ in 0..100 {
            throttle.check("ana", A).unwrap();
        }
        for _ in 0..ACCOUNT_BURST {
            throttle.check("ana", A).unwrap();
            throttle.failed("ana", A);
        }
        let wait = throttle.check("ana", A).unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= ACCOUNT_PERIOD,
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 12);
        // From another address too: the account is the key.
        assert!(throttle.check("ana", B).is_err());
        // Other accounts are unaffected, from the same address too.
        throttle.check("bob", A).unwrap();
        throttle.check("bob", B).unwrap();
    }

    #[test]
    fn failures_are_limited_per_client() {
        let throttle = Throttle::new();
        for i in 0..CLIENT_BURST {
            let name = format!("user{i}");
            throttle.check(&name, A).unwrap();
            throttle.failed(&name, A);
        }
        assert!(throttle.check("someone-else", A).is_err());
        // Another client is unaffected.
        throttle.check("someone-else", B).unwrap();
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_key(ip("192.0.2.1")), ip("192.0.2.1"));
        let throttle = Throttle::new();
        for i in 0..CLIENT_BURST {
            let from = ip(&format!("2001:db8:1:2::{i:x}"));
            throttle.failed(&format!("user{i}"), from);
        }
        assert!(throttle.check("fresh", ip("2001:db8:1:2:ffff::9")).is_err());
        throttle.check("fresh", ip("2001:db8:1:3::1")).unwrap();
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(11_001)), 12);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
