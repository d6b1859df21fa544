//! The store contract every backend implements, and the in-memory store.
//!
//! A store keeps [`Record`]s under [`SessionKey`]s (hashes of session ids; the store never
//! sees an id). Writes are field-level [`Patch`]es on records that exist, never upserts, so a
//! session that was logged out or expired is never brought back by a slower request, and two
//! requests writing different fields of one session both keep their writes.
//!
//! ```
//! # tokio_test_block_on(async {
//! use cloakroom_core::store::{MemoryStore, Record, SessionStore, Patch, Applied};
//! use cloakroom_core::session::{SessionId, Timestamp};
//! use std::time::Duration;
//!
//! let store = MemoryStore::new();
//! let key = SessionId::generate().key();
//! let now = Timestamp::now();
//! let mut record = Record::new(now, now.plus(Duration::from_secs(60)));
//! record.data.insert("n".into(), "1".into());
//! store.create(&key, &record).await.unwrap();
//! let patch = Patch::new(now, now.plus(Duration::from_secs(60))).set("m", "2");
//! assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
//! assert_eq!(store.load(&key).await.unwrap().unwrap().data.len(), 2);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::{SessionKey, Timestamp};

mod error;
mod events;
mod limit;
mod memory;
mod placement;

pub use error::{Error, ErrorKind, Result};
pub(crate) use events::create_session;
pub use events::{
    Batch, EventLog, FOLLOW_POLL, LoggedEvent, Position, end_session, end_user, kind_label,
    parse_kind, previous_handle,
};
pub use limit::{Admitted, Limit, LimitPolicy, admission};
pub use memory::MemoryStore;
pub use placement::{Placement, placed};

/// Session data: field name to the field's value as JSON text.
pub type Fields = BTreeMap<String, String>;

/// The one field of a rotation grace's forwarding record (see [`Record::is_forward`]).
pub(crate) const FORWARD_FIELD: &str = "__cr.fwd";

/// The one field of an ended session's tombstone (see [`Record::is_ended`]): why it ended, as
/// JSON text (`"limit"`).
pub const ENDED_FIELD: &str = "__cr.ended";

/// The value of [`ENDED_FIELD`] in the tombstone of a session ended by the concurrent-session
/// limit (JSON text).
pub const ENDED_BY_LIMIT: &str = "\"limit\"";

/// Longest admin message a tombstone keeps, in characters.
const MAX_END_MESSAGE_CHARS: usize = 200;

/// Why a tombstone's session ended ([`Record::ended_by`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// The concurrent-session limit ([`SessionStore::create_limited`]).
    Limit,
    /// An admin (the CLI), with the message the user is shown, if any.
    Admin(Option<String>),
}

/// The tombstone value of an admin's end: `{"by":"admin","message":..}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename = "admin")]
struct AdminEnd {
    message: Option<String>,
}

/// Everything a store keeps about one session.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The session's fields (JSON text per field).
    pub data: Fields,
    /// Bookkeeping: times, owner, device.
    pub meta: Meta,
}

impl Record {
    /// An empty record created at `now`, expiring at `expires_at`.
    pub fn new(now: Timestamp, expires_at: Timestamp) -> Self {
        Record {
            data: Fields::new(),
            meta: Meta {
                created_at: now,
                last_seen: now,
                expires_at,
                user: None,
                user_agent: None,
                remember: false,
            },
        }
    }

