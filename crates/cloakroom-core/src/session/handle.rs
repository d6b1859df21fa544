//! [`Session`]: the handle a request's code reads and changes its session through.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::committed_error;
use super::lifecycle::Lifecycle;
use super::limits::deadline;
use super::shared::Shared;
use super::state::{Live, Phase, State};
use super::{
    Error, ErrorKind, RESERVED_PREFIX, Result, SessionConfig, SessionId, SessionKey, Timestamp,
    Transport,
};
use crate::store::{Record, SessionStore};

/// A request's session. Cheap to clone; every clone is the same session.
///
/// Reading never creates a session. The first change creates one (committed at response
/// time). After the response is committed, changes fail with [`ErrorKind::Committed`].
#[derive(Clone)]
pub struct Session {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    /// The request carried a cookie of our name (verified or not), or a verified header
    /// ticket: an ended session's ticket is then cleared.
    pub(super) had_cookie: bool,
    /// The ticket came from the ticket header, and no cookie of our name came with it.
    pub(super) from_header: bool,
    /// The response answers the ticket in the ticket header (not a cookie): a header
    /// session, the header-only transport, or a handler that asked for the ticket.
    pub(super) by_header: AtomicBool,
    pub(super) state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &"REDACTED")
            .field("data", &"REDACTED")
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        shared: Arc<Shared>,
        had_cookie: bool,
        from_header: bool,
        phase: Phase,
    ) -> Self {
        let by_header = from_header || shared.config.transport == Transport::Header;
        Session {
            inner: Arc::new(Inner {
                shared,
                had_cookie,
                from_header,
                by_header: AtomicBool::new(by_header),
                state: tokio::sync::Mutex::new(State::new(phase)),
            }),
        }
    }

    /// Whether this request's session came from the ticket header (no cookie of the
    /// session's name came with it). Such a request needs no CSRF token: browsers never
    /// attach the header on their own, so another site cannot make them send it. The CSRF
    /// middlewares skip the token check for it (the cross-origin check still runs).
    pub fn from_header(&self) -> bool {
        self.inner.from_header
    }

    /// Whether the response answers the ticket in [`TICKET_RESPONSE_HEADER`](super::TICKET_RESPONSE_HEADER).
    pub(super) fn by_header(&self) -> bool {
        self.inner.by_header.load(Ordering::Relaxed)
    }

    pub(super) fn config(&self) -> &SessionConfig {
        &self.inner.shared.config
    }

    pub(super) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.shared.store
    }

    pub(super) fn lifecycle(&self) -> &Lifecycle {
        &self.inner.shared.lifecycle
    }

    pub(super) fn key_of(&self, id: &SessionId) -> SessionKey {
        self.inner.shared.format.store_key(id)
    }

    /// A session created now.
    pub(super) fn fresh(&self) -> Live {
        let now = Timestamp::now();
        Live::new(now, deadline(self.config(), now, now))
    }

    /// The value of `key`, deserialized as `T`; `None` when absent.
    ///
    /// # Errors
    /// Store failures, a reserved key, or a stored value that is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(key)?;
        let st = self.state().await?;
        match st.record().and_then(|r| r.data.get(key)) {
            None => Ok(None),
            Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
                let message = format!("session value {key:?} does not have the requested type");
                Error::with_source(ErrorKind::Deserialize, message, e)
            }),
        }
    }

    /// Sets `key` to `value`. Creates the session if there is none.
    ///
    /// # Errors
    /// Store failures, a reserved key, an unserializable value, data over the size limit, or
    /// a committed response.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(key)?;
        let json = serde_json::to_string(value).map_err(|e| {
            let message = format!("session value {key:?} cannot be serialized");
            Error::with_source(ErrorKind::Serialize, message, e)
        })?;
        self.set_raw(key, json).await
    }

    pub(crate) async fn set_raw(&self, key: &str, json: String) -> Result<()> {
        let max = self.config().max_data_bytes;
        {
            // A blind write: the request carries one ticket and nothing was read yet. Record
            // the change without loading; the commit patches the record in one store
            // operation (or, if the session is gone, starts a new one with it). With several
            // candidate tickets the write must know which session it is for: that takes the
            // load below.
            let mut st = self.inner.state.lock().await;
            if st.committed {
                return Err(committed_error());
            }
            if matches!(&st.phase, Phase::Unloaded { fallbacks, .. } if fallbacks.is_empty()) {
                // The stored total is unknown here: the patch's own total is bounded (the
                // pending values of the other keys plus this one), as a loaded session's is.
                let others: usize = (st.changes.iter())
                    .filter(|(name, _)| name.as_str() != key)
                    .filter_map(|(name, change)| change.as_ref().map(|v| name.len() + v.len()))
                    .sum();
                let size = others + key.len() + json.len();
                if size > max {
                    return Err(too_large(size, max));
                }
                st.changes.insert(key.to_owned(), Some(json));
                return Ok(());
            }
        }
        let mut st = self.state_mut().await?;
        let live = st.live_or(|| self.fresh());
        let old = live.record.data.get(key).map_or(0, |v| key.len() + v.len());
        let size = live.record.data_bytes() - old + key.len() + json.len();
        if size > max {
            return Err(too_large(size, max));
        }
        if live.record.data.get(key) == Some(&json) {
            return Ok(());
        }
        live.record.data.insert(key.to_owned(), json.clone());
        st.changes.insert(key.to_owned(), Some(json));
        Ok(())
    }

    pub(crate) async fn get_raw(&self, key: &str) -> Result<Option<String>> {
        let st = self.state().await?;
        Ok(st.record().and_then(|r| r.data.get(key).cloned()))
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    /// Store failures, a reserved key, or a committed response.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.remove_raw(key).await
    }

    pub(crate) async fn remove_raw(&self, key: &str) -> Result<bool> {
        let mut st = self.state_mut().await?;
        let removed = st.record_mut().and_then(|r| r.data.remove(key)).is_some();
        if removed {
            st.changes.insert(key.to_owned(), None);
        }
        Ok(removed)
    }

    /// Whether `key` is set.
    ///
    /// # Errors
    /// Store failures, or a reserved key.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let st = self.state().await?;
        Ok(st.record().is_some_and(|r| r.data.contains_key(key)))
    }

    /// The application's keys (the library's own fields are not listed).
    ///
    /// # Errors
    /// Store failures.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let st = self.state().await?;
        Ok(st.record().map_or_else(Vec::new, app_keys))
    }

    /// Removes every application key (the session, its login and its CSRF secret stay).
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.state_mut().await?;
        let State { phase, changes, .. } = &mut *st;
        if let Phase::Live(live) = phase {
            for key in app_keys(&live.record) {
                live.record.data.remove(&key);
                changes.insert(key, None);
            }
        }
        Ok(())
    }

    /// Whether a session exists (loaded from the cookie, or created by this request).
    ///
    /// # Errors
    /// Store failures.
    pub async fn exists(&self) -> Result<bool> {
        Ok(self.state().await?.record().is_some())
    }
    /// Makes the cookie persistent (`true`, "remember me") or a browser-session cookie.
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn set_remember(&self, remember: bool) -> Result<()> {
        let mut st = self.state_mut().await?;
        let live = st.live_or(|| self.fresh());
        if live.record.meta.remember != remember {
            live.record.meta.remember = remember;
            live.remember_changed = true;
        }
        Ok(())
    }

    /// Whether the cookie is persistent ("remember me"); `false` without a session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn remember(&self) -> Result<bool> {
        let st = self.state().await?;
        Ok(st.record().is_some_and(|r| r.meta.remember))
    }

    /// When the session will expire if unused; `None` without a session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn expires_at(&self) -> Result<Option<Timestamp>> {
        let st = self.state().await?;
        let Phase::Live(live) = &st.phase else {
            return Ok(None);
        };
        let meta = &live.record.meta;
        Ok(Some(
            if live.stored.is_some() && st.changes.is_empty() && !live.renew {
                meta.expires_at
            } else {
                deadline(self.config(), meta.created_at, Timestamp::now())
            },
        ))
    }

    /// The ticket a client must present from this response on, for a handler to put in its
    /// answer (the JSON body of an API login): the new ticket of a session created or renewed
    /// (a login's is reserved when it logs in), else the one the request came with. `None`
    /// without a session, or for a session reached through an old ticket within a rotation
    /// grace (the new ticket went to the request that rotated it).
    ///
    /// With the ticket header on ([`Transport`]), asking for it makes the response carry the
    /// ticket in [`TICKET_RESPONSE_HEADER`](super::TICKET_RESPONSE_HEADER) instead of a
    /// cookie: the client is a header client. The ticket is a secret: never log it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn ticket(&self) -> Result<Option<String>> {
        let mut st = self.state().await?;
        let Phase::Live(live) = &mut st.phase else {
            return Ok(None);
        };
        let shared = &self.inner.shared;
        if live.stored.is_none() {
            live.id.get_or_insert_with(|| shared.new_id(&live.record));
        }
        let Some(id) = &live.id else {
            return Ok(None);
        };
        if shared.config.transport != Transport::Cookie {
            self.inner.by_header.store(true, Ordering::Relaxed);
        }
        let name = &shared.config.cookie.name;
        Ok(Some(shared.format.encode(name, id)))
    }

    /// The session's public handle (its store key); see [`SessionEngine::handle_of`](super::SessionEngine::handle_of).
    pub(super) async fn handle(&self) -> Result<Option<SessionKey>> {
        let mut st = self.state().await?;
        let Phase::Live(live) = &mut st.phase else {
            return Ok(None);
        };
        if let (Some(key), false) = (&live.stored, live.renew) {
            return Ok(Some(*key));
        }
        let shared = &self.inner.shared;
        let id = live.id.get_or_insert_with(|| shared.new_id(&live.record));
        Ok(Some(shared.format.store_key(id)))
    }

    /// The engine this session belongs to.
    #[cfg(feature = "dbsc")]
    pub(crate) fn engine(&self) -> super::SessionEngine {
        super::SessionEngine::of_shared(self.inner.shared.clone())
    }

    /// The store key the request's ticket names, without a load: the key of the first
    /// verified ticket, or of the loaded record. For the DBSC bound cookie check.
    #[cfg(feature = "dbsc")]
    pub(crate) async fn ticket_key(&self) -> Option<SessionKey> {
        let st = self.inner.state.lock().await;
        match &st.phase {
            Phase::Unloaded { first, .. } => Some(self.key_of(first)),
            Phase::Live(live) => live.stored,
            _ => None,
        }
    }

    /// Whether the session is logged in, and whether it is bound to a device (DBSC
    /// registered). Loads the session.
    #[cfg(feature = "dbsc")]
    pub(crate) async fn dbsc_state(&self) -> Result<(bool, bool)> {
        let st = self.state().await?;
        Ok(st.record().map_or((false, false), |r| {
            (
                r.meta.user.is_some(),
                r.data.contains_key(super::DEVICE_KEY_FIELD),
            )
        }))
    }

    /// The logged-in user and the key of the stored record (this session's until the
    /// commit, renewed or not), for [`SessionEngine::revoke_others`](super::SessionEngine::revoke_others).
    pub(super) async fn user_and_stored_key(&self) -> Result<(Option<String>, Option<SessionKey>)> {
        let st = self.state().await?;
        Ok(match &st.phase {
            Phase::Live(live) => (live.record.meta.user.clone(), live.stored),
            _ => (None, None),
        })
    }
}

