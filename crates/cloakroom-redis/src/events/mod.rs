//! The durable event log ([`EventLog`]) on Redis: a stream at `<prefix>events`, appended to
//! by `XADD <stream> MAXLEN ~ N * at <ms> kind <label> session <handle> [previous <handle>]
//! [user <user>]` **inside the same Lua script as the change** it describes, so Redis runs
//! both or neither (a script is atomic, and is replicated and persisted as one unit).
//!
//! Off by default ([`RedisStoreBuilder::event_log`](crate::RedisStoreBuilder::event_log), URL
//! option `events=N`); with it off, no operation changes. With it on, the engine makes its
//! lifecycle changes through these scripts instead of the plain ones:
//!
//! | change | plain | logged |
//! |---|---|---|
//! | create (anonymous) | `RESTORE` | [`CREATE_LOGGED`]: the record and one `XADD` |
//! | create (login) | `RESTORE`, then the index script | [`CREATE_LOGGED`]: the record, the index and one `XADD` |
//! | create under the limit | [`LIMITED`](crate::limit::LIMITED) | [`LIMITED_LOGGED`]: the same, one `XADD` per session it ends and one for the new one |
//! | delete | the delete script, then `SREM` | [`DELETE_LOGGED`]: the delete and the `SREM` in one script, one `XADD` when a live record was deleted (a plain delete on a store with a log runs it too, without that `XADD`) |
//! | revoke a user's sessions | `SMEMBERS`, one script per session, `SREM` | [`DELETE_USER_LOGGED`]: all in one script, one `XADD` per live session deleted |
//! | list a user's sessions, finding expired members | `SREM` of those | [`NOTICE`]: `XADD` (expired) and `SREM` of each still indexed |
//!
//! A change that does not happen (a collision, a refusal, nothing to delete) appends nothing.
//! Redis does not roll a script back when a command in it fails, so each `XADD` runs right
//! before the write it describes, after every read that decides it (and could fail on a key
//! of the wrong type): an `XADD` that fails (a stream key holding something else, a revoked
//! permission, out of memory: the first write of a script is refused then) leaves its change
//! undone, and the writes after it cannot fail that way. The positions are the stream's
//! entry ids (`1700000000000-0`), in commit order.
//!
//! **Reading** ([`EventLog::read`]): one pipeline of `XINFO STREAM` and `XRANGE <stream>
//! (<after> + COUNT <max>`. The gap comes from `XINFO STREAM` (Redis 7.0 or later): when
//! entries were ever removed (`entries-added` > `length`), a reader before the first entry
//! kept (`recorded-first-entry-id`) is told it lost events; so is one before
//! `max-deleted-entry-id` (an operator's `XDEL`). Redis 7.0 does not record which ids the
//! cap trimmed (`max-deleted-entry-id` counts `XDEL` only), so a reader whose last event
//! was itself the newest one trimmed is told of a gap it did not suffer: a gap is never
//! missed, and rarely reported needlessly.
//!
//! **Following** ([`EventLog::read_wait`]): `XREAD BLOCK` on a connection of its own (a
//! block would stall the shared multiplexed one), so a follower wakes as soon as an event
//! is appended; idle ones are kept for the next wait, and dropped when one slept through
//! events (as on a server that is no longer the master after a failover).
//!
//! **Expiry, when noticed.** Redis expires session keys by itself (`PEXPIREAT`) and tells
//! nothing reliable when it does (keyspace notifications are lost during a reconnect and
//! never fire for keys that expire unread), so the log cannot hold the moment of expiry.
//! It holds the moment **our code notices** it instead: a logged-in session stays a member
//! of its user's index set after Redis dropped its record, and every script that removes
//! such a member appends one `expired` event of the user first (`at` = the time noticed):
//! [`NOTICE`] (listing the user's sessions, the prune of a login every
//! [`PRUNE_EVERY`](crate::PRUNE_EVERY)th time the index is large, the plain `delete_user`,
//! the expiry sweep), [`DELETE_USER_LOGGED`] (revocation), [`LIMITED_LOGGED`] (the
//! limit's prune), [`DELETE_LOGGED`] (a delete that finds the user's record past its
//! expiry). The **expiry sweep** ([`RedisStore::sweep_expired`]: one `SCAN` pass over the
//! user index sets; `SMEMBERS` of each and `EXISTS` of each record they name, and
//! [`NOTICE`] only on the sets with a member whose record is gone) runs every
//! [`EXPIRY_SWEEP`](sweep::EXPIRY_SWEEP) (5 minutes) in one of the processes whose store has a log (the first to
//! take the interval's turn, `SET <prefix>events:sweep NX PX`), and on demand as
//! [`purge_expired`](cloakroom_core::store::SessionStore::purge_expired) (`cloakroom gc`).
//! What that guarantees:
//!
//! - **Exactly once.** The event is appended in the script that removes the member from
//!   the index, and only when that script finds the member there: two processes noticing
//!   the same expiry log it once. A session we end leaves the index in the script that
//!   logs its end (a delete, on a store with a log, removes the member in its own script;
//!   so do revocation and the limit), so it is never also logged as expired; a limit
//!   tombstone or another user's record is unindexed without an event.
//! - **When.** At the first noticing after the expiry: at the latest the next sweep of a
//!   running process with the log (within [`EXPIRY_SWEEP`](sweep::EXPIRY_SWEEP) and the sweep's own duration),
//!   earlier when the user's sessions are listed, revoked or a login of the user prunes.
//!   The event's `at` is when it was noticed; the moment of expiry is not known. It follows
//!   the session's `created`/`rotated` event in the stream.
//! - **Not logged.** Anonymous sessions (no user index: their expiry is never logged on
//!   Redis); a logged-in session whose index member was removed by something that does not
//!   log (a process opened before the log was turned on, an operator's `DEL` of the set).
//!
//! Cost: nothing per request that changes nothing; a listing that finds expired members
//! runs one script where it ran one `SREM`; a logged delete is one script where it was the
//! script and an `SREM`. The sweep, per interval (one process): one `SCAN` pass over the
//! keyspace (`COUNT 1000`, `TYPE set`), one `SMEMBERS` per user index and one `EXISTS` per
//! member, plus one script per index that has an expired member. Measured on Redis 7.0
//! (100,000 users with two live sessions each: about 1.3 s of Redis time per sweep, in
//! `SCAN`, `SMEMBERS` and `EXISTS`; with one expired member each, 7.7 s, of which 5.9 s in
//! the 100,000 scripts; see `REPORT-BENCH.md`).
//!
//! **Cluster**: one stream per shard of [`crate::shard`], `<prefix>events:{t}`, each capped
//! at `N`. A logged-in session, its user's index and its shard's stream share a slot, so
//! every script above runs unchanged with the shard's keys; an anonymous session logs to
//! its key's shard. Each stream is in commit order; a user's events all go to the user's
//! shard, so they are in order too, but across shards there is no order (stream ids are
//! each master's clock). A position names one id per shard (`id,id,...`); a read asks
//! every shard (in flight together), merges by id, and reports a gap when any shard has
//! one. Following polls every [`FOLLOW_POLL`] (`XREAD BLOCK` over streams in different
//! slots is refused by a Cluster). The sweep scans every master.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{EndReason, Event, EventKind, SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Batch, Error, ErrorKind, EventLog, FOLLOW_POLL, Limit, LoggedEvent, Position, Record,
    Result, kind_label, parse_kind, previous_handle,
};
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};

