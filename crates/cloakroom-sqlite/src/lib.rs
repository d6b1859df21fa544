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
//!   JSON string, so [`apply`](cloakroom_core::store::SessionStore::apply) is a single
//!   `UPDATE ... SET data = json_patch(data, ?) ... WHERE key = ? AND expires_at > now`:
//!   field-level, atomic, and unable to resurrect a session that is gone.
//! - Single-use challenges (DBSC) live in a `challenges` table, taken with one
//!   `DELETE ... RETURNING`.
//! - Every query ignores expired rows; a background task deletes them every few minutes
//!   ([`SqliteStoreBuilder::purge_interval`]), walking the table in rowid steps.
//! - Writes go to one writer thread, which runs all the writes queued at the moment in one
//!   transaction (group commit) and answers each only after the commit: a write reported
//!   done is committed; if the commit fails, every write of it gets the error. Each write is
//!   one statement, so one that fails (or finds its session gone) leaves the others alone.
//! - Reads run on a small pool of connections on tokio's blocking threads (an in-memory
//!   database has one connection, the writer's, for both), except a session's load: it
//!   runs on the requesting task's thread when a pooled connection is idle, never waiting
//!   for a lock there ([`SqliteStoreBuilder::inline_loads`]).
//! - WAL journal, `synchronous = NORMAL` (the last commits may be lost on power loss, never
//!   consistency), prepared statements cached per connection.
//! - Optionally a durable event log ([`SqliteStoreBuilder::event_log`], `?events=N`): an
//!   `events` table written in the same transaction as each session creation, rotation and
//!   end (a logged write is one job of the writer: its statements and its event rows under a
//!   savepoint), in commit order, the purge logging expiry and trimming it to the newest N
//!   ([`EventLog`](cloakroom_core::store::EventLog)). Without it nothing of this runs.
//!
//! Several processes (the app and the `cloakroom` admin CLI) may use one file at once.

mod builder;
mod error;
mod events;
mod pool;
mod rows;
mod schema;
mod store;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::Connection;

use crate::error::SqlContext;
use crate::pool::{Pool, Target};
use crate::writer::Writer;

pub use crate::builder::SqliteStoreBuilder;
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
    /// and still bounds the log. A failure only costs that benefit: logged, not
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

#[cfg(test)]
mod tests {
    use cloakroom_core::session::Timestamp;
    use cloakroom_core::store::{Record, SessionStore};

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
