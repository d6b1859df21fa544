//! [`MemoryStore`]: sessions in process memory, sharded, with expired records swept in the
//! background. For tests, single-process apps and benchmarks; everything is lost on restart.
//!
//! Records are kept compactly: all fields of a session in one allocation
//! (`u32` length + name + `u32` length + value, in name order) and the metadata inline, about
//! 170 bytes per idle session beyond its data, where a [`Record`] as such (a `BTreeMap`, whose
//! first leaf alone is some 540 bytes, plus one allocation per name and per value) costs about
//! 800. A load rebuilds the `Record`, which costs about what cloning it would.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Admitted, Applied, Batch, Created, Cursor, Error, ErrorKind, EventLog, Fields, Limit,
    LoggedEvent, Meta, Page, Patch, Position, Record, Result, SessionInfo, SessionStore, admission,
};
use crate::id::{SessionKey, Timestamp};
use crate::session::DEVICE_KEY_FIELD;
use crate::session::{EndReason, Event, EventKind};

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

/// Packed fields up to this many bytes are unpacked by insertion, larger ones bulk-built.
const SMALL_FIELDS: usize = 256;

/// One session as the store keeps it.
struct Entry {
    /// Every field: `u32` little-endian length + name, `u32` length + value, in name order.
    fields: Box<[u8]>,
    created_at: Timestamp,
    last_seen: Timestamp,
    expires_at: Timestamp,
    user: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    remember: bool,
}

/// Packs `fields` (see [`Entry::fields`]).
fn pack(fields: &Fields) -> Box<[u8]> {
    let len = fields.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in fields {
        push_field(&mut out, k, v);
    }
    out.into_boxed_slice()
}

