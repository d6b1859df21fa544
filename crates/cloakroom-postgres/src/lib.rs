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

mod error;
mod options;
mod rows;
mod schema;
mod tls;

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, Limit, Page, Patch, Record, Result,
    SessionInfo, SessionStore, kind_label, previous_handle,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::time::Instant;

use crate::error::{breaks_connection, driver};
use crate::rows::{COLUMNS, encode_data, encode_patch};
use crate::schema::Names;

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

/// The statements of one store (its table name spliced in).
struct Sql {
    load: String,
    create: String,
    apply: String,
    touch: String,
    delete: String,
    sessions_of: String,
    delete_user: String,
    scan: String,
    purge: String,
    put_challenge: String,
    take_challenge: String,
    purge_challenges: String,
    limit_lock: String,
    limit_live: String,
    limit_end: String,
    /// The event log's statements ([`events`]).
    log: events::LogSql,
}

impl Sql {
    /// `t`: the sessions table; `c`: the challenges table; `e`, `st`: the event log and its
    /// state.
    fn new(t: &str, c: &str, e: &str, st: &str) -> Self {
        Sql {
            log: events::LogSql::new(t, e, st),
            load: format!("SELECT {COLUMNS} FROM {t} WHERE key = $1 AND expires_at > $2"),
            // Inserts, or replaces a row only if it has expired: one statement, so two
            // creates of one key cannot both win.
            create: format!(
                r#"INSERT INTO {t} AS s (key, "user", created_at, last_seen, expires_at, user_agent, remember, data)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (key) DO UPDATE SET
                       "user" = excluded."user", created_at = excluded.created_at,
                       last_seen = excluded.last_seen, expires_at = excluded.expires_at,
                       user_agent = excluded.user_agent, remember = excluded.remember,
                       data = excluded.data
                   WHERE s.expires_at <= $9"#
            ),
            apply: format!(
                "UPDATE {t} SET
                     data = (data - $1::text[]) || $2::jsonb,
                     last_seen = $3,
                     expires_at = CASE WHEN $4::bigint IS NULL THEN $5::bigint
                                       ELSE least($5::bigint, created_at + $4::bigint) END,
                     remember = coalesce($6, remember)
                 WHERE key = $7 AND expires_at > $8
                   AND ($4::bigint IS NULL OR created_at + $4::bigint > $3)
                   AND ($9::bigint IS NULL OR last_seen + $9::bigint > $3)"
            ),
            touch: format!(
                "UPDATE {t} SET last_seen = $1, expires_at = $2 WHERE key = $3 AND expires_at > $4"
            ),
            // Deletes an expired row too (it is garbage), but reports only a live one.
            delete: format!("DELETE FROM {t} WHERE key = $1 RETURNING expires_at"),
            sessions_of: format!(
                r#"SELECT {COLUMNS} FROM {t} WHERE "user" = $1 AND expires_at > $2
                   ORDER BY last_seen DESC"#
            ),
            delete_user: format!(
                r#"DELETE FROM {t} WHERE "user" = $1 AND expires_at > $2
                   AND key IS DISTINCT FROM $3::bytea"#
            ),
            // Keyset pagination on the primary key: each page is one index range scan.
            scan: format!(
                "SELECT {COLUMNS} FROM {t} WHERE key > $1 AND expires_at > $2
                 ORDER BY key LIMIT $3"
            ),
            // The outer expiry check keeps a row re-created between the two scans.
            purge: format!(
                "DELETE FROM {t} WHERE key IN
                     (SELECT key FROM {t} WHERE expires_at <= $1 LIMIT $2)
                 AND expires_at <= $1"
            ),
            // Replaces only an expired row: one statement, so two puts cannot both win.
            put_challenge: format!(
                "INSERT INTO {c} AS x (challenge, session, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (challenge) DO UPDATE SET
                     session = excluded.session, expires_at = excluded.expires_at
                 WHERE x.expires_at <= $4"
            ),
            take_challenge: format!(
                "DELETE FROM {c} WHERE challenge = $1 RETURNING session, expires_at"
            ),
            purge_challenges: format!("DELETE FROM {c} WHERE expires_at <= $1"),
            // The admission of one user's logins, one at a time (per table and user; a hash
            // collision only makes two users wait for each other).
            limit_lock: format!("SELECT pg_advisory_xact_lock(hashtextextended('{t}:' || $1, 0))"),
            // The user's live sessions, and (`mine`) a live row under the new key.
            limit_live: format!(
                r#"SELECT key, last_seen, created_at, key = $3 AS mine FROM {t}
                   WHERE ("user" = $1 OR key = $3) AND expires_at > $2"#
            ),
            // Ended sessions become tombstones that keep their expiry.
            limit_end: format!(
                r#"UPDATE {t} SET "user" = NULL, user_agent = NULL, remember = false,
                       created_at = $2, last_seen = $2, data = $3
                   WHERE key = ANY($1)"#
            ),
        }
    }
}

