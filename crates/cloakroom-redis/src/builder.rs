//! The options of a [`RedisStore`] and opening it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use cloakroom_core::store::Result;

use crate::conn::{Conn, Resolved, StoreOptions, Target, redact, take_options};
use crate::scan::glob_escape;
use crate::store::{Inner, RedisStore};

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
    /// The prefix of every key the store writes (default [`DEFAULT_PREFIX`], `cloakroom:`;
    /// URL option `prefix`). Several applications can share a Redis database with different
    /// prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.prefix = Some(prefix.into());
        self
    }

    /// The bound on every command, including connecting (default
    /// [`DEFAULT_COMMAND_TIMEOUT`], 2 s; URL option `timeout_ms`). Must not be zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// How many multiplexed connections to open, used round-robin (default 1, at least 1;
    /// URL option `connections` or pycket's `max_connections`). One is usually best: every
    /// task's requests are pipelined over it. More can help when large replies would
    /// otherwise hold up small ones. (On a Cluster each is one connection per node.)
    pub fn connections(mut self, n: usize) -> Self {
        self.options.connections = Some(n);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, [`ErrorKind::Unavailable`] when Redis
    /// cannot be reached within the command timeout.
    pub async fn build(self) -> Result<RedisStore> {
        let (url, from_url) = take_options(&self.url)?;
        let Resolved {
            prefix,
            timeout,
            connections,
            tls,
            wait,
        } = self.options.resolve(from_url, 1)?;
        let target = Target::parse(&url, &tls, timeout)?;
        if wait > 0 && matches!(target, Target::Cluster(_)) {
            let message = "wait=N needs one master (redis://, redis+sentinel://), not a Cluster";
            return Err(cloakroom_core::store::Error::new(
                cloakroom_core::store::ErrorKind::Config,
                message,
            ));
        }
        let shown_url = redact(&self.url);
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(Conn::open(&target, timeout, &shown_url).await?);
        }
        let scan_pattern = format!("{}s:*", glob_escape(&prefix));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conns: conns.into_boxed_slice(),
                next: AtomicUsize::new(0),
                prefix,
                scan_pattern,
                timeout,
                shown_url,
                cluster: matches!(target, Target::Cluster(_)),
                wait,
            }),
        })
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
    /// file, an untrusted server certificate or refused credentials;
    /// [`ErrorKind::Unavailable`] when Redis cannot be reached within
    /// [`DEFAULT_COMMAND_TIMEOUT`].
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
