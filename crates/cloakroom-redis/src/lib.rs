//! Redis session store for Cloakroom, on [redis-rs](https://docs.rs/redis): a standalone
//! server (`redis://host:port/db`) or a Redis Cluster (`redis+cluster://host:port,host:port`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use std::time::Duration;
//! use cloakroom_redis::RedisStore;
//!
//! let store = RedisStore::open("redis://127.0.0.1:6379/0").await?;
//! let tuned = RedisStore::builder("redis+cluster://10.0.0.1:6379,10.0.0.2:6379")
//!     .prefix("myapp:")
//!     .command_timeout(Duration::from_millis(500))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Each session is a hash `<prefix>s:<handle>` (the handle is
//! [`SessionKey::to_handle`], a hash of the session id: the store never sees ids). Data
//! field `name` is the hash field `d:name` holding the JSON text verbatim; metadata lives in
//! `m:created`, `m:seen`, `m:exp` (milliseconds since the epoch), `m:user`, `m:ua` and
//! `m:rem`. The key expires by `PEXPIREAT` at the record's expiry, so Redis drops dead
//! sessions by itself and [`SessionStore::purge_expired`] is a no-op.
//!
//! A user's sessions are indexed in a set `<prefix>u:<user>` of handles. Entries of sessions
//! that expired are removed lazily: when the set is read ([`SessionStore::sessions_of`],
//! [`SessionStore::delete_user`]), and every 16th login once a set holds 32 entries or more,
//! so the set cannot grow without bound. [`SessionStore::delete`] removes the entry at once.
//!
//! # Round trips
//!
//! `load` is one `HGETALL`; `create`, `apply`, `touch` and `delete` are one Lua script call
//! each (`EVALSHA`; redis-rs loads a script on `NOSCRIPT`, e.g. after a Redis restart). A
//! login (`create` with a user) adds one `SADD` (as a script that also reports the set's
//! size); deleting a logged-in session adds one `SREM`. The scripts check that the record is
//! live first, so a patch or touch never brings back a session that was deleted or expired.
//! Each script touches exactly one key, so all of it works on Redis Cluster (a session and
//! its user's index are in different slots and never touched by one script).
//!
//! # Connections and failures
//!
//! By default the store keeps **one multiplexed connection** (requests from all tasks are
//! pipelined over it, which is what Redis serves fastest); [`RedisStoreBuilder::connections`]
//! opens several and spreads operations over them round-robin (pycket's `max_connections`).
//! To a standalone server that connection is the crate's own lean client: the commands that
//! all tasks issue while the runtime is busy go out in one `write`, and the replies of one
//! `read` are parsed and handed out under one lock, so under load Redis and the application
//! make far fewer system calls and wake-ups per command than with one write per command.
//! (redis-rs still encodes the commands, runs the scripts' `NOSCRIPT` fallback, and is the
//! client for Redis Cluster, where each connection is one multiplexed connection per node.)
//!
//! Every command is bounded by the command timeout (default 2 s): when Redis is down an
//! operation fails with [`ErrorKind::Unavailable`] (connection refused or broken) or
//! [`ErrorKind::Timeout`] within it, never hangs. [`RedisStore::open`] fails with
//! `Unavailable` when it cannot connect; once open, the store reconnects by itself after a
//! Redis restart (an operation whose connection was refused or broke is sent once more on the
//! new connection, within the same timeout; every operation tolerates such a repeat).
//!
//! Needs Redis 6.2 or later (tested with 7). `rediss://` (TLS) is not supported.
//!
//! # pycket's format
//!
//! [`PycketStore`] (module [`pycket`]) keeps sessions the way Tornado's pycket does (bare
//! uuid keys, pickled dicts, notifications in a second database), so a Cloakroom app and a
//! Tornado app share them: `pycket+redis://host:port/db?notifications_db=N`.

mod codec;
mod conn;
mod pipe;
pub mod pycket;
mod scripts;

use std::cmp::Reverse;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Applied, Created, Cursor, Error, ErrorKind, Page, Patch, Record, Result, SessionInfo,
    SessionStore,
};
use futures_util::{StreamExt, TryStreamExt};
use redis::{Cmd, RedisError, Script, Value};

use crate::codec::{bytes, decode_record, int, items};
use crate::conn::{Conn, Target, bounded, redact, take_options};

pub use crate::pycket::{PycketStore, PycketStoreBuilder};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cloakroom:";