use crate::codec::{self, reply};
use crate::conn::{bounded, map_error};
use crate::connection::Master;
use crate::store::RedisStore;
use crate::url::RedisUrl;
use crate::{PRUNE_EVERY, PRUNE_FROM, scripts};

mod lua;
mod read;
mod sweep;

pub(crate) use lua::*;
use read::*;
pub(crate) use sweep::sweep_periodically;

/// Idle `XREAD BLOCK` connections kept for the next follower (more are opened when more
/// followers wait at once, and closed after).
const IDLE_FOLLOWERS: usize = 4;

/// The store's event log: its streams, its cap, and where followers connect.
pub(crate) struct Log {
    /// `<prefix>events`; on a Cluster, `<prefix>events:{t}` for each shard.
    keys: Vec<String>,
    /// The cap, as text (`MAXLEN ~ <cap>`; each stream's on a Cluster).
    cap: Vec<u8>,
    /// The master (one server or a Sentinel service's) the followers' connections go to;
    /// none on a Cluster (followers poll).
    master: Option<Master>,
    /// Connections a follower left, for the next one.
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl RedisStore {
    /// Makes the log a property of the data, as it is on SQLite and PostgreSQL: a store
    /// opened with `events=N` records `N` under `<prefix>events:cap`
    /// ([`record_event_log_cap`](Self::record_event_log_cap), the last opener's wins); one
    /// opened without it, by any process (an app server, the admin CLI), reads that key here
    /// and keeps the log with that cap, so its changes are logged too. One command at open,
    /// none per request. Called before anything else shares the store.
    pub(crate) async fn adopt_event_log(&mut self, url: &RedisUrl) -> Result<()> {
        let key = format!("{}events:cap", self.inner.prefix);
        let get = redis::cmd("GET").arg(&key).to_owned();
        let cap = match self
            .query("GET of the event log's cap", key.as_bytes(), get)
            .await
        {
            Ok(Value::BulkString(text)) => {
                std::str::from_utf8(&text).ok().and_then(|t| t.parse().ok())
            }
            Ok(_) => None,
            // Refused by the ACL: the permission check that follows names what is missing.
            Err(e) if e.kind() == ErrorKind::Config => None,
            Err(e) => return Err(e),
        };
        if let Some(cap) = cap.filter(|c: &usize| *c > 0) {
            let inner = &mut self.inner;
            let master = match inner.cluster {
                false => Some(Master::build(url, inner.timeout, &inner.shown_url)?),
                true => None,
            };
            let log = Log::new(&inner.prefix, cap, master);
            Arc::get_mut(inner)
                .expect("the store is not shared before it is built")
                .log = Some(log);
        }
        Ok(())
    }

    /// Records the cap of this store's log for the stores opened without `events=N`
    /// ([`adopt_event_log`](Self::adopt_event_log)).
    pub(crate) async fn record_event_log_cap(&self, events: usize) -> Result<()> {
        let key = format!("{}events:cap", self.inner.prefix);
        let set = redis::cmd("SET").arg(&key).arg(events).to_owned();
        self.query("SET of the event log's cap", key.as_bytes(), set)
            .await?;
        Ok(())
    }
}

impl Log {
    /// The log of a store with key prefix `prefix`, keeping about `cap` events: one stream
    /// with a `master` (one server, Sentinel), one per shard without (a Cluster).
    pub(crate) fn new(prefix: &str, cap: usize, master: Option<Master>) -> Log {
        let keys = match master {
            Some(_) => vec![format!("{prefix}events")],
            None => (0..crate::shard::SHARDS)
                .map(|i| format!("{prefix}events:{}", crate::shard::tag(i)))
                .collect(),
        };
        Log {
            keys,
            cap: cap.max(1).to_string().into_bytes(),
            master,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The Redis key of the stream of `shard` (the one stream on one server).
    pub(crate) fn key(&self, shard: u16) -> &[u8] {
        self.keys[usize::from(shard) % self.keys.len()].as_bytes()
    }

    /// [`LIMITED_LOGGED`]'s `ARGV[9..=12]`: the cap, the event's time, kind and previous
    /// handle.
    pub(crate) fn limited_args(&self, event: &Event) -> [Vec<u8>; 4] {
        [
            self.cap.clone(),
            millis(event.at),
            kind_label(&event.kind).as_bytes().to_vec(),
            previous_handle(&event.kind)
                .unwrap_or_default()
                .into_bytes(),
        ]
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn millis(t: Timestamp) -> Vec<u8> {
    t.as_millis().to_string().into_bytes()
}

/// The error of a server before Redis 7 asked for a log.
pub(crate) fn needs_redis7(shown: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "Redis at {shown}: events=N (the event log) needs Redis 7.0 or later \
             (XINFO STREAM's entries-added and recorded-first-entry-id tell readers what \
             the cap dropped)"
        ),
    )
}

impl RedisStore {
    /// The event log, or the error of a store without one.
    fn log(&self) -> Result<&Log> {
        self.inner.log.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "this Redis store keeps no event log (events=N)",
            )
        })
    }

