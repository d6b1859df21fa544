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
//! [`EXPIRY_SWEEP`] (5 minutes) in one of the processes whose store has a log (the first to
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
//!   running process with the log (within [`EXPIRY_SWEEP`] and the sweep's own duration),
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

/// How often a store with a log runs the expiry sweep ([`RedisStore::sweep_expired`]) by
/// itself.
pub(crate) const EXPIRY_SWEEP: Duration = Duration::from_secs(300);

/// Runs the expiry sweep of the store every [`EXPIRY_SWEEP`] until the store is dropped,
/// when no other process on the prefix took the turn ([`RedisStore::take_sweep_turn`]).
pub(crate) async fn sweep_periodically(store: std::sync::Weak<crate::store::Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = RedisStore { inner };
        let Some(log) = &store.inner.log else { return };
        match store.take_sweep_turn().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "the expiry sweep failed");
                continue;
            }
        }
        match store.sweep_expired(log).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "logged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "the expiry sweep failed"),
        }
    }
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

/// `log(stream, cap, at, kind, handle, previous, user)`: one `XADD` with a cap; `previous`
/// `''` for none, `user` `''`, nil or false for none.
const LOG: &str = "
local function log(stream, cap, at, kind, handle, previous, user)
  local a = {stream, 'MAXLEN', '~', cap, '*', 'at', at, 'kind', kind, 'session', handle}
  if previous ~= '' then
    a[#a + 1] = 'previous'
    a[#a + 1] = previous
  end
  if user and user ~= '' then
    a[#a + 1] = 'user'
    a[#a + 1] = user
  end
  redis.call('XADD', unpack(a))
end
";

/// Base64url decoding of a 22-character session handle into the 16 raw bytes of its key,
/// or nil: [`crate::limit::DECODE`]'s result, four characters at a time (about a third of
/// its time in Redis).
const DECODE_FAST: &str = "
local B64 = {}
local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
for i = 1, 64 do B64[alphabet:byte(i)] = i - 1 end
local function decode(s)
  if #s ~= 22 then return nil end
  local out = {}
  for i = 1, 17, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    a, b, c, d = B64[a], B64[b], B64[c], B64[d]
    if not (a and b and c and d) then return nil end
    local n = ((a * 64 + b) * 64 + c) * 64 + d
    local lo = n % 256
    n = (n - lo) / 256
    out[#out + 1] = string.char((n - n % 256) / 256, n % 256, lo)
  end
  local a, b = s:byte(21, 22)
  a, b = B64[a], B64[b]
  if not (a and b) then return nil end
  local n = a * 64 + b
  out[#out + 1] = string.char((n - n % 16) / 16)
  return table.concat(out)
end
";

/// Create and log: `KEYS` = the session's key, the stream, and for a login the user's index
/// set; `ARGV` = the cap, the event's time, kind, the new handle, the previous handle (or
/// `''`), the user (or `''`), then the create script's arguments (now, expires at, the
/// field/value pairs). Returns `{0, 0}` when a live record holds the key (nothing written
/// or logged), else `{1, size of the index}` (0 without one). The index is read (`SCARD`)
/// before the `XADD`, so a key of the wrong type fails before anything is written.
pub(crate) static CREATE_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH}{LOG}
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  local e = redis.call('HGET', k, 'e')
  if not e or tonumber(e) > tonumber(ARGV[7]) then return {{0, 0}} end
  redis.call('DEL', k)
end
local size = 0
if KEYS[3] then size = redis.call('SCARD', KEYS[3]) end
log(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if #ARGV < 1000 then
  redis.call('HSET', k, unpack(ARGV, 9))
else
  batch('HSET', k, 9, #ARGV)
end
redis.call('PEXPIREAT', k, ARGV[8])
if KEYS[3] then size = size + redis.call('SADD', KEYS[3], ARGV[4]) end
return {{1, size}}
",
        BATCH = scripts::BATCH,
    ))
});

/// Delete (logged or not) on a store with a log: `KEYS` = the session's key, the stream;
/// `ARGV` = now, the cap, the event's time, kind (`''`: a plain delete, which logs no end),
/// the handle, the prefix of index keys (`<prefix>u:`). A live record's end is logged (with
/// the record's user) unless the kind is `''`; a record of a user that is past its expiry
/// but still indexed is logged as `expired` (noticed here). The member is dropped from the
/// user's index in the same script, so no other script can find it indexed with its record
/// gone and take a deletion for an expiry. Returns `{live, has_user, user}` as the delete
/// script does.
pub(crate) static DELETE_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LOG}
local m = redis.call('HMGET', KEYS[1], 'e', 'u')
local e, u = m[1], m[2]
local handle = ARGV[5]
local live = 0
if e and tonumber(e) > tonumber(ARGV[1]) then live = 1 end
local idx = u and (ARGV[6] .. u)
if live == 1 then
  if ARGV[4] ~= '' then log(KEYS[2], ARGV[2], ARGV[3], ARGV[4], handle, '', u) end
elseif idx and redis.call('SISMEMBER', idx, handle) == 1 then
  log(KEYS[2], ARGV[2], ARGV[1], '{EXPIRED}', handle, '', u)
end
if redis.call('UNLINK', KEYS[1]) == 0 then return {{0, 0, ''}} end
if idx then redis.call('SREM', idx, handle) end
if u then return {{live, 1, u}} end
return {{live, 0, ''}}
"
    ))
});