/// The `(name, value)` pairs of packed fields.
fn unpacked(mut b: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    fn take<'a>(b: &mut &'a [u8]) -> &'a str {
        let (len, rest) = b.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (s, rest) = rest.split_at(len);
        *b = rest;
        // Written by `pack` from `String`s only.
        std::str::from_utf8(s).expect("packed from a String")
    }
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        let name = take(&mut b);
        let value = take(&mut b);
        Some((name, value))
    })
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    for s in [name, value] {
        let n = u32::try_from(s.len()).expect("session data is limited far below 4 GiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Packed fields with `patch`'s removals and then its sets applied (as [`Record::apply`]
/// does), in one pass over the old bytes: a small change to a large session copies its bytes
/// once and allocates nothing per field.
fn patched(old: &[u8], patch: &Patch) -> Box<[u8]> {
    let mut changes: std::collections::BTreeMap<&str, Option<&str>> =
        std::collections::BTreeMap::new();
    for name in &patch.remove {
        changes.insert(name, None);
    }
    for (name, value) in &patch.set {
        changes.insert(name, Some(value));
    }
    let added: usize = patch.set.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(old.len() + added);
    let mut pending = changes.into_iter().peekable();
    for (name, value) in unpacked(old) {
        while let Some((new_name, new_value)) = pending.next_if(|(n, _)| *n < name) {
            if let Some(v) = new_value {
                push_field(&mut out, new_name, v);
            }
        }
        match pending.next_if(|(n, _)| *n == name) {
            Some((_, Some(v))) => push_field(&mut out, name, v),
            Some((_, None)) => {}
            None => push_field(&mut out, name, value),
        }
    }
    for (name, value) in pending {
        if let Some(v) = value {
            push_field(&mut out, name, v);
        }
    }
    out.into_boxed_slice()
}

impl Entry {
    fn new(r: &Record) -> Entry {
        Entry {
            fields: pack(&r.data),
            created_at: r.meta.created_at,
            last_seen: r.meta.last_seen,
            expires_at: r.meta.expires_at,
            user: r.meta.user.as_deref().map(Box::from),
            user_agent: r.meta.user_agent.as_deref().map(Box::from),
            remember: r.meta.remember,
        }
    }

    fn meta(&self) -> Meta {
        Meta {
            created_at: self.created_at,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
            user: self.user.as_deref().map(str::to_owned),
            user_agent: self.user_agent.as_deref().map(str::to_owned),
            remember: self.remember,
        }
    }

    fn record(&self) -> Record {
        let pairs = unpacked(&self.fields).map(|(k, v)| (k.to_owned(), v.to_owned()));
        // A few fields are inserted one by one (no intermediate vector); many are
        // bulk-built, which beats a search per insertion.
        let data = if self.fields.len() <= SMALL_FIELDS {
            let mut data = Fields::new();
            data.extend(pairs);
            data
        } else {
            pairs.collect()
        };
        Record {
            data,
            meta: self.meta(),
        }
    }

    fn apply(&mut self, patch: &Patch) {
        if !patch.set.is_empty() || !patch.remove.is_empty() {
            self.fields = patched(&self.fields, patch);
        }
        self.last_seen = patch.last_seen;
        self.expires_at = patch.expiry_for(self.created_at);
        if let Some(remember) = patch.remember {
            self.remember = remember;
        }
    }

    /// Whether this is a rotation grace's forwarding record ([`Record::is_forward`]).
    fn is_forward(&self) -> bool {
        self.user.is_none() && unpacked(&self.fields).any(|(k, _)| k == super::FORWARD_FIELD)
    }

    /// Whether this is an ended session's tombstone ([`Record::is_ended`]).
    fn is_ended(&self) -> bool {
        self.user.is_none() && unpacked(&self.fields).any(|(k, _)| k == super::ENDED_FIELD)
    }

    fn info(&self, key: SessionKey) -> SessionInfo {
        let (fields, data_bytes) =
            unpacked(&self.fields).fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
        SessionInfo {
            key,
            meta: self.meta(),
            fields,
            data_bytes,
            device_bound: unpacked(&self.fields).any(|(k, _)| k == DEVICE_KEY_FIELD),
        }
    }
}

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

/// The memory store's event log: the newest `cap` events, numbered from 1.
struct Ring {
    events: std::collections::VecDeque<(u64, Event)>,
    /// The number the next event gets.
    next: u64,
    cap: usize,
}

impl Ring {
    fn push(&mut self, event: Event) {
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back((self.next, event));
        self.next += 1;
    }

    fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        let after: u64 = match after.is_start() {
            true => 0,
            false => (after.as_str().parse()).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    "not a position of this memory store's log",
                )
            })?,
        };
        // Everything numbered up to here was dropped by the cap.
        let dropped = self.events.front().map_or(self.next, |(n, _)| *n) - 1;
        let events: Vec<LoggedEvent> = (self.events.iter())
            .skip_while(|(n, _)| *n <= after)
            .take(max)
            .map(|(n, e)| LoggedEvent {
                position: Position::new(n.to_string()),
                event: e.clone(),
            })
            .collect();
        let next = events
            .last()
            .map_or_else(|| Position::new(after.to_string()), |e| e.position.clone());
        Ok(Batch {
            events,
            next,
            gap: after < dropped,
        })
    }
}

impl MemoryStore {
    /// This store with an event log keeping the newest `capacity` events (at least 1): every
    /// session created, rotated or ended through the engine is logged under the same lock as
    /// the change, and the sweep logs each session it finds expired
    /// ([`EventLog`]). Like the sessions, the log lives in this process only.
    #[must_use]
    pub fn with_event_log(self, capacity: usize) -> Self {
        let ring = Ring {
            events: std::collections::VecDeque::new(),
            next: 1,
            cap: capacity.max(1),
        };
        let _ = self.inner.log.set(Mutex::new(ring));
        self
    }

