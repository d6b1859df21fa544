//! The options of a [`RedisStore`] and opening it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};

use crate::conn::{Conn, bounded};
use crate::connection::Master;
use crate::near::NearCache;
use crate::scan::glob_escape;
use crate::store::{Inner, RedisStore};
use crate::url::{Endpoint, RedisUrl, Settings, StoreOptions, redact};

/// Options for [`RedisStore`]; made by [`RedisStore::builder`].
#[must_use = "call .build().await to open the store"]
#[derive(Clone)]
pub struct RedisStoreBuilder {
    pub(crate) url: String,
    pub(crate) options: StoreOptions,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact(&self.url))
            .field("options", &self.options)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes (default [`DEFAULT_PREFIX`](crate::DEFAULT_PREFIX), `cloakroom:`;
    /// URL option `prefix`). Several applications can share a Redis database with different
    /// prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.prefix = Some(prefix.into());
        self
    }

    /// The bound on every command, including connecting (default
    /// [`DEFAULT_COMMAND_TIMEOUT`](crate::DEFAULT_COMMAND_TIMEOUT), 2 s; URL option `timeout_ms`). Must not be zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// How many multiplexed connections to open, used round-robin (default 1, at least 1;
    /// URL option `connections` or `max_connections`). One is usually best: every
    /// task's requests are pipelined over it. More can help when large replies would
    /// otherwise hold up small ones. (On a Cluster each is one connection per node.)
    pub fn connections(mut self, n: usize) -> Self {
        self.options.connections = Some(n);
        self
    }

    /// Keeps up to `records` session records in process memory, kept correct by Redis's
    /// invalidation messages (default 0: no near-cache; URL option `cache=N`). A cached
    /// read costs no Redis command. Needs RESP3 and `CLIENT TRACKING` (Redis 6 or later);
    /// not for a Cluster. See the [crate docs](crate#near-cache) for the guarantees.
    pub fn near_cache(mut self, records: usize) -> Self {
        self.options.cache = Some(records);
        self
    }

    /// The near-cache's staleness bound (default [`DEFAULT_CACHE_MAX_STALE`](crate::DEFAULT_CACHE_MAX_STALE), 1 s; URL option
    /// `cache_max_stale_ms`): a cached record is served only while its connection had a
    /// reply from Redis within this, so a change another instance made is never served
    /// longer than this after Redis committed it, even if invalidations are held up.
    /// Must not be zero.
    pub fn near_cache_max_stale(mut self, bound: Duration) -> Self {
        self.options.cache_max_stale = Some(bound);
        self
    }

    /// Keeps a durable event log of about the newest `max_events` lifecycle events (default:
    /// none; URL option `events=N`): a Redis Stream at `<prefix>events`, appended to by
    /// `XADD .. MAXLEN ~ max_events` in the same script as each session created, rotated or
    /// ended through the engine, and read through
    /// [`SessionStore::event_log`](cloakroom_core::store::SessionStore::event_log).
    /// `MAXLEN ~` trims in whole stream nodes, so the stream may hold somewhat more than
    /// `max_events`; a reader behind what was trimmed is told so (a gap). The expiry of a
    /// logged-in session is logged once when it is noticed (a listing or revocation of the
    /// user's sessions, a login under the limit, or the expiry sweep this store then runs
    /// every 5 minutes), never an anonymous session's; see the
    /// [crate docs](crate#event-log). Needs Redis 7.0 or later; on a Cluster, one stream per
    /// shard, each capped at `max_events`. The cap is recorded under
    /// `<prefix>events:cap`, and a store later opened on that prefix without this option
    /// keeps the log with that cap, so every process's changes are logged. `0` (the
    /// default) asks for none.
    pub fn event_log(mut self, max_events: usize) -> Self {
        self.options.events = Some(max_events);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, a Redis user whose ACL does not
    /// allow the store's commands on keys under its prefix, or an event log on a server before
    /// Redis 7; [`ErrorKind::Unavailable`] when
    /// Redis cannot be reached within the command timeout.
    pub async fn build(self) -> Result<RedisStore> {
        let mut url = RedisUrl::parse(&self.url)?;
        let Settings {
            prefix,
            command_timeout: timeout,
            connections,
            wait,
            cache,
            cache_max_stale,
            events,
        } = self.options.resolve(&url.options, 1)?;
        let cluster = matches!(url.endpoint, Endpoint::Cluster(_));
        if cache > 0 {
            url.resp3_for_cache()?;
        }
        if cluster && cache > 0 {
            let message = "cache=N (the near-cache) needs one master (redis://, rediss://, \
                           redis+sentinel://), not a Cluster";
            return Err(Error::new(ErrorKind::Config, message));
        }
        if cluster && wait > 0 {
            let message = "wait=N needs one master (redis://, redis+sentinel://), not a Cluster";
            return Err(Error::new(ErrorKind::Config, message));
        }
        let log = match events {
            0 => None,
            cap => {
                // A Cluster's followers poll: no master to block on.
                let master = match cluster {
                    false => Some(Master::build(&url, timeout, &url.shown)?),
                    true => None,
                };
                Some(crate::events::Log::new(&prefix, cap, master))
            }
        };
        let near = (cache > 0)
            .then(|| Arc::new(NearCache::new(cache, connections, &prefix, cache_max_stale)));
        let conns = Conn::open_all(&url, timeout, connections, near.as_ref()).await?;
        let scan_pattern = format!("{}s:*", glob_escape(&prefix));
        let opened_url = url.clone();
        let mut store = RedisStore {
            inner: Arc::new(Inner {
                conns: conns.into_boxed_slice(),
                next: AtomicUsize::new(0),
                prefix,
                scan_pattern,
                timeout,
                shown_url: url.shown,
                cluster,
                wait,
                near,
                restore_refused: AtomicBool::new(false),
                transactions: AtomicBool::new(false),
                log,
            }),
        };
        if events == 0 {
            store.adopt_event_log(&opened_url).await?;
        }
        let redis7 = store.check_permissions().await?;
        if store.inner.log.is_some() && !redis7 {
            return Err(crate::events::needs_redis7(&store.inner.shown_url));
        }
        if events > 0 {
            store.record_event_log_cap(events).await?;
        }
        store.inner.transactions.store(redis7, Ordering::Relaxed);
        if store.inner.log.is_some() {
            tokio::spawn(crate::events::sweep_periodically(Arc::downgrade(
                &store.inner,
            )));
        }
        if let Some(near) = &store.inner.near {
            // The dataset marker's first check, before anything is cached (a user not
            // allowed to write it is a configuration error).
            if let Some(Conn::Standalone(conn)) = store.inner.conns.first() {
                bounded(timeout, "SET of the near-cache's marker key", || {
                    crate::cached::check_dataset(near, conn)
                })
                .await?;
            }
            tokio::spawn(crate::cached::heartbeat(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }
}

impl RedisStore {
    /// Connects with the default options: `redis://host:port/db` (also `redis+unix://`) for
    /// one server, `redis+cluster://host:port,host:port` for a Cluster (any reachable nodes
    /// as seeds; credentials as `redis+cluster://user:password@host:port,...`); over TLS
    /// `rediss://` and `rediss+cluster://`.
    ///
    /// The URL may carry options as query parameters: `prefix` (percent-encoded if need be),
    /// `timeout_ms`, `connections` (or `max_connections`), the TLS options `ca`, `cert`,
    /// `key` and `insecure_skip_verify`, `wait`, and `protocol` (`resp3`; RESP2 by default), e.g.
    /// `rediss://app:pw@10.0.0.5:6380/0?prefix=myapp:&ca=/etc/redis/ca.pem`. See the
    /// [crate docs](crate#urls).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL, an unknown option, an unreadable certificate
    /// file, an untrusted server certificate, refused credentials or an ACL that does not
    /// allow the store's commands on its keys;
    /// [`ErrorKind::Unavailable`] when Redis cannot be reached within
    /// [`DEFAULT_COMMAND_TIMEOUT`](crate::DEFAULT_COMMAND_TIMEOUT).
    pub async fn open(url: &str) -> Result<RedisStore> {
        Self::builder(url).build().await
    }

    /// Options for a store at `url` (see [`RedisStore::open`] for the URL forms).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            options: StoreOptions::default(),
        }
    }
}
