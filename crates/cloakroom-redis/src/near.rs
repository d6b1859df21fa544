//! The near-cache (`?cache=N`): up to N session records kept in process memory, made
//! correct by Redis's server-assisted client-side caching (RESP3 `CLIENT TRACKING ON
//! NOLOOP`). Design and reasoning: `docs/design/near-cache.md`.
//!
//! Redis remembers which keys each of our connections read and pushes `invalidate [key]` on
//! that connection when another client changes one. The rules this module keeps:
//!
//! - **Own writes**: every write on this instance removes the key here before it is sent and
//!   again once it is answered (or failed, or timed out), so this instance never reads its
//!   own stale data. A write that succeeded may put the record it wrote back in
//!   ([`NearCache::begin_write`]), if nothing invalidated the key in between.
//! - **Other instances' writes**: the push removes the key as soon as it arrives. A read in
//!   flight when the push arrives is not cached: each read first leaves a pending marker
//!   with a fresh token, any invalidation removes it, and the reply is only cached if the
//!   marker with the same token is still there ([`NearCache::fill`]).
//! - **Lost connection**: everything is dropped (pushes may have been missed).
//! - **A silent connection**: pushes only prove something when replies keep coming. Each
//!   connection records when the newest command that got a reply was sent
//!   ([`NearCache::proven`]); a cached record is only served while that is at most
//!   `max_stale` old, so a change Redis committed at `t` is never served after
//!   `t + max_stale`, whatever the network does. A heartbeat keeps idle connections proven.
//! - **A replaced dataset** (`SWAPDB`, and whatever else Redis does not announce): the
//!   heartbeat rewrites a marker key of this instance's own with a new value every
//!   `max_stale / 4` and reads the old value in the same command (`SET … GET`); any other
//!   value than the one it wrote last (none: an empty database; an older one: a copy) drops
//!   everything. Records are only served while such a check was sent at most `max_stale`
//!   ago ([`NearCache::marker_answered`]), so the bound holds from the replacement on.
//! - **Expiry**: a cached record past its `expires_at` is dropped and Redis is asked (a
//!   miss): another instance may have extended it.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Patch, Record};
use lru::LruCache;
use redis::{Cmd, PushInfo, PushKind, Value};

/// Shards of the cache (each with its own lock and LRU order).
const SHARDS: usize = 16;

/// What a shard keeps per Redis key.
enum Slot {
    /// A read or write of the key is in flight; its reply may be cached if this is still here.
    Pending(u64),
    /// The record as Redis holds it (as far as the pushes received say).
    Ready(Record),
}

/// Counters of a store's near-cache, from [`RedisStore::near_cache_stats`](crate::RedisStore::near_cache_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Loads answered from the cache (no Redis command).
    pub hits: u64,
    /// Loads that went to Redis because the record was not cached (or had expired).
    pub misses: u64,
    /// Loads that went to Redis although the record was cached, because its connection had
    /// not had a reply within the staleness bound (`cache_max_stale_ms`).
    pub stale_bypasses: u64,
    /// Records put in the cache (after a read, or written through after a write).
    pub fills: u64,
    /// Replies not cached because the key was invalidated while they were in flight.
    pub fills_refused: u64,
    /// Keys removed because Redis said another client changed them.
    pub remote_invalidations: u64,
    /// Keys removed because this instance wrote them.
    pub local_invalidations: u64,
    /// Times the whole cache was dropped (lost connection, `FLUSHDB`, no reply for long).
    pub flushes: u64,
    /// Records dropped to keep within the capacity.
    pub evictions: u64,
    /// Heartbeat commands: the dataset marker's check every quarter of the staleness
    /// bound, and `PING`s on otherwise idle connections.
    pub heartbeats: u64,
    /// Records (and pending markers) held now.
    pub entries: u64,
    /// The most records held at once (`cache=N`).
    pub capacity: u64,
}

/// The figures this cache counts; with the `metrics` feature each is also a counter of the
/// `metrics` facade, `cloakroom_redis_near_cache_<figure>_total` (registered when the store
/// is opened).
struct Counters {
    hits: Figure,
    misses: Figure,
    stale_bypasses: Figure,
    fills: Figure,
    fills_refused: Figure,
    remote_invalidations: Figure,
    local_invalidations: Figure,
    flushes: Figure,
    evictions: Figure,
    heartbeats: Figure,
}

