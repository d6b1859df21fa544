//! A prototype, measured by `mem compact-prototype N`: what an idle session would cost in
//! Cloakroom's `MemoryStore` if records were kept compactly, to size the optimisation proposed
//! in BENCHMARKS.md. Not used by any server.
//!
//! `MemoryStore` keeps each `Record` as is: its fields in a `BTreeMap<String, String>`, whose
//! first insertion allocates a whole B-tree leaf (11 keys + 11 values of 24 bytes: about 540
//! bytes) even for one field, plus one allocation per name and per value. The prototype keeps
//! the same information in one boxed byte string (`u32` length + name + `u32` length + value,
//! repeated) and the metadata inline, and rebuilds a `Record` on load (which costs about what
//! the clone that `load` already makes costs).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{Fields, Meta, Record};

const SHARDS: usize = 16;

/// Session keys are uniform hashes already: their first 8 bytes are the hash (as in
/// `MemoryStore`).
#[derive(Clone, Copy, Default)]
struct KeyHash;

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// A record in 80 bytes plus one allocation for all its fields.
struct CompactRecord {
    fields: Box<[u8]>,
    created_at: Timestamp,
    last_seen: Timestamp,
    expires_at: Timestamp,
    user: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    remember: bool,
}

fn encode(fields: &Fields) -> Box<[u8]> {
    let len = fields.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in fields {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.into_boxed_slice()
}

fn decode(mut b: &[u8]) -> Fields {
    let mut fields = Fields::new();
    let take = |b: &mut &[u8]| {
        let (len, rest) = b.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (s, rest) = rest.split_at(len);
        *b = rest;
        String::from_utf8(s.to_vec()).expect("written from a String")
    };
    while !b.is_empty() {
        let k = take(&mut b);
        let v = take(&mut b);
        fields.insert(k, v);
    }
    fields
}

impl CompactRecord {
    fn from_record(r: &Record) -> Self {
        CompactRecord {
            fields: encode(&r.data),
            created_at: r.meta.created_at,
            last_seen: r.meta.last_seen,
            expires_at: r.meta.expires_at,
            user: r.meta.user.as_deref().map(Box::from),
            user_agent: r.meta.user_agent.as_deref().map(Box::from),
            remember: r.meta.remember,
        }
    }

    fn to_record(&self) -> Record {
        Record {
            data: decode(&self.fields),
            meta: Meta {
                created_at: self.created_at,
                last_seen: self.last_seen,
                expires_at: self.expires_at,
                user: self.user.as_deref().map(str::to_owned),
                user_agent: self.user_agent.as_deref().map(str::to_owned),
                remember: self.remember,
            },
        }
    }
}

type Shard = RwLock<HashMap<SessionKey, CompactRecord, KeyHash>>;

/// The sharded map of the prototype.
pub(crate) struct CompactStore {
    shards: Box<[Shard]>,
}

impl CompactStore {
    pub(crate) fn new() -> Self {
        CompactStore {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(KeyHash)))
                .collect(),
        }
    }

    fn shard(&self, key: &SessionKey) -> &Shard {
        &self.shards[key.as_bytes()[31] as usize % SHARDS]
    }

    pub(crate) fn create(&self, key: SessionKey, record: &Record) {
        self.shard(&key)
            .write()
            .expect("not poisoned")
            .insert(key, CompactRecord::from_record(record));
    }

    pub(crate) fn load(&self, key: &SessionKey) -> Option<Record> {
        let now = Timestamp::now();
        self.shard(key)
            .read()
            .expect("not poisoned")
            .get(key)
            .filter(|r| r.expires_at > now)
            .map(CompactRecord::to_record)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("not poisoned").len())
            .sum()
    }
}

/// The record `mem` puts in every store: `counter` = `1`.
pub(crate) fn idle_record() -> Record {
    let now = Timestamp::now();
    let mut record = Record::new(now, now.plus(Duration::from_secs(86_400)));
    record.data.insert("counter".into(), "1".into());
    record
}

/// Average time of `load` over `keys` (ns), for the prototype.
pub(crate) fn time_loads(store: &CompactStore, keys: &[SessionKey]) -> f64 {
    let start = Instant::now();
    for k in keys {
        std::hint::black_box(store.load(k));
    }
    start.elapsed().as_nanos() as f64 / keys.len().max(1) as f64
}

/// `n` fresh keys.
pub(crate) fn keys(n: u64) -> Vec<SessionKey> {
    (0..n).map(|_| SessionId::generate().key()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut r = idle_record();
        r.data.insert("name".into(), "\"Ada\"".into());
        r.meta.user = Some("ada".into());
        let store = CompactStore::new();
        let key = SessionId::generate().key();
        store.create(key, &r);
        assert_eq!(store.load(&key), Some(r));
        assert_eq!(store.len(), 1);
    }
}