/// Options for opening a [`PostgresStore`]; from [`PostgresStore::builder`]. Connection
/// settings come from the URL.
#[derive(Clone, Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    purge_interval: Option<Duration>,
    events: Option<u64>,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        PostgresStoreBuilder {
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            events: None,
        }
    }
}

impl PostgresStoreBuilder {
    /// How often a background task deletes expired rows (default every
    /// [`DEFAULT_PURGE_INTERVAL`], 5 min); `None` turns it off (run
    /// [`SessionStore::purge_expired`] yourself, or `cloakroom gc`). Expired rows are
    /// invisible at once either way. The task runs on the tokio runtime that opened the store
    /// and stops when the store is dropped.
    pub fn purge_interval(mut self, every: Option<Duration>) -> Self {
        self.purge_interval = every;
        self
    }

    /// Keeps a durable event log of the newest `max_events` events (at least 1) in
    /// `<table>_events`: every session created, rotated or ended through the engine is
    /// logged in the same statement or transaction as the change, in commit order, and the
    /// purge logs each session it deletes as expired
    /// ([`EventLog`](cloakroom_core::store::EventLog)). Off by default; the URL option
    /// `events=N` does the same (this setting wins). A table that has a log keeps it whoever
    /// opens it (with the retention last set), so another process's writes (the admin CLI)
    /// are logged too.
    pub fn event_log(mut self, max_events: u64) -> Self {
        self.events = Some(max_events.max(1));
        self
    }

