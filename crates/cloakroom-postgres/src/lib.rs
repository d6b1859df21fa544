//! A PostgreSQL session store for Cloakroom: sessions in the database the app already runs.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cloakroom_core::store::Error> {
//! use std::time::Duration;
//! use cloakroom_core::session::{SessionId, Timestamp};
//! use cloakroom_core::store::{Applied, Patch, Record, SessionStore};
//! use cloakroom_postgres::PostgresStore;
//!
//! // Creates the table (and schema) on first use; libpq URL forms and options.
//! let store =
//!     PostgresStore::open("postgres://app@db.internal/app?schema=web&sslmode=verify-full").await?;
//! let key = SessionId::generate().key();
//! let now = Timestamp::now();
//! let record = Record::new(now, now.plus(Duration::from_secs(3600)));
//! store.create(&key, &record).await?;
//! let patch = Patch::new(now, now.plus(Duration::from_secs(3600))).set("theme", "\"dark\"");
//! assert_eq!(store.apply(&key, &patch).await?, Applied::Done);
//! # Ok(())
//! # }
//! ```
//!
//! How it works:
//! - One table (default `cloakroom_sessions`, `?table=`, in `?schema=` or the search path)
//!   keyed by the 16-byte session key (`bytea`), with indexes on the user (for "your devices"
//!   and revoke-all) and on the expiry (for purging). Times are `bigint` milliseconds since
//!   the Unix epoch. `data` is `jsonb`: field name -> the field's JSON text as a JSON string,
//!   kept byte for byte. Single-use challenges (DBSC) live in `<table>_dbsc`, taken with one
//!   `DELETE ... RETURNING`.
//! - Every operation is one statement, prepared once per connection: `apply` is
//!   `UPDATE ... SET data = (data - removed) || set ... WHERE key = $k AND expires_at > now`,
//!   field-level, atomic, and unable to resurrect a session that is gone.
//! - The schema is versioned ([`SCHEMA_VERSION`], table `cloakroom_schema_version`) and
//!   migrated at start-up in one transaction holding `pg_advisory_xact_lock(`[`MIGRATION_LOCK`]`)`,
//!   so instances starting together do not race; a newer schema is refused.
//! - A deadpool pool of tokio-postgres connections; a connection that failed or timed out is
//!   dropped, so a restarted or failed-over database is used again without restarting the
//!   app. Every operation is bounded by `?timeout_ms=` (default 5 s): a database that is down
//!   answers [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`], never a hang.
//! - TLS through rustls (`sslmode=disable|prefer|require|verify-ca|verify-full`,
//!   `sslrootcert=PATH`, Mozilla roots otherwise); no OpenSSL.
//! - Expired rows are invisible at once; a background task deletes them in batches.
//! - Optionally a durable event log ([`PostgresStoreBuilder::event_log`], `?events=N`):
//!   `<table>_events`, written in the same statement as each session creation, rotation and
//!   end (data-modifying CTEs), numbered from a one-row counter so that positions follow
//!   commit order; the purge logs expiry and trims it to the newest N
//!   ([`EventLog`](cloakroom_core::store::EventLog)). Without it nothing of this runs.
//!
//! URL options (the rest is passed to tokio-postgres as libpq options): `schema`, `table`,
//! `pool_size` (default 8), `statement_timeout_ms` (default: the timeout; `0` leaves the
//! server's setting, for poolers that refuse startup options), `timeout_ms`,
//! `sslmode` (default `prefer`), `sslrootcert`, `events` (keep a durable event log of the
//! newest N events: [`PostgresStoreBuilder::event_log`]).

mod builder;
mod error;
mod options;
mod rows;
mod schema;
mod sql;
mod tls;

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result, SessionStore};
use deadpool_postgres::{Object, Pool};
use tokio::time::Instant;

use crate::error::{breaks_connection, driver};
use crate::schema::Names;
use crate::sql::Sql;

pub use crate::builder::PostgresStoreBuilder;
pub use crate::schema::{MIGRATION_LOCK, SCHEMA_VERSION, VERSION_TABLE};