    /// Bytes of field names and values: what the session costs in the store.
    pub fn data_bytes(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Whether this is a rotation grace's forwarding record rather than a session: no user,
    /// and the reserved `__cr.fwd` field naming the record a rotation replaced it with. Such
    /// records live a few seconds; [`SessionStore::scan`] must skip them (they are not
    /// sessions, and a user index never holds them).
    pub fn is_forward(&self) -> bool {
        self.meta.user.is_none() && self.data.contains_key(FORWARD_FIELD)
    }

    /// Whether this is the tombstone of a session ended by the store (by the concurrent-session
    /// limit, [`SessionStore::create_limited`]): no user, and the reserved `__cr.ended` field
    /// saying why. It keeps the ended session's expiry, so the session's next request learns
    /// why it ended; like a forward it is no session ([`SessionStore::scan`] skips it, no user
    /// index holds it).
    pub fn is_ended(&self) -> bool {
        self.meta.user.is_none() && self.data.contains_key(ENDED_FIELD)
    }

    /// Why the session this tombstone stands for ended; `None` for a record that is no
    /// tombstone.
    pub fn ended_by(&self) -> Option<EndedBy> {
        if !self.is_ended() {
            return None;
        }
        let value = &self.data[ENDED_FIELD];
        if value == ENDED_BY_LIMIT {
            return Some(EndedBy::Limit);
        }
        let admin: Option<AdminEnd> = serde_json::from_str(value).ok();
        Some(EndedBy::Admin(admin.and_then(|a| a.message)))
    }

    /// The tombstone an admin leaves in place of a session they ended (the CLI's
    /// `sessions revoke --reason`): created at `now`, kept until `expires_at` (the ended
    /// session's expiry), its next request told `message` (cut to 200 characters, control
    /// characters dropped).
    pub fn ended_by_admin(now: Timestamp, expires_at: Timestamp, message: Option<&str>) -> Self {
        let message = message.map(|m| {
            m.chars()
                .filter(|c| !c.is_control())
                .take(MAX_END_MESSAGE_CHARS)
                .collect::<String>()
        });
        let value = serde_json::to_string(&AdminEnd { message }).expect("serializes");
        let mut record = Record::new(now, expires_at);
        record.data.insert(ENDED_FIELD.to_owned(), value);
        record
    }

    /// The tombstone a store leaves in place of a session the limit ended: created at `now`,
    /// kept until `expires_at` (the ended session's own expiry), with only [`ENDED_FIELD`].
    pub fn ended_by_limit(now: Timestamp, expires_at: Timestamp) -> Self {
        let mut record = Record::new(now, expires_at);
        record
            .data
            .insert(ENDED_FIELD.to_owned(), ENDED_BY_LIMIT.to_owned());
        record
    }

    /// A summary for listings.
    pub fn info(&self, key: SessionKey) -> SessionInfo {
        SessionInfo {
            key,
            meta: self.meta.clone(),
            fields: self.data.len(),
            data_bytes: self.data_bytes(),
            device_bound: self.data.contains_key(crate::session::DEVICE_KEY_FIELD),
        }
    }

    /// Applies `patch` to this record in memory, as stores do.
    pub fn apply(&mut self, patch: &Patch) {
        for name in &patch.remove {
            self.data.remove(name);
        }
        for (name, value) in &patch.set {
            self.data.insert(name.clone(), value.clone());
        }
        self.meta.last_seen = patch.last_seen;
        self.meta.expires_at = patch.expiry_for(self.meta.created_at);
        if let Some(remember) = patch.remember {
            self.meta.remember = remember;
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("fields", &self.data.keys().collect::<Vec<_>>())
            .field("values", &"REDACTED")
            .field("meta", &self.meta)
            .finish()
    }
}

/// Bookkeeping kept with every record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// When the session was created (the absolute lifetime counts from here).
    pub created_at: Timestamp,
    /// Last activity the server recorded (coarse: updated on writes and touches).
    pub last_seen: Timestamp,
    /// When the record stops existing; stores never return a record past this.
    pub expires_at: Timestamp,
    /// The user the session is logged in as, if any (indexed).
    pub user: Option<String>,
    /// The `User-Agent` seen when the session was created.
    pub user_agent: Option<String>,
    /// Whether the cookie is persistent ("remember me").
    pub remember: bool,
}

/// A field-level change to an existing record, applied atomically.
#[derive(Clone, PartialEq, Eq)]
pub struct Patch {
    /// Fields to set (name, JSON text).
    pub set: Vec<(String, String)>,
    /// Fields to remove.
    pub remove: Vec<String>,
    /// New last-activity time.
    pub last_seen: Timestamp,
    /// New expiry.
    pub expires_at: Timestamp,
    /// New "remember me" flag, if it changed.
    pub remember: Option<bool>,
    /// When set, the store caps the new expiry at the record's `created_at` plus this, so a
    /// blind write (made without loading the record) still honours the absolute lifetime;
    /// a record whose lifetime is over at `last_seen` is refused ([`Applied::Missing`]).
    pub max_lifetime: Option<Duration>,
    /// When set, a record last seen this long or longer before `last_seen` is refused
    /// ([`Applied::Missing`], nothing written): a blind write honours the idle timeout as a
    /// load does, even for a record the store has not expired yet.
    pub max_idle: Option<Duration>,
}

impl Patch {
    /// A patch that changes no field, only the activity times.
    pub fn new(last_seen: Timestamp, expires_at: Timestamp) -> Self {
        Patch {
            set: Vec::new(),
            remove: Vec::new(),
            last_seen,
            expires_at,
            remember: None,
            max_lifetime: None,
            max_idle: None,
        }
    }

