//! [`MemoryStore`]: sessions in process memory, one map behind a lock, with expired records
//! swept in the background. For tests, single-process apps and benchmarks; everything is lost
//! on restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Applied, Created, Cursor, Error, ErrorKind, Page, Patch, Record, Result, SessionInfo,
    SessionStore,
};
use crate::id::{SessionKey, Timestamp};

#[derive(Default)]
struct Sessions {
    records: HashMap<SessionKey, Record>,
    /// Keys of each user's sessions.
    users: HashMap<String, HashSet<SessionKey>>,
}

impl Sessions {
    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<&Record> {
        self.records.get(key).filter(|r| r.meta.expires_at > now)
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Record> {
        let record = self.records.remove(key)?;
        if let Some(user) = &record.meta.user {
            self.unindex(user, key);
        }
        Some(record)
    }

    fn unindex(&mut self, user: &str, key: &SessionKey) {
        if let Some(keys) = self.users.get_mut(user) {
            keys.remove(key);
            if keys.is_empty() {
                self.users.remove(user);
            }
        }
    }

    fn sweep(&mut self, now: Timestamp) -> u64 {
        let dead: Vec<SessionKey> = self
            .records
            .iter()
            .filter(|(_, r)| r.meta.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in &dead {
            self.remove(key);
        }
        dead.len() as u64
    }
}

struct Inner {
    sessions: RwLock<Sessions>,
    capacity: Option<usize>,
}

impl Inner {
    // A panic while holding the lock cannot leave the maps half-changed in a way that
    // matters (a record without its index entry is skipped by the lookups), so poisoning is
    // ignored.
    fn read(&self) -> RwLockReadGuard<'_, Sessions> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Sessions> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
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
        let store = MemoryStore {
            inner: Arc::new(Inner {
                sessions: RwLock::default(),
                capacity,
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
        self.inner.read().records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired records now; returns how many.
    pub fn sweep(&self) -> u64 {
        self.inner.write().sweep(Timestamp::now())
    }
}

async fn sweeper(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        inner.write().sweep(Timestamp::now());
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(self.inner.read().live(key, Timestamp::now()).cloned())
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let now = Timestamp::now();
        // One lock for the capacity check and the insert: creates racing at the bound
        // cannot all pass it.
        let mut s = self.inner.write();
        if s.live(key, now).is_some() {
            return Ok(Created::Collision);
        }
        if let Some(cap) = self.inner.capacity {
            if s.records.len() >= cap && {
                s.sweep(now);
                s.records.len() >= cap
            } {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("memory store is full ({cap} sessions)"),
                ));
            }
        }
        s.remove(key);
        if let Some(user) = &record.meta.user {
            s.users.entry(user.clone()).or_default().insert(*key);
        }
        s.records.insert(*key, record.clone());
        Ok(Created::Done)
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let now = Timestamp::now();
        let mut s = self.inner.write();
        match s.records.get_mut(key) {
            Some(r)
                if r.meta.expires_at > now
                    && !patch.refuses(r.meta.created_at, r.meta.last_seen) =>
            {
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
        let mut s = self.inner.write();
        match s.records.get_mut(key) {
            Some(r) if r.meta.expires_at > now => {
                r.meta.last_seen = last_seen;
                r.meta.expires_at = expires_at;
                Ok(Applied::Done)
            }
            _ => Ok(Applied::Missing),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now();
        let removed = self.inner.write().remove(key);
        Ok(removed.is_some_and(|r| r.meta.expires_at > now))
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let now = Timestamp::now();
        let s = self.inner.read();
        let mut out: Vec<SessionInfo> = s
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|key| Some(s.live(key, now)?.info(*key)))
            .collect();
        out.sort_by_key(|i| std::cmp::Reverse(i.meta.last_seen));
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let now = Timestamp::now();
        let mut s = self.inner.write();
        let keys: Vec<SessionKey> = match s.users.get(user) {
            Some(keys) => keys
                .iter()
                .filter(|k| Some(*k) != except)
                .copied()
                .collect(),
            None => return Ok(0),
        };
        let mut n = 0;
        for key in keys {
            if s.remove(&key).is_some_and(|r| r.meta.expires_at > now) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        // Cursor: the handle of the last key returned; keys are listed in order.
        let after = match cursor.0.as_str() {
            "" => None,
            handle => Some(
                SessionKey::from_handle(handle)
                    .ok_or_else(|| Error::new(ErrorKind::Config, "invalid scan cursor"))?,
            ),
        };
        let now = Timestamp::now();
        let s = self.inner.read();
        let mut keys: Vec<&SessionKey> = s
            .records
            .keys()
            .filter(|k| after.is_none_or(|a| **k > a))
            .collect();
        keys.sort_unstable();
        let limit = limit.max(1);
        let mut sessions = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if sessions.len() == limit {
                // Resume after the last key looked at.
                return Ok(Page {
                    sessions,
                    next: Some(Cursor(keys[i - 1].to_handle())),
                });
            }
            if let Some(r) = s.live(key, now) {
                sessions.push(r.info(**key));
            }
        }
        Ok(Page {
            sessions,
            next: None,
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        Ok(self.sweep())
    }
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