/// The application's field names of `record` (the library's own are left out).
fn app_keys(record: &Record) -> Vec<String> {
    record
        .data
        .keys()
        .filter(|k| !k.starts_with(RESERVED_PREFIX))
        .cloned()
        .collect()
}

fn too_large(size: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("session data would be {size} bytes, over the limit of {max}"),
    )
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.starts_with(RESERVED_PREFIX) {
        return Err(Error::new(
            ErrorKind::ReservedKey,
            format!("session key {key:?} is empty or reserved (prefix {RESERVED_PREFIX:?})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::{CSRF_SECRET_FIELD, CommitAction, SessionEngine};
    use crate::store::MemoryStore;

    fn engine(store: &Arc<MemoryStore>, keys: &KeyRing, config: SessionConfig) -> SessionEngine {
        SessionEngine::new(store.clone(), keys.clone(), config)
    }

    /// A stored session (one small field) and its `name=ticket` pair.
    async fn stored(engine: &SessionEngine) -> String {
        let s = engine.session(None);
        s.set("a", &1).await.unwrap();
        let cookie = s.commit(None).await.unwrap().set_cookie.unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    /// Regression: blind writes (no read first) were checked key by key, so many keys each
    /// under `max_data_bytes` went into the store in one patch.
    #[tokio::test]
    async fn a_blind_patch_is_bounded_by_max_data_bytes_in_total() {
        let store = Arc::new(MemoryStore::new());
        let keys = KeyRing::single(Key::generate());
        let config = SessionConfig {
            max_data_bytes: 100,
            ..SessionConfig::default()
        };
        let engine = engine(&store, &keys, config);
        let ticket = stored(&engine).await;
        let big = "x".repeat(60);
        let s = engine.session(Some(&ticket));
        s.set("k1", &big).await.unwrap();
        // Writing the same key again replaces its pending value: not counted twice.
        s.set("k1", &big).await.unwrap();
        let err = s.set("k2", &big).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::TooLarge,
            "two keys of 64 bytes in one patch"
        );
        assert_eq!(s.commit(None).await.unwrap().action, CommitAction::Patched);
        let record = store
            .load(&key_of(&engine, &ticket))
            .await
            .unwrap()
            .unwrap();
        assert!(!record.data.contains_key("k2"));
    }

    /// The store key of a `name=ticket` pair.
    fn key_of(engine: &SessionEngine, pair: &str) -> SessionKey {
        let value = pair.split_once('=').unwrap().1;
        let name = &engine.config().cookie.name;
        let id = engine.ticket_format().decode(name, value).unwrap();
        engine.ticket_format().store_key(&id)
    }

    /// Regression: a blind write skipped the idle check a load applies, so a record idle past
    /// the (since shortened) idle timeout, but not yet expired in the store, took the write
    /// and came back to life.
    #[tokio::test]
    async fn a_blind_write_does_not_revive_a_session_past_the_idle_timeout() {
        let store = Arc::new(MemoryStore::new());
        let keys = KeyRing::single(Key::generate());
        let ticket = stored(&engine(&store, &keys, SessionConfig::default())).await;
        // The idle timeout is shortened (a new deployment); the record, last seen before,
        // still has a day to live in the store.
        let short = SessionConfig {
            idle_timeout: Duration::from_millis(100),
            ..SessionConfig::default()
        };
        let engine = engine(&store, &keys, short);
        let old = key_of(&engine, &ticket);
        let before = store.load(&old).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !engine.session(Some(&ticket)).exists().await.unwrap(),
            "a load refuses it"
        );
        let s = engine.session(Some(&ticket));
        s.set("b", &2).await.unwrap();
        let outcome = s.commit(None).await.unwrap();
        assert_eq!(
            outcome.action,
            CommitAction::Created,
            "a new session, not a patch"
        );
        let after = store.load(&old).await.unwrap().unwrap();
        assert_eq!(after, before, "the idle session took the write");
    }

    /// Regression: `login("")` failed with `ReservedKey`, the error of a bad field name.
    #[tokio::test]
    async fn an_empty_user_id_is_its_own_error() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(
            &store,
            &KeyRing::single(Key::generate()),
            SessionConfig::default(),
        );
        let session = engine.session(None);
        let err = session.login("").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUser);
        assert_eq!(session.user().await.unwrap(), None);
    }

    /// Regression: only `set` refused the library's own fields, so `get`, `contains` and
    /// `remove` reached the CSRF secret and the flash messages.
    #[tokio::test]
    async fn every_method_refuses_reserved_keys() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(
            &store,
            &KeyRing::single(Key::generate()),
            SessionConfig::default(),
        );
        let session = engine.session(None);
        crate::csrf::ensure_session_secret(&session).await.unwrap();
        for key in [CSRF_SECRET_FIELD, "__cr.flash", ""] {
            let kind = |r: Result<_>| r.map(|_| ()).unwrap_err().kind();
            assert_eq!(
                kind(session.get::<String>(key).await.map(drop)),
                ErrorKind::ReservedKey
            );
            assert_eq!(kind(session.set(key, "x").await), ErrorKind::ReservedKey);
            assert_eq!(
                kind(session.contains(key).await.map(drop)),
                ErrorKind::ReservedKey
            );
            assert_eq!(
                kind(session.remove(key).await.map(drop)),
                ErrorKind::ReservedKey
            );
        }
        assert!(
            crate::csrf::session_secret(&session)
                .await
                .unwrap()
                .is_some()
        );
    }
}