/// Default table name (see `?table=`).
pub const DEFAULT_TABLE: &str = "cloakroom_sessions";
/// Default number of connections (see `?pool_size=`).
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default bound on one store operation, waiting for a connection included (`?timeout_ms=`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default purge interval (see [`PostgresStoreBuilder::purge_interval`]).
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// Expired rows deleted per statement while purging.
const PURGE_BATCH: i64 = 1000;

/// Sessions in a PostgreSQL table.
///
/// Cheap to clone (clones share the pool). Open it with [`PostgresStore::open`], or
/// [`PostgresStore::builder`] to change the purge interval.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    names: Names,
    sql: Sql,
    timeout: Duration,
    purge_interval: Option<Duration>,
    /// The background purge task, stopped when the store is dropped.
    purger: OnceLock<tokio::task::AbortHandle>,
    /// How many events the table's event log keeps, set at start-up when it has one
    /// ([`PostgresStoreBuilder::event_log`]); unset: no log, no statement about one.
    events: OnceLock<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(purger) = self.purger.get() {
            purger.abort();
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection settings hold the password: show only where the sessions are.
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.names.table)
            .field("pool_size", &self.inner.pool.status().max_size)
            .field("timeout", &self.inner.timeout)
            .field("purge_interval", &self.inner.purge_interval)
            .field("event_log", &self.inner.events.get())
            .finish()
    }
}
impl PostgresStore {
    /// Connects with the default options: see [`PostgresStoreBuilder::open`].
    ///
    /// # Errors
    /// As [`PostgresStoreBuilder::open`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::builder().open(url).await
    }

    /// Options: the purge interval.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    /// The session table, quoted and qualified as the statements name it.
    pub fn table(&self) -> &str {
        &self.inner.names.table
    }

    async fn migrate(&self, events: Option<u64>) -> Result<Option<u64>> {
        let deadline = Instant::now() + self.inner.timeout;
        let mut client = self.client("migrating the session table", deadline).await?;
        let migration = schema::migrate(&mut client, &self.inner.names, events);
        match tokio::time::timeout_at(deadline, migration).await {
            Ok(Ok(keep)) => Ok(keep),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                drop(Object::take(client));
                Err(Error::new(
                    ErrorKind::Timeout,
                    "migrating the session table did not finish within the timeout",
                ))
            }
        }
    }

    /// A pooled connection, by `deadline`.
    async fn client(&self, what: &str, deadline: Instant) -> Result<Object> {
        match tokio::time::timeout_at(deadline, self.inner.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(error::pool(what, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{what} failed: no database connection within the timeout"),
            )),
        }
    }

    /// The outcome of one statement: a connection that failed or timed out is taken out of
    /// the pool (and closed) rather than reused.
    fn finish<T>(
        what: &str,
        client: Object,
        outcome: std::result::Result<
            std::result::Result<T, tokio_postgres::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<T> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    drop(Object::take(client));
                }
                Err(driver(what, e))
            }
            Err(_) => {
                drop(Object::take(client));
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{what} did not finish within the timeout"),
                ))
            }
        }
    }
}

/// Runs `$body` (an async block's content using the connection `$c`, returning
/// `Result<_, tokio_postgres::Error>`) within the store's timeout.
macro_rules! statement {
    ($store:expr, $what:expr, |$c:ident| $body:expr) => {{
        let what: &str = $what;
        let deadline = Instant::now() + $store.inner.timeout;
        let $c = $store.client(what, deadline).await?;
        let outcome = tokio::time::timeout_at(deadline, async { $body }).await;
        PostgresStore::finish(what, $c, outcome)
    }};
}

async fn purge_periodically(store: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = PostgresStore { inner };
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
    }
}
mod events;
mod store;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_databases_fail_fast_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let started = std::time::Instant::now();
        let err = PostgresStore::open("postgres://u:hunter2@127.0.0.1:1/db?timeout_ms=2000")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
