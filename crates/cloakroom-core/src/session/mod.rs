//! The session handle and the commit state machine.
//!
//! A [`SessionEngine`] (store + keys + config, one per app) turns each request's `Cookie`
//! header into a [`Session`]: a cheap, clonable handle that loads the record on first use
//! and, once the response is ready, [commits](Session::commit) with at most one store
//! operation (two for a login: create the new record, delete the old).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use cloakroom_core::{keys::{Key, KeyRing}, session::{SessionConfig, SessionEngine}, store::MemoryStore};
//!
//! let engine = SessionEngine::new(Arc::new(MemoryStore::new()), KeyRing::single(Key::generate()), SessionConfig::default());
//! let session = engine.session(None);
//! session.set("cart", &vec![1, 2, 3]).await.unwrap();
//! let outcome = session.commit(Some("my-browser/1.0")).await.unwrap();
//! let cookie = outcome.set_cookie.unwrap();          // "session=<ticket>; Path=/; ..."
//! let ticket = cookie.split(';').next().unwrap();
//!
//! let next = engine.session(Some(ticket));           // the browser's next request
//! assert_eq!(next.get::<Vec<u32>>("cart").await.unwrap(), Some(vec![1, 2, 3]));
//! # });
//! ```

mod config;
mod id;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{SessionConfig, default_touch_interval};
pub use id::{ID_LEN, InvalidHandle, SessionId, SessionKey, Timestamp};

use crate::cookie::{SignedTicket, TicketFormat};
use crate::keys::KeyRing;
use crate::store::{self, Applied, Created, Patch, Record, SessionInfo, SessionStore};

/// Field names starting with this are the library's own (CSRF secret, flash messages).
pub(crate) const RESERVED_PREFIX: &str = "__cr.";

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// Most verified tickets of our cookie name one request may carry into the first load (see
/// [`SessionEngine::session_from_headers`]): bounds the store loads a flood of planted pairs
/// can cost. Pairs past it are not even verified. (Each pair of our name before it that looks
/// like a ticket costs one MAC check, bounded by the size of the request's headers.)
pub const MAX_CANDIDATES: usize = 4;

/// What went wrong with a session operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store failed (see [`store::ErrorKind`]): answer 503.
    Store(store::ErrorKind),
    /// The response was already committed: the change could not be saved.
    Committed,
    /// A value could not be serialized.
    Serialize,
    /// A stored value did not deserialize as the requested type.
    Deserialize,
    /// The session data would exceed [`SessionConfig::max_data_bytes`].
    TooLarge,
    /// The field name is reserved for the library (starts with `__cr.`) or empty.
    ReservedKey,
    /// The session needs a login for this operation.
    NotLoggedIn,
}

/// A session operation failed.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the store failed (the right answer is a 503).
    pub fn is_store_error(&self) -> bool {
        matches!(self.kind, ErrorKind::Store(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error {
            kind: ErrorKind::Store(e.kind()),
            message: "session store operation failed".into(),
            source: Some(Box::new(e)),
        }
    }
}

/// Result of a session operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the adapter must add to the response after [`Session::commit`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// A `Set-Cookie` header value to send (new ticket, refreshed Max-Age, or removal).
    pub set_cookie: Option<String>,
    /// Which state-machine branch ran (for logs, metrics and tests).
    pub action: CommitAction,
}

/// The branch of the commit state machine that ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitAction {
    /// Nothing to do.
    #[default]
    None,
    /// A new session was created.
    Created,
    /// Changed fields were patched in.
    Patched,
    /// The id was renewed (login, `cycle_id`).
    Renewed,
    /// The session was destroyed.
    Destroyed,
    /// Only the expiry moved.
    Touched,
    /// The session vanished while the request ran (logged out elsewhere, expired); its
    /// changes were dropped rather than resurrect it.
    Vanished,
}

