//! An embedded SQLite session store for Cloakroom: sessions survive restarts, with no server
//! to run.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cloakroom_core::store::Error> {
//! use std::time::Duration;
//! use cloakroom_core::session::{SessionId, Timestamp};
//! use cloakroom_core::store::{Applied, Patch, Record, SessionStore};
//! use cloakroom_sqlite::SqliteStore;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("sessions.db");
//! let store = SqliteStore::open(&path).await?;   // creates the file and the schema
//! let key = SessionId::generate().key();
//! let now = Timestamp::now();
//! let mut record = Record::new(now, now.plus(Duration::from_secs(3600)));
//! record.data.insert("cart".into(), "[1,2]".into());
//! store.create(&key, &record).await?;
//!
//! // Field-level patch: one guarded UPDATE, never recreates a deleted or expired session.
//! let patch = Patch::new(now, now.plus(Duration::from_secs(3600))).set("theme", "\"dark\"");
//! assert_eq!(store.apply(&key, &patch).await?, Applied::Done);
//! assert_eq!(store.load(&key).await?.unwrap().data.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! How it works:
//! - One table, `sessions`, keyed by the 16-byte session key, with an index on the user (for
//!   "your devices" and revoke-all); none on the expiry, which every write moves (see
//!   [`SCHEMA_VERSION`]). Times are milliseconds since the Unix epoch. The schema is
//!   versioned with `PRAGMA user_version`; an older file is migrated, a newer one refused.
//! - `data` is a JSON object mapping each field name to the field's JSON text, stored as a
//!   JSON string, so [`apply`](SessionStore::apply) is a single `UPDATE ... SET data =
//!   json_patch(data, ?) ... WHERE key = ? AND expires_at > now`: field-level, atomic, and
//!   unable to resurrect a session that is gone.
//! - Single-use challenges (DBSC) live in a `challenges` table, taken with one
//!   `DELETE ... RETURNING`.
//! - Every query ignores expired rows; a background task deletes them every few minutes
//!   ([`SqliteStoreBuilder::purge_interval`]), walking the table in rowid steps.
//! - Writes go to one writer thread, which runs all the writes queued at the moment in one
//!   transaction (group commit) and answers each only after the commit: a write reported
//!   done is committed; if the commit fails, every write of it gets the error. Each write is
//!   one statement, so one that fails (or finds its session gone) leaves the others alone.
//! - Reads run on a small pool of connections on tokio's blocking threads (an in-memory
//!   database has one connection, the writer's, for both).
//! - WAL journal, `synchronous = NORMAL` (the last commits may be lost on power loss, never
//!   consistency), prepared statements cached per connection.
//! - Optionally a durable event log ([`SqliteStoreBuilder::event_log`], `?events=N`): an
//!   `events` table written in the same transaction as each session creation, rotation and
//!   end (a logged write is one job of the writer: its statements and its event rows under a
//!   savepoint), in commit order, the purge logging expiry and trimming it to the newest N
//!   ([`EventLog`](cloakroom_core::store::EventLog)). Without it nothing of this runs.
//!
//! Several processes (the app and the `cloakroom` admin CLI) may use one file at once.

mod error;
mod events;
mod pool;
mod rows;
mod schema;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, Limit, Meta, Page, Patch, Record, Result,
    SessionInfo, SessionStore, admission,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::SqlContext;
use crate::pool::{Pool, Target};
use crate::rows::{COLUMNS, RawRow, encode_data, key_param, merge_patch, parse_cursor, raw_row};
use crate::writer::Writer;

pub use crate::schema::SCHEMA_VERSION;