    /// Connects to the database a `postgres://` or `postgresql://` URL names and brings the
    /// session table up to date (see the [crate docs](crate) for the options).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, a table from a newer version of this
    /// crate or one it did not create; [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`]
    /// when the database cannot be reached within the timeout; [`ErrorKind::Backend`] when
    /// it refuses (authentication, permissions). Messages never quote the URL.
    pub async fn open(self, url: &str) -> Result<PostgresStore> {
        let mut options = options::parse(url)?;
        let events = self.events.or(options.events);
        let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let statement_timeout = options.statement_timeout.unwrap_or(timeout);
        // Applied by the server to every connection at start-up: no extra round trip.
        // `statement_timeout_ms=0` sends nothing (for poolers that refuse startup options).
        if !statement_timeout.is_zero() {
            let mut server_options = options.pg.get_options().unwrap_or("").to_owned();
            server_options.push_str(&format!(
                " -c statement_timeout={}",
                statement_timeout.as_millis()
            ));
            options.pg.options(server_options.trim());
        }
        if options.pg.get_connect_timeout().is_none() {
            options.pg.connect_timeout(timeout);
        }
        if options.pg.get_application_name().is_none() {
            options.pg.application_name("cloakroom");
        }
        let ssl_mode = options.ssl_mode;
        options.pg.ssl_mode(match ssl_mode {
            options::SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            options::SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tls::connector(ssl_mode, options.root_cert.as_deref())?;
        let manager = Manager::from_config(
            options.pg,
            tls,
            ManagerConfig {
                // `is_closed` on every checkout; connections that failed are dropped by us.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.unwrap_or(DEFAULT_POOL_SIZE))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot build the connection pool").with_source(e)
            })?;
        let names = Names::new(
            options.schema,
            options.table.unwrap_or_else(|| DEFAULT_TABLE.to_owned()),
        );
        let inner = Arc::new(Inner {
            pool,
            sql: Sql::new(
                &names.table,
                &names.challenges,
                &names.events,
                &names.events_state,
            ),
            names,
            timeout,
            purge_interval: self.purge_interval,
            purger: OnceLock::new(),
            events: OnceLock::new(),
        });
        let store = PostgresStore { inner };
        if let Some(keep) = store.migrate(events).await? {
            let _ = store.inner.events.set(keep);
        }
        if let (Some(every), Ok(runtime)) =
            (self.purge_interval, tokio::runtime::Handle::try_current())
        {
            let task = runtime.spawn(purge_periodically(Arc::downgrade(&store.inner), every));
            let _ = store.inner.purger.set(task.abort_handle());
        }
        Ok(store)
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

impl PostgresStore {
    /// `create_limited`, and with `event` its logged form ([`EventLog::create_logged`]): one
    /// transaction holding the user's advisory lock (`pg_advisory_xact_lock`), in two
    /// pipelined round trips: `BEGIN`, the lock, the user's live sessions; then the
    /// tombstones, the insert (with a log: one statement that also logs), `COMMIT`. Any
    /// failure rolls the whole of it back.
    async fn admit(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
        event: Option<&cloakroom_core::session::Event>,
    ) -> Result<Admitted> {
        let Some(user) = record.meta.user.as_deref() else {
            return Ok(Admitted::from(self.create(key, record).await?));
        };
        let data = encode_data(&record.data);
        let m = &record.meta;
        let now = Timestamp::now().as_millis();
        let tombstone = encode_data(&Record::ended_by_limit(Timestamp(now), Timestamp(now)).data);
        let sql = &self.inner.sql;
        let k = key.as_bytes().as_slice();
        statement!(self, "creating a session under the limit", |c| {
            let lock = c.prepare_cached(&sql.limit_lock).await?;
            let live = c.prepare_cached(&sql.limit_live).await?;
            let end = c.prepare_cached(&sql.limit_end).await?;
            let create = c.prepare_cached(&sql.create).await?;
            let logged = match event {
                None => None,
                Some(event) => Some((
                    c.prepare_cached(&sql.log.create_limited).await?,
                    event.at.as_millis(),
                    kind_label(&event.kind),
                    previous_handle(&event.kind),
                )),
            };
            let outcome = async {
                let (lock_params, live_params) = ([&user as _], [&user as _, &now as _, &k as _]);
                let (begin, locked, rows) = tokio::join!(
                    c.batch_execute("BEGIN"),
                    c.execute(&lock, &lock_params),
                    c.query(&live, &live_params),
                );
                begin?;
                locked?;
                let rows = rows?;
                if rows.iter().any(|r| r.get::<_, bool>(3)) {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(Admitted::Collision);
                }
                let Some(ended) = cloakroom_core::store::admission(limit, live_sessions(&rows))
                else {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(Admitted::Refused);
                };
                let ended_keys: Vec<&[u8]> =
                    ended.iter().map(|k| k.as_bytes().as_slice()).collect();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                    &k,
                    &m.user,
                    &m.created_at.as_millis(),
                    &m.last_seen.as_millis(),
                    &m.expires_at.as_millis(),
                    &m.user_agent,
                    &m.remember,
                    &data,
                    &now,
                ];
                let inserted = match &logged {
                    None => {
                        let end_params = [&ended_keys as _, &now as _, &tombstone as _];
                        let (tombs, inserted, commit) = tokio::join!(
                            c.execute(&end, &end_params),
                            c.execute(&create, &params),
                            c.batch_execute("COMMIT"),
                        );
                        tombs?;
                        let inserted = inserted?;
                        commit?;
                        inserted
                    }
                    // The insert, the tombstones (only if it inserted) and every event: one
                    // statement, so a collision leaves no unlogged end behind.
                    Some((stmt, at, kind, previous)) => {
                        let more: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                            [at, kind, previous, &tombstone, &ended_keys];
                        let mut logged_params = params.to_vec();
                        logged_params.extend(more);
                        let (logged, commit) = tokio::join!(
                            c.execute(stmt, &logged_params),
                            c.batch_execute("COMMIT"),
                        );
                        let logged = logged?;
                        commit?;
                        u64::from(logged > 0)
                    }
                };
                Ok(if inserted == 1 {
                    Admitted::Done { ended }
                } else {
                    // A plain create raced for this very (random) key: vanishingly rare.
                    Admitted::Collision
                })
            }
            .await;
            if outcome.is_err() {
                // Leaves no transaction open on a pooled connection (a no-op warning if the
                // COMMIT already ended it).
                let _ = c.batch_execute("ROLLBACK").await;
            }
            outcome
        })
    }
}

mod events;

/// The user's live sessions an admission counts: (key, last seen, created).
fn live_sessions(rows: &[tokio_postgres::Row]) -> Vec<(SessionKey, Timestamp, Timestamp)> {
    rows.iter()
        .filter_map(|r| {
            let key: &[u8] = r.get(0);
            let key = SessionKey::from_bytes(key.try_into().ok()?);
            Some((key, Timestamp(r.get(1)), Timestamp(r.get(2))))
        })
        .collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn applied(rows: u64) -> Applied {
    if rows == 1 {
        Applied::Done
    } else {
        Applied::Missing
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn event_log(&self) -> Option<&dyn cloakroom_core::store::EventLog> {
        (self.inner.events.get()).map(|_| self as &dyn cloakroom_core::store::EventLog)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "loading a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.load).await?;
            c.query_opt(&stmt, &[&key.as_bytes().as_slice(), &now])
                .await
        })?;
        row.map(|r| rows::record(&r).map(|(_, record)| record))
            .transpose()
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        Ok(match self.insert(key, record, None).await? {
            true => Created::Done,
            false => Created::Collision,
        })
    }

    /// One transaction holding the user's advisory lock (`pg_advisory_xact_lock`), in two
    /// pipelined round trips: `BEGIN`, the lock, the user's live sessions; then the
    /// tombstones, the insert, `COMMIT`. Any failure rolls the whole of it back.
    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        self.admit(key, record, limit, None).await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let (set, removed) = encode_patch(patch);
        let (lifetime, idle) = (patch.max_lifetime.map(millis), patch.max_idle.map(millis));
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "patching a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.apply).await?;
            c.execute(
                &stmt,
                &[
                    &removed,
                    &set,
                    &patch.last_seen.as_millis(),
                    &lifetime,
                    &patch.expires_at.as_millis(),
                    &patch.remember,
                    &key.as_bytes().as_slice(),
                    &now,
                    &idle,
                ],
            )
            .await
        })?;
        Ok(applied(n))
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "touching a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.touch).await?;
            c.execute(
                &stmt,
                &[
                    &last_seen.as_millis(),
                    &expires_at.as_millis(),
                    &key.as_bytes().as_slice(),
                    &now,
                ],
            )
            .await
        })?;
        Ok(applied(n))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "deleting a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.delete).await?;
            c.query_opt(&stmt, &[&key.as_bytes().as_slice()]).await
        })?;
        match row {
            None => Ok(false),
            Some(row) => {
                let expires_at: i64 = row.try_get(0).map_err(|e| {
                    Error::new(ErrorKind::Corrupt, "a session row could not be decoded")
                        .with_source(e)
                })?;
                Ok(expires_at > now)
            }
        }
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let now = Timestamp::now().as_millis();
        let rows = statement!(self, "listing a user's sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.sessions_of).await?;
            c.query(&stmt, &[&user, &now]).await
        })?;
        rows.iter().map(rows::info).collect()
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        let except = except.map(|k| k.as_bytes().as_slice());
        statement!(self, "deleting a user's sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.delete_user).await?;
            c.execute(&stmt, &[&user, &now, &except]).await
        })
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let after: Vec<u8> = if cursor.0.is_empty() {
            Vec::new() // sorts before every key
        } else {
            SessionKey::from_handle(&cursor.0)
                .map(|k| k.as_bytes().to_vec())
                .ok_or_else(|| Error::new(ErrorKind::Config, "invalid scan cursor"))?
        };
        let limit = limit.clamp(1, 10_000);
        let now = Timestamp::now().as_millis();
        let rows = statement!(self, "scanning sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.scan).await?;
            c.query(&stmt, &[&after, &now, &(limit as i64)]).await
        })?;
        let records = rows.iter().map(rows::record).collect::<Result<Vec<_>>>()?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|(key, _)| Cursor(key.to_handle())))
            .flatten();
        // A rotation grace's forwarding record is no session.
        let sessions = (records.into_iter())
            .filter(|(_, record)| !record.is_forward() && !record.is_ended())
            .map(|(key, record)| record.info(key))
            .collect();
        Ok(Page { sessions, next })
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        statement!(self, "purging expired challenges", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.purge_challenges).await?;
            c.execute(&stmt, &[&now]).await
        })?;
        let mut total = 0;
        let logged = self.inner.events.get().is_some();
        loop {
            // One batch per statement, so no statement holds many row locks for long.
            let now = Timestamp::now().as_millis();
            let n = match logged {
                false => statement!(self, "purging expired sessions", |c| {
                    let stmt = c.prepare_cached(&self.inner.sql.purge).await?;
                    c.execute(&stmt, &[&now, &PURGE_BATCH]).await
                })?,
                // The same delete, its expiry events in the same statement.
                true => self.purge_logged(now, PURGE_BATCH).await?,
            };
            total += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
        if logged {
            self.trim_log().await?;
        }
        Ok(total)
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "keeping a challenge", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.put_challenge).await?;
            let key = session.as_bytes().as_slice();
            c.execute(&stmt, &[&challenge, &key, &expires_at.as_millis(), &now])
                .await
        })?;
        Ok(if n == 1 {
            Created::Done
        } else {
            Created::Collision
        })
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "taking a challenge", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.take_challenge).await?;
            c.query_opt(&stmt, &[&challenge]).await
        })?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = || Error::new(ErrorKind::Corrupt, "a challenge row could not be decoded");
        let session: Vec<u8> = row.try_get(0).map_err(|e| corrupt().with_source(e))?;
        let expires_at: i64 = row.try_get(1).map_err(|e| corrupt().with_source(e))?;
        let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| corrupt())?;
        Ok((expires_at > now).then(|| SessionKey::from_bytes(session)))
    }

    async fn ping(&self) -> Result<()> {
        statement!(self, "pinging the session database", |c| {
            c.simple_query("SELECT 1").await
        })
        .map(|_| ())
    }
}

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