/// One per application: the store, the keys and the configuration.
///
/// Requests' `Cookie` headers are read as bytes (a neighbour's malformed cookie costs only
/// itself). When a request carries several cookies of our name, the session is the first
/// whose ticket verifies **and** whose record the store knows; see
/// [`SessionEngine::session_from_headers`].
#[derive(Clone)]
pub struct SessionEngine {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    config: SessionConfig,
    format: Arc<dyn TicketFormat>,
}

impl fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEngine")
            .field("keys", &self.shared.keys)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionEngine {
    /// An engine over `store`, signing tickets with `keys`.
    pub fn new(store: Arc<dyn SessionStore>, keys: KeyRing, config: SessionConfig) -> Self {
        SessionEngine {
            shared: Arc::new(Shared {
                store,
                keys,
                config,
                format: Arc::new(SignedTicket),
            }),
        }
    }

    /// The same engine with another ticket format (default [`SignedTicket`]).
    #[must_use]
    pub fn with_ticket_format(self, format: Arc<dyn TicketFormat>) -> Self {
        let s = &self.shared;
        SessionEngine {
            shared: Arc::new(Shared {
                store: s.store.clone(),
                keys: s.keys.clone(),
                config: s.config.clone(),
                format,
            }),
        }
    }

    /// The ticket format.
    pub fn ticket_format(&self) -> &Arc<dyn TicketFormat> {
        &self.shared.format
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.shared.keys
    }

    /// The session of a request whose `Cookie` header is `cookie_header` (a convenience for
    /// tests and single-header callers; see [`SessionEngine::session_from_headers`]).
    pub fn session(&self, cookie_header: Option<&str>) -> Session {
        self.session_from_headers(cookie_header.map(str::as_bytes))
    }

    /// The session of a request, from its `Cookie` header values as bytes (every `Cookie`
    /// header of the request: HTTP/2 sends several), read with
    /// [`cookie_values`](crate::cookie::cookie_values): a neighbour's malformed cookie
    /// costs nothing but itself.
    ///
    /// Nothing is loaded yet, and a cookie that does not verify means no session (and no store
    /// call). **Several cookies of our name** (a neighbour on the same site can plant one; a
    /// browser sends a planted cookie with a longer `Path` *before* ours): every ticket that
    /// verifies is kept, in header order, up to [`MAX_CANDIDATES`]; the first load tries them
    /// in that order and the session is the **first whose record the store knows** (live and
    /// within this server's timeouts). So a planted garbage pair, or a planted ticket of a
    /// session that has ended, cannot shadow the real one. A planted ticket of a *live*
    /// session (the attacker's own) that comes first does win: the server cannot tell it
    /// apart; `__Host-` cookie names (HTTPS) stop neighbours from planting it.
    ///
    /// With one verified ticket (the usual case) this allocates nothing and costs one store
    /// load, exactly as before; each further ticket costs at most one more load, only when
    /// the ones before it are unknown.
    pub fn session_from_headers<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Session {
        let name = self.shared.config.cookie.name.as_str();
        let mut first = None;
        let mut more = Vec::new();
        let mut had_cookie = false;
        for value in crate::cookie::cookie_values(cookie_headers, name) {
            had_cookie = true;
            match self.shared.format.decode(&self.shared.keys, name, value) {
                Ok(id) if first.is_none() => first = Some(id),
                Ok(id) if first.as_ref() == Some(&id) || more.contains(&id) => {}
                Ok(id) => {
                    more.push(id);
                    if more.len() + 1 >= MAX_CANDIDATES {
                        break;
                    }
                }
                Err(reason) => tracing::debug!(%reason, "ignoring session cookie"),
            }
        }
        self.new_session(first, more, had_cookie)
    }

    /// The session for an already verified id (for adapters that read tickets themselves).
    pub fn session_with_id(&self, incoming: Option<SessionId>, had_cookie: bool) -> Session {
        self.new_session(incoming, Vec::new(), had_cookie)
    }

    fn new_session(
        &self,
        incoming: Option<SessionId>,
        fallbacks: Vec<SessionId>,
        had_cookie: bool,
    ) -> Session {
        Session {
            inner: Arc::new(Inner {
                shared: self.shared.clone(),
                had_cookie,
                state: tokio::sync::Mutex::new(State {
                    loaded: incoming.is_none(),
                    id: incoming,
                    fallbacks,
                    ..State::default()
                }),
            }),
        }
    }

    /// Runs a store operation under the configured timeout.
    async fn timed<T>(&self, fut: impl Future<Output = store::Result<T>>) -> Result<T> {
        timed(self.shared.config.store_timeout, fut).await
    }

    /// Sessions of `user` (for "your devices" pages).
    ///
    /// # Errors
    /// Store failures.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        self.timed(self.shared.store.sessions_of(user)).await
    }

    /// Deletes one session by its handle if it belongs to `user`; `true` if it did.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke(&self, user: &str, handle: &SessionKey) -> Result<bool> {
        let store = &self.shared.store;
        match self.timed(store.load(handle)).await? {
            Some(r) if r.meta.user.as_deref() == Some(user) => {
                self.timed(store.delete(handle)).await
            }
            _ => Ok(false),
        }
    }
}