/// The default bound on every command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How many requests one operation keeps in flight at once (listings, user revocation).
const FAN_OUT: usize = 128;

/// Keys a `SCAN` call examines (a hint to Redis).
const SCAN_COUNT: usize = 1000;

/// `SCAN` calls one [`SessionStore::scan`] call makes at most before it returns a short page.
const SCAN_CALLS: usize = 32;

/// A user index with at least this many entries is pruned now and then on login...
const PRUNE_FROM: i64 = 32;

/// ...every this many logins.
const PRUNE_EVERY: i64 = 16;

/// Sessions in Redis (standalone or Cluster).
///
/// Cheap to clone (clones share the connections). See the [crate docs](crate) for the
/// layout, the round trips and the failure behaviour.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Box<[Conn]>,
    next: AtomicUsize,
    prefix: String,
    scan_pattern: String,
    timeout: Duration,
    shown_url: String,
    cluster: bool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.shown_url)
            .field("cluster", &self.inner.cluster)
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.timeout)
            .field("connections", &self.inner.conns.len())
            .finish()
    }
}

/// Options for [`RedisStore`]; made by [`RedisStore::builder`].
#[must_use = "call .build().await to open the store"]
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: Option<String>,
    command_timeout: Option<Duration>,
    connections: Option<usize>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes (default [`DEFAULT_PREFIX`], `cloakroom:`;
    /// URL option `prefix`). Several applications can share a Redis database with different
    /// prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The bound on every command, including connecting (default
    /// [`DEFAULT_COMMAND_TIMEOUT`], 2 s; URL option `timeout_ms`). Must not be zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// How many multiplexed connections to open (default 1, at least 1; URL option
    /// `connections`). One is usually best: every task's requests are pipelined over it.
    /// More can help when large replies would otherwise hold up small ones.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, [`ErrorKind::Unavailable`] when Redis
    /// cannot be reached within the command timeout.
    pub async fn build(self) -> Result<RedisStore> {
        let (url, options) = take_options(&self.url)?;
        // What the builder was told wins over the URL's options, which win over defaults.
        let prefix = self
            .prefix
            .or(options.prefix)
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let timeout = self
            .command_timeout
            .or(options.timeout)
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        let connections = self.connections.or(options.connections).unwrap_or(1);
        if timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "the command timeout must not be zero",
            ));
        }
        if connections == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "at least one connection is needed",
            ));
        }
        let target = Target::parse(&url)?;
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
            }),
        })
    }
}

impl RedisStore {
    /// Connects with the default options: `redis://host:port/db` (also `redis+unix://`) for
    /// one server, `redis+cluster://host:port,host:port` for a Cluster (any reachable nodes
    /// as seeds; credentials as `redis+cluster://user:password@host:port,...`).
    ///
    /// The URL may carry the store's options as query parameters: `prefix` (percent-encoded
    /// if need be), `timeout_ms` and `connections`, e.g.
    /// `redis://127.0.0.1:6379/0?prefix=myapp:&timeout_ms=500`. Other parameters go to
    /// redis-rs (e.g. `protocol=resp3`).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL, [`ErrorKind::Unavailable`] when Redis cannot be
    /// reached within [`DEFAULT_COMMAND_TIMEOUT`].
    pub async fn open(url: &str) -> Result<RedisStore> {
        Self::builder(url).build().await
    }

