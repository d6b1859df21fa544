//! A small pool of SQLite connections for reads (writes go to the writer thread,
//! `writer.rs`): used on tokio's blocking threads, or right on the caller's thread for the
//! short reads that cannot wait ([`Pool::run_here`]).
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
    /// Whether [`Pool::run_here`] may run work on the caller's thread.
    here: bool,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("size", &self.size)
            .field("busy_timeout", &self.busy_timeout)
            .field("here", &self.here)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of up to `size` connections to the file at `path`, opened when needed; `here`:
    /// whether [`Pool::run_here`] runs work on the caller's thread.
    pub(crate) fn new(path: PathBuf, size: usize, busy_timeout: Duration, here: bool) -> Self {
        let size = size.max(1);
        Pool {
            target: Target::File(path),
            busy_timeout,
            size,
            here,
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

    /// Runs `work` right here, on the caller's thread, with a connection that is open and
    /// idle, and answers its result; `None` when it cannot without waiting: the pool runs
    /// nothing here (`here` off), every connection is in use or none is open yet, or the
    /// database is locked (`work` then ran with no busy timeout and got `SQLITE_BUSY`). The
    /// caller then runs it with [`Pool::run`], which waits as configured.
    ///
    /// For the one read every request makes (a session by its key, one indexed row of a WAL
    /// database): tens of microseconds from the page cache, where a blocking thread's
    /// hand-off costs more than the read. WAL readers do not wait for the writer, so the
    /// lock case is another process's exclusive lock or a log recovery.
    pub(crate) fn run_here<T>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<rusqlite::Result<T>> {
        if !self.here {
            return None;
        }
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let mut lease = Lease {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        };
        let conn = lease.connection();
        conn.busy_timeout(Duration::ZERO).ok()?;
        let result = work(conn);
        if conn.busy_timeout(self.busy_timeout).is_err() {
            // Never seen (SQLite's call cannot fail); a connection that would not wait must
            // not go back to the pool.
            lease.conn = None;
        }
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                None
            }
            result => Some(result),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn busy_timeout_ms(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0))
    }

    fn locked() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None)
    }

    /// Work run on the caller's thread never waits for a lock: the connection has no busy
    /// timeout there, a locked database hands the work back (to wait on a blocking thread),
    /// and the connection goes back to the pool waiting as configured.
    #[tokio::test]
    async fn work_here_never_waits_and_leaves_the_connection_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(1500);
        let pool = Arc::new(Pool::new(dir.path().join("s.db"), 1, timeout, true));
        assert!(
            pool.run_here(|_| Ok(())).is_none(),
            "no connection open yet"
        );
        pool.run(|_| Ok(())).await.unwrap();
        assert_eq!(pool.run_here(busy_timeout_ms).unwrap().unwrap(), 0);
        assert!(pool.run_here(|_| Err::<(), _>(locked())).is_none());
        let after = pool.run(|c| busy_timeout_ms(c).ctx("reading the timeout"));
        assert_eq!(after.await.unwrap(), 1500);
        let other = pool.run_here(|_| Err::<(), _>(rusqlite::Error::InvalidQuery));
        assert!(matches!(other, Some(Err(rusqlite::Error::InvalidQuery))));

        // Every connection in use: nothing runs here.
        let (held, release) = std::sync::mpsc::channel::<()>();
        let (started, wait_started) = tokio::sync::oneshot::channel();
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                pool.run(move |_| {
                    let _ = started.send(());
                    let _ = release.recv();
                    Ok(())
                })
                .await
            }
        });
        wait_started.await.unwrap();
        assert!(
            pool.run_here(|_| Ok(())).is_none(),
            "the only connection is in use"
        );
        held.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(pool.run_here(|_| Ok(())).is_some(), "back in the pool");

        let off = Arc::new(Pool::new(dir.path().join("t.db"), 1, timeout, false));
        off.run(|_| Ok(())).await.unwrap();
        assert!(off.run_here(|_| Ok(())).is_none(), "inline loads off");
    }
}