async fn timed<T>(limit: Duration, fut: impl Future<Output = store::Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(store::Error::new(
            store::ErrorKind::Timeout,
            format!("no answer within {limit:?}"),
        )
        .into()),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A request's session. Cheap to clone; every clone is the same session.
///
/// Reading never creates a session. The first change creates one (committed at response
/// time). After the response is committed, changes fail with [`ErrorKind::Committed`].
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    had_cookie: bool,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// The id the record lives under now (incoming, or fresh for a new/renewed session).
    /// Before the load: the first verified ticket of the request.
    id: Option<SessionId>,
    /// Before the load only: further verified tickets of the request, in header order, tried
    /// when the ones before them name no live record. Empty (no allocation) in the usual
    /// one-ticket case; emptied by the load.
    fallbacks: Vec<SessionId>,
    /// Key of the record to delete at commit (renewal replaces it).
    replaced: Option<SessionKey>,
    /// The session as this request sees it, its own changes included.
    record: Option<Record>,
    /// Whether the record exists in the store yet.
    stored: bool,
    /// Field changes not yet written: `Some(json)` set, `None` removed.
    changes: BTreeMap<String, Option<String>>,
    renew: bool,
    destroyed: bool,
    remember_changed: bool,
    committed: bool,
    /// A ticket came in, verified, but its record was gone.
    stale: bool,
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
    fn config(&self) -> &SessionConfig {
        &self.inner.shared.config
    }

    fn key_of(&self, id: &SessionId) -> SessionKey {
        self.inner.shared.format.key(id)
    }

    fn deadline(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let c = self.config();
        now.plus(c.idle_timeout)
            .min(created_at.plus(c.absolute_lifetime))
    }

    /// Loads the record if not done yet; returns the locked state.
    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let mut st = self.inner.state.lock().await;
        if !st.loaded {
            let first = st
                .id
                .clone()
                .expect("an unloaded session has an incoming id");
            let store = &self.inner.shared.store;
            // The first verified ticket whose record is live wins (see
            // `SessionEngine::session_from_headers`); usually there is just one. A store
            // failure leaves the state as it was, to retry.
            let mut live = None;
            for id in std::iter::once(first).chain(st.fallbacks.clone()) {
                let record =
                    timed(self.config().store_timeout, store.load(&self.key_of(&id))).await?;
                let now = Timestamp::now();
                // Enforce this server's timeouts too: the store's expiry may predate a config
                // change.
                if let Some(record) = record.filter(|r| {
                    let c = self.config();
                    r.meta.expires_at > now
                        && r.meta.created_at.plus(c.absolute_lifetime) > now
                        && r.meta.last_seen.plus(c.idle_timeout) > now
                }) {
                    live = Some((id, record));
                    break;
                }
            }
            st.loaded = true;
            st.fallbacks = Vec::new();
            match live {
                Some((id, record)) => {
                    st.id = Some(id);
                    st.stored = true;
                    st.record = Some(record);
                }
                None => {
                    st.id = None;
                    st.stale = true;
                    st.stored = false;
                    st.record = None;
                }
            }
            if !st.changes.is_empty() {
                // Blind writes made before this load: lay them over what was loaded (or over
                // a new session, if the old one is gone).
                let changes: Vec<(String, Option<String>)> = st
                    .changes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let record = self.ensure_record(&mut st);
                for (k, v) in changes {
                    match v {
                        Some(json) => record.data.insert(k, json),
                        None => record.data.remove(&k),
                    };
                }
            }
        }
        Ok(st)
    }

    async fn state_mut(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let st = self.state().await?;
        if st.committed {
            return Err(committed_error());
        }
        Ok(st)
    }

    /// Ensures there is a record to write into (a new session when there is none).
    fn ensure_record<'a>(&self, st: &'a mut State) -> &'a mut Record {
        if st.record.is_none() {
            let now = Timestamp::now();
            st.record = Some(Record::new(now, self.deadline(now, now)));
            st.stored = false;
            st.destroyed = false;
        }
        st.record.as_mut().expect("just ensured")
    }

    /// The value of `key`, deserialized as `T`; `None` when absent.
    ///
    /// # Errors
    /// Store failures, or a stored value that is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let st = self.state().await?;
        match st.record.as_ref().and_then(|r| r.data.get(key)) {
            None => Ok(None),
            Some(json) => serde_json::from_str(json).map(Some).map_err(|e| Error {
                kind: ErrorKind::Deserialize,
                message: format!("session value {key:?} does not have the requested type"),
                source: Some(Box::new(e)),
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
        let json = serde_json::to_string(value).map_err(|e| Error {
            kind: ErrorKind::Serialize,
            message: format!("session value {key:?} cannot be serialized"),
            source: Some(Box::new(e)),
        })?;
        self.set_raw(key, json).await
    }

    pub(crate) async fn set_raw(&self, key: &str, json: String) -> Result<()> {
        let max = self.config().max_data_bytes;
        {
            // A blind write: the request carries a ticket and nothing was read yet. Record the
            // change without loading; the commit patches the record in one store operation
            // (or, if the session is gone, starts a new one with it).
            let mut st = self.inner.state.lock().await;
            if st.committed {
                return Err(committed_error());
            }
            // With several candidate tickets the write must know which session it is for:
            // that takes the load below.
            if !st.loaded && st.fallbacks.is_empty() {
                let size = key.len() + json.len();
                if size > max {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("session value would be {size} bytes, over the limit of {max}"),
                    ));
                }
                st.changes.insert(key.to_owned(), Some(json));
                return Ok(());
            }
        }
        let mut st = self.state_mut().await?;
        let record = self.ensure_record(&mut st);
        let old = record.data.get(key).map_or(0, |v| key.len() + v.len());
        let size = record.data_bytes() - old + key.len() + json.len();
        if size > max {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("session data would be {size} bytes, over the limit of {max}"),
            ));
        }
        if record.data.get(key) == Some(&json) {
            return Ok(());
        }
        record.data.insert(key.to_owned(), json.clone());
        st.changes.insert(key.to_owned(), Some(json));
        Ok(())
    }

    pub(crate) async fn get_raw(&self, key: &str) -> Result<Option<String>> {
        let st = self.state().await?;
        Ok(st.record.as_ref().and_then(|r| r.data.get(key).cloned()))
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        self.remove_raw(key).await
    }

    /// One-time notifications kept in this session.
    pub fn flash(&self) -> crate::flash::Flash<'_> {
        crate::flash::Flash::new(self)
    }

    pub(crate) async fn remove_raw(&self, key: &str) -> Result<bool> {
        let mut st = self.state_mut().await?;
        let removed = st
            .record
            .as_mut()
            .and_then(|r| r.data.remove(key))
            .is_some();
        if removed {
            st.changes.insert(key.to_owned(), None);
        }
        Ok(removed)
    }

    /// Whether `key` is set.
    ///
    /// # Errors
    /// Store failures.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        let st = self.state().await?;
        Ok(st.record.as_ref().is_some_and(|r| r.data.contains_key(key)))
    }

    /// The application's keys (the library's own fields are not listed).
    ///
    /// # Errors
    /// Store failures.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let st = self.state().await?;
        Ok(st.record.as_ref().map_or_else(Vec::new, |r| {
            r.data
                .keys()
                .filter(|k| !k.starts_with(RESERVED_PREFIX))
                .cloned()
                .collect()
        }))
    }

    /// Removes every application key (the session, its login and its CSRF secret stay).
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.state_mut().await?;
        let keys: Vec<String> = st.record.as_ref().map_or_else(Vec::new, |r| {
            r.data
                .keys()
                .filter(|k| !k.starts_with(RESERVED_PREFIX))
                .cloned()
                .collect()
        });
        for k in keys {
            if let Some(r) = st.record.as_mut() {
                r.data.remove(&k);
            }
            st.changes.insert(k, None);
        }
        Ok(())
    }

    /// Whether a session exists (loaded from the cookie, or created by this request).
    ///
    /// # Errors
    /// Store failures.
    pub async fn exists(&self) -> Result<bool> {
        Ok(self.state().await?.record.is_some())
    }

    /// Logs the session in as `user`: a new id (so a ticket planted before login is
    /// worthless), the user index updated, the CSRF secret rotated. Data is kept.
    ///
    /// # Errors
    /// Store failures, an empty user, or a committed response.
    pub async fn login(&self, user: &str) -> Result<()> {
        if user.is_empty() {
            return Err(Error::new(
                ErrorKind::ReservedKey,
                "user id must not be empty",
            ));
        }
        let mut st = self.state_mut().await?;
        let record = self.ensure_record(&mut st);
        record.meta.user = Some(user.to_owned());
        record.data.remove(crate::csrf::SESSION_FIELD);
        st.changes.remove(crate::csrf::SESSION_FIELD);
        self.renew(&mut st);
        Ok(())
    }

    /// The user the session is logged in as.
    ///
    /// # Errors
    /// Store failures.
    pub async fn user(&self) -> Result<Option<String>> {
        let st = self.state().await?;
        Ok(st.record.as_ref().and_then(|r| r.meta.user.clone()))
    }

    /// Logs out: the session is destroyed in the store and the cookie removed.
    ///
    /// # Errors
    /// A committed response.
    pub async fn logout(&self) -> Result<()> {
        self.destroy().await
    }

    /// Destroys the session: deleted from the store at commit, cookie removed. Needs no load:
    /// without one, when the request carried several verified tickets (see
    /// [`SessionEngine::session_from_headers`]), the sessions of all of them are deleted.
    ///
    /// # Errors
    /// A committed response.
    pub async fn destroy(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        if st.committed {
            return Err(Error::new(
                ErrorKind::Committed,
                "session destroyed after the response was committed; it was not destroyed",
            ));
        }
        st.destroyed = true;
        st.record = None;
        st.changes.clear();
        st.renew = false;
        st.loaded = true;
        Ok(())
    }

    /// Gives the session a new id, keeping its data; the old ticket stops working.
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.state_mut().await?;
        if st.record.is_some() {
            self.renew(&mut st);
        }
        Ok(())
    }

    fn renew(&self, st: &mut State) {
        if !st.renew {
            st.renew = true;
            if st.stored {
                st.replaced = st.id.as_ref().map(|id| self.key_of(id));
            }
        }
        st.id = Some(self.inner.shared.format.generate());
    }

    /// Makes the cookie persistent (`true`, "remember me") or a browser-session cookie.
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn set_remember(&self, remember: bool) -> Result<()> {
        let mut st = self.state_mut().await?;
        let record = self.ensure_record(&mut st);
        if record.meta.remember != remember {
            record.meta.remember = remember;
            st.remember_changed = true;
        }
        Ok(())
    }

    /// Whether the cookie is persistent ("remember me"); `false` without a session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn remember(&self) -> Result<bool> {
        let st = self.state().await?;
        Ok(st.record.as_ref().is_some_and(|r| r.meta.remember))
    }

    /// When the session will expire if unused; `None` without a session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn expires_at(&self) -> Result<Option<Timestamp>> {
        let st = self.state().await?;
        Ok(st.record.as_ref().map(|r| {
            if st.stored && st.changes.is_empty() && !st.renew {
                r.meta.expires_at
            } else {
                self.deadline(r.meta.created_at, Timestamp::now())
            }
        }))
    }

    /// The session's public handle (its store key); `None` without a session. After a login
    /// this is already the new handle.
    ///
    /// # Errors
    /// Store failures.
    pub async fn handle(&self) -> Result<Option<SessionKey>> {
        let mut st = self.state().await?;
        if st.record.is_none() {
            return Ok(None);
        }
        if st.id.is_none() {
            st.id = Some(self.inner.shared.format.generate());
        }
        Ok(st.id.as_ref().map(|id| self.key_of(id)))
    }

    /// The engine's configuration.
    pub fn engine_config(&self) -> &SessionConfig {
        self.config()
    }

    /// The store behind this session (for listings and revocations).
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.shared.store
    }

    /// Deletes every other session of the logged-in user; returns how many.
    ///
    /// # Errors
    /// Store failures, or [`ErrorKind::NotLoggedIn`].
    pub async fn revoke_others(&self) -> Result<u64> {
        let (user, current) = {
            let st = self.state().await?;
            let user = st.record.as_ref().and_then(|r| r.meta.user.clone());
            let current = if st.stored && !st.renew {
                st.id.as_ref().map(|id| self.key_of(id))
            } else {
                st.replaced
            };
            (user, current)
        };
        let user = user.ok_or_else(|| Error::new(ErrorKind::NotLoggedIn, "not logged in"))?;
        let store = &self.inner.shared.store;
        timed(
            self.config().store_timeout,
            store.delete_user(&user, current.as_ref()),
        )
        .await
    }

    /// Whether the response has been committed.
    pub async fn is_committed(&self) -> bool {
        self.inner.state.lock().await.committed
    }

    /// Writes the session to the store: the commit state machine. Call once, when the
    /// response is ready; later changes fail with [`ErrorKind::Committed`]. `user_agent` (the
    /// request's `User-Agent`) is recorded if this creates the session: taken here, not per
    /// request, so requests that create nothing copy nothing.
    ///
    /// # Errors
    /// Store failures (answer 503: nothing the handler did to the session was saved, except
    /// that a failed renewal leaves the old session usable).
    pub async fn commit(&self, user_agent: Option<&str>) -> Result<CommitOutcome> {
        let mut guard = self.inner.state.lock().await;
        let st: &mut State = &mut guard;
        if st.committed {
            return Ok(CommitOutcome::default());
        }
        st.committed = true;
        let shared = &*self.inner.shared;
        let limit = shared.config.store_timeout;
        let store = &shared.store;
        let cookie = &shared.config.cookie;
        let now = Timestamp::now();

        if st.destroyed {
            let mut keys: Vec<SessionKey> = st.replaced.into_iter().collect();
            if let Some(id) = &st.id {
                keys.push(shared.format.key(id));
            }
            // Destroyed before any load, with several verified tickets: which one was live is
            // unknown, so every session this request presented a valid ticket for ends.
            keys.extend(st.fallbacks.iter().map(|id| shared.format.key(id)));
            for key in &keys {
                timed(limit, store.delete(key)).await?;
            }
            let set_cookie = (self.inner.had_cookie || !keys.is_empty()).then(|| cookie.removal());
            return Ok(CommitOutcome {
                set_cookie,
                action: CommitAction::Destroyed,
            });
        }

        if !st.loaded && !st.changes.is_empty() {
            return self.commit_blind(st, now, user_agent).await;
        }

        let Some(record) = st.record.as_mut() else {
            // No session. A verified ticket whose record is gone: clear the cookie.
            return Ok(CommitOutcome {
                set_cookie: st.stale.then(|| cookie.removal()),
                action: CommitAction::None,
            });
        };

        if !st.stored || st.renew {
            if !st.stored
                && record.data.is_empty()
                && record.meta.user.is_none()
                && !st.renew
                && !st.remember_changed
            {
                // Created then emptied within the request: nothing worth a cookie.
                return Ok(CommitOutcome::default());
            }
            record.meta.last_seen = now;
            record.meta.expires_at = self.deadline(record.meta.created_at, now);
            if record.meta.user_agent.is_none() {
                record.meta.user_agent =
                    user_agent.map(|ua| truncate(ua, MAX_USER_AGENT).to_owned());
            }
            if st.renew && !st.stored {
                // A brand-new session logging in: nothing to replace.
                st.replaced = None;
            }
            let record = record.clone();
            let mut id = st.id.take().unwrap_or_else(|| shared.format.generate());
            let mut attempts = 0;
            loop {
                match timed(limit, store.create(&shared.format.key(&id), &record)).await? {
                    Created::Done => break,
                    Created::Collision if attempts < 3 => {
                        attempts += 1;
                        tracing::warn!("session id collision; retrying with a new id");
                        id = shared.format.generate();
                    }
                    Created::Collision => {
                        return Err(store::Error::new(
                            store::ErrorKind::Backend,
                            "session create kept colliding; is the store returning stale data?",
                        )
                        .into());
                    }
                }
            }
            let renewed = st.replaced.is_some();
            if let Some(old) = st.replaced.take() {
                timed(limit, store.delete(&old)).await?;
            }
            let set_cookie = self.ticket_cookie(&id, &record);
            st.id = Some(id);
            st.stored = true;
            st.changes.clear();
            return Ok(CommitOutcome {
                set_cookie: Some(set_cookie),
                action: if renewed || st.renew {
                    CommitAction::Renewed
                } else {
                    CommitAction::Created
                },
            });
        }

        let id = st.id.clone().expect("a stored session has an id");
        let key = shared.format.key(&id);
        if !st.changes.is_empty() || st.remember_changed {
            let expires_at = self.deadline(record.meta.created_at, now);
            let mut patch = Patch::new(now, expires_at);
            for (k, v) in std::mem::take(&mut st.changes) {
                match v {
                    Some(json) => patch.set.push((k, json)),
                    None => patch.remove.push(k),
                }
            }
            if st.remember_changed {
                patch.remember = Some(record.meta.remember);
            }
            let record_after = {
                let r = st.record.as_mut().expect("checked above");
                r.meta.last_seen = now;
                r.meta.expires_at = expires_at;
                r.clone()
            };
            return match timed(limit, store.apply(&key, &patch)).await? {
                Applied::Done => Ok(CommitOutcome {
                    set_cookie: (st.remember_changed || record_after.meta.remember)
                        .then(|| self.ticket_cookie(&id, &record_after)),
                    action: CommitAction::Patched,
                }),
                Applied::Missing => Ok(self.vanished()),
            };
        }

        let due = self.deadline(record.meta.created_at, now);
        let interval = self.config().touch_interval;
        if due > record.meta.expires_at && record.meta.last_seen.plus(interval) <= now {
            record.meta.last_seen = now;
            record.meta.expires_at = due;
            let record = record.clone();
            return match timed(limit, store.touch(&key, now, due)).await? {
                Applied::Done => Ok(CommitOutcome {
                    set_cookie: record
                        .meta
                        .remember
                        .then(|| self.ticket_cookie(&id, &record)),
                    action: CommitAction::Touched,
                }),
                Applied::Missing => Ok(self.vanished()),
            };
        }
        Ok(CommitOutcome::default())
    }

    /// Commits writes made without a load: one patch (capped by the absolute lifetime in the
    /// store, which knows the creation time); if the session is gone, a new one holding them.
    async fn commit_blind(
        &self,
        st: &mut State,
        now: Timestamp,
        user_agent: Option<&str>,
    ) -> Result<CommitOutcome> {
        let shared = &*self.inner.shared;
        let limit = shared.config.store_timeout;
        let id = st.id.clone().expect("a blind write has an incoming id");
        let mut patch = Patch::new(now, now.plus(shared.config.idle_timeout));
        patch.max_lifetime = Some(shared.config.absolute_lifetime);
        for (k, v) in &st.changes {
            match v {
                Some(json) => patch.set.push((k.clone(), json.clone())),
                None => patch.remove.push(k.clone()),
            }
        }
        match timed(limit, shared.store.apply(&shared.format.key(&id), &patch)).await? {
            Applied::Done => {
                st.changes.clear();
                Ok(CommitOutcome {
                    set_cookie: None,
                    action: CommitAction::Patched,
                })
            }
            Applied::Missing => {
                // The ticket's session is gone: the writes start a new session (new id), as a
                // write without any session would.
                let mut record = Record::new(now, self.deadline(now, now));
                record.meta.user_agent =
                    user_agent.map(|ua| truncate(ua, MAX_USER_AGENT).to_owned());
                for (k, v) in std::mem::take(&mut st.changes) {
                    if let Some(json) = v {
                        record.data.insert(k, json);
                    }
                }
                if record.data.is_empty() {
                    return Ok(CommitOutcome {
                        set_cookie: Some(self.config().cookie.removal()),
                        action: CommitAction::Vanished,
                    });
                }
                let mut id = shared.format.generate();
                for attempt in 0..4 {
                    match timed(limit, shared.store.create(&shared.format.key(&id), &record))
                        .await?
                    {
                        Created::Done => break,
                        Created::Collision if attempt < 3 => id = shared.format.generate(),
                        Created::Collision => {
                            return Err(store::Error::new(
                                store::ErrorKind::Backend,
                                "session create kept colliding",
                            )
                            .into());
                        }
                    }
                }
                let set_cookie = self.ticket_cookie(&id, &record);
                st.id = Some(id);
                st.record = Some(record);
                st.stored = true;
                st.loaded = true;
                Ok(CommitOutcome {
                    set_cookie: Some(set_cookie),
                    action: CommitAction::Created,
                })
            }
        }
    }

    fn vanished(&self) -> CommitOutcome {
        tracing::info!("session ended while the request ran; its changes were dropped");
        CommitOutcome {
            set_cookie: Some(self.config().cookie.removal()),
            action: CommitAction::Vanished,
        }
    }

    fn ticket_cookie(&self, id: &SessionId, record: &Record) -> String {
        let shared = &*self.inner.shared;
        let ticket = shared
            .format
            .encode(&shared.keys, &shared.config.cookie.name, id);
        let max_age = record
            .meta
            .remember
            .then(|| Timestamp::now().until(record.meta.expires_at));
        shared.config.cookie.set_cookie(&ticket, max_age)
    }
}

fn committed_error() -> Error {
    Error::new(
        ErrorKind::Committed,
        "session changed after the response was committed; the change was not saved",
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