    /// Whether the store must refuse this patch for a record created at `created_at` and
    /// last seen at `last_seen`: its lifetime or its idle time is over at the patch's
    /// `last_seen` (see [`Patch::max_lifetime`], [`Patch::max_idle`]). The record a load
    /// would refuse.
    pub fn refuses(&self, created_at: Timestamp, last_seen: Timestamp) -> bool {
        let over = |from: Timestamp, limit: Option<Duration>| {
            limit.is_some_and(|l| from.plus(l) <= self.last_seen)
        };
        over(created_at, self.max_lifetime) || over(last_seen, self.max_idle)
    }

    /// The expiry this patch gives a record created at `created_at`.
    pub fn expiry_for(&self, created_at: Timestamp) -> Timestamp {
        match self.max_lifetime {
            Some(l) => self.expires_at.min(created_at.plus(l)),
            None => self.expires_at,
        }
    }

    /// Adds a field to set.
    #[must_use]
    pub fn set(mut self, name: impl Into<String>, json: impl Into<String>) -> Self {
        self.set.push((name.into(), json.into()));
        self
    }

    /// Adds a field to remove.
    #[must_use]
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Bytes of field names and values this patch writes.
    pub fn bytes(&self) -> usize {
        self.set
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + self.remove.iter().map(String::len).sum::<usize>()
    }
}

impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patch")
            .field("set", &self.set.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("remove", &self.remove)
            .field("last_seen", &self.last_seen)
            .field("expires_at", &self.expires_at)
            .field("remember", &self.remember)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

/// Outcome of [`SessionStore::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The record was written.
    Done,
    /// A live record already has this key; nothing was written.
    Collision,
}

/// Outcome of [`SessionStore::apply`] and [`SessionStore::touch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record existed and was changed.
    Done,
    /// The record is gone (deleted or expired); nothing was written.
    Missing,
}

impl From<bool> for Applied {
    /// `Done` when the change reached the record (a statement changed its one row), else
    /// `Missing`.
    fn from(changed: bool) -> Self {
        if changed {
            Applied::Done
        } else {
            Applied::Missing
        }
    }
}

impl From<bool> for Created {
    /// `Done` when the record was written, else `Collision`.
    fn from(written: bool) -> Self {
        if written {
            Created::Done
        } else {
            Created::Collision
        }
    }
}

/// A session as listed by [`SessionStore::sessions_of`] and [`SessionStore::scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The store key, which is also the public handle.
    pub key: SessionKey,
    /// Bookkeeping.
    pub meta: Meta,
    /// Number of fields.
    pub fields: usize,
    /// Bytes of field names and values.
    pub data_bytes: usize,
    /// Whether the session is bound to a device key (DBSC registered: the record holds the
    /// device's public key), for "your devices" pages and the CLI.
    pub device_bound: bool,
}

/// Where a [`SessionStore::scan`] continues. Opaque to applications, which only pass it
/// back; the store that made it ([`Cursor::new`]) reads it ([`Cursor::as_str`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// The start of a scan.
    pub fn start() -> Self {
        Cursor(String::new())
    }

    /// A store's position, in the store's own text form.
    pub fn new(position: impl Into<String>) -> Self {
        Cursor(position.into())
    }

    /// The position's text, for the store that made it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a scan.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Live sessions on this page (a page may be short, even empty, before the end).
    pub sessions: Vec<SessionInfo>,
    /// Where to continue, `None` at the end.
    pub next: Option<Cursor>,
}