/// The label of an expiry in the log.
const EXPIRED: &str = "expired";

/// Notice expiries in a user's index: `KEYS` = the user's index set, the stream; `ARGV` =
/// the prefix of session keys (`<prefix>s:`), the user, now, the cap, then the members to
/// look at (none: every member of the index). Each of those members still in the index
/// whose session is no live session of the user is removed from it; when its record is gone
/// (Redis expired it) or is the user's past its expiry, one `expired` event of the user is
/// appended first, at now. A member already removed (by another noticer, a delete, a
/// revocation or the limit, which log their own events) is left alone, so each expiry is
/// logged once however many processes notice it. A record that is no session of the user
/// (a limit tombstone, another user's) is unindexed without an event. Returns how many
/// expiries it logged.
pub(crate) static NOTICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DECODE_FAST}{LOG}
local idx, sp, user, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local list, from = ARGV, 5
if #ARGV == 4 then list, from = redis.call('SMEMBERS', idx), 1 end
local n = 0
for i = from, #list do
  local m = list[i]
  if from == 1 or redis.call('SISMEMBER', idx, m) == 1 then
    local raw = decode(m)
    local f = raw and redis.call('HMGET', sp .. raw, 'e', 'u')
    if not (f and f[1] and tonumber(f[1]) > now and f[2] == user) then
      if f and (not f[1] or f[2] == user) then
        log(KEYS[2], ARGV[4], ARGV[3], '{EXPIRED}', m, '', user)
        n = n + 1
      end
      redis.call('SREM', idx, m)
    end
  end
end
return n
"
    ))
});

/// Revoke a user's sessions and log each: `KEYS` = the user's index set, the stream; `ARGV`
/// = the handle to keep (or `''`), the prefix of session keys (`<prefix>s:`), the user,
/// now, the cap, the event's time, kind. Deletes every session of the user the index names
/// (but the one kept), drops the members it handled from the index, and appends one event
/// per live session deleted, and one `expired` (at now) per member whose record is gone or
/// past its expiry (noticed here, as by [`NOTICE`]). Returns the handles of the live
/// sessions deleted.
pub(crate) static DELETE_USER_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DECODE_FAST}{LOG}
local idx = KEYS[1]
local except, sp, user, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local deleted = {{}}
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  if m ~= except then
    local raw = decode(m)
    if raw then
      local sk = sp .. raw
      local f = redis.call('HMGET', sk, 'e', 'u')
      if f[2] == user then
        if f[1] and tonumber(f[1]) > now then
          log(KEYS[2], ARGV[5], ARGV[6], ARGV[7], m, '', user)
          deleted[#deleted + 1] = m
        else
          log(KEYS[2], ARGV[5], ARGV[4], '{EXPIRED}', m, '', user)
        end
        redis.call('UNLINK', sk)
      elseif not f[1] then
        log(KEYS[2], ARGV[5], ARGV[4], '{EXPIRED}', m, '', user)
      end
    end
    redis.call('SREM', idx, m)
  end
end
return deleted
"
    ))
});

/// [`LIMITED`](crate::limit::LIMITED) (with [`DECODE_FAST`]) and the log: `KEYS[3]` = the
/// stream, `ARGV[9..=12]`
/// = the cap, the event's time, kind, previous handle ([`Log::limited_args`]), the create's
/// field/value pairs from `ARGV[13]`. Each member it prunes whose record is gone or past its
/// expiry is logged as `expired` of the user (noticed here, as by [`NOTICE`]), each session
/// the limit ends as `limit`, then the new session.
pub(crate) static LIMITED_LOGGED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&limited_logged_source()));

