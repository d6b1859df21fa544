//! [`MemoryStore`]: sessions in process memory, sharded, with expired records swept in the
//! background. For tests, single-process apps and benchmarks; everything is lost on restart.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Applied, Created, Cursor, Error, ErrorKind, Page, Patch, Record, Result, SessionInfo,
    SessionStore,
};
use crate::session::{SessionKey, Timestamp};

const SHARDS: usize = 16;

/// Session keys are already uniform hashes: use their first bytes as the hash.
#[derive(Clone, Copy, Default, Debug)]
struct KeyHash;

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

type Shard = RwLock<HashMap<SessionKey, Record, KeyHash>>;

struct Inner {
    shards: Box<[Shard]>,
    users: Mutex<HashMap<String, HashSet<SessionKey, KeyHash>>>,
    capacity: Option<usize>,
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

    fn shard(&self, key: &SessionKey) -> &Shard {
        &self.inner.shards[key.as_bytes()[31] as usize % SHARDS]
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
    let mut removed = 0;
    for shard in inner.shards.iter() {
        let mut dead = Vec::new();
        {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|key, rec| {
                let live = rec.meta.expires_at > now;
                if !live {
                    dead.push((*key, rec.meta.user.take()));
                }
                live
            });
        }
        removed += dead.len() as u64;
        for (key, user) in dead {
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
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        let map = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).filter(|r| r.meta.expires_at > now).cloned())
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let now = Timestamp::now();
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
                Some(r) if r.meta.expires_at > now => return Ok(Created::Collision),
                _ => {}
            }
            map.insert(*key, record.clone())
                .and_then(|old| old.meta.user)
        };
        if let Some(old) = old_user {
            self.unindex(&old, key);
        }
        if let Some(user) = &record.meta.user {
            self.index(user, *key);
        }
        Ok(Created::Done)
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let now = Timestamp::now();
        let mut map = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(r) if r.meta.expires_at > now => {
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
        let removed = self
            .shard(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(match removed {
            Some(r) => {
                if let Some(user) = &r.meta.user {
                    self.unindex(user, key);
                }
                r.meta.expires_at > now
            }
            None => false,
        })
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
                if r.meta.expires_at > now && r.meta.user.as_deref() == Some(user) {
                    out.push(r.info(key));
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.meta.last_seen));
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let keys: Vec<SessionKey> = match lock(&self.inner.users).get(user) {
            Some(set) => set.iter().copied().filter(|k| Some(k) != except).collect(),
            None => return Ok(0),
        };
        let mut n = 0;
        for key in keys {
            let owned = {
                let map = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
                map.get(&key)
                    .is_some_and(|r| r.meta.user.as_deref() == Some(user))
            };
            if owned && self.delete(&key).await? {
                n += 1;
            }
        }
        Ok(n)
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
                if r.meta.expires_at > now {
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
