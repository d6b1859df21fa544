//! Store wrappers that count what the session layer asks of its store: operations by kind,
//! and the bytes of session data handed over for writing.
//!
//! Operations are always counted (one relaxed atomic add each, for every implementation
//! alike). Bytes are counted only while detail is switched on (the counting pass that
//! follows each timed window), because sizing a tower-sessions record means serializing it
//! again, which would slow the timed window down.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    self as cr, Applied, Created, Cursor, Page, Patch, Record, SessionInfo, SessionStore,
};

/// Counters shared by a wrapper and the server's `/__bench/stats` route.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    loads: AtomicU64,
    creates: AtomicU64,
    writes: AtomicU64,
    touches: AtomicU64,
    deletes: AtomicU64,
    data_bytes: AtomicU64,
    detail: AtomicBool,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether bytes are being counted.
    pub(crate) fn detail(&self) -> bool {
        self.detail.load(Ordering::Relaxed)
    }

    /// Switches byte counting on or off.
    pub(crate) fn set_detail(&self, on: bool) {
        self.detail.store(on, Ordering::Relaxed);
    }

    /// `key=value` pairs, one line, for `/__bench/stats`.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for (name, c) in [
            ("loads", &self.loads),
            ("creates", &self.creates),
            ("writes", &self.writes),
            ("touches", &self.touches),
            ("deletes", &self.deletes),
            ("data_bytes", &self.data_bytes),
        ] {
            let _ = write!(s, "{name}={} ", c.load(Ordering::Relaxed));
        }
        s.trim_end().to_owned()
    }
}

/// Parses [`Counters::render`] output back: (store operations, data bytes).
pub(crate) fn parse_stats(text: &str) -> Option<(u64, u64)> {
    let mut ops = 0;
    let mut bytes = None;
    for pair in text.split_whitespace() {
        let (k, v) = pair.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        if k == "data_bytes" {
            bytes = Some(v);
        } else {
            ops += v;
        }
    }
    Some((ops, bytes?))
}