/// Default number of connections (see [`SqliteStoreBuilder::pool_size`]).
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default busy timeout (see [`SqliteStoreBuilder::busy_timeout`]).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default purge interval (see [`SqliteStoreBuilder::purge_interval`]).
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// Rows looked at per step while purging. Each step is one job of the writer thread, and the
/// requests' writes batched with it wait for its commit, so the step is kept short: 64 rows
/// (a few milliseconds of deletes). `cloakroom-bench scale` measured a concurrent write's
/// p99 during the purge of a million expired sessions at 12x its usual value with 1,000 rows
/// a step, 3.8x with 128; see BENCHMARKS.md for today's figure.
const PURGE_BATCH: usize = 64;

/// The longest pause between two purge steps. After each step the purge waits as long as
/// the step took (queueing behind requests' writes included, at most this), so it holds the
/// writer at most about half the time, and less when requests keep the writer busy.
const PURGE_PAUSE_MAX: Duration = Duration::from_millis(100);

/// Sessions in a SQLite database file.
///
/// Cheap to clone (clones share the connections). Open it with [`SqliteStore::open`], or
/// [`SqliteStore::builder`] to change the defaults.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    pool_size: usize,
    busy_timeout: Duration,
    /// Connections for reads; `None` in memory, where the writer's connection reads too.
    reads: Option<Arc<Pool>>,
    /// The writer thread: every write, batched (group commit).
    writer: Writer,
    purge_interval: Option<Duration>,
    /// The background purge task, stopped when the store is dropped.
    purger: OnceLock<tokio::task::AbortHandle>,
    /// How many events the file's event log keeps, when it has one
    /// ([`SqliteStoreBuilder::event_log`]); `None`: no log, no statement about one.
    events: Option<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(purger) = self.purger.get() {
            purger.abort();
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SqliteStore");
        match &self.inner.target {
            Target::File(path) => d.field("path", path),
            Target::Memory => d.field("path", &":memory:"),
        };
        d.field("pool_size", &self.inner.pool_size)
            .field("busy_timeout", &self.inner.busy_timeout)
            .field("purge_interval", &self.inner.purge_interval)
            .field("event_log", &self.inner.events)
            .finish()
    }
}

/// Options for opening a [`SqliteStore`]; from [`SqliteStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    pool_size: usize,
    busy_timeout: Duration,
    purge_interval: Option<Duration>,
    events: Option<u64>,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        SqliteStoreBuilder {
            pool_size: DEFAULT_POOL_SIZE,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            events: None,
        }
    }
}

impl SqliteStoreBuilder {
    /// How many connections the store may open (default [`DEFAULT_POOL_SIZE`], 4; at least
    /// 1). Reads run in parallel on them; writes take turns anyway (SQLite has one writer at
    /// a time), so more connections than cores buys little. An in-memory store always has one.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How long an operation waits for another process's write lock before failing with
    /// [`ErrorKind::Unavailable`] (default [`DEFAULT_BUSY_TIMEOUT`], 5 s: long enough for the
    /// admin CLI's purge batches, short enough to answer 503 instead of hanging a request).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How often a background task deletes expired rows (default every
    /// [`DEFAULT_PURGE_INTERVAL`], 5 min); `None` turns it off (run
    /// [`SessionStore::purge_expired`] yourself, or `cloakroom gc`). Expired rows are invisible
    /// at once either way; purging only reclaims their space. The task runs on the tokio
    /// runtime that opened the store and stops when the store is dropped.
    pub fn purge_interval(mut self, every: Option<Duration>) -> Self {
        self.purge_interval = every;
        self
    }

