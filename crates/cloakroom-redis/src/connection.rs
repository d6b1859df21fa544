//! Connections to Redis for session stores built on this crate in other crates (the Tornado
//! interop store of `cloakroom-tornado`): the options of a Redis URL, where to connect (one server, or the
//! master of a Sentinel service, found again after a failover), shared and dedicated
//! connections, the bound on every command, and redis errors as store errors. It is what
//! [`RedisStore`](crate::RedisStore) runs on; the URL forms and options are in the
//! [crate docs](crate#urls).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use cloakroom_redis::connection::{Master, Options, bounded, redact};
//!
//! let url = "redis://127.0.0.1:6379/5?timeout_ms=500";
//! let (address, from_url) = Options::from_url(url)?;
//! let settings = Options::default().resolve(from_url, 1)?;
//! let master = Master::new(&address, &settings, &redact(url))?;
//! let conn = master.shared(settings.command_timeout).await?;
//! let pong: String = bounded(settings.command_timeout, "ping", || {
//!     let mut conn = conn.clone();
//!     async move { redis::cmd("PING").query_async(&mut conn).await }
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use cloakroom_core::store::Result;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::conn::{Conn, Target, connection_config};
use crate::options::{StoreOptions, TlsOptions, config, take_options};
use crate::sentinel::Source;

pub use crate::conn::{bounded, map_error, worth_retrying};
pub use crate::options::{redact, refuse_fragment};
pub use crate::sentinel::demoted;

/// The options a Redis URL carries in its query (`prefix`, `timeout_ms`, `connections`, the
/// TLS files, ...), or that a store's builder sets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options(StoreOptions);

impl Options {
    /// Splits the options off a Redis URL: the URL left for [`Master::new`] (with what
    /// redis-rs and the sentinel parser read: `protocol`, `db`, `user`, `pass`,
    /// `sentinel_username`, `sentinel_password`), and the options.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) for a fragment, an
    /// unknown option or a bad value.
    pub fn from_url(url: &str) -> Result<(String, Options)> {
        take_options(url).map(|(url, options)| (url, Options(options)))
    }

    /// The prefix of the keys the store writes (URL option `prefix`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.0.prefix = Some(prefix.into());
        self
    }

    /// The bound on every command, connecting included (URL option `timeout_ms`).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(timeout);
        self
    }

    /// How many connections the store opens (URL option `connections` or
    /// `max_connections`); what they are is the store's.
    pub fn connections(mut self, n: usize) -> Self {
        self.0.connections = Some(n);
        self
    }

    /// These options, then `from_url`'s for what these leave out, then the defaults
    /// ([`DEFAULT_PREFIX`](crate::DEFAULT_PREFIX),
    /// [`DEFAULT_COMMAND_TIMEOUT`](crate::DEFAULT_COMMAND_TIMEOUT), `connections`).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) for a zero timeout or
    /// connection count.
    pub fn resolve(self, from_url: Options, connections: usize) -> Result<Settings> {
        let resolved = self.0.resolve(from_url.0, connections)?;
        let native_only = if resolved.wait > 0 {
            Some("wait")
        } else if resolved.cache > 0 {
            Some("cache")
        } else {
            None
        };
        Ok(Settings {
            prefix: resolved.prefix,
            command_timeout: resolved.timeout,
            connections: resolved.connections,
            tls: resolved.tls,
            native_only,
        })
    }
}

/// [`Options`] in force.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix of the keys the store writes.
    pub prefix: String,
    /// The bound on every command, connecting included.
    pub command_timeout: Duration,
    /// How many connections the store opens.
    pub connections: usize,
    tls: TlsOptions,
    native_only: Option<&'static str>,
}

impl Settings {
    /// The first option given that only [`RedisStore`](crate::RedisStore) implements
    /// (`wait`, `cache`: the near-cache), by name; a store that does not must refuse it.
    pub fn native_only(&self) -> Option<&'static str> {
        self.native_only
    }
}

/// One Redis master: a server (`redis://`, `rediss://`, `redis+unix://`), or the server the
/// sentinels of a service name as master at each connection (`redis+sentinel://`,
/// `rediss+sentinel://`), TLS settings and certificates included. Cheap to clone.
#[derive(Clone)]
pub struct Master {
    target: Target,
    source: Source,
    shown: String,
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("url", &self.shown)
            .field("follows_master", &self.follows_master())
            .finish()
    }
}

impl Master {
    /// The master `url` names (a URL [`Options::from_url`] returned), with the TLS options of
    /// `settings`; the certificate files are read now. Errors name the URL as `shown` (a
    /// [`redact`]ed URL: the one the user gave).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) for a bad URL, an
    /// unreadable certificate file, or a Cluster URL (a Cluster has no single master).
    pub fn new(url: &str, settings: &Settings, shown: &str) -> Result<Master> {
        let target = Target::parse_shown(url, &settings.tls, settings.command_timeout, shown)?;
        let (target, source) = match target {
            Target::Standalone(client) => (Target::Standalone(client.clone()), client.into()),
            Target::Sentinel(sentinel) => (Target::Sentinel(sentinel.clone()), sentinel.into()),
            Target::Cluster(_) => {
                return Err(config(format!(
                    "one server or a Sentinel service is needed, not a Redis Cluster: {shown}"
                )));
            }
        };
        Ok(Master {
            target,
            source,
            shown: shown.to_owned(),
        })
    }

    /// Whether this is a Sentinel service's master, found again after a failover (a
    /// connection whose server turned into a replica must then be replaced: see
    /// [`demoted`]).
    pub fn follows_master(&self) -> bool {
        self.source.follows_master()
    }

    /// A multiplexed connection that replaces itself when it breaks (through Sentinel: to the
    /// master named then), shared by its clones; connected and `PING`ed now.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](cloakroom_core::store::ErrorKind::Unavailable) when the
    /// server cannot be reached within `timeout`;
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) when it refuses the
    /// credentials or the TLS certificates.
    pub async fn shared(&self, timeout: Duration) -> Result<SharedConnection> {
        Conn::open(&self.target, timeout, &self.shown)
            .await
            .map(SharedConnection)
    }

    /// A new connection of its own (for connection state such as `WATCH`), connecting
    /// bounded by `timeout`; through Sentinel, to the master the sentinels name now,
    /// checked with `ROLE`. It does not reconnect: drop it when it breaks.
    ///
    /// # Errors
    /// redis-rs's error (see [`map_error`]).
    pub async fn dedicated(
        &self,
        timeout: Duration,
    ) -> std::result::Result<MultiplexedConnection, RedisError> {
        self.source.connect(&connection_config(timeout)).await
    }
}

/// A connection made by [`Master::shared`]: commands from every clone are pipelined over one
/// multiplexed connection, which reconnects by itself.
#[derive(Clone)]
pub struct SharedConnection(Conn);

impl fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedConnection")
    }
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
