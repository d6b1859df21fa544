//! [`RedisStore`]: the store itself, its connections and the [`SessionStore`] contract.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, EventLog, Limit, Page, Patch, Record,
    Result, SessionInfo, SessionStore,
};
use futures_util::{StreamExt, TryStreamExt};
use redis::{Cmd, RedisError, Script, Value};

use crate::codec::{decode_record, reply};
use crate::conn::{Conn, bounded};
use crate::index::Members;
use crate::near::{NearCache, patched};
use crate::{FAN_OUT, PRUNE_EVERY, PRUNE_FROM, codec, scripts};

/// Sessions in Redis (standalone or Cluster).
///
/// Cheap to clone (clones share the connections). See the [crate docs](crate) for the
/// layout, the round trips and the failure behaviour.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conns: Box<[Conn]>,
    pub(crate) next: AtomicUsize,
    pub(crate) prefix: String,
    pub(crate) scan_pattern: String,
    pub(crate) timeout: Duration,
    pub(crate) shown_url: String,
    pub(crate) cluster: bool,
    /// Replicas every write must reach (`?wait=N`, 0: none); see [`crate::wait`].
    pub(crate) wait: u32,
    /// The near-cache (`?cache=N`), if any; see [`crate::near`].
    pub(crate) near: Option<Arc<NearCache>>,
    /// Set when the server refused `RESTORE`: sessions are created by script from then on
    /// (see [`crate::restore`]).
    pub(crate) restore_refused: AtomicBool,
    /// Whether patches and touches go as native transactions: Redis 7 or later, until the
    /// server refuses one (see [`crate::transaction`]).
    pub(crate) transactions: AtomicBool,
    /// The event log (`?events=N`), if any; see [`crate::events`].
    pub(crate) log: Option<crate::events::Log>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.shown_url)
            .field("cluster", &self.inner.cluster)
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.timeout)
            .field("connections", &self.inner.conns.len())
            .field("event_log", &self.inner.log.is_some())
            .finish()
    }
}

impl RedisStore {
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

    pub(crate) fn conn(&self) -> Conn {
        let conns = &self.inner.conns;
        if conns.len() == 1 {
            return conns[0].clone();
        }
        conns[self.inner.next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone()
    }

    /// One command on the Redis key `key`.
    pub(crate) async fn query(&self, what: &'static str, key: &[u8], cmd: Cmd) -> Result<Value> {
        let conn = self.conn_for(key);
        bounded(self.inner.timeout, what, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<Value>(&mut conn).await }
        })
        .await
    }

    /// One script call on one key.
    pub(crate) async fn script(
        &self,
        what: &'static str,
        script: &'static Script,
        key: &[u8],
        args: &[Vec<u8>],
    ) -> Result<Value> {
        self.script_on(what, script, &[key], args).await
    }

    /// One script call on `keys` (more than one: standalone and Sentinel only), on the
    /// connection of the first.
    pub(crate) async fn script_on(
        &self,
        what: &'static str,
        script: &'static Script,
        keys: &[&[u8]],
        args: &[Vec<u8>],
    ) -> Result<Value> {
        let conn = self.conn_for(keys.first().copied().unwrap_or_default());
        if self.inner.wait > 0 {
            // `?wait=N`: the write and `WAIT N` in one pipeline on one connection.
            let (wait, timeout) = (self.inner.wait, self.inner.timeout);
            return bounded(timeout, what, || {
                crate::wait::script_then_wait(conn.clone(), script, keys, args, wait, timeout)
            })
            .await;
        }
        bounded(self.inner.timeout, what, || {
            let mut conn = conn.clone();
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(arg.as_slice());
            }
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        })
        .await
    }

    /// `n` requests made by `make(i, connection)`, in flight together (pipelined on the
    /// multiplexed connection, spread over the nodes of a Cluster); replies in order.
    pub(crate) async fn many<F, Fut>(
        &self,
        what: &'static str,
        n: usize,
        make: F,
    ) -> Result<Vec<Value>>
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
    pub(crate) async fn load_many(
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
    pub(crate) async fn unindex(&self, user: &str, members: &[Vec<u8>]) {
        if members.is_empty() {
            return;
        }
        let ukey = self.user_key(user);
        let mut cmd = redis::cmd("SREM");
        cmd.arg(&ukey).arg(members);
        if let Err(e) = self.query("unindex", ukey.as_bytes(), cmd).await {
            tracing::debug!(error = %e, "could not prune a user index; will retry later");
        }
    }

    /// The members of a user's index set.
    pub(crate) async fn index_members(
        &self,
        what: &'static str,
        user: &str,
    ) -> Result<Vec<Vec<u8>>> {
        let ukey = self.user_key(user);
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(&ukey);
        reply(self.query(what, ukey.as_bytes(), cmd).await?)
    }
}