impl Counters {
    fn new() -> Self {
        Counters {
            hits: Figure::new("cloakroom_redis_near_cache_hits_total"),
            misses: Figure::new("cloakroom_redis_near_cache_misses_total"),
            stale_bypasses: Figure::new("cloakroom_redis_near_cache_stale_bypasses_total"),
            fills: Figure::new("cloakroom_redis_near_cache_fills_total"),
            fills_refused: Figure::new("cloakroom_redis_near_cache_fills_refused_total"),
            remote_invalidations: Figure::new(
                "cloakroom_redis_near_cache_remote_invalidations_total",
            ),
            local_invalidations: Figure::new(
                "cloakroom_redis_near_cache_local_invalidations_total",
            ),
            flushes: Figure::new("cloakroom_redis_near_cache_flushes_total"),
            evictions: Figure::new("cloakroom_redis_near_cache_evictions_total"),
            heartbeats: Figure::new("cloakroom_redis_near_cache_heartbeats_total"),
        }
    }
}

/// One figure of [`Counters`].
struct Figure {
    count: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: metrics::Counter,
}

impl Figure {
    fn new(name: &'static str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = name;
        Figure {
            count: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: metrics::counter!(name),
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn bump(figure: &Figure) {
    figure.count.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    figure.metric.increment(1);
}

/// The near-cache of one store; see the [module docs](self).
pub(crate) struct NearCache {
    shards: Box<[Mutex<LruCache<Box<[u8]>, Slot>>]>,
    /// Per connection: milliseconds (since `epoch`, plus one) at which the newest command
    /// that got a reply was sent; 0 when none has.
    proven: Box<[AtomicU64]>,
    /// Milliseconds (as `proven`) at which the newest answered dataset marker check was sent.
    checked: AtomicU64,
    /// This instance's dataset marker key, `<prefix>near:<random>`.
    marker_key: String,
    /// The value the newest answered marker check wrote (0: none yet).
    marker_written: AtomicU64,
    /// Only keys starting with this (`<prefix>s:`) are cached; pushes for others are ignored.
    key_prefix: String,
    max_stale_ms: u64,
    capacity: usize,
    epoch: Instant,
    next_token: AtomicU64,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `shard` still holds the pending marker `token` under `key`.
fn holds_marker(shard: &LruCache<Box<[u8]>, Slot>, key: &[u8], token: u64) -> bool {
    matches!(shard.peek(key), Some(Slot::Pending(t)) if *t == token)
}

impl NearCache {
    /// A cache of up to `capacity` records (at least one per shard) for the sessions of the
    /// store with key prefix `prefix`, on `connections` connections, serving records only
    /// while their connection had a reply, and the dataset marker was checked, within
    /// `max_stale`.
    pub(crate) fn new(
        capacity: usize,
        connections: usize,
        prefix: &str,
        max_stale: Duration,
    ) -> NearCache {
        let mut id = [0u8; 8];
        // Unique per instance; a failure (no entropy source) only makes clashes likelier.
        let _ = getrandom::fill(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let per_shard =
            NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        NearCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            proven: (0..connections.max(1)).map(|_| AtomicU64::new(0)).collect(),
            checked: AtomicU64::new(0),
            marker_key: format!("{prefix}near:{id}"),
            marker_written: AtomicU64::new(0),
            key_prefix: format!("{prefix}s:"),
            max_stale_ms: u64::try_from(max_stale.as_millis()).unwrap_or(u64::MAX),
            capacity: per_shard.get() * SHARDS,
            epoch: Instant::now(),
            next_token: AtomicU64::new(1),
            counters: Counters::new(),
        }
    }

    /// The staleness bound.
    pub(crate) fn max_stale(&self) -> Duration {
        Duration::from_millis(self.max_stale_ms)
    }

    fn shard(&self, key: &[u8]) -> &Mutex<LruCache<Box<[u8]>, Slot>> {
        // Session keys end in a hash: its last byte is evenly spread.
        let byte = key.last().copied().unwrap_or(0);
        &self.shards[usize::from(byte) % SHARDS]
    }

    /// The clock of the freshness proofs: milliseconds since the cache was made, plus one.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// A command sent on connection `conn` at `sent_ms` ([`NearCache::now_ms`]) got its reply:
    /// every push Redis queued before running it has been applied.
    pub(crate) fn proven(&self, conn: usize, sent_ms: u64) {
        if let Some(p) = self.proven.get(conn) {
            p.fetch_max(sent_ms, Ordering::Relaxed);
        }
    }

    /// How long ago (ms) connection `conn` was last proven fresh (`u64::MAX`: never).
    pub(crate) fn unproven_for(&self, conn: usize) -> u64 {
        match self.proven.get(conn).map(|p| p.load(Ordering::Relaxed)) {
            Some(0) | None => u64::MAX,
            Some(p) => self.now_ms().saturating_sub(p),
        }
    }

    /// Whether records routed to connection `conn` may be served: the connection had a reply,
    /// and a dataset marker check was sent, within the staleness bound.
    fn fresh(&self, conn: usize) -> bool {
        let checked = match self.checked.load(Ordering::Relaxed) {
            0 => u64::MAX,
            c => self.now_ms().saturating_sub(c),
        };
        self.unproven_for(conn) <= self.max_stale_ms && checked <= self.max_stale_ms
    }

    /// The next dataset marker check, `SET <marker> <value> PX <ttl> GET`, and the value it
    /// writes. The key expires 10 times the staleness bound (at least a minute) after the
    /// last check: an instance gone leaves nothing behind for long.
    pub(crate) fn marker_check(&self) -> (Cmd, u64) {
        let value = self.token();
        let ttl = self.max_stale_ms.saturating_mul(10).max(60_000);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.marker_key)
            .arg(value)
            .arg("PX")
            .arg(ttl)
            .arg("GET");
        (cmd, value)
    }

    /// The marker check that wrote `value`, sent at `sent_ms` ([`NearCache::now_ms`]), was
    /// answered with the marker's `previous` value. Anything but the value the last answered
    /// check wrote means the database is not the one the cached records came from (another
    /// dataset swapped in, flushed, restored from a copy...): everything is dropped. Either
    /// way, no replacement happened before `sent_ms` that the cache still holds records of.
    pub(crate) fn marker_answered(&self, sent_ms: u64, value: u64, previous: &Value) {
        let expected = self.marker_written.swap(value, Ordering::Relaxed);
        let same =
            matches!(previous, Value::BulkString(v) if *v == expected.to_string().into_bytes());
        // The first check is made at open, before anything is cached.
        if expected != 0 && !same {
            self.flush("the Redis database was replaced (SWAPDB, a flush, a restored copy)");
        }
        self.checked.fetch_max(sent_ms, Ordering::Relaxed);
    }

    /// The cached record of `key` (routed to connection `conn`), live at `now` and proven
    /// fresh; `None` when Redis must be asked: not cached (a miss; an expired record is
    /// dropped and is one too), or the connection not proven lately (a stale bypass).
    pub(crate) fn get(&self, key: &[u8], conn: usize, now: Timestamp) -> Option<Record> {
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(Slot::Ready(record)) if record.meta.expires_at > now => {
                if !self.fresh(conn) {
                    bump(&self.counters.stale_bypasses);
                    return None;
                }
                bump(&self.counters.hits);
                return Some(record.clone());
            }
            Some(Slot::Ready(_)) => {
                shard.pop(key);
            }
            _ => {}
        }
        bump(&self.counters.misses);
        None
    }

    fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts `slot` under `key`, counting an eviction when another key had to go.
    fn put(&self, shard: &mut LruCache<Box<[u8]>, Slot>, key: &[u8], slot: Slot) {
        if let Some((old, _)) = shard.push(key.into(), slot) {
            if &*old != key {
                bump(&self.counters.evictions);
            }
        }
    }

    /// A read of `key` is about to be sent: leaves a pending marker, returns its token.
    pub(crate) fn begin(&self, key: &[u8]) -> u64 {
        let token = self.token();
        let mut shard = lock(self.shard(key));
        self.put(&mut shard, key, Slot::Pending(token));
        token
    }

    /// A write of `key` is about to be sent: removes the record (this instance must not read
    /// it while the write is in flight) and leaves a pending marker. Returns the token and
    /// the record that was cached, the base the write's result is computed from.
    pub(crate) fn begin_write(&self, key: &[u8]) -> (u64, Option<Record>) {
        let token = self.token();
        let mut shard = lock(self.shard(key));
        let base = match shard.pop(key) {
            Some(Slot::Ready(record)) => Some(record),
            _ => None,
        };
        bump(&self.counters.local_invalidations);
        self.put(&mut shard, key, Slot::Pending(token));
        (token, base)
    }

    /// Caches `record` for `key` if the marker `token` is still there (nothing invalidated
    /// the key, and nothing else began on it, since the marker was left).
    pub(crate) fn fill(&self, key: &[u8], token: u64, record: Record) {
        let mut shard = lock(self.shard(key));
        if holds_marker(&shard, key, token) {
            shard.put(key.into(), Slot::Ready(record));
            bump(&self.counters.fills);
        } else {
            bump(&self.counters.fills_refused);
        }
    }

    /// Removes the marker `token` of `key` if it is still there (the reply is not cached).
    pub(crate) fn abandon(&self, key: &[u8], token: u64) {
        let mut shard = lock(self.shard(key));
        if holds_marker(&shard, key, token) {
            shard.pop(key);
        }
    }

    /// This instance changed or deleted `key` (or may have: the write failed or timed out).
    pub(crate) fn invalidate(&self, key: &[u8]) {
        lock(self.shard(key)).pop(key);
        bump(&self.counters.local_invalidations);
    }

    /// Drops everything; `why` is logged.
    pub(crate) fn flush(&self, why: &'static str) {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            dropped += shard.len();
            shard.clear();
        }
        bump(&self.counters.flushes);
        tracing::debug!(records = dropped, reason = why, "Redis near-cache dropped");
    }

    /// A push message from Redis on one of our connections.
    pub(crate) fn on_push(&self, info: &PushInfo) {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            if key.starts_with(self.key_prefix.as_bytes()) {
                                lock(self.shard(key)).pop(key.as_slice());
                                bump(&self.counters.remote_invalidations);
                            }
                        }
                    }
                }
                // `null`: the database was flushed (FLUSHDB/FLUSHALL), or anything else we
                // cannot read: drop everything.
                _ => self.flush("Redis flushed the database"),
            },
            PushKind::Disconnection => self.flush("connection to Redis lost"),
            _ => {}
        }
    }

    /// A heartbeat `PING` is about to be sent.
    pub(crate) fn count_heartbeat(&self) {
        bump(&self.counters.heartbeats);
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> NearCacheStats {
        let c = &self.counters;
        let get = Figure::get;
        NearCacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stale_bypasses: get(&c.stale_bypasses),
            fills: get(&c.fills),
            fills_refused: get(&c.fills_refused),
            remote_invalidations: get(&c.remote_invalidations),
            local_invalidations: get(&c.local_invalidations),
            flushes: get(&c.flushes),
            evictions: get(&c.evictions),
            heartbeats: get(&c.heartbeats),
            entries: self.shards.iter().map(|s| lock(s).len() as u64).sum(),
            capacity: self.capacity as u64,
        }
    }
}