    /// Keeps a durable event log in the file, of the newest `max_events` events (at least 1):
    /// every session created, rotated or ended through the engine is logged in the same
    /// transaction as the change, and the purge logs each session it deletes as expired
    /// ([`EventLog`](cloakroom_core::store::EventLog); see the [crate docs](crate)). Off by
    /// default. Creates the `events` tables if the file has none; a file that has them keeps
    /// its log whoever opens it (with the retention last set), so another process's writes
    /// (the admin CLI) are logged too. The URL form: `sqlite:///path.db?events=N`.
    pub fn event_log(mut self, max_events: u64) -> Self {
        self.events = Some(max_events.max(1));
        self
    }

    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// date. The path `:memory:` opens a private in-memory database, as
    /// [`open_in_memory`](Self::open_in_memory) does.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a database written by a newer version of this crate or that
    /// holds another program's `sessions` table; [`ErrorKind::Corrupt`] for a file that is not
    /// a SQLite database; [`ErrorKind::Unavailable`] when the file cannot be opened or stays
    /// locked past the busy timeout.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref();
        if path.as_os_str() == ":memory:" {
            return self.open_in_memory().await;
        }
        if path.as_os_str().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the sqlite session store needs a file path (or :memory:)",
            ));
        }
        let path = path.to_path_buf();
        let (busy, events) = (self.busy_timeout, self.events);
        let target = Target::File(path.clone());
        let (conn, events) = blocking(move || {
            let mut conn = pool::open_file(&path, busy).map_err(|e| at_path(e, &path))?;
            enable_wal(&conn).map_err(|e| at_path(e, &path))?;
            let events = schema::migrate(&mut conn, events).map_err(|e| at_path(e, &path))?;
            Ok((conn, events))
        })
        .await?;
        SqliteStoreBuilder { events, ..self }.finish(target, conn)
    }

    /// Opens a private in-memory database: for tests and demos, gone when the store is
    /// dropped. It has a single connection whatever the pool size.
    ///
    /// # Errors
    /// Only if SQLite cannot allocate the database.
    pub async fn open_in_memory(self) -> Result<SqliteStore> {
        let (busy, events) = (self.busy_timeout, self.events);
        let (conn, events) = blocking(move || {
            let mut conn = pool::open_memory(busy)?;
            let events = schema::migrate(&mut conn, events)?;
            Ok((conn, events))
        })
        .await?;
        SqliteStoreBuilder { events, ..self }.finish(Target::Memory, conn)
    }

    fn finish(self, target: Target, conn: Connection) -> Result<SqliteStore> {
        let (reads, pool_size) = match &target {
            Target::File(path) => {
                let pool = Pool::new(path.clone(), self.pool_size, self.busy_timeout);
                (Some(Arc::new(pool)), self.pool_size)
            }
            Target::Memory => (None, 1),
        };
        let writer = Writer::start(target.clone(), self.busy_timeout, conn)?;
        let inner = Arc::new(Inner {
            target,
            pool_size,
            busy_timeout: self.busy_timeout,
            reads,
            writer,
            purge_interval: self.purge_interval,
            purger: OnceLock::new(),
            events: self.events,
        });
        if let (Some(every), Ok(runtime)) =
            (self.purge_interval, tokio::runtime::Handle::try_current())
        {
            let task = runtime.spawn(purge_periodically(Arc::downgrade(&inner), every));
            let _ = inner.purger.set(task.abort_handle());
        }
        Ok(SqliteStore { inner })
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default options: see
    /// [`SqliteStoreBuilder::open`].
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path).await
    }

    /// A private in-memory database (tests, demos): see [`SqliteStoreBuilder::open_in_memory`].
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open_in_memory`].
    pub async fn open_in_memory() -> Result<Self> {
        Self::builder().open_in_memory().await
    }

    /// Options: pool size, busy timeout, purge interval.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.target {
            Target::File(path) => Some(path),
            Target::Memory => None,
        }
    }

    /// Runs `work` on a reading connection.
    async fn read_conn<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        match &self.inner.reads {
            Some(pool) => pool.run(work).await,
            None => self.inner.writer.run(work).await,
        }
    }

    /// Copies the log's committed pages into the database file on a reading connection
    /// (a `PASSIVE` checkpoint: it neither waits for nor blocks the writer), where there is
    /// one (a file store).
    ///
    /// The purge runs it between its steps: a step dirties about one index page per deleted
    /// row, and without it the writer's automatic checkpoint (when the log passes 1,000
    /// pages) copies several steps' pages inside the commit of a batch of requests' writes,
    /// which then wait for it. Done aside, the writer's checkpoint finds little left to copy,
    /// and still bounds the log as before. A failure only costs that benefit: logged, not
    /// returned.
    async fn checkpoint_aside(&self) {
        let Some(reads) = &self.inner.reads else {
            return;
        };
        let done = reads
            .run(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    .ctx("checkpointing the log")
            })
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "a checkpoint between purge steps failed");
        }
    }

    /// Fails unless the store keeps an event log.
    fn log_on(&self) -> Result<()> {
        match self.inner.events {
            Some(_) => Ok(()),
            None => Err(Error::new(
                ErrorKind::Config,
                "this sqlite store keeps no event log (SqliteStoreBuilder::event_log, ?events=N)",
            )),
        }
    }

    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.inner.writer.run(work).await
    }
}

/// Runs blocking setup work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::new(ErrorKind::Backend, "opening the sqlite store failed").with_source(e)
    })?
}

/// Adds the file name to an error from opening it.
fn at_path(e: Error, path: &Path) -> Error {
    let message = format!("{} ({})", e.message(), path.display());
    let kind = e.kind();
    let source: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    Error::new(kind, message).with_source(BoxedSource(source))
}

/// A boxed error usable as a `with_source` argument.
#[derive(Debug)]
struct BoxedSource(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for BoxedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapped store error repeats the message; show only its cause.
        match self.0.source() {
            Some(cause) => fmt::Display::fmt(cause, f),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for BoxedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn enable_wal(conn: &Connection) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .ctx("switching to WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        // E.g. a file system without shared memory: still correct, only slower.
        tracing::warn!(journal_mode = %mode, "the session database could not use WAL");
    }
    Ok(())
}

async fn purge_periodically(store: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = SqliteStore { inner };
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
    }
}

/// Inserts a record, or replaces a row only if it has expired: one statement, so two creates
/// of one key cannot both win.
fn insert(conn: &Connection, key: &SessionKey, data: &str, meta: &Meta) -> Result<Created> {
    let now = Timestamp::now();
    let changed = conn
                .prepare_cached(
                    "INSERT INTO sessions (key, user, created_at, last_seen, expires_at, user_agent, remember, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (key) DO UPDATE SET
                         user = excluded.user, created_at = excluded.created_at,
                         last_seen = excluded.last_seen, expires_at = excluded.expires_at,
                         user_agent = excluded.user_agent, remember = excluded.remember,
                         data = excluded.data
                     WHERE sessions.expires_at <= ?9",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        key_param(key),
                        meta.user,
                        meta.created_at.as_millis(),
                        meta.last_seen.as_millis(),
                        meta.expires_at.as_millis(),
                        meta.user_agent,
                        meta.remember,
                        data,
                        now.as_millis(),
                    ])
                })
                .ctx("creating a session")?;
    Ok(if changed == 1 {
        Created::Done
    } else {
        Created::Collision
    })
}

/// `create_limited` inside the writer's transaction (every write of the file goes through
/// it, and `BEGIN IMMEDIATE` holds the file's write lock, so no other write, of this process
/// or another, comes between the count and the insert), under a savepoint so a failure
/// leaves nothing half done.
fn insert_limited(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    meta: &Meta,
    limit: &Limit,
) -> Result<Admitted> {
    conn.execute_batch("SAVEPOINT limited")
        .ctx("starting a limited create")?;
    let result = admit(conn, key, data, meta, limit);
    let end = match result {
        Ok(_) => "RELEASE limited",
        Err(_) => "ROLLBACK TO limited; RELEASE limited",
    };
    conn.execute_batch(end).ctx("ending a limited create")?;
    result
}

fn admit(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    meta: &Meta,
    limit: &Limit,
) -> Result<Admitted> {
    let now = Timestamp::now();
    let live = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE key = ?1 AND expires_at > ?2")
        .and_then(|mut stmt| stmt.exists(params![key_param(key), now.as_millis()]))
        .ctx("checking a key")?;
    if live {
        return Ok(Admitted::Collision);
    }
    let rows = conn
        .prepare_cached(
            "SELECT key, last_seen, created_at FROM sessions WHERE user = ?1 AND expires_at > ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![meta.user, now.as_millis()], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx("counting a user's sessions")?;
    let sessions = rows
        .into_iter()
        .filter_map(|(k, seen, created)| {
            let k = SessionKey::from_bytes(k.try_into().ok()?);
            Some((k, Timestamp(seen), Timestamp(created)))
        })
        .collect();
    let Some(ended) = admission(limit, sessions) else {
        return Ok(Admitted::Refused);
    };
    let tombstone = encode_data(&Record::ended_by_limit(now, now).data);
    for k in &ended {
        // The tombstone keeps the ended session's expiry.
        conn.prepare_cached(
            "UPDATE sessions SET user = NULL, user_agent = NULL, remember = 0,
                 created_at = ?2, last_seen = ?2, data = ?3
             WHERE key = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![key_param(k), now.as_millis(), tombstone]))
        .ctx("ending a session for the limit")?;
    }
    Ok(match insert(conn, key, data, meta)? {
        Created::Done => Admitted::Done { ended },
        Created::Collision => Admitted::Collision,
    })
}

// ---------------------------------------------------------------------------------------
// The store

#[async_trait]
impl SessionStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn event_log(&self) -> Option<&dyn cloakroom_core::store::EventLog> {
        self.inner
            .events
            .map(|_| self as &dyn cloakroom_core::store::EventLog)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = *key;
        self.read_conn(move |conn| {
            let now = Timestamp::now();
            let row = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sessions WHERE key = ?1 AND expires_at > ?2"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![key_param(&key), now.as_millis()], raw_row)
                        .optional()
                })
                .ctx("loading a session")?;
            row.map(RawRow::record).transpose()
        })
        .await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let key = *key;
        let data = encode_data(&record.data);
        let meta = record.meta.clone();
        self.write(move |conn| insert(conn, &key, &data, &meta))
            .await
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        let (key, limit) = (*key, *limit);
        let data = encode_data(&record.data);
        let meta = record.meta.clone();
        self.write(move |conn| insert_limited(conn, &key, &data, &meta, &limit))
            .await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let key = *key;
        let merge = merge_patch(patch);
        let (last_seen, expires_at, remember) = (patch.last_seen, patch.expires_at, patch.remember);
        let millis = |d: Option<std::time::Duration>| {
            d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let (lifetime, idle) = (millis(patch.max_lifetime), millis(patch.max_idle));
        self.write(move |conn| {
            let now = Timestamp::now();
            // A blind write's bounds refuse a record a load would refuse (see `Patch`).
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET
                         data = CASE WHEN ?1 IS NULL THEN data ELSE json_patch(data, ?1) END,
                         last_seen = ?2,
                         expires_at = CASE WHEN ?7 IS NULL THEN ?3 ELSE min(?3, created_at + ?7) END,
                         remember = coalesce(?4, remember)
                     WHERE key = ?5 AND expires_at > ?6
                       AND (?7 IS NULL OR created_at + ?7 > ?2)
                       AND (?8 IS NULL OR last_seen + ?8 > ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        merge,
                        last_seen.as_millis(),
                        expires_at.as_millis(),
                        remember,
                        key_param(&key),
                        now.as_millis(),
                        lifetime,
                        idle,
                    ])
                })
                .ctx("patching a session")?;
            Ok(if changed == 1 {
                Applied::Done
            } else {
                Applied::Missing
            })
        })
        .await
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let key = *key;
        self.write(move |conn| {
            let now = Timestamp::now();
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET last_seen = ?1, expires_at = ?2
                     WHERE key = ?3 AND expires_at > ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        last_seen.as_millis(),
                        expires_at.as_millis(),
                        key_param(&key),
                        now.as_millis(),
                    ])
                })
                .ctx("touching a session")?;
            Ok(if changed == 1 {
                Applied::Done
            } else {
                Applied::Missing
            })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.write(move |conn| {
            let now = Timestamp::now();
            // Deletes an expired row too (it is garbage), but reports only a live one.
            let expires_at: Option<i64> = conn
                .prepare_cached("DELETE FROM sessions WHERE key = ?1 RETURNING expires_at")
                .and_then(|mut stmt| {
                    stmt.query_row(params![key_param(&key)], |row| row.get(0))
                        .optional()
                })
                .ctx("deleting a session")?;
            Ok(expires_at.is_some_and(|t| t > now.as_millis()))
        })
        .await
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let user = user.to_owned();
        self.read_conn(move |conn| {
            let now = Timestamp::now();
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sessions
                     WHERE user = ?1 AND expires_at > ?2
                     ORDER BY last_seen DESC"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![user, now.as_millis()], raw_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .ctx("listing a user's sessions")?;
            rows.into_iter().map(RawRow::info).collect()
        })
        .await
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let user = user.to_owned();
        let except = except.map(|k| k.as_bytes().to_vec());
        self.write(move |conn| {
            let now = Timestamp::now();
            // `key IS NOT NULL` (no exception) is true for every row.
            let n = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE user = ?1 AND expires_at > ?2 AND key IS NOT ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![user, now.as_millis(), except]))
                .ctx("deleting a user's sessions")?;
            Ok(n as u64)
        })
        .await
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let after = parse_cursor(&cursor)?;
        let limit = limit.clamp(1, 10_000);
        self.read_conn(move |conn| {
            let now = Timestamp::now();
            // Keyset pagination on the primary key: stable under concurrent writes, and
            // each page is one index range scan.
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sessions
                     WHERE key > ?1 AND expires_at > ?2
                     ORDER BY key LIMIT ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![after, now.as_millis(), limit as i64], raw_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .ctx("scanning sessions")?;
            let next = (rows.len() == limit)
                .then(|| {
                    rows.last()
                        .map(|r| Cursor(SessionKey::from_bytes(r.key).to_handle()))
                })
                .flatten();
            let mut sessions = Vec::with_capacity(rows.len());
            for row in rows {
                let key = SessionKey::from_bytes(row.key);
                let record = row.record()?;
                // A rotation grace's forwarding record is no session.
                if !record.is_forward() && !record.is_ended() {
                    sessions.push(record.info(key));
                }
            }
            Ok(Page { sessions, next })
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        // No index on the expiry (schema v2): the table is walked in rowid order, PURGE_BATCH
        // rows per step, each step one job of the writer followed by a checkpoint aside and a
        // pause as long as the step, so requests' writes go in between and neither the step
        // nor the checkpoint it causes holds the writer for long.
        self.write(|conn| {
            conn.prepare_cached("DELETE FROM challenges WHERE expires_at <= ?1")
                .and_then(|mut stmt| stmt.execute(params![Timestamp::now().as_millis()]))
                .ctx("purging expired challenges")
        })
        .await?;
        let mut total = 0;
        let mut after = 0_i64;
        let logged = self.inner.events.is_some();
        loop {
            let started = std::time::Instant::now();
            let (n, next) = self
                .write(move |conn| {
                    let now = Timestamp::now();
                    // The last rowid of this step, or none when the rest of the table is
                    // shorter than a step.
                    let end: Option<i64> = conn
                        .prepare_cached(
                            "SELECT rowid FROM sessions WHERE rowid > ?1
                             ORDER BY rowid LIMIT 1 OFFSET ?2",
                        )
                        .and_then(|mut stmt| {
                            stmt.query_row(params![after, PURGE_BATCH as i64 - 1], |row| row.get(0))
                                .optional()
                        })
                        .ctx("purging expired sessions")?;
                    let delete = |conn: &Connection| {
                        conn.prepare_cached(
                            "DELETE FROM sessions
                             WHERE rowid > ?1 AND rowid <= ?2 AND expires_at <= ?3",
                        )
                        .and_then(|mut stmt| {
                            stmt.execute(params![after, end.unwrap_or(i64::MAX), now.as_millis()])
                        })
                        .ctx("purging expired sessions")
                    };
                    let n = match logged {
                        false => delete(conn)?,
                        // The expiry events and the delete: one unit of this transaction.
                        true => events::atomic(
                            conn,
                            |conn| {
                                events::log_purged(conn, after, end.unwrap_or(i64::MAX), now)?;
                                delete(conn)
                            },
                            |_| true,
                        )?,
                    };
                    Ok((n, end))
                })
                .await?;
            total += n as u64;
            match next {
                Some(end) => after = end,
                None => break,
            }
            let pause = started.elapsed().min(PURGE_PAUSE_MAX);
            let paused = std::time::Instant::now();
            self.checkpoint_aside().await;
            tokio::time::sleep(pause.saturating_sub(paused.elapsed())).await;
        }
        if logged {
            self.write(events::trim).await?;
        }
        Ok(total)
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let (challenge, session) = (challenge.to_owned(), *session);
        self.write(move |conn| {
            // Replaces only an expired row: one statement, so two puts cannot both win.
            let n = conn
                .prepare_cached(
                    "INSERT INTO challenges (challenge, session, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (challenge) DO UPDATE SET
                         session = excluded.session, expires_at = excluded.expires_at
                     WHERE challenges.expires_at <= ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        challenge,
                        key_param(&session),
                        expires_at.as_millis(),
                        Timestamp::now().as_millis()
                    ])
                })
                .ctx("keeping a challenge")?;
            Ok(if n == 1 {
                Created::Done
            } else {
                Created::Collision
            })
        })
        .await
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let challenge = challenge.to_owned();
        self.write(move |conn| {
            let row: Option<(Vec<u8>, i64)> = conn
                .prepare_cached(
                    "DELETE FROM challenges WHERE challenge = ?1 RETURNING session, expires_at",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![challenge], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .ctx("taking a challenge")?;
            let Some((session, expires_at)) = row else {
                return Ok(None);
            };
            let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| {
                Error::new(
                    ErrorKind::Corrupt,
                    "a challenge row holds a malformed session key",
                )
            })?;
            Ok(
                (expires_at > Timestamp::now().as_millis())
                    .then(|| SessionKey::from_bytes(session)),
            )
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.read_conn(|conn| {
            conn.prepare_cached("SELECT 1")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
                .ctx("pinging the session database")?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_settings_only() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let store = SqliteStore::open_in_memory().await.unwrap();
                let text = format!("{store:?}");
                assert!(text.contains("pool_size: 1"), "{text}");
                assert!(text.contains(":memory:"), "{text}");
            });
    }

    /// The checkpoint the purge runs between its steps copies committed pages into the
    /// database file while another connection holds the write lock, without waiting for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_aside_copies_the_log_beside_an_open_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let store = SqliteStore::builder()
            .purge_interval(None)
            .open(&path)
            .await
            .unwrap();
        let now = Timestamp::now();
        // About 100 pages of log, well under the automatic checkpoint's 1,000.
        for _ in 0..100 {
            let mut record = Record::new(now, now.plus(Duration::from_secs(600)));
            record
                .data
                .insert("blob".into(), format!("\"{}\"", "x".repeat(3000)));
            let key = cloakroom_core::SessionId::generate().key();
            store.create(&key, &record).await.unwrap();
        }
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let before = file_size();
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; DELETE FROM challenges;")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), store.checkpoint_aside())
            .await
            .expect("the checkpoint waited for the writer");
        other.execute_batch("COMMIT").unwrap();
        assert!(
            file_size() > before + 100 * 3000,
            "the log was not copied: {before} -> {} bytes",
            file_size()
        );
    }
}
