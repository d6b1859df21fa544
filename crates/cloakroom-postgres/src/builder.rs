//! [`PostgresStoreBuilder`]: the options of opening a store, and the opening itself (the pool,
//! the migration, the background purge).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::schema::Names;
use crate::sql::Sql;
use crate::{
    DEFAULT_POOL_SIZE, DEFAULT_PURGE_INTERVAL, DEFAULT_TABLE, DEFAULT_TIMEOUT, Inner,
    PostgresStore, options, purge_periodically, tls,
};

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
    /// [`SessionStore::purge_expired`](cloakroom_core::store::SessionStore::purge_expired)
    /// yourself, or `cloakroom gc`). Expired rows are invisible at once either way. The task
    /// runs on the tokio runtime that opened the store and stops when the store is dropped.
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