/// `text` with `from` (which must be there exactly once) replaced by `to`.
fn once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in the limit script"
    );
    text.replacen(from, to, 1)
}

/// The text of [`LIMITED_LOGGED`]: the limit script's, with the `XADD`s put in.
fn limited_logged_source() -> String {
    let limit = kind_label(&EventKind::Ended(EndReason::Limit));
    let text = crate::limit::limited_source();
    let text = once(&text, crate::limit::DECODE, DECODE_FAST);
    let text = once(
        &text,
        "    local s = live[i]\n",
        &format!(
            "    local s = live[i]\n    log(KEYS[3], ARGV[9], ARGV[10], '{limit}', s[1], '', user)\n"
        ),
    );
    let text = once(
        &text,
        "    else\n      redis.call('SREM', idx, m)\n",
        &format!(
            "    else\n      if f and (not f[1] or f[4] == user) then\n        \
             log(KEYS[3], ARGV[9], ARGV[7], '{EXPIRED}', m, '', user)\n      end\n      \
             redis.call('SREM', idx, m)\n"
        ),
    );
    let text = once(&text, "unpack(ARGV, 9)", "unpack(ARGV, 13)");
    let text = once(
        &text,
        "batch('HSET', k, 9, #ARGV)",
        "batch('HSET', k, 13, #ARGV)",
    );
    let text = once(
        &text,
        "end\nif #ARGV < 1000 then\n",
        "end\nlog(KEYS[3], ARGV[9], ARGV[10], ARGV[11], handle, ARGV[12], user)\nif #ARGV < 1000 then\n",
    );
    format!("{LOG}{text}")
}

/// A position as a stream id (`None` for [`Position::start`]); a malformed one is a
/// configuration error (not a position this store wrote).
fn stream_id(position: &Position) -> Result<Option<(u64, u64)>> {
    if position.is_start() {
        return Ok(None);
    }
    parse_id(position.as_str()).map(Some).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{:?} is not a position of a Redis event log (a stream id such as \
                 1700000000000-0)",
                position.as_str()
            ),
        )
    })
}

/// `ms-seq` as numbers.
fn parse_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, what.into())
}

/// The text of a string reply.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The field/value pairs of a reply that is a map (RESP3) or a flat array of pairs (RESP2).
fn pairs(value: &Value) -> Vec<(&Value, &Value)> {
    match value {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(flat) => flat.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

/// What `XINFO STREAM` says about the entries the stream no longer has.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dropped {
    /// `max-deleted-entry-id`: the highest id removed by `XDEL` (Redis does not count the
    /// cap's trims here).
    max_deleted: (u64, u64),
    /// Whether any entry was ever removed (`entries-added` > `length`): the cap's trims
    /// (and any `XDEL`), all older than the first entry kept.
    any: bool,
    /// The first entry kept (`recorded-first-entry-id`), or, for an empty stream, the last
    /// one ever added (`last-generated-id`): a reader before it missed events.
    first: (u64, u64),
}

impl Dropped {
    /// Whether a reader after `after` missed events. Trims remove the oldest entries, so a
    /// reader at or past the first entry kept missed none; one before it did, unless its
    /// last event was itself the newest one trimmed (Redis 7.0 records no trimmed ids, so
    /// that reader is told of a gap too: never a missed gap, rarely a needless one).
    fn gap(&self, after: (u64, u64)) -> bool {
        after < self.max_deleted || (self.any && after < self.first)
    }
}

/// [`Dropped`] from `XINFO STREAM`'s reply (no stream: nothing dropped).
fn dropped(info: &Value) -> Result<Dropped> {
    if let Value::ServerError(e) = info {
        // `ERR no such key`: nothing was ever logged (or the stream was deleted).
        return match e.details() {
            Some(d) if d.contains("no such key") => Ok(Dropped::default()),
            _ => Err(map_error(e.clone().into(), "event log (XINFO STREAM)")),
        };
    }
    let fields = pairs(info);
    let field = |name: &str| {
        (fields.iter())
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .map(|(_, v)| *v)
            .ok_or_else(|| corrupt(format!("XINFO STREAM has no {name} (Redis 7?)")))
    };
    let id = |name: &str| {
        field(name).and_then(|v| {
            text(v)
                .and_then(|t| parse_id(&t))
                .ok_or_else(|| corrupt(format!("a malformed {name} in XINFO STREAM")))
        })
    };
    let int = |name: &str| match field(name)? {
        Value::Int(n) => Ok(*n),
        other => text(other)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| corrupt(format!("a malformed {name} in XINFO STREAM"))),
    };
    let (length, added) = (int("length")?, int("entries-added")?);
    let first = if length == 0 {
        // All gone: a reader that had the last one missed nothing.
        id("last-generated-id")?
    } else {
        id("recorded-first-entry-id")?
    };
    Ok(Dropped {
        max_deleted: id("max-deleted-entry-id")?,
        any: added > length,
        first,
    })
}