    /// Options for a store at `url` (see [`RedisStore::open`] for the URL forms).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: None,
            command_timeout: None,
            connections: None,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The bound on every command.
    pub fn command_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// The Redis key of a session's hash: `<prefix>s:<handle>`.
    pub fn session_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.inner.prefix, key.to_handle())
    }

    /// The Redis key of a user's index set: `<prefix>u:<user>`.
    pub fn user_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.inner.prefix)
    }

    fn conn(&self) -> Conn {
        let conns = &self.inner.conns;
        if conns.len() == 1 {
            return conns[0].clone();
        }
        conns[self.inner.next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone()
    }

    /// One command.
    async fn query(&self, what: &'static str, cmd: Cmd) -> Result<Value> {
        let conn = self.conn();
        bounded(self.inner.timeout, what, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<Value>(&mut conn).await }
        })
        .await
    }

    /// One script call on one key.
    async fn script(
        &self,
        what: &'static str,
        script: &'static Script,
        key: &str,
        args: &[Vec<u8>],
    ) -> Result<Value> {
        let conn = self.conn();
        bounded(self.inner.timeout, what, || {
            let mut conn = conn.clone();
            let mut invocation = script.prepare_invoke();
            invocation.key(key);
            for arg in args {
                invocation.arg(arg.as_slice());
            }
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        })
        .await
    }

    /// `n` requests made by `make(i, connection)`, in flight together (pipelined on the
    /// multiplexed connection, spread over the nodes of a Cluster); replies in order.
    async fn many<F, Fut>(&self, what: &'static str, n: usize, make: F) -> Result<Vec<Value>>
    where
        F: Fn(usize, Conn) -> Fut,
        Fut: Future<Output = std::result::Result<Value, RedisError>>,
    {
        if n == 0 {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        bounded(self.inner.timeout, what, || {
            let requests = (0..n).map(|i| make(i, conn.clone()));
            futures_util::stream::iter(requests)
                .buffered(FAN_OUT)
                .try_collect::<Vec<Value>>()
        })
        .await
    }

    /// `HGETALL` of each key, decoded (`None` for gone or expired records).
    async fn load_many(
        &self,
        what: &'static str,
        keys: &[SessionKey],
    ) -> Result<Vec<Option<Record>>> {
        let replies = self
            .many(what, keys.len(), |i, mut conn| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.session_key(&keys[i]));
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await?;
        let now = Timestamp::now();
        replies.into_iter().map(|r| decode_record(r, now)).collect()
    }

    /// Removes `members` from the user's index set (errors are logged: a stale entry is
    /// harmless and pruned later).
    async fn unindex(&self, user: &str, members: &[Vec<u8>]) {
        if members.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.user_key(user)).arg(members);
        if let Err(e) = self.query("unindex", cmd).await {
            tracing::debug!(error = %e, "could not prune a user index; will retry later");
        }
    }

    /// The members of a user's index set.
    async fn index_members(&self, what: &'static str, user: &str) -> Result<Vec<Vec<u8>>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.user_key(user));
        items(self.query(what, cmd).await?)?
            .into_iter()
            .map(bytes)
            .collect()
    }

    /// The scan topology: `(node id, address)` sorted by id. A standalone server is node 0;
    /// a Cluster master is identified by the lowest slot it serves.
    async fn scan_nodes(&self) -> Result<Vec<(u16, Option<(String, u16)>)>> {
        if !self.inner.cluster {
            return Ok(vec![(0, None)]);
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let corrupt = || Error::new(ErrorKind::Corrupt, "unexpected CLUSTER SLOTS reply");
        let mut masters: Vec<(u16, Option<(String, u16)>)> = Vec::new();
        for range in items(self.query("scan", cmd).await?)? {
            let mut fields = items(range)?.into_iter();
            let (Some(start), Some(_end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(corrupt());
            };
            let start = u16::try_from(int(start)?).map_err(|_| corrupt())?;
            let mut master = items(master)?.into_iter();
            let (Some(host), Some(port)) = (master.next(), master.next()) else {
                return Err(corrupt());
            };
            let host = String::from_utf8(bytes(host)?).map_err(|_| corrupt())?;
            let port = u16::try_from(int(port)?).map_err(|_| corrupt())?;
            let addr = Some((host, port));
            match masters.iter_mut().find(|(_, a)| *a == addr) {
                Some((id, _)) => *id = (*id).min(start),
                None => masters.push((start, addr)),
            }
        }
        masters.sort_by_key(|(id, _)| *id);
        Ok(masters)
    }
}

/// Escapes glob characters so the prefix matches itself in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where a scan continues: the node (by id), its `SCAN` cursor, and the last handle taken
/// from the batch at that cursor when a page filled up in the middle of it.
struct ScanPos {
    node: u16,
    cursor: u64,
    after: Option<String>,
}

impl ScanPos {
    fn parse(cursor: &Cursor) -> Result<ScanPos> {
        if cursor.0.is_empty() {
            return Ok(ScanPos {
                node: 0,
                cursor: 0,
                after: None,
            });
        }
        let bad = || Error::new(ErrorKind::Config, "invalid scan cursor");
        let mut parts = cursor.0.splitn(3, ':');
        let node = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let scan = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let after = match parts.next().ok_or_else(bad)? {
            "" => None,
            h => Some(SessionKey::from_handle(h).ok_or_else(bad)?.to_handle()),
        };
        Ok(ScanPos {
            node,
            cursor: scan,
            after,
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor(format!(
            "{}:{}:{}",
            self.node,
            self.cursor,
            self.after.as_deref().unwrap_or("")
        ))
    }
}

fn applied(reply: Value) -> Result<Applied> {
    Ok(if int(reply)? == 1 {
        Applied::Done
    } else {
        Applied::Missing
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.session_key(key));
        decode_record(self.query("load", cmd).await?, Timestamp::now())
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let session_key = self.session_key(key);
        let args = codec::create_args(record, Timestamp::now());
        let reply = self
            .script("create", &scripts::CREATE, &session_key, &args)
            .await?;
        if int(reply)? != 1 {
            return Ok(Created::Collision);
        }
        let Some(user) = &record.meta.user else {
            return Ok(Created::Done);
        };
        // Index after the record exists, so a concurrent pruning never drops the entry.
        let handle = key.to_handle().into_bytes();
        let indexed = self
            .script(
                "create (user index)",
                &scripts::INDEX,
                &self.user_key(user),
                &[handle],
            )
            .await;
        match indexed {
            Ok(size) => {
                let size = int(size).unwrap_or(0);
                if size >= PRUNE_FROM && size % PRUNE_EVERY == 0 {
                    if let Err(e) = self.sessions_of(user).await {
                        tracing::debug!(error = %e, "could not prune a user index");
                    }
                }
                Ok(Created::Done)
            }
            Err(e) => {
                // An unindexed login session could not be revoked with the others: undo it.
                let now = Timestamp::now().as_millis().to_string().into_bytes();
                let _ = self
                    .script("create (undo)", &scripts::DELETE, &session_key, &[now])
                    .await;
                Err(e)
            }
        }
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let args = codec::apply_args(patch, Timestamp::now());
        applied(
            self.script("apply", &scripts::APPLY, &self.session_key(key), &args)
                .await?,
        )
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let args = [Timestamp::now(), last_seen, expires_at]
            .map(|t| t.as_millis().to_string().into_bytes());
        applied(
            self.script("touch", &scripts::TOUCH, &self.session_key(key), &args)
                .await?,
        )
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now().as_millis().to_string().into_bytes();
        let reply = self
            .script("delete", &scripts::DELETE, &self.session_key(key), &[now])
            .await?;
        let mut fields = items(reply)?.into_iter();
        let (Some(live), Some(has_user), Some(user)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "unexpected reply of the delete script",
            ));
        };
        if int(has_user)? == 1 {
            let user = String::from_utf8(bytes(user)?)
                .map_err(|_| Error::new(ErrorKind::Corrupt, "user is not UTF-8"))?;
            self.unindex(&user, &[key.to_handle().into_bytes()]).await;
        }
        Ok(int(live)? == 1)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let members = self.index_members("sessions_of", user).await?;
        let mut dead = Vec::new();
        let mut keys = Vec::with_capacity(members.len());
        let mut kept = Vec::with_capacity(members.len());
        for member in members {
            match std::str::from_utf8(&member)
                .ok()
                .and_then(SessionKey::from_handle)
            {
                Some(key) => {
                    keys.push(key);
                    kept.push(member);
                }
                None => dead.push(member),
            }
        }
        let records = self.load_many("sessions_of", &keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for ((key, member), record) in keys.into_iter().zip(kept).zip(records) {
            match record {
                Some(r) if r.meta.user.as_deref() == Some(user) => out.push(r.info(key)),
                _ => dead.push(member),
            }
        }
        self.unindex(user, &dead).await;
        out.sort_by_key(|i| Reverse(i.meta.last_seen));
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let except = except.map(|k| k.to_handle().into_bytes());
        let members: Vec<Vec<u8>> = self
            .index_members("delete_user", user)
            .await?
            .into_iter()
            .filter(|m| Some(m) != except.as_ref())
            .collect();
        let keys: Vec<Option<SessionKey>> = members
            .iter()
            .map(|m| {
                std::str::from_utf8(m)
                    .ok()
                    .and_then(SessionKey::from_handle)
            })
            .collect();
        let now = Timestamp::now().as_millis().to_string();
        let replies = self
            .many("delete_user", keys.len(), |i, mut conn| {
                let mut invocation = scripts::DELETE_OWNED.prepare_invoke();
                match &keys[i] {
                    Some(key) => invocation.key(self.session_key(key)),
                    // Junk in the index: run on a key that cannot exist (it is then pruned).
                    None => invocation.key(format!("{}s:-", self.inner.prefix)),
                };
                invocation.arg(&now).arg(user);
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
            .await?;
        let mut deleted = 0;
        for reply in replies {
            if int(reply)? == 1 {
                deleted += 1;
            }
        }
        // Every member handled is gone now (deleted, expired or someone else's).
        self.unindex(user, &members).await;
        Ok(deleted)
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        let mut pos = ScanPos::parse(&cursor)?;
        let nodes = self.scan_nodes().await?;
        let mut node_index = match nodes.iter().position(|(id, _)| *id >= pos.node) {
            Some(i) => i,
            None => {
                return Ok(Page {
                    sessions: Vec::new(),
                    next: None,
                });
            }
        };
        if nodes[node_index].0 != pos.node {
            // The node we were on is gone (resharding): start the next one afresh.
            pos = ScanPos {
                node: nodes[node_index].0,
                cursor: 0,
                after: None,
            };
        }
        let session_prefix = format!("{}s:", self.inner.prefix);
        let mut sessions = Vec::new();
        for _ in 0..SCAN_CALLS {
            let addr = nodes[node_index].1.clone().unwrap_or_default();
            let conn = self.conn();
            let reply = bounded(self.inner.timeout, "scan", || {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(pos.cursor)
                    .arg("MATCH")
                    .arg(&self.inner.scan_pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let addr = &addr;
                async move { conn.send_to_node(cmd, addr).await }
            })
            .await?;
            let mut reply = items(reply)?.into_iter();
            let (Some(next_cursor), Some(found)) = (reply.next(), reply.next()) else {
                return Err(Error::new(ErrorKind::Corrupt, "unexpected SCAN reply"));
            };
            let next_cursor = String::from_utf8(bytes(next_cursor)?)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, "unexpected SCAN cursor"))?;
            let mut batch: Vec<SessionKey> = items(found)?
                .into_iter()
                .filter_map(|k| bytes(k).ok())
                .filter_map(|k| {
                    let handle =
                        std::str::from_utf8(k.strip_prefix(session_prefix.as_bytes())?).ok()?;
                    SessionKey::from_handle(handle)
                })
                .collect();
            batch.sort_unstable_by_key(SessionKey::to_handle);
            batch.dedup();
            if let Some(after) = &pos.after {
                batch.retain(|k| k.to_handle().as_str() > after.as_str());
            }
            let mut taken = 0;
            while taken < batch.len() {
                let want = (limit - sessions.len()).min(batch.len() - taken);
                let chunk = &batch[taken..taken + want];
                for (key, record) in chunk.iter().zip(self.load_many("scan", chunk).await?) {
                    if let Some(record) = record {
                        sessions.push(record.info(*key));
                    }
                }
                taken += want;
                if sessions.len() == limit && taken < batch.len() {
                    pos.after = Some(batch[taken - 1].to_handle());
                    return Ok(Page {
                        sessions,
                        next: Some(pos.cursor()),
                    });
                }
            }
            // This batch is done: move on.
            pos.after = None;
            if next_cursor != 0 {
                pos.cursor = next_cursor;
            } else {
                node_index += 1;
                match nodes.get(node_index) {
                    Some((id, _)) => {
                        pos.node = *id;
                        pos.cursor = 0;
                    }
                    None => {
                        return Ok(Page {
                            sessions,
                            next: None,
                        });
                    }
                }
            }
            if sessions.len() == limit {
                break;
            }
        }
        Ok(Page {
            sessions,
            next: Some(pos.cursor()),
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        // Redis expires the keys by itself (PEXPIREAT).
        Ok(0)
    }

    async fn ping(&self) -> Result<()> {
        self.query("ping", redis::cmd("PING")).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escaping() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn scan_cursor_round_trip() {
        let key = SessionKey::from_bytes([7; 32]);
        let pos = ScanPos {
            node: 5461,
            cursor: 42,
            after: Some(key.to_handle()),
        };
        let again = ScanPos::parse(&pos.cursor()).unwrap();
        assert_eq!(
            (again.node, again.cursor, again.after),
            (5461, 42, Some(key.to_handle()))
        );
        assert!(ScanPos::parse(&Cursor("x".into())).is_err());
        assert!(ScanPos::parse(&Cursor("1:2:not-a-handle".into())).is_err());
        assert_eq!(ScanPos::parse(&Cursor::start()).unwrap().cursor, 0);
    }
}
