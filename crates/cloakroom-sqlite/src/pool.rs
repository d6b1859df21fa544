//! A small pool of SQLite connections, used on tokio's blocking threads.
//!
//! Permits (a semaphore) bound how many connections are in use; connections are opened
//! lazily up to the bound and returned to the idle list by a guard, even when the work
//! panics or the caller stops waiting. Writes additionally take one async writer lock: SQLite
//! allows one writer at a time, and queueing our own writers here avoids the busy handler's
//! sleep-and-retry between connections of the same process (other processes are still
//! waited for with `busy_timeout`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::error::SqlContext;

/// Where the connections point.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A database file.
    File(PathBuf),
    /// One private in-memory database (the pool then has one connection, kept forever).
    Memory,
}

pub(crate) struct Pool {
    target: Target,
    busy_timeout: Duration,
    size: usize,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("size", &self.size)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

/// Read or write: writes queue on the writer lock first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Pool {
    /// A pool around `first`, an already configured and migrated connection.
    pub(crate) fn new(
        target: Target,
        size: usize,
        busy_timeout: Duration,
        first: Connection,
    ) -> Self {
        let size = match target {
            Target::Memory => 1,
            Target::File(_) => size.max(1),
        };
        Pool {
            target,
            busy_timeout,
            size,
            idle: Mutex::new(vec![first]),
            permits: Arc::new(Semaphore::new(size)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Runs `work` with a connection on a blocking thread.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, access: Access, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let writer = match access {
            Access::Write => Some(Arc::clone(&self.writer).lock_owned().await),
            Access::Read => None,
        };
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "the sqlite store is closed").with_source(e)
            })?;
        let pool = Arc::clone(self);
        // The permit and the writer lock move into the blocking task: if the caller stops
        // waiting (a timeout), they are released when the work ends, not before.
        tokio::task::spawn_blocking(move || {
            let lease = Lease::take(pool, permit, writer)?;
            work(lease.connection())
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Backend, "a sqlite worker failed").with_source(e))?
    }

    fn checkout(&self) -> Result<Connection> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match conn {
            Some(conn) => Ok(conn),
            None => match &self.target {
                Target::File(path) => open_file(path, self.busy_timeout),
                // Never reached: the single in-memory connection always comes back.
                Target::Memory => Err(Error::new(
                    ErrorKind::Backend,
                    "the in-memory sqlite database lost its connection",
                )),
            },
        }
    }
}

/// A connection taken from the pool; goes back on drop.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl Lease {
    fn take(
        pool: Arc<Pool>,
        permit: OwnedSemaphorePermit,
        writer: Option<OwnedMutexGuard<()>>,
    ) -> Result<Self> {
        let conn = pool.checkout()?;
        Ok(Lease {
            conn: Some(conn),
            pool,
            _permit: permit,
            _writer: writer,
        })
    }

    fn connection(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A statement interrupted by a panic is reset when its handle drops, and our
            // transactions roll back on drop: the connection is clean to reuse.
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

/// Opens and configures a connection to a database file (created if missing).
pub(crate) fn open_file(path: &std::path::Path, busy_timeout: Duration) -> Result<Connection> {
    // No SQLITE_OPEN_URI: the path is a file name, taken literally.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).ctx("opening the session database")?;
    configure(&conn, busy_timeout)?;
    Ok(conn)
}

/// Opens and configures a private in-memory database.
pub(crate) fn open_memory(busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open_in_memory().ctx("opening an in-memory session database")?;
    configure(&conn, busy_timeout)?;
    Ok(conn)
}

/// Per-connection settings.
fn configure(conn: &Connection, busy_timeout: Duration) -> Result<()> {
    conn.busy_timeout(busy_timeout)
        .ctx("setting the busy timeout")?;
    // With WAL, NORMAL loses at most the last transactions on power loss, never consistency:
    // the usual trade for session data.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .ctx("setting synchronous = NORMAL")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}