    /// A delete on a store with a log ([`DELETE_LOGGED`]): with `event`, a live record's end
    /// is logged; without, nothing is (a plain [`delete`](cloakroom_core::store::SessionStore::delete), such as a
    /// rotated-away record's). Either way an indexed record found past its expiry is logged
    /// as expired, and the member leaves the user's index in the same script. Whether a live
    /// record was deleted.
    pub(crate) async fn delete_on_log(
        &self,
        log: &Log,
        key: &SessionKey,
        event: Option<&Event>,
    ) -> Result<bool> {
        let rkey = self.session_key(key);
        let now = millis(Timestamp::now());
        let (at, kind) = match event {
            Some(event) => (
                millis(event.at),
                kind_label(&event.kind).as_bytes().to_vec(),
            ),
            None => (now.clone(), Vec::new()),
        };
        let args = [
            now,
            log.cap.clone(),
            at,
            kind,
            key.to_handle().into_bytes(),
            self.user_key_prefix(self.shard_of_key(key)).into_bytes(),
        ];
        let keys: [&[u8]; 2] = [&rkey, log.key(self.shard_of_key(key))];
        let write = self.script_on("delete (logged)", &DELETE_LOGGED, &keys, &args);
        let deleted = self
            .invalidating(std::slice::from_ref(&rkey), write)
            .await?;
        let (live, _, _): (i64, i64, String) = reply(deleted)?;
        Ok(live == 1)
    }