/// A place to keep sessions. Object safe: the layer holds an `Arc<dyn SessionStore>`.
///
/// Every implementation must pass the conformance suite in `cloakroom-testkit`. The rules:
/// no operation ever returns or changes a record whose `expires_at` has passed; `create`
/// never overwrites a live record; `apply` and `touch` never create one.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The live record under `key`, or `None`.
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// Writes a new record; [`Created::Collision`] (and no write) if a live one exists.
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created>;

    /// Writes a new record of a user (`record.meta.user` set) under `limit`, atomically: of
    /// any number of concurrent calls for one user, no combination leaves that user with more
    /// than `limit.max` live sessions. When the user is at the limit, either the least
    /// recently seen sessions are ended (each record replaced, under its key, by the
    /// tombstone [`Record::ended_by_limit`] keeping its expiry, and removed from the user
    /// index) or nothing is written ([`Admitted::Refused`]), by `limit.policy`; a collision
    /// ends nothing. Use [`admission`] for the decision. A failure must leave the user at
    /// most at the limit (the engine answers it with a 503 and no login).
    ///
    /// There is no default: a default made of `sessions_of` and `create` could not be atomic.
    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted>;

    /// Applies a field-level patch to a live record; [`Applied::Missing`] (and no write) when
    /// there is none.
    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied>;

    /// Moves a live record's activity times; [`Applied::Missing`] when there is none.
    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied>;

    /// Deletes the record; `true` if a live one was there.
    async fn delete(&self, key: &SessionKey) -> Result<bool>;

    /// Live sessions bound to `user`.
    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>>;

    /// Deletes every live session of `user` except `except`; returns how many were deleted.
    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64>;

    /// One page of at most `limit` live sessions, for admin listings; forwarding records
    /// ([`Record::is_forward`]) and tombstones ([`Record::is_ended`]) are not sessions and
    /// are left out.
    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page>;

    /// Deletes expired records; returns how many. A no-op where the backend expires keys.
    async fn purge_expired(&self) -> Result<u64>;

    /// Keeps `challenge`, a single-use challenge (DBSC), for `session` until `expires_at`;
    /// [`Created::Collision`] (and no write) if a live one with this text exists.
    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created>;

    /// Removes `challenge` and returns the session it was kept for, if it was live. Atomic:
    /// of any number of concurrent takes of one challenge, at most one gets `Some`.
    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>>;

    /// The store's durable event log, when it was built with one: the engine then makes
    /// every session creation, rotation and end through it. `None` by default. **A store
    /// that wraps another (metrics, tracing) must forward it**, or the engine writes
    /// through the wrapper's plain operations and the log misses those changes.
    fn event_log(&self) -> Option<&dyn EventLog> {
        None
    }

    /// How the store places keys, when a user's sessions must share a shard with the user's
    /// index for the store's atomic operations (Redis Cluster): the engine then creates a
    /// user's sessions under keys in the user's shard ([`Placement::fits`]), and the store
    /// refuses a user's record under a key that does not fit. `None` by default (any key
    /// fits). **A store that wraps another must forward it.**
    fn placement(&self) -> Option<Placement> {
        None
    }

    /// Checks the backend is reachable (for health endpoints).
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// What kind of store this is, for metrics and traces (`memory`, `sqlite`, `redis`,
    /// `postgres`, ...). `custom` by default.
    fn kind(&self) -> &'static str {
        "custom"
    }
}

/// A store as the engine keeps it: any [`SessionStore`] by value, or one already shared
/// (`Arc<S>`, `Arc<dyn SessionStore>`), as [`SessionSettings::new`](crate::session::SessionSettings::new)
/// takes it.
pub trait IntoSessionStore {
    /// The store, shared.
    fn into_session_store(self) -> std::sync::Arc<dyn SessionStore>;
}

impl<S: SessionStore> IntoSessionStore for S {
    fn into_session_store(self) -> std::sync::Arc<dyn SessionStore> {
        std::sync::Arc::new(self)
    }
}

impl<S: SessionStore> IntoSessionStore for std::sync::Arc<S> {
    fn into_session_store(self) -> std::sync::Arc<dyn SessionStore> {
        self
    }
}

impl IntoSessionStore for std::sync::Arc<dyn SessionStore> {
    fn into_session_store(self) -> std::sync::Arc<dyn SessionStore> {
        self
    }
}
