//! Writes as `WATCH`/`MULTI`/`EXEC` transactions, retried on conflict, with a per-key lock
//! stripe inside the process.

use super::*;
use cloakroom_redis::connection::demoted;

/// What a transaction does to the notifications dict.
pub(super) enum FlashOp {
    /// Keep it, with the session's expiry.
    Keep,
    /// Replace it with this pickle.
    Set(Vec<u8>),
    /// Delete it.
    Delete,
}

/// One transactional operation.
pub(super) enum Op<'a> {
    Create(&'a Record),
    Apply(&'a Patch),
    Touch(Timestamp, Timestamp),
    Delete,
    DeleteOwned(&'a str),
}

/// The change an update makes to a live session.
enum Update<'a> {
    Patch(&'a Patch),
    Touch(Timestamp, Timestamp),
}

/// Lays `patch`'s fields over `stored` (JSON texts kept in `json`); what it does to the
/// notifications (the flash field maps onto them).
fn patch_fields(
    stored: &mut Stored,
    json: &mut BTreeMap<String, String>,
    patch: &Patch,
) -> Result<FlashOp> {
    let mut flash = FlashOp::Keep;
    for name in &patch.remove {
        if name == FLASH_FIELD {
            flash = FlashOp::Delete;
        } else {
            stored.remove_field(json, name);
        }
    }
    for (name, text) in &patch.set {
        if name == FLASH_FIELD {
            flash = match notes_from_flash(text)? {
                Some(bytes) => FlashOp::Set(bytes),
                None => FlashOp::Delete,
            };
        } else {
            check_field(name)?;
            stored.set_field(json, name, text);
        }
    }
    Ok(flash)
}

/// A failed transaction as a store error: a write refused by a replica (the master was
/// demoted, a failover is under way) is `unavailable`, like a broken connection.
fn tx_error(e: RedisError, what: &'static str) -> Error {
    if demoted(&e) {
        return Error::new(
            ErrorKind::Unavailable,
            format!("pycket {what}: the server is no longer the master (failover under way?)"),
        )
        .with_source(e);
    }
    map_error(e, what)
}

/// What a transaction reports.
pub(super) enum Outcome {
    Created(Created),
    Applied(Applied),
    /// Whether a live record was deleted, and whose it was.
    Deleted(bool, Option<String>),
}

pub(super) enum Attempt {
    Done(Outcome),
    /// Another client changed the key between `WATCH` and `EXEC`.
    Conflict,
}

pub(super) enum TxError {
    Redis(RedisError),
    Store(Error),
}

impl From<RedisError> for TxError {
    fn from(e: RedisError) -> Self {
        TxError::Redis(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Store(e)
    }
}

pub(super) type TxResult = std::result::Result<Attempt, TxError>;

impl PycketStore {
    /// Runs `op` on `rkey` as a transaction (see the module docs), retrying conflicts.
    pub(super) async fn transact(
        &self,
        what: &'static str,
        rkey: &str,
        op: &Op<'_>,
    ) -> Result<Outcome> {
        let run = async {
            let _queue = self.stripe(rkey).lock().await;
            let mut reconnected = false;
            let mut conflicts = 0u32;
            loop {
                let mut lease = match self.inner.pool.lease().await {
                    Ok(lease) => lease,
                    Err(e) if worth_retrying(&e) && !reconnected => {
                        reconnected = true;
                        self.inner.pool.clear();
                        continue;
                    }
                    Err(e) => return Err(map_error(e, what)),
                };
                match self.attempt(lease.conn(), rkey, op).await {
                    Ok(Attempt::Done(outcome)) => {
                        lease.release();
                        return Ok(outcome);
                    }
                    Ok(Attempt::Conflict) => {
                        lease.release();
                        conflicts += 1;
                        if conflicts >= MAX_CONFLICTS {
                            return Err(Error::new(
                                ErrorKind::Backend,
                                format!(
                                    "pycket {what}: the key kept changing under {MAX_CONFLICTS} \
                                     transactions"
                                ),
                            ));
                        }
                        self.backoff(conflicts).await;
                    }
                    // The lease is dropped (closed): it may hold a WATCH.
                    Err(TxError::Store(e)) => return Err(e),
                    // Broken, or (Sentinel) its server is a replica now: nothing was written;
                    // once more on a new connection (to the master the sentinels name now).
                    Err(TxError::Redis(e))
                        if (worth_retrying(&e) || demoted(&e)) && !reconnected =>
                    {
                        reconnected = true;
                        self.inner.pool.clear();
                    }
                    Err(TxError::Redis(e)) => return Err(tx_error(e, what)),
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("pycket {what}: no reply within {:?}", self.inner.timeout),
            )),
        }
    }

    pub(super) async fn backoff(&self, attempt: u32) {
        let seed = (
            attempt,
            Timestamp::now().as_millis(),
            std::thread::current().id(),
        );
        let cap = 200u64 << attempt.min(5);
        let micros = self.inner.hasher.hash_one(seed) % cap;
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }

    /// One attempt of a transaction on a dedicated connection.
    pub(super) async fn attempt(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
        op: &Op<'_>,
    ) -> TxResult {
        let update = match op {
            Op::Delete => return self.delete_once(c, rkey).await,
            Op::Create(record) => {
                redis::cmd("WATCH").arg(rkey).exec_async(c).await?;
                return self.create_once(c, rkey, record).await;
            }
            Op::DeleteOwned(user) => return self.delete_owned_once(c, rkey, user).await,
            Op::Apply(patch) => Update::Patch(patch),
            Op::Touch(last_seen, expires_at) => Update::Touch(*last_seen, *expires_at),
        };
        self.update_once(c, rkey, update).await
    }

    /// `WATCH`es `rkey` and reads it with its TTL; `None` (and the watch released) when the
    /// key is gone.
    async fn watch_and_read(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
    ) -> Result<Option<(Vec<u8>, i64)>, TxError> {
        redis::cmd("WATCH").arg(rkey).exec_async(c).await?;
        let (raw, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .cmd("GET")
            .arg(rkey)
            .cmd("PTTL")
            .arg(rkey)
            .query_async(c)
            .await?;
        match raw {
            Some(raw) if pttl != -2 => Ok(Some((raw, pttl))),
            _ => {
                redis::cmd("UNWATCH").exec_async(c).await?;
                Ok(None)
            }
        }
    }

    /// Deletes `rkey` if it is a live session of `user`.
    async fn delete_owned_once(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
        user: &str,
    ) -> TxResult {
        let now = Timestamp::now();
        let Some((raw, pttl)) = self.watch_and_read(c, rkey).await? else {
            return Ok(Attempt::Done(Outcome::Deleted(false, None)));
        };
        let stored = Stored::decode(&raw, false)?;
        let meta = record_meta(&stored.meta(), pttl, now);
        if meta.user.as_deref() != Some(user) || meta.expires_at <= now {
            redis::cmd("UNWATCH").exec_async(c).await?;
            return Ok(Attempt::Done(Outcome::Deleted(false, None)));
        }
        let mut p = redis::pipe();
        p.atomic().cmd("DEL").arg(rkey);
        self.notes_part(&mut p, rkey, &FlashOp::Delete, None);
        let reply: RedisValue = p.query_async(c).await?;
        Ok(match reply {
            RedisValue::Nil => Attempt::Conflict,
            _ => Attempt::Done(Outcome::Deleted(true, meta.user)),
        })
    }

    /// Patches or touches the live session at `rkey`, writing it back (or deleting it when
    /// the change takes it past its lifetime) with its notifications.
    async fn update_once(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
        update: Update<'_>,
    ) -> TxResult {
        let now = Timestamp::now();
        let missing = Ok(Attempt::Done(Outcome::Applied(Applied::Missing)));
        let Some((raw, pttl)) = self.watch_and_read(c, rkey).await? else {
            return missing;
        };
        let mut stored = Stored::decode(&raw, true)?;
        let stored_meta = stored.meta();
        let mut meta = record_meta(&stored_meta, pttl, now);
        // A blind write's bounds refuse a record a load would refuse (see `Patch::refuses`).
        let refused =
            matches!(update, Update::Patch(p) if p.refuses(meta.created_at, meta.last_seen));
        if meta.expires_at <= now || refused {
            redis::cmd("UNWATCH").exec_async(c).await?;
            return missing;
        }
        let mut json = stored_meta.json;
        let flash = match update {
            Update::Patch(patch) => {
                let flash = patch_fields(&mut stored, &mut json, patch)?;
                meta.last_seen = patch.last_seen;
                meta.expires_at = patch.expiry_for(meta.created_at);
                if let Some(remember) = patch.remember {
                    meta.remember = remember;
                }
                flash
            }
            Update::Touch(last_seen, expires_at) => {
                meta.last_seen = last_seen;
                meta.expires_at = expires_at;
                FlashOp::Keep
            }
        };
        stored.set_meta(&meta, json);
        let mut p = redis::pipe();
        p.atomic();
        let live = meta.expires_at > now;
        if live {
            p.cmd("SET")
                .arg(rkey)
                .arg(stored.encode()?)
                .arg("PXAT")
                .arg(meta.expires_at.as_millis());
        } else {
            // Past its lifetime: gone, as if Redis had expired it.
            p.cmd("DEL").arg(rkey);
            if let Some(user) = &meta.user {
                p.cmd("SREM").arg(self.user_key(user)).arg(rkey);
            }
        }
        self.notes_part(&mut p, rkey, &flash, live.then_some(meta.expires_at));
        let reply: RedisValue = p.query_async(c).await?;
        Ok(match reply {
            RedisValue::Nil => Attempt::Conflict,
            _ => Attempt::Done(Outcome::Applied(Applied::Done)),
        })
    }

    pub(super) async fn create_once(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
        record: &Record,
    ) -> TxResult {
        let exists: bool = redis::cmd("EXISTS").arg(rkey).query_async(c).await?;
        let now = Timestamp::now();
        if exists || record.meta.expires_at <= now {
            redis::cmd("UNWATCH").exec_async(c).await?;
            // A record already expired is written nowhere, as if Redis had dropped it.
            return Ok(Attempt::Done(Outcome::Created(Created::from(!exists))));
        }
        let stored = Stored::from_record(record)?;
        let flash = match record.data.get(FLASH_FIELD) {
            Some(text) => match notes_from_flash(text)? {
                Some(bytes) => FlashOp::Set(bytes),
                None => FlashOp::Delete,
            },
            // A new session starts without notifications.
            None => FlashOp::Delete,
        };
        let exp = record.meta.expires_at;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(rkey)
            .arg(stored.encode()?)
            .arg("PXAT")
            .arg(exp.as_millis());
        if let Some(user) = &record.meta.user {
            p.cmd("SADD").arg(self.user_key(user)).arg(rkey);
        }
        self.notes_part(&mut p, rkey, &flash, Some(exp));
        let reply: RedisValue = p.query_async(c).await?;
        Ok(match reply {
            RedisValue::Nil => Attempt::Conflict,
            _ => Attempt::Done(Outcome::Created(Created::Done)),
        })
    }

    pub(super) async fn delete_once(&self, c: &mut MultiplexedConnection, rkey: &str) -> TxResult {
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg(rkey).cmd("DEL").arg(rkey);
        self.notes_part(&mut p, rkey, &FlashOp::Delete, None);
        let reply: Vec<RedisValue> = p.query_async(c).await?;
        let raw = match reply.first() {
            Some(RedisValue::BulkString(b)) => Some(b.clone()),
            _ => None,
        };
        let deleted = matches!(reply.get(1), Some(RedisValue::Int(1)));
        let user = raw
            .filter(|_| deleted)
            .and_then(|raw| Stored::decode(&raw, false).ok())
            .and_then(|s| s.meta().user);
        Ok(Attempt::Done(Outcome::Deleted(deleted, user)))
    }

    /// Queues the notifications part of a transaction: `SELECT` the notifications database,
    /// apply `flash` (deleting when the session is gone, `exp` `None`), `SELECT` back.
    pub(super) fn notes_part(
        &self,
        p: &mut redis::Pipeline,
        rkey: &str,
        flash: &FlashOp,
        exp: Option<Timestamp>,
    ) {
        p.cmd("SELECT").arg(self.inner.notifications_db);
        match (flash, exp) {
            (FlashOp::Set(bytes), Some(exp)) => {
                p.cmd("SET")
                    .arg(rkey)
                    .arg(bytes)
                    .arg("PXAT")
                    .arg(exp.as_millis());
            }
            (FlashOp::Keep, Some(exp)) => {
                p.cmd("PEXPIREAT").arg(rkey).arg(exp.as_millis());
            }
            _ => {
                p.cmd("DEL").arg(rkey);
            }
        }
        p.cmd("SELECT").arg(self.inner.sessions_db);
    }
}