    /// The create of [`EventLog::create_logged`] without a limit (or for an anonymous
    /// record): [`CREATE_LOGGED`].
    async fn create_logged_plain(
        &self,
        log: &Log,
        key: &SessionKey,
        record: &Record,
        event: &Event,
    ) -> Result<Admitted> {
        let skey = self.session_key(key);
        let handle = key.to_handle().into_bytes();
        let user = record.meta.user.as_deref();
        let mut args = vec![
            log.cap.clone(),
            millis(event.at),
            kind_label(&event.kind).as_bytes().to_vec(),
            handle,
            previous_handle(&event.kind)
                .unwrap_or_default()
                .into_bytes(),
            user.unwrap_or_default().as_bytes().to_vec(),
        ];
        args.extend(codec::create_args(record, Timestamp::now()));
        let ukey = user.map(|u| self.user_key(u));
        let mut keys: Vec<&[u8]> = vec![&skey, log.key(self.shard_of_key(key))];
        keys.extend(ukey.as_ref().map(String::as_bytes));
        let created = self
            .script_on("create (logged)", &CREATE_LOGGED, &keys, &args)
            .await?;
        let (done, size): (i64, i64) = reply(created)?;
        if done != 1 {
            return Ok(Admitted::Collision);
        }
        if let Some(user) = user {
            if size >= PRUNE_FROM && size % PRUNE_EVERY == 0 {
                use cloakroom_core::store::SessionStore;
                if let Err(e) = self.sessions_of(user).await {
                    tracing::debug!(error = %e, "could not prune a user index");
                }
            }
        }
        Ok(Admitted::Done { ended: Vec::new() })
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted> {
        let log = self.log()?;
        self.check_placed(key, record.meta.user.as_deref())?;
        match (limit, &record.meta.user) {
            (Some(limit), Some(user)) => {
                self.create_limited_for(user, key, record, limit, Some((log, event)))
                    .await
            }
            _ => self.create_logged_plain(log, key, record, event).await,
        }
    }

    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
        let log = self.log()?;
        self.delete_on_log(log, key, Some(event)).await
    }

    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64> {
        let log = self.log()?;
        let (ukey, shard) = (self.user_key(user), self.shard_of_user(user));
        let args = [
            except
                .map(|k| k.to_handle().into_bytes())
                .unwrap_or_default(),
            self.session_key_prefix(shard),
            user.as_bytes().to_vec(),
            millis(Timestamp::now()),
            log.cap.clone(),
            millis(at),
            reason.as_str().as_bytes().to_vec(),
        ];
        let keys: [&[u8]; 2] = [ukey.as_bytes(), log.key(shard)];
        let deleted = self
            .script_on("delete_user (logged)", &DELETE_USER_LOGGED, &keys, &args)
            .await?;
        let deleted: Vec<String> = reply(deleted)?;
        if let Some(near) = &self.inner.near {
            // Redis does not tell the connection that deleted them (`NOLOOP`).
            for key in deleted.iter().filter_map(|h| SessionKey::from_handle(h)) {
                near.invalidate(&self.session_key(&key));
            }
        }
        Ok(deleted.len() as u64)
    }

