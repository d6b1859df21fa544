//! Connections to Redis for session stores built on this crate in other crates (the Tornado
//! interop store of `cloakroom-tornado`): the options of a Redis URL, where to connect (one server, or the
//! master of a Sentinel service, found again after a failover), shared and dedicated
//! connections, the bound on every command, and redis errors as store errors. It is what
//! [`RedisStore`](crate::RedisStore) runs on; the URL forms and options are in the
//! [crate docs](crate#urls).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use cloakroom_redis::connection::{Master, Options, RedisUrl, bounded};
//!
//! let url = RedisUrl::parse("redis://127.0.0.1:6379/5?timeout_ms=500")?;
//! let settings = Options::default().resolve(&url, 1)?;
//! let master = Master::new(&url, &settings, &url.to_string())?;
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
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisError, RedisFuture, Value,
};

use crate::conn::{Conn, connection_config};
use crate::reconnect::{Reconnecting, Tracking};
use crate::sentinel::Sentinel;
use crate::url::{Endpoint, StoreOptions, config};

pub use crate::conn::{bounded, map_error, worth_retrying};
pub use crate::sentinel::demoted;
pub use crate::url::{RedisUrl, Settings, redact, refuse_fragment};

/// The options a store's builder sets over those of the URL's query (`prefix`,
/// `timeout_ms`, `connections`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options(StoreOptions);

impl Options {
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

    /// These options, then `url`'s for what these leave out, then the defaults
    /// ([`DEFAULT_PREFIX`](crate::DEFAULT_PREFIX),
    /// [`DEFAULT_COMMAND_TIMEOUT`](crate::DEFAULT_COMMAND_TIMEOUT), `connections`).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) for a zero timeout or
    /// connection count.
    pub fn resolve(self, url: &RedisUrl, connections: usize) -> Result<Settings> {
        self.0.resolve(&url.options, connections)
    }
}

/// One Redis master: a server (`redis://`, `rediss://`, `redis+unix://`), or the server the
/// sentinels of a service name as master at each connection (`redis+sentinel://`,
/// `rediss+sentinel://`), TLS settings and certificates included. Cheap to clone.
#[derive(Clone)]
pub struct Master {
    /// The server; through Sentinel, its settings (the address is the master's, found at
    /// each connection).
    server: redis::Client,
    sentinel: Option<Sentinel>,
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
    /// The master `url` names, with the command timeout of `settings`; the certificate files
    /// are read now. Errors name the URL as `shown` (a [`redact`]ed URL: the one the user
    /// gave).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) for an unreadable
    /// certificate file, or a Cluster URL (a Cluster has no single master).
    pub fn new(url: &RedisUrl, settings: &Settings, shown: &str) -> Result<Master> {
        Master::build(url, settings.command_timeout, shown)
    }

    /// [`Master::new`] with the command timeout `timeout`.
    pub(crate) fn build(url: &RedisUrl, timeout: Duration, shown: &str) -> Result<Master> {
        let certificates = url.certificates()?;
        let client = |addr: ConnectionAddr, settings: &RedisConnectionInfo| {
            let info = addr
                .into_connection_info()?
                .set_redis_settings(settings.clone());
            crate::url::client(info, certificates.as_ref())
        };
        let bad = |e| config(format!("bad TLS certificate or key for {shown}")).with_source(e);
        let (server, sentinel) = match &url.endpoint {
            Endpoint::Server(addr) => (client(addr.clone(), &url.server).map_err(bad)?, None),
            Endpoint::Sentinel {
                sentinels,
                service,
                auth,
            } => {
                let auth = auth.clone().set_protocol(url.server.protocol());
                let sentinels = sentinels
                    .iter()
                    .map(|(host, port)| client(url.addr(host.clone(), *port), &auth).map_err(bad))
                    .collect::<Result<Vec<_>>>()?;
                let sentinel = Sentinel::new(sentinels, service.clone(), timeout);
                // The address is a placeholder: each connection goes to the master named then.
                let placeholder = url.addr("sentinel-named-master".to_owned(), 0);
                let server = client(placeholder, &url.server).map_err(bad)?;
                (server, Some(sentinel))
            }
            Endpoint::Cluster(_) => {
                return Err(config(format!(
                    "one server or a Sentinel service is needed, not a Redis Cluster: {shown}"
                )));
            }
        };
        Ok(Master {
            server,
            sentinel,
            shown: shown.to_owned(),
        })
    }

    /// Whether this is a Sentinel service's master, found again after a failover (a
    /// connection whose server turned into a replica must then be replaced: see
    /// [`demoted`]).
    pub fn follows_master(&self) -> bool {
        self.sentinel.is_some()
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
        self.open(timeout, None).await.map(SharedConnection)
    }

    /// [`Master::shared`] serving the near-cache `track` names, if any.
    pub(crate) async fn open(&self, timeout: Duration, track: Option<Tracking>) -> Result<Conn> {
        let conn = Reconnecting::tracked(self.clone(), connection_config(timeout), track);
        let connect = async {
            conn.connect()
                .await
                .map(|()| Conn::Standalone(conn.clone()))
        };
        Conn::checked(connect, timeout, &self.shown).await
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
        self.connect(&connection_config(timeout)).await
    }

    /// One connection made with `config` (through Sentinel: to the master named now).
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> std::result::Result<MultiplexedConnection, RedisError> {
        match &self.sentinel {
            Some(sentinel) => sentinel.connect(&self.server, config).await,
            None => {
                let server = &self.server;
                server
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
        }
    }

    /// The server's settings: database, protocol.
    pub(crate) fn settings(&self) -> &RedisConnectionInfo {
        self.server.get_connection_info().redis_settings()
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
