//! [`MemoryStore`]: sessions in process memory, sharded, with expired records swept in the
//! background. For tests, single-process apps and benchmarks; everything is lost on restart.
//! Each session is kept packed (see `entry`); the optional event log is a ring in memory
//! (see `event_log`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, EventLog, Limit, Page, Patch, Record,
    Result, SessionInfo, SessionStore, admission,
};
use crate::id::{SessionKey, Timestamp};
use crate::session::{EndReason, Event, EventKind};

mod entry;
mod event_log;

use entry::{Entry, KeyHash};
use event_log::Ring;

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<SessionKey, Entry, KeyHash>>;

struct Inner {
    shards: Box<[Shard]>,
    users: Mutex<HashMap<String, HashSet<SessionKey, KeyHash>>>,
    capacity: Option<usize>,
    /// Single-use challenges: text -> (session, expiry).
    challenges: Mutex<HashMap<String, (SessionKey, Timestamp)>>,
    /// Held by a create under a capacity bound from the count to the insert, so creates
    /// racing at the bound cannot all pass it.
    creating: Mutex<()>,
    /// Held by a limited create from the count of the user's sessions to the insert.
    admitting: Mutex<()>,
    /// The event log, when the store keeps one ([`MemoryStore::with_event_log`]): every
    /// logged change is made and logged under its lock.
    log: std::sync::OnceLock<Mutex<Ring>>,
}