/// One `XRANGE` entry as a logged event.
fn entry(value: Value) -> Result<LoggedEvent> {
    let bad = || corrupt("a malformed entry in the Redis event log");
    let Value::Array(parts) = value else {
        return Err(bad());
    };
    let [id, fields] = <[Value; 2]>::try_from(parts).map_err(|_| bad())?;
    let id = text(&id).ok_or_else(bad)?;
    let (mut at, mut kind, mut session, mut previous, mut user) = (None, None, None, None, None);
    for (k, v) in pairs(&fields) {
        let v = text(v).ok_or_else(bad)?;
        match text(k).as_deref() {
            Some("at") => at = v.parse::<i64>().ok(),
            Some("kind") => kind = Some(v),
            Some("session") => session = SessionKey::from_handle(&v),
            Some("previous") => previous = Some(v),
            Some("user") => user = Some(v),
            _ => {}
        }
    }
    let kind = parse_kind(&kind.ok_or_else(bad)?, previous.as_deref()).ok_or_else(bad)?;
    Ok(LoggedEvent {
        position: Position::new(id),
        event: Event {
            kind,
            session: session.ok_or_else(bad)?,
            user,
            at: Timestamp(at.ok_or_else(bad)?),
        },
    })
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

    /// Removes `members` (none: all) from `user`'s index where they name no live session of
    /// the user, logging each one whose record expired ([`NOTICE`]). How many expiries it
    /// logged.
    pub(crate) async fn notice(&self, log: &Log, user: &str, members: &[Vec<u8>]) -> Result<u64> {
        let (ukey, shard) = (self.user_key(user), self.shard_of_user(user));
        let mut args = vec![
            self.session_key_prefix(shard),
            user.as_bytes().to_vec(),
            millis(Timestamp::now()),
            log.cap.clone(),
        ];
        args.extend(members.iter().cloned());
        let keys: [&[u8]; 2] = [ukey.as_bytes(), log.key(shard)];
        let logged = self
            .script_on("noticing expiries", &NOTICE, &keys, &args)
            .await?;
        Ok(u64::try_from(reply::<i64>(logged)?).unwrap_or(0))
    }

    /// [`NOTICE`] on each user's index with the members given, in flight together (up to
    /// [`FAN_OUT`](crate::FAN_OUT) at once). How many expiries it logged.
    async fn notice_many(&self, log: &Log, suspects: &[(String, Vec<Vec<u8>>)]) -> Result<u64> {
        let now = millis(Timestamp::now());
        let replies = self
            .many("expiry sweep", suspects.len(), |i, mut conn| {
                let (user, members) = &suspects[i];
                let shard = self.shard_of_user(user);
                let mut invocation = NOTICE.prepare_invoke();
                invocation
                    .key(self.user_key(user).as_bytes())
                    .key(log.key(shard))
                    .arg(self.session_key_prefix(shard))
                    .arg(user.as_bytes())
                    .arg(now.as_slice())
                    .arg(log.cap.as_slice());
                for member in members {
                    invocation.arg(member.as_slice());
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
            .await?;
        if self.inner.wait > 0 && !replies.is_empty() {
            // `?wait=N`: the scripts went out on any of the connections.
            let (wait, timeout) = (self.inner.wait, self.inner.timeout);
            bounded(timeout, "expiry sweep (wait)", || {
                crate::wait::wait_on_all(&self.inner.conns, wait, timeout)
            })
            .await?;
        }
        let mut logged = 0;
        for one in replies {
            logged += u64::try_from(reply::<i64>(one)?).unwrap_or(0);
        }
        Ok(logged)
    }

    /// Whether this process sweeps now: `SET <prefix>events:sweep 1 NX PX <interval>`
    /// holds for whichever process on the prefix asks first in an interval, so the periodic
    /// sweeps of many processes cost about one sweep per interval.
    async fn take_sweep_turn(&self) -> Result<bool> {
        let key = format!("{}events:sweep", self.inner.prefix);
        let ms = u64::try_from(EXPIRY_SWEEP.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms.saturating_sub(1000).max(1));
        let set = self
            .query("expiry sweep (turn)", key.as_bytes(), cmd)
            .await?;
        Ok(!matches!(set, Value::Nil))
    }

    /// The expiry sweep: every user index under the prefix (one `SCAN` pass, `MATCH
    /// <prefix>u:* TYPE set`). Each batch of index sets is read (`SMEMBERS`), the records
    /// their members name checked (`EXISTS`, all in flight together), and only the indexes
    /// with a member whose record is gone (or that names no session key) go through
    /// [`NOTICE`] with those members, which checks them again and logs each expiry once.
    /// An index whose sessions all exist costs two native commands a member and no script
    /// (about a tenth of the script's time in Redis). A record past its expiry that Redis
    /// has not dropped yet is left for the next sweep. How many expiries it logged.
    pub(crate) async fn sweep_expired(&self, log: &Log) -> Result<u64> {
        let pattern = format!("{}u:*", crate::scan::glob_escape(&self.inner.prefix));
        let mut logged = 0;
        // Every master of a Cluster (one server: itself).
        for (_, addr) in self.scan_nodes().await? {
            let addr = addr.unwrap_or_default();
            let mut cursor = 0_u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(crate::SCAN_COUNT)
                    .arg("TYPE")
                    .arg("set");
                let scanned = self.query_node("expiry sweep (SCAN)", &addr, cmd).await?;
                let (next, found): (u64, Vec<Vec<u8>>) = reply(scanned)?;
                let users: Vec<String> =
                    found.iter().filter_map(|k| self.user_of_index(k)).collect();
                let suspects = self.suspects(&users).await?;
                logged += self.notice_many(log, &suspects).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(logged)
    }

    /// For the sweep: the members of each of `users`' indexes whose record is gone or that
    /// name no session key, by user (users with none are left out).
    async fn suspects(&self, users: &[String]) -> Result<Vec<(String, Vec<Vec<u8>>)>> {
        let sets = self
            .many("expiry sweep (SMEMBERS)", users.len(), |i, mut conn| {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.user_key(&users[i]));
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await?;
        let mut members = Vec::new(); // (user, member, the session's Redis key)
        for (i, set) in sets.into_iter().enumerate() {
            for member in reply::<Vec<Vec<u8>>>(set)? {
                let rkey = std::str::from_utf8(&member)
                    .ok()
                    .and_then(SessionKey::from_handle)
                    .map(|k| self.session_key(&k));
                members.push((i, member, rkey));
            }
        }
        let named: Vec<&Vec<u8>> = members.iter().filter_map(|(.., k)| k.as_ref()).collect();
        let exists = self
            .many("expiry sweep (EXISTS)", named.len(), |i, mut conn| {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(named[i].as_slice());
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await?;
        let mut exists = exists.into_iter();
        let mut suspects: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (i, member, rkey) in members {
            let gone = match rkey {
                Some(_) => reply::<i64>(exists.next().unwrap_or(Value::Int(1)))? == 0,
                None => true,
            };
            if !gone {
                continue;
            }
            match suspects.last_mut() {
                Some((user, list)) if *user == users[i] => list.push(member),
                _ => suspects.push((users[i].clone(), vec![member])),
            }
        }
        Ok(suspects)
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

    /// Waits up to `wait` for an entry after `id` (`XREAD BLOCK` on a follower's
    /// connection). `Ok(true)` when one came, `Ok(false)` when the wait ran out.
    async fn block(&self, log: &Log, master: &Master, id: &str, wait: Duration) -> Result<bool> {
        let timeout = self.inner.timeout;
        let taken = log.lock_idle().pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => {
                let connect = master.dedicated(timeout);
                match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(map_error(e, "event log (follower connection)")),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("redis event log: no connection within {timeout:?}"),
                        ));
                    }
                }
            }
        };
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(ms)
            .arg("STREAMS")
            .arg(log.key(0))
            .arg(id);
        let read = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(wait + timeout, read).await {
            Ok(Ok(value)) => {
                let mut idle = log.lock_idle();
                if idle.len() < IDLE_FOLLOWERS {
                    idle.push(conn);
                }
                Ok(!matches!(value, Value::Nil))
            }
            // The connection is dropped: its state is unknown.
            Ok(Err(e)) => Err(map_error(e, "event log (XREAD BLOCK)")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "redis event log: XREAD BLOCK gave no reply within {wait:?} and {timeout:?}"
                ),
            )),
        }
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

impl RedisStore {
    /// At most `max` entries of the stream `key` after `from` (`None`: from its start),
    /// positioned by their ids, and whether the reader missed some. One pipeline: `XINFO
    /// STREAM` and `XRANGE (<from> + COUNT <max>`.
    async fn read_stream(
        &self,
        key: &[u8],
        from: Option<(u64, u64)>,
        max: usize,
    ) -> Result<(Vec<LoggedEvent>, bool)> {
        let start = match from {
            Some((ms, seq)) => format!("({ms}-{seq}"),
            None => "-".to_owned(),
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(max.max(1));
        let conn = self.conn_for(key);
        let replies = bounded(self.inner.timeout, "event log (read)", || {
            let mut conn = conn.clone();
            let pipe = &pipe;
            async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
        })
        .await?;
        let mut replies = replies.into_iter();
        let (info, range) = (replies.next(), replies.next());
        let dropped = dropped(&info.unwrap_or(Value::Nil))?;
        let entries = match range {
            Some(Value::Array(entries)) => entries,
            Some(Value::ServerError(e)) => {
                return Err(map_error(e.into(), "event log (XRANGE)"));
            }
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(corrupt(format!("unexpected XRANGE reply: {other:?}"))),
        };
        let events = (entries.into_iter().take(max))
            .map(entry)
            .collect::<Result<Vec<_>>>()?;
        Ok((events, dropped.gap(from.unwrap_or((0, 0)))))
    }

    /// [`EventLog::read`] on a Cluster: every shard's stream read after its id in `after`
    /// (in flight together), the entries merged by id (then shard), at most `max`; each
    /// event's position moves only its own shard's id. A gap when any shard has one.
    async fn read_shards(&self, log: &Log, after: &Position, max: usize) -> Result<Batch> {
        let mut at = shard_ids(after, log.keys.len())?;
        let reads = (0..log.keys.len()).map(|i| {
            let from = Some(at[i]).filter(|id| *id != (0, 0));
            let key = log.keys[i].as_bytes();
            async move { self.read_stream(key, from, max).await }
        });
        let read = futures_util::future::try_join_all(reads).await?;
        let mut gap = false;
        let mut merged = Vec::new();
        for (shard, (events, shard_gap)) in read.into_iter().enumerate() {
            gap |= shard_gap;
            for event in events {
                let id = parse_id(event.position.as_str())
                    .ok_or_else(|| corrupt("a malformed stream id"))?;
                merged.push((id, shard, event));
            }
        }
        merged.sort_by_key(|(id, shard, _)| (*id, *shard));
        let mut events = Vec::with_capacity(merged.len().min(max));
        for (id, shard, mut event) in merged.into_iter().take(max.max(1)) {
            at[shard] = id;
            event.position = Position::new(join_ids(&at));
            events.push(event);
        }
        let next = events
            .last()
            .map_or_else(|| after.clone(), |e| e.position.clone());
        Ok(Batch { events, next, gap })
    }
}

/// A Cluster log's position: one stream id per shard, joined by `,` (`start`: all `0-0`).
fn shard_ids(position: &Position, shards: usize) -> Result<Vec<(u64, u64)>> {
    if position.is_start() {
        return Ok(vec![(0, 0); shards]);
    }
    let ids: Option<Vec<(u64, u64)>> = position.as_str().split(',').map(parse_id).collect();
    ids.filter(|ids| ids.len() == shards).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{:?} is not a position of a Redis Cluster event log ({shards} stream ids \
                 joined by commas)",
                position.as_str()
            ),
        )
    })
}

fn join_ids(ids: &[(u64, u64)]) -> String {
    let ids: Vec<String> = ids.iter().map(|(ms, seq)| format!("{ms}-{seq}")).collect();
    ids.join(",")
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
                at: Timestamp(17),
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