/// A Cloakroom store that counts. Bytes: field names plus JSON values of a created record,
/// or of a patch's sets and removes ([`Patch::bytes`]).
pub(crate) struct CountingStore {
    inner: Arc<dyn SessionStore>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn SessionStore>, counters: Arc<Counters>) -> Self {
        CountingStore { inner, counters }
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    /// The inner store's log, forwarded (a wrapper that hid it would turn the log off for
    /// the engine); its logged writes count as the store's own commands in the Redis
    /// statistics, not in these counters.
    fn event_log(&self) -> Option<&dyn cloakroom::store::EventLog> {
        self.inner.event_log()
    }

    /// The inner store's key placement, forwarded (Redis Cluster refuses a user's record
    /// under a key outside the user's shard).
    fn placement(&self) -> Option<cloakroom::store::Placement> {
        self.inner.placement()
    }

    async fn load(&self, key: &SessionKey) -> cr::Result<Option<Record>> {
        Counters::add(&self.counters.loads, 1);
        self.inner.load(key).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> cr::Result<Created> {
        Counters::add(&self.counters.creates, 1);
        if self.counters.detail() {
            Counters::add(&self.counters.data_bytes, record.data_bytes() as u64);
        }
        self.inner.create(key, record).await
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &cr::Limit,
    ) -> cr::Result<cr::Admitted> {
        Counters::add(&self.counters.creates, 1);
        self.inner.create_limited(key, record, limit).await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> cr::Result<Applied> {
        Counters::add(&self.counters.writes, 1);
        if self.counters.detail() {
            Counters::add(&self.counters.data_bytes, patch.bytes() as u64);
        }
        self.inner.apply(key, patch).await
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> cr::Result<Applied> {
        Counters::add(&self.counters.touches, 1);
        self.inner.touch(key, last_seen, expires_at).await
    }

    async fn delete(&self, key: &SessionKey) -> cr::Result<bool> {
        Counters::add(&self.counters.deletes, 1);
        self.inner.delete(key).await
    }

    async fn sessions_of(&self, user: &str) -> cr::Result<Vec<SessionInfo>> {
        self.inner.sessions_of(user).await
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> cr::Result<u64> {
        self.inner.delete_user(user, except).await
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> cr::Result<Page> {
        self.inner.scan(cursor, limit).await
    }

    async fn purge_expired(&self) -> cr::Result<u64> {
        self.inner.purge_expired().await
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> cr::Result<Created> {
        self.inner
            .put_challenge(challenge, session, expires_at)
            .await
    }

    async fn take_challenge(&self, challenge: &str) -> cr::Result<Option<SessionKey>> {
        self.inner.take_challenge(challenge).await
    }

    async fn ping(&self) -> cr::Result<()> {
        self.inner.ping().await
    }
}

/// A tower-sessions store that counts. Bytes: keys plus the JSON text of each value of the
/// record saved (tower-sessions always writes the whole record).
#[derive(Debug, Clone)]
pub(crate) struct CountingTsStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingTsStore<S> {
    pub(crate) fn new(inner: S, counters: Arc<Counters>) -> Self {
        CountingTsStore { inner, counters }
    }

    fn count_record(&self, record: &tower_sessions::session::Record) {
        if self.counters.detail() {
            let bytes: usize = record
                .data
                .iter()
                .map(|(k, v)| k.len() + v.to_string().len())
                .sum();
            Counters::add(&self.counters.data_bytes, bytes as u64);
        }
    }
}

#[async_trait]
impl<S: tower_sessions::SessionStore + Clone> tower_sessions::SessionStore for CountingTsStore<S> {
    async fn create(
        &self,
        record: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        Counters::add(&self.counters.creates, 1);
        self.count_record(record);
        self.inner.create(record).await
    }

    async fn save(
        &self,
        record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        Counters::add(&self.counters.writes, 1);
        self.count_record(record);
        self.inner.save(record).await
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        Counters::add(&self.counters.loads, 1);
        self.inner.load(id).await
    }

    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        Counters::add(&self.counters.deletes, 1);
        self.inner.delete(id).await
    }
}

/// An actix-session store that counts. Bytes: keys plus the (JSON) text of each value of the
/// state saved (actix-session always writes the whole state).
#[derive(Debug)]
pub(crate) struct CountingActixStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingActixStore<S> {
    pub(crate) fn new(inner: S, counters: Arc<Counters>) -> Self {
        CountingActixStore { inner, counters }
    }

    fn count_state(&self, state: &ActixState) {
        if self.counters.detail() {
            let bytes: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
            Counters::add(&self.counters.data_bytes, bytes as u64);
        }
    }
}

/// actix-session's session state (its `SessionState`, which it does not export by name).
type ActixState = std::collections::HashMap<String, String>;

impl<S: actix_session::storage::SessionStore> actix_session::storage::SessionStore
    for CountingActixStore<S>
{
    async fn load(
        &self,
        key: &actix_session::storage::SessionKey,
    ) -> Result<Option<ActixState>, actix_session::storage::LoadError> {
        Counters::add(&self.counters.loads, 1);
        self.inner.load(key).await
    }

    async fn save(
        &self,
        state: ActixState,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::SaveError> {
        Counters::add(&self.counters.creates, 1);
        self.count_state(&state);
        self.inner.save(state, ttl).await
    }

    async fn update(
        &self,
        key: actix_session::storage::SessionKey,
        state: ActixState,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::UpdateError> {
        Counters::add(&self.counters.writes, 1);
        self.count_state(&state);
        self.inner.update(key, state, ttl).await
    }

    async fn update_ttl(
        &self,
        key: &actix_session::storage::SessionKey,
        ttl: &actix_web::cookie::time::Duration,
    ) -> anyhow::Result<()> {
        Counters::add(&self.counters.touches, 1);
        self.inner.update_ttl(key, ttl).await
    }

    async fn delete(&self, key: &actix_session::storage::SessionKey) -> anyhow::Result<()> {
        Counters::add(&self.counters.deletes, 1);
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip() {
        let c = Counters::default();
        Counters::add(&c.loads, 3);
        Counters::add(&c.writes, 2);
        Counters::add(&c.data_bytes, 40);
        assert_eq!(parse_stats(&c.render()), Some((5, 40)));
    }
}