    async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        let log = self.log()?;
        if log.keys.len() > 1 {
            return self.read_shards(log, after, max).await;
        }
        let from = stream_id(after)?;
        let (events, gap) = self.read_stream(log.key(0), from, max).await?;
        let next = events
            .last()
            .map_or_else(|| after.clone(), |e| e.position.clone());
        Ok(Batch { events, next, gap })
    }

    async fn read_wait(&self, after: &Position, max: usize, wait: Duration) -> Result<Batch> {
        let batch = self.read(after, max).await?;
        if !batch.events.is_empty() || batch.gap || wait.is_zero() {
            return Ok(batch);
        }
        let log = self.log()?;
        let Some(master) = &log.master else {
            // A Cluster: `XREAD BLOCK` cannot wait on streams of several slots; poll.
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(batch);
                }
                tokio::time::sleep(FOLLOW_POLL.min(deadline - now)).await;
                let batch = self.read(after, max).await?;
                if !batch.events.is_empty() || batch.gap {
                    return Ok(batch);
                }
            }
        };
        let id = match stream_id(after)? {
            Some((ms, seq)) => format!("{ms}-{seq}"),
            None => "0-0".to_owned(),
        };
        let woke = self.block(log, master, &id, wait).await?;
        let batch = self.read(after, max).await?;
        if !woke && !batch.events.is_empty() {
            // The follower's connection saw nothing where there was something: it may be on
            // a server that is no longer the master (a failover); the next wait connects anew.
            log.lock_idle().clear();
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_limit_script_is_the_limit_script_with_xadds() {
        let text = limited_logged_source();
        assert_eq!(text.matches("log(KEYS[3]").count(), 3);
        assert!(text.contains("'expired', m, '', user)"));
        assert!(text.contains("'limit', s[1]"));
        assert!(text.contains("unpack(ARGV, 13)") && !text.contains("unpack(ARGV, 9)"));
        assert!(text.starts_with(LOG) && text.contains(DECODE_FAST));
        // The plain script is untouched.
        assert!(!crate::limit::limited_source().contains("XADD"));
    }

    #[test]
    fn positions_are_stream_ids() {
        assert_eq!(stream_id(&Position::start()).unwrap(), None);
        assert_eq!(
            stream_id(&Position::new("1700000000000-3")).unwrap(),
            Some((1_700_000_000_000, 3))
        );
        for bad in ["17", "a-1", "1-", "-1", "1-2-3", "1 -2", "+"] {
            let err = stream_id(&Position::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn entries_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let key = cloakroom_core::session::SessionId::generate().key();
        let previous = cloakroom_core::session::SessionId::generate().key();
        let fields = vec![
            bulk("at"),
            bulk("17"),
            bulk("kind"),
            bulk("rotated"),
            bulk("session"),
            bulk(&key.to_handle()),
            bulk("previous"),
            bulk(&previous.to_handle()),
            bulk("user"),
            bulk("ada"),
        ];
        let got = entry(Value::Array(vec![bulk("5-1"), Value::Array(fields)])).unwrap();
        assert_eq!(got.position, Position::new("5-1"));
        assert_eq!(
            got.event,
            Event {
                kind: EventKind::Rotated { previous },
                session: key,
                user: Some("ada".into()),
                at: Timestamp::from_millis(17),
            }
        );
        let short = vec![bulk("kind"), bulk("created")];
        let err = entry(Value::Array(vec![bulk("5-2"), Value::Array(short)])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn gaps_are_read_from_xinfo() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let info = |length: i64, added: i64, first: &str, max_deleted: &str| {
            Value::Array(vec![
                bulk("length"),
                Value::Int(length),
                bulk("last-generated-id"),
                bulk("90-0"),
                bulk("max-deleted-entry-id"),
                bulk(max_deleted),
                bulk("entries-added"),
                Value::Int(added),
                bulk("recorded-first-entry-id"),
                bulk(first),
            ])
        };
        // Nothing dropped: no gap anywhere.
        let kept = dropped(&info(3, 3, "10-0", "0-0")).unwrap();
        assert!(!kept.gap((0, 0)) && !kept.gap((10, 0)));
        // Trimmed: a reader before the first entry kept lost events.
        let trimmed = dropped(&info(100, 300, "50-0", "0-0")).unwrap();
        assert!(trimmed.gap((0, 0)) && trimmed.gap((49, 7)));
        assert!(!trimmed.gap((50, 0)) && !trimmed.gap((90, 0)));
        // An XDEL past the reader.
        let deleted = dropped(&info(99, 100, "10-0", "60-0")).unwrap();
        assert!(deleted.gap((59, 0)) && !deleted.gap((60, 0)));
        // Emptied: everything up to the last id is gone.
        let empty = dropped(&info(0, 5, "0-0", "0-0")).unwrap();
        assert!(empty.gap((89, 0)) && !empty.gap((90, 0)));
        // No stream at all.
        let none = redis::parse_redis_value(b"-ERR no such key\r\n").unwrap();
        assert_eq!(dropped(&none).unwrap(), Dropped::default());
    }
}