/// Sessions kept in process memory.
///
/// Cheap to clone (clones share the data). When created inside a tokio runtime, a background
/// task sweeps expired records every minute (see [`MemoryStore::with_sweep_interval`]); it
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with no capacity bound, swept every 60 seconds.
    pub fn new() -> Self {
        Self::build(None, Duration::from_secs(60))
    }

    /// An empty store swept every `interval` (default 60 s: expired records are invisible at
    /// once, the sweep only frees their memory).
    pub fn with_sweep_interval(interval: Duration) -> Self {
        Self::build(None, interval)
    }

    /// An empty store holding at most `max_sessions` live sessions; `create` beyond that
    /// fails with [`ErrorKind::Unavailable`] (default: unbounded). Bounds memory under a
    /// session-creation flood.
    pub fn with_capacity_limit(max_sessions: usize) -> Self {
        Self::build(Some(max_sessions), Duration::from_secs(60))
    }

    fn build(capacity: Option<usize>, sweep: Duration) -> Self {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::with_hasher(KeyHash)))
            .collect();
        let store = MemoryStore {
            inner: Arc::new(Inner {
                shards,
                users: Mutex::new(HashMap::new()),
                capacity,
                challenges: Mutex::new(HashMap::new()),
                creating: Mutex::new(()),
                admitting: Mutex::new(()),
                log: std::sync::OnceLock::new(),
            }),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&store.inner);
            handle.spawn(sweeper(weak, sweep));
        }
        store
    }

    /// Number of records held, live or expired but not yet swept.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired records now; returns how many.
    pub fn sweep(&self) -> u64 {
        sweep(&self.inner, Timestamp::now())
    }

    /// The live record under `key` at `now`.
    fn load_now(&self, key: &SessionKey, now: Timestamp) -> Option<Record> {
        let map = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|r| r.expires_at > now)
            .map(Entry::record)
    }

    /// `create`, done at once (no await, so it can run under a lock).
    fn create_now(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let now = Timestamp::now();
        // Under a bound, the count and the insert are one step (deletes and sweeps only make
        // room meanwhile); without one, creates need no turn.
        let turn = self.inner.capacity.map(|_| lock(&self.inner.creating));
        if let Some(cap) = self.inner.capacity {
            if self.len() >= cap && {
                self.sweep();
                self.len() >= cap
            } {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("memory store is full ({cap} sessions)"),
                ));
            }
        }
        let old_user = {
            let mut map = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            match map.get(key) {
                Some(r) if r.expires_at > now => return Ok(Created::Collision),
                _ => {}
            }
            map.insert(*key, Entry::new(record))
                .and_then(|old| old.user)
        };
        drop(turn);
        if let Some(old) = old_user {
            self.unindex(&old, key);
        }
        if let Some(user) = &record.meta.user {
            self.index(user, *key);
        }
        Ok(Created::Done)
    }

    /// `create_limited`, done at once.
    fn create_limited_now(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        let Some(user) = record.meta.user.as_deref() else {
            return Ok(Admitted::from(self.create_now(key, record)?));
        };
        // One admission at a time: the count, the evictions and the insert are one step for
        // every limited create (deletes and expiry only make room meanwhile).
        let _turn = lock(&self.inner.admitting);
        let now = Timestamp::now();
        if self.load_now(key, now).is_some() {
            return Ok(Admitted::Collision);
        }
        let keys: Vec<SessionKey> = lock(&self.inner.users)
            .get(user)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let live = keys
            .into_iter()
            .filter_map(|k| {
                let map = self.shard(&k).read().unwrap_or_else(|e| e.into_inner());
                let r = map.get(&k)?;
                (r.expires_at > now && r.user.as_deref() == Some(user)).then_some((
                    k,
                    r.last_seen,
                    r.created_at,
                ))
            })
            .collect();
        let Some(ended) = admission(limit, live) else {
            return Ok(Admitted::Refused);
        };
        for k in &ended {
            let mut map = self.shard(k).write().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get_mut(k) {
                *entry = Entry::new(&Record::ended_by_limit(now, entry.expires_at));
            }
            drop(map);
            self.unindex(user, k);
        }
        Ok(match self.create_now(key, record)? {
            Created::Done => Admitted::Done { ended },
            // Checked above, under the turn: only a plain `create` racing for this very key
            // (a 256-bit random one) gets here.
            Created::Collision => Admitted::Collision,
        })
    }

    /// `delete`, done at once: the record, when a live one was there.
    fn delete_now(&self, key: &SessionKey) -> Option<Entry> {
        let now = Timestamp::now();
        let removed = self
            .shard(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)?;
        if let Some(user) = &removed.user {
            self.unindex(user, key);
        }
        (removed.expires_at > now).then_some(removed)
    }

    /// The live sessions of `user` but `except`, deleted one by one: their keys.
    fn delete_user_now(&self, user: &str, except: Option<&SessionKey>) -> Vec<SessionKey> {
        let keys: Vec<SessionKey> = match lock(&self.inner.users).get(user) {
            Some(set) => set.iter().copied().filter(|k| Some(k) != except).collect(),
            None => return Vec::new(),
        };
        keys.into_iter()
            .filter(|key| {
                let owned = {
                    let map = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
                    map.get(key)
                        .is_some_and(|r| r.user.as_deref() == Some(user))
                };
                owned && self.delete_now(key).is_some()
            })
            .collect()
    }

    fn shard(&self, key: &SessionKey) -> &Shard {
        &self.inner.shards[key.as_bytes()[SessionKey::LEN - 1] as usize % SHARDS]
    }

    fn index(&self, user: &str, key: SessionKey) {
        let mut users = lock(&self.inner.users);
        users.entry(user.to_owned()).or_default().insert(key);
    }

    fn unindex(&self, user: &str, key: &SessionKey) {
        unindex(&self.inner, user, key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent maps (every critical section is a
    // single map operation), so poisoning is safe to ignore.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unindex(inner: &Inner, user: &str, key: &SessionKey) {
    let mut users = lock(&inner.users);
    if let Some(set) = users.get_mut(user) {
        set.remove(key);
        if set.is_empty() {
            users.remove(user);
        }
    }
}

fn sweep(inner: &Inner, now: Timestamp) -> u64 {
    lock(&inner.challenges).retain(|_, (_, expires_at)| *expires_at > now);
    // With a log, the sweep is a logged change: each expired session gets its event.
    let mut log = inner.log.get().map(lock);
    let mut removed = 0;
    for shard in inner.shards.iter() {
        let mut dead = Vec::new();
        {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|key, rec| {
                let live = rec.expires_at > now;
                if !live {
                    let session = !rec.is_forward() && !rec.is_ended();
                    dead.push((*key, rec.user.take(), session));
                }
                live
            });
        }
        removed += dead.len() as u64;
        for (key, user, session) in dead {
            if let (Some(log), true) = (&mut log, session) {
                let user = user.as_deref().map(str::to_owned);
                log.push(Event {
                    kind: EventKind::Ended(EndReason::Expired),
                    session: key,
                    user,
                    at: now,
                });
            }
            if let Some(user) = user {
                unindex(inner, &user, &key);
            }
        }
    }
    removed
}

async fn sweeper(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        sweep(&inner, Timestamp::now());
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn event_log(&self) -> Option<&dyn EventLog> {
        self.inner.log.get().map(|_| self as &dyn EventLog)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        self.create_now(key, record)
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        self.create_limited_now(key, record, limit)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(self.load_now(key, Timestamp::now()))
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let now = Timestamp::now();
        let mut map = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(r) if r.expires_at > now && !patch.refuses(r.created_at, r.last_seen) => {
                r.apply(patch);
                Ok(Applied::Done)
            }
            _ => Ok(Applied::Missing),
        }
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let now = Timestamp::now();
        let mut map = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(r) if r.expires_at > now => {
                r.last_seen = last_seen;
                r.expires_at = expires_at;
                Ok(Applied::Done)
            }
            _ => Ok(Applied::Missing),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.delete_now(key).is_some())
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let keys: Vec<SessionKey> = match lock(&self.inner.users).get(user) {
            Some(set) => set.iter().copied().collect(),
            None => return Ok(Vec::new()),
        };
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let map = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = map.get(&key) {
                if r.expires_at > now && r.user.as_deref() == Some(user) {
                    out.push(r.info(key));
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.meta.last_seen));
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        Ok(self.delete_user_now(user, except).len() as u64)
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        // Cursor: "<shard>:<handle of the last key returned>"; each shard is read in key order.
        let now = Timestamp::now();
        let (mut shard, mut after) = parse_cursor(&cursor)?;
        let mut sessions = Vec::new();
        let limit = limit.max(1);
        while shard < SHARDS {
            let map = self.inner.shards[shard]
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let mut keys: Vec<&SessionKey> = map
                .keys()
                .filter(|k| after.is_none_or(|a| **k > a))
                .collect();
            keys.sort_unstable();
            for key in keys {
                if sessions.len() == limit {
                    return Ok(Page {
                        sessions,
                        next: Some(make_cursor(shard, after)),
                    });
                }
                let r = &map[key];
                if r.expires_at > now && !r.is_forward() && !r.is_ended() {
                    sessions.push(r.info(*key));
                }
                after = Some(*key);
            }
            shard += 1;
            after = None;
        }
        Ok(Page {
            sessions,
            next: None,
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        Ok(self.sweep())
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let now = Timestamp::now();
        let mut challenges = lock(&self.inner.challenges);
        if challenges.get(challenge).is_some_and(|(_, e)| *e > now) {
            return Ok(Created::Collision);
        }
        challenges.insert(challenge.to_owned(), (*session, expires_at));
        Ok(Created::Done)
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let taken = lock(&self.inner.challenges).remove(challenge);
        Ok(taken.and_then(|(key, e)| (e > Timestamp::now()).then_some(key)))
    }
}

fn make_cursor(shard: usize, after: Option<SessionKey>) -> Cursor {
    match after {
        Some(k) => Cursor(format!("{shard}:{}", k.to_handle())),
        None => Cursor(format!("{shard}:")),
    }
}

fn parse_cursor(c: &Cursor) -> Result<(usize, Option<SessionKey>)> {
    if c.0.is_empty() {
        return Ok((0, None));
    }
    let bad = || Error::new(ErrorKind::Config, "invalid scan cursor");
    let (shard, key) = c.0.split_once(':').ok_or_else(bad)?;
    let shard: usize = shard.parse().map_err(|_| bad())?;
    let key = if key.is_empty() {
        None
    } else {
        Some(SessionKey::from_handle(key).ok_or_else(bad)?)
    };
    Ok((shard, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    /// Regression: the capacity check and the insert were separate steps, so creates racing
    /// at the bound all went in.
    #[test]
    fn concurrent_creates_respect_the_capacity() {
        use std::task::{Context, Poll, Waker};
        const CAP: usize = 4;
        const THREADS: usize = 8;
        for round in 0..200 {
            // Built outside a runtime: no sweeper.
            let store = MemoryStore::with_capacity_limit(CAP);
            let barrier = std::sync::Barrier::new(THREADS);
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        let now = Timestamp::now();
                        let record = Record::new(now, now.plus(Duration::from_secs(60)));
                        let key = SessionId::generate().key();
                        barrier.wait();
                        // The memory store never waits: one poll finishes it.
                        let mut create = std::pin::pin!(store.create(&key, &record));
                        let polled = create
                            .as_mut()
                            .poll(&mut Context::from_waker(Waker::noop()));
                        assert!(matches!(polled, Poll::Ready(_)));
                    });
                }
            });
            assert!(
                store.len() <= CAP,
                "round {round}: {} sessions",
                store.len()
            );
        }
    }
}