/// The reply of a script that changes a record: 1 when it did, 0 when the record was gone.
pub(crate) fn applied(written: Value) -> Result<Applied> {
    Ok(Applied::from(reply::<i64>(written)? == 1))
}

#[async_trait]
impl SessionStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    /// The event log when the store keeps one (`?events=N`,
    /// [`RedisStoreBuilder::event_log`](crate::RedisStoreBuilder::event_log)); see the
    /// [crate docs](crate#event-log).
    fn event_log(&self) -> Option<&dyn EventLog> {
        self.inner.log.as_ref().map(|_| self as &dyn EventLog)
    }

    /// On a Cluster, 16 shards ([crate docs](crate#layout)): a user's sessions are created under
    /// keys in the user's shard (a user's record under another key is refused). `None` on
    /// one server.
    fn placement(&self) -> Option<cloakroom_core::store::Placement> {
        self.inner.cluster.then_some(crate::shard::PLACEMENT)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let rkey = self.session_key(key);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&rkey);
        let read = async { decode_record(self.query("load", &rkey, cmd).await?, Timestamp::now()) };
        self.read_through(&rkey, read).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        self.check_placed(key, record.meta.user.as_deref())?;
        let session_key = self.session_key(key);
        // One native command for a new key; the script when the key exists or `RESTORE` is
        // not an option (see crate::restore).
        if !self.create_by_restore(&session_key, record).await? {
            let args = codec::create_args(record, Timestamp::now());
            let created = self
                .script("create", &scripts::CREATE, &session_key, &args)
                .await?;
            if reply::<i64>(created)? != 1 {
                return Ok(Created::Collision);
            }
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
                self.user_key(user).as_bytes(),
                &[handle],
            )
            .await;
        match indexed {
            Ok(size) => {
                let size = reply::<i64>(size).unwrap_or(0);
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

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        match &record.meta.user {
            Some(user) => {
                self.create_limited_for(user, key, record, limit, None)
                    .await
            }
            None => Ok(match self.create(key, record).await? {
                Created::Done => Admitted::Done { ended: Vec::new() },
                Created::Collision => Admitted::Collision,
            }),
        }
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let rkey = self.session_key(key);
        let write = self.patch("apply", &rkey, patch);
        let after = |base: Option<Record>| base.map(|b| patched(b, patch));
        self.write_through(&rkey, write, after).await
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        // A touch is a patch of the activity times only.
        let patch = Patch::new(last_seen, expires_at);
        let rkey = self.session_key(key);
        let write = self.patch("touch", &rkey, &patch);
        let after = |base: Option<Record>| base.map(|b| patched(b, &patch));
        self.write_through(&rkey, write, after).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        if let Some(log) = &self.inner.log {
            // The member leaves the index in the same script (see `crate::events`).
            return self.delete_on_log(log, key, None).await;
        }
        let now = Timestamp::now().as_millis().to_string().into_bytes();
        let rkey = self.session_key(key);
        let args = [now];
        let write = self.script("delete", &scripts::DELETE, &rkey, &args);
        let deleted = self
            .invalidating(std::slice::from_ref(&rkey), write)
            .await?;
        let (live, has_user, user): (i64, i64, String) = reply(deleted)?;
        if has_user == 1 {
            self.unindex(&user, &[key.to_handle().into_bytes()]).await;
        }
        Ok(live == 1)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let members = self.index_members("sessions_of", user).await?;
        let members = Members::sort(members, |m| {
            std::str::from_utf8(m)
                .ok()
                .and_then(SessionKey::from_handle)
        });
        let records = self.load_many("sessions_of", &members.keys).await?;
        let (infos, dead) = members.resolve(user, records);
        match &self.inner.log {
            // Expired members are logged as they leave the index.
            Some(log) if !dead.is_empty() => {
                if let Err(e) = self.notice(log, user, &dead).await {
                    tracing::debug!(error = %e, "could not prune a user index; will retry later");
                }
            }
            _ => self.unindex(user, &dead).await,
        }
        Ok(infos)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let except = except.map(|k| k.to_handle().into_bytes());
        let members: Vec<Vec<u8>> = self
            .index_members("delete_user", user)
            .await?
            .into_iter()
            .filter(|m| Some(m) != except.as_ref())
            .collect();
        let rkeys: Vec<Vec<u8>> = members
            .iter()
            .map(|m| {
                match std::str::from_utf8(m)
                    .ok()
                    .and_then(SessionKey::from_handle)
                {
                    Some(key) => self.session_key(&key),
                    // Junk in the index: run on a key that cannot exist (it is then pruned).
                    None => self.raw_key(0, b"-"),
                }
            })
            .collect();
        let now = Timestamp::now().as_millis().to_string();
        let deletions = self.many("delete_user", rkeys.len(), |i, mut conn| {
            let mut invocation = scripts::DELETE_OWNED.prepare_invoke();
            invocation.key(&rkeys[i]).arg(&now).arg(user);
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        });
        // The near-cache forgets them before and after, as for one `delete`.
        let replies = self.invalidating(&rkeys, deletions).await?;
        let (mut deleted, mut ended) = (0, Vec::new());
        for (one, member) in replies.into_iter().zip(&members) {
            if reply::<i64>(one)? == 1 {
                deleted += 1;
                ended.push(member.clone());
            }
        }
        if self.inner.wait > 0 {
            // `?wait=N`: the deletions went out on any of the connections.
            let (wait, timeout) = (self.inner.wait, self.inner.timeout);
            bounded(timeout, "delete_user (wait)", || {
                crate::wait::wait_on_all(&self.inner.conns, wait, timeout)
            })
            .await?;
        }
        // Every member handled is gone now (deleted, expired or someone else's); with a log,
        // the expired ones are logged as they leave the index.
        match &self.inner.log {
            Some(log) => {
                // The sessions deleted leave the index first, so the noticing that follows
                // cannot take them for expired. (This plain form logs no end; a noticer
                // running between a deletion above and this `SREM` logs that session as
                // expired. The engine ends a user's sessions with `delete_user_logged`,
                // one script, which has no such window.)
                if !ended.is_empty() {
                    let ukey = self.user_key(user);
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(&ukey).arg(&ended);
                    self.query("delete_user (unindex)", ukey.as_bytes(), cmd)
                        .await?;
                }
                let rest: Vec<Vec<u8>> = (members.into_iter())
                    .filter(|m| !ended.contains(m))
                    .collect();
                if !rest.is_empty() {
                    self.notice(log, user, &rest).await?;
                }
            }
            None => self.unindex(user, &members).await,
        }
        Ok(deleted)
    }
    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        self.scan_page(cursor, limit).await
    }

    /// Redis expires the keys by itself (`PEXPIREAT`), so this removes nothing; with an
    /// event log, it is the expiry sweep (every user index looked at, each expired session
    /// still indexed logged once; see the [crate docs](crate#event-log)) and returns how
    /// many expiries it logged.
    async fn purge_expired(&self) -> Result<u64> {
        match &self.inner.log {
            Some(log) => self.sweep_expired(log).await,
            None => Ok(0),
        }
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let rkey = self.challenge_key(challenge);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&rkey)
            .arg(session.to_handle())
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at.as_millis());
        let set: Option<String> = reply(
            self.query("keeping a challenge", rkey.as_bytes(), cmd)
                .await?,
        )?;
        Ok(Created::from(set.is_some()))
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let rkey = self.challenge_key(challenge);
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(&rkey);
        let taken: Option<String> = reply(
            self.query("taking a challenge", rkey.as_bytes(), cmd)
                .await?,
        )?;
        taken
            .map(|h| {
                SessionKey::from_handle(&h).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Corrupt,
                        "a challenge holds a malformed session handle",
                    )
                })
            })
            .transpose()
    }

    /// A round trip that is also the permission check of the store's open (see
    /// `acl.rs`): a revoked permission turns the health check red.
    async fn ping(&self) -> Result<()> {
        self.check_permissions().await.map(drop)
    }
}