/// `base` after `patch`, exactly as the apply script leaves it in Redis: removed fields
/// first, then the set ones, new activity times (the expiry capped by the absolute
/// lifetime), and the "remember me" flag if it changed.
pub(crate) fn patched(mut base: Record, patch: &Patch) -> Record {
    for name in &patch.remove {
        base.data.remove(name);
    }
    for (name, value) in &patch.set {
        base.data.insert(name.clone(), value.clone());
    }
    base.meta.last_seen = patch.last_seen;
    base.meta.expires_at = patch.expiry_for(base.meta.created_at);
    if let Some(flag) = patch.remember {
        base.meta.remember = flag;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn cache(capacity: usize) -> NearCache {
        let cache = NearCache::new(capacity, 2, "p:", W);
        cache.proven(0, cache.now_ms());
        cache.proven(1, cache.now_ms());
        let (_, value) = cache.marker_check();
        cache.marker_answered(cache.now_ms(), value, &Value::Nil);
        cache
    }

    fn record(field: &str) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
        r.data.insert("f".into(), field.into());
        r
    }

    fn hit(c: &NearCache, key: &[u8]) -> Option<String> {
        c.get(key, 0, Timestamp::now())
            .and_then(|r| r.data.get("f").cloned())
    }

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        let keys = keys
            .iter()
            .map(|k| Value::BulkString(k.as_bytes().to_vec()))
            .collect();
        push(PushKind::Invalidate, vec![Value::Array(keys)])
    }

    #[test]
    fn a_read_is_cached_when_nothing_came_between() {
        let c = cache(100);
        assert!(c.get(b"p:s:a", 0, Timestamp::now()).is_none());
        let t = c.begin(b"p:s:a");
        c.fill(b"p:s:a", t, record("1"));
        assert_eq!(hit(&c, b"p:s:a").as_deref(), Some("1"));
        assert_eq!(c.stats().fills, 1);
    }

    #[test]
    fn an_invalidation_while_the_read_is_in_flight_wins() {
        let c = cache(100);
        let t = c.begin(b"p:s:a");
        c.on_push(&invalidate(&["p:s:a"]));
        c.fill(b"p:s:a", t, record("stale"));
        assert_eq!(hit(&c, b"p:s:a"), None);
        assert_eq!(c.stats().fills_refused, 1);
        // A flush in between does the same.
        let t = c.begin(b"p:s:a");
        c.flush("test");
        c.fill(b"p:s:a", t, record("stale"));
        assert_eq!(hit(&c, b"p:s:a"), None);
        // So does a local write begun meanwhile, and a later read's marker.
        let t = c.begin(b"p:s:a");
        let (w, _) = c.begin_write(b"p:s:a");
        c.fill(b"p:s:a", t, record("stale"));
        assert_eq!(hit(&c, b"p:s:a"), None);
        c.abandon(b"p:s:a", w);
        let first = c.begin(b"p:s:a");
        let second = c.begin(b"p:s:a");
        c.fill(b"p:s:a", first, record("old"));
        assert_eq!(hit(&c, b"p:s:a"), None);
        c.fill(b"p:s:a", second, record("new"));
        assert_eq!(hit(&c, b"p:s:a").as_deref(), Some("new"));
    }

    #[test]
    fn pushes_remove_every_key_they_name_and_null_drops_all() {
        let c = cache(100);
        for k in ["p:s:a", "p:s:b", "p:s:c"] {
            let t = c.begin(k.as_bytes());
            c.fill(k.as_bytes(), t, record(k));
        }
        c.on_push(&invalidate(&["p:s:a", "p:s:b", "other:x"]));
        assert_eq!(hit(&c, b"p:s:a"), None);
        assert_eq!(hit(&c, b"p:s:b"), None);
        assert_eq!(hit(&c, b"p:s:c").as_deref(), Some("p:s:c"));
        assert_eq!(c.stats().remote_invalidations, 2);
        c.on_push(&push(PushKind::Invalidate, vec![Value::Nil]));
        assert_eq!(hit(&c, b"p:s:c"), None);
        let t = c.begin(b"p:s:c");
        c.fill(b"p:s:c", t, record("x"));
        c.on_push(&push(PushKind::Disconnection, vec![]));
        assert_eq!(hit(&c, b"p:s:c"), None);
        assert_eq!(c.stats().flushes, 2);
    }

    #[test]
    fn nothing_is_served_from_a_connection_not_proven_lately() {
        let c = NearCache::new(100, 2, "p:", Duration::from_millis(50));
        let (_, value) = c.marker_check();
        c.marker_answered(c.now_ms(), value, &Value::Nil);
        let t = c.begin(b"p:s:a");
        c.fill(b"p:s:a", t, record("1"));
        // Never proven.
        assert!(c.get(b"p:s:a", 0, Timestamp::now()).is_none());
        c.proven(0, c.now_ms());
        assert!(c.get(b"p:s:a", 0, Timestamp::now()).is_some());
        // Proven on the other connection only.
        assert!(c.get(b"p:s:a", 1, Timestamp::now()).is_none());
        std::thread::sleep(Duration::from_millis(120));
        assert!(c.get(b"p:s:a", 0, Timestamp::now()).is_none());
        assert_eq!(c.stats().stale_bypasses, 3);
    }

    #[test]
    fn a_replaced_dataset_drops_everything_and_an_unchecked_one_serves_nothing() {
        let c = NearCache::new(100, 1, "p:", Duration::from_millis(50));
        let (cmd, first) = c.marker_check();
        let packed = String::from_utf8_lossy(&cmd.get_packed_command()).into_owned();
        assert!(
            packed.contains("p:near:") && packed.ends_with("GET\r\n"),
            "{packed}"
        );
        c.proven(0, c.now_ms());
        // The first check (at open, nothing cached yet) finds no marker.
        c.marker_answered(c.now_ms(), first, &Value::Nil);
        let fill = |v| {
            let t = c.begin(b"p:s:a");
            c.fill(b"p:s:a", t, record(v));
        };
        fill("1");
        assert_eq!(hit(&c, b"p:s:a").as_deref(), Some("1"));
        // The marker as written: the same dataset.
        let (_, second) = c.marker_check();
        let written = Value::BulkString(first.to_string().into_bytes());
        c.marker_answered(c.now_ms(), second, &written);
        assert_eq!(hit(&c, b"p:s:a").as_deref(), Some("1"));
        assert_eq!(c.stats().flushes, 0);
        // No marker (an empty database swapped in), or an older value (a copy): dropped.
        for previous in [Value::Nil, written] {
            let (_, next) = c.marker_check();
            c.marker_answered(c.now_ms(), next, &previous);
            assert_eq!(hit(&c, b"p:s:a"), None);
            fill("2");
        }
        assert_eq!(c.stats().flushes, 2);
        // The connection keeps answering, but no check was answered lately: nothing served.
        std::thread::sleep(Duration::from_millis(120));
        c.proven(0, c.now_ms());
        assert!(c.get(b"p:s:a", 0, Timestamp::now()).is_none());
    }

    /// An expired record is neither served nor counted as a hit: it is dropped and Redis
    /// is asked (a miss).
    #[test]
    fn an_expired_record_is_a_miss() {
        let c = cache(100);
        let t = c.begin(b"p:s:a");
        let mut r = record("1");
        r.meta.expires_at = Timestamp::now().plus(Duration::from_millis(1));
        c.fill(b"p:s:a", t, r);
        let later = Timestamp::now().plus(Duration::from_secs(1));
        assert!(c.get(b"p:s:a", 0, later).is_none());
        let stats = c.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.entries),
            (0, 1, 0),
            "{stats:?}"
        );
    }

    #[test]
    fn the_capacity_holds() {
        let c = cache(32);
        for i in 0..1000 {
            let k = format!("p:s:{i}");
            let t = c.begin(k.as_bytes());
            c.fill(k.as_bytes(), t, record("x"));
        }
        let stats = c.stats();
        assert!(stats.entries <= stats.capacity, "{stats:?}");
        assert_eq!(stats.capacity, 32);
        assert!(stats.evictions >= 1000 - 32, "{stats:?}");
    }

    #[test]
    fn a_write_takes_the_record_out_and_returns_it_as_base() {
        let c = cache(100);
        let t = c.begin(b"p:s:a");
        c.fill(b"p:s:a", t, record("1"));
        let (w, base) = c.begin_write(b"p:s:a");
        assert_eq!(
            base.as_ref()
                .and_then(|r| r.data.get("f"))
                .map(String::as_str),
            Some("1")
        );
        assert_eq!(
            hit(&c, b"p:s:a"),
            None,
            "not readable while the write is in flight"
        );
        let now = Timestamp::now();
        let patch = Patch::new(now, now.plus(Duration::from_secs(30)))
            .set("f", "2")
            .set("g", "3")
            .remove("f");
        let written = patched(base.unwrap_or_default(), &patch);
        c.fill(b"p:s:a", w, written);
        assert_eq!(hit(&c, b"p:s:a").as_deref(), Some("2"));
    }

    #[test]
    fn patched_caps_the_expiry_like_the_script() {
        let created = Timestamp::now();
        let base = record("1");
        let mut base = base;
        base.meta.created_at = created;
        let mut patch = Patch::new(created, created.plus(Duration::from_secs(100)));
        patch.max_lifetime = Some(Duration::from_secs(10));
        patch.remember = Some(true);
        let r = patched(base, &patch.remove("f"));
        assert_eq!(r.meta.expires_at, created.plus(Duration::from_secs(10)));
        assert!(r.meta.remember);
        assert!(r.data.is_empty());
    }
}