    fn log(&self) -> Result<std::sync::MutexGuard<'_, Ring>> {
        (self.inner.log.get().map(lock))
            .ok_or_else(|| Error::new(ErrorKind::Config, "this memory store keeps no event log"))
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted> {
        let mut log = self.log()?;
        let admitted = match limit {
            Some(limit) => self.create_limited_now(key, record, limit)?,
            None => Admitted::from(self.create_now(key, record)?),
        };
        if let Admitted::Done { ended } = &admitted {
            for gone in ended {
                log.push(Event {
                    kind: EventKind::Ended(EndReason::Limit),
                    session: *gone,
                    user: record.meta.user.clone(),
                    at: event.at,
                });
            }
            log.push(Event {
                session: *key,
                user: record.meta.user.clone(),
                ..event.clone()
            });
        }
        Ok(admitted)
    }

    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
        let mut log = self.log()?;
        let Some(deleted) = self.delete_now(key) else {
            return Ok(false);
        };
        log.push(Event {
            session: *key,
            user: deleted.user.map(String::from),
            ..event.clone()
        });
        Ok(true)
    }

    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64> {
        let mut log = self.log()?;
        let deleted = self.delete_user_now(user, except);
        for key in &deleted {
            log.push(Event {
                kind: EventKind::Ended(reason),
                session: *key,
                user: Some(user.to_owned()),
                at,
            });
        }
        Ok(deleted.len() as u64)
    }

    async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        self.log()?.read(after, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    fn record(fields: &[(&str, &str)]) -> Record {
        let mut r = Record::new(Timestamp(1_000), Timestamp(9_000));
        for (k, v) in fields {
            r.data.insert((*k).into(), (*v).into());
        }
        r
    }

    #[test]
    fn entries_round_trip_records() {
        for fields in [
            &[][..],
            &[("counter", "1")],
            &[("", ""), ("a", "\"\""), ("ünï", "\"çødé ✓\"")],
            &[("big", &*"x".repeat(70_000)), ("z", "null")],
        ] {
            let mut r = record(fields);
            r.meta.user = Some("ada".into());
            r.meta.user_agent = Some("agent".into());
            r.meta.remember = true;
            let e = Entry::new(&r);
            assert_eq!(e.record(), r);
            let info = e.info(SessionId::generate().key());
            assert_eq!(info.fields, r.data.len());
            assert_eq!(info.data_bytes, r.data_bytes());
            assert_eq!(info.meta, r.meta);
        }
    }

    #[test]
    fn entry_patches_match_record_patches() {
        let base = record(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let mut patch = Patch::new(Timestamp(2_000), Timestamp(50_000))
            .set("b", "20")
            .set("d", "4")
            .remove("a");
        patch.remember = Some(true);
        patch.max_lifetime = Some(Duration::from_secs(10));
        let mut e = Entry::new(&base);
        e.apply(&patch);
        let mut expected = base.clone();
        expected.apply(&patch);
        assert_eq!(e.record(), expected);
        assert_eq!(
            e.expires_at,
            Timestamp(11_000),
            "capped at created + lifetime"
        );
        // Every mix of removals and sets, before, between, after and on existing names, gives
        // what `Record::apply` gives.
        let names = ["", "a", "aa", "b", "c", "d", "z"];
        for mask in 0u32..(1 << 7) {
            for set_mask in [0u32, 0b1010101, 0b0110011, 0b1111111] {
                let mut p = Patch::new(Timestamp(2_000), Timestamp(5_000));
                for (i, n) in names.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        p = p.remove(*n);
                    }
                    if set_mask & (1 << i) != 0 {
                        p = p.set(*n, format!("\"v{i}\""));
                    }
                }
                let mut e = Entry::new(&base);
                e.apply(&p);
                let mut expected = base.clone();
                expected.apply(&p);
                assert_eq!(e.record(), expected, "remove {mask:b} set {set_mask:b}");
            }
        }
        // A patch of times only leaves the fields as they are.
        let mut e2 = Entry::new(&base);
        e2.apply(&Patch::new(Timestamp(3_000), Timestamp(4_000)));
        assert_eq!(e2.record().data, base.data);
        assert_eq!(
            (e2.last_seen, e2.expires_at),
            (Timestamp(3_000), Timestamp(4_000))
        );
    }

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
