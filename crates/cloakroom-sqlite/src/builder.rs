//! Opening a [`SqliteStore`]: the builder, the file's setup (WAL, the migration, the writer
//! thread and the reading pool) and the background purge task.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result, SessionStore};
use rusqlite::Connection;

use crate::error::SqlContext;
use crate::pool::{self, Pool, Target};
use crate::schema;
use crate::writer::Writer;
use crate::{DEFAULT_BUSY_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_PURGE_INTERVAL, Inner, SqliteStore};

/// Options for opening a [`SqliteStore`]; from [`SqliteStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    pool_size: usize,
    busy_timeout: Duration,
    purge_interval: Option<Duration>,
    events: Option<u64>,
    inline_loads: bool,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        SqliteStoreBuilder {
            pool_size: DEFAULT_POOL_SIZE,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            events: None,
            inline_loads: true,
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

    /// Whether a session's load (the one read every request makes) runs on the requesting
    /// task's thread when a pooled connection is idle (default on), instead of on one of
    /// tokio's blocking threads. It is one indexed row of a WAL database, tens of
    /// microseconds from the page cache, where the hand-off to a blocking thread and back
    /// costs more than the read (with it, a `read` request costs half the server CPU it did
    /// without; see BENCHMARKS.md). It never waits on the async thread: with every connection busy, or
    /// the database locked (another process holding it exclusively), the load goes to a
    /// blocking thread and waits there. Turn it off when the database file is on
    /// storage that can stall a read (a network file system): a cold page would then hold
    /// the async thread for as long as the storage takes. Other reads (listing a user's
    /// sessions, the event log, statistics) always run on blocking threads.
    pub fn inline_loads(mut self, on: bool) -> Self {
        self.inline_loads = on;
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

    pub(crate) fn finish(self, target: Target, conn: Connection) -> Result<SqliteStore> {
        let (reads, pool_size) = match &target {
            Target::File(path) => {
                let pool = Pool::new(
                    path.clone(),
                    self.pool_size,
                    self.busy_timeout,
                    self.inline_loads,
                );
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

pub(crate) fn enable_wal(conn: &Connection) -> Result<()> {
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
