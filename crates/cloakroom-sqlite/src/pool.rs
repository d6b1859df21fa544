//! A small pool of SQLite connections for reads, used on tokio's blocking threads (writes go
//! to the writer thread, `writer.rs`).
//!
//! Permits (a semaphore) bound how many connections are in use; connections are opened
//! lazily up to the bound and returned to the idle list by a guard, even when the work
//! panics or the caller stops waiting.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::SqlContext;

/// Where the connections point.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A database file.
    File(PathBuf),
    /// One private in-memory database, on the writer thread's connection (no pool).
    Memory,
}

pub(crate) struct Pool {
    target: Target,
    busy_timeout: Duration,
    size: usize,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
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

impl Pool {
    /// A pool of up to `size` connections to the file at `path`, opened when needed.
    pub(crate) fn new(path: PathBuf, size: usize, busy_timeout: Duration) -> Self {
        let size = size.max(1);
        Pool {
            target: Target::File(path),
            busy_timeout,
            size,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// Runs `work` with a connection on a blocking thread.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "the sqlite store is closed").with_source(e)
            })?;
        let pool = Arc::clone(self);
        // The permit moves into the blocking task: if the caller stops waiting (a timeout),
        // it is released when the work ends, not before.
        tokio::task::spawn_blocking(move || {
            let lease = Lease::take(pool, permit)?;
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
                // Never reached: an in-memory store has no pool.
                Target::Memory => Err(Error::new(
                    ErrorKind::Backend,
                    "the in-memory sqlite database has no read pool",
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
}

impl Lease {
    fn take(pool: Arc<Pool>, permit: OwnedSemaphorePermit) -> Result<Self> {
        let conn = pool.checkout()?;
        Ok(Lease {
            conn: Some(conn),
            pool,
            _permit: permit,
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
